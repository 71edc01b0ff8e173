"""Records updated while a scan pages through them are neither skipped nor duplicated, and
several accounts live side by side in one mirror."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import sqlalchemy as sa

from etl.connectors.eddydesk.simulator.data import Sizes
from etl.core.mirror.db import open_engine
from etl.core.run import jobs
from tests.mirror_check import assert_mirror_matches


def test_updates_during_the_scan_do_not_shift_pages_and_lose_records(sqlite_url, simulator, make_config):
    # Page-number paging would skip one unchanged ticket for every ticket that leaves the window
    # mid-scan; the keyed walk must not. The background writer keeps moving tickets out.
    server = simulator(Sizes(tickets=4_000, users=50, organizations=5, kb_articles=10), latency=0.004)
    config = make_config(sqlite_url, server, concurrency=4)
    stop = threading.Event()
    rng = random.Random(5)
    moved: set[int] = set()

    def churn() -> None:
        while not stop.is_set():
            tid = rng.randint(1, 4_000)
            moved.add(tid)
            server.state.update_ticket(tid, title=f"moved {time.monotonic()}")
            time.sleep(0.002)

    writer = threading.Thread(target=churn)
    writer.start()
    try:
        first = jobs.sync(config, "helpdesk", ("tickets",))
    finally:
        stop.set()
        writer.join()
    assert first.status == "ok", first.errors
    engine = open_engine(sqlite_url)
    with engine.connect() as conn:
        mirrored = set(conn.execute(sa.text("SELECT id FROM eddydesk_tickets")).scalars())
    missing = set(server.state.tickets.records) - mirrored
    # a ticket updated mid-scan may have left the window before its page was read: the next
    # run takes its new version. Every ticket that did not change must be there now.
    assert missing <= moved, f"unchanged tickets skipped: {sorted(missing - moved)[:10]}"
    assert len(moved) > 100
    time.sleep(1.1)  # let the last second of changes close
    second = jobs.sync(config, "helpdesk", ("tickets", "ticket_posts", "ticket_comments"))
    assert second.status == "ok"
    with engine.connect() as conn:
        titles: dict[Any, Any] = dict(conn.execute(sa.text("SELECT id, title FROM eddydesk_tickets")).all())
    assert titles == {i: t["title"] for i, t in server.state.tickets.records.items()}


def test_many_records_updated_in_the_same_second_are_all_taken(db_url, simulator, make_config):
    server = simulator(Sizes(tickets=500, users=30, organizations=3, kb_articles=10))
    config = make_config(db_url, server)
    assert jobs.sync(config, "helpdesk").status == "ok"
    for tid in range(1, 201):  # 200 updates share one or two seconds: a whole page per second
        server.state.update_ticket(tid, title=f"same second {tid}")
    summary = jobs.sync(config, "helpdesk")
    assert summary.status == "ok" and summary.updated >= 200
    assert_mirror_matches(open_engine(db_url), server.state)


def test_two_accounts_share_one_mirror_side_by_side(db_url, simulator, make_config):
    one = simulator(Sizes(tickets=90, users=30, organizations=3, kb_articles=8), seed=1)
    two = simulator(Sizes(tickets=60, users=25, organizations=2, kb_articles=5), seed=2)
    config_one = make_config(db_url, one, name="east")
    config_two = make_config(db_url, two, name="west")
    assert jobs.sync(config_one, "east").status == "ok"
    assert jobs.sync(config_two, "west").status == "ok"
    engine = open_engine(db_url)
    assert_mirror_matches(engine, one.state, connection="east")
    assert_mirror_matches(engine, two.state, connection="west")
    with engine.connect() as conn:
        counts: dict[Any, Any] = dict(conn.execute(sa.text(
            "SELECT connection, count(*) FROM eddydesk_tickets GROUP BY connection")).all())
    assert counts == {"east": 90, "west": 60}


def test_reconciliation_runs_on_its_cadence_without_the_flag(sqlite_url, simulator, make_config):
    server = simulator(Sizes(tickets=60, users=20, organizations=2, kb_articles=4))
    config = make_config(sqlite_url, server, reconcile_every_hours=0.0003)  # about one second
    assert jobs.sync(config, "helpdesk").status == "ok"
    server.state.hard_delete_ticket(9)
    time.sleep(1.5)
    summary = jobs.sync(config, "helpdesk", ("tickets",))
    assert summary.deleted >= 1
    with open_engine(sqlite_url).connect() as conn:
        assert conn.execute(sa.text("SELECT is_deleted FROM eddydesk_tickets WHERE id = 9")).scalar_one()
