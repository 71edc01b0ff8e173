"""EddyDesk helpdesk API v2 (seed 003): authentication, list envelopes, error shapes.

Quirks handled here, once:
- "data" is an array on some endpoints and an object keyed by id on others (tickets, custom
  fields, knowledge base); the keys are not always the id ("nine" in the tickets example), so
  records are taken in order and identified by their own "id".
- "pagination.total" is a number on most endpoints and a string on others ("2", "9").
- Reference lists (departments, statuses, ...) have no pagination object: one page.
- Errors come as {"errors": [{"code": "e-404", "title": ..., "details": ...}]}.
- Knowledge-base endpoints have their own rate budget (60/min) and block for an hour.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

import httpx

from etl.connectors.eddydesk.settings import EddyDeskConnection
from etl.core.errors import ApiError, MalformedResponse
from etl.core.http.ratelimit import RateLimiter
from etl.core.http.retry import Backoff
from etl.core.http.session import OneSessionClient, Session, new_http_client

SYSTEM = "eddydesk"
MAIN = "main"
KNOWLEDGE_BASE = "knowledge_base"

# Dates as the API sends them (no time zone; the account's zone applies).
API_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class Page:
    records: list[dict[str, Any]]
    total: int
    total_pages: int
    current_page: int
    per_page: int


def basic_auth_header(email: str, api_key: str) -> str:
    token = base64.b64encode(f"{email}:{api_key}".encode()).decode()
    return f"Basic {token}"


def parse_error(body: Any) -> tuple[str | None, str, list[dict[str, str]]]:
    errors = body["errors"]
    first = errors[0]
    message = "; ".join(f"{e.get('title', '')}: {e.get('details', '')}".strip(": ") for e in errors)
    return first.get("code"), message, errors


# Seed 003 prints a record's not-found answer as HTTP 404 with
# {"errors":[{"code":"e-404","title":"Not found","details":"Ticket with id {9} does not exist"}]}
# ("Post with id {15} in ticket with id {9} does not exist" under a parent); the braces may be
# the docs' placeholder marks or literal, so both are read.
_DOES_NOT_EXIST = re.compile(r"with id \{?(\d+)\}? does not exist", re.IGNORECASE)


def says_record_missing(exc: ApiError, record_id: int) -> bool:
    """Whether `exc` is the documented answer that record `record_id` does not exist.

    Only that answer may mark anything deleted. A 404 of the route (a wrong base URL: a web
    server's page, an unknown method) or one naming another record says nothing about it.
    """
    if exc.status != 404:
        return False
    for error in exc.details:
        details = str(error.get("details", "")) if isinstance(error, dict) else ""
        if any(int(match.group(1)) == record_id for match in _DOES_NOT_EXIST.finditer(details)):
            return True
    return False


def _as_int(value: Any, what: str, path: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MalformedResponse(SYSTEM, f"{what} is {value!r}, expected a number", path=path) from None


def parse_list_page(body: Any, path: str) -> Page:
    if not isinstance(body, dict) or "data" not in body:
        raise MalformedResponse(SYSTEM, "answer has no 'data' member", path=path)
    data = body["data"]
    if isinstance(data, dict):
        records = list(data.values())
    elif isinstance(data, list):
        records = data
    else:
        raise MalformedResponse(SYSTEM, f"'data' is a {type(data).__name__}, expected an array or object", path=path)
    for record in records:
        if not isinstance(record, dict) or "id" not in record:
            raise MalformedResponse(SYSTEM, f"a record has no 'id': {str(record)[:80]}", path=path)
    pagination = body.get("pagination")
    if pagination is None:
        return Page(records, len(records), 1, 1, max(len(records), 1))
    if not isinstance(pagination, dict):
        raise MalformedResponse(SYSTEM, "'pagination' is not an object", path=path)
    return Page(
        records=records,
        total=_as_int(pagination.get("total"), "pagination.total", path),
        total_pages=_as_int(pagination.get("total_pages"), "pagination.total_pages", path),
        current_page=_as_int(pagination.get("current_page", 1), "pagination.current_page", path),
        per_page=_as_int(pagination.get("per_page", len(records)), "pagination.per_page", path),
    )


def budget_of(path: str) -> str:
    return KNOWLEDGE_BASE if path.lstrip("/").startswith("knowledge_base") else MAIN


def data_of(body: Any, path: str) -> dict[str, Any]:
    """The record of a single-record answer ({"data": {...}}, seed 003)."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise MalformedResponse(SYSTEM, "answer has no 'data' object", path=path)
    data: dict[str, Any] = body["data"]
    return data


def record_path(stream: str, record_id: int | None = None, ticket_id: int | None = None) -> str:
    """Where a table's records are written (seed 003): replies and notes under their ticket."""
    if stream in ("ticket_posts", "ticket_comments"):
        kind = "posts" if stream == "ticket_posts" else "comments"
        return f"tickets/{ticket_id}/{kind}/" + (f"{record_id}" if record_id is not None else "")
    return f"{stream}/" + (f"{record_id}" if record_id is not None else "")


class EddyDeskClient(OneSessionClient):
    """Typed access to the endpoints; one per account."""

    def list_page(self, path: str, params: dict[str, Any] | None = None) -> Page:
        response = self.session.request_json("GET", path, budget=budget_of(path), params=params)
        return parse_list_page(response.body, path)

    def get(self, path: str) -> dict[str, Any]:
        return data_of(self.session.request_json("GET", path, budget=budget_of(path)).body, path)

    def create(self, path: str, form: dict[str, str]) -> dict[str, Any]:
        """A form-encoded POST; never retried blindly (a lost answer may have created the record)."""
        return data_of(self.session.request_json("POST", path, data=form, retry=False).body, path)

    def update(self, path: str, body: dict[str, Any], *, as_form: bool = False) -> dict[str, Any]:
        """A PUT of the changed members: JSON, or a form (replies and notes)."""
        answer = self.session.request_json("PUT", path, data=body if as_form else None, json=None if as_form else body)
        return data_of(answer.body, path)

    def write_options(self, path: str, options: list[dict[str, Any]], *, retry: bool) -> Any:
        """A field's options created or updated in one POST (up to 100, seed 003); the answer's body."""
        return self.session.request_json("POST", path, json={"options": options}, retry=retry).body

    def delete(self, path: str) -> None:
        """A DELETE; a record already gone (HTTP 404) is what was asked."""
        try:
            self.session.request_json("DELETE", path)
        except ApiError as exc:
            if exc.status != 404:
                raise


def new_limiters(conn: EddyDeskConnection) -> dict[str, RateLimiter]:
    """The account's budgets; jobs of one account share them (the scheduler passes them in)."""
    rl = conn.rate_limit
    return {
        MAIN: RateLimiter(MAIN, rl.per_minute, rl.window_seconds, rl.block_seconds, SYSTEM),
        KNOWLEDGE_BASE: RateLimiter(
            KNOWLEDGE_BASE, rl.knowledge_base_per_minute, rl.window_seconds, rl.knowledge_base_block_seconds, SYSTEM
        ),
    }


def connect(name: str, conn: EddyDeskConnection, transport: httpx.BaseTransport | None = None,
            limiters: dict[str, RateLimiter] | None = None) -> EddyDeskClient:
    """Build the account's client: Basic auth, one connection pool, one limiter per budget."""
    http = new_http_client(
        conn.base_url + "/",
        conn.timeout_seconds,
        conn.concurrency,
        headers={"Authorization": basic_auth_header(conn.email, conn.api_key(name)), "Accept": "application/json"},
        transport=transport,
    )
    backoff = Backoff(conn.retry.attempts, conn.retry.backoff_seconds, conn.retry.max_backoff_seconds)
    return EddyDeskClient(Session(SYSTEM, http, limiters or new_limiters(conn), backoff, parse_error))
