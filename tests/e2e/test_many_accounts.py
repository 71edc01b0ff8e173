"""Several accounts at once (four EddyDesk, two ServiceGo), each system's from one multi-account
simulator (etl.core.simulators.accounts) under a scaled-down rate limit, synced by one scheduler
process: accounts run side by side, one account's runs never overlap, no request is refused,
every mirror ends exact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from etl.config import parse_config
from etl.connectors.eddydesk.simulator.accounts import AccountsServer
from etl.connectors.eddydesk.simulator.data import Sizes
from etl.connectors.eddydesk.simulator.limits import Limits
from etl.connectors.eddydesk.simulator.store import HelpdeskState
from etl.connectors.udesk.servicego.simulator.server import ServiceGoAccountsServer
from etl.connectors.udesk.servicego.simulator.store import ServiceGoState
from etl.connectors.udesk.servicego.simulator.store import Sizes as ServiceGoSizes
from etl.core.mirror.db import open_engine
from etl.core.run import jobs
from tests.e2e.test_scheduler import _assert_no_overlaps, _config, _runs, _wait
from tests.mirror_check import assert_mirror_matches
from tests.servicego_check import assert_servicego_matches

ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS = 4
# 60 requests a one-second "minute" (20 for the knowledge base): every account is paced, on any machine
LIMITS = Limits(per_minute=60, knowledge_base_per_minute=20, minute_seconds=1.0)


def _eddydesk_accounts(count: int, sizes: Sizes) -> tuple[list[HelpdeskState], AccountsServer, dict[str, str],
                                                         dict[str, Any]]:
    """`count` EddyDesk accounts from one simulator: their states, the server, the environment
    with their keys, and their connections (acct0, acct1 …)."""
    states = [HelpdeskState(sizes, seed=n, admin_email=f"admin{n}@example.com", admin_api_key=f"key-{n}")
              for n in range(count)]
    server = AccountsServer(states, LIMITS).start()
    env = dict(os.environ)
    connections: dict[str, Any] = {}
    for n, state in enumerate(states):
        env[f"DESKSYNC_TEST_KEY_{n}"] = state.admin_api_key
        connections[f"acct{n}"] = {
            "system": "eddydesk", "base_url": server.url, "email": state.admin_email,
            "api_key_env": f"DESKSYNC_TEST_KEY_{n}", "timezone": "Europe/Riga", "lookback_seconds": 2,
            "retry": {"attempts": 4, "backoff_seconds": 0.01, "max_backoff_seconds": 0.05},
            "rate_limit": {"per_minute": 60, "knowledge_base_per_minute": 20, "window_seconds": 1.0}}
    return states, server, env, connections


def _schedule_until_each_ran_twice(config: Path, env: dict[str, str], names: list[str], engine: Any,
                                   tmp_path: Path) -> None:
    """Run scheduler.py until every connection of `names` has two good runs, then stop it. Many
    accounts log a lot: to a file, not a pipe nobody reads until the end (a full pipe stops the
    process)."""
    log = tmp_path / "scheduler.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "scheduler.py", "--config", str(config)], cwd=ROOT, env=env,
                                stdout=sink, stderr=sink)
    try:
        _wait(lambda: all(sum(r.connection == name and r.status == "ok" for r in _runs(engine)) >= 2
                          for name in names), 180, "two good runs of every account", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]


def test_accounts_sync_side_by_side_within_their_own_budgets(sqlite_url: str, tmp_path: Path) -> None:
    states, server, env, connections = _eddydesk_accounts(
        ACCOUNTS, Sizes(tickets=90, users=20, organizations=3, kb_categories=2, kb_articles=6))
    # and two ServiceGo accounts from one ServiceGo simulator, at 60 requests a one-second minute
    udesk = [ServiceGoState(ServiceGoSizes(customers=60, contacts=120, cases=120), seed=n, email=f"sg{n}@udesk.cn",
                            api_token=f"{n}21b368d7f5f597867f525971f28ff7") for n in range(2)]
    servicego = ServiceGoAccountsServer(udesk, per_minute=60, minute_seconds=1.0).start()
    for n, state in enumerate(udesk):
        env[f"DESKSYNC_TEST_SG_TOKEN_{n}"] = state.api_token
        connections[f"sg{n}"] = {
            "system": "servicego", "base_url": servicego.url, "email": state.email,
            "api_token_env": f"DESKSYNC_TEST_SG_TOKEN_{n}", "objects": [{"name": "customer"}, {"name": "contact"},
                                                                        {"name": "case"}],
            "retry": {"attempts": 4, "backoff_seconds": 0.01, "max_backoff_seconds": 0.05},
            "rate_limit": {"per_minute": 60, "window_seconds": 1.0}}
    names = [*(f"acct{n}" for n in range(ACCOUNTS)), "sg0", "sg1"]
    jobs.init(parse_config({"mirror": {"url": sqlite_url}, "connections": connections}, base_dir=tmp_path))
    config = _config(tmp_path / "desksync.toml", sqlite_url, connections,
                     {f"pull_{name}": {"connection": name, "every_seconds": 2} for name in names})
    engine = open_engine(sqlite_url)
    try:
        _schedule_until_each_ran_twice(config, env, names, engine, tmp_path)
    finally:
        server.server.should_exit = True
        servicego.server.should_exit = True
    runs = [r for r in _runs(engine) if r.status != "interrupted"]
    assert all(r.status == "ok" for r in runs), [(r.connection, r.status) for r in runs]
    _assert_no_overlaps(runs, key=lambda r: r.connection)  # one account: one run at a time
    first = {n: next(r for r in runs if r.connection == f"acct{n}") for n in range(ACCOUNTS)}
    def overlap(a: Any, b: Any) -> bool:
        return bool(a.started_at < b.finished_at and b.started_at < a.finished_at)

    side_by_side = sum(1 for a in range(ACCOUNTS) for b in range(a + 1, ACCOUNTS) if overlap(first[a], first[b]))
    assert side_by_side > 0, "the accounts' backfills ran at the same time, not one after another"
    for n, helpdesk_state in enumerate(states):
        assert server.limits(helpdesk_state.admin_email).rejections == 0, f"acct{n} was refused"
        assert_mirror_matches(engine, helpdesk_state, connection=f"acct{n}")
    for n, sg_state in enumerate(udesk):
        stats = servicego.stats(sg_state.email)
        assert stats.get("rate_limited", 0) == 0 and stats["refused"] == 0, f"sg{n}: {stats}"
        assert_servicego_matches(engine, sg_state, connection=f"sg{n}")
    engine.dispose()


def test_runs_at_once_are_bounded_by_the_configuration(sqlite_url: str, tmp_path: Path) -> None:
    """`schedule.max_concurrent_runs = 1`: three accounts' runs take turns, and all are kept fresh."""
    states, server, env, connections = _eddydesk_accounts(
        3, Sizes(tickets=30, users=5, organizations=1, kb_categories=1, kb_articles=1))
    config = _config(tmp_path / "desksync.toml", sqlite_url, connections,
                     {f"pull_acct{n}": {"connection": f"acct{n}", "every_seconds": 1} for n in range(3)},
                     max_concurrent_runs=1)
    jobs.init(parse_config({"mirror": {"url": sqlite_url}, "connections": connections}, base_dir=tmp_path))
    engine = open_engine(sqlite_url)
    try:
        _schedule_until_each_ran_twice(config, env, list(connections), engine, tmp_path)
    finally:
        server.server.should_exit = True
    runs = [r for r in _runs(engine) if r.status != "interrupted"]
    _assert_no_overlaps(runs, key=lambda r: "all")  # one run at a time over all accounts
    for n, state in enumerate(states):
        assert_mirror_matches(engine, state, connection=f"acct{n}")
    engine.dispose()
