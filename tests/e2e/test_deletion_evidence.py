"""Nothing is marked deleted on doubtful evidence: a route-level 404 (a wrong base path), a parent
stream that failed in the same run, or a suspiciously large share of a table; and children of a
parent that disappears are marked deleted whatever state the parent was in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from etl.connectors.eddydesk.client import says_record_missing
from etl.connectors.eddydesk.simulator.data import Sizes
from etl.connectors.eddydesk.simulator.server import SimulatorServer
from etl.core.errors import ApiError
from etl.core.mirror.db import open_engine
from etl.core.run import jobs

SIZES = Sizes(tickets=60, users=20, organizations=4, kb_categories=1, kb_articles=2)
EDDYDESK_TABLES = ("eddydesk_tickets", "eddydesk_ticket_posts", "eddydesk_ticket_comments", "eddydesk_users",
                   "eddydesk_organizations", "eddydesk_custom_fields", "eddydesk_custom_field_options",
                   "eddydesk_statuses", "eddydesk_user_notes", "eddydesk_organization_notes")


def _deleted_rows(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t} WHERE is_deleted")).scalar_one()
                for t in EDDYDESK_TABLES}


def _change_log_deletes(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM change_log WHERE operation = 'delete'")).scalar_one()


def _synced(db_url: str, simulator: Callable[..., SimulatorServer], make_config: Callable[..., Any]
            ) -> tuple[SimulatorServer, Any, sa.Engine, tuple[dict[str, int], int]]:
    """A helpdesk mirrored once, and its deleted rows and change-log deletes so far."""
    server = simulator(SIZES)
    config = make_config(db_url, server)
    assert jobs.sync(config, "helpdesk").status == "ok"
    engine = open_engine(db_url)
    return server, config, engine, (_deleted_rows(engine), _change_log_deletes(engine))


def test_a_wrong_base_path_marks_nothing_deleted(db_url: str, simulator: Callable[..., SimulatorServer],
                                                 make_config: Callable[..., Any]) -> None:
    server, config, engine, (before, logged) = _synced(db_url, simulator, make_config)
    assert server.url.endswith("/api/v2")
    wrong = make_config(db_url, server, init=False, base_url=server.url[: -len("/api/v2")] + "/api/v1")
    for reconcile in (False, True):
        summary = jobs.sync(wrong, "helpdesk", reconcile_deletes=reconcile)
        assert summary.status == "failed" and summary.deleted == 0
        assert _deleted_rows(engine) == before, "a route-level 404 is no evidence that anything was deleted"
        assert _change_log_deletes(engine) == logged
    again = jobs.sync(config, "helpdesk")
    assert again.status == "ok" and again.updated == 0 and again.deleted == 0


def test_the_documented_not_found_answer_is_told_from_a_route_404() -> None:
    def error(details: str, status: int = 404) -> ApiError:
        return ApiError("eddydesk", details, status, "e-404", "x", details=[{"code": "e-404", "title": "Not found",
                                                                             "details": details}])

    assert says_record_missing(error("Ticket with id {9} does not exist"), 9)  # seed 003, as printed
    assert says_record_missing(error("Ticket with id 9 does not exist"), 9)  # the braces as placeholder marks
    assert says_record_missing(error("Post with id {15} in ticket with id {9} does not exist"), 9)
    assert not says_record_missing(error("Ticket with id {9} does not exist"), 19)
    assert not says_record_missing(error("Unknown API method"), 9)
    assert not says_record_missing(error("Ticket with id {9} does not exist", status=400), 9)
    assert not says_record_missing(ApiError("eddydesk", "Not Found", 404, None, "x"), 9)  # a web server's page


def test_children_of_a_failed_parent_stream_are_not_marked_deleted(db_url: str,
                                                                    simulator: Callable[..., SimulatorServer],
                                                                    make_config: Callable[..., Any]) -> None:
    """The field lists fail in this run (a server fault on every try): their options are still
    read, but an option missing from them is not taken for deleted until a run whose fields
    stream succeeded."""
    server = simulator(SIZES)
    config = make_config(db_url, server)
    assert jobs.sync(config, "helpdesk").status == "ok"
    engine = open_engine(db_url)
    options = server.state.options["ticket"]
    field_id = min(options)
    option = options[field_id].pop(0)["id"]
    server.queue_fault("500", 4, path="/api/v2/custom_fields/")  # the list's every attempt (retry.attempts)
    summary = jobs.sync(config, "helpdesk", ("ticket_custom_fields", "ticket_custom_field_options"))
    assert "ticket_custom_fields" in summary.errors and summary.deleted == 0
    good = jobs.sync(config, "helpdesk", ("ticket_custom_fields", "ticket_custom_field_options"))
    assert good.status == "ok" and good.deleted == 1
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT is_deleted FROM eddydesk_custom_field_options WHERE id = :o "
                                    "AND field_id = :f"), {"o": option, "f": field_id}).scalar_one()


def test_a_run_that_would_delete_a_large_share_stops_unless_allowed(db_url: str,
                                                                     simulator: Callable[..., SimulatorServer],
                                                                     make_config: Callable[..., Any]) -> None:
    server, config, engine, (before, logged) = _synced(db_url, simulator, make_config)
    state = server.state
    live = sorted(i for i, t in state.tickets.records.items() if not t.get("deleted"))
    for ticket in live[: len(live) // 2]:  # half the tickets gone outright: more than 10 % and 10 rows
        state.hard_delete_ticket(ticket)
    refused = jobs.sync(config, "helpdesk", ("tickets",), reconcile_deletes=True)
    assert refused.status == "failed"
    message = refused.errors["tickets"]
    assert "refusing to mark" in message and "eddydesk_tickets" in message and "--allow-mass-delete" in message
    assert _deleted_rows(engine) == before and _change_log_deletes(engine) == logged, "nothing of it was written"
    allowed = jobs.sync(config, "helpdesk", ("tickets",), reconcile_deletes=True, allow_mass_delete=True)
    assert allowed.status == "ok" and allowed.deleted >= len(live) // 2


@pytest.mark.parametrize("share,min_rows,refused", [(0.10, 10, True), (0.60, 10, False), (0.10, 40, False)])
def test_the_guard_limits_come_from_the_config(sqlite_url: str, simulator: Callable[..., SimulatorServer],
                                               make_config: Callable[..., Any], share: float, min_rows: int,
                                               refused: bool) -> None:
    from etl.config import parse_config

    server = simulator(SIZES)
    base = make_config(sqlite_url, server)
    config = parse_config({"mirror": {"url": sqlite_url, "mass_delete_share": share, "mass_delete_min_rows": min_rows},
                           "connections": {"helpdesk": base.connections["helpdesk"].model_dump(by_alias=True)}},
                          base_dir=base.base_dir)
    assert jobs.sync(config, "helpdesk", ("tickets",)).status == "ok"
    live = sorted(i for i, t in server.state.tickets.records.items() if not t.get("deleted"))
    for ticket in live[:30]:
        server.state.hard_delete_ticket(ticket)
    summary = jobs.sync(config, "helpdesk", ("tickets",), reconcile_deletes=True)
    assert (summary.status == "failed") is refused


def test_children_of_a_soft_deleted_then_hard_deleted_parent_are_marked_deleted(
        db_url: str, simulator: Callable[..., SimulatorServer], make_config: Callable[..., Any]) -> None:
    server = simulator(SIZES)
    config = make_config(db_url, server)
    state = server.state
    ticket = next(i for i, t in sorted(state.tickets.records.items()) if not t.get("deleted") and state.posts(i)
                  and state.comments(i))
    assert jobs.sync(config, "helpdesk").status == "ok"
    state.soft_delete_ticket(ticket)
    assert jobs.sync(config, "helpdesk").status == "ok"
    engine = open_engine(db_url)

    def live_children() -> int:
        with engine.connect() as conn:
            return sum(conn.execute(sa.text(f"SELECT count(*) FROM {t} WHERE ticket_id = :t AND NOT is_deleted"),
                                    {"t": ticket}).scalar_one()
                       for t in ("eddydesk_ticket_posts", "eddydesk_ticket_comments"))

    assert live_children() > 0, "a soft-deleted ticket keeps its replies and notes (it can be restored)"
    state.hard_delete_ticket(ticket)
    assert jobs.sync(config, "helpdesk", reconcile_deletes=True).status == "ok"
    assert live_children() == 0, "gone outright: so are its replies and notes"
