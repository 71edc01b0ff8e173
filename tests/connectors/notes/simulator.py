"""The Notes API, simulated over real HTTP (this is its whole documentation).

- Every request carries `Authorization: Bearer <token>`; a wrong or missing one is answered
  401 {"error": {"code": "unauthorized", "message": "..."}}.
- GET /api/notes?updated_from=&updated_to=&page= lists notes updated in [from, to] (both
  inclusive; `updated_from` may be left out), oldest first (then by id), 20 to a page:
  {"notes": [...], "total": records, "pages": pages}. A note is {"id", "title", "body",
  "updated_at"}; times are UTC, "2026-12-05T10:00:00Z".
- POST /api/notes {"title", "body"} creates one: 201 {"note": {...}}.
- PATCH /api/notes/{id} {"title"?, "body"?} updates one: 200 {"note": {...}}; 404 if there is no such note.
- A refused body is answered 422 {"error": {"code": "invalid", "message": "..."}}.

For tests: `pause_after_pages` holds list requests after that many have been answered, until
`resume()`; `paused` is set once one waits (a test kills the client then).
"""

from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from etl.core.simulators.http_server import AppServer

TOKEN = "notes-token"
PER_PAGE = 20
DATE = "%Y-%m-%dT%H:%M:%SZ"


@dataclass
class NotesState:
    notes: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_id: int = 1
    clock: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    url: str = ""  # the API's base, once served
    list_requests: int = 0
    creates: int = 0
    pause_after_pages: int | None = None
    paused: threading.Event = field(default_factory=threading.Event)
    resumed: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seed(self, count: int) -> None:
        """`count` notes updated a second apart, long ago (before any run's window but the first)."""
        for number in range(count):
            self.clock += timedelta(seconds=1)
            self._add(f"note {number}", f"body {number}", self.clock.strftime(DATE))

    def _add(self, title: str, body: str, at: str) -> dict[str, Any]:
        with self.lock:
            note = {"id": self.next_id, "title": title, "body": body, "updated_at": at}
            self.notes[self.next_id] = note
            self.next_id += 1
            return dict(note)

    def add(self, title: str, body: str = "") -> dict[str, Any]:
        return self._add(title, body, datetime.now(UTC).strftime(DATE))

    def update(self, note_id: int, **values: Any) -> dict[str, Any] | None:
        with self.lock:
            note = self.notes.get(note_id)
            if note is None:
                return None
            note.update(values, updated_at=datetime.now(UTC).strftime(DATE))
            return dict(note)

    def listing(self, lo: str | None, hi: str, page: int) -> dict[str, Any]:
        with self.lock:
            found = sorted((n for n in self.notes.values() if (lo is None or n["updated_at"] >= lo)
                            and n["updated_at"] <= hi), key=lambda n: (n["updated_at"], n["id"]))
            pages = max(1, math.ceil(len(found) / PER_PAGE))
            return {"notes": [dict(n) for n in found[(page - 1) * PER_PAGE: page * PER_PAGE]],
                    "total": len(found), "pages": pages}

    def resume(self) -> None:
        self.pause_after_pages = None
        self.resumed.set()


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _error(status: int, code: str, message: str) -> Response:
    return _json({"error": {"code": code, "message": message}}, status)


def build_app(state: NotesState) -> Starlette:
    def authorized(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {TOKEN}"

    async def list_notes(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "unauthorized", "bad or missing token")
        with state.lock:
            state.list_requests += 1
            hold = state.pause_after_pages is not None and state.list_requests > state.pause_after_pages
        if hold:
            state.paused.set()
            while not state.resumed.is_set():
                await asyncio.sleep(0.02)
        query = request.query_params
        try:
            page = int(query.get("page", "1"))
            hi = query["updated_to"]
        except (KeyError, ValueError):
            return _error(422, "invalid", "updated_to is required; page is a number")
        return _json(state.listing(query.get("updated_from"), hi, page))

    async def create(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "unauthorized", "bad or missing token")
        body = orjson.loads(await request.body())
        if not isinstance(body, dict) or not body.get("title"):
            return _error(422, "invalid", "title is required")
        state.creates += 1
        return _json({"note": state.add(str(body["title"]), str(body.get("body") or ""))}, 201)

    async def update(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "unauthorized", "bad or missing token")
        body = orjson.loads(await request.body())
        values = {k: str(v) for k, v in body.items() if k in ("title", "body")} if isinstance(body, dict) else {}
        if "title" in values and not values["title"]:
            return _error(422, "invalid", "title cannot be emptied")
        note = state.update(int(request.path_params["note_id"]), **values)
        if note is None:
            return _error(404, "not_found", "no such note")
        return _json({"note": note})

    return Starlette(routes=[
        Route("/api/notes", list_notes, methods=["GET"]),
        Route("/api/notes", create, methods=["POST"]),
        Route("/api/notes/{note_id:int}", update, methods=["PATCH"]),
    ])


def serve(state: NotesState) -> AppServer:
    server = AppServer(build_app(state), "/api", name="notes-simulator").start()
    state.url = server.url
    return server
