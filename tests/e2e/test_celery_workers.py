"""Jobs on Celery workers: one scheduler and two `desksync worker` processes, a real redis-server
broker and a real PostgreSQL mirror, against simulators of three accounts (EddyDesk, ServiceGo,
Udesk knowledge) under scaled-down rate limits (a one-second "minute").

Every mirror ends exact, no two runs of one account overlap (whichever worker ran them), no
request is refused, no job is lost; and a worker SIGKILLed in the middle of a pull, or of a push
whose creates are made remotely but not yet answered, has its task redelivered to the other
worker, which finishes it: the killed run is marked abandoned, nothing is created twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from etl.config import parse_config
from etl.connectors.eddydesk.simulator.data import Sizes
from etl.connectors.eddydesk.simulator.limits import Limits
from etl.connectors.eddydesk.simulator.server import SimulatorServer
from etl.connectors.udesk.knowledge.simulator.server import KnowledgeServer
from etl.connectors.udesk.knowledge.simulator.store import Sizes as KnowledgeSizes
from etl.connectors.udesk.servicego.simulator.server import ServiceGoServer
from etl.connectors.udesk.servicego.simulator.store import Sizes as ServiceGoSizes
from etl.core.mirror.db import open_engine
from etl.core.run import jobs
from tests.conftest import (
    API_KEY_ENV,
    UDESK_TOKEN,
    UDESK_TOKEN_ENV,
    connection_settings,
    knowledge_settings,
    servicego_settings,
)
from tests.e2e.test_scheduler import _assert_no_overlaps, _config, _runs, _wait
from tests.knowledge_check import assert_knowledge_matches
from tests.mirror_check import assert_mirror_matches
from tests.redis_server import redis_server
from tests.servicego_check import assert_servicego_matches

ROOT = Path(__file__).resolve().parents[2]
BROKER_ENV = "DESKSYNC_TEST_BROKER_URL"
# a one-second "minute": every account's budget binds, on any machine
LIMITS = Limits(per_minute=60, knowledge_base_per_minute=20, minute_seconds=1.0)
EXECUTOR = {"kind": "celery", "broker_url_env": BROKER_ENV, "busy_retry_seconds": 0.3,
            # a killed worker's task goes to the other one 4 s after its delivery
            "visibility_timeout_seconds": 4.0, "restore_interval_seconds": 0.5, "requeue_after_seconds": 300.0}
# where a worker is killed: a task whose message the kill lost is sent anew this soon (it must
# exceed the visibility timeout, after which a killed worker's recorded message is redelivered)
KILLED_REQUEUE_SECONDS = 8.0
PUSH = {"users": {"create_defaults": {"group_id": 1, "department": [1]}}, "organizations": {}}


@dataclass
class Cluster:
    """A scheduler and workers as real processes, each logging to its own file."""

    config: Path
    env: dict[str, str]
    logs: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)
    scheduler: subprocess.Popen[bytes] | None = None

    def _start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        # stderr holds the log lines; stdout only Celery's own word on a shutdown
        with (self.logs / f"{name}.log").open("wb") as log, (self.logs / f"{name}.out").open("wb") as out:
            return subprocess.Popen([sys.executable, "-m", "etl.cli", "--config", str(self.config), *args], cwd=ROOT,
                                    env=self.env, stdout=out, stderr=log)

    def start(self, workers: int = 2) -> None:
        self.workers = [self._start(f"worker{n}", "worker", "--concurrency", "2") for n in range(workers)]
        self.scheduler = self._start("scheduler", "schedule")

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def assert_logs_are_json(self) -> None:
        """Every line every process logged is JSON, Celery's and Python's warnings included (a
        worker run as root, as in CI, is warned by Celery)."""
        for path in sorted(self.logs.glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if line.strip():
                    assert isinstance(json.loads(line), dict), f"{path.name}: {line}"

    def stop(self) -> None:
        """SIGTERM to all (the scheduler first: it sends nothing more); each must exit cleanly."""
        procs = [p for p in (self.scheduler, *self.workers) if p is not None and p.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=120)

    def kill(self, pid: int) -> None:
        worker = next(w for w in self.workers if w.pid == pid)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        self.killed.add(pid)


@dataclass
class Accounts:
    helpdesk: SimulatorServer
    servicego: ServiceGoServer
    knowledge: KnowledgeServer
    connections: dict[str, Any]


@pytest.fixture
def accounts(simulator: Callable[..., SimulatorServer], servicego_sim: Callable[..., ServiceGoServer],
             knowledge_sim: Callable[..., KnowledgeServer]) -> Accounts:
    helpdesk = simulator(Sizes(tickets=90, users=20, organizations=4, kb_categories=2, kb_articles=4), limits=LIMITS)
    sg = servicego_sim(ServiceGoSizes(customers=40, contacts=80, cases=80), per_minute=60, minute_seconds=1.0)
    kb = knowledge_sim(KnowledgeSizes(questions=60, expressions=10, links=8, attachments=6, entities=5),
                       per_minute=60, minute_seconds=1.0)
    connections = {
        "helpdesk": connection_settings(helpdesk, push=PUSH, rate_limit={
            "per_minute": 60, "knowledge_base_per_minute": 20, "window_seconds": 1.0}),
        "sg": servicego_settings(sg, rate_limit={"per_minute": 60, "window_seconds": 1.0}),
        "kn": knowledge_settings(kb, rate_limit={"per_minute": 60, "window_seconds": 1.0}),
    }
    return Accounts(helpdesk, sg, kb, connections)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    with redis_server(tmp_path / "redis") as url:
        yield url


def _cluster(tmp_path: Path, pg_url: str, broker: str, accounts: Accounts, jobs_: dict[str, Any],
             **executor: Any) -> Cluster:
    config = _config(tmp_path / "desksync.toml", pg_url, accounts.connections, jobs_)
    with config.open("a") as f:
        import tomli_w

        f.write("\n" + tomli_w.dumps({"executor": {**EXECUTOR, **executor}}))
    jobs.init(parse_config({"mirror": {"url": pg_url}, "connections": accounts.connections}, base_dir=tmp_path))
    env = {**os.environ, API_KEY_ENV: "sim-api-key", UDESK_TOKEN_ENV: UDESK_TOKEN, BROKER_ENV: broker}
    logs = tmp_path / "logs"
    logs.mkdir()
    return Cluster(config, env, logs)


def _tasks(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT * FROM job_tasks ORDER BY queued_at")).mappings())


def _ok_runs(engine: sa.Engine, connection: str) -> int:
    return sum(r.connection == connection and r.status == "ok" for r in _runs(engine))


def _no_open_tasks(engine: sa.Engine) -> bool:
    return all(t["status"] not in ("queued", "running") for t in _tasks(engine))


def _finish(cluster: Cluster, engine: sa.Engine) -> None:
    """Stop the scheduler, let the workers drain what it sent, then stop them."""
    assert cluster.scheduler is not None
    cluster.scheduler.send_signal(signal.SIGTERM)
    assert cluster.scheduler.wait(timeout=60) == 0, cluster.log("scheduler")
    _wait(lambda: _no_open_tasks(engine), 60, "the workers to finish the queued tasks")
    cluster.stop()
    for n, worker in enumerate(cluster.workers):
        assert worker.pid in cluster.killed or worker.returncode == 0, cluster.log(f"worker{n}")
    cluster.assert_logs_are_json()


def _assert_exact(engine: sa.Engine, accounts: Accounts) -> None:
    assert_mirror_matches(engine, accounts.helpdesk.state)
    assert_servicego_matches(engine, accounts.servicego.state)
    assert_knowledge_matches(engine, accounts.knowledge.state)
    assert accounts.helpdesk.limits.rejections == 0
    for server in (accounts.servicego, accounts.knowledge):
        assert server.stats.get("rate_limited", 0) == 0, server.stats


def _assert_no_job_lost(engine: sa.Engine) -> None:
    """Every task the scheduler queued ran to done, each by a run of its own in the history; or
    its message was lost by the broker, and the scheduler gave it up and sent the job anew, and
    a later task of that job is done."""
    tasks = _tasks(engine)
    assert tasks and all(t["status"] in ("done", "lost") for t in tasks), [(t["job"], t["status"], t["note"]) for t in tasks]
    for lost in (t for t in tasks if t["status"] == "lost"):
        assert "sent anew" in lost["note"] and any(
            t["job"] == lost["job"] and t["status"] == "done" and t["queued_at"] > lost["queued_at"] for t in tasks)
    with engine.connect() as conn:
        ran = set(conn.execute(sa.text("SELECT DISTINCT task_id FROM sync_runs WHERE task_id IS NOT NULL")).scalars())
    assert {t["task_id"] for t in tasks if t["status"] == "done"} <= ran


def _settle_after_kill(engine: sa.Engine) -> None:
    """With the scheduler still running, wait until every task queued before now is closed. A
    SIGKILL can land between the broker handing a worker a message and the worker recording it
    as unacknowledged (kombu's Redis transport): that message is gone, and its task is given up
    and sent anew by the scheduler after `requeue_after_seconds` (short in these tests)."""
    mark = max(t["queued_at"] for t in _tasks(engine))
    _wait(lambda: all(t["status"] in ("done", "lost") for t in _tasks(engine) if t["queued_at"] <= mark), 120,
          "every task queued before the kill to be done, or given up and sent anew")


def test_two_workers_keep_three_accounts_exact_over_several_cycles(pg_url, broker, accounts, tmp_path):
    cluster = _cluster(tmp_path, pg_url, broker, accounts,
                       {f"pull_{name}": {"connection": name, "every_seconds": 1} for name in accounts.connections})
    engine = open_engine(pg_url)
    cluster.start()
    try:
        _wait(lambda: all(_ok_runs(engine, name) >= 1 for name in accounts.connections), 180,
              "a first good run of every account")
        accounts.helpdesk.state.random_changes(seed=5, updates=10, creates=4, soft_deletes=2)
        accounts.servicego.state.random_changes(seed=5, updates=8, creates=3, deletes=2)
        accounts.knowledge.state.random_changes(seed=5, updates=6, creates=3, deletes=2)
        counts = {name: _ok_runs(engine, name) for name in accounts.connections}
        _wait(lambda: all(_ok_runs(engine, name) >= counts[name] + 3 for name in accounts.connections), 180,
              "three more cycles of every account")
        _finish(cluster, engine)
    finally:
        cluster.stop()
    runs = [r for r in _runs(engine) if r.status != "interrupted"]
    assert all(r.status == "ok" for r in runs), [(r.job, r.status) for r in runs]
    _assert_no_overlaps(runs, key=lambda r: r.connection)
    assert len({r.pid for r in runs}) == 2, "both workers ran jobs"
    _assert_no_job_lost(engine)
    _assert_exact(engine, accounts)
    engine.dispose()


def _running_run(engine: sa.Engine, connection: str, kind: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT * FROM sync_runs WHERE connection = :c AND kind = :k AND status = 'running'"),
                            {"c": connection, "k": kind}).mappings().first()


def _count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def _assert_redelivered(engine: sa.Engine, killed: Any) -> None:
    """The killed run is marked abandoned; its task ran again (one delivery more) and is done."""
    with engine.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM sync_runs WHERE id = :i"), {"i": killed["id"]}).scalar_one()
        task = conn.execute(sa.text("SELECT * FROM job_tasks WHERE task_id = :t"), {"t": killed["task_id"]}).mappings().one()
        after = conn.execute(sa.text("SELECT status, pid FROM sync_runs WHERE task_id = :t AND id > :i"),
                             {"t": killed["task_id"], "i": killed["id"]}).all()
    assert status == "abandoned"
    assert task["status"] == "done" and task["deliveries"] >= 2 and task["pid"] != killed["pid"]
    assert after and after[-1].status == "ok" and after[-1].pid != killed["pid"]


def _hold_a_pull(engine: sa.Engine, helpdesk: SimulatorServer) -> Any:
    """Once the backfill has written tickets, hold the simulator's reads and return the pull held
    on its page (this one, or on a machine quick to finish it, the next): it cannot end meanwhile."""
    _wait(lambda: _count(engine, "eddydesk_tickets") > 0, 120, "the EddyDesk pull to write its first tickets")
    helpdesk.app.state.settings["read_delay"] = 60.0
    _wait(lambda: helpdesk.app.state.settings["reads_held"] > 0, 60, "a pull's read to be held")
    held = _running_run(engine, "helpdesk", "sync")
    assert held is not None
    return held


def test_a_worker_killed_mid_pull_has_its_task_finished_by_the_other(pg_url, broker, accounts, tmp_path):
    cluster = _cluster(tmp_path, pg_url, broker, accounts,
                       {f"pull_{name}": {"connection": name, "every_seconds": 1} for name in accounts.connections},
                       requeue_after_seconds=KILLED_REQUEUE_SECONDS)
    engine = open_engine(pg_url)
    helpdesk = accounts.helpdesk
    cluster.start()
    try:
        killed = _hold_a_pull(engine, helpdesk)
        cluster.kill(killed["pid"])
        helpdesk.app.state.settings["read_delay"] = 0.0
        _wait(lambda: _ok_runs(engine, "helpdesk") >= 1, 120, "the redelivered pull to finish")
        helpdesk.state.random_changes(seed=7, updates=5, creates=2, soft_deletes=1)
        done = _ok_runs(engine, "helpdesk")
        _wait(lambda: _ok_runs(engine, "helpdesk") > done and all(_ok_runs(engine, n) >= 2 for n in ("sg", "kn")), 120,
              "a pull of every account after the kill")
        _settle_after_kill(engine)
        _finish(cluster, engine)
    finally:
        cluster.stop()
    _assert_redelivered(engine, killed)
    runs = [r for r in _runs(engine) if r.status not in ("interrupted", "abandoned")]
    _assert_no_overlaps(runs, key=lambda r: r.connection)
    _assert_no_job_lost(engine)
    _assert_exact(engine, accounts)
    engine.dispose()


def test_a_worker_stopped_mid_pull_hands_its_task_to_the_other(pg_url, broker, accounts, tmp_path):
    cluster = _cluster(tmp_path, pg_url, broker, accounts, {"pull_helpdesk": {"connection": "helpdesk", "every_seconds": 1}})
    engine = open_engine(pg_url)
    helpdesk = accounts.helpdesk
    cluster.start()
    try:
        stopped = _hold_a_pull(engine, helpdesk)
        worker = next(w for w in cluster.workers if w.pid == stopped["pid"])
        name = f"worker{cluster.workers.index(worker)}"
        worker.send_signal(signal.SIGTERM)
        _wait(lambda: "worker_stopping" in cluster.log(name), 60, "the worker to begin its warm shutdown")
        helpdesk.app.state.settings["read_delay"] = 0.0  # the page in flight is answered; the run stops after it
        assert worker.wait(timeout=120) == 0, cluster.log(name)
        _wait(lambda: _ok_runs(engine, "helpdesk") >= 1, 120, "the other worker to finish the pull")
        _finish(cluster, engine)
    finally:
        cluster.stop()
    with engine.connect() as conn:
        runs = conn.execute(sa.text("SELECT status, pid FROM sync_runs WHERE task_id = :t ORDER BY id"),
                            {"t": stopped["task_id"]}).all()
        task = conn.execute(sa.text("SELECT * FROM job_tasks WHERE task_id = :t"), {"t": stopped["task_id"]}).mappings().one()
    assert [r.status for r in runs] == ["interrupted", "ok"] and runs[1].pid != stopped["pid"]
    assert task["status"] == "done" and task["deliveries"] == 2
    _assert_no_job_lost(engine)
    assert_mirror_matches(engine, helpdesk.state)
    engine.dispose()


def test_a_worker_killed_mid_push_creates_nothing_twice(pg_url, broker, accounts, tmp_path):
    # the mirror holds the account first (a pull by hand), then gets new users and an organization
    config = parse_config({"mirror": {"url": pg_url}, "connections": accounts.connections}, base_dir=tmp_path)
    cluster = _cluster(tmp_path, pg_url, broker, accounts,
                       {"pull_helpdesk": {"connection": "helpdesk", "every_seconds": 1},
                        "push_helpdesk": {"connection": "helpdesk", "kind": "push", "every_seconds": 1},
                        "pull_sg": {"connection": "sg", "every_seconds": 1}},
                       requeue_after_seconds=KILLED_REQUEUE_SECONDS)
    os.environ.setdefault(API_KEY_ENV, "sim-api-key")
    assert jobs.sync(config, "helpdesk").status == "ok"
    engine = open_engine(pg_url)
    state = accounts.helpdesk.state
    emails = [f"new{n}@example.com" for n in range(3)]
    with engine.begin() as conn:
        for n, email in enumerate(emails):
            conn.execute(sa.text("INSERT INTO eddydesk_users (connection, id, name, email) "
                                 "VALUES ('helpdesk', :i, :n, :e)"), {"i": -1 - n, "n": f"New {n}", "e": email})
        conn.execute(sa.text("INSERT INTO eddydesk_organizations (connection, id, name) VALUES ('helpdesk', -1, 'Made once')"))
    # each create is made remotely, its answer held: the worker dies between the two
    accounts.helpdesk.app.state.settings["write_delay"] = 60.0
    cluster.start()
    try:
        def created() -> bool:  # the first create the push sends (organizations go before users)
            return (any(o.get("name") == "Made once" for o in state.organizations.records.values())
                    or any(u.get("email") in emails for u in state.users.records.values()))

        _wait(created, 120, "the push's first create to be made remotely")
        killed = _running_run(engine, "helpdesk", "push")
        assert killed is not None
        cluster.kill(killed["pid"])
        accounts.helpdesk.app.state.settings["write_delay"] = 0.0
        _wait(lambda: _count(engine, "eddydesk_users WHERE id < 0") == 0
              and _count(engine, "eddydesk_organizations WHERE id < 0") == 0, 120, "the redelivered push to finish")
        done = _ok_runs(engine, "helpdesk")
        _wait(lambda: _ok_runs(engine, "helpdesk") >= done + 2, 120, "a pull and a push after it")
        _settle_after_kill(engine)
        _finish(cluster, engine)
    finally:
        cluster.stop()
    _assert_redelivered(engine, killed)
    for email in emails:
        assert sum(u.get("email") == email for u in state.users.records.values()) == 1, f"{email} created twice"
    assert sum(o.get("name") == "Made once" for o in state.organizations.records.values()) == 1
    runs = [r for r in _runs(engine) if r.status not in ("interrupted", "abandoned")]
    _assert_no_overlaps(runs, key=lambda r: r.connection)
    _assert_no_job_lost(engine)
    assert_mirror_matches(engine, state)
    assert accounts.helpdesk.limits.rejections == 0
    engine.dispose()


def test_a_task_whose_message_the_broker_lost_is_sent_anew(pg_url, broker, accounts, tmp_path):
    """A task recorded as queued whose message no worker will ever get (the broker lost it, as
    a kill can make Redis's transport do) holds its job back only until `requeue_after_seconds`."""
    from etl.core.run import tasks

    cluster = _cluster(tmp_path, pg_url, broker, accounts, {"pull_helpdesk": {"connection": "helpdesk", "every_seconds": 1}},
                       requeue_after_seconds=KILLED_REQUEUE_SECONDS)
    engine = open_engine(pg_url)
    with engine.begin() as conn:  # queued a while ago; no message was ever sent for it
        tasks.queue(conn, "lost-by-the-broker", "pull_helpdesk", "helpdesk")
        conn.execute(sa.text("UPDATE job_tasks SET queued_at = queued_at - interval '60 seconds'"))
    cluster.start()
    try:
        _wait(lambda: any(t["status"] == "done" for t in _tasks(engine)), 120, "the job sent anew to run")
        _finish(cluster, engine)
    finally:
        cluster.stop()
    lost = next(t for t in _tasks(engine) if t["task_id"] == "lost-by-the-broker")
    assert lost["status"] == "lost" and "with no worker running it: sent anew" in lost["note"]
    _assert_no_job_lost(engine)
    assert_mirror_matches(engine, accounts.helpdesk.state)
    engine.dispose()


def test_with_no_worker_each_job_is_queued_once_and_health_says_so(pg_url, broker, accounts, tmp_path):
    from click.testing import CliRunner

    from etl.cli import main

    cluster = _cluster(tmp_path, pg_url, broker, accounts,
                       {f"pull_{name}": {"connection": name, "every_seconds": 0.5} for name in accounts.connections})
    engine = open_engine(pg_url)
    cluster.scheduler = cluster._start("scheduler", "schedule")
    try:
        _wait(lambda: {t["job"] for t in _tasks(engine)} == {f"pull_{n}" for n in accounts.connections}, 60,
              "every job to be queued")
        _wait(lambda: "its task is queued since" in cluster.log("scheduler"), 60, "a cadence that finds its task queued")
    finally:
        cluster.stop()
    assert len(_tasks(engine)) == 3 and all(t["status"] == "queued" for t in _tasks(engine)), "one task a job"
    assert _runs(engine) == []
    # the workers vanished twenty minutes ago: the jobs' health says so, and /metrics counts the wait
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE job_tasks SET queued_at = queued_at - interval '20 minutes'"))
    os.environ[BROKER_ENV] = broker
    check = CliRunner().invoke(main, ["--config", str(cluster.config), "status", "--check"])
    assert check.exit_code == 1 and "no worker took it" in check.output, check.output
    shown = CliRunner().invoke(main, ["--config", str(cluster.config), "status", "--prometheus"])
    waits = [line for line in shown.output.splitlines() if line.startswith("desksync_job_task_waiting_seconds{")]
    assert len(waits) == 3 and all(float(line.split()[-1]) >= 1200 for line in waits), waits
    engine.dispose()


def test_an_unreachable_broker_or_a_sqlite_mirror_is_refused_by_name(pg_url, accounts, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from etl.cli import main

    cluster = _cluster(tmp_path, pg_url, "redis://:s3cret-pass@127.0.0.1:9/0", accounts, {})
    for command in (["schedule"], ["worker"]):
        proc = subprocess.run([sys.executable, "-m", "etl.cli", "--config", str(cluster.config), *command], cwd=ROOT,
                              env=cluster.env, capture_output=True, timeout=120)
        err = proc.stderr.decode()
        assert proc.returncode == 1 and BROKER_ENV in err and "cannot be reached" in err, err[-2000:]
        assert "s3cret-pass" not in err + proc.stdout.decode()
    sqlite = tmp_path / "sqlite.toml"
    sqlite.write_text(cluster.config.read_text().replace(pg_url, f"sqlite:///{tmp_path / 'm.sqlite'}"))
    monkeypatch.setenv(BROKER_ENV, "redis://127.0.0.1:9/0")
    refused = CliRunner().invoke(main, ["--config", str(sqlite), "worker"])
    assert refused.exit_code == 2 and "must be PostgreSQL" in refused.output, refused.output
    plain = tmp_path / "plain.toml"
    plain.write_text(cluster.config.read_text().split("[executor]")[0])
    refused = CliRunner().invoke(main, ["--config", str(plain), "worker"])
    assert refused.exit_code == 2 and "needs an [executor] section" in refused.output, refused.output


class _Retry(Exception):
    """What `_Task.retry` gives run_task to raise (Celery's Retry, without a broker)."""


class _Task:
    """What run_task asks of a Celery task: a retry, which it raises."""

    def __init__(self) -> None:
        self.countdowns: list[float] = []

    def retry(self, countdown: float) -> _Retry:
        self.countdowns.append(countdown)
        return _Retry()


def test_a_task_runs_only_while_its_row_is_open_and_its_account_free(sqlite_url, simulator, make_config):
    """One delivery's decisions (etl.core.run.worker.run_task), without a broker: a task whose row
    is done runs nothing; one whose account is held elsewhere goes back with the delay; one whose
    account is blocked ends skipped (the scheduler sends it after the block); an unknown job is
    refused; an open one runs and is done, its run carrying the task's id."""
    import threading
    from datetime import UTC, datetime, timedelta

    from etl.core.config import ExecutorConfig, JobConfig
    from etl.core.run import tasks
    from etl.core.run.runner import JobRunner
    from etl.core.run.worker import run_task

    server = simulator(Sizes(tickets=10, users=3, organizations=1, kb_articles=1))
    config = make_config(sqlite_url, server)
    executor = ExecutorConfig(kind="celery", busy_retry_seconds=7)
    runner = JobRunner(config, {"pull": JobConfig(connection="helpdesk", every_seconds=60)}, threading.Event())
    engine = runner.engine

    def queued(task_id: str) -> str:
        with engine.begin() as conn:
            tasks.queue(conn, task_id, "pull", "helpdesk")
        return task_id

    def status(task_id: str) -> str:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SELECT status FROM job_tasks WHERE task_id = :t"), {"t": task_id}).scalar())

    try:
        assert run_task(_Task(), runner, executor, "nightly", queued("t0")) == "refused"
        assert run_task(_Task(), runner, executor, "pull", queued("t1")) == "ok" and status("t1") == "done"
        assert run_task(_Task(), runner, executor, "pull", "t1") == "stale"  # a second delivery
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT task_id, status FROM sync_runs")).all() == [("t1", "ok")]
        assert runner.locks.try_acquire("account", "helpdesk")  # as if another worker held the account
        other = JobRunner(config, runner.jobs, threading.Event())
        task = _Task()
        with pytest.raises(_Retry):
            run_task(task, other, executor, "pull", queued("t2"))
        assert task.countdowns == [7] and status("t2") == "queued"
        runner.locks.release("account", "helpdesk")
        other.close()
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO account_blocks (connection, budget, blocked_until, reason) "
                                 "VALUES ('helpdesk', 'main', :u, 'test')"), {"u": datetime.now(UTC) + timedelta(minutes=20)})
        assert run_task(_Task(), runner, executor, "pull", "t2") == "skipped" and status("t2") == "skipped"
        assert server.stats.requests > 0
    finally:
        runner.close()
