"""A PostgreSQL session holding a process's locks can drop while its jobs go on (a restarted
server, an administrator's pg_terminate_backend, an idle timeout). Its locks are then gone and
another process may take the account: the run that held it stops sending and ends failed,
naming why, and the next run takes the lease again and ends exact. Sessions are really ended
by PostgreSQL (pg_terminate_backend), not simulated."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from etl.connectors.eddydesk.simulator.data import Sizes
from etl.core import log
from etl.core.config import JobConfig
from etl.core.errors import LeaseLost
from etl.core.mirror.db import open_engine
from etl.core.run import jobs, locks
from etl.core.run.locks import AdvisoryLocks, pg_session_holding
from etl.core.run.runner import JobRunner
from tests.mirror_check import assert_mirror_matches

SIZES = Sizes(tickets=600, users=40, organizations=5, kb_articles=5)


def _wait(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _end_session_holding(url: str, kind: str, name: str) -> None:
    """Ends the PostgreSQL session that holds the lock, as an administrator would."""
    engine = open_engine(url)
    try:
        with engine.begin() as conn:
            session = pg_session_holding(conn, kind, name)
            assert session is not None, f"no session holds the {kind} lock of {name}"
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": session[0]}).scalar()
    finally:
        engine.dispose()


def _taken_elsewhere(url: str, kind: str, name: str) -> AdvisoryLocks:
    """Another process's locks, once they hold the lock (the ended session's backend has exited)."""
    other = AdvisoryLocks(open_engine(url))
    _wait(lambda: other.try_acquire(kind, name), "the ended session to free its locks")
    return other


def test_a_lock_whose_session_ended_is_reported_lost_and_taken_elsewhere(pg_url: str) -> None:
    lost: list[tuple[str, str]] = []
    mine = AdvisoryLocks(open_engine(pg_url), lambda kind, name: lost.append((kind, name)))
    assert mine.try_acquire("job", "pull") and mine.try_acquire("account", "helpdesk")
    assert mine.check() == []  # both still held
    _end_session_holding(pg_url, "account", "helpdesk")
    other = _taken_elsewhere(pg_url, "account", "helpdesk")
    try:
        # before the watch has looked: the dead session is replaced, not raised into the caller
        assert mine.try_acquire("job", "push")
        assert sorted(mine.check()) == [("account", "helpdesk"), ("job", "pull")]
        assert sorted(lost) == [("account", "helpdesk"), ("job", "pull")]
        mine.release("account", "helpdesk")  # forgotten: it frees nothing of the new holder's
        assert not AdvisoryLocks(open_engine(pg_url)).try_acquire("account", "helpdesk")
        assert mine.try_acquire("job", "pull")  # on the new session
        assert mine.check() == []
    finally:
        other.close()
        mine.close()


def _lose_lease_mid_pull(pg_url: str, server: Any, monkeypatch: pytest.MonkeyPatch, run: Callable[[], Any]) -> Any:
    """Runs `run` in a thread; while one of its reads is held, ends its lease's session. Returns
    what `run` returned or raised, after checking that nothing was sent once the loss was seen."""
    monkeypatch.setattr(locks, "CHECK_SECONDS", 0.05)
    server.app.state.settings["read_delay"] = 60.0
    ended: list[Any] = []
    log.configure("info", json=True)  # the loss is an error event; the rest of the suite logs warnings only
    try:
        with capture_logs() as events:
            thread = threading.Thread(target=lambda: ended.append(_outcome(run)))
            thread.start()
            try:
                _wait(lambda: server.app.state.settings["reads_held"] > 0, "a pull's read to be held")
                _end_session_holding(pg_url, "account", "helpdesk")
                _wait(lambda: any(e["event"] == "lock_lost" and e.get("name") == "helpdesk" for e in events),
                      "the lease's loss to be seen")
                sent = _admitted(server)
            finally:
                server.app.state.settings["read_delay"] = 0.0  # the reads in flight are answered
                thread.join(120)
    finally:
        log.configure("warning", json=True)
    assert _admitted(server) == sent, "a request was sent after the lease was lost"
    assert 429 not in server.stats.by_status
    return ended[0]


def _admitted(server: Any) -> int:
    """Requests the simulator let through its rate limit (counted as they arrive, not as answered)."""
    return sum(sum(minutes.values()) for minutes in server.stats.admitted.values())


def _outcome(run: Callable[[], Any]) -> Any:
    try:
        return run()
    except Exception as exc:  # noqa: BLE001 - the test looks at what the run raised
        return exc


def _last_run(url: str) -> tuple[str, str]:
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT status, error FROM sync_runs ORDER BY id DESC LIMIT 1")).one()
    finally:
        engine.dispose()
    return row.status, row.error or ""


def test_a_run_by_hand_whose_lease_is_lost_stops_sending(pg_url, simulator, make_config, monkeypatch) -> None:
    server = simulator(SIZES)
    config = make_config(pg_url, server)
    raised = _lose_lease_mid_pull(pg_url, server, monkeypatch, lambda: jobs.sync(config, "helpdesk"))
    assert isinstance(raised, LeaseLost), raised
    assert "connection 'helpdesk': the database session holding this process's lease" in str(raised)
    status, error = _last_run(pg_url)
    assert status == "failed" and "lease" in error
    assert jobs.sync(config, "helpdesk").status == "ok"  # takes the lease again and finishes the scan
    assert_mirror_matches(open_engine(pg_url), server.state)


def test_a_scheduled_job_whose_lease_is_lost_fails_and_the_next_runs(pg_url, simulator, make_config,
                                                                     monkeypatch) -> None:
    server = simulator(SIZES)
    config = make_config(pg_url, server)
    runner = JobRunner(config, {"pull": JobConfig(connection="helpdesk", every_seconds=60)}, threading.Event())
    try:
        outcome = _lose_lease_mid_pull(pg_url, server, monkeypatch, lambda: runner.run("pull"))
        assert outcome.status == "failed", outcome
        assert "lease" in _last_run(pg_url)[1]
        # the runner's limiters are the account's for the process's life: the next job restores them
        assert runner.run("pull").status == "ok"
    finally:
        runner.close()
    assert_mirror_matches(open_engine(pg_url), server.state)
