"""A Notes connection's settings (`system = "notes"`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from etl.core.config import ConnectionSettings, Frozen, RateBudget, check_url, secret_from_env


class NotesPush(Frozen):
    conflict_policy: Literal["remote_wins", "local_wins", "manual"] = "manual"


class NotesConnection(ConnectionSettings):
    system: Literal["notes"]
    base_url: str
    token_env: str
    timezone: str = "UTC"  # the API's times are UTC
    rate_limit: RateBudget = RateBudget(per_minute=600)
    concurrency: Annotated[int, Field(ge=1, le=8)] = 2
    lookback_seconds: Annotated[float, Field(ge=1)] = 60.0
    push: NotesPush | None = None  # write-back of the notes table (off unless given)

    _url = field_validator("base_url")(classmethod(lambda cls, v: check_url(v, "https://notes.example/api")))

    def token(self, name: str) -> str:
        return secret_from_env(self.token_env, name, "token_env")
