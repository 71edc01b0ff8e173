"""List answers as seed 003 prints them: filters, order, pages, and the envelope (keyed or plain data, totals as numbers or strings)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from etl.connectors.eddydesk.simulator.collection import Collection

Record = dict[str, Any]


DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


ORDER_RE = re.compile(r"^(\w+)\{(asc|desc)\}$")


class BadRequest(Exception):
    def __init__(self, details: str) -> None:
        self.details = details


def errors_body(code: str, title: str, details: str) -> bytes:
    return orjson.dumps({"errors": [{"code": code, "title": title, "details": details}]})


def int_param(params: Any, name: str, default: int | None = None) -> int | None:
    value = params.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"Field {{{name}}} value is incorrect") from None


def date_param(params: Any, name: str) -> str | None:
    value = params.get(name)
    if value in (None, ""):
        return None
    if not DATE_RE.match(value):
        raise BadRequest(f"Field {{{name}}} value is incorrect (date format 2017-12-31 00:00:00)")
    return str(value)


def id_list(params: Any, name: str) -> set[str] | None:
    value = params.get(name)
    if value in (None, ""):
        return None
    return {v.strip() for v in value.split(",") if v.strip()}


def order_of(params: Any, allowed: tuple[str, ...], default: str) -> list[tuple[str, bool]]:
    raw = params.get("order_by") or default
    order = []
    for part in raw.split(","):
        match = ORDER_RE.match(part.strip()) or re.match(r"^(\w+)$", part.strip())
        if not match or match.group(1) not in allowed:
            raise BadRequest(f"Field {{order_by}} value is incorrect (allowed: {', '.join(allowed)})")
        order.append((match.group(1), (match.group(2) if match.lastindex == 2 else "asc") == "desc"))
    return order


def sort_key(record: Record, field_name: str) -> Any:
    value = record.get(field_name)
    if field_name == "name" and isinstance(value, str):
        return value.lower()
    return value if value is not None else ""


@dataclass
class ListSpec:
    collection: Collection
    per_page: int
    orders: tuple[str, ...]
    default_order: str
    keyed: bool = False
    total_as_string: bool = False
    partition: Callable[[Any], Any] = lambda params: 0
    predicates: Callable[[Any], list[Callable[[Record], bool]]] = lambda params: []
    dump: Callable[[Record], bytes] | None = None


def pagination(total: int, per_page: int, page: int, as_string: bool) -> bytes:
    return orjson.dumps({
        "total": str(total) if as_string else total,
        "per_page": per_page,
        "current_page": page,
        "total_pages": math.ceil(total / per_page),
    })


def envelope(items: list[tuple[int, bytes]], keyed: bool, pagination: bytes | None) -> bytes:
    if keyed and items:
        data = b"{" + b",".join(b'"%d":%s' % (i, j) for i, j in items) + b"}"
    else:
        data = b"[" + b",".join(j for _, j in items) + b"]"
    tail = b',"pagination":' + pagination if pagination is not None else b""
    return b'{"data":' + data + tail + b"}"


def list_records(spec: ListSpec, params: Any) -> bytes:
    coll = spec.collection
    page = int_param(params, "page", 1) or 1
    if page < 1:
        raise BadRequest("Field {page} value is incorrect")
    lo, hi = date_param(params, "from_date_updated"), date_param(params, "to_date_updated")
    created_lo, created_hi = date_param(params, "from_date_created"), date_param(params, "to_date_created")
    order = order_of(params, spec.orders, spec.default_order)
    part = spec.partition(params)
    predicates = spec.predicates(params)
    if created_lo or created_hi:
        predicates.append(lambda r: (created_lo or "") <= r["date_created"] <= (created_hi or "9999"))
    index, start, stop = coll.updated_range(part, lo, hi)
    offset = (page - 1) * spec.per_page
    if order == [("date_updated", False)] and not predicates:
        total = stop - start
        ids = [key[1] for key in index[start + offset : min(stop, start + offset + spec.per_page)]]
    else:
        cache_key = (part, lo, hi, created_lo, created_hi, tuple(order), tuple(sorted(
            (k, v) for k, v in params.items() if k not in ("page",))))

        def make() -> list[int]:
            records = [coll.records[key[1]] for key in index[start:stop]]
            records = [r for r in records if all(p(r) for p in predicates)]
            records.sort(key=lambda r: r["id"])
            for name, desc in reversed(order):
                records.sort(key=lambda r: sort_key(r, name), reverse=desc)
            return [r["id"] for r in records]

        ordered = coll.sorted_ids(cache_key, make)
        total = len(ordered)
        ids = ordered[offset : offset + spec.per_page]
    items = [(i, coll.json(i, spec.dump)) for i in ids]
    return envelope(items, spec.keyed, pagination(total, spec.per_page, page, spec.total_as_string))


def list_plain(records: list[Record], per_page: int, params: Any, keyed: bool = False, total_as_string: bool = False,
               keys: Callable[[int, Record], int] = lambda n, r: r["id"]) -> bytes:
    page = int_param(params, "page", 1) or 1
    chunk = records[(page - 1) * per_page : page * per_page]
    items = [(keys((page - 1) * per_page + n, r), orjson.dumps(r)) for n, r in enumerate(chunk)]
    return envelope(items, keyed, pagination(len(records), per_page, page, total_as_string))


def status_log_wanted(entry: Record, params: Any) -> bool:
    """The status log's filters (seed 003): from_date_created / to_date_created ("2017-12-31
    00:00:00", read as inclusive, as the other date filters) and statuses ("online,offline")."""
    created = entry["date_created"]
    lo, hi = params.get("from_date_created"), params.get("to_date_created")
    if lo and created < lo or hi and created > hi:
        return False
    statuses = id_list(params, "statuses")
    return statuses is None or entry["status_id"] in statuses


