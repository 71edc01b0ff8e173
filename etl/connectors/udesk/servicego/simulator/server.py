"""A ServiceGo simulator on 127.0.0.1 (see app.py for the readings of seed 004 it follows)."""

from __future__ import annotations

from typing import Any

import orjson

from etl.connectors.udesk.servicego.simulator.app import build_app
from etl.connectors.udesk.servicego.simulator.store import ServiceGoState
from etl.core.simulators.accounts import AccountsApp, signed_email
from etl.core.simulators.http_server import AppServer


class ServiceGoServer(AppServer):
    def __init__(self, state: ServiceGoState, latency: float = 0.0, per_minute: int | None = None,
                 port: int = 0, minute_seconds: float = 60.0) -> None:
        self.state = state
        super().__init__(build_app(state, latency, per_minute, minute_seconds), "/api", port, "servicego-simulator")

    @property
    def stats(self) -> dict[str, Any]:
        return self.app.state.stats  # type: ignore[no-any-return]

    def requests_to(self, endpoint: str) -> int:
        return int(self.stats["by_endpoint"].get(endpoint, 0))

    def queue_faults(self, *faults: str) -> None:
        self.app.state.settings["faults"].extend(faults)

    def start(self) -> ServiceGoServer:
        super().start()
        return self


class ServiceGoAccountsServer(AppServer):
    """Many ServiceGo accounts on one loopback port (etl.core.simulators.accounts), told apart by the
    administrator e-mail each signed request carries; each its own data, token and budget."""

    def __init__(self, states: list[ServiceGoState], latency: float = 0.0, per_minute: int | None = None,
                 port: int = 0, minute_seconds: float = 60.0) -> None:
        self.states = {s.email: s for s in states}
        self.account_apps = {s.email: build_app(s, latency, per_minute, minute_seconds) for s in states}
        refused = orjson.dumps({"code": 401, "message": "authentication failed: unknown administrator email",
                                "visible": False})
        super().__init__(AccountsApp(self.account_apps, signed_email, refused), "/api", port, "servicego-accounts")

    def stats(self, email: str) -> dict[str, Any]:
        return self.account_apps[email].state.stats  # type: ignore[no-any-return]
