"""The children queue: one entry a parent, a bit per child list, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from etl.core.mirror.db import open_engine, upgrade
from etl.core.mirror.pending import Queue, add_pending, done_pending, pending

TICKETS = Queue("tickets", ("ticket_posts", "ticket_comments", "ticket_audit"))


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_a_parent_waits_for_each_list_until_that_list_is_fetched(db_url: str) -> None:
    engine = open_engine(db_url)
    upgrade(engine)
    with engine.begin() as conn:
        add_pending(conn, "a", TICKETS, ("ticket_posts", "ticket_comments"), [3, 1, 2])
        add_pending(conn, "b", TICKETS, ("ticket_posts",), [1])  # another account's ticket 1
    with engine.begin() as conn:
        done_pending(conn, "a", TICKETS, "ticket_posts", [1, 2])
    with engine.connect() as conn:
        assert pending(conn, "a", TICKETS, "ticket_posts") == [3]
        assert pending(conn, "a", TICKETS, "ticket_comments") == [1, 2, 3]
        assert pending(conn, "b", TICKETS, "ticket_posts") == [1]
    with engine.begin() as conn:
        # ticket 1 changes again: it waits for its posts again and still for its comments;
        # ticket 3 is queued for its audit too
        add_pending(conn, "a", TICKETS, ("ticket_posts",), [1])
        add_pending(conn, "a", TICKETS, ("ticket_audit",), [3])
        done_pending(conn, "a", TICKETS, "ticket_comments", [1, 2, 3])
    with engine.connect() as conn:
        assert pending(conn, "a", TICKETS, "ticket_posts") == [1, 3]
        assert pending(conn, "a", TICKETS, "ticket_comments") == []
        assert pending(conn, "a", TICKETS, "ticket_audit") == [3]
    with engine.begin() as conn:
        done_pending(conn, "a", TICKETS, "ticket_posts", [1, 3])
        done_pending(conn, "a", TICKETS, "ticket_audit", [3])
        done_pending(conn, "b", TICKETS, "ticket_posts", [1])
        left = conn.exec_driver_sql("SELECT count(*) FROM sync_pending_children").scalar_one()
    assert left == 0, "an entry stays only while a list of its parent is still to fetch"
    engine.dispose()
