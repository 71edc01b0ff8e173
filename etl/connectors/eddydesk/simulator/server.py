"""Serve the simulator over real HTTP on 127.0.0.1: in a background thread (tests, demo) or in
the foreground of its own process (`desksync simulate`, benchmarks)."""

from __future__ import annotations

from typing import Any

from etl.connectors.eddydesk.simulator.app import build_app
from etl.connectors.eddydesk.simulator.data import Sizes
from etl.connectors.eddydesk.simulator.limits import Limits
from etl.connectors.eddydesk.simulator.store import HelpdeskState
from etl.core.simulators.http_server import AppServer


class SimulatorServer(AppServer):
    """A running EddyDesk simulator; `url` is its API base (…/api/v2)."""

    def __init__(self, state: HelpdeskState, limits: Limits | None = None, latency: float = 0.0,
                 port: int = 0) -> None:
        self.state = state
        super().__init__(build_app(state, limits, latency), "/api/v2", port, "eddydesk-simulator")

    @property
    def stats(self) -> Any:
        return self.app.state.stats

    @property
    def limits(self) -> Limits:
        return self.app.state.limits  # type: ignore[no-any-return]

    def queue_fault(self, kind: str, count: int, path: str = "", **extra: Any) -> None:
        self.app.state.faults.queue.append({"kind": kind, "count": count, "path": path, **extra})

    def set_latency(self, seconds: float) -> None:
        self.app.state.settings["latency"] = seconds

    def start(self) -> SimulatorServer:
        super().start()
        return self

    def __enter__(self) -> SimulatorServer:
        return self.start()


def serve_forever(sizes: Sizes, port: int, seed: int = 1, timezone: str = "Europe/Riga",
                  email: str = "admin@example.com", api_key: str = "sim-api-key", limits: Limits | None = None,
                  latency: float = 0.0, ready: Any = None) -> None:
    state = HelpdeskState(sizes, seed=seed, timezone=timezone, admin_email=email, admin_api_key=api_key)
    server = SimulatorServer(state, limits, latency, port)
    if ready is not None:
        ready(server)
    server.run_forever()
