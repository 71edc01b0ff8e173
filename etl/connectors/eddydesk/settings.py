"""An EddyDesk connection's settings (`system = "eddydesk"`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from etl.core.config import (
    ConnectionSettings,
    Frozen,
    RateBudget,
    check_email,
    check_url,
    push_tables_check,
    secret_from_env,
)


class RateLimitConfig(RateBudget):
    """Documented EddyDesk defaults; `window_seconds` is shorter only against the simulator."""

    per_minute: Annotated[int, Field(gt=0)] = 300
    knowledge_base_per_minute: Annotated[int, Field(gt=0)] = 60
    block_seconds: Annotated[float, Field(ge=0)] = 20 * 60
    knowledge_base_block_seconds: Annotated[float, Field(ge=0)] = 60 * 60


EDDYDESK_PUSH_TABLES = ("tickets", "users", "organizations", "ticket_posts", "ticket_comments", "custom_field_options")


class EddyDeskPush(Frozen):
    """Write-back of one EddyDesk table (`desksync push`); the key in `push` is the stream name."""

    conflict_policy: Literal["remote_wins", "local_wins", "manual"] = "manual"
    allow_delete: bool = False
    # users by e-mail, organizations by name: a new row that matches a remote record updates it
    # instead of creating a second one (also how a create whose answer was lost is found again)
    upsert: bool = True
    # values a create needs that the row does not hold (users: group_id, department = [ids])
    create_defaults: dict[str, Any] = {}


class EddyDeskConnection(ConnectionSettings):
    system: Literal["eddydesk"]
    base_url: str
    email: str
    api_key_env: str
    timezone: str = "UTC"
    language: str = "en"
    streams: tuple[str, ...] = ("default",)
    store_api_keys: bool = False
    concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    lookback_seconds: Annotated[float, Field(ge=1)] = 120.0
    reconcile_every_hours: Annotated[float, Field(ge=0)] = 24.0
    rate_limit: RateLimitConfig = RateLimitConfig()
    push: dict[str, EddyDeskPush] = {}  # stream name -> write-back settings (off unless given)

    _url = field_validator("base_url")(classmethod(lambda cls, v: check_url(v, "https://acme.eddydesk.com/api/v2")))

    _push = push_tables_check(EDDYDESK_PUSH_TABLES)
    _email = field_validator("email")(classmethod(lambda cls, v: check_email(v)))

    def api_key(self, name: str) -> str:
        return secret_from_env(self.api_key_env, name, "api_key_env")
