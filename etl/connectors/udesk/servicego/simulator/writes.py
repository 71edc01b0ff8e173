"""ServiceGo record writes (seed 004: POST, PUT and DELETE /v1/data) as the simulator checks them.

Readings (the seed gives the parameters, not the rules):
- fieldDataList[].fieldValue is text. Selects take option values (several joined by ","), phones
  and emails their values joined by ",", employees and owners the user id, dates "yyyy-MM-dd",
  date-times "yyyy-MM-dd HH:mm", rich text its HTML (attachments are kept).
- Lookups take the record id, or, with foreignExternalFieldApiName, the value of that external
  unique field of the looked-up object. On update the seed marks foreignExternalFieldApiName
  required for lookup fields: an update of a lookup without it is refused.
- `name` is required on create; system fields (createTime, updateTime, createUser, updateUser),
  auto numbers and formulas are read-only; an unknown field, a bad value or an external unique
  value already taken is refused with code 400 and a message naming the field.
- A record is found for update and delete by id, or by uniqueFieldApiName + uniqueFieldValue.
"""

from __future__ import annotations

import re
from typing import Any

from etl.connectors.udesk.servicego.simulator.schema import FieldDef
from etl.connectors.udesk.servicego.simulator.store import ServiceGoState

READ_ONLY_TYPES = ("field_type_auto_number", "field_type_formular")
READ_ONLY_FIELDS = ("createTime", "updateTime", "createUser", "updateUser")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}(:\d{2})?$")


class WriteRefused(Exception):
    def __init__(self, message: str, code: int = 400) -> None:
        self.message, self.code = message, code


def _value(state: ServiceGoState, obj: str, f: FieldDef, item: dict[str, Any], updating: bool) -> Any:
    raw = item.get("fieldValue")
    text = "" if raw is None else str(raw).strip()
    name, kind = f.api_name, f.type
    if name in READ_ONLY_FIELDS or kind in READ_ONLY_TYPES:
        raise WriteRefused(f"field {name} is read-only")
    if text == "":
        if name == "name":
            raise WriteRefused("field name is required")
        return None
    if kind in ("field_type_single_select", "field_type_multi_select"):
        values = [v.strip() for v in text.split(",") if v.strip()]
        known = {value for value, _ in f.options}
        unknown = [v for v in values if v not in known]
        if unknown or (kind == "field_type_single_select" and len(values) != 1):
            raise WriteRefused(f"field {name}: {text!r} is not an option (options: {', '.join(sorted(known))})")
        return values[0] if kind == "field_type_single_select" else values
    if kind in ("field_type_phone", "field_type_email"):
        values = [v.strip() for v in text.split(",") if v.strip()]
        if kind == "field_type_email" and any("@" not in v for v in values):
            raise WriteRefused(f"field {name}: {text!r} is not an e-mail address")
        return values
    if kind == "field_type_number":
        try:
            float(text)
        except ValueError:
            raise WriteRefused(f"field {name}: {text!r} is not a number") from None
        return text
    if kind == "field_type_date" and not DATE.match(text):
        raise WriteRefused(f"field {name}: {text!r} is not a date (yyyy-MM-dd)")
    if kind == "field_type_date_time":
        if not DATE_TIME.match(text):
            raise WriteRefused(f"field {name}: {text!r} is not a date-time (yyyy-MM-dd HH:mm)")
        return text[:16]
    if kind == "field_type_lookup":
        return _lookup(state, f, text, item.get("foreignExternalFieldApiName"), updating)
    if kind in ("field_type_lookup_user", "field_type_owner"):
        if not text.isdigit() or not 1 <= int(text) <= len(state.users):
            raise WriteRefused(f"field {name}: employee {text} does not exist")
        return int(text)
    if kind == "field_type_rich_text":
        return text
    return text


