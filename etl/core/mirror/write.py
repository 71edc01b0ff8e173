"""Apply fetched records to a mirrored table: insert, update, skip unchanged, mark deleted.

Three steps: `prepare` builds rows, hashes and raw JSON from records; `pack` turns them into
driver-ready tuples (with their child rows); `apply` writes a packed batch inside the caller's
transaction with a few set-based statements: a SELECT of the known hashes, one multi-row
INSERT .. ON CONFLICT DO UPDATE for new and changed records, child-row replacement, and
change-log rows. Unchanged records (the same content hash) only get `last_seen_at` moved. The
first two need no database, so a long scan runs them in the fetching process and sends the
packed batch to a writer process (etl/core/pull/writer_process.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import orjson
import sqlalchemy as sa

from etl.core.log import get_logger
from etl.core.mirror.base import table_of
from etl.core.mirror.bulk import converter, inserter, packer, row_packer
from etl.core.mirror.delete_guard import DeleteGuard
from etl.core.mirror.meta import ChangeLog
from etl.core.mirror.normalize import canonical_json, content_hash, strip_secrets
from etl.core.mirror.rows import Builder, PackingBuilder

# A record's child rows, per child table: each a tuple of the table's columns in their order,
# plain values (a JSON column's value as the Python object). Tuples, not dicts: a ticket has a
# handful of child rows, and building and packing them as dicts was half the packing time.
ChildRows = dict[sa.Table, list[tuple[Any, ...]]]
ChildBuilder = Callable[[dict[str, Any], str], ChildRows]

_CHUNK = 500  # ids per IN (...) list: well under SQLite's and PostgreSQL's parameter limits


@dataclass
class WriteStats:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    problems: int = 0

    def add(self, other: WriteStats) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.deleted += other.deleted
        self.unchanged += other.unchanged
        self.problems += other.problems


@dataclass
class Prepared:
    """Records made ready for packing (all the per-record work that needs no database).

    rows: id -> (row, content hash, record, canonical JSON).
    """

    rows: dict[Any, tuple[dict[str, Any], str, dict[str, Any], bytes]] = field(default_factory=dict)
    problems: int = 0
    scope: Mapping[str, Any] = field(default_factory=dict)  # the rows' constant key columns (TableWriter.upsert)


def in_scope(table: sa.Table, connection: str, scope: Mapping[str, Any] | None = None) -> list[Any]:
    """The conditions picking a connection's rows with `scope`'s constant key columns (custom-field
    scope, an option's field): with an id, they name one row."""
    return [table.c.connection == connection, *(table.c[name] == value for name, value in (scope or {}).items())]


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


_LOG_COLUMNS = ("table_name", "connection", "record_key", "operation", "run_id", "changed_at")
_TAIL = ("raw", "content_hash", "remote_updated_at")  # after the record's columns in a packed row
_HEAD = ("connection", "first_seen_at", "last_seen_at", "is_deleted", "deleted_at", "last_run_id")  # per batch


@dataclass
class UpsertResult:
    stats: WriteStats = field(default_factory=WriteStats)
    changed_ids: list[Any] = field(default_factory=list)  # inserted or updated
    seen_ids: list[Any] = field(default_factory=list)


def _chunks(items: list[Any], size: int = _CHUNK) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class TableWriter:
    """Writes one stream's records for one connection.

    `scope` holds constant key columns (custom-field scope, option's field id) that are part
    of the primary key but not of the record.
    """

    def __init__(
        self,
        table: sa.Table,
        builder: Builder,
        connection: str,
        *,
        secret_keys: tuple[str, ...] = (),
        children: ChildBuilder | None = None,
        child_tables: tuple[tuple[sa.Table, str], ...] = (),
        merge: Callable[[sa.Connection, Prepared], int] | None = None,
    ) -> None:
        self.table = table
        self.merge = merge  # write-back: keeps unpushed local edits of rows a pull rewrites
        self.builder = builder
        self.connection = connection
        self.secret_keys = secret_keys
        self.children = children
        self.child_tables = child_tables  # (table, parent column)
        self.log = get_logger(connection=connection, table=table.name)
        self._child_columns = tuple(tuple(c.name for c in t.columns) for t, _ in child_tables)
        # Integer ids only (text compares by the database's collation, which Python's order need
        # not follow), and a key led by the connection (ServiceGo's objects), so that the largest
        # id is one step down its index: with (id, connection), a connection's largest id can
        # mean reading the whole index.
        key = tuple(c.name for c in table.primary_key.columns)
        self._top_id_indexed = key == ("connection", "id") and isinstance(table.c.id.type, sa.Integer)

    def _scope_filter(self, scope: Mapping[str, Any]) -> list[Any]:
        return in_scope(self.table, self.connection, scope)

    def _ids_it_may_hold(self, conn: sa.Connection, scope: Mapping[str, Any], ids: list[Any]) -> list[Any]:
        """The ids the table may already hold: none above its largest one, so the batches of a
        backfill in id order (ServiceGo's scrolls) look nothing up."""
        if not self._top_id_indexed or scope:
            return ids
        c = self.table.c
        top = conn.execute(sa.select(sa.func.max(c.id)).where(c.connection == self.connection)).scalar()
        return [] if top is None else [i for i in ids if i <= top]

    def _log_changes(self, conn: sa.Connection, scope: Mapping[str, Any], changes: list[tuple[Any, str]],
                     run_id: int | None, now: datetime) -> None:
        """Change-log rows for (record id, operation) pairs; a record's key is its scope values and id."""
        when = packer(table_of(ChangeLog), ("changed_at",), conn.dialect)({"changed_at": now})[0]
        name, prefix = self.table.name, "".join(f"{v}:" for v in scope.values())
        inserter(table_of(ChangeLog), _LOG_COLUMNS).insert(
            conn, [(name, self.connection, f"{prefix}{i}", operation, run_id, when) for i, operation in changes])

    def _build(self, record: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """A record's row and how many of its values could not be converted (logged, left NULL)."""
        row, problems = self.builder.build(record)
        if problems:
            self.log.warning("field_unparseable", id=row.get("id"), problems=problems)
        return row, len(problems)

    def upsert(
        self,
        conn: sa.Connection,
        records: list[dict[str, Any]],
        run_id: int | None,
        *,
        scope: Mapping[str, Any] | None = None,
        deleted: bool = False,
        overrides: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> UpsertResult:
        """`overrides`: column values to set on every row, or one mapping per record."""
        if overrides is None:
            batch = self.pack_records(records, conn.dialect, scope=scope)
        else:
            batch = self.pack(self.prepare(records, scope=scope, overrides=overrides), conn.dialect)
        return self.apply(conn, batch, run_id, scope=scope, deleted=deleted)

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
            columns = (*first, *_TAIL)
        packed.columns = columns
        pack = packer(self.table, columns[: -len(_TAIL)], dialect)
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
        columns = (*builder.names, *scope, *_TAIL)
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

    def _merge(self, conn: sa.Connection, packed: Packed, ids: list[Any], scope: Mapping[str, Any]) -> None:
        """Run the local-edit merge on packed rows a pull rewrites: rebuilt from their raw JSON
        (plain scope and override values taken back as packed), merged, packed again."""
        assert self.merge is not None
        columns = packed.columns
        raw_at = columns.index("raw")
        rebuilt = Prepared(scope=scope)
        plain = [(n, name) for n, name in enumerate(columns[: -len(_TAIL)])
                 if converter(self.table.c[name].type, conn.dialect.name) is None]
        for record_id in ids:
            values, digest, _ = packed.rows[record_id]
            canonical = values[raw_at].encode()
            record = orjson.loads(canonical)
            row, _ = self.builder.build(record)
            for n, name in plain:
                row[name] = values[n]
            rebuilt.rows[record_id] = ({name: row.get(name) for name in columns[: -len(_TAIL)]}, digest, record,
                                       canonical)
        conflicts = self.merge(conn, rebuilt)
        if conflicts:
            self.log.warning("conflicts_recorded", count=conflicts)
        packed.rows.update(self.pack(rebuilt, conn.dialect, columns).rows)

    def apply(
        self,
        conn: sa.Connection,
        batch: Prepared | Packed,
        run_id: int | None,
        *,
        scope: Mapping[str, Any] | None = None,
        deleted: bool = False,
    ) -> UpsertResult:
        """Write records: insert the new, update the changed, touch the unchanged."""
        if isinstance(batch, Prepared):
            batch = self.pack(batch, conn.dialect)
        scope = scope or {}
        result = UpsertResult()
        result.stats.problems = batch.problems
        packed = batch.rows
        if not packed:
            return result
        now = datetime.now(UTC)
        ids = list(packed)
        result.seen_ids = ids
        known: dict[Any, tuple[str, bool]] = {}
        # rows the user marked for deletion (is_deleted without deleted_at: `desksync push` deletes
        # them remotely); a pull that still finds the record must not take the mark back
        marked: list[Any] = []
        c = self.table.c
        for chunk in _chunks(self._ids_it_may_hold(conn, scope, ids)):
            found = conn.execute(sa.select(c.id, c.content_hash, c.is_deleted, c.deleted_at.is_(None))
                                 .where(*self._scope_filter(scope), c.id.in_(chunk)))
            for record_id, digest, is_deleted, undated in found:
                if is_deleted and undated and not deleted:
                    marked.append(record_id)
                    is_deleted = False  # compared as live: only a change of content rewrites it
                known[record_id] = (digest, bool(is_deleted))
        if self.merge is not None and known:
            # only rows the pull is about to rewrite can hold local edits it must keep
            rewritten = [i for i, v in packed.items() if i in known and known[i][0] != v[1]]
            if rewritten:
                self._merge(conn, batch, rewritten, scope)
        values: list[tuple[Any, ...]] = []
        unchanged: list[Any] = []
        rewritten_ids: list[Any] = []
        kids: list[list[tuple[Any, ...]]] = [[] for _ in self.child_tables]
        changed = result.changed_ids
        for record_id, (row, digest, children) in packed.items():
            old = known.get(record_id)
            if old == (digest, deleted):
                unchanged.append(record_id)
                continue
            values.append(row)
            changed.append(record_id)
            if old is not None:
                rewritten_ids.append(record_id)
            for into, rows in zip(kids, children, strict=True):
                into += rows
        if values:
            head = packer(self.table, _HEAD, conn.dialect)({
                "connection": self.connection, "first_seen_at": now, "last_seen_at": now, "is_deleted": deleted,
                "deleted_at": now if deleted else None, "last_run_id": run_id,
            })
            # one statement shape for new and changed rows; a changed row keeps its first_seen_at
            inserter(self.table, _HEAD + batch.columns, "update", keep=("first_seen_at",)).insert(conn, values, head)
        for chunk in _chunks(unchanged):
            conn.execute(
                self.table.update().where(*self._scope_filter(scope), c.id.in_(chunk)).values(last_seen_at=now)
            )
        rewritten_now = set(changed)
        still_marked = [i for i in marked if i in rewritten_now]
        for chunk in _chunks(still_marked):
            conn.execute(self.table.update().where(*self._scope_filter(scope), c.id.in_(chunk))
                         .values(is_deleted=True, deleted_at=None))
        if self.child_tables and changed:
            for (table, parent_column), columns, rows in zip(self.child_tables, self._child_columns, kids,
                                                              strict=True):
                for chunk in _chunks(rewritten_ids):
                    conn.execute(table.delete().where(table.c.connection == self.connection,
                                                      table.c[parent_column].in_(chunk)))
                # in parent order, so each key's index pages are met once, one after another; in
                # the pages' order (dates) the parent ids fall all over the key (a batch's rows in
                # random order cost SQLite about a third more CPU and system time than sorted)
                rows.sort(key=itemgetter(columns.index(parent_column)))
                inserter(table, columns).insert(conn, rows)
        if changed:
            rewrite = "delete" if deleted else "update"
            self._log_changes(conn, scope, [(i, rewrite if i in known else "insert") for i in changed], run_id, now)
            result.stats.inserted += len(changed) - len(rewritten_ids)
            result.stats.updated += len(rewritten_ids)
        result.stats.unchanged += len(unchanged)
        return result

    def mark_deleted(
        self, conn: sa.Connection, ids: list[Any], run_id: int | None, scope: Mapping[str, Any] | None = None, *,
        guard: DeleteGuard | None,
    ) -> int:
        """Flag records that vanished remotely; the row and its history stay for reporting.

        Negative ids are new local rows waiting for `desksync push` to create them: never
        remote, so never vanished. `guard` (the run's) refuses a mass deletion before anything
        is written; None only where the user asked for the deletion.
        """
        scope = scope or {}
        ids = [i for i in ids if not (isinstance(i, int) and i < 0)]
        if not ids:
            return 0
        c = self.table.c
        found: list[Any] = []
        for chunk in _chunks(ids):
            found += conn.execute(
                sa.select(c.id).where(*self._scope_filter(scope), c.id.in_(chunk), c.is_deleted.is_(False))
            ).scalars().all()
        if not found:
            return 0
        if guard is not None:
            guard.check(conn, self.table, self.connection, len(found), scope)
        now = datetime.now(UTC)
        for chunk in _chunks(found):
            conn.execute(
                self.table.update()
                .where(*self._scope_filter(scope), c.id.in_(chunk))
                .values(is_deleted=True, deleted_at=now, last_run_id=run_id)
            )
        for child, parent_column in self.child_tables:
            if "is_deleted" in child.c:  # child rows that say whether their record still exists
                for chunk in _chunks(found):
                    conn.execute(child.update().where(child.c.connection == self.connection,
                                                      child.c[parent_column].in_(chunk)).values(is_deleted=True))
        self._log_changes(conn, scope, [(i, "delete") for i in found], run_id, now)
        return len(found)

    def live_ids(self, conn: sa.Connection, scope: Mapping[str, Any] | None = None, **where: Any) -> set[Any]:
        c = self.table.c
        clauses = [*self._scope_filter(scope or {}), c.is_deleted.is_(False)]
        clauses += [c[name] == value for name, value in where.items()]
        return set(conn.execute(sa.select(c.id).where(*clauses)).scalars())
