"""The Udesk ServiceGo records API (seed 004) as an ASGI app, under /api/v1.

Envelope: {"code", "message", "visible", "paging", "data"}. Readings where the seed is silent:
- Validation failures answer HTTP 200 with code 400 and a message naming the problem (the
  issue's "a code other than 200 is a failure even inside HTTP 200"); a missing record is code
  404; a refused signature is HTTP 401 with code 401 (see etl.connectors.udesk.simulator_auth).
- pageSize above 100 is refused (code 400), not clamped.
- /v1/datas and /v1/datas/search serve only the first 10,000 hits: a page reaching beyond them
  is refused with code 400 (the seed says the endpoints are valid up to 10,000; it does not
  say how the 10,001st hit is refused).
- Scroll and scrollSearch return records with id > scrollId in ascending id order;
  paging.total is the number of records matching the filter and conditions (all of them,
  not the ones after scrollId) and paging.pageNum is always 1.
- /v1/datas and /v1/datas/scroll list records as id, createUser, createTime, updateUser,
  updateTime, owner (names, as in the seed's examples); search and scrollSearch return full
  records (id, fieldDataList).
- filterId selects one of the object's filters (1 = all records); an unknown one is code 400.
- relatedDatas lists the child object's records whose lookup field to the parent object holds
  dataId, in id order. selfObjectRelationData lists a record's relations (uiId is required and
  only checked to be a number); creating or removing a relation sets the major record's
  updateTime (the seed does not say; this reading lets increments see relation changes).
Writes (POST, PUT, DELETE /v1/data) follow the readings in writes.py. The test API under /_sim/
needs no signature.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from etl.connectors.udesk.servicego.simulator import writes
from etl.connectors.udesk.servicego.simulator.search import Predicate, SearchError, build_predicate
from etl.connectors.udesk.servicego.simulator.store import ServiceGoState
from etl.connectors.udesk.simulator_auth import Account, MinuteLimit, Signer, SignRefused
from etl.core.simulators.http_server import answer_late as wait_for_answer

HIT_LIMIT = 10_000


class Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code, self.message = code, message


def _envelope(code: int = 200, message: str = "OK", data: Any = None, paging: dict[str, int] | None = None,
              raw_data: bytes | None = None) -> bytes:
    head = orjson.dumps({"code": code, "message": message, "visible": False, **({"paging": paging} if paging else {})})
    if raw_data is None:
        if data is None:
            return head
        raw_data = orjson.dumps(data)
    return head[:-1] + b',"data":' + raw_data + b"}"


def _int(value: Any, name: str, default: int | None = None, low: int | None = None, high: int | None = None) -> int:
    if value in (None, ""):
        if default is None:
            raise Refused(400, f"{name} is required")
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise Refused(400, f"{name} must be an integer") from None
    if low is not None and number < low:
        raise Refused(400, f"{name} must be at least {low}")
    if high is not None and number > high:
        raise Refused(400, f"{name} must be at most {high}")
    return number


class Handlers:
    def __init__(self, state: ServiceGoState) -> None:
        self.state = state
        self._hits: OrderedDict[tuple[Any, ...], list[int]] = OrderedDict()

    def _object(self, name: Any) -> str:
        if not name:
            raise Refused(400, "objectApiName is required")
        if name not in self.state.objects:
            raise Refused(400, f"object {name} does not exist")
        return str(name)

    def _matching(self, obj: str, filter_id: Any, body: dict[str, Any], keyword: str = "") -> list[int]:
        """Ids (ascending) matching a filter and conditions, cached per data version."""
        state = self.state
        conditions: list[dict[str, Any]] = []
        if filter_id not in (None, ""):
            fid = _int(filter_id, "filterId")
            filters = state.objects[obj].filters
            if fid not in filters:
                raise Refused(400, f"filter {fid} does not exist on object {obj}")
            conditions = filters[fid]
        now = datetime.now(state.tz)
        try:
            predicate: Predicate | None = build_predicate(state.objects[obj], body, now, conditions)
        except SearchError as exc:
            raise Refused(400, str(exc)) from None
        if predicate is None and not keyword:
            return state.ids[obj]
        key = (obj, state.versions[obj], filter_id, orjson.dumps(body, option=orjson.OPT_SORT_KEYS), keyword,
               now.strftime("%Y%m%d%H%M"))
        hit = self._hits.get(key)
        if hit is None:
            records = state.records[obj]
            hit = [i for i in state.ids[obj] if (predicate is None or predicate(records[i]))
                   and (not keyword or keyword in records[i]["name"]["fieldValue"])]
            self._hits[key] = hit
            if len(self._hits) > 32:
                self._hits.popitem(last=False)
        return hit

    def _meta(self, obj: str, record_id: int) -> dict[str, Any]:
        record = self.state.records[obj][record_id]
        users = self.state.users

        def name_of(entry: dict[str, Any]) -> str:
            return users[int(entry["fieldValue"]) - 1].name if entry["fieldValue"] else ""

        return {"id": record_id, "createUser": name_of(record["createUser"]), "createTime": record["createTime"]["fieldValue"],
                "updateUser": name_of(record["updateUser"]), "updateTime": record["updateTime"]["fieldValue"],
                "owner": name_of(record["owner"])}

    def _full(self, obj: str, ids: list[int]) -> bytes:
        return b"[" + b",".join(self.state.json(obj, i) for i in ids) + b"]"

    def _paged(self, hits: list[int], page: int, size: int) -> list[int]:
        if page * size > HIT_LIMIT and (page - 1) * size < len(hits):
            raise Refused(400, f"only the first {HIT_LIMIT} hits can be paged; use /v1/datas/scroll for more")
        return hits[(page - 1) * size : page * size]

    @staticmethod
    def _after(hits: list[int], scroll_id: int, size: int) -> list[int]:
        start = bisect.bisect_right(hits, scroll_id)
        return hits[start : start + size]

    def datas(self, q: Any) -> bytes:
        obj = self._object(q.get("objectApiName"))
        page, size = _int(q.get("pageNum"), "pageNum", 1, 1), _int(q.get("pageSize"), "pageSize", 20, 1, 100)
        hits = self._matching(obj, q.get("filterId"), {})
        ordered = hits[::-1]  # the filter's order: newest first
        ids = self._paged(ordered, page, size)
        return _envelope(data=[self._meta(obj, i) for i in ids], paging={"pageNum": page, "pageSize": size, "total": len(hits)})

    def scroll(self, q: Any) -> bytes:
        obj = self._object(q.get("objectApiName"))
        scroll_id, size = _int(q.get("scrollId"), "scrollId", 0, 0), _int(q.get("pageSize"), "pageSize", 20, 1, 100)
        hits = self._matching(obj, q.get("filterId"), {})
        ids = self._after(hits, scroll_id, size)
        return _envelope(data=[self._meta(obj, i) for i in ids], paging={"pageNum": 1, "pageSize": size, "total": len(hits)})

    def search(self, body: dict[str, Any]) -> bytes:
        obj = self._object(body.get("objectApiName"))
        page, size = _int(body.get("pageNum"), "pageNum", 1, 1), _int(body.get("pageSize"), "pageSize", 20, 1, 100)
        keyword = str(body.get("keyword") or "")[:30]
        hits = self._matching(obj, body.get("filterId"), _conditions_of(body), keyword)
        ids = self._paged(hits[::-1], page, size)
        return _envelope(raw_data=self._full(obj, ids), paging={"pageNum": page, "pageSize": size, "total": len(hits)})

    def scroll_search(self, body: dict[str, Any]) -> bytes:
        obj = self._object(body.get("objectApiName"))
        scroll_id, size = _int(body.get("scrollId"), "scrollId", 0, 0), _int(body.get("pageSize"), "pageSize", 20, 1, 100)
        hits = self._matching(obj, body.get("filterId"), _conditions_of(body))
        ids = self._after(hits, scroll_id, size)
        return _envelope(raw_data=self._full(obj, ids), paging={"pageNum": 1, "pageSize": size, "total": len(hits)})

    def related(self, q: Any) -> bytes:
        obj, parent = self._object(q.get("objectApiName")), self._object(q.get("parentObjectApiName"))
        parent_id = _int(q.get("dataId"), "dataId")
        if parent_id not in self.state.records[parent]:
            raise Refused(404, f"record {parent_id} does not exist")
        page, size = _int(q.get("pageNum"), "pageNum", 1, 1), _int(q.get("pageSize"), "pageSize", 20, 1, 100)
        hits = self.state.related_ids(parent, parent_id, obj)
        if q.get("filterId") not in (None, ""):
            allowed = set(self._matching(obj, q.get("filterId"), {}))
            hits = [i for i in hits if i in allowed]
        ids = hits[(page - 1) * size : page * size]
        return _envelope(raw_data=self._full(obj, ids), paging={"pageNum": page, "pageSize": size, "total": len(hits)})

    def relations(self, q: Any) -> bytes:
        major = _int(q.get("majorDataId"), "majorDataId")
        _int(q.get("uiId"), "uiId")
        obj = self.state.object_of(major)
        if obj is None:
            raise Refused(404, f"record {major} does not exist")
        page, size = _int(q.get("pageNum"), "pageNum", 1, 1), _int(q.get("pageSize"), "pageSize", 20, 1, 100)
        links = [(r, t) for r, t in self.state.relations.get(major, []) if self.state.object_of(r) is not None]
        rows = []
        for related, relation_id in links[(page - 1) * size : page * size]:
            other = self.state.object_of(related) or obj
            name = self.state.records[other][related]["name"]["fieldValue"]
            rows.append({"dataId": related, "dataName": name, "relationId": relation_id,
                         "relationName": self.state.relation_types[relation_id], "fieldValueMap": {"4184": name}})
        data = {"showFieldList": [{"id": 4184, "label": "Name", "fieldName": "name", "fieldType": 1}],
                "total": len(links), "pageNum": page, "pageSize": size, "fieldDataList": rows}
        return _envelope(data=data)

    def get(self, q: Any) -> bytes:
        record_id = self._locate(q.get("objectApiName"), q.get("id"), q.get("uniqueFieldApiName"), q.get("uniqueFieldValue"))
        return _envelope(raw_data=self.state.json(*record_id))

    def _locate(self, obj_name: Any, record_id: Any, unique_field: Any, unique_value: Any) -> tuple[str, int]:
        state = self.state
        if record_id not in (None, ""):
            rid = _int(record_id, "id")
            for name, records in state.records.items():
                if rid in records and (not obj_name or obj_name == name):
                    return name, rid
            raise Refused(404, f"record {rid} does not exist")
        obj = self._object(obj_name)
        if not unique_field or unique_value in (None, ""):
            raise Refused(400, "id, or uniqueFieldApiName and uniqueFieldValue, are required")
        f = state.objects[obj].field(str(unique_field))
        if f is None or not f.unique:
            raise Refused(400, f"{unique_field} is not an external unique field of {obj}")
        found = state.find_unique(obj, f.api_name, str(unique_value))
        if found is None:
            raise Refused(404, f"no {obj} record has {unique_field} = {unique_value}")
        return obj, found


def _conditions_of(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body[k] for k in ("conditionList", "judgeStrategy", "customJudgeLogic") if k in body}


def build_app(state: ServiceGoState, latency: float = 0.0, per_minute: int | None = None,
              minute_seconds: float = 60.0) -> Starlette:
    handlers = Handlers(state)
    signer = Signer(Account(state.email, state.api_token, state.hash_name))
    limit = MinuteLimit(per_minute, minute_seconds)
    stats: dict[str, Any] = {"requests": 0, "by_endpoint": {}, "refused": 0}
    settings: dict[str, Any] = {"latency": latency, "faults": [], "write_delay": 0.0}

    def respond(body: bytes, status: int = 200) -> Response:
        return Response(body, status_code=status, media_type="application/json")

    def dispatch(endpoint: str, query: Any, body: dict[str, Any]) -> tuple[Any, float] | None:
        """The endpoint's answer, and how long it is held back (writes, when tests ask); None: no such API."""
        if endpoint == "GET /v1/datas":
            return handlers.datas(query), 0.0
        if endpoint == "GET /v1/datas/scroll":
            return handlers.scroll(query), 0.0
        if endpoint == "POST /v1/datas/search":
            return handlers.search(body), 0.0
        if endpoint == "POST /v1/datas/scrollSearch":
            return handlers.scroll_search(body), 0.0
        if endpoint == "GET /v1/data":
            return handlers.get(query), 0.0
        if endpoint == "POST /v1/data":
            return _envelope(data={"id": writes.create(state, body)}), settings["write_delay"]
        if endpoint == "PUT /v1/data":
            writes.update(state, body)
            return _envelope(), 0.0
        if endpoint == "DELETE /v1/data":
            writes.delete(state, query)
            return _envelope(), 0.0
        if endpoint == "GET /v1/data/relatedDatas":
            return handlers.related(query), 0.0
        if endpoint == "GET /v1/selfObjectRelationData":
            return handlers.relations(query), 0.0
        return None

    async def api(request: Request) -> Response:
        path = request.url.path.removeprefix("/api")
        endpoint = f"{request.method} {path}"
        stats["requests"] += 1
        stats["by_endpoint"][endpoint] = stats["by_endpoint"].get(endpoint, 0) + 1
        if settings["faults"]:
            fault = settings["faults"].pop(0)
            if fault == "500":
                return Response(b"<html><body>500 Internal Server Error</body></html>", 500, media_type="text/html")
            if fault == "code500":
                return respond(_envelope(500, "system busy, try again later"))
        try:
            signer.check(request.query_params)
        except SignRefused as exc:
            stats["refused"] += 1
            return respond(_envelope(401, f"authentication failed: {exc}"), 401)
        if not limit.admit():
            stats["rate_limited"] = stats.get("rate_limited", 0) + 1
            return respond(_envelope(429, "too many requests"), 429)
        # requests admitted by wall-clock second: a benchmark reads the budget's use over any span
        second = str(int(time.time()))
        admitted = stats.setdefault("admitted_per_second", {})
        admitted[second] = admitted.get(second, 0) + 1
        if settings["latency"]:
            await asyncio.sleep(settings["latency"])
        try:
            body: dict[str, Any] = {}
            if request.method in ("POST", "PUT"):
                try:
                    body = orjson.loads(await request.body() or b"{}")
                except orjson.JSONDecodeError:
                    raise Refused(400, "request body is not valid JSON") from None
                if not isinstance(body, dict):
                    raise Refused(400, "request body must be a JSON object")
            with state.lock:
                answered = dispatch(endpoint, request.query_params, body)
            if answered is None:
                return respond(_envelope(404, f"no such API: {endpoint}"), 404)
            out, answer_late = answered
        except (Refused, writes.WriteRefused) as exc:
            return respond(_envelope(exc.code, exc.message))
        if answer_late:  # the write is done; its answer takes long (tests lose it by killing the client)
            await wait_for_answer(settings)
        return respond(out)

    async def sim(request: Request) -> Response:
        action = request.path_params["action"]
        body = orjson.loads(await request.body() or b"{}")
        if action == "stats":
            return respond(orjson.dumps(stats))
        if action == "changes":
            return respond(orjson.dumps(state.random_changes(**body)))
        if action == "add-field":
            state.add_field(body["object"], body["field"], body.get("type", "field_type_single_line"))
        elif action == "faults":
            settings["faults"].extend(body["faults"])
        elif action == "latency":
            settings["latency"] = float(body["seconds"])
        return respond(b"{}")

    app = Starlette(routes=[
        Route("/api/v1/{path:path}", api, methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/_sim/{action}", sim, methods=["GET", "POST"]),
    ])
    app.state.servicego = state
    app.state.stats = stats
    app.state.settings = settings
    app.state.signer = signer
    app.state.limit = limit
    return app
