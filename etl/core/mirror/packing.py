"""Records to driver-ready tuples, with no database work: a long scan packs in its fetch
threads and sends packed batches to a writer process (etl/core/pull/writer_process.py).

`prepare` builds rows, content hashes and raw JSON from records; `pack` turns them into tuples
in the table's column order (with their child rows); `pack_records` does both in one pass for a
builder that packs; `rebuild` turns packed rows back into prepared ones (the local-edit merge
works on rows).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from etl.core.log import get_logger
from etl.core.mirror.bulk import converter, packer, row_packer
from etl.core.mirror.normalize import canonical_json, content_hash, strip_secrets
from etl.core.mirror.rows import Builder, PackingBuilder

# A record's child rows, per child table: each a tuple of the table's columns in their order,
# plain values (a JSON column's value as the Python object). Tuples, not dicts: a ticket has a
# handful of child rows, and building and packing them as dicts was half the packing time.
ChildRows = dict[sa.Table, list[tuple[Any, ...]]]
ChildBuilder = Callable[[dict[str, Any], str], ChildRows]

TAIL = ("raw", "content_hash", "remote_updated_at")  # after the record's columns in a packed row


@dataclass
class Prepared:
    """Records made ready for packing (all the per-record work that needs no database).

    rows: id -> (row, content hash, record, canonical JSON).
    """

    rows: dict[Any, tuple[dict[str, Any], str, dict[str, Any], bytes]] = field(default_factory=dict)
    problems: int = 0
    scope: Mapping[str, Any] = field(default_factory=dict)  # the rows' constant key columns (TableWriter.upsert)


# A packed record: its values in `Packed.columns` order as the driver takes them, its content
# hash, and its child rows (packed likewise), one list per child table of the writer.
PackedRow = tuple[tuple[Any, ...], str, tuple[list[tuple[Any, ...]], ...]]


@dataclass
class Packed:
    """Records ready for `TableWriter.apply`: plain tuples of str/int/float/None (on SQLite), so
    a batch pickles cheaply to a writer process and is only bound there."""

    columns: tuple[str, ...] = ()
    rows: dict[Any, PackedRow] = field(default_factory=dict)
    problems: int = 0

    def extend(self, other: Packed) -> None:
        if not self.rows:
            self.columns = other.columns
        elif other.rows and other.columns != self.columns:
            raise ValueError(f"cannot join packed rows of columns {other.columns} to {self.columns}")
        self.rows.update(other.rows)  # a record met twice: the later copy wins
        self.problems += other.problems


class RecordPacker:
    """Packs one table's records for one connection (secrets left out, child rows built)."""

    def __init__(self, table: sa.Table, builder: Builder, connection: str, *, secret_keys: tuple[str, ...] = (),
                 children: ChildBuilder | None = None, child_tables: tuple[tuple[sa.Table, str], ...] = ()) -> None:
        self.table = table
        self.builder = builder
        self.connection = connection
        self.secret_keys = secret_keys
        self.children = children
        self.child_tables = child_tables
        self.log = get_logger(connection=connection, table=table.name)

    def _build(self, record: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """A record's row and how many of its values could not be converted (logged, left NULL)."""
        row, problems = self.builder.build(record)
        if problems:
            self.log.warning("field_unparseable", id=row.get("id"), problems=problems)
        return row, len(problems)

    def prepare(
        self,
        records: list[dict[str, Any]],
        *,
        scope: Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> Prepared:
        """Rows, content hashes and raw JSON for records (no database work).

        Scope and override values are plain (ints, texts): a writer rebuilding a packed row for
        the local-edit merge takes them back from the packed values as they are.
        """
        scope = scope or {}
        prepared = Prepared()
        per_record = None if overrides is None or isinstance(overrides, Mapping) else overrides
        for n, record in enumerate(records):
            clean = strip_secrets(record, self.secret_keys)
            canonical = canonical_json(clean)
            digest = content_hash(canonical)
            row, problems = self._build(clean)
            prepared.problems += problems
            if per_record is not None:
                row.update(per_record[n])
            elif isinstance(overrides, Mapping):
                row.update(overrides)
            row.update(scope)
            prepared.rows[row["id"]] = (row, digest, clean, canonical)
        return prepared

    def pack(self, batch: Prepared, dialect: sa.Dialect, columns: tuple[str, ...] | None = None) -> Packed:
        """Driver-ready tuples for prepared records and their child rows (no database work)."""
        packed = Packed(problems=batch.problems)
        if not batch.rows:
            return packed
        if columns is None:
            first = next(iter(batch.rows.values()))[0]
            columns = (*first, *TAIL)
        packed.columns = columns
        pack = packer(self.table, columns[: -len(TAIL)], dialect)
        finish = self._finisher(columns, dialect)
        rows = packed.rows
        for record_id, (row, digest, record, canonical) in batch.rows.items():
            rows[record_id] = finish(pack(row), digest, record, canonical)
        return packed

    def pack_records(self, records: list[dict[str, Any]], dialect: sa.Dialect, *,
                     scope: Mapping[str, Any] | None = None) -> Packed:
        """`pack(prepare(records))` in one pass, straight from the records to tuples (no row dicts),
        for a builder that packs (RowBuilder, ServiceGo's RecordBuilder); a record with a value
        the builder reports as a problem takes the slower path, which names it."""
        scope = scope or {}
        builder = self.builder
        if not isinstance(builder, PackingBuilder) or any(name in builder.names for name in scope):
            return self.pack(self.prepare(records, scope=scope), dialect)
        fast = builder.packer(dialect)
        slow = packer(self.table, builder.names, dialect)
        constant = packer(self.table, tuple(scope), dialect)(scope) if scope else ()
        columns = (*builder.names, *scope, *TAIL)
        finish = self._finisher(columns, dialect)
        id_at = builder.names.index("id")
        packed = Packed(columns)
        rows = packed.rows
        for record in records:
            clean = strip_secrets(record, self.secret_keys)
            canonical = canonical_json(clean)
            try:
                values = fast(clean)
            except (ValueError, TypeError):
                row, problems = self._build(clean)
                packed.problems += problems
                values = slow(row)
            if constant:
                values += constant
            rows[values[id_at]] = finish(values, content_hash(canonical), clean, canonical)
        return packed

    def _finisher(self, columns: tuple[str, ...],
                  dialect: sa.Dialect) -> Callable[[tuple[Any, ...], str, dict[str, Any], bytes], PackedRow]:
        """Completes a record's packed values: raw JSON, hash, remote update time, child rows."""
        updated = self.builder.updated_column
        at = columns.index(updated) if updated in columns else None
        children, connection = self.children, self.connection
        child_packs = [(t, row_packer(t, dialect)) for t, _ in self.child_tables]
        none: tuple[list[tuple[Any, ...]], ...] = tuple([] for _ in child_packs)

        def finish(values: tuple[Any, ...], digest: str, record: dict[str, Any], canonical: bytes) -> PackedRow:
            values += (canonical.decode(), digest, None if at is None else values[at])
            if children is None:
                return values, digest, none
            made = children(record, connection)
            return values, digest, tuple(
                (made.get(t) or []) if pack is None else [pack(r) for r in made.get(t) or ()] for t, pack in child_packs
            )

        return finish

    def rebuild(self, packed: Packed, ids: list[Any], dialect: sa.Dialect, scope: Mapping[str, Any]) -> Prepared:
        """Packed rows as prepared ones again, rebuilt from their raw JSON (plain scope and
        override values taken back as packed)."""
        columns = packed.columns
        raw_at = columns.index("raw")
        rebuilt = Prepared(scope=scope)
        plain = [(n, name) for n, name in enumerate(columns[: -len(TAIL)])
                 if converter(self.table.c[name].type, dialect.name) is None]
        for record_id in ids:
            values, digest, _ = packed.rows[record_id]
            canonical = values[raw_at].encode()
            record = orjson.loads(canonical)
            row, _ = self.builder.build(record)
            for n, name in plain:
                row[name] = values[n]
            rebuilt.rows[record_id] = ({name: row.get(name) for name in columns[: -len(TAIL)]}, digest, record,
                                       canonical)
        return rebuilt
