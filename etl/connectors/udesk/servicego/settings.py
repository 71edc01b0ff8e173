"""A ServiceGo connection's settings (`system = "servicego"`): the objects it mirrors and pushes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from etl.connectors.udesk.settings import UdeskRateLimit
from etl.core.config import (
    ConnectionSettings,
    Frozen,
    check_email,
    check_url,
    secret_from_env,
)


class Condition(Frozen):
    """One ServiceGo search condition (seed 004, conditionList[])."""

    field: str
    operator: str
    value: str = ""


class RelatedObject(Frozen):
    """Optional stream: each record's related records of another object (GET v1/data/relatedDatas)."""

    object: str  # the child objectApiName
    filter_id: int | None = None  # the child's UI filter


class LookupTarget(Frozen):
    """Where a lookup field points: ServiceGo updates name the looked-up record by an external
    unique field (seed 004: foreignExternalFieldApiName, required on update)."""

    object: str
    unique_field: str


class PushConfig(Frozen):
    """Write-back of one mirrored table (`desksync push`)."""

    conflict_policy: Literal["remote_wins", "local_wins", "manual"] = "manual"
    allow_delete: bool = False
    lookups: dict[str, LookupTarget] = {}  # lookup field -> its object and external unique field
    # a new row whose external unique field matches a remote record updates that record instead
    # of creating a second one; also how a create whose answer was lost is found again
    upsert_by: str | None = None


class ServiceGoObject(Frozen):
    name: str  # objectApiName
    filter_id: int | None = None
    conditions: tuple[Condition, ...] = ()
    judge_strategy: Literal[1, 2, 3] = 1
    custom_judge_logic: str | None = None
    related: tuple[RelatedObject, ...] = ()  # optional: one request per changed record and child object
    relations_ui_id: int | None = None  # optional: record relations (GET v1/selfObjectRelationData) with this uiId
    push: PushConfig | None = None  # write-back of local changes (off unless given)

    @model_validator(mode="after")
    def _logic(self) -> ServiceGoObject:
        if self.judge_strategy == 3 and not self.custom_judge_logic:
            raise ValueError("custom_judge_logic is required when judge_strategy is 3")
        return self


class ServiceGoConnection(ConnectionSettings):
    system: Literal["servicego"]
    base_url: str
    email: str
    api_token_env: str
    sign_hash: Literal["sha1", "sha256"] = "sha1"
    timezone: str = "Asia/Shanghai"
    objects: tuple[ServiceGoObject, ...]
    page_size: Annotated[int, Field(ge=1, le=100)] = 100
    overlap_minutes: Annotated[float, Field(ge=1)] = 5.0
    reconcile_every_hours: Annotated[float, Field(ge=0)] = 24.0
    rate_limit: UdeskRateLimit = UdeskRateLimit()

    _url = field_validator("base_url")(classmethod(lambda cls, v: check_url(v, "https://servicego.udesk.cn/api")))
    _email = field_validator("email")(classmethod(lambda cls, v: check_email(v)))

    def api_token(self, name: str) -> str:
        return secret_from_env(self.api_token_env, name, "api_token_env")
