"""Search conditions of /v1/datas/search and /v1/datas/scrollSearch (seed 004).

Readings (the seed gives operators, types and one example, not the semantics):
- `value` holds several values joined by "," (is_any, not_any, contains_any, ...).
- Dates compare as text in the account's time zone: date fields as "yyyy-MM-dd", date-time
  fields as "yyyy-MM-dd HH:mm" (a value with seconds is cut to the minute, a date alone
  compares with the day's first minute). `*_current` compare with the current minute (day for
  date fields).
- is / not on a multi-value field (multi-select, tags) hold when the set of values is / is not
  exactly the given set; is_any when one value is among the given ones.
- judgeStrategy 1 = all conditions, 2 = any, 3 = customJudgeLogic: condition numbers (from 1)
  with "and", "or" and parentheses; "and" binds tighter ("1 or 2 and 3" = 1 or (2 and 3)).
- An operator the field type does not accept, an unknown field or a malformed logic is a
  validation failure (code 400 with a message naming it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from etl.connectors.udesk.servicego.simulator.schema import OPERATORS, ObjectDef

Entry = dict[str, Any]
Predicate = Callable[[dict[str, Entry]], bool]


class SearchError(Exception):
    pass


def _values(entry: Entry) -> list[str]:
    if "tagValueList" in entry:
        return [t["tagValue"] for t in entry["tagValueList"]]
    text = str(entry.get("fieldValue") or "")
    return [v for v in text.split(",") if v] if "optionNameList" in entry else ([text] if text else [])


def _date_key(text: str, kind: str) -> str:
    text = text.strip()
    if kind == "field_type_date":
        return text[:10]
    if len(text) == 10:
        return text + " 00:00"
    return text[:16]


def _condition(obj: ObjectDef, cond: dict[str, Any], now: datetime) -> Predicate:
    name, op = str(cond.get("fieldApiName")), cond.get("operator")
    f = obj.field(str(name))
    if f is None:
        raise SearchError(f"field {name} does not exist on object {obj.api_name}")
    allowed = OPERATORS.get(f.type, set())
    if op not in allowed:
        raise SearchError(f"operator {op} is not supported for field {name} ({f.type})")
    raw = "" if cond.get("value") is None else str(cond.get("value"))
    wanted = [v.strip() for v in raw.split(",") if v.strip()]
    kind = f.type
    if op == "is_null":
        return lambda r: not _values(r[name])
    if op == "is_not_null":
        return lambda r: bool(_values(r[name]))
    if kind in ("field_type_date", "field_type_date_time"):
        if op.endswith("current"):
            ref = now.strftime("%Y-%m-%d" if kind == "field_type_date" else "%Y-%m-%d %H:%M")
            op = {"greater_than_current": "greater_than", "greater_than_eq_current": "greater_than_eq",
                  "eq_current": "is", "less_than_current": "less_than", "less_than_eq_current": "less_than_eq"}[op]
        else:
            if not raw or not re.match(r"^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}(:\d{2})?)?$", raw.strip()):
                raise SearchError(f"value {raw!r} of field {name} is not a date (yyyy-MM-dd HH:mm)")
            ref = _date_key(raw, kind)
        compare = _COMPARE[op]
        return lambda r: bool(r[name]["fieldValue"]) and compare(_date_key(r[name]["fieldValue"], kind), ref)
    if kind in ("field_type_number", "field_type_formular"):
        try:
            number = float(raw)
        except ValueError:
            raise SearchError(f"value {raw!r} of field {name} is not a number") from None
        compare = _COMPARE[op]
        return lambda r: r[name]["fieldValue"] != "" and compare(float(r[name]["fieldValue"]), number)
    if op == "is":
        return lambda r: sorted(_values(r[name])) == sorted(wanted) if wanted else not _values(r[name])
    if op == "not":
        return lambda r: sorted(_values(r[name])) != sorted(wanted)
    if op == "contains":
        return lambda r: raw in str(r[name]["fieldValue"])
    if op == "not_contains":
        return lambda r: raw not in str(r[name]["fieldValue"])
    if op == "is_any":
        return lambda r: any(v in wanted for v in _values(r[name]))
    if op == "not_any":
        return lambda r: not any(v in wanted for v in _values(r[name]))
    if op == "contains_any":
        return lambda r: any(w in v for v in _values(r[name]) for w in wanted)
    if op == "not_contains_any":
        return lambda r: not any(w in v for v in _values(r[name]) for w in wanted)
    raise SearchError(f"operator {op} is not supported")


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "is": lambda a, b: a == b,
    "not": lambda a, b: a != b,
    "greater_than": lambda a, b: a > b,
    "greater_than_eq": lambda a, b: a >= b,
    "less_than": lambda a, b: a < b,
    "less_than_eq": lambda a, b: a <= b,
}

_TOKEN = re.compile(r"\s*(\d+|\(|\)|and\b|or\b)", re.I)


def _parse_logic(text: str, count: int) -> Callable[[list[bool]], bool]:
    """customJudgeLogic: numbers, and/or, parentheses; "and" before "or"."""
    tokens: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise SearchError(f"customJudgeLogic {text!r} is malformed near {text[pos:]!r}")
        tokens.append(match.group(1).lower())
        pos = match.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    position = 0

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> str:
        nonlocal position
        token = peek()
        if token is None:
            raise SearchError(f"customJudgeLogic {text!r} ends too early")
        position += 1
        return token

    def atom() -> Callable[[list[bool]], bool]:
        token = take()
        if token == "(":
            inner = either()
            if take() != ")":
                raise SearchError(f"customJudgeLogic {text!r}: missing )")
            return inner
        if not token.isdigit() or not 1 <= int(token) <= count:
            raise SearchError(f"customJudgeLogic {text!r}: {token} is not a condition number 1..{count}")
        index = int(token) - 1
        return lambda results: results[index]

    def both() -> Callable[[list[bool]], bool]:
        parts = [atom()]
        while peek() == "and":
            take()
            parts.append(atom())
        return parts[0] if len(parts) == 1 else (lambda results: all(p(results) for p in parts))

    def either() -> Callable[[list[bool]], bool]:
        parts = [both()]
        while peek() == "or":
            take()
            parts.append(both())
        return parts[0] if len(parts) == 1 else (lambda results: any(p(results) for p in parts))

    if not tokens:
        raise SearchError("customJudgeLogic is required when judgeStrategy is 3")
    tree = either()
    if position != len(tokens):
        raise SearchError(f"customJudgeLogic {text!r} has extra tokens")
    return tree


def build_predicate(obj: ObjectDef, body: dict[str, Any], now: datetime,
                    extra: list[dict[str, Any]] | None = None) -> Predicate | None:
    """One predicate for the request's conditions (and a filter's, which must also hold)."""
    conditions = body.get("conditionList") or []
    if not isinstance(conditions, list):
        raise SearchError("conditionList must be an array")
    strategy = body.get("judgeStrategy", 1) or 1
    if strategy not in (1, 2, 3):
        raise SearchError(f"judgeStrategy {strategy} is not 1, 2 or 3")
    checks = [_condition(obj, c, now) for c in conditions]
    filter_checks = [_condition(obj, c, now) for c in extra or []]
    if not checks and not filter_checks:
        return None
    if strategy == 3:
        logic = _parse_logic(str(body.get("customJudgeLogic") or ""), len(checks))
        main: Predicate = lambda r: logic([c(r) for c in checks])  # noqa: E731
    elif strategy == 2:
        main = lambda r: any(c(r) for c in checks) if checks else True  # noqa: E731
    else:
        main = lambda r: all(c(r) for c in checks)  # noqa: E731
    if not filter_checks:
        return main
    return lambda r: all(c(r) for c in filter_checks) and main(r)
