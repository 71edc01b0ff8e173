"""Serve a simulator's ASGI app over real HTTP on 127.0.0.1 (uvicorn), in a background thread
(tests, the demo) or in the foreground of its own process (`desksync simulate`, benchmarks)."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time
from typing import Any, Self

import uvicorn


async def answer_late(settings: dict[str, Any], key: str = "write_delay") -> None:
    """Hold a write's answer back while `settings[key]` asks for it (tests kill the client meanwhile);
    clearing the setting releases waiting answers, so a server stops without waiting them out."""
    deadline = time.monotonic() + float(settings.get(key) or 0)
    while settings.get(key) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def _config(app: Any) -> uvicorn.Config:
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    return uvicorn.Config(app, loop=loop, http="httptools", log_level="warning", access_log=False,
                          lifespan="off", timeout_keep_alive=30, backlog=2048)


class AppServer:
    """A running app on a loopback port; `url` is its API base (`base` + `api_path`)."""

    def __init__(self, app: Any, api_path: str, port: int = 0, name: str = "simulator") -> None:
        self.app = app
        self.name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}{api_path}"
        self.server = uvicorn.Server(_config(app))
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, name=self.name,
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start")
            time.sleep(0.01)
        return self

    def run_forever(self) -> None:
        # In a process of its own the generated store lives as long as the process: frozen, the
        # cycle collector no longer walks its millions of objects while requests wait.
        gc.collect()
        gc.freeze()
        self.server.run(sockets=[self.sock])

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread:
            self._thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
