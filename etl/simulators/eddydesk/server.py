"""Serve the simulator over real HTTP on 127.0.0.1: in a background thread (tests, demo) or in
the foreground of its own process (`desksync simulate`, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from etl.simulators.eddydesk.app import build_app
from etl.simulators.eddydesk.data import Sizes
from etl.simulators.eddydesk.limits import Limits
from etl.simulators.eddydesk.store import HelpdeskState


def _config(app: Any, sock: socket.socket) -> uvicorn.Config:
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    return uvicorn.Config(app, loop=loop, http="httptools", log_level="warning", access_log=False,
                          lifespan="off", timeout_keep_alive=30, backlog=2048)


class SimulatorServer:
    """A running simulator; `url` is its API base (…/api/v2)."""

    def __init__(self, state: HelpdeskState, limits: Limits | None = None, latency: float = 0.0,
                 port: int = 0) -> None:
        self.state = state
        self.app = build_app(state, limits, latency)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/api/v2"
        self.server = uvicorn.Server(_config(self.app, self.sock))
        self._thread: threading.Thread | None = None

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
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, name="eddydesk-simulator", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("simulator did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread:
            self._thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve_forever(sizes: Sizes, port: int, seed: int = 1, timezone: str = "Europe/Riga",
                  email: str = "admin@example.com", api_key: str = "sim-api-key", limits: Limits | None = None,
                  latency: float = 0.0, ready: Any = None) -> None:
    state = HelpdeskState(sizes, seed=seed, timezone=timezone, admin_email=email, admin_api_key=api_key)
    server = SimulatorServer(state, limits, latency, port)
    if ready is not None:
        ready(server)
    server.server.run(sockets=[server.sock])
