"""Many EddyDesk accounts behind one simulator process (etl.core.simulators.accounts), told apart by
the Basic-auth e-mail of each request, as one helpdesk's host serves one account and a request
names its account by its user. Each account has its own credentials, data and rate budget.
"""

from __future__ import annotations

import dataclasses
import threading

import orjson

from etl.connectors.eddydesk.simulator.app import build_app
from etl.connectors.eddydesk.simulator.limits import Limits
from etl.connectors.eddydesk.simulator.store import HelpdeskState
from etl.core.simulators.accounts import AccountsApp, basic_auth_email
from etl.core.simulators.http_server import AppServer

_REFUSED = orjson.dumps({"errors": [{"code": "e-401", "title": "Unauthorized", "details": "Invalid e-mail or API key"}]})


class AccountsServer(AppServer):
    """Running accounts on one loopback port; `url` is the API base every account shares."""

    def __init__(self, states: list[HelpdeskState], limits: Limits, latency: float = 0.0, port: int = 0) -> None:
        self.states = {s.admin_email: s for s in states}
        # each account its own Limits: its budget is its own, as on the real service
        self.account_apps = {s.admin_email: build_app(s, dataclasses.replace(limits, budgets={}, rejections=0,
                                                                             blocks=0, lock=threading.Lock()), latency)
                             for s in states}
        super().__init__(AccountsApp(self.account_apps, basic_auth_email, _REFUSED), "/api/v2", port,
                         "eddydesk-accounts")

    def limits(self, email: str) -> Limits:
        return self.account_apps[email].state.limits  # type: ignore[no-any-return]
