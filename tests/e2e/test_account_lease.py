"""One process per account at a time: a run by hand while another process (a scheduler's job,
another command) holds the account is refused before it sends a request, and a killed holder
frees the account at once. Holders are real processes, killed with SIGKILL."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from etl.cli import main
from etl.connectors.eddydesk.simulator.data import Sizes
from etl.core.config import JobConfig
from etl.core.errors import AccountBusy
from etl.core.http.ratelimit import RateLimiter
from etl.core.mirror.base import table_of
from etl.core.mirror.db import open_engine
from etl.core.mirror.meta import AccountSends, SyncRun
from etl.core.run import jobs
from etl.core.run.records import this_process
from etl.core.run.schedule import Runner
from tests.conftest import connection_settings, write_config_file

ROOT = Path(__file__).resolve().parents[2]
SMALL = Sizes(tickets=20, users=5, organizations=2, kb_articles=2)
HOLD = """
import sys, time
from etl.core.run.locks import account_lease
from etl.core.mirror.db import open_engine
with account_lease(open_engine(sys.argv[1]), sys.argv[2], lambda: None):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(url: str, connection: str) -> subprocess.Popen[str]:
    """Another process holding `connection`'s account until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, url, connection], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "held", proc.stderr.read() if proc.stderr else line
    return proc


def _runs(url: str) -> int:
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(table_of(SyncRun))).scalar_one()
    finally:
        engine.dispose()


def _sync_once_freed(config, connection: str, limiters: dict[str, RateLimiter] | None = None) -> jobs.SyncSummary:
    # PostgreSQL ends a killed client's session as soon as it sees the closed socket
    deadline = time.monotonic() + 10
    while True:
        try:
            return jobs.sync(config, connection, limiters=limiters)
        except AccountBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_run_by_hand_is_refused_while_another_process_holds_the_account(db_url, simulator, make_config, tmp_path):
    server = simulator(SMALL)
    config = make_config(db_url, server, push={"tickets": {}})
    other = make_config(db_url, server, name="other", init=False)
    holder = _holder(db_url, "helpdesk")
    try:
        with pytest.raises(AccountBusy) as refused:
            jobs.sync(config, "helpdesk")
        message = str(refused.value)
        assert "connection 'helpdesk' is in use by another desksync process" in message
        assert "risk a block" in message
        # the holder is named: its pid beside a SQLite file, its session on PostgreSQL
        assert (f"pid {holder.pid}" if db_url.startswith("sqlite") else "PostgreSQL session") in message
        with pytest.raises(AccountBusy):
            jobs.push(config, "helpdesk")
        path = write_config_file(tmp_path / "desksync.toml", db_url, {"helpdesk": connection_settings(server)})
        typed = CliRunner().invoke(main, ["--config", str(path), "sync", "helpdesk"])
        assert typed.exit_code == 1 and "error: connection 'helpdesk' is in use by" in typed.output
        assert jobs.push(config, "helpdesk", dry_run=True).failed == 0  # reads only the mirror
        assert server.stats.requests == 0 and _runs(db_url) == 0  # refused before any request or run row
        # the lease is the account's, not the mirror's
        assert jobs.sync(other, "other").status == "ok"
        assert server.stats.requests > 0
    finally:
        holder.kill()
        holder.wait()
    assert _sync_once_freed(config, "helpdesk").status == "ok"


def test_a_scheduled_job_skips_its_turn_while_a_run_by_hand_holds_the_account(db_url, simulator, make_config):
    server = simulator(SMALL)
    config = make_config(db_url, server)
    runner = Runner(config, {"pull": JobConfig(connection="helpdesk", every_seconds=60)})
    try:
        holder = _holder(db_url, "helpdesk")
        try:
            runner.run_job("pull")
            assert server.stats.requests == 0 and _runs(db_url) == 0
        finally:
            holder.kill()
            holder.wait()
        deadline = time.monotonic() + 10
        while _runs(db_url) == 0 and time.monotonic() < deadline:
            runner.run_job("pull")
        assert _runs(db_url) == 1 and server.stats.requests > 0
        # and while a scheduler's job holds it, a run by hand is refused: one lease both ways
        assert runner.runner.locks.try_acquire("account", "helpdesk")
        try:
            with pytest.raises(AccountBusy):
                jobs.sync(config, "helpdesk")
        finally:
            runner.runner.locks.release("account", "helpdesk")
    finally:
        runner.shutdown()


def test_the_next_holder_of_an_account_counts_the_requests_the_last_one_sent(db_url, simulator, make_config, tmp_path):
    """A run in another process spends part of the account's minute; a run here right after it
    starts with those requests counted (etl.core.run.records.AccountUse), as a worker on
    another machine would: the lease passes, the budget's minute goes on."""
    server = simulator(SMALL)
    config = make_config(db_url, server)
    path = write_config_file(tmp_path / "desksync.toml", db_url, {"helpdesk": connection_settings(server)})
    other = subprocess.run([sys.executable, "-m", "etl.cli", "--config", str(path), "sync", "helpdesk"], cwd=ROOT,
                           env={**__import__("os").environ}, capture_output=True, timeout=120)
    assert other.returncode == 0, other.stderr.decode()[-2000:]
    first = server.stats.requests
    limiters = jobs.new_limiters(config.connection("helpdesk"))
    second = jobs.sync(config, "helpdesk", limiters=limiters)
    assert second.status == "ok" and second.requests > 0
    counted = sum(len(limiter.recent_sends()) for limiter in limiters.values())
    assert counted == first + second.requests  # all inside the budgets' minute


def test_a_holder_killed_mid_run_has_left_its_minute_for_the_next(db_url, simulator, make_config, tmp_path):
    """The sends are saved while a run goes on (every second), not only at its end: a holder
    killed with SIGKILL, which never reaches its end, has left them for the next holder."""
    server = simulator(SMALL)
    config = make_config(db_url, server)
    path = write_config_file(tmp_path / "desksync.toml", db_url, {"helpdesk": connection_settings(server)})
    engine = open_engine(db_url)
    sends = table_of(AccountSends)

    def saved_by_other() -> int:
        with engine.connect() as conn:
            return sum(len(sent) for sent in conn.execute(sa.select(sends.c.sent).where(
                sends.c.connection == "helpdesk", sends.c.holder != this_process())).scalars())

    server.app.state.settings["read_delay"] = 60.0  # the run holds on its reads: it cannot end
    other = subprocess.Popen([sys.executable, "-m", "etl.cli", "--config", str(path), "sync", "helpdesk"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while saved_by_other() == 0:
            assert time.monotonic() < deadline and other.poll() is None, "the running holder saved no sends"
            time.sleep(0.05)
        assert server.app.state.settings["reads_held"] > 0  # still in its first reads, far from its end
    finally:
        other.kill()
        other.wait()
        server.app.state.settings["read_delay"] = 0.0
    left = saved_by_other()
    limiters = jobs.new_limiters(config.connection("helpdesk"))
    assert _sync_once_freed(config, "helpdesk", limiters).status == "ok"
    counted = sum(len(limiter.recent_sends()) for limiter in limiters.values())
    assert counted >= left + 1  # the killed holder's requests, and this run's own
    engine.dispose()
