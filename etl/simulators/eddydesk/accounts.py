"""Many EddyDesk accounts behind one simulator process: each with its own credentials, data and
rate-limit budget, told apart by the Basic-auth e-mail of each request (as one helpdesk's host
serves one account, a request names its account by its user). A test or benchmark can then run
dozens of accounts without dozens of servers.

Every account is a whole simulator app (etl.simulators.eddydesk.app.build_app) of its own; this
one only routes. A request whose e-mail is no account's is refused like wrong credentials (401).
"""

from __future__ import annotations

import base64
import dataclasses
import threading
from typing import Any

import orjson

from etl.simulators.eddydesk.app import build_app
from etl.simulators.eddydesk.limits import Limits
from etl.simulators.eddydesk.store import HelpdeskState
from etl.simulators.http_server import AppServer

Scope = dict[str, Any]
_REFUSED = orjson.dumps({"errors": [{"code": "e-401", "title": "Unauthorized", "details": "Invalid e-mail or API key"}]})


def _email(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or ():
        if name == b"authorization" and value.startswith(b"Basic "):
            try:
                return base64.b64decode(value[6:]).decode().partition(":")[0]
            except (ValueError, UnicodeDecodeError):
                return None
    return None


class AccountsApp:
    """An ASGI app that hands each request to its account's simulator app."""

    def __init__(self, apps: dict[str, Any]) -> None:
        self.apps = apps  # admin e-mail -> that account's app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        app = self.apps.get(_email(scope) or "") if scope["type"] == "http" else None
        if app is None:
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": _REFUSED})
            return
        await app(scope, receive, send)


class AccountsServer(AppServer):
    """Running accounts on one loopback port; `url` is the API base every account shares."""

    def __init__(self, states: list[HelpdeskState], limits: Limits, latency: float = 0.0, port: int = 0) -> None:
        self.states = {s.admin_email: s for s in states}
        # each account its own Limits: its budget is its own, as on the real service
        self.account_apps = {s.admin_email: build_app(s, dataclasses.replace(limits, budgets={}, rejections=0,
                                                                             blocks=0, lock=threading.Lock()), latency)
                             for s in states}
        super().__init__(AccountsApp(self.account_apps), "/api/v2", port, "eddydesk-accounts")

    def limits(self, email: str) -> Limits:
        return self.account_apps[email].state.limits  # type: ignore[no-any-return]
