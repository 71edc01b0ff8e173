"""A full sync mirrors everything exactly; an incremental sync follows remote changes with a
request count proportional to the changes, not to the dataset."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from etl.connectors.eddydesk.simulator.data import Sizes
from etl.core.mirror.db import open_engine
from etl.core.run import jobs
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


def test_the_options_of_a_field_deleted_remotely_are_marked_deleted(db_url, simulator, make_config):
    """A deleted field's option list is never read again: its options go with it (a new option
    waiting there for a push stays, as every placeholder does)."""
    import sqlalchemy as sa

    server = simulator(Sizes(tickets=10, users=10, organizations=3, kb_categories=1, kb_articles=1))
    config = make_config(db_url, server)
    assert jobs.sync(config, "helpdesk").status == "ok"
    engine = open_engine(db_url)
    state = server.state
    field = next(f for f in state.fields["user"] if f["field_type"] == "hierarchy")
    kept = next(f for f in state.fields["user"] if f["field_type"] == "select")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO eddydesk_custom_field_options (connection, scope, field_id, id, name_display) "
                             "VALUES ('helpdesk', 'user', :f, -1, 'Waiting')"), {"f": field["id"]})
    state.fields["user"].remove(field)
    options = state.options["user"].pop(field["id"])
    summary = jobs.sync(config, "helpdesk")
    assert summary.status == "ok"
    with engine.connect() as conn:
        rows: dict[Any, Any] = dict(conn.execute(sa.text("SELECT id, is_deleted FROM eddydesk_custom_field_options "
                                         "WHERE scope = 'user' AND field_id = :f"), {"f": field["id"]}).all())
        logged = conn.execute(sa.text("SELECT count(*) FROM change_log WHERE table_name = "
                                      "'eddydesk_custom_field_options' AND operation = 'delete'")).scalar()
        live_kept = conn.execute(sa.text("SELECT count(*) FROM eddydesk_custom_field_options WHERE scope = 'user' "
                                         "AND field_id = :f AND NOT is_deleted"), {"f": kept["id"]}).scalar()
    assert {i: bool(d) for i, d in rows.items()} == {**{o["id"]: True for o in options}, -1: False}
    assert logged == len(options)
    assert live_kept == len(state.options["user"][kept["id"]])
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM eddydesk_custom_field_options WHERE id = -1"))
    assert_mirror_matches(engine, state, check_hard_deletes=False)
    engine.dispose()


def test_users_status_history_is_mirrored_from_its_newest_entry_on(db_url, simulator, make_config):
    """seed 003, GET /users/{user_id}/statuses_log/: an optional stream; a changed user's history is
    read again from its newest mirrored entry (from_date_created), and entries are never deleted."""
    server = simulator(Sizes(tickets=10, users=40, organizations=2, kb_categories=1, kb_articles=1))
    config = make_config(db_url, server, streams=["default", "user_statuses_log"])
    assert jobs.sync(config, "helpdesk").status == "ok"
    state = server.state
    engine = open_engine(db_url)

    def mirrored() -> dict[int, list[tuple[int, str]]]:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT user_id, id, status_id FROM eddydesk_user_status_log "
                                        "WHERE NOT is_deleted ORDER BY user_id, id DESC")).all()
        out: dict[int, list[tuple[int, str]]] = {}
        for user_id, entry_id, status in rows:
            out.setdefault(user_id, []).append((entry_id, status))
        return out

    def remote() -> dict[int, list[tuple[int, str]]]:
        return {u: [(e["id"], e["status_id"]) for e in state.status_log(u)] for u in state.users.records
                if state.status_log(u)}

    assert mirrored() == remote() and mirrored(), "every staff user's history"
    agent = state.staff_ids[-1]
    before = len(state.status_log(agent))
    state.update_user(agent, user_status="obed")
    server.stats.__init__()
    assert jobs.sync(config, "helpdesk").status == "ok"
    assert mirrored() == remote() and len(mirrored()[agent]) == before + 1
    asked = [path for path in server.stats.by_endpoint if "statuses_log" in path]
    assert server.stats.by_endpoint.get("users_statuses_log") == 1, asked
    engine.dispose()
