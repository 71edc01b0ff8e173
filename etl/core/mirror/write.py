"""Apply fetched records to a mirrored table: insert, update, skip unchanged, mark deleted.

Records are packed first (etl.core.mirror.packing, no database work); `apply` writes a packed
batch inside the caller's transaction with a few set-based statements: a SELECT of the known
hashes, one multi-row INSERT .. ON CONFLICT DO UPDATE for new and changed records, child-row
replacement, and change-log rows. Unchanged records (the same content hash) only get
`last_seen_at` moved. With write-back configured, the rows a pull rewrites first go through
the local-edit merge (`merge`, etl.core.push.columns.merger).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import sqlalchemy as sa

from etl.core.log import get_logger
from etl.core.mirror.base import table_of
from etl.core.mirror.bulk import inserter, packer
from etl.core.mirror.delete_guard import DeleteGuard
from etl.core.mirror.meta import ChangeLog
from etl.core.mirror.packing import ChildBuilder, Packed, Prepared, RecordPacker
from etl.core.mirror.rows import Builder

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


def in_scope(table: sa.Table, connection: str, scope: Mapping[str, Any] | None = None) -> list[Any]:
    """The conditions picking a connection's rows with `scope`'s constant key columns (custom-field
    scope, an option's field): with an id, they name one row."""
    return [table.c.connection == connection, *(table.c[name] == value for name, value in (scope or {}).items())]


_LOG_COLUMNS = ("table_name", "connection", "record_key", "operation", "run_id", "changed_at")
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
        self.packer = RecordPacker(table, builder, connection, secret_keys=secret_keys, children=children,
                                   child_tables=child_tables)
        # packing, as the packer does it (the fetch threads call these on the writer they hold)
        self.prepare = self.packer.prepare
        self.pack = self.packer.pack
        self.pack_records = self.packer.pack_records
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

    def _merge(self, conn: sa.Connection, packed: Packed, ids: list[Any], scope: Mapping[str, Any]) -> None:
        """Run the local-edit merge on packed rows a pull rewrites (rebuilt as rows, merged, packed again)."""
        assert self.merge is not None
        rebuilt = self.packer.rebuild(packed, ids, conn.dialect, scope)
        conflicts = self.merge(conn, rebuilt)
        if conflicts:
            self.log.warning("conflicts_recorded", count=conflicts)
        packed.rows.update(self.packer.pack(rebuilt, conn.dialect, packed.columns).rows)

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
        result.seen_ids = list(packed)
        known, marked = self._known(conn, scope, result.seen_ids, deleted)
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
        rewritten_now = set(changed)
        self._write(conn, batch.columns, values, unchanged, [i for i in marked if i in rewritten_now], scope, run_id,
                    deleted, now)
        if self.child_tables and changed:
            self._replace_children(conn, rewritten_ids, kids)
        if changed:
            rewrite = "delete" if deleted else "update"
            self._log_changes(conn, scope, [(i, rewrite if i in known else "insert") for i in changed], run_id, now)
            result.stats.inserted += len(changed) - len(rewritten_ids)
            result.stats.updated += len(rewritten_ids)
        result.stats.unchanged += len(unchanged)
        return result

    def _known(self, conn: sa.Connection, scope: Mapping[str, Any], ids: list[Any],
               deleted: bool) -> tuple[dict[Any, tuple[str, bool]], list[Any]]:
        """The batch's rows the table holds (id -> content hash, deleted), and those the user
        marked for deletion (is_deleted without deleted_at: `desksync push` deletes them
        remotely): a pull that still finds the record must not take the mark back."""
        known: dict[Any, tuple[str, bool]] = {}
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
        return known, marked

    def _write(self, conn: sa.Connection, columns: tuple[str, ...], values: list[tuple[Any, ...]],
               unchanged: list[Any], still_marked: list[Any], scope: Mapping[str, Any], run_id: int | None,
               deleted: bool, now: datetime) -> None:
        c = self.table.c
        if values:
            head = packer(self.table, _HEAD, conn.dialect)({
                "connection": self.connection, "first_seen_at": now, "last_seen_at": now, "is_deleted": deleted,
                "deleted_at": now if deleted else None, "last_run_id": run_id,
            })
            # one statement shape for new and changed rows; a changed row keeps its first_seen_at
            inserter(self.table, _HEAD + columns, "update", keep=("first_seen_at",)).insert(conn, values, head)
        for chunk in _chunks(unchanged):
            conn.execute(
                self.table.update().where(*self._scope_filter(scope), c.id.in_(chunk)).values(last_seen_at=now)
            )
        for chunk in _chunks(still_marked):
            conn.execute(self.table.update().where(*self._scope_filter(scope), c.id.in_(chunk))
                         .values(is_deleted=True, deleted_at=None))

    def _replace_children(self, conn: sa.Connection, rewritten_ids: list[Any],
                          kids: list[list[tuple[Any, ...]]]) -> None:
        for (table, parent_column), columns, rows in zip(self.child_tables, self._child_columns, kids, strict=True):
            for chunk in _chunks(rewritten_ids):
                conn.execute(table.delete().where(table.c.connection == self.connection,
                                                  table.c[parent_column].in_(chunk)))
            # in parent order, so each key's index pages are met once, one after another; in
            # the pages' order (dates) the parent ids fall all over the key (a batch's rows in
            # random order cost SQLite about a third more CPU and system time than sorted)
            rows.sort(key=itemgetter(columns.index(parent_column)))
            inserter(table, columns).insert(conn, rows)

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
