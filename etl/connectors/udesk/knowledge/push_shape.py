"""What a knowledge write sends: paths, bodies, and what may not be emptied or is matched on (seeds 001, 002)."""

from __future__ import annotations

from typing import Any

from etl.connectors.udesk.knowledge import models as m
from etl.connectors.udesk.knowledge.client import KM_SYSTEM, SYSTEM
from etl.connectors.udesk.knowledge.diff import (
    VALUES,
    parse_values,
    record_value_list,
    value_changes,
)
from etl.connectors.udesk.knowledge.pull import STREAMS
from etl.core.errors import MalformedResponse
from etl.core.mirror.base import table_of
from etl.core.push.columns import (
    Texts,
)

# catalogs first: new questions, expressions and links may sit in new catalogs
ORDER = ("catalogs", "questions", "useful_expressions", "useful_links", "km_entities")


RESOURCE = {"questions": "knowledge_questions", "useful_expressions": "useful_expressions",
            "useful_links": "useful_links"}


CATALOGS = table_of(m.KnowledgeCatalog)


ITEM_TABLES = tuple(table_of(model) for model in (m.KnowledgeQuestion, m.UsefulExpression, m.UsefulLink))


ENTITY_VALUES = table_of(m.KmEntityValue)


# what must not be emptied, as "" and null mean "unchanged" in the updates
NOT_EMPTIED = {"catalogs": ("name",), "questions": ("title", "content", "content_type"),
               "useful_expressions": ("content",), "useful_links": ("name", "url"), "km_entities": ("name", "api_name")}


# the texts a lookup after a lost answer compares (no unique key)
MATCHED_BY = {"questions": ("title",), "useful_expressions": ("content",), "useful_links": ("name", "url")}


def context_columns(stream: str) -> tuple[str, ...]:
    if stream == "catalogs":
        return ("agent_id", "knowledge_type", "parent_id", "depth", "path")
    if stream == "km_entities":
        return ("robot_id",)
    return ("agent_id", "catalog_id")


def path_of(stream: str, record_id: int | None) -> str:
    resource = {"catalogs": "knowledge_catalogs", "km_entities": "v1/entity", **RESOURCE}[stream]
    return resource if record_id is None else f"{resource}/{record_id}"


def text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def with_validity(values: Texts) -> Texts:
    """A question valid for ever keeps no limits (seed 001: they are not saved when lasts is true)."""
    return {**values, "last_min": None, "last_max": None} if values.get("lasts") == "1" else dict(values)


def owner_body(stream: str, row: Any) -> dict[str, Any]:
    if stream == "catalogs":
        return {"knowledge_catalog": {"agent_id": int(row["agent_id"])}}
    return {} if stream == "km_entities" else {"agent_id": int(row["agent_id"])}


def question_body(local: Texts, names: list[str] | None) -> dict[str, Any]:
    """A question's members: the named ones (all on create), lasts always, limits when it lasts not."""
    body: dict[str, Any] = {n: local[n] for n in ("title", "content", "content_type") if names is None or n in names}
    lasts = local.get("lasts")
    body["lasts"] = None if lasts is None else lasts == "1"
    if lasts == "0":
        body["last_min"], body["last_max"] = local.get("last_min"), local.get("last_max")
    return body


def entity_body(row: Any, local: Texts) -> dict[str, Any]:
    robot = row["robot_id"]
    return {"robotId": None if robot is None else int(robot), "name": local["name"], "apiName": local["api_name"],
            "regex": local["regex"], "remark": local["remark"]}


def update_body(stream: str, row: Any, raw: dict[str, Any], changed: list[str], local: Texts) -> dict[str, Any]:
    agent = {"agent_id": int(row["agent_id"])} if "agent_id" in row else {}
    if stream == "catalogs":
        return {"knowledge_catalog": {"name": local["name"], **agent}}
    if stream == "questions":
        return {"question": {**agent, **question_body(local, changed)}}
    if stream == "km_entities":
        body = entity_body(row, local)
        if VALUES in changed:
            body[VALUES] = value_changes(record_value_list(raw), parse_values(local[VALUES]))
        return body
    return {**agent, **{n: local[n] for n in changed}}


def stream_of(name: str) -> Any:
    return next(s for s in STREAMS if s.name == name)


def answer_record(stream: str, body: Any, path: str) -> dict[str, Any]:
    """The record an answer carries: KM answers wrap it in `data`; knowledge answers are the
    record's members beside `code`."""
    if stream == "km_entities":
        if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
            raise MalformedResponse(KM_SYSTEM, "answer has no 'data' object", path=path)
        return dict(body["data"])
    if not isinstance(body, dict) or body.get("id") is None:
        raise MalformedResponse(SYSTEM, "answer has no 'id'", path=path)
    record = {k: v for k, v in body.items() if k not in ("code", "message")}
    record["id"] = int(record["id"])
    return record
