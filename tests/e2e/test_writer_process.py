"""Long scans are written by a process of their own (etl/extract/write_process.py): the mirror
ends exactly as with the in-process writer, the writer's errors reach the run, and a writer
whose fetching process dies exits instead of lingering."""

from __future__ import annotations

import os
import time

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from etl import jobs, log
from etl.config import parse_config
from etl.mirror.db import open_engine
from etl.simulators.eddydesk.data import Sizes
from tests.conftest import connection_settings
from tests.mirror_check import assert_mirror_matches

SMALL = Sizes(tickets=600, users=60, organizations=6, kb_categories=3, kb_articles=12)  # 20 pages of tickets


def _config(url, server, tmp_path, min_pages):
    config = parse_config({"mirror": {"url": url, "writer_process_min_pages": min_pages},
                           "connections": {"helpdesk": connection_settings(server)}}, base_dir=tmp_path)
    jobs.init(config)
    return config


def test_a_scan_written_by_a_writer_process_mirrors_exactly(db_url, simulator, make_config, tmp_path):
    server = simulator(SMALL)
    make_config(db_url, server, init=False)  # the API key in the environment
    config = _config(db_url, server, tmp_path, min_pages=2)
    log.configure("info", json=True)  # the start is an info event; the suite logs warnings only
    try:
        with capture_logs() as logs:
            first = jobs.sync(config, "helpdesk")
    finally:
        log.configure("warning", json=True)
    assert first.status == "ok", first.errors
    started = [e for e in logs if e["event"] == "writer_process_started"]
    assert {e["stream"] for e in started} >= {"tickets"}, started
    engine = open_engine(db_url)
    assert_mirror_matches(engine, server.state)

    server.state.random_changes(seed=5, updates=30, creates=10, soft_deletes=5)
    second = jobs.sync(config, "helpdesk", full=True)  # a full scan again: every page through the writer
    assert second.status == "ok", second.errors
    assert_mirror_matches(engine, server.state, check_hard_deletes=False)
    with engine.connect() as conn:
        inserted_twice = conn.execute(sa.text(
            "SELECT record_key FROM change_log WHERE table_name = 'eddydesk_tickets' AND operation = 'insert' "
            "GROUP BY record_key HAVING count(*) > 1")).all()
    assert inserted_twice == []
    engine.dispose()


def test_an_error_in_the_writer_process_reaches_the_run_with_its_message(sqlite_url, simulator, make_config,
                                                                            tmp_path):
    server = simulator(SMALL)
    make_config(sqlite_url, server, init=False)
    config = _config(sqlite_url, server, tmp_path, min_pages=2)
    engine = open_engine(sqlite_url)
    with engine.begin() as conn:  # a mirror broken behind desksync's back
        conn.execute(sa.text("ALTER TABLE eddydesk_ticket_tags RENAME TO tags_elsewhere"))
    # as in process: a database error stops the run (it is not one stream's remote trouble)
    with pytest.raises(Exception, match="no such table: eddydesk_ticket_tags"):
        jobs.sync(config, "helpdesk", streams=("tickets",))
    with engine.connect() as conn:
        tickets = conn.execute(sa.text("SELECT count(*) FROM eddydesk_tickets")).scalar_one()
        status = conn.execute(sa.text("SELECT status FROM sync_runs ORDER BY id DESC")).scalar()
    assert tickets == 0  # the failed batch rolled back whole
    assert status == "failed"
    engine.dispose()


def _writers_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmd:
                command = cmd.read()
        except OSError:
            continue
        if parent == pid and b"etl.extract.write_process" in command:
            found.append(int(entry))
    return found


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_writer_exits_when_its_fetching_process_is_killed(sqlite_url, simulator, make_config, tmp_path):
    import signal

    from tests.conftest import write_config_file
    from tests.e2e.test_kill_and_resume import _count, _start

    server = simulator(Sizes(tickets=3_000, users=20, organizations=2, kb_articles=2), latency=0.002)
    make_config(sqlite_url, server)
    config = write_config_file(tmp_path / "desksync.toml", sqlite_url,
                               {"helpdesk": connection_settings(server, concurrency=4)})
    engine = open_engine(sqlite_url)
    proc = _start(config, "--stream", "tickets")
    deadline = time.monotonic() + 120
    writers: list[int] = []
    while time.monotonic() < deadline and not (writers and _count(engine, "eddydesk_tickets") >= 300):
        writers = writers or _writers_of(proc.pid)
        time.sleep(0.02)
    assert writers, "the sync did not start a writer process"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_running(w) for w in writers):
        time.sleep(0.05)
    assert not any(_running(w) for w in writers), "the writer outlived its fetching process"
    engine.dispose()
