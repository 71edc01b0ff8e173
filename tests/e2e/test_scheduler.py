"""The scheduler as a real process (scheduler.py) against the simulators: catching up while remote
changes keep coming, no overlapping runs, several schedulers on one PostgreSQL mirror, graceful
stops, backoff and health."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from etl.connectors.eddydesk.simulator.data import Sizes
from etl.connectors.udesk.knowledge.simulator.store import Sizes as KnowledgeSizes
from etl.connectors.udesk.servicego.simulator.store import Sizes as ServiceGoSizes
from etl.core.mirror.base import table_of
from etl.core.mirror.db import open_engine
from etl.core.mirror.meta import SyncRun
from tests.conftest import (
    API_KEY_ENV,
    UDESK_TOKEN,
    UDESK_TOKEN_ENV,
    connection_settings,
    servicego_settings,
    write_config_file,
)
from tests.mirror_check import assert_mirror_matches
from tests.servicego_check import assert_servicego_matches

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, API_KEY_ENV: "sim-api-key", UDESK_TOKEN_ENV: UDESK_TOKEN}


def _config(path: Path, url: str, connections: dict[str, Any], jobs: dict[str, Any], **schedule: Any) -> Path:
    write_config_file(path, url, connections)
    import tomli_w

    extra: dict[str, Any] = {"jobs": jobs}
    if schedule:
        extra["schedule"] = schedule
    with path.open("a") as f:
        f.write("\n" + tomli_w.dumps(extra))
    return path


def _scheduler(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "scheduler.py", "--config", str(config)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _stop(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-3000:]
    return err.decode()


@dataclass(frozen=True)
class Run:
    job: str | None
    connection: str
    pid: int | None
    status: str
    started_at: datetime
    finished_at: datetime | None


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else (value if value.tzinfo else value.replace(tzinfo=UTC))


def _runs(engine: sa.Engine) -> list[Run]:
    t = table_of(SyncRun)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.job, t.c.connection, t.c.pid, t.c.status, t.c.started_at, t.c.finished_at)
                            .order_by(t.c.started_at)).all()
    return [Run(r.job, r.connection, r.pid, r.status, _utc(r.started_at), _utc(r.finished_at)) for r in rows]  # type: ignore[arg-type]


def _wait(predicate: Callable[[], bool], seconds: float, what: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"scheduler exited early: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if predicate():
                return
        except sa.exc.DBAPIError:
            pass  # the schema is being created, or SQLite is busy
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _assert_no_overlaps(runs: list[Any], key: Callable[[Any], Any]) -> None:
    by_key: dict[Any, list[Any]] = {}
    for run in runs:
        by_key.setdefault(key(run), []).append(run)
    for name, group in by_key.items():
        group.sort(key=lambda r: r.started_at)
        for before, after in zip(group, group[1:], strict=False):
            assert before.finished_at is not None and after.started_at >= before.finished_at, (
                f"{name}: a run started at {after.started_at} while the one from {before.started_at} ran")


def _ok_after(engine: sa.Engine, job: str, moment: datetime) -> bool:
    return any(r.job == job and r.status == "ok" and r.started_at > moment for r in _runs(engine))


def test_scheduler_catches_up_while_changes_keep_coming(db_url, simulator, servicego_sim, make_config, tmp_path):
    helpdesk = simulator(Sizes(tickets=400, users=100, organizations=10, kb_articles=20))
    records = servicego_sim(ServiceGoSizes(customers=100, contacts=300, cases=300))
    make_config(db_url, helpdesk)  # migrations
    config = _config(tmp_path / "desksync.toml", db_url,
                     {"helpdesk": connection_settings(helpdesk), "sg": servicego_settings(records)},
                     {"helpdesk_tickets": {"connection": "helpdesk", "streams": ["tickets"], "every_seconds": 1},
                      "helpdesk_all": {"connection": "helpdesk", "every_seconds": 2},
                      "servicego": {"connection": "sg", "every_seconds": 1}})
    engine = open_engine(db_url)
    proc = _scheduler(config)
    for round_ in range(8):
        time.sleep(0.7)
        helpdesk.state.random_changes(seed=round_, updates=10, creates=3, soft_deletes=1)
        records.state.random_changes(seed=round_, updates=10, creates=3, deletes=1)
    time.sleep(1.1)  # the changes' second is behind every run that starts now
    after_changes = datetime.now(UTC)
    for job in ("helpdesk_tickets", "helpdesk_all", "servicego"):
        _wait(functools.partial(_ok_after, engine, job, after_changes), 120, f"{job} to run after the last change", proc)
    _stop(proc)

    runs = _runs(engine)
    assert {r.job for r in runs} == {"helpdesk_tickets", "helpdesk_all", "servicego"}
    assert all(r.status in ("ok", "interrupted") for r in runs), [r.status for r in runs]
    # the 1-second job ran back to back while the changes kept coming, however long each run took
    # on this machine (a count of runs in a fixed time measured the machine instead)
    servicego = [r for r in runs if r.job == "servicego"]
    assert len(servicego) >= 3
    gaps = [later.started_at - (earlier.finished_at or later.started_at) for earlier, later in zip(servicego, servicego[1:], strict=False)]
    assert max(gaps) < timedelta(seconds=2.5), gaps
    _assert_no_overlaps(runs, key=lambda r: r.job)
    _assert_no_overlaps(runs, key=lambda r: r.connection)  # one account's jobs take turns
    assert_mirror_matches(engine, helpdesk.state, check_hard_deletes=False)
    assert_servicego_matches(engine, records.state)
    engine.dispose()


# several schedulers share a PostgreSQL mirror; SQLite takes one (tested below)
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_schedulers_on_one_postgresql_never_run_a_job_twice_at_once(db_url, simulator, servicego_sim,
                                                                        make_config, tmp_path):
    helpdesk = simulator(Sizes(tickets=300, users=50, organizations=5, kb_articles=10))
    records = servicego_sim(ServiceGoSizes(customers=50, contacts=200, cases=200))
    make_config(db_url, helpdesk)
    config = _config(tmp_path / "desksync.toml", db_url,
                     {"helpdesk": connection_settings(helpdesk), "sg": servicego_settings(records)},
                     {"tickets": {"connection": "helpdesk", "streams": ["tickets"], "every_seconds": 1},
                      "users": {"connection": "helpdesk", "streams": ["users"], "every_seconds": 1},
                      "servicego": {"connection": "sg", "every_seconds": 1}})
    engine = open_engine(db_url)
    first, second = _scheduler(config), _scheduler(config)
    for round_ in range(10):
        time.sleep(0.8)
        records.state.random_changes(seed=round_, updates=5, creates=1, deletes=0)
    logs = _stop(first) + _stop(second)
    runs = _runs(engine)
    assert {r.job for r in runs if r.status == "ok"} == {"tickets", "users", "servicego"}
    assert logs.count("scheduler_started") == 2
    # both took part: each ran jobs, or one found the other's locks taken
    assert len({r.pid for r in runs}) == 2 or "job_skipped" in logs
    _assert_no_overlaps(runs, key=lambda r: r.job)
    _assert_no_overlaps(runs, key=lambda r: r.connection)  # and never spent one account's budget together
    engine.dispose()


def test_sigterm_during_a_large_pull_then_restart_is_exact(sqlite_url, simulator, make_config, tmp_path):
    server = simulator(Sizes(tickets=3_000, users=200, organizations=20, kb_articles=20), latency=0.003)
    make_config(sqlite_url, server)
    config = _config(tmp_path / "desksync.toml", sqlite_url, {"helpdesk": connection_settings(server, concurrency=4)},
                     {"helpdesk": {"connection": "helpdesk", "every_seconds": 3600}})
    engine = open_engine(sqlite_url)
    # Slower answers while the stop is aimed: the 100 ticket pages then take over a second
    # however fast the machine, so the stop lands inside the ticket scan (unslowed, a blink)
    server.set_latency(0.05)
    proc = _scheduler(config)

    def tickets() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM eddydesk_tickets")).scalar_one())

    _wait(lambda: tickets() >= 900, 120, "the pull to be under way", proc)
    _stop(proc)
    assert tickets() < 3_000
    assert [r.status for r in _runs(engine)] == ["interrupted"]
    server.set_latency(0.003)

    restarted = _scheduler(config)
    _wait(lambda: any(r.status == "ok" for r in _runs(engine)), 180, "the resumed pull", restarted)
    _stop(restarted)
    assert_mirror_matches(engine, server.state)
    engine.dispose()


def test_a_second_scheduler_on_one_sqlite_file_refuses_to_start(sqlite_url, simulator, make_config, tmp_path):
    server = simulator(Sizes(tickets=50, users=10, organizations=2, kb_articles=2))
    make_config(sqlite_url, server)
    config = _config(tmp_path / "desksync.toml", sqlite_url, {"helpdesk": connection_settings(server)},
                     {"helpdesk": {"connection": "helpdesk", "every_seconds": 60}})
    first = _scheduler(config)
    engine = open_engine(sqlite_url)
    _wait(lambda: bool(_runs(engine)), 60, "the first scheduler to run", first)
    second = _scheduler(config)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 2
    assert "another desksync scheduler" in err.decode() and "SQLite takes one scheduler per file" in err.decode()
    _stop(first)


def test_a_failing_job_backs_off_while_the_others_go_on(sqlite_url, simulator, make_config, tmp_path):
    server = simulator(Sizes(tickets=50, users=10, organizations=2, kb_articles=2))
    make_config(sqlite_url, server)
    broken = connection_settings(server, api_key_env="DESKSYNC_TEST_WRONG_KEY")
    config = _config(tmp_path / "desksync.toml", sqlite_url, {"helpdesk": connection_settings(server), "broken": broken},
                     {"good": {"connection": "helpdesk", "streams": ["tickets"], "every_seconds": 0.5},
                      "bad": {"connection": "broken", "streams": ["tickets"], "every_seconds": 0.5,
                              "max_lag_minutes": 5}},
                     failure_backoff_seconds=1.0, max_consecutive_failures=2)
    env_key = "DESKSYNC_TEST_WRONG_KEY"
    os.environ[env_key] = "not-the-key"
    try:
        proc = subprocess.Popen([sys.executable, "scheduler.py", "--config", str(config)], cwd=ROOT,
                                env={**ENV, env_key: "not-the-key"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        engine = open_engine(sqlite_url)
        _wait(lambda: sum(r.job == "bad" and r.status == "failed" for r in _runs(engine)) >= 3, 60, "three failed runs",
              proc)
        _stop(proc)
        runs = _runs(engine)
        bad = [r for r in runs if r.job == "bad"]
        good = [r for r in runs if r.job == "good"]
        assert all(r.status == "failed" for r in bad[:3]) and all(r.status != "ok" for r in bad)
        with engine.connect() as conn:
            errors = conn.execute(sa.text("SELECT error FROM sync_runs WHERE job = 'bad' AND status = 'failed'")).scalars()
            assert all(error and "e-401" in error for error in errors), "a failed scheduled run records its error"
        # every 0.5 s, unless it backs off: 1 s after the first failure, 2 s after the second, ...
        gaps = [(b.started_at - a.started_at).total_seconds() for a, b in zip(bad, bad[1:], strict=False)]
        assert gaps == sorted(gaps) and gaps[0] >= 0.9 and gaps[1] >= 1.8, gaps
        assert len(good) > len(bad), "the good job must go on at its own pace"
        # the stop may catch the last good run midway: it ends "interrupted", not failed
        assert len(good) >= 6 and all(r.status == "ok" for r in good[:-1]), [r.status for r in good]
        assert good[-1].status in ("ok", "interrupted"), good[-1].status

        check = subprocess.run([sys.executable, "-m", "etl.cli", "--config", str(config), "status", "--check"],
                               cwd=ROOT, env=ENV, capture_output=True, text=True)
        assert check.returncode == 1
        assert "job bad: failed" in check.stderr and "times in a row" in check.stderr
        assert "job bad: never synced (max_lag_minutes = 5)" in check.stderr
        assert "job good" not in check.stderr
        engine.dispose()
    finally:
        os.environ.pop(env_key, None)


def test_a_scheduled_push_sends_local_edits_and_takes_turns_with_the_pull(sqlite_url, simulator, make_config, tmp_path):
    server = simulator(Sizes(tickets=60, users=10, organizations=2, kb_articles=2))
    make_config(sqlite_url, server)
    push = {"tickets": {"conflict_policy": "local_wins"}}
    config = _config(tmp_path / "desksync.toml", sqlite_url, {"helpdesk": connection_settings(server, push=push)},
                     {"pull": {"connection": "helpdesk", "every_seconds": 0.5},
                      "push": {"connection": "helpdesk", "kind": "push", "streams": ["tickets"], "every_seconds": 0.5}})
    engine = open_engine(sqlite_url)
    proc = _scheduler(config)
    _wait(lambda: _ok_after(engine, "pull", datetime(2000, 1, 1, tzinfo=UTC)), 60, "the first pull", proc)
    edited: list[int] = []
    for round_ in range(4):  # local edits while both jobs keep running
        ids = list(range(1 + round_ * 5, 6 + round_ * 5))
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE eddydesk_tickets SET title = 'Scheduled ' || id WHERE id IN ("
                                 + ", ".join(map(str, ids)) + ")"))
        edited += ids
        time.sleep(0.7)
    after_edits = datetime.now(UTC)
    _wait(lambda: _ok_after(engine, "push", after_edits), 60, "a push after the last edit", proc)
    _wait(lambda: _ok_after(engine, "pull", after_edits + timedelta(seconds=0.5)), 60, "a pull after that", proc)
    _stop(proc)

    assert all(server.state.tickets.records[i]["title"] == f"Scheduled {i}" for i in edited)
    t = table_of(SyncRun)
    with engine.connect() as conn:
        runs_of_push = conn.execute(sa.select(t.c.kind, t.c.status, t.c.rows_updated, t.c.requests)
                                    .where(t.c.job == "push")).all()
    # a push job pulls the tables it updates first (a run of kind sync), then pushes
    assert {p.kind for p in runs_of_push} == {"sync", "push"} and all(p.status == "ok" for p in runs_of_push)
    pushes = [p for p in runs_of_push if p.kind == "push"]
    assert sum(p.rows_updated for p in pushes) == len(edited), "each edit is sent once"
    assert sum(p.requests for p in pushes) == len(edited)
    runs = _runs(engine)
    _assert_no_overlaps(runs, key=lambda r: r.job)
    _assert_no_overlaps(runs, key=lambda r: r.connection)  # the push and the pull take turns
    assert_mirror_matches(engine, server.state, check_hard_deletes=False)
    engine.dispose()


def test_a_scheduled_pipeline_keeps_the_knowledge_migration_current(sqlite_url, simulator, knowledge_sim, make_config,
                                                                    tmp_path):
    from tests.e2e.test_pipelines import (
        EXAMPLE,
        HELPDESK_SIZES,
        assert_knowledge_migrated,
        example_connections,
        links,
    )

    helpdesk = simulator(HELPDESK_SIZES)
    knowledge = knowledge_sim(KnowledgeSizes(questions=4, expressions=1, links=1, attachments=1, entities=1))
    make_config(sqlite_url, helpdesk)  # migrations
    config = _config(tmp_path / "desksync.toml", sqlite_url, example_connections(helpdesk=helpdesk, knowledge=knowledge),
                     {"kb": {"connection": "helpdesk", "streams": ["kb_categories", "kb_articles"], "every_seconds": 0.5},
                      "migration": {"kind": "pipeline", "pipeline": "kb_to_knowledge", "every_seconds": 0.5}})
    import tomli_w

    with config.open("a") as f:
        f.write("\n" + tomli_w.dumps({"pipelines": {"kb_to_knowledge": EXAMPLE["pipelines"]["kb_to_knowledge"]}}))
    engine = open_engine(sqlite_url)
    proc = _scheduler(config)
    _wait(lambda: _ok_after(engine, "kb", datetime(2000, 1, 1, tzinfo=UTC)), 60, "the first pull", proc)
    first_pull = datetime.now(UTC)
    _wait(lambda: _ok_after(engine, "migration", first_pull), 60, "the migration of what it brought", proc)
    article = next(iter(helpdesk.state.kb_articles.records))
    helpdesk.state.update_article(article, title={"en": "Scheduled rename"})
    changed = datetime.now(UTC)
    _wait(lambda: _ok_after(engine, "kb", changed), 60, "a pull after the change", proc)
    pulled = datetime.now(UTC)
    _wait(lambda: _ok_after(engine, "migration", pulled), 60, "a pipeline run after that pull", proc)
    _stop(proc)

    assert_knowledge_migrated(sqlite_url, helpdesk, knowledge)
    t = table_of(SyncRun)
    with engine.connect() as conn:
        runs = conn.execute(sa.select(t.c.kind, t.c.status, t.c.connection, t.c.rows_inserted, t.c.rows_updated)
                            .where(t.c.job == "migration")).all()
    assert {(r.kind, r.connection) for r in runs} == {("pipeline", "knowledge")}
    assert all(r.status == "ok" for r in runs)
    assert sum(r.rows_inserted for r in runs) == len(links(sqlite_url, "categories")) + 30, "each record created once"
    assert sum(r.rows_updated for r in runs) == 1, "the renamed article is sent once"
    engine.dispose()


def test_at_start_only_overdue_jobs_run(sqlite_url, simulator, make_config, tmp_path):
    """A cron job whose time is hours away does not run because the scheduler started; one whose
    time passed a moment ago (within the misfire grace) and has not run since does, once."""
    server = simulator(Sizes(tickets=20, users=5, organizations=2, kb_articles=2))
    make_config(sqlite_url, server)
    now = datetime.now(UTC)
    far = f"{now.minute} {(now.hour + 12) % 24} * * *"
    just_missed = f"{now.minute} {now.hour} * * *"
    config = _config(tmp_path / "desksync.toml", sqlite_url, {"helpdesk": connection_settings(server)},
                     {"nightly": {"connection": "helpdesk", "streams": ["tickets"], "cron": far},
                      "missed": {"connection": "helpdesk", "streams": ["users"], "cron": just_missed},
                      "often": {"connection": "helpdesk", "streams": ["statuses"], "every_seconds": 0.5}},
                     misfire_grace_seconds=300)
    proc = _scheduler(config)
    engine = open_engine(sqlite_url)
    _wait(lambda: any(r.job == "missed" and r.status == "ok" for r in _runs(engine)), 60, "the missed job", proc)
    _wait(lambda: sum(r.job == "often" and r.status == "ok" for r in _runs(engine)) >= 4, 60, "four interval runs", proc)
    _stop(proc)
    runs = _runs(engine)
    assert not [r for r in runs if r.job == "nightly"], "a cron job that is not due must not run at start-up"
    assert sum(r.job == "missed" for r in runs) == 1
    engine.dispose()
