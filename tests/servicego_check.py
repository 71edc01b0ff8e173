"""Compare ServiceGo mirror tables with the simulator's records, field by field.

Expected column values are derived here from the simulator's fieldDataList entries with the
seed's formats, independently of the engine's row builder.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from etl.connectors.udesk.servicego.simulator.store import ServiceGoState


def _snake(name: str) -> str:
    out = ""
    for n, ch in enumerate(name):
        if ch.isupper() and n and (name[n - 1].islower() or name[n - 1].isdigit()):
            out += "_"
        out += ch.lower()
    return out


def _expected(entry: dict[str, Any], kind: str, tz: ZoneInfo) -> dict[str, Any]:
    """The columns of one entry of a field of type `kind` (the simulator's own name for the type,
    whatever name the wire gives it)."""
    value = entry["fieldValue"]
    col = _snake(entry["fieldApiName"])
    if value == "":
        main: Any = None
    elif kind in ("field_type_number", "field_type_formular"):
        main = Decimal(value)
    elif kind == "field_type_date":
        main = date.fromisoformat(value)
    elif kind == "field_type_date_time":
        main = datetime.strptime(value, "%Y-%m-%d %H:%M").replace(tzinfo=tz).astimezone(UTC)
    else:
        main = value
    out = {col: main}
    extras = {"optionNameList": "_names", "tagValueList": "_tags", "foreignDataName": "_name", "userEmail": "_email",
              "ownerResult": "_owner"}
    for member, suffix in extras.items():
        if kind.endswith("select") and member == "optionNameList" or kind in ("field_type_phone", "field_type_email") \
                and member == "tagValueList" or kind == "field_type_lookup" and member == "foreignDataName" \
                or kind == "field_type_lookup_user" and member == "userEmail" or kind == "field_type_owner" \
                and member == "ownerResult":
            out[col + suffix] = entry.get(member)
    if kind == "field_type_rich_text":
        out[col + "_attachments"] = entry["richText"]["attachmentList"] if "richText" in entry else None
    return out


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, Decimal):
        return actual is not None and Decimal(str(actual)) == expected
    if isinstance(expected, datetime):
        if not isinstance(actual, datetime):
            return False
        return (actual.replace(tzinfo=UTC) if actual.tzinfo is None else actual) == expected
    if isinstance(expected, date) and isinstance(actual, str):
        return actual == expected.isoformat()
    if isinstance(actual, str) and isinstance(expected, list | dict):
        return json.loads(actual) == expected
    return bool(actual == expected)


def assert_servicego_matches(engine: sa.Engine, state: ServiceGoState, connection: str = "sg",
                             objects: tuple[str, ...] = ("customer", "contact", "case")) -> None:
    tz = state.tz
    with engine.connect() as conn:
        for obj in objects:
            table = sa.Table(f"servicego_{obj}", sa.MetaData(), autoload_with=conn)
            rows = {r.id: r._mapping for r in conn.execute(sa.select(table).where(table.c.connection == connection))}
            live = {i for i, r in rows.items() if not r["is_deleted"]}
            remote = set(state.records[obj])
            assert live == remote, (f"{obj}: missing {sorted(remote - live)[:10]} "
                                    f"({len(remote - live)}), extra {sorted(live - remote)[:10]} ({len(live - remote)})")
            for record_id in remote:
                row = rows[record_id]
                raw = row["raw"] if isinstance(row["raw"], dict) else json.loads(row["raw"])
                entries = state.entries(obj, record_id)
                assert raw == {"id": record_id, "fieldDataList": entries}, f"{obj} {record_id}: raw differs"
                for entry in entries:
                    field = state.objects[obj].field(entry["fieldApiName"])
                    assert field is not None
                    for column, expected in _expected(entry, field.type, tz).items():
                        assert _same(row[column], expected), (
                            f"{obj} {record_id}.{column}: mirror {row[column]!r}, remote {expected!r}")
