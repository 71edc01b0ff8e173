"""A placeholder id is the user's and is used again (`-1` in every example): a new row under an id
that an earlier, finished create also used is a new record, never the earlier one found again.

Only a create whose answer may have been lost (its intent has no outcome) is looked up before it
is sent again (etl.core.push.journal.earlier_intents)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from etl.connectors.eddydesk.simulator.data import Sizes
from etl.connectors.eddydesk.simulator.server import SimulatorServer
from etl.connectors.udesk.knowledge.simulator.server import KnowledgeServer
from etl.connectors.udesk.knowledge.simulator.store import Sizes as KnowledgeSizes
from etl.core.mirror.db import open_engine
from etl.core.run import jobs
from tests.conftest import knowledge_settings

PUSH: dict[str, Any] = {"tickets": {}, "ticket_posts": {}, "ticket_comments": {}}


def _sql(engine: sa.Engine, statement: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def test_a_reused_placeholder_makes_a_new_ticket_reply_and_note(db_url: str, simulator: Callable[..., SimulatorServer],
                                                                  make_config: Callable[..., Any]) -> None:
    server = simulator(Sizes(tickets=5, users=5, organizations=2, kb_categories=1, kb_articles=1))
    config = make_config(db_url, server, push=PUSH)
    assert jobs.sync(config, "helpdesk").status == "ok"
    engine = open_engine(db_url)
    state = server.state
    ticket = min(state.tickets.records)

    def new_rows() -> None:
        _sql(engine, "INSERT INTO eddydesk_tickets (connection, id, title, priority_id) "
                     "VALUES ('helpdesk', -1, 'Printer on fire', 1)")
        _sql(engine, "INSERT INTO eddydesk_ticket_posts (connection, id, ticket_id, text) "
                     "VALUES ('helpdesk', -1, -1, '<p>It burns</p>'), ('helpdesk', -2, :t, '<p>Same words</p>')",
             t=ticket)
        _sql(engine, "INSERT INTO eddydesk_ticket_comments (connection, id, ticket_id, text) "
                     "VALUES ('helpdesk', -1, :t, '<p>Same note</p>')", t=ticket)

    new_rows()
    first = jobs.push(config, "helpdesk")
    assert first.failed == 0
    assert jobs.sync(config, "helpdesk").status == "ok"
    new_rows()  # the same placeholders and the same texts, for new records
    second = jobs.push(config, "helpdesk")
    assert second.failed == 0 and second.tables["tickets"].done == {"create": 1}

    titled = [t for t in state.tickets.records.values() if t["title"] == "Printer on fire"]
    assert len(titled) == 2, "the second new ticket is created, not taken for the first"
    assert all([p["text"] for p in state.posts(t["id"])] == ["<p>It burns</p>"] for t in titled)
    assert [p["text"] for p in state.posts(ticket)].count("<p>Same words</p>") == 2
    assert [c["text"] for c in state.comments(ticket)].count("<p>Same note</p>") == 2
    assert jobs.sync(config, "helpdesk").status == "ok"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM eddydesk_tickets WHERE title = 'Printer on fire' "
                                    "AND id > 0 AND NOT is_deleted")).scalar() == 2
        assert conn.execute(sa.text("SELECT count(*) FROM eddydesk_tickets WHERE id < 0")).scalar() == 0


def test_a_reused_placeholder_makes_a_new_knowledge_question(db_url: str, knowledge_sim: Callable[..., KnowledgeServer],
                                                            udesk_config: Callable[..., Any]) -> None:
    server = knowledge_sim(KnowledgeSizes(questions=6, expressions=2, links=2, attachments=0, entities=1))
    config = udesk_config(db_url, {"kn": knowledge_settings(server, push={"questions": {}})})
    assert jobs.sync(config, "kn").status == "ok"
    engine = open_engine(db_url)
    leaf = server.state.leaves("question", 0)[0]

    def count() -> int:
        return sum(1 for q in server.state.items["question"].values() if q.get("title") == "Paper jam?")

    for made in (1, 2):
        _sql(engine, "INSERT INTO udesk_knowledge_questions (connection, id, catalog_id, title, content, "
                     "content_type, lasts) VALUES ('kn', -1, :c, 'Paper jam?', '<p>Open tray 2</p>', 'html', true)",
             c=leaf)
        assert jobs.push(config, "kn").failed == 0
        assert count() == made, "a finished create's placeholder, used again, is a new question"
        assert jobs.sync(config, "kn").status == "ok"