def member_in(member: str, wanted: set[str]) -> Callable[[Record], bool]:
    return lambda r: str(r.get(member)) in wanted


def ticket_predicates(params: Any) -> list[Callable[[Record], bool]]:
    preds: list[Callable[[Record], bool]] = []
    for name, member in (("status_list", "status_id"), ("priority_list", "priority_id"), ("type_list", "type_id"),
                         ("owner_list", "owner_id"), ("user_list", "user_id")):
        wanted = id_list(params, name)
        if wanted is not None:
            preds.append(member_in(member, wanted))
    freeze = int_param(params, "freeze")
    if freeze is not None:
        preds.append(lambda r: int(r.get("freeze") or 0) == freeze)
    search = params.get("search")
    if search:
        exact = int_param(params, "exact_search", 0) == 1
        preds.append(lambda r: r["title"] == search if exact else search.lower() in r["title"].lower())
    return preds


def user_predicates(params: Any) -> list[Callable[[Record], bool]]:
    preds: list[Callable[[Record], bool]] = []
    groups = id_list(params, "group_list")
    if groups is not None:
        preds.append(lambda r: str(r["group"]["id"]) in groups)
    ids = id_list(params, "id_list")
    if ids is not None:
        preds.append(lambda r: str(r["id"]) in ids)
    search = params.get("search")
    if search:
        if int_param(params, "exact_search", 0) == 1:  # a full match of one of the searched members
            preds.append(lambda r: search.lower() in (r["name"].lower(), r["lastname"].lower(), r["email"].lower()))
        else:
            preds.append(lambda r: search.lower() in f"{r['name']} {r['lastname']} {r['email']}".lower())
    return preds


def organization_predicates(params: Any) -> list[Callable[[Record], bool]]:
    search = params.get("search")
    if not search:
        return []
    if int_param(params, "exact_search", 0) == 1:
        return [lambda r: r["name"].lower() == search.lower()]
    return [lambda r: search.lower() in r["name"].lower()]


def kb_predicates(params: Any, list_param: str, member: str) -> list[Callable[[Record], bool]]:
    preds: list[Callable[[Record], bool]] = []
    wanted = id_list(params, list_param)
    if wanted is not None:
        if member == "categories":
            preds.append(lambda r: any(str(c) in wanted for c in r["categories"]))
        else:
            preds.append(lambda r: str(r[member]) in wanted)
    public = params.get("public")
    if public in ("true", "1"):
        preds.append(lambda r: r["access"] == "public")
    return preds
