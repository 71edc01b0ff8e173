"""A Udesk knowledge connection's settings (`system = "udesk_knowledge"`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from etl.connectors.udesk.settings import UdeskRateLimit
from etl.core.config import (
    ConnectionSettings,
    Frozen,
    check_email,
    check_url,
    push_tables_check,
    secret_from_env,
)

KNOWLEDGE_PUSH_TABLES = ("catalogs", "questions", "useful_expressions", "useful_links", "km_entities")


class KnowledgePush(Frozen):
    """Write-back of one Udesk knowledge or KM table (`desksync push`); the key is the stream name."""

    conflict_policy: Literal["remote_wins", "local_wins", "manual"] = "manual"
    allow_delete: bool = False
    # catalogs by knowledge type, owner, parent and name; KM entities by robot and apiName: a new
    # row that matches a remote record updates it instead of creating a second one
    upsert: bool = True


KnowledgeType = Literal["question", "useful_expression", "useful_link", "attachment"]
KNOWLEDGE_TYPES: tuple[KnowledgeType, ...] = ("question", "useful_expression", "useful_link", "attachment")


class UdeskKnowledgeConnection(ConnectionSettings):
    """The knowledge open API (seed 001) and, when km_base_url is set, the KM robot entities (seed 002)."""

    system: Literal["udesk_knowledge"]
    base_url: str
    email: str
    api_token_env: str
    sign_version: Literal["v1", "v2"] = "v2"
    timezone: str = "Asia/Shanghai"
    agent_ids: tuple[int, ...] = (0,)
    knowledge_types: tuple[KnowledgeType, ...] = KNOWLEDGE_TYPES
    km_base_url: str | None = None
    robot_ids: tuple[int, ...] = ()
    download_attachments: bool = False
    attachments_dir: str = "attachments"
    max_attachment_bytes: Annotated[int, Field(gt=0)] = 20 * 1024 * 1024
    rate_limit: UdeskRateLimit = UdeskRateLimit()
    concurrency: Annotated[int, Field(ge=1, le=16)] = 4  # write-back: updates and deletes in flight
    push: dict[str, KnowledgePush] = {}  # stream name -> write-back settings (off unless given)

    _url = field_validator("base_url")(classmethod(lambda cls, v: check_url(v, "https://demo.udesk.cn/open_api_v1")))

    _push = push_tables_check(KNOWLEDGE_PUSH_TABLES)
    _km = field_validator("km_base_url")(
        classmethod(lambda cls, v: None if v is None else check_url(v, "https://km.udesk.cn/api")))
    _email = field_validator("email")(classmethod(lambda cls, v: check_email(v)))

    @model_validator(mode="after")
    def _robots(self) -> UdeskKnowledgeConnection:
        if self.robot_ids and not self.km_base_url:
            raise ValueError("robot_ids needs km_base_url (the KM entity API's address)")
        return self

    def api_token(self, name: str) -> str:
        return secret_from_env(self.api_token_env, name, "api_token_env")
