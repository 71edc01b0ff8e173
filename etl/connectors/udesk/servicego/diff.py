"""ServiceGo columns in the API's text form, and the merge a pull does when rows were edited locally.

The base version of a row (the last one known to be on the remote) is its `raw` record: local
edits change the typed columns, never `raw`. So the local changes of a row are the writable
columns whose text differs from what `raw` gives, with no extra bookkeeping, and a successful
push patches `raw` with what it sent.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
import sqlalchemy as sa

from etl.connectors.udesk.servicego.models import FIELDS, FieldColumn, ObjectSchema, RecordBuilder
from etl.core.push.conflicts import open_conflict, record_conflicts, settle
from etl.core.push.fields import merge

READ_ONLY_FIELDS = ("createTime", "updateTime", "createUser", "updateUser")
READ_ONLY_TYPES = ("field_type_auto_number", "field_type_formular", "field_type_sign")


def writable(schema: ObjectSchema) -> dict[str, FieldColumn]:
    """Columns a push may send: field values, not system fields, computed fields or derived columns."""
    return {f.column: f for f in schema.fields.values()
            if f.field not in READ_ONLY_FIELDS and f.field_type not in READ_ONLY_TYPES}


def to_text(field: FieldColumn, value: Any, tz: tzinfo) -> str | None:
    """A column value as the API's fieldValue text (None for an empty field)."""
    if value is None or value == "":
        return None
    kind = field.field_type
    if kind in ("field_type_number", "field_type_formular"):
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            return str(value)
        text = format(number.normalize(), "f")
        return "0" if text in ("-0", "") else text
    if kind == "field_type_date_time":
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return str(moment.astimezone(tz).strftime("%Y-%m-%d %H:%M"))
    if kind == "field_type_date":
        return value.isoformat()[:10] if isinstance(value, date | datetime) else str(value)[:10]
    return str(value)


def texts(fields: dict[str, FieldColumn], row: Any, tz: tzinfo) -> dict[str, str | None]:
    return {column: to_text(f, row.get(column) if isinstance(row, dict) else row[column], tz)
            for column, f in fields.items()}


def merge_local_edits(conn: sa.Connection, connection: str, schema: ObjectSchema, builder: Any, tz: tzinfo,
                      rows: dict[Any, tuple[dict[str, Any], str, Any, bytes]], policy: str) -> int:
    """Before a pull overwrites rows, keep their unpushed local edits (three-way merge).

    `rows` are the prepared remote rows (id -> (row, hash, record, canonical)); each row that
    changed remotely and was also edited locally gets its kept local values written into it.
    Returns the number of conflicts recorded (manual policy).
    """
    table = schema.table
    fields = writable(schema)
    if not rows or not fields:
        return 0
    columns = [table.c.id, table.c.content_hash, table.c.raw, *(table.c[name] for name in fields)]
    found = conn.execute(sa.select(*columns).where(table.c.connection == connection, table.c.id.in_(list(rows)),
                                                   table.c.is_deleted.is_(False))).mappings().all()
    recorded = 0
    now = datetime.now(UTC)
    for current in found:
        remote_row, digest, _, _ = rows[current["id"]]
        if current["content_hash"] == digest:
            continue  # unchanged remotely: the row is not rewritten, local edits stay as they are
        raw = current["raw"] if isinstance(current["raw"], dict) else orjson.loads(current["raw"])
        base = texts(fields, builder.build(raw)[0], tz)
        local = texts(fields, dict(current), tz)
        if base == local:
            continue
        remote = texts(fields, remote_row, tz)
        keep, conflicts = merge(base, local, remote, policy)
        for column in keep:
            remote_row[column] = current[column]
        recorded += record_conflicts(conn, connection, table.name, current["id"], conflicts, now)
    return recorded


def resolve(conn: sa.Connection, conflict_id: int, take: str, tz_of: Callable[[str], tzinfo]) -> dict[str, Any]:
    """Settle a conflict: `local` keeps the local value (the next push sends it); `remote` puts the
    remote value (the row's `raw`, since the pull that found the conflict) back in the column."""
    row = open_conflict(conn, conflict_id)
    if take == "remote":
        objects = conn.execute(sa.select(FIELDS.c.object_name).distinct()).scalars()
        obj = next((o for o in objects if ObjectSchema(o).table.name == row["table_name"]), None)
        if obj is None:
            raise ValueError(f"table {row['table_name']} is not a ServiceGo table")
        schema = ObjectSchema(obj)
        schema.load(conn)
        table = schema.table
        where = (table.c.connection == row["connection"], table.c.id == row["record_id"])
        raw = conn.execute(sa.select(table.c.raw).where(*where)).scalar_one()
        raw = raw if isinstance(raw, dict) else orjson.loads(raw)
        value = RecordBuilder(schema, tz_of(row["connection"])).build(raw)[0].get(row["field"])
        conn.execute(table.update().where(*where).values({row["field"]: value}))
    settle(conn, conflict_id, take, datetime.now(UTC))
    return row
