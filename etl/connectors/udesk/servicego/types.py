"""What kind of value a ServiceGo field holds, whatever its type is called.

Seed 004 prints only four `fieldTypeApiName` values (field_type_single_line, field_type_formular,
field_type_geography, field_type_auto_number); every other name is a guess at what the service
sends. So a field's kind is read three ways, in this order:

1. its type name, among the spellings a careful reader would expect (`field_type_date_time` and
   `field_type_datetime`, `field_type_lookup_user` and `field_type_user`, ...);
2. otherwise the documented sub-object its entry carries (seed 004, "data.fieldDataList[]"):
   `userEmail` is an employee field, `optionNameList` a select, `tagValueList` a phone or e-mail,
   `foreignDataName` a lookup, `ownerResult` an owner, `richText` rich text, `signDto` a signature;
3. otherwise the shape of its value: "2019-11-12 15:52" (the seed's createTime) is a date-time.

An unknown name is logged once as a warning with the kind it was read as. The kinds are the
canonical type names below, which the mirror's registry (`servicego_fields.field_type`) keeps.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from etl.core.log import get_logger

DATE_TIME = "field_type_date_time"
DATE = "field_type_date"
NUMBER = "field_type_number"
FORMULA = "field_type_formular"
EMPLOYEE = "field_type_lookup_user"
LOOKUP = "field_type_lookup"
SINGLE_SELECT = "field_type_single_select"
MULTI_SELECT = "field_type_multi_select"
PHONE = "field_type_phone"
EMAIL = "field_type_email"
OWNER = "field_type_owner"
RICH_TEXT = "field_type_rich_text"
SIGN = "field_type_sign"
TEXT = "field_type_single_line"

# spellings of each kind, without the "field_type_" prefix and with "_" and "-" dropped
_ALIASES: dict[str, tuple[str, ...]] = {
    DATE_TIME: ("datetime", "timestamp", "time", "datetimeminute"),
    DATE: ("date", "day"),
    NUMBER: ("number", "numeric", "decimal", "integer", "int", "float", "double", "currency", "money", "percent",
             "amount"),
    FORMULA: ("formular", "formula", "calc", "calculate", "calculation"),
    EMPLOYEE: ("lookupuser", "user", "employee", "staff", "member", "agent", "lookupemployee", "userlookup"),
    LOOKUP: ("lookup", "reference", "relation", "foreign", "masterdetail"),
    SINGLE_SELECT: ("singleselect", "select", "radio", "picklist", "option", "dropdown"),
    MULTI_SELECT: ("multiselect", "multipleselect", "checkbox", "multipicklist", "multioption"),
    PHONE: ("phone", "mobile", "telephone", "tel"),
    EMAIL: ("email", "mail"),
    OWNER: ("owner",),
    RICH_TEXT: ("richtext", "rich", "html"),
    SIGN: ("sign", "signature"),
}
_BY_ALIAS = {alias: kind for kind, aliases in _ALIASES.items() for alias in aliases}
# the names this module reads without a warning: the four seed 004 prints, and ours
_CANONICAL = {*_ALIASES, TEXT, "field_type_multi_line", "field_type_geography", "field_type_auto_number"}
# names of kinds the mirror keeps as text: kept as they are, since the loaders tell some apart
# (an auto number is never sent back)
_TEXT_NAMES = {"singleline", "multiline", "textarea", "text", "geography", "autonumber", "url", "address", "location"}

# the sub-object an entry carries, in seed 004's order, and the kind it shows
_CARRIED = (("userEmail", EMPLOYEE), ("optionNameList", SINGLE_SELECT), ("tagValueList", PHONE),
            ("foreignDataName", LOOKUP), ("ownerResult", OWNER), ("richText", RICH_TEXT), ("signDto", SIGN))
_DATE_TIME_VALUE = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?$")
# system fields every object has (seed 004's examples): date-times whatever their type is called
_SYSTEM_DATE_TIMES = {"createTime", "updateTime"}

_reported: set[str] = set()


def _key(type_name: str) -> str:
    return re.sub(r"[_\-\s]", "", type_name.lower().removeprefix("field_type_"))


@lru_cache(maxsize=256)
def known_kind(type_name: str) -> str | None:
    """The kind a type name spells (a text kind's own name), or None when we cannot read it."""
    key = _key(type_name)
    if key in _TEXT_NAMES:
        return type_name
    return _BY_ALIAS.get(key)


def kind_of(field: str, type_name: str, entry: dict[str, Any] | None = None) -> str:
    """The canonical kind of a field from its type name and, failing that, its entry's shape."""
    kind = known_kind(type_name) if type_name else None
    if kind is None or (field in _SYSTEM_DATE_TIMES and _key(kind) in _TEXT_NAMES):
        kind = _by_shape(field, entry or {})
        if kind == TEXT and type_name:
            kind = type_name  # text all the same: the remote's own name is kept
    if type_name not in _CANONICAL and type_name not in _reported:
        _reported.add(type_name)  # once a process: a name the docs never print, and how it was read
        get_logger().warning("servicego_unknown_field_type", field_type=type_name or "(none)", field=field,
                             read_as=kind)
    return kind


def _by_shape(field: str, entry: dict[str, Any]) -> str:
    for member, kind in _CARRIED:
        if entry.get(member) is not None:
            return kind
    value = entry.get("fieldValue")
    if field in _SYSTEM_DATE_TIMES or (isinstance(value, str) and _DATE_TIME_VALUE.match(value)):
        return DATE_TIME
    return TEXT


# kinds whose value is text and whose entry carries a sub-object: a field first registered as
# plain text (its first entries were empty) can take one later by adding the sub-object's column
CARRYING = frozenset(kind for _, kind in _CARRIED) | {MULTI_SELECT, EMAIL}


def is_text(kind: str) -> bool:
    """Whether the mirror keeps a field of this kind as plain text, with nothing carried beside it."""
    return kind not in _ALIASES


def merge_kinds(into: dict[str, str], more: dict[str, str]) -> dict[str, str]:
    """`more`'s fields added to `into`; where the two read a field differently, the reading that
    says more wins over plain text (an empty employee field reads as text, a filled one does not)."""
    for field, kind in more.items():
        if field not in into or (is_text(into[field]) and not is_text(kind)):
            into[field] = kind
    return into
