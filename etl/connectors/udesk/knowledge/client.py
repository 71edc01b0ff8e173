"""Udesk knowledge open API (seed 001) and KM robot entities (seed 002).

Quirks handled here, once:
- Knowledge answers carry code 1000 on success and 2000 / 2005 with a message on failure; the
  seed does not give the HTTP status of a failure, so the code decides whatever the status.
  Lists are paged with page / per_page (at most 100) and `meta` {current_page, total_pages,
  total_count}; the list member is named after the resource (knowledge_questions, ...).
- Catalog lists are one nested tree per knowledge type and owner (children inside parents),
  not paged; `flatten_catalogs` turns it into rows with depth and path.
- KM entity answers use the {"code": 200, "message", "paging", "data"} envelope (as ServiceGo);
  lists page with pageNum / pageSize (at most 100) and paging.total.
- The knowledge open API is signed with sign_version v2 (or v1) per connection; the KM entity
  API with the plain sha1 sign of seed 000 (its examples' 40-digit signs).
"""

from __future__ import annotations

import math
from typing import Any

import httpx

from etl.connectors.udesk import envelope as code_envelope
from etl.connectors.udesk.knowledge.settings import UdeskKnowledgeConnection
from etl.connectors.udesk.sign import new_limiter, signed_session
from etl.core.errors import MalformedResponse
from etl.core.http.ratelimit import RateLimiter
from etl.core.http.retry import Action
from etl.core.http.session import Session

SYSTEM = "udesk_knowledge"
KM_SYSTEM = "udesk_km"
PER_PAGE = 100


def check_envelope(body: Any) -> tuple[Action, str | None, str] | None:
    if not isinstance(body, dict) or "code" not in body:
        return Action.RETRY, None, "answer has no code"
    code = body["code"]
    if code == 1000:
        return None
    message = str(body.get("message") or body.get("exception") or "no message")
    if code in (401, 403):
        return Action.AUTH, str(code), message
    if isinstance(code, int) and 500 <= code < 600:
        return Action.RETRY, str(code), message
    return Action.FAIL, str(code), message


def parse_error(body: Any) -> tuple[str | None, str, list[dict[str, str]]]:
    return str(body.get("code")), str(body.get("message") or "no message"), []


def flatten_catalogs(tree: list[dict[str, Any]], knowledge_type: str, agent_id: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def walk(nodes: list[dict[str, Any]], depth: int, path: str) -> None:
        for node in nodes:
            if not isinstance(node, dict) or "id" not in node:
                raise MalformedResponse(SYSTEM, f"a catalog has no id: {str(node)[:80]}", path="knowledge_catalogs")
            here = f"{path} / {node.get('name')}" if path else str(node.get("name"))
            record = {k: v for k, v in node.items() if k != "children"}
            out.append({"record": record, "knowledge_type": knowledge_type, "agent_id": agent_id, "depth": depth,
                        "path": here})
            walk(node.get("children") or [], depth + 1, here)

    walk(tree, 1, "")
    return out


class KnowledgeClient:
    def __init__(self, open_api: Session, km: Session | None) -> None:
        self.session = open_api
        self.km = km

    def catalogs(self, knowledge_type: str, agent_id: int) -> list[dict[str, Any]]:
        body = self.session.request_json("GET", "knowledge_catalogs", params={
            "knowledge_type_name": knowledge_type, "agent_id": agent_id}).body
        tree = body.get("catalogs")
        if not isinstance(tree, list):
            raise MalformedResponse(SYSTEM, "answer has no 'catalogs' array", path="knowledge_catalogs")
        return flatten_catalogs(tree, knowledge_type, agent_id)

    def list_all(self, resource: str, agent_id: int, catalog_id: int = 0) -> list[dict[str, Any]]:
        """Every record of a list for one owner (catalog_id 0 = all catalogs, -1 = uncategorised)."""
        records: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self.session.request_json("GET", resource, params={
                "catalog_id": catalog_id, "agent_id": agent_id, "page": page, "per_page": PER_PAGE}).body
            items, meta = body.get(resource), body.get("meta")
            if not isinstance(items, list) or not isinstance(meta, dict):
                raise MalformedResponse(SYSTEM, f"answer has no '{resource}' array and 'meta' object", path=resource)
            records.extend(items)
            total_pages = meta.get("total_pages")
            if not isinstance(total_pages, int):
                raise MalformedResponse(SYSTEM, "meta.total_pages is not a number", path=resource)
            if page >= total_pages or not items:
                return records
            page += 1

    def entities(self, robot_id: int) -> list[dict[str, Any]]:
        assert self.km is not None
        path = f"v1/entity/robot/{robot_id}"
        records: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self.km.request_json("GET", path, params={"pageNum": page, "pageSize": PER_PAGE}).body
            data, paging = body.get("data"), body.get("paging")
            if not isinstance(data, list) or not isinstance(paging, dict):
                raise MalformedResponse(KM_SYSTEM, "answer has no 'data' array and 'paging' object", path=path)
            records.extend(data)
            if page >= math.ceil(int(paging.get("total") or 0) / PER_PAGE) or not data:
                return records
            page += 1

    def download(self, url: str, limit: int) -> bytes | None:
        """A knowledge attachment's file, or None when it is larger than `limit` bytes."""
        with self.session.client.stream("GET", url, auth=None) as response:
            response.raise_for_status()
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    return None
                chunks.append(chunk)
        return b"".join(chunks)

    def sessions(self) -> list[Session]:
        return [self.session, *([self.km] if self.km is not None else [])]

    def close(self) -> None:
        self.session.close()
        if self.km:
            self.km.close()


def new_limiters(conn: UdeskKnowledgeConnection) -> dict[str, RateLimiter]:
    """The knowledge API and the KM API are separate services, each with its own budget."""
    rl = conn.rate_limit
    return {SYSTEM: new_limiter(SYSTEM, rl.per_minute, rl.window_seconds),
            KM_SYSTEM: new_limiter(KM_SYSTEM, rl.per_minute, rl.window_seconds)}


def connect(name: str, conn: UdeskKnowledgeConnection, transport: httpx.BaseTransport | None = None,
            limiters: dict[str, RateLimiter] | None = None) -> KnowledgeClient:
    token = conn.api_token(name)
    limiters = limiters or new_limiters(conn)
    common = {"per_minute": conn.rate_limit.per_minute, "window_seconds": conn.rate_limit.window_seconds,
              "retry": conn.retry, "timeout": conn.timeout_seconds, "transport": transport}
    open_api = signed_session(SYSTEM, conn.base_url, conn.email, token, "v2" if conn.sign_version == "v2" else "sha1",
                              envelope=check_envelope, parse_error=parse_error, limiter=limiters[SYSTEM],
                              **common)  # type: ignore[arg-type]
    km = None
    if conn.km_base_url:
        km = signed_session(KM_SYSTEM, conn.km_base_url, conn.email, token, "sha1",
                            envelope=code_envelope.check_envelope, parse_error=code_envelope.parse_error,
                            limiter=limiters[KM_SYSTEM], **common)  # type: ignore[arg-type]
    return KnowledgeClient(open_api, km)
