"""A pushable table's writable columns in the remote's text form, and the merge a pull does over local edits.

A row's base version (the last one known to be on the remote) is its `raw` record: local edits
change the typed columns (and the child rows holding values, such as EddyDesk custom fields or
KM entity values), never `raw`. So a row's local changes are the writable values whose text
differs from what `raw` gives, with no extra bookkeeping. Child-row values are named by their
`ChildValues` (`custom_fields.ID`, `valueList`) in diffs and conflicts. Used by the EddyDesk and
Udesk knowledge loaders (ServiceGo's wide tables have their own, `servicego.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

import orjson
import sqlalchemy as sa

from etl.core.mirror.base import table_of
from etl.core.mirror.packing import Prepared
from etl.core.mirror.rows import RowBuilder
from etl.core.mirror.write import in_scope
from etl.core.push.conflicts import open_conflict, record_conflicts, settle
from etl.core.push.fields import merge

SLA = "%d.%m.%Y %H:%M"  # how EddyDesk's sla_date and freeze_date are written (seed 003)
CUSTOM = "custom_fields."
Texts = dict[str, str | None]


@dataclass(frozen=True)
class ChildValues:
    """Writable values a record keeps in child rows, as texts named with `prefix`.

    `of_record` reads them from a record (the base `raw`, or a pulled one); `of_rows` from the
    child rows of one record as the mirror holds them; `keep` writes kept local texts into a
    pulled record, whose child rows are then built from it; `put_back` rewrites one value's
    child rows from the record `raw` (settling a conflict for the remote).
    """

    model: type[Any]  # a declarative model (of the mirror's metadata, or a connector's own)
    parent_column: str  # the record's id
    prefix: str
    of_record: Callable[[dict[str, Any]], Texts]
    of_rows: Callable[[Sequence[sa.RowMapping]], Texts]
    keep: Callable[[dict[str, Any], Texts], None]
    put_back: Callable[[sa.Connection, sa.Table, str, int, str, dict[str, Any]], None]
    rows_of: Callable[[sa.Table, str], Any]  # the condition picking one value's rows among a record's

    @property
    def table(self) -> sa.Table:
        return table_of(self.model)

    def owns(self, name: str) -> bool:
        return name.startswith(self.prefix)


@dataclass(frozen=True)
class Writable:
    """One pushable table: its columns named as the API names them, and where it is written."""

    stream: str
    model: type[Any]  # a declarative model (of the mirror's metadata, or a connector's own)
    columns: tuple[str, ...]
    numbers: tuple[str, ...] = ()  # sent as numbers
    values: ChildValues | None = None  # writable values kept in child rows

    @property
    def table(self) -> sa.Table:
        return table_of(self.model)


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


def record_values(spec: Writable, record: dict[str, Any]) -> Texts:
    """The child-row values a record holds (empty for a table without them)."""
    return spec.values.of_record(record) if spec.values is not None else {}


def local_values(conn: sa.Connection, spec: Writable, connection: str, ids: list[int]) -> dict[int, Texts]:
    """Each record's child-row values as the mirror now holds them."""
    out: dict[int, Texts] = {i: {} for i in ids}
    values = spec.values
    if values is None or not ids:
        return out
    table = values.table
    parent = table.c[values.parent_column]
    rows: dict[int, list[sa.RowMapping]] = {i: [] for i in ids}
    for start in range(0, len(ids), 500):
        for row in conn.execute(sa.select(table).where(table.c.connection == connection,
                                                       parent.in_(ids[start:start + 500]))).mappings():
            rows[row[values.parent_column]].append(row)
    for record_id, found in rows.items():
        out[record_id] = values.of_rows(found)
    return out


def texts(spec: Writable, row: Any, tz: tzinfo) -> dict[str, str | None]:
    return {c: to_text(row[c], tz) for c in spec.columns}


def with_values(base: Texts, base_values: Texts, local_values: Texts) -> tuple[Texts, Texts]:
    """Base and local texts over the same child-value names (a row removed locally is an empty value)."""
    names = set(base_values) | set(local_values)
    return ({**base, **{n: base_values.get(n) for n in names}},
            {n: local_values.get(n) for n in names})


@dataclass
class EditsMeanwhile:
    """What a new row holds that its create did not send: edits made in the mirror while the
    create was under way. The created row takes them as local edits, pushed next time."""

    columns: dict[str, Any]
    child_rows: dict[str, list[dict[str, Any]]]  # a child value's name -> its rows, as the mirror holds them


