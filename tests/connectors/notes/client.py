"""The Notes API's client: a page of the list, and the two writes (simulator.py documents them)."""

from __future__ import annotations

from typing import Any

import httpx

from etl.core.errors import MalformedResponse
from etl.core.http.ratelimit import RateLimiter
from etl.core.http.retry import Backoff
from etl.core.http.session import OneSessionClient, Session, new_http_client
from etl.core.pull.windowed import Page
from tests.connectors.notes.settings import NotesConnection

SYSTEM = "notes"


def parse_error(body: Any) -> tuple[str | None, str, list[dict[str, str]]]:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, "no error message", []
    return str(error.get("code")), str(error.get("message") or "no message"), []


def _note(body: Any, path: str) -> dict[str, Any]:
    note = body.get("note") if isinstance(body, dict) else None
    if not isinstance(note, dict) or not isinstance(note.get("id"), int):
        raise MalformedResponse(SYSTEM, "the answer holds no note with an id", path=path)
    return note


class NotesClient(OneSessionClient):
    def list_page(self, path: str, params: dict[str, Any]) -> Page:
        body = self.session.request_json("GET", path, params=params).body
        if not isinstance(body, dict) or not isinstance(body.get("notes"), list):
            raise MalformedResponse(SYSTEM, "a list answer has no notes", path=path)
        try:
            return Page(body["notes"], int(body["total"]), int(body["pages"]))
        except (KeyError, TypeError, ValueError):
            raise MalformedResponse(SYSTEM, "a list answer has no total or pages", path=path) from None

    def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        return _note(self.session.request_json("POST", "notes", json=fields).body, "notes")

    def update(self, note_id: int, fields: dict[str, Any]) -> dict[str, Any]:
        path = f"notes/{note_id}"
        return _note(self.session.request_json("PATCH", path, json=fields).body, path)



def new_limiters(settings: NotesConnection) -> dict[str, RateLimiter]:
    budget = settings.rate_limit
    return {"main": RateLimiter("main", budget.per_minute, budget.window_seconds, 0, SYSTEM)}


def connect(name: str, settings: NotesConnection, transport: httpx.BaseTransport | None = None,
            limiters: dict[str, RateLimiter] | None = None) -> NotesClient:
    token = settings.token(name)
    http = new_http_client(settings.base_url + "/", 30.0, settings.concurrency,
                           headers={"Authorization": f"Bearer {token}"}, transport=transport)
    backoff = Backoff(settings.retry.attempts, settings.retry.backoff_seconds, settings.retry.max_backoff_seconds)
    return NotesClient(Session(SYSTEM, http, limiters or new_limiters(settings), backoff, parse_error))
