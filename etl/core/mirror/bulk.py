"""Fast multi-row INSERTs straight through the DB-API cursor.

SQLAlchemy Core builds a parameter dict and runs bind processors for every row of an
executemany; for a backfill of 100,000 tickets (about a million rows with the child tables)
that was the largest cost. Here a row is packed once into a tuple of driver-ready values (by a
function generated per table, column list and dialect), and each table gets one compiled
multi-row statement per dialect. Values end up exactly as SQLAlchemy would store them, so reads
through SQLAlchemy see no difference.

Packing and executing are separate steps so that a writer process can be sent packed tuples
(plain str/int/float values: cheap to pickle) and only bind them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC
from typing import Any, Literal

import orjson
import sqlalchemy as sa

from etl.core.mirror.normalize import JsonText
from etl.core.tuning import TUNING

Convert = Callable[[Any], Any]
Pack = Callable[[Mapping[str, Any]], tuple[Any, ...]]
OnConflict = Literal["error", "skip", "update", "merge_bits"]


def _json_text(value: Any) -> Any:
    return value if isinstance(value, JsonText) else orjson.dumps(value).decode()


def sqlite_timestamp(utc: str) -> str:
    """UTC text ("YYYY-MM-DD HH:MM:SS[.ffffff]") in SQLAlchemy's SQLite DATETIME storage format,
    "%Y-%m-%d %H:%M:%S.%f"."""
    return utc if len(utc) > 19 else utc + ".000000"


def _sqlite_datetime(value: Any) -> Any:
    # str() is several times faster than isoformat() or strftime()
    if value.tzinfo is None:
        return sqlite_timestamp(str(value))
    if value.utcoffset():
        value = value.astimezone(UTC)
    return sqlite_timestamp(str(value)[:-6])  # without the "+00:00"


def _sqlite_bool(value: Any) -> Any:
    return 1 if value else 0


def _sqlite_date(value: Any) -> Any:
    return value.isoformat()


def converter(kind: sa.types.TypeEngine[Any], dialect: str) -> Convert | None:
    """How a non-NULL value of a column type is handed to the driver (None: as it is)."""
    if isinstance(kind, sa.JSON):
        return _json_text
    if dialect != "sqlite":
        return None  # psycopg adapts datetimes, booleans and decimals itself
    if isinstance(kind, sa.DateTime):
        return _sqlite_datetime
    if isinstance(kind, sa.Boolean):
        return _sqlite_bool
    if isinstance(kind, sa.Numeric) and not isinstance(kind, sa.Integer | sa.Float):
        return float  # as SQLAlchemy's Numeric on SQLite (PostgreSQL keeps the Decimal exact)
    if isinstance(kind, sa.Date):
        return _sqlite_date
    return None


def _converted(table: sa.Table, columns: Sequence[str], dialect: sa.Dialect, read: Callable[[int, str], str],
               env: dict[str, Any]) -> list[str]:
    """Expressions for `columns`' driver values, each read from the row by `read(position, name)`;
    the converters they call are put in `env`."""
    items = []
    for n, name in enumerate(columns):
        convert = converter(table.c[name].type, dialect.name)
        if convert is None:
            items.append(read(n, name))
        else:
            env[f"c{n}"] = convert
            items.append(f"None if (v{n} := {read(n, name)}) is None else c{n}(v{n})")
    return items


_packers: dict[tuple[str, tuple[str, ...], str], Pack] = {}


def packer(table: sa.Table, columns: tuple[str, ...], dialect: sa.Dialect) -> Pack:
    """A function from a row (column -> value; a missing column is NULL) to `columns`' values as
    the driver takes them.

    Generated code, as dataclasses and SQLAlchemy do: one straight-line tuple expression per
    table is several times faster than a loop over converters for every row.
    """
    key = (table.name, columns, dialect.name)
    pack = _packers.get(key)
    if pack is None:
        env: dict[str, Any] = {}
        items = _converted(table, columns, dialect, lambda _, name: f"get({name!r})", env)
        pack = _packers[key] = tuple_function(items, env)
    return pack


def tuple_function(items: Sequence[str], env: dict[str, Any], *, mapping: bool = True) -> Callable[[Any], tuple[Any, ...]]:
    """`lambda row: (item, item, ...)` compiled once, each item an expression over `row`, the
    names in `env` and, for a mapping row, `get` (its dict.get). Callers build items from repr()
    literals and their own names only: no input reaches the code."""
    body = "".join(f"        {item},\n" for item in items)
    get = "    get = row.get\n" if mapping else ""
    exec(f"def pack(row):\n{get}    return (\n{body}    )\n", env)  # noqa: S102
    return env["pack"]  # type: ignore[no-any-return]


RowPack = Callable[[tuple[Any, ...]], tuple[Any, ...]]
_row_packers: dict[tuple[str, str], RowPack | None] = {}


def row_packer(table: sa.Table, dialect: sa.Dialect) -> RowPack | None:
    """A function from a tuple of all of `table`'s columns, in order, to the values the driver
    takes; None when every column is taken as it is (child rows: the tuple is bound unchanged)."""
    key = (table.name, dialect.name)
    if key not in _row_packers:
        env: dict[str, Any] = {}
        items = _converted(table, [c.name for c in table.columns], dialect, lambda n, _: f"row[{n}]", env)
        _row_packers[key] = tuple_function(items, env, mapping=False) if env else None
    return _row_packers[key]


# One statement per chunk of rows, not one step per row (etl.core.tuning). A wide table (a ServiceGo
# object of many fields) takes fewer rows, to stay within SQLite's 32,766 parameters a statement
# (PostgreSQL allows 65,535).
_ROWS_PER_STATEMENT = TUNING.rows_per_statement
_PARAMETERS_PER_STATEMENT = 32_766


def rows_per_statement(columns: int) -> int:
    """The most rows a statement of this many columns takes: a power of two."""
    most = _ROWS_PER_STATEMENT
    while most > 1 and most * columns > _PARAMETERS_PER_STATEMENT:
        most //= 2
    return most


def statement_spans(count: int, most: int) -> list[tuple[int, int]]:
    """Row ranges of the statements for `count` rows: full ones of `most`, the rest in powers of two.

    Each row count is a statement text of its own, and a prepared statement in the driver's
    cache (sqlite3 keeps 128): with every batch's remainder a count of its own, a long run
    compiled a multi-row INSERT again for most batches, and the texts and prepared statements it
    kept grew through the run. Powers of two leave at most nine counts a table."""
    spans: list[tuple[int, int]] = []
    start, size = 0, most
    while start < count:
        while size > count - start:
            size //= 2
        spans.append((start, start + size))
        start += size
    return spans


class BulkInsert:
    """INSERT INTO table (columns) VALUES (...), (...), ... for packed rows, dialect by dialect.

    on_conflict: "error" (a plain INSERT), "skip" (a row whose key is taken is left alone),
    "update" (it is overwritten, except the columns in `keep`) or "merge_bits" (its other columns
    are bit sets: each keeps its bits and takes the new row's). SQLite 3.24+ and PostgreSQL alike.
    """

    def __init__(self, table: sa.Table, columns: Sequence[str], *, on_conflict: OnConflict = "error",
                 keep: tuple[str, ...] = ()) -> None:
        self.table = table
        self.columns = tuple(columns)
        self.on_conflict = on_conflict
        self.keep = keep
        self._compiled: dict[str, tuple[str, str, str]] = {}
        self._statements: dict[tuple[str, int], str] = {}
        self._most = rows_per_statement(len(self.columns))

    def _compile(self, dialect: sa.Dialect) -> tuple[str, str, str]:
        sqlite = dialect.name == "sqlite"
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        placeholders = [mark if sqlite or not isinstance(self.table.c[name].type, sa.JSON) else f"{mark}::jsonb"
                        for name in self.columns]
        quote = dialect.identifier_preparer.quote
        head = "INSERT INTO {} ({}) VALUES ".format(
            dialect.identifier_preparer.format_table(self.table), ", ".join(quote(c) for c in self.columns)
        )
        tail = ""
        key = [c.name for c in self.table.primary_key.columns]
        others = [quote(c) for c in self.columns if c not in key and c not in self.keep]
        if self.on_conflict == "skip":
            tail = " ON CONFLICT DO NOTHING"
        elif self.on_conflict in ("update", "merge_bits"):
            table = dialect.identifier_preparer.format_table(self.table)
            sets = [f"{c} = excluded.{c}" if self.on_conflict == "update" else f"{c} = {table}.{c} | excluded.{c}"
                    for c in others]
            tail = " ON CONFLICT ({}) DO UPDATE SET {}".format(", ".join(quote(c) for c in key), ", ".join(sets))
        return head, "(" + ", ".join(placeholders) + ")", tail

    def _statement(self, dialect: str, compiled: tuple[str, str, str], count: int) -> str:
        sql = self._statements.get((dialect, count))
        if sql is None:
            head, row, tail = compiled
            sql = self._statements[(dialect, count)] = head + ", ".join([row] * count) + tail
        return sql

    def insert(self, conn: sa.Connection, rows: Sequence[tuple[Any, ...]], head: tuple[Any, ...] = ()) -> None:
        """Insert packed rows; `head` holds packed values of the first columns, the same for every row."""
        if not rows:
            return
        dialect = conn.dialect
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiled = self._compiled[dialect.name] = self._compile(dialect)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            for start, stop in statement_spans(len(rows), self._most):
                chunk = rows[start:stop]
                flat: list[Any] = []
                if head:
                    for row in chunk:
                        flat += head
                        flat += row
                else:
                    for row in chunk:
                        flat += row
                cursor.execute(self._statement(dialect.name, compiled, len(chunk)), flat)
        finally:
            cursor.close()


_inserts: dict[tuple[str, tuple[str, ...], OnConflict, tuple[str, ...]], BulkInsert] = {}


def inserter(table: sa.Table, columns: tuple[str, ...], on_conflict: OnConflict = "error",
             keep: tuple[str, ...] = ()) -> BulkInsert:
    key = (table.name, columns, on_conflict, keep)
    found = _inserts.get(key)
    if found is None:
        found = _inserts[key] = BulkInsert(table, columns, on_conflict=on_conflict, keep=keep)
    return found
