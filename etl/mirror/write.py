"""Apply fetched records to a mirrored table: insert, update, skip unchanged, mark deleted.

One call = a few set-based statements inside the caller's transaction: a SELECT of the known
hashes, an executemany INSERT, an executemany UPDATE, child-row replacement, and change-log
rows. Unchanged records (the same content hash) only get `last_seen_at` moved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from etl.log import get_logger
from etl.mirror.base import table_of
from etl.mirror.bulk import bulk_insert
from etl.mirror.meta import ChangeLog
from etl.mirror.normalize import JsonText, canonical_json, content_hash, strip_secrets
from etl.mirror.rows import Builder

ChildRows = dict[sa.Table, list[dict[str, Any]]]
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
    """Records made ready for `TableWriter.apply` (all the per-record work, no database work).

    rows: id -> (row, content hash, record, canonical JSON).
    """

    rows: dict[Any, tuple[dict[str, Any], str, dict[str, Any] | None, bytes]] = field(default_factory=dict)
    problems: int = 0

    def shipped(self) -> Prepared:
        """For a writer process: the records stay behind (their canonical JSON holds them)."""
        return Prepared({i: (row, digest, None, canonical) for i, (row, digest, _, canonical) in self.rows.items()},
                        self.problems)

    def record(self, record_id: Any) -> dict[str, Any]:
        row, digest, record, canonical = self.rows[record_id]
        if record is None:  # shipped: read back where needed (child rows, local edits to keep)
            record = orjson.loads(canonical)
            self.rows[record_id] = (row, digest, record, canonical)
        return record

    def extend(self, other: Prepared) -> None:
        self.rows.update(other.rows)
        self.problems += other.problems


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
        c = table.c
        self._key_cols = [col for col in table.primary_key.columns if col.name not in ("connection", "id")]
        self._update = (
            table.update()
            .where(c.connection == sa.bindparam("k_connection"))
            .where(c.id == sa.bindparam("k_id"))
            .where(*[col == sa.bindparam(f"k_{col.name}") for col in self._key_cols])
        )

    def _scope_filter(self, scope: Mapping[str, Any]) -> list[Any]:
        c = self.table.c
        return [c.connection == self.connection, *[c[name] == value for name, value in scope.items()]]

    def _record_key(self, scope: Mapping[str, Any], record_id: Any) -> str:
        return ":".join([*(str(v) for v in scope.values()), str(record_id)])

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
        return self.apply(conn, self.prepare(records, scope=scope, overrides=overrides), run_id, scope=scope,
                          deleted=deleted)

    def prepare(
        self,
        records: list[dict[str, Any]],
        *,
        scope: Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> Prepared:
        """Rows, content hashes and raw JSON for records (no database work)."""
        scope = scope or {}
        prepared = Prepared()
        per_record = None if overrides is None or isinstance(overrides, Mapping) else overrides
        for n, record in enumerate(records):
            clean = strip_secrets(record, self.secret_keys)
            canonical = canonical_json(clean)
            digest = content_hash(canonical)
            row, problems = self.builder.build(clean)
            if problems:
                prepared.problems += len(problems)
                self.log.warning("field_unparseable", id=row.get("id"), problems=problems)
            if per_record is not None:
                row.update(per_record[n])
            elif isinstance(overrides, Mapping):
                row.update(overrides)
            row.update(scope)
            prepared.rows[row["id"]] = (row, digest, clean, canonical)
        return prepared

    def apply(
        self,
        conn: sa.Connection,
        batch: Prepared,
        run_id: int | None,
        *,
        scope: Mapping[str, Any] | None = None,
        deleted: bool = False,
    ) -> UpsertResult:
        """Write prepared rows: insert the new, update the changed, touch the unchanged."""
        scope = scope or {}
        result = UpsertResult()
        result.stats.problems = batch.problems
        prepared = batch.rows
        if not prepared:
            return result
        now = datetime.now(UTC)
        ids = list(prepared)
        result.seen_ids = ids
        known: dict[Any, tuple[str, bool]] = {}
        c = self.table.c
        for chunk in _chunks(ids):
            rows = conn.execute(
                sa.select(c.id, c.content_hash, c.is_deleted).where(*self._scope_filter(scope), c.id.in_(chunk))
            )
            known.update((r[0], (r[1], bool(r[2]))) for r in rows)
        if self.merge is not None:
            # only rows the pull is about to rewrite can hold local edits it must keep
            rewritten = [i for i, v in prepared.items() if i in known and known[i][0] != v[1]]
            if rewritten:
                for i in rewritten:  # read back into this batch: kept values must reach its child rows
                    batch.record(i)
                conflicts = self.merge(conn, Prepared({i: prepared[i] for i in rewritten}))
                if conflicts:
                    self.log.warning("conflicts_recorded", count=conflicts)
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        unchanged: list[Any] = []
        log_rows: list[dict[str, Any]] = []
        for record_id, (row, digest, _, canonical) in prepared.items():
            old = known.get(record_id)
            if old == (digest, deleted):
                unchanged.append(record_id)
                continue
            row["raw"] = JsonText(canonical.decode())
            row["content_hash"] = digest
            row["last_seen_at"] = now
            updated = self.builder.updated_column
            row["remote_updated_at"] = row.get(updated) if updated else None
            row["is_deleted"] = deleted
            row["deleted_at"] = now if deleted else None
            row["last_run_id"] = run_id
            if old is None:
                row["connection"] = self.connection
                row["first_seen_at"] = now
                inserts.append(row)
            else:
                row["k_connection"] = self.connection
                row["k_id"] = record_id
                for col in self._key_cols:
                    row[f"k_{col.name}"] = row.pop(col.name)
                row.pop("id")
                updates.append(row)
            log_rows.append(
                {
                    "table_name": self.table.name,
                    "connection": self.connection,
                    "record_key": self._record_key(scope, record_id),
                    "operation": "delete" if deleted and old is not None else ("insert" if old is None else "update"),
                    "run_id": run_id,
                    "changed_at": now,
                }
            )
            result.changed_ids.append(record_id)
        if inserts:
            bulk_insert(conn, self.table, inserts)
        if updates:
            conn.execute(self._update, updates)
        for chunk in _chunks(unchanged):
            conn.execute(
                self.table.update().where(*self._scope_filter(scope), c.id.in_(chunk)).values(last_seen_at=now)
            )
        if self.children and result.changed_ids:
            self._replace_children(conn, [batch.record(i) for i in result.changed_ids], [
                i for i in result.changed_ids if i in known
            ])
        if log_rows:
            bulk_insert(conn, table_of(ChangeLog), log_rows)
        result.stats.inserted += len(inserts)
        result.stats.updated += len(updates)
        result.stats.unchanged += len(unchanged)
        return result

    def _replace_children(self, conn: sa.Connection, records: list[dict[str, Any]], existing_ids: list[Any]) -> None:
        assert self.children is not None
        for table, parent_column in self.child_tables:
            for chunk in _chunks(existing_ids):
                conn.execute(
                    table.delete().where(table.c.connection == self.connection, table.c[parent_column].in_(chunk))
                )
        batches: ChildRows = {}
        for record in records:
            for table, rows in self.children(record, self.connection).items():
                batches.setdefault(table, []).extend(rows)
        for table, rows in batches.items():
            bulk_insert(conn, table, rows)

    def mark_deleted(
        self, conn: sa.Connection, ids: list[Any], run_id: int | None, scope: Mapping[str, Any] | None = None
    ) -> int:
        """Flag records that vanished remotely; the row and its history stay for reporting.

        Negative ids are new local rows waiting for `desksync push` to create them: never
        remote, so never vanished.
        """
        scope = scope or {}
        ids = [i for i in ids if not (isinstance(i, int) and i < 0)]
        if not ids:
            return 0
        now = datetime.now(UTC)
        c = self.table.c
        flagged: list[Any] = []
        for chunk in _chunks(ids):
            found = conn.execute(
                sa.select(c.id).where(*self._scope_filter(scope), c.id.in_(chunk), c.is_deleted.is_(False))
            ).scalars().all()
            if found:
                conn.execute(
                    self.table.update()
                    .where(*self._scope_filter(scope), c.id.in_(found))
                    .values(is_deleted=True, deleted_at=now, last_run_id=run_id)
                )
                flagged.extend(found)
        if flagged:
            conn.execute(
                table_of(ChangeLog).insert(),
                [
                    {
                        "table_name": self.table.name,
                        "connection": self.connection,
                        "record_key": self._record_key(scope, i),
                        "operation": "delete",
                        "run_id": run_id,
                        "changed_at": now,
                    }
                    for i in flagged
                ],
            )
        return len(flagged)

    def live_ids(self, conn: sa.Connection, scope: Mapping[str, Any] | None = None, **where: Any) -> set[Any]:
        c = self.table.c
        clauses = [*self._scope_filter(scope or {}), c.is_deleted.is_(False)]
        clauses += [c[name] == value for name, value in where.items()]
        return set(conn.execute(sa.select(c.id).where(*clauses)).scalars())
