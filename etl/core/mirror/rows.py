"""Build column values for a mirrored table from an API record, driven by the table itself.

Each typed column names its API member (the column name, or `info["src"]`: a dotted path or a
tuple of alternatives) and its SQL type decides the conversion. A value that cannot be converted
(an unparseable date, say) becomes NULL and is reported as a problem: the record is still kept,
whole, in `raw`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any, Protocol, runtime_checkable

import sqlalchemy as sa

from etl.core.mirror.bulk import Pack, converter, sqlite_timestamp, tuple_function
from etl.core.mirror.normalize import display_value, parse_api_date, to_bool, to_int, to_str, utc_text

Getter = Callable[[dict[str, Any]], Any]


class Builder(Protocol):
    """What TableWriter needs from a row builder: column values (and problems) for a record,
    and which column holds the remote's last-update time."""

    updated_column: str | None

    def build(self, record: dict[str, Any]) -> tuple[dict[str, Any], list[str]]: ...


@runtime_checkable
class PackingBuilder(Builder, Protocol):
    """A builder that can also go straight from a record to packed values: `packer(dialect)`
    gives the values of `names` (the columns `build` fills, in its order) as the driver takes
    them, and raises (ValueError, TypeError) where `build` would report a problem."""

    names: tuple[str, ...]

    def packer(self, dialect: sa.Dialect) -> Pack: ...

_MISSING = object()


def _getter(source: Any) -> Getter:
    if isinstance(source, tuple):
        getters = [_getter(s) for s in source]

        def first_present(record: dict[str, Any]) -> Any:
            for get in getters:
                value = get(record)
                if value is not _MISSING:
                    return value
            return _MISSING

        return first_present
    if "." in source:
        head, tail = source.split(".", 1)
        inner = _getter(tail)

        def nested(record: dict[str, Any]) -> Any:
            value = record.get(head)
            return inner(value) if isinstance(value, dict) else _MISSING

        return nested
    return lambda record: record.get(source, _MISSING)


# conversion kinds; plain values of the right type pass through without a call
_JSON, _STR, _INT, _OTHER, _DISPLAY = range(5)


def _kind(column: sa.Column[Any], tz: tzinfo) -> tuple[int, Callable[[Any], Any] | None]:
    kind = column.type
    if isinstance(kind, sa.DateTime):
        return _OTHER, lambda v: parse_api_date(v, tz)
    if isinstance(kind, sa.Boolean):
        return _OTHER, to_bool
    if isinstance(kind, sa.Integer):
        return _INT, to_int
    if isinstance(kind, sa.String):  # Text is a String
        return _STR, to_str
    return _JSON, None


@dataclass(frozen=True)
class _Column:
    name: str
    key: str | None  # a plain member name, read with dict.get
    get: Getter | None  # dotted paths and alternatives
    kind: int
    convert: Callable[[Any], Any] | None
    column: sa.Column[Any]


def sqlite_timestamp_of(tz: tzinfo) -> Callable[[Any], Any]:
    """An API date straight to its SQLite timestamp text (no datetime in between)."""

    def convert(value: Any) -> Any:
        text = utc_text(value, tz)
        return None if text is None else sqlite_timestamp(text)

    return convert


class RowBuilder:
    """Maps API records to the typed columns of one table."""

    def __init__(self, table: sa.Table, tz: tzinfo, language: str) -> None:
        self.table = table
        self.language = language
        columns: list[_Column] = []
        sources: dict[str, Any] = {}
        for column in table.columns:
            if column.info.get("meta") or "display_of" in column.info:
                continue
            sources[column.name] = column.info.get("src", column.name)
        for column in table.columns:
            if column.info.get("meta"):
                continue
            if "display_of" in column.info:
                source, kind, convert = sources[column.info["display_of"]], _DISPLAY, None
            else:
                source = sources[column.name]
                kind, convert = _kind(column, tz)
            simple = isinstance(source, str) and "." not in source
            columns.append(_Column(column.name, source if simple else None, None if simple else _getter(source),
                                   kind, convert, column))
        self.columns = tuple(columns)
        self.names = tuple(c.name for c in columns)
        # the remote's last-update time: the column marked {"updated": True}, or EddyDesk's date_updated
        marked = [c.name for c in table.columns if c.info.get("updated")]
        self.updated_column: str | None = marked[0] if marked else (
            "date_updated" if "date_updated" in table.columns else None)
        self.tz = tz
        self._packers: dict[str, Pack] = {}

    def packer(self, dialect: sa.Dialect) -> Pack:
        """Record -> its columns' values as the driver takes them, in one generated function.

        The same values as `bulk.packer(table, names, dialect)(build(record)[0])`, without the
        row dict between them; it raises (ValueError, TypeError) where `build` would report a
        problem, and the caller then takes that slower path, which names the problem.
        """
        pack = self._packers.get(dialect.name)
        if pack is not None:
            return pack
        env: dict[str, Any] = {"MISSING": _MISSING, "to_str": to_str, "to_int": to_int, "display": display_value,
                               "language": self.language}
        items = []
        for n, col in enumerate(self.columns):
            v = f"v{n}"
            if col.get is None:
                fetch = f"({v} := get({col.key!r})) is None"
            else:
                env[f"g{n}"] = col.get
                fetch = f"({v} := g{n}(row)) is None or {v} is MISSING"
            to_db = converter(col.column.type, dialect.name)
            if col.kind == _DISPLAY:
                value = f"display({v}, language)"
            elif col.kind == _STR:
                value = f"{v} if type({v}) is str else to_str({v})"
            elif col.kind == _INT:
                value = f"{v} if type({v}) is int else to_int({v})"
            elif col.kind == _JSON:
                value = v
            elif isinstance(col.column.type, sa.DateTime) and dialect.name == "sqlite":
                env[f"c{n}"], to_db = sqlite_timestamp_of(self.tz), None
                value = f"c{n}({v})"
            else:
                env[f"c{n}"] = col.convert
                value = f"c{n}({v})"
            if to_db is not None:  # the builder's value converted for the driver (None stays None)
                env[f"d{n}"] = to_db
                # a member's own value is never None here; a conversion's result can be
                value = f"d{n}({v})" if col.kind == _JSON else f"None if (w{n} := ({value})) is None else d{n}(w{n})"
            items.append(f"None if {fetch} else ({value})")
        pack = self._packers[dialect.name] = tuple_function(items, env)
        return pack

    def build(self, record: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        row: dict[str, Any] = {}
        problems: list[str] = []
        get = record.get
        for col in self.columns:
            value = get(col.key) if col.get is None else col.get(record)  # type: ignore[arg-type]
            if value is None or value is _MISSING:
                row[col.name] = None
                continue
            kind = col.kind
            if kind == _JSON or (kind == _STR and type(value) is str) or (kind == _INT and type(value) is int):
                row[col.name] = value
            elif kind == _DISPLAY:
                row[col.name] = display_value(value, self.language)
            else:
                try:
                    row[col.name] = col.convert(value)  # type: ignore[misc]
                except (ValueError, TypeError) as exc:
                    row[col.name] = None
                    problems.append(f"{col.name}: {exc}")
        return row, problems
