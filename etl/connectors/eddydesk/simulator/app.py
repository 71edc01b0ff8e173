"""The EddyDesk API v2 simulator as an ASGI app (seed 003's endpoints plus a test API).

Answers follow the docs' examples, quirks included: "data" is an object keyed by id for tickets,
custom fields, audit and the knowledge base and an array elsewhere (an empty keyed list is
answered as [] the way PHP encodes an empty array); pagination.total is a string for
organizations and audit; the ticket list spells the client's name "username", the single ticket
"user_name"; users carry their api_key. Page sizes: 30, options 50, articles 10. Dates in
from_/to_ filters are inclusive and must look like "2017-12-31 00:00:00"; records with equal
sort keys are ordered by id. Writes (creates, updates, deletes) follow the readings in
`writes.py` (bodies in `forms.py`, paths in `routes.py`). The test API lives under /_sim/ and needs no credentials.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from etl.connectors.eddydesk.simulator.forms import Refused, parse_form
from etl.connectors.eddydesk.simulator.limits import Limits
from etl.connectors.eddydesk.simulator.listing import (
    BadRequest,
    ListSpec,
    Record,
    envelope,
    errors_body,
    int_param,
    kb_predicates,
    list_plain,
    list_records,
    organization_predicates,
    status_log_wanted,
    ticket_predicates,
    user_predicates,
)
from etl.connectors.eddydesk.simulator.routes import dispatch
from etl.connectors.eddydesk.simulator.store import HelpdeskState
from etl.connectors.eddydesk.simulator.writes import HelpdeskWrites
from etl.core.simulators.http_server import answer_late
from etl.core.simulators.kept_json import kept_json


class NotFound(Exception):
    def __init__(self, details: str, code: str = "e-404", title: str = "Not found") -> None:
        self.details, self.code, self.title = details, code, title


@dataclass
class Faults:
    """Failures queued by tests: the next `count` requests (matching `path`) fail this way."""

    queue: list[dict[str, Any]] = field(default_factory=list)

    def take(self, path: str) -> dict[str, Any] | None:
        for fault in self.queue:
            if fault.get("path", "") in path:
                fault["count"] -= 1
                if fault["count"] <= 0:
                    self.queue.remove(fault)
                return fault
        return None


@dataclass
class Stats:
    requests: int = 0
    by_endpoint: dict[str, int] = field(default_factory=dict)
    by_status: dict[int, int] = field(default_factory=dict)
    # requests each budget admitted, by wall-clock second: a benchmark reads a budget's use over any span
    admitted: dict[str, dict[int, int]] = field(default_factory=dict)

    def admit(self, budget: str) -> None:
        second = int(time.time())
        per_second = self.admitted.setdefault(budget, {})
        per_second[second] = per_second.get(second, 0) + 1

    def count(self, endpoint: str, status: int) -> None:
        self.requests += 1
        self.by_endpoint[endpoint] = self.by_endpoint.get(endpoint, 0) + 1
        self.by_status[status] = self.by_status.get(status, 0) + 1




































def build_app(state: HelpdeskState, limits: Limits | None = None, latency: float = 0.0) -> Starlette:
    limits = limits or Limits()
    faults = Faults()
    stats = Stats()
    settings = {"latency": latency, "write_delay": 0.0, "read_delay": 0.0, "reads_held": 0}
    accounts = {state.admin_email: state.admin_api_key}

    def dump_list_ticket(record: Record) -> bytes:
        return kept_json(record)

    def dump_single_ticket(record: Record) -> bytes:
        out = dict(record)
        out["user_name"] = out.pop("username", None)
        return orjson.dumps(out)  # sent once, not cached: no copy needed

    specs = {
        "tickets": ListSpec(state.tickets, 30, ("date_created", "date_updated", "viewed_by_staff", "viewed_by_client"),
                            "date_created{desc}", keyed=True,
                            partition=lambda p: int_param(p, "deleted", 0), predicates=ticket_predicates,
                            dump=dump_list_ticket),
        "users": ListSpec(state.users, 30, ("date_created", "date_updated", "name"), "name{asc}",
                          predicates=user_predicates),
        "organizations": ListSpec(state.organizations, 30, ("date_created", "date_updated", "name"), "name{asc}",
                                  total_as_string=True, predicates=organization_predicates),
        "categories": ListSpec(state.kb_categories, 30, ("date_created", "date_updated", "position"), "position{asc}",
                               keyed=True, predicates=lambda p: kb_predicates(p, "parent_list", "parent_id")),
        "articles": ListSpec(state.kb_articles, 10, ("date_created", "date_updated", "views", "pin"), "date_created{desc}",
                             keyed=True, predicates=lambda p: kb_predicates(p, "category_list", "categories")),
    }
    single = {"tickets": (state.tickets, "Ticket", dump_single_ticket), "users": (state.users, "User", None),
              "organizations": (state.organizations, "Organization", None)}
    field_scopes = {("custom_fields",): "ticket", ("users", "custom_fields"): "user",
                    ("organizations", "custom_fields"): "organization"}

    def route(parts: list[str], params: Any) -> tuple[str, bytes]:
        head = parts[0] if parts else ""
        n = len(parts)
        if n == 1 and head in state.reference:
            return head, envelope([(r["id"], orjson.dumps(r)) for r in state.reference[head]], False, None)
        if tuple(parts[:2]) in field_scopes or tuple(parts[:1]) in field_scopes:
            key = tuple(parts[:2]) if tuple(parts[:2]) in field_scopes else tuple(parts[:1])
            scope, rest = field_scopes[key], parts[len(key):]
            fields = state.fields[scope]
            if not rest:
                return f"{scope}_custom_fields", list_plain(fields, 30, params, keyed=True)
            fid = _int(rest[0])
            field_ = next((f for f in fields if f["id"] == fid), None)
            if field_ is None:
                raise NotFound(f"Field with id {{{rest[0]}}} does not exist")
            if len(rest) == 1:
                return f"{scope}_custom_field", envelope([(fid, orjson.dumps(field_))], True, None)
            if rest[1:] == ["options"] and field_["field_type"] in ("select", "hierarchy"):
                return f"{scope}_options", list_plain(state.options[scope][fid], 50, params)
            raise NotFound("Options are available only for select and hierarchy fields")
        with state.lock:
            if head == "knowledge_base" and n == 2 and parts[1] in ("categories", "articles"):
                return f"kb_{parts[1]}", list_records(specs[parts[1]], params)
            if n == 1 and head in specs:
                return head, list_records(specs[head], params)
            if n >= 2 and head in single:
                coll, label, dump = single[head]
                rid = _int(parts[1])
                record = coll.get(rid)
                if record is None:
                    raise NotFound(f"{label} with id {{{parts[1]}}} does not exist")
                if n == 2:
                    return head[:-1], b'{"data":' + (dump(record) if dump else orjson.dumps(record)) + b"}"
                child = parts[2]
                lists: dict[tuple[str, str], tuple[Callable[[int], list[Record]], bool, bool]] = {
                    ("tickets", "posts"): (state.posts, False, False),
                    ("tickets", "comments"): (state.comments, False, False),
                    ("tickets", "audit"): (state.audit, True, True),
                    ("tickets", "billing"): (state.billing, False, False),
                    ("users", "notes"): (state.user_notes, False, False),
                    ("organizations", "notes"): (state.organization_notes, False, False),
                }
                if n == 3 and (head, child) == ("users", "statuses_log"):
                    entries = [e for e in state.status_log(rid) if status_log_wanted(e, params)]
                    return "users_statuses_log", list_plain(entries, 30, params)
                if n == 3 and (head, child) in lists:
                    fetch, keyed, as_string = lists[(head, child)]
                    return f"{head}_{child}", list_plain(fetch(rid), 30, params, keyed=keyed, total_as_string=as_string,
                                                         keys=lambda i, r: i)
        raise NotFound("Unknown API method")

    writes = HelpdeskWrites(state)

    def write(method: str, parts: list[str], raw: bytes, content_type: str, params: Any) -> tuple[str, bytes]:
        if "json" in content_type:
            try:
                body = orjson.loads(raw or b"{}")
            except orjson.JSONDecodeError:
                raise BadRequest("Request body is not valid JSON") from None
            if not isinstance(body, dict):
                raise BadRequest("Request body must be a JSON object")
        else:
            body = parse_form(raw)
        endpoint, record = dispatch(writes, method, parts, body, NotFound, params)
        if endpoint == "POST tickets" or endpoint == "PUT tickets":
            return endpoint, b'{"data":' + dump_single_ticket(record) + b"}"
        if endpoint.startswith("DELETE"):
            return endpoint, orjson.dumps(record)  # the docs' own answer: an "errors" list with s-204
        return endpoint, orjson.dumps({"data": record})

    def _int(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise NotFound(f"Record with id {{{text}}} does not exist") from None

    def respond(body: bytes, status: int, headers: dict[str, str] | None = None) -> Response:
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    async def api(request: Request) -> Response:
        path = request.url.path[len("/api/v2/"):].strip("/")
        parts = [p for p in path.split("/") if p]
        budget = "knowledge_base" if parts[:1] == ["knowledge_base"] else "main"
        fault = faults.take(request.url.path)
        if fault is not None:
            kind = fault["kind"]
            stats.count("fault", 599)
            if kind == "html":
                return Response(b"<html><body><h1>502 Bad Gateway</h1></body></html>", 502, media_type="text/html")
            if kind == "500":
                return respond(errors_body("e-500", "Internal server error", "Try again later"), 500)
            if kind == "slow":
                await asyncio.sleep(float(fault.get("seconds", 5)))
        account = _account(request, accounts)
        if account is None:
            stats.count("unauthorized", 401)
            return respond(errors_body("e-401", "Unauthorized", "Invalid e-mail or API key"), 401)
        allowed, limit, remaining = limits.admit(account, budget)
        headers = {} if limit is None else {"X-Rate-Limit": str(limit), "X-Rate-Limit-Remaining": str(remaining)}
        if not allowed:
            stats.count("rate_limited", 429)
            return respond(errors_body("e-429", "Too many requests", "Rate limit exceeded, access is blocked"), 429, headers)
        stats.admit(budget)
        if settings["latency"]:
            await asyncio.sleep(settings["latency"])
        try:
            if request.method != "GET":
                endpoint, body = write(request.method, parts, await request.body(),
                                       request.headers.get("content-type", ""), request.query_params)
                await answer_late(settings)  # tests: the write is done, its answer is late
            else:
                if settings["read_delay"]:  # tests: a pull held on its page
                    settings["reads_held"] += 1
                    try:
                        await answer_late(settings, "read_delay")
                    finally:
                        settings["reads_held"] -= 1
                endpoint, body = route(parts, request.query_params)
        except Refused as exc:
            stats.count("bad_request", 400)
            return respond(orjson.dumps({"errors": [
                {"code": "e-411", "title": d[0], "details": d[1]} if isinstance(d, tuple)
                else {"code": "e-411", "title": "Bad request", "details": d} for d in exc.details]}), 400, headers)
        except BadRequest as exc:
            stats.count("bad_request", 400)
            return respond(errors_body("e-411", "Bad request", exc.details), 400, headers)
        except NotFound as exc:
            stats.count("not_found", 404)
            return respond(errors_body(exc.code, exc.title, exc.details), 404, headers)
        if fault is not None and fault["kind"] == "truncated":
            body = body[: max(1, len(body) // 2)]
        stats.count(endpoint, 200)
        return respond(body, 200, headers)

    async def sim_stats(request: Request) -> Response:
        return respond(orjson.dumps({
            "requests": stats.requests, "by_endpoint": stats.by_endpoint,
            "by_status": {str(k): v for k, v in stats.by_status.items()},
            "rate_limit_rejections": limits.rejections, "blocks": limits.blocks,
            "admitted_per_second": {budget: {str(k): v for k, v in seconds.items()}
                                    for budget, seconds in stats.admitted.items()},
        }), 200)

    async def sim_control(request: Request) -> Response:
        body = orjson.loads(await request.body() or b"{}")
        action = request.path_params["action"]
        if action == "faults":
            faults.queue.append(body)
        elif action == "latency":
            settings["latency"] = float(body["seconds"])
        elif action == "consume":
            limits.consume(state.admin_email, body.get("budget", "main"), int(body["count"]))
        elif action == "reset-stats":
            stats.__init__()  # type: ignore[misc]
            limits.rejections = limits.blocks = 0
        elif action == "mutate":
            return respond(orjson.dumps(state.random_changes(**body)), 200)
        else:
            return respond(errors_body("e-404", "Not found", f"unknown action {action}"), 404)
        return respond(b"{}", 200)

    app = Starlette(routes=[
        Route("/api/v2/{path:path}", api, methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/_sim/stats", sim_stats),
        Route("/_sim/{action}", sim_control, methods=["POST"]),
    ])
    app.state.helpdesk = state
    app.state.stats = stats
    app.state.limits = limits
    app.state.faults = faults
    app.state.settings = settings
    return app


def _account(request: Request, accounts: dict[str, str]) -> str | None:
    header = request.headers.get("authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        email, _, key = base64.b64decode(header[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return email if accounts.get(email) == key and key else None
