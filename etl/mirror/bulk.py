"""Fast multi-row INSERTs straight through the DB-API cursor.

SQLAlchemy Core builds a parameter dict and runs bind processors for every row of an
executemany; for a backfill of 100,000 tickets (about a million rows with the child tables)
that was the largest cost. Here each table gets one compiled statement per dialect and a
converter per column, applied to plain tuples. Values end up exactly as SQLAlchemy would store
them, so reads through SQLAlchemy see no difference.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC
from typing import Any

import orjson
import sqlalchemy as sa

from etl.mirror.normalize import JsonText

Convert = Callable[[Any], Any]


def _json_text(value: Any) -> Any:
    if value is None:
        return None
    return value if isinstance(value, JsonText) else orjson.dumps(value).decode()


_recent = threading.local()  # a batch's rows share their "now": format it once per thread


def _sqlite_datetime(value: Any) -> Any:
    # SQLAlchemy's SQLite DATETIME storage format ("%Y-%m-%d %H:%M:%S.%f"), in UTC
    if value is None:
        return None
    last = getattr(_recent, "last", None)
    if last is None:
        last = _recent.last = [None, None]
    if value is last[0]:
        return last[1]
    text = value
    if value.tzinfo is not None and value.utcoffset():
        text = value.astimezone(UTC)
    text = text.isoformat(" ", "microseconds")[:26]  # without the "+00:00"
    last[0], last[1] = value, text
    return text


def _sqlite_bool(value: Any) -> Any:
    return None if value is None else int(bool(value))


def _sqlite_number(value: Any) -> Any:
    # as SQLAlchemy's Numeric on SQLite: stored as a float (PostgreSQL keeps the Decimal exact)
    return None if value is None else float(value)


def _sqlite_date(value: Any) -> Any:
    return None if value is None else value.isoformat()


# Rows per multi-row INSERT: far below SQLite's 32,766 and PostgreSQL's 65,535 parameters for
# any of our tables. One statement per chunk instead of one step per row also matters for
# threads: sqlite3 releases the GIL around every step, and getting it back from busy fetch
# threads costs up to a switch interval each time.
_ROWS_PER_STATEMENT = 200


class BulkInsert:
    """INSERT INTO table (columns) VALUES (...), (...), ... for many rows, dialect by dialect."""

    def __init__(self, table: sa.Table, columns: Sequence[str], *, skip_existing: bool = False) -> None:
        self.table = table
        self.columns = tuple(columns)
        # rows whose key is there already are left alone (SQLite 3.24+ and PostgreSQL alike)
        self.tail = " ON CONFLICT DO NOTHING" if skip_existing else ""
        self._compiled: dict[str, tuple[str, str, tuple[tuple[int, Convert], ...]]] = {}
        self._statements: dict[tuple[str, int], str] = {}

    def _compile(self, dialect: sa.Dialect) -> tuple[str, str, tuple[tuple[int, Convert], ...]]:
        converters: list[Convert | None] = []
        placeholders: list[str] = []
        sqlite = dialect.name == "sqlite"
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        for name in self.columns:
            kind = self.table.c[name].type
            if isinstance(kind, sa.JSON):
                converters.append(_json_text)
                placeholders.append(mark if sqlite else f"{mark}::jsonb")
            elif isinstance(kind, sa.DateTime) and sqlite:
                converters.append(_sqlite_datetime)
                placeholders.append(mark)
            elif isinstance(kind, sa.Boolean) and sqlite:
                converters.append(_sqlite_bool)
                placeholders.append(mark)
            elif isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Integer | sa.Float) and sqlite:
                converters.append(_sqlite_number)
                placeholders.append(mark)
            elif isinstance(kind, sa.Date) and sqlite:
                converters.append(_sqlite_date)
                placeholders.append(mark)
            else:
                converters.append(None)
                placeholders.append(mark)
        preparer = dialect.identifier_preparer
        head = "INSERT INTO {} ({}) VALUES ".format(
            preparer.format_table(self.table), ", ".join(preparer.quote(c) for c in self.columns)
        )
        row = "(" + ", ".join(placeholders) + ")"
        return head, row, tuple((i, f) for i, f in enumerate(converters) if f is not None)

    def _statement(self, dialect: str, head: str, row: str, count: int) -> str:
        sql = self._statements.get((dialect, count))
        if sql is None:
            sql = self._statements[(dialect, count)] = head + ", ".join([row] * count) + self.tail
        return sql

    def execute(self, conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        dialect = conn.dialect
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiled = self._compiled[dialect.name] = self._compile(dialect)
        head, row_sql, converters = compiled
        columns = self.columns
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            for start in range(0, len(rows), _ROWS_PER_STATEMENT):
                chunk = rows[start : start + _ROWS_PER_STATEMENT]
                flat: list[Any] = []
                for row in chunk:
                    # rows made by one builder share their key order: take the values in one C call
                    value = list(row.values()) if tuple(row) == columns else [row.get(c) for c in columns]
                    for index, convert in converters:
                        value[index] = convert(value[index])
                    flat.extend(value)
                cursor.execute(self._statement(dialect.name, head, row_sql, len(chunk)), flat)
        finally:
            cursor.close()


_cache: dict[tuple[str, tuple[str, ...], bool], BulkInsert] = {}


def bulk_insert(conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]], *,
                skip_existing: bool = False) -> None:
    """Insert rows (all with the same keys as the first) in multi-row statements.

    `skip_existing`: a row whose primary or unique key is taken already is skipped, not an error.
    """
    if not rows:
        return
    columns = tuple(rows[0])
    key = (table.name, columns, skip_existing)
    inserter = _cache.get(key)
    if inserter is None:
        inserter = _cache[key] = BulkInsert(table, columns, skip_existing=skip_existing)
    inserter.execute(conn, rows)



