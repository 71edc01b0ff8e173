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
from typing import Any

import sqlalchemy as sa

from etl.mirror.normalize import display_value, parse_api_date, to_bool, to_int, to_str

Getter = Callable[[dict[str, Any]], Any]
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


def _converter(column: sa.Column[Any], tz: tzinfo) -> Callable[[Any], Any]:
    kind = column.type
    if isinstance(kind, sa.DateTime):
        return lambda v: parse_api_date(v, tz)
    if isinstance(kind, sa.Boolean):
        return to_bool
    if isinstance(kind, sa.Integer):
        return to_int
    if isinstance(kind, sa.String):  # Text is a String
        return to_str
    return lambda v: v


@dataclass(frozen=True)
class _Column:
    name: str
    get: Getter
    convert: Callable[[Any], Any]
    display_language: str | None = None


class RowBuilder:
    """Maps API records to the typed columns of one table."""

    def __init__(self, table: sa.Table, tz: tzinfo, language: str) -> None:
        self.table = table
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
                source = sources[column.info["display_of"]]
                columns.append(_Column(column.name, _getter(source), lambda v: v, language))
            else:
                columns.append(_Column(column.name, _getter(sources[column.name]), _converter(column, tz)))
        self.columns = tuple(columns)
        self.has_date_updated = "date_updated" in table.columns

    def build(self, record: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        row: dict[str, Any] = {}
        problems: list[str] = []
        for col in self.columns:
            value = col.get(record)
            if value is _MISSING:
                row[col.name] = None
                continue
            if col.display_language is not None:
                row[col.name] = display_value(value, col.display_language)
                continue
            try:
                row[col.name] = col.convert(value)
            except (ValueError, TypeError) as exc:
                row[col.name] = None
                problems.append(f"{col.name}: {exc}")
        return row, problems
