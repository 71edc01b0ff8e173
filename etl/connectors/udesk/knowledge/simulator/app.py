"""The Udesk knowledge open API (seed 001, under /open_api_v1) and the KM entity API (seed 002,
under /api/v1/entity) as one ASGI app: two systems, one port.

Readings where the seeds are silent:
- Knowledge failures: code 2000 (validation) or 2005 (not found) with `message`, answered with
  HTTP 200 (the seed gives codes, not statuses; a client must read the code anyway). A refused
  signature is HTTP 401 with {"code": 401, "message": ...}.
- The knowledge API accepts sign_version v2 (nonce, sha256) and the plain sha1 sign of seed
  000; the KM API only the sha1 sign (its examples' 40-digit signs).
- per_page above 100 is clamped to 100 (the seed: "maximum is 100"); pageSize of the KM list
  likewise.
- KM lists include each custom entity's valueList; system entities (type 2) have none (the
  seed's list example shows a system entity with "valueList": null).
- KM failures: {"code": 400, "message": "Entity not exists"} with HTTP 200.
Writes: catalogs, questions, useful expressions and links can be created, updated and deleted
with the documented checks (owner, four levels, unique sibling names, content under a parent);
KM entities can be created, updated (valueList changeType 1 added, 2 modified, 3 deleted),
enabled or disabled and deleted (`force` has no effect: nothing here uses entities). apiName
must be letters, digits or underscores and unique per robot; remark at most 255 characters.
A question update keeps title, content and content type given as "" or null (the seed's note)
and refuses last_max not after last_min (code 2000). `write_delay` (a setting) holds a write's
answer back after the write is made, for the kill tests.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from etl.connectors.udesk.knowledge.simulator.store import CST, TYPES, Invalid, KnowledgeState
from etl.connectors.udesk.simulator_auth import Account, MinuteLimit, Signer, SignRefused
from etl.core.simulators.http_server import answer_late

LISTS = {"knowledge_questions": "question", "useful_expressions": "useful_expression",
         "useful_links": "useful_link", "knowledge_attachments": "attachment"}


def _int(value: Any, name: str, required: bool = True, default: int = 0) -> int:
    if value in (None, ""):
        if required:
            raise Invalid(f"{name} is a required field")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Invalid(f"{name} must be an integer") from None


def _page(items: list[dict[str, Any]], q: Any) -> tuple[list[dict[str, Any]], dict[str, int]]:
    page = max(1, _int(q.get("page"), "page", False, 1))
    per_page = min(100, max(1, _int(q.get("per_page"), "per_page", False, 20)))
    chunk = items[(page - 1) * per_page : page * per_page]
    return chunk, {"current_page": page, "total_pages": max(1, math.ceil(len(items) / per_page)),
                   "total_count": len(items)}


class KnowledgeHandlers:
    def __init__(self, state: KnowledgeState) -> None:
        self.state = state

    def catalogs(self, q: Any) -> dict[str, Any]:
        knowledge_type = q.get("knowledge_type_name")
        if knowledge_type not in TYPES:
            raise Invalid("knowledge_type_name value is incorrect")
        return {"code": 1000, "catalogs": self.state.tree(knowledge_type, _int(q.get("agent_id"), "agent_id"))}

    def listing(self, resource: str, q: Any) -> dict[str, Any]:
        knowledge_type = LISTS[resource]
        agent = _int(q.get("agent_id"), "agent_id")
        catalog = _int(q.get("catalog_id"), "catalog_id")
        if catalog > 0:
            owner = self.state.catalogs.get(catalog)
            if owner is None or owner["knowledge_type"] != knowledge_type:
                raise Invalid("The category does not exist")
            if owner["agent_id"] != agent:
                raise Invalid("The category does not exist under the agent's name")
        items, meta = _page(self.state.listing(knowledge_type, agent, catalog), q)
        return {"code": 1000, resource: items, "meta": meta}

    def create_catalog(self, body: dict[str, Any]) -> dict[str, Any]:
        spec = body.get("knowledge_catalog")
        if not isinstance(spec, dict):
            raise Invalid("param is missing or the value is empty: knowledge_catalog")
        parent = spec.get("parent_id")
        record = self.state.add_catalog(str(spec.get("knowledge_type_name")), _int(spec.get("agent_id"), "agent_id"),
                                        str(spec.get("name") or ""), int(parent) if parent not in (None, "") else None)
        return {"code": 1000, "id": record["id"], "name": record["name"]}

    def update_catalog(self, catalog_id: int, body: dict[str, Any]) -> dict[str, Any]:
        spec = body.get("knowledge_catalog") or {}
        record = self._own_catalog(catalog_id, _int(spec.get("agent_id"), "agent_id"))
        name = str(spec.get("name") or "")
        if not name:
            raise Invalid("Verification failed: Name cannot be an empty string")
        if any(c["name"] == name and c["id"] != catalog_id and c["parent_id"] == record["parent_id"]
               and c["knowledge_type"] == record["knowledge_type"] and c["agent_id"] == record["agent_id"]
               for c in self.state.catalogs.values()):
            raise Invalid("Verification failed: Name is already in use")
        record["name"] = name
        return {"code": 1000, "id": catalog_id, "name": name}

    def delete_catalog(self, catalog_id: int, body: dict[str, Any]) -> dict[str, Any]:
        spec = body.get("knowledge_catalog") or {}
        self._own_catalog(catalog_id, _int(spec.get("agent_id"), "agent_id"))
        del self.state.catalogs[catalog_id]
        return {"code": 1000, "message": "Category delete success", "id": str(catalog_id)}

    def _own_catalog(self, catalog_id: int, agent: int) -> dict[str, Any]:
        record = self.state.catalogs.get(catalog_id)
        if record is None:
            raise Invalid("The resource was not found", 2005)
        if record["agent_id"] != agent:
            raise Invalid("The category does not exist under the agent's name")
        return record

    def create_item(self, resource: str, body: dict[str, Any]) -> dict[str, Any]:
        knowledge_type = LISTS[resource]
        spec = body.get("question") if knowledge_type == "question" else body
        if not isinstance(spec, dict):
            raise Invalid("param is missing or the value is empty: question")
        agent = _int(spec.get("agent_id"), "agent_id")
        catalog = _int(spec.get("catalog_id"), "catalog_id")
        if catalog > 0:
            self._own_catalog(catalog, agent)
        fields = self._fields(knowledge_type, spec, creating=True)
        record = self.state.add_item(knowledge_type, agent, {**fields, "catalog_id": catalog if catalog > 0 else None})
        return {"code": 1000, **record}

    def update_item(self, resource: str, item_id: int, body: dict[str, Any]) -> dict[str, Any]:
        knowledge_type = LISTS[resource]
        spec = body.get("question") if knowledge_type == "question" else body
        if not isinstance(spec, dict):
            raise Invalid("param is missing or the value is empty: question")
        record = self.state.items[knowledge_type].get(item_id)
        if record is None:
            raise Invalid("The resource was not found", 2005)
        record.update(self._fields(knowledge_type, spec, creating=False))
        return {"code": 1000, **record}

    def delete_item(self, resource: str, item_id: int) -> dict[str, Any]:
        knowledge_type = LISTS[resource]
        if self.state.items[knowledge_type].pop(item_id, None) is None:
            raise Invalid("The resource was not found", 2005)
        self.state.owners.pop((knowledge_type, item_id), None)
        return {"code": 1000, "id": str(item_id), "message": "deleted"}

    @staticmethod
    def _fields(knowledge_type: str, spec: dict[str, Any], creating: bool) -> dict[str, Any]:
        if knowledge_type == "useful_expression":
            if not spec.get("content"):
                raise Invalid("The content content of the frequently used phrase cannot be empty")
            return {"content": spec["content"]}
        if knowledge_type == "useful_link":
            if creating and not spec.get("name"):
                raise Invalid("The name name of the frequently used link is a required field")
            if creating and not spec.get("url"):
                raise Invalid("The URL url of the frequently used link is a required field")
            link = {k: spec[k] for k in ("name", "url") if spec.get(k)}
            if not link:
                raise Invalid("You have not set the content to be modified")
            return link
        if knowledge_type != "question":
            raise Invalid("attachments are uploaded as files, which this simulator does not take")
        out: dict[str, Any] = {}
        for key in ("title", "content", "content_type"):
            if spec.get(key) not in (None, ""):
                out[key] = spec[key]
            elif creating:
                raise Invalid(f"{key} cannot be empty")
        if out.get("content_type", "text") not in ("text", "html"):
            raise Invalid("The value of content_type is incorrect")
        if not isinstance(spec.get("lasts"), bool):
            raise Invalid("The validity period lasts of the question cannot be empty")
        out["lasts"] = spec["lasts"]
        if spec["lasts"]:
            out["last_min"] = out["last_max"] = None
        else:
            if not spec.get("last_min") or not spec.get("last_max"):
                raise Invalid("The upper and lower limits of the validity period of the question cannot be empty")
            if str(spec["last_max"]) <= str(spec["last_min"]):
                raise Invalid("last_max cannot be less than or equal to last_min")
            out["last_min"], out["last_max"] = spec["last_min"], spec["last_max"]
        out["updated_at"] = datetime.now(CST).isoformat(timespec="milliseconds")
        return out


def build_app(state: KnowledgeState, latency: float = 0.0, per_minute: int | None = None,
              minute_seconds: float = 60.0) -> Starlette:
    handlers = KnowledgeHandlers(state)
    knowledge_signer = Signer(Account(state.email, state.api_token), allow_v2=True)
    km_signer = Signer(Account(state.email, state.api_token))
    limits = {"knowledge": MinuteLimit(per_minute, minute_seconds), "km": MinuteLimit(per_minute, minute_seconds)}
    stats: dict[str, Any] = {"requests": 0, "by_endpoint": {}}
    settings: dict[str, Any] = {"latency": latency, "write_delay": 0.0}

    def respond(payload: Any, status: int = 200) -> Response:
        return Response(orjson.dumps(payload), status_code=status, media_type="application/json")

    async def gate(request: Request, signer: Signer, limit: MinuteLimit) -> Response | None:
        key = f"{request.method} {request.url.path}"
        stats["requests"] += 1
        stats["by_endpoint"][key] = stats["by_endpoint"].get(key, 0) + 1
        try:
            signer.check(request.query_params)
        except SignRefused as exc:
            return respond({"code": 401, "message": f"authentication failed: {exc}"}, 401)
        if not limit.admit():
            return respond({"code": 429, "message": "too many requests"}, 429)
        if settings["latency"]:
            await asyncio.sleep(settings["latency"])
        return None

    async def knowledge(request: Request) -> Response:
        refused = await gate(request, knowledge_signer, limits["knowledge"])
        if refused:
            return refused
        answer = await knowledge_answer(request)
        if request.method != "GET":
            await answer_late(settings)  # the write is made; its answer may be held back (kill tests)
        return answer

    async def knowledge_answer(request: Request) -> Response:
        parts = [p for p in request.path_params["path"].split("/") if p]
        method = request.method
        body: dict[str, Any] = {}
        if method in ("POST", "PUT", "DELETE"):
            raw = await request.body()
            try:
                body = orjson.loads(raw) if raw.strip() else {}
            except orjson.JSONDecodeError:
                return respond({"code": 2000, "message": "request body is not valid JSON"})
        try:
            with state.lock:
                head = parts[0] if parts else ""
                item_id = _int(parts[1], "id") if len(parts) == 2 else None
                if head == "knowledge_catalogs":
                    if method == "GET" and item_id is None:
                        return respond(handlers.catalogs(request.query_params))
                    if method == "POST" and item_id is None:
                        return respond(handlers.create_catalog(body))
                    if method == "PUT" and item_id is not None:
                        return respond(handlers.update_catalog(item_id, body))
                    if method == "DELETE" and item_id is not None:
                        return respond(handlers.delete_catalog(item_id, body))
                elif head in LISTS:
                    if method == "GET" and item_id is None:
                        return respond(handlers.listing(head, request.query_params))
                    if method == "POST" and item_id is None:
                        return respond(handlers.create_item(head, body))
                    if method == "PUT" and item_id is not None:
                        return respond(handlers.update_item(head, item_id, body))
                    if method == "DELETE" and item_id is not None:
                        return respond(handlers.delete_item(head, item_id))
        except Invalid as exc:
            return respond({"code": exc.code, "message": exc.message})
        return respond({"code": 2005, "message": "The resource was not found"}, 404)

    async def km(request: Request) -> Response:
        refused = await gate(request, km_signer, limits["km"])
        if refused:
            return refused
        answer = await km_answer(request)
        if request.method != "GET":
            await answer_late(settings)
        return answer

    async def km_answer(request: Request) -> Response:
        parts = [p for p in request.path_params.get("path", "").split("/") if p]
        q, method = request.query_params, request.method
        body: dict[str, Any] = {}
        if method in ("POST", "PUT"):
            raw = await request.body()
            try:
                body = orjson.loads(raw) if raw.strip() else {}
            except orjson.JSONDecodeError:
                return respond({"code": 400, "message": "request body is not valid JSON", "visible": False})

        def ok(data: Any = None) -> Response:
            return respond({"code": 200, "message": "OK", "visible": False, **({"data": data} if data is not None else {})})

        with state.lock:
            try:
                if len(parts) == 2 and parts[0] == "robot" and method == "GET":
                    robot = _int(parts[1], "robotId")
                    page = max(1, _int(q.get("pageNum"), "pageNum", False, 1))
                    size = min(100, max(1, _int(q.get("pageSize"), "pageSize", False, 10)))
                    items = [e for _, e in sorted(state.entities.items()) if e["robotId"] == robot]
                    return respond({"code": 200, "message": "OK", "visible": False,
                                    "paging": {"pageNum": page, "pageSize": size, "total": len(items)},
                                    "data": items[(page - 1) * size : page * size]})
                if not parts and method == "POST":
                    return ok(state.create_entity(body))
                entity_id = _int(parts[0], "id") if parts else None
                if entity_id is not None and len(parts) == 1:
                    if method == "GET":
                        entity = state.entities.get(entity_id)
                        if entity is None:
                            return respond({"code": 400, "message": "Entity not exists", "visible": False})
                        return ok(entity)
                    if method == "PUT":
                        return ok(state.update_entity(entity_id, body))
                    if method == "DELETE":
                        if state.entities.pop(entity_id, None) is None:
                            return respond({"code": 400, "message": "Entity not exists", "visible": False})
                        return ok()
                if entity_id is not None and len(parts) == 3 and parts[1] == "status" and method == "PUT":
                    entity = state.entities.get(entity_id)
                    status = _int(parts[2], "status")
                    if entity is None or status not in (0, 1):
                        return respond({"code": 400, "message": "Entity not exists" if entity is None
                                        else "status must be 0 or 1", "visible": False})
                    entity["status"] = status
                    return ok()
            except Invalid as exc:
                return respond({"code": 400, "message": exc.message, "visible": False})
        return respond({"code": 404, "message": "no such API", "visible": False}, 404)

    async def sim(request: Request) -> Response:
        action = request.path_params["action"]
        if action == "stats":
            return respond(stats)
        body = orjson.loads(await request.body() or b"{}")
        if action == "changes":
            return respond(state.random_changes(**body))
        return respond({}, 404)

    app = Starlette(routes=[
        Route("/open_api_v1/{path:path}", knowledge, methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/api/v1/entity", km, methods=["POST"]),
        Route("/api/v1/entity/{path:path}", km, methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/_sim/{action}", sim, methods=["GET", "POST"]),
    ])
    app.state.knowledge = state
    app.state.stats = stats
    app.state.settings = settings
    app.state.signers = (knowledge_signer, km_signer)
    return app