def _lookup(state: ServiceGoState, f: FieldDef, text: str, external: Any, updating: bool) -> int:
    target = f.lookup_object or ""
    if external:
        ext = state.objects[target].field(str(external))
        if ext is None or not ext.unique:
            raise WriteRefused(f"field {f.api_name}: {external} is not an external unique field of {target}")
        found = state.find_unique(target, ext.api_name, text)
        if found is None:
            raise WriteRefused(f"field {f.api_name}: no {target} has {external} = {text}")
        return found
    if updating:
        raise WriteRefused(f"field {f.api_name}: foreignExternalFieldApiName is required for lookup fields")
    if not text.isdigit() or int(text) not in state.records[target]:
        raise WriteRefused(f"field {f.api_name}: {target} {text} does not exist")
    return int(text)


def values_of(state: ServiceGoState, obj: str, items: Any, updating: bool) -> dict[str, Any]:
    if not isinstance(items, list) or not items:
        raise WriteRefused("fieldDataList is required")
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, dict) or not item.get("fieldApiName"):
            raise WriteRefused("fieldDataList[].fieldApiName is required")
        f = state.objects[obj].field(str(item["fieldApiName"]))
        if f is None:
            raise WriteRefused(f"field {item['fieldApiName']} does not exist on object {obj}")
        out[f.api_name] = _value(state, obj, f, item, updating)
    return out


def _check_unique(state: ServiceGoState, obj: str, values: dict[str, Any], record_id: int | None) -> None:
    for f in state.objects[obj].fields:
        value = values.get(f.api_name)
        if f.unique and value not in (None, ""):
            other = state.find_unique(obj, f.api_name, str(value))
            if other is not None and other != record_id:
                raise WriteRefused(f"field {f.api_name}: the value {value} is already used by record {other}")


def create(state: ServiceGoState, body: dict[str, Any]) -> int:
    obj = str(body.get("objectApiName") or "")
    if obj not in state.objects:
        raise WriteRefused(f"object {obj or '(none)'} does not exist")
    values = values_of(state, obj, body.get("fieldDataList"), updating=False)
    if not values.get("name"):
        raise WriteRefused("field name is required")
    _check_unique(state, obj, values, None)
    admin = {"owner": 1, "createUser": 1, "updateUser": 1}
    return state.create(obj, {**admin, **values})


def locate(state: ServiceGoState, obj_name: Any, record_id: Any, unique_field: Any, unique_value: Any) -> tuple[str, int]:
    if record_id not in (None, ""):
        try:
            rid = int(record_id)
        except (TypeError, ValueError):
            raise WriteRefused("id must be an integer") from None
        obj = state.object_of(rid)
        if obj is None or (obj_name and obj_name != obj):
            raise WriteRefused(f"record {rid} does not exist", 404)
        return obj, rid
    obj = str(obj_name or "")
    if obj not in state.objects:
        raise WriteRefused(f"object {obj or '(none)'} does not exist")
    f = state.objects[obj].field(str(unique_field or ""))
    if f is None or not f.unique or unique_value in (None, ""):
        raise WriteRefused("id, or uniqueFieldApiName and uniqueFieldValue, are required")
    found = state.find_unique(obj, f.api_name, str(unique_value))
    if found is None:
        raise WriteRefused(f"no {obj} record has {f.api_name} = {unique_value}", 404)
    return obj, found


def delete(state: ServiceGoState, query: Any) -> None:
    obj, record_id = locate(state, query.get("objectApiName"), query.get("id"), query.get("uniqueFieldApiName"),
                            query.get("uniqueFieldValue"))
    state.delete(obj, record_id)


def update(state: ServiceGoState, body: dict[str, Any]) -> None:
    obj, record_id = locate(state, body.get("objectApiName"), body.get("id"), body.get("uniqueFieldApiName"),
                            body.get("uniqueFieldValue"))
    values = values_of(state, obj, body.get("fieldDataList"), updating=True)
    _check_unique(state, obj, values, record_id)
    for f in state.objects[obj].fields:  # new rich text keeps the field's attachments
        if f.type == "field_type_rich_text" and values.get(f.api_name) is not None:
            kept = state.records[obj][record_id][f.api_name].get("richText", {}).get("attachmentList", [])
            values[f.api_name] = (values[f.api_name], kept)
    state.update(obj, record_id, {**values, "updateUser": 1})