def edits_meanwhile(conn: sa.Connection, spec: Writable, connection: str, tz: tzinfo, record_id: int,
                    sent: Texts, scope: Mapping[str, Any] | None = None) -> EditsMeanwhile:
    """The values of a new row (still under its placeholder id) that differ from what its create
    sent; `scope`: the key columns besides the id (an option's field)."""
    t = spec.table
    row = conn.execute(sa.select(*(t.c[c] for c in spec.columns)).where(
        *in_scope(t, connection, scope), t.c.id == record_id)).mappings().first()
    if row is None:
        return EditsMeanwhile({}, {})
    current = {**texts(spec, row, tz), **local_values(conn, spec, connection, [record_id])[record_id]}
    names = sorted(n for n in set(current) | set(sent) if current.get(n) != sent.get(n))
    edits = EditsMeanwhile({n: row[n] for n in names if n in spec.columns}, {})
    values = spec.values
    if values is not None:
        table = values.table
        for name in (n for n in names if values.owns(n)):
            edits.child_rows[name] = [dict(r) for r in conn.execute(sa.select(table).where(
                table.c.connection == connection, table.c[values.parent_column] == record_id,
                values.rows_of(table, name))).mappings()]
    return edits


def carry_edits(conn: sa.Connection, spec: Writable, connection: str, record_id: int, edits: EditsMeanwhile,
                scope: Mapping[str, Any] | None = None) -> None:
    """Write `edits_meanwhile` onto the created row (its `raw` stays the remote's answer)."""
    t = spec.table
    if edits.columns:
        conn.execute(t.update().where(*in_scope(t, connection, scope), t.c.id == record_id).values(edits.columns))
    values = spec.values
    if values is None:
        return
    table = values.table
    for name, rows in edits.child_rows.items():
        conn.execute(table.delete().where(table.c.connection == connection,
                                          table.c[values.parent_column] == record_id, values.rows_of(table, name)))
        if rows:
            conn.execute(table.insert(), [{**r, values.parent_column: record_id} for r in rows])


def merger(spec: Writable, connection: str, builder: RowBuilder, tz: tzinfo, policy: str,
           sent: Mapping[Any, Texts] | None = None) -> Callable[[sa.Connection, Prepared], int]:
    """A TableWriter hook: before a pull overwrites rows, keep their unpushed local edits.

    Rows that changed remotely and were also edited locally get their kept local values written
    into the prepared row (and, for child-row values, into the record the child rows are built
    from), while `raw` stays the remote record: the kept values remain local changes, pushed next.

    `sent`, for a push writing back the remote's answers: per record, the values it sent. They
    are the base the answer is merged against, so an edit made in the mirror while the request
    was under way (the push read the row before) is kept, and pushed next time.
    """
    table = spec.table
    values = spec.values

    def merge_local_edits(conn: sa.Connection, batch: Prepared) -> int:
        ids = [i for i in batch.rows if isinstance(i, int) and i > 0]
        if not ids:
            return 0
        columns = [table.c.id, table.c.content_hash, table.c.raw, *(table.c[c] for c in spec.columns)]
        found: list[sa.RowMapping] = []
        for start in range(0, len(ids), 500):
            found += conn.execute(sa.select(*columns).where(
                *in_scope(table, connection, batch.scope), table.c.id.in_(ids[start:start + 500]),
                table.c.is_deleted.is_(False))).mappings().all()
        changed = [r for r in found if r["content_hash"] != batch.rows[r["id"]][1]]
        held_values = local_values(conn, spec, connection, [r["id"] for r in changed])
        recorded = 0
        now = datetime.now(UTC)
        for current in changed:
            record_id = current["id"]
            remote_row, _, remote_record, _ = batch.rows[record_id]
            raw = current["raw"] if isinstance(current["raw"], dict) else orjson.loads(current["raw"])
            base, local = with_values(texts(spec, builder.build(raw)[0], tz), record_values(spec, raw),
                                      held_values[record_id])
            local = {**texts(spec, current, tz), **local}
            if sent is not None:
                base = {**base, **{n: v for n, v in sent.get(record_id, {}).items() if n in base}}
            if base == local:
                continue
            remote_values = record_values(spec, remote_record)
            remote = {**texts(spec, remote_row, tz),
                      **{n: remote_values.get(n) for n in local if values is not None and values.owns(n)}}
            keep, conflicts = merge(base, local, remote, policy)
            kept_values = {}
            for name in keep:
                if values is not None and values.owns(name):
                    kept_values[name] = keep[name]
                else:
                    remote_row[name] = current[name]
            if kept_values and values is not None:
                values.keep(remote_record, kept_values)
            recorded += record_conflicts(conn, connection, table.name, record_id, conflicts, now)
        return recorded

    return merge_local_edits


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
        if spec.values is not None and spec.values.owns(name):
            spec.values.put_back(conn, spec.values.table, row["connection"], row["record_id"], name, raw)
        else:
            builder = RowBuilder(table, tz_of(row["connection"]), language_of(row["connection"]))
            conn.execute(table.update().where(*where).values({name: builder.build(raw)[0].get(name)}))
    settle(conn, conflict_id, take, datetime.now(UTC))
    return row
