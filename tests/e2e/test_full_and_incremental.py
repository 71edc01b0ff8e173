"""A full sync mirrors everything exactly; an incremental sync follows remote changes with a
request count proportional to the changes, not to the dataset."""

from __future__ import annotations

import pytest

from etl import jobs
from etl.mirror.db import open_engine
from etl.simulators.eddydesk.data import Sizes
from tests.mirror_check import assert_mirror_matches

BIG = Sizes(tickets=20_000, users=5_000, organizations=500, kb_categories=60, kb_articles=1_000)


@pytest.mark.slow
def test_full_then_incremental_then_reconcile_keep_the_mirror_exact(db_url, simulator, make_config):
    server = simulator(BIG)
    config = make_config(db_url, server, concurrency=8)

    first = jobs.sync(config, "helpdesk")
    assert first.status == "ok", first.errors
    engine = open_engine(db_url)
    assert_mirror_matches(engine, server.state)
    assert first.inserted > BIG.tickets + BIG.users

    changes = server.state.random_changes(seed=3, updates=150, creates=40, soft_deletes=25, hard_deletes=15)
    second = jobs.sync(config, "helpdesk")
    assert second.status == "ok", second.errors
    assert_mirror_matches(engine, server.state, check_hard_deletes=False)
    changed = sum(len(v) for v in changes.values())
    # per changed ticket: its page share, posts and comments; plus reference lists, fields,
    # options and a few users/notes: bounded by the changes, far below the backfill's 46,000
    assert second.requests <= 3 * changed + 120, (second.requests, changed)
    assert second.requests < first.requests / 50

    third = jobs.sync(config, "helpdesk", reconcile_deletes=True)
    assert third.status == "ok", third.errors
    assert third.deleted >= len(changes["hard_deleted"])
    assert_mirror_matches(engine, server.state)

    quiet = jobs.sync(config, "helpdesk")
    assert quiet.inserted == quiet.updated == quiet.deleted == 0
    engine.dispose()
