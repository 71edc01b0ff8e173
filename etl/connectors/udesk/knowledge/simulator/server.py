"""Udesk knowledge and KM simulator on 127.0.0.1: `url` is the knowledge open API's base
(…/open_api_v1), `km_url` the KM entity API's (…/api)."""

from __future__ import annotations

from typing import Any

from etl.connectors.udesk.knowledge.simulator.app import build_app
from etl.connectors.udesk.knowledge.simulator.store import KnowledgeState
from etl.core.simulators.http_server import AppServer


class KnowledgeServer(AppServer):
    def __init__(self, state: KnowledgeState, latency: float = 0.0, per_minute: int | None = None,
                 port: int = 0, minute_seconds: float = 60.0) -> None:
        self.state = state
        super().__init__(build_app(state, latency, per_minute, minute_seconds), "/open_api_v1", port, "udesk-knowledge-simulator")
        self.km_url = f"{self.base}/api"

    @property
    def stats(self) -> dict[str, Any]:
        return self.app.state.stats  # type: ignore[no-any-return]

    def start(self) -> KnowledgeServer:
        super().start()
        return self
