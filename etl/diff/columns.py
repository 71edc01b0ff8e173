"""A pushable table's writable columns in the remote's text form, and the merge a pull does over local edits.

A row's base version (the last one known to be on the remote) is its `raw` record: local edits
change the typed columns (and, for EddyDesk, the custom-field value rows), never `raw`. So a
row's local changes are the writable columns whose text differs from what `raw` gives, with no
extra bookkeeping. Custom fields are named `custom_fields.ID` in diffs and conflicts. Used by
the EddyDesk and Udesk knowledge loaders (ServiceGo's wide tables have their own, `servicego.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

import orjson
import sqlalchemy as sa

from etl.diff.conflicts import open_conflict, record_conflicts, settle
from etl.diff.fields import merge
from etl.mirror.base import Base, table_of
from etl.mirror.normalize import to_str
from etl.mirror.rows import RowBuilder
from etl.mirror.write import Prepared

SLA = "%d.%m.%Y %H:%M"  # how EddyDesk's sla_date and freeze_date are written (seed 003)
CUSTOM = "custom_fields."


@dataclass(frozen=True)
class Writable:
    """One pushable table: its columns named as the API names them, and where it is written."""

    stream: str
    model: type[Base]
    columns: tuple[str, ...]
    numbers: tuple[str, ...] = ()  # sent as numbers
    custom_values: type[Base] | None = None  # child table of custom-field values
    parent_column: str | None = None  # in custom_values: the record's id

    @property
    def table(self) -> sa.Table:
        return table_of(self.model)

    @property
    def custom_table(self) -> sa.Table | None:
        return table_of(self.custom_values) if self.custom_values is not None else None


def to_text(value: Any, tz: tzinfo) -> str | None:
    """A column value as the API writes it (None for an empty field)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(tz).strftime(SLA)
    return str(value)


def raw_custom_texts(raw: dict[str, Any]) -> dict[str, str | None]:
    """The scalar custom-field values of a record (list values, hierarchies, are not pushed)."""
    out: dict[str, str | None] = {}
    for cf in raw.get("custom_fields") or []:
        if isinstance(cf, dict) and cf.get("id") is not None and not isinstance(cf.get("field_value"), list | dict):
            out[f"{CUSTOM}{cf['id']}"] = to_text(to_str(cf.get("field_value")), UTC)
    return out


def local_custom_texts(conn: sa.Connection, spec: Writable, connection: str,
                       ids: list[int]) -> dict[int, dict[str, str | None]]:
    """Each record's custom-field `value_text`s as the mirror now holds them."""
    table = spec.custom_table
    out: dict[int, dict[str, str | None]] = {i: {} for i in ids}
    if table is None or not ids or spec.parent_column is None:
        return out
    parent = table.c[spec.parent_column]
    for start in range(0, len(ids), 500):
        rows = conn.execute(sa.select(parent, table.c.field_id, table.c.value_text, table.c.value).where(
            table.c.connection == connection, parent.in_(ids[start:start + 500])))
        for record_id, field_id, text, value in rows:
            if not isinstance(value, list | dict):  # as in raw_custom_texts
                out[record_id][f"{CUSTOM}{field_id}"] = to_text(text, UTC)
    return out


def texts(spec: Writable, row: Any, tz: tzinfo) -> dict[str, str | None]:
    return {c: to_text(row[c], tz) for c in spec.columns}


def with_custom(base: dict[str, str | None], base_custom: dict[str, str | None],
                local_custom: dict[str, str | None]) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """Base and local texts over the same custom-field names (a row removed locally is an empty value)."""
    names = set(base_custom) | set(local_custom)
    return ({**base, **{n: base_custom.get(n) for n in names}},
            {n: local_custom.get(n) for n in names})


