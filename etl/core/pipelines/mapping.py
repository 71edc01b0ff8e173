"""A pipeline step's mapping: templates (Jinja2, sandboxed), constants and id-map lookups.

A string is a template rendered with the source row's columns (JSON columns as dicts and lists)
and the pipeline's `vars`; one without `{{ }}` or `{% %}` renders as itself, a constant. Numbers,
booleans and lists are constants. `{lookup = "step", key = "{{ column }}"}` is the target id an
earlier step wrote for that source id. Undefined names are errors (a typo is not an empty field);
`| default(...)` gives a fallback, e.g. `{{ title[language] | default(title_display) }}`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
import sqlalchemy as sa

from etl.core.config import MapValue, PipelineLookup
from etl.core.pipelines.templates import TEMPLATES as _ENV

NO_REFERENCE = ("", "0", "None")


class MappingError(ValueError):
    """A source record that cannot be mapped: held with this message, the others go on."""


class Waiting(MappingError):
    """A lookup whose record is not on the target yet (held or not written): tried again next run."""


def _is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


class Mapper:
    """Renders one step's mapping for a source row; `resolve(step, source_id)` is the id map."""

    def __init__(self, values: Mapping[str, MapValue], variables: Mapping[str, Any],
                 resolve: Callable[[str, str], int | None]) -> None:
        self.values, self.variables, self.resolve = values, variables, resolve
        self.compiled = {n: _ENV.from_string(v.key if isinstance(v, PipelineLookup) else v)
                         for n, v in values.items()
                         if isinstance(v, PipelineLookup) or (isinstance(v, str) and _is_template(v))}

    def render(self, row: Mapping[str, Any]) -> dict[str, Any]:
        context = {**self.variables, **row}
        out: dict[str, Any] = {}
        compiled = self.compiled
        for name, value in self.values.items():
            try:
                text = _render(compiled[name], context) if name in compiled else value
            except Exception as exc:  # a configured template can fail in any way: this record is held
                raise MappingError(f"{name}: {exc}") from None
            if isinstance(value, PipelineLookup):
                key = str(text).strip()
                if key in NO_REFERENCE:
                    out[name] = value.empty
                    continue
                target = self.resolve(value.lookup, key)
                if target is None:
                    raise Waiting(f"{name}: {value.lookup} {key} is not on the target yet")
                out[name] = target
            else:
                out[name] = text
        return out


def _render(template: Any, context: dict[str, Any]) -> str:
    """`template.render(context)` without copying the context for each template of a row (a
    shared context is read-only to the template; a third of the staging time otherwise)."""
    try:
        return "".join(template.root_render_func(template.new_context(context, shared=True)))
    except Exception:
        return str(_ENV.handle_exception())


def truthy(text: str) -> bool:
    return text.strip().lower() not in ("", "0", "false", "none", "no")


def source_row(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A query's row for the templates: JSON texts decoded (a query gives JSON columns as text on SQLite)."""
    out = {}
    for name, value in row.items():
        if isinstance(value, str) and value[:1] in ("{", "[") and value[-1:] in ("}", "]"):
            with contextlib.suppress(orjson.JSONDecodeError):
                value = orjson.loads(value)
        out[name] = value
    return out


def coerce(column: sa.Column[Any], name: str, value: Any) -> Any:
    """A mapped value as the target column holds it; empty text is an empty field."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    kind = column.type
    try:
        if isinstance(kind, sa.Boolean):
            return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")
        if isinstance(kind, sa.Integer):
            return int(str(value).strip())
        if isinstance(kind, sa.Numeric):
            return Decimal(str(value).strip())
        if isinstance(kind, sa.DateTime) and not isinstance(value, datetime):
            moment = datetime.fromisoformat(str(value).strip())
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        if isinstance(kind, sa.Date) and not isinstance(value, date):
            return date.fromisoformat(str(value).strip()[:10])
    except (ValueError, InvalidOperation):
        raise MappingError(f"{name}: {value!r} is not {_kinds(kind)}") from None
    if isinstance(kind, sa.JSON):
        return value
    return value if isinstance(value, str) else str(value)


def _kinds(kind: Any) -> str:
    if isinstance(kind, sa.Integer):
        return "a whole number"
    if isinstance(kind, sa.Numeric):
        return "a number"
    return "a date" if isinstance(kind, sa.Date) else "an ISO date-time"


def text_of(value: Any) -> str | None:
    """A value as the id map keeps it (what was sent, compared with the target's value later)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list | dict):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return "0" if text in ("-0", "") else text
    return str(value)
