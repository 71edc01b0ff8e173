"""Udesk knowledge tables a push may write (seed 001), and KM entities with their values (seed 002).

See `etl.core.push.columns` for how local changes are found and merged with a pull. An entity's
values (`udesk_km_entity_values`) are one writable value, `valueList`: its text lists every
value with its synonyms, so a pull keeps a local edit of the values as a whole (a conflict when
both sides changed them), while a push sends the value-level difference (changeType 1 added,
2 modified, 3 deleted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa

from etl.connectors.udesk.knowledge import models as m
from etl.core.push.columns import ChildValues, Texts, Writable

VALUES = "valueList"
Value = tuple[int, str | None, list[str]]  # id, originalValue, similarValueList


def record_value_list(record: dict[str, Any]) -> list[Value]:
    out = []
    for value in record.get(VALUES) or []:
        if isinstance(value, dict) and value.get("id") is not None:
            out.append((int(value["id"]), value.get("originalValue"), [str(s) for s in value.get("similarValueList") or []]))
    return sorted(out)


def row_value_list(rows: Sequence[sa.RowMapping]) -> list[Value]:
    out = []
    for row in rows:
        synonyms = row["synonyms"]
        if isinstance(synonyms, str):
            synonyms = orjson.loads(synonyms)
        out.append((int(row["value_id"]), row["original_value"], [str(s) for s in synonyms or []]))
    return sorted(out)


def value_text(values: list[Value]) -> str | None:
    return orjson.dumps(values).decode() if values else None


def parse_values(text: str | None) -> list[Value]:
    return [(int(i), o, list(s)) for i, o, s in orjson.loads(text)] if text else []


def _keep(record: dict[str, Any], kept: Texts) -> None:
    """A pulled entity's child rows will carry the kept local values (its `raw` is already serialised)."""
    record[VALUES] = [{"id": i, "originalValue": o, "similarValueList": s} for i, o, s in parse_values(kept[VALUES])]


def _put_back(conn: sa.Connection, table: sa.Table, connection: str, record_id: int, name: str,
              raw: dict[str, Any]) -> None:
    conn.execute(table.delete().where(table.c.connection == connection, table.c.entity_id == record_id))
    rows = [{"connection": connection, "entity_id": record_id, "value_id": i, "original_value": o, "synonyms": s}
            for i, o, s in record_value_list(raw)]
    if rows:
        conn.execute(table.insert(), rows)


ENTITY_VALUES = ChildValues(m.KmEntityValue, "entity_id", VALUES,
                            lambda record: {VALUES: value_text(record_value_list(record))},
                            lambda rows: {VALUES: value_text(row_value_list(rows))}, _keep, _put_back,
                            lambda table, name: sa.true())  # the value list is one value: all the rows

WRITABLE = {w.stream: w for w in (
    Writable("catalogs", m.KnowledgeCatalog, ("name",)),
    Writable("questions", m.KnowledgeQuestion, ("title", "content", "content_type", "lasts", "last_min", "last_max")),
    Writable("useful_expressions", m.UsefulExpression, ("content",)),
    Writable("useful_links", m.UsefulLink, ("name", "url")),
    Writable("km_entities", m.KmEntity, ("name", "api_name", "regex", "remark"), values=ENTITY_VALUES),
)}

# set when a record is created and never changed by the API's updates: a local change is held
CREATE_ONLY = {"catalogs": ("parent_id",), "questions": ("catalog_id",), "useful_expressions": ("catalog_id",),
               "useful_links": ("catalog_id",), "km_entities": ("robot_id",)}


def value_changes(base: list[Value], local: list[Value]) -> list[dict[str, Any]]:
    """The valueList items of an entity update: added (1), modified (2), deleted (3) (seed 002).
    A value the user inserted has an id the remote does not know (a negative placeholder)."""
    was = {i: (o, s) for i, o, s in base}
    now = {i: (o, s) for i, o, s in local}
    items: list[dict[str, Any]] = []
    for value_id, (original, synonyms) in sorted(now.items()):
        if value_id not in was:
            items.append({"changeType": 1, "originalValue": original, "similarValueList": synonyms})
        elif was[value_id] != (original, synonyms):
            items.append({"changeType": 2, "id": value_id, "originalValue": original, "similarValueList": synonyms})
    items += [{"changeType": 3, "id": value_id} for value_id in sorted(set(was) - set(now))]
    return items