def merger(spec: Writable, connection: str, builder: RowBuilder, tz: tzinfo,
           policy: str) -> Callable[[sa.Connection, Prepared], int]:
    """A TableWriter hook: before a pull overwrites rows, keep their unpushed local edits.

    Rows that changed remotely and were also edited locally get their kept local values written
    into the prepared row (and, for custom fields, into the record the child rows are built
    from), while `raw` stays the remote record: the kept values remain local changes, pushed next.
    """
    table = spec.table

    def merge_local_edits(conn: sa.Connection, batch: Prepared) -> int:
        ids = [i for i in batch.rows if isinstance(i, int) and i > 0]
        if not ids:
            return 0
        columns = [table.c.id, table.c.content_hash, table.c.raw, *(table.c[c] for c in spec.columns)]
        found: list[sa.RowMapping] = []
        for start in range(0, len(ids), 500):
            found += conn.execute(sa.select(*columns).where(
                table.c.connection == connection, table.c.id.in_(ids[start:start + 500]),
                table.c.is_deleted.is_(False))).mappings().all()
        changed = [r for r in found if r["content_hash"] != batch.rows[r["id"]][1]]
        custom = local_custom_texts(conn, spec, connection, [r["id"] for r in changed])
        recorded = 0
        now = datetime.now(UTC)
        for current in changed:
            record_id = current["id"]
            remote_row, _, remote_record, _ = batch.rows[record_id]
            raw = current["raw"] if isinstance(current["raw"], dict) else orjson.loads(current["raw"])
            base, local = with_custom(texts(spec, builder.build(raw)[0], tz), raw_custom_texts(raw), custom[record_id])
            local = {**texts(spec, current, tz), **local}
            if base == local:
                continue
            remote_custom = raw_custom_texts(remote_record)
            remote = {**texts(spec, remote_row, tz), **{n: remote_custom.get(n) for n in local if n.startswith(CUSTOM)}}
            keep, conflicts = merge(base, local, remote, policy)
            kept_custom = {}
            for name in keep:
                if name.startswith(CUSTOM):
                    kept_custom[int(name[len(CUSTOM):])] = keep[name]
                else:
                    remote_row[name] = current[name]
            if kept_custom:
                _keep_custom_values(remote_record, kept_custom)
            recorded += record_conflicts(conn, connection, table.name, record_id, conflicts, now)
        return recorded

    return merge_local_edits


def _keep_custom_values(record: dict[str, Any], kept: dict[int, str | None]) -> None:
    """The child rows of `record` will carry the kept local values (its `raw` is already serialised)."""
    values = [dict(cf) for cf in record.get("custom_fields") or [] if isinstance(cf, dict)]
    present = {cf.get("id") for cf in values}
    for cf in values:
        if cf.get("id") in kept:
            cf["field_value"] = kept[cf["id"]]
    values += [{"id": fid, "field_type": None, "field_value": text} for fid, text in kept.items() if fid not in present]
    record["custom_fields"] = [cf for cf in values if not (cf.get("id") in kept and kept[cf["id"]] is None)]


def resolve(specs: Iterable[Writable], conn: sa.Connection, conflict_id: int, take: str,
            tz_of: Callable[[str], tzinfo], language_of: Callable[[str], str]) -> dict[str, Any]:
    """Settle a conflict on one of `specs`' tables: `local` keeps the local value (pushed next);
    `remote` puts the value of `raw` (the remote record since the pull that found it) back."""
    row = open_conflict(conn, conflict_id)
    spec = next((w for w in specs if w.table.name == row["table_name"]), None)
    if spec is None:
        raise ValueError(f"table {row['table_name']} takes no write-back")
    if take == "remote":
        table = spec.table
        where = (table.c.connection == row["connection"], table.c.id == row["record_id"])
        raw = conn.execute(sa.select(table.c.raw).where(*where)).scalar_one()
        raw = raw if isinstance(raw, dict) else orjson.loads(raw)
        name = row["field"]
        if name.startswith(CUSTOM) and spec.custom_table is not None and spec.parent_column is not None:
            _put_back_custom(conn, spec, row["connection"], row["record_id"], int(name[len(CUSTOM):]), raw)
        else:
            builder = RowBuilder(table, tz_of(row["connection"]), language_of(row["connection"]))
            conn.execute(table.update().where(*where).values({name: builder.build(raw)[0].get(name)}))
    settle(conn, conflict_id, take, datetime.now(UTC))
    return row


def _put_back_custom(conn: sa.Connection, spec: Writable, connection: str, record_id: int, field_id: int,
                     raw: dict[str, Any]) -> None:
    table = spec.custom_table
    assert table is not None and spec.parent_column is not None
    key = (table.c.connection == connection, table.c[spec.parent_column] == record_id, table.c.field_id == field_id)
    conn.execute(table.delete().where(*key))
    remote = next((cf for cf in raw.get("custom_fields") or [] if isinstance(cf, dict) and cf.get("id") == field_id), None)
    if remote is not None:
        conn.execute(table.insert().values(connection=connection, **{spec.parent_column: record_id}, field_id=field_id,
                                           field_type=remote.get("field_type"), value_text=to_str(remote.get("field_value")),
                                           value=remote.get("field_value")))
