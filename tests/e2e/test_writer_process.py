"""Long scans are written by a process of their own (etl/core/pull/writer_process.py), one per run,
forked where the run has its process to itself: the mirror ends exactly as with the in-process
writer, the writer's errors reach the run, a writer whose fetching process dies exits instead of
lingering, and the scheduler (whose runs share a process) and a budget the documented limits set
write in-process."""

from __future__ import annotations

import os
import threading
import time

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from etl.config import parse_config
from etl.connectors.eddydesk.simulator.data import Sizes
from etl.core import log
from etl.core.mirror.db import open_engine
from etl.core.pull.context import writer_process_pays
from etl.core.pull.writer_process import WriterProcess
from etl.core.run import jobs
from tests.conftest import API_KEY_ENV, connection_settings
from tests.mirror_check import assert_mirror_matches

SMALL = Sizes(tickets=600, users=60, organizations=6, kb_categories=3, kb_articles=12)  # 20 pages of tickets


def _config(url, server, tmp_path, min_pages, **settings):
    config = parse_config({"mirror": {"url": url, "writer_process_min_pages": min_pages},
                           "connections": {"helpdesk": connection_settings(server, **settings)}}, base_dir=tmp_path)
    jobs.init(config)
    return config


def test_a_scan_written_by_a_writer_process_mirrors_exactly(db_url, simulator, monkeypatch, tmp_path):
    monkeypatch.setenv(API_KEY_ENV, "sim-api-key")
    server = simulator(SMALL)
    config = _config(db_url, server, tmp_path, min_pages=2)
    log.configure("info", json=True)  # the start is an info event; the suite logs warnings only
    try:
        with capture_logs() as logs:
            first = jobs.sync(config, "helpdesk", forked_writer=WriterProcess())
    finally:
        log.configure("warning", json=True)
    assert first.status == "ok", first.errors
    # one process serves the run's scans, one after the other
    through = [e for e in logs if e["event"] == "scan_through_writer_process"]
    assert {e["stream"] for e in through} >= {"tickets", "users"}, through
    engine = open_engine(db_url)
    assert_mirror_matches(engine, server.state)

    server.state.random_changes(seed=5, updates=30, creates=10, soft_deletes=5)
    engine.dispose()  # a writer is forked only while this process has the mirror closed
    # nor has the run left a connection open behind it (etl.core.run.records._SendsKeeper)
    assert not any(t.name == "desksync-account-sends" for t in threading.enumerate())
    second = jobs.sync(config, "helpdesk", full=True, forked_writer=WriterProcess())  # every page through the writer
    assert second.status == "ok", second.errors
    assert_mirror_matches(engine, server.state, check_hard_deletes=False)
    with engine.connect() as conn:
        inserted_twice = conn.execute(sa.text(
            "SELECT record_key FROM change_log WHERE table_name = 'eddydesk_tickets' AND operation = 'insert' "
            "GROUP BY record_key HAVING count(*) > 1")).all()
    assert inserted_twice == []
    engine.dispose()


def test_an_error_in_the_writer_process_reaches_the_run_with_its_message(sqlite_url, simulator, monkeypatch,
                                                                            tmp_path):
    monkeypatch.setenv(API_KEY_ENV, "sim-api-key")
    server = simulator(SMALL)
    config = _config(sqlite_url, server, tmp_path, min_pages=2)
    engine = open_engine(sqlite_url)
    with engine.begin() as conn:  # a mirror broken behind desksync's back
        conn.execute(sa.text("ALTER TABLE eddydesk_ticket_tags RENAME TO tags_elsewhere"))
    engine.dispose()
    # as in process: a database error stops the run (it is not one stream's remote trouble)
    with pytest.raises(Exception, match="no such table: eddydesk_ticket_tags"):
        jobs.sync(config, "helpdesk", streams=("tickets",), forked_writer=WriterProcess())
    with engine.connect() as conn:
        tickets = conn.execute(sa.text("SELECT count(*) FROM eddydesk_tickets")).scalar_one()
        status = conn.execute(sa.text("SELECT status FROM sync_runs ORDER BY id DESC")).scalar()
    assert tickets == 0  # the failed batch rolled back whole
    assert status == "failed"
    engine.dispose()


def test_a_pull_through_a_writer_process_keeps_unpushed_local_edits(sqlite_url, simulator, monkeypatch, tmp_path):
    """The writer reads a shipped record back for its child rows: a kept local custom-field value
    must land in that same record, not in a copy."""
    monkeypatch.setenv(API_KEY_ENV, "sim-api-key")
    server = simulator(Sizes(tickets=90, users=10, organizations=2, kb_categories=1, kb_articles=1))
    config = _config(sqlite_url, server, tmp_path, min_pages=1, push={"tickets": {}})
    assert jobs.sync(config, "helpdesk").status == "ok"
    engine = open_engine(sqlite_url)
    ticket, field = 7, 5  # field 5: the text custom field (etl.connectors.eddydesk.simulator.data.custom_fields)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE eddydesk_tickets SET title = 'Local title' WHERE id = :t"), {"t": ticket})
        conn.execute(sa.text("DELETE FROM eddydesk_ticket_custom_field_values WHERE ticket_id = :t AND field_id = :f"),
                     {"t": ticket, "f": field})
        conn.execute(sa.text("INSERT INTO eddydesk_ticket_custom_field_values (connection, ticket_id, field_id, "
                             "value_text) VALUES ('helpdesk', :t, :f, 'local value')"), {"t": ticket, "f": field})
    server.state.update_ticket(ticket, status_id="process", priority_id=3)
    engine.dispose()
    log.configure("info", json=True)
    try:
        with capture_logs() as logs:
            writer = WriterProcess()
            assert jobs.sync(config, "helpdesk", streams=("tickets",), full=True, forked_writer=writer).status == "ok"
    finally:
        log.configure("warning", json=True)
    assert any(e["event"] == "scan_through_writer_process" for e in logs)
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT title, status_id, priority_id FROM eddydesk_tickets WHERE id = :t"),
                           {"t": ticket}).one()
        value = conn.execute(sa.text("SELECT value_text FROM eddydesk_ticket_custom_field_values "
                                     "WHERE ticket_id = :t AND field_id = :f"), {"t": ticket, "f": field}).scalar()
    assert tuple(row) == ("Local title", "process", 3)
    assert value == "local value", "a local custom-field edit survives a pull written by a writer process"
    engine.dispose()


def _writers_of(pid: int) -> list[int]:
    """The processes `pid` forked (its writer is the only one)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if parent == pid:
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


def test_a_writer_process_is_forked_only_where_fetching_can_outrun_one_process(sqlite_url, simulator, tmp_path):
    """At the documented limits (300 and 60 requests a minute) one process keeps up: no writer."""
    server = simulator(Sizes(tickets=30, users=2, organizations=1, kb_articles=1))
    documented = _config(sqlite_url, server, tmp_path, min_pages=2, rate_limit={"per_minute": 300})
    unlimited = _config(sqlite_url, server, tmp_path, min_pages=2)
    never = _config(sqlite_url, server, tmp_path, min_pages=None)
    assert not writer_process_pays(documented.connection("helpdesk"), 2)
    assert writer_process_pays(unlimited.connection("helpdesk"), unlimited.mirror.writer_process_min_pages)
    assert not writer_process_pays(never.connection("helpdesk"), never.mirror.writer_process_min_pages)
