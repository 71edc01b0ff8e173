"""Udesk knowledge and KM entities end to end, compared with the simulator field by field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from etl.connectors.udesk.knowledge.simulator.server import KnowledgeServer
from etl.connectors.udesk.knowledge.simulator.store import Sizes
from etl.core.mirror.db import open_engine
from etl.core.run import jobs
from tests.conftest import knowledge_settings
from tests.knowledge_check import assert_knowledge_matches


def test_knowledge_and_entities_full_then_incremental(db_url: str, knowledge_sim: Callable[..., KnowledgeServer],
                                                      udesk_config: Callable[..., Any]) -> None:
    server = knowledge_sim(Sizes(questions=2_000, expressions=300, links=200, attachments=150, entities=60))
    config = udesk_config(db_url, {"kn": knowledge_settings(server)})
    engine = open_engine(db_url)
    first = jobs.sync(config, "kn")
    assert first.status == "ok", first.errors
    assert_knowledge_matches(engine, server.state)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT max(depth) FROM udesk_knowledge_catalogs")).scalar() == 4

    server.state.random_changes(seed=3, updates=25, creates=10, deletes=8)
    second = jobs.sync(config, "kn")
    assert second.status == "ok", second.errors
    assert_knowledge_matches(engine, server.state)
    assert second.updated >= 20 and second.deleted >= 1

    quiet = jobs.sync(config, "kn")
    assert (quiet.inserted, quiet.updated, quiet.deleted) == (0, 0, 0)
    with engine.connect() as conn:
        logged = conn.execute(sa.text("SELECT count(*) FROM change_log WHERE run_id = :r"), {"r": quiet.run_id}).scalar()
    assert logged == 0
    engine.dispose()


def test_attachments_are_downloaded_when_asked(sqlite_url: str, knowledge_sim: Callable[..., KnowledgeServer],
                                               udesk_config: Callable[..., Any], tmp_path: Any) -> None:
    server = knowledge_sim(Sizes(questions=5, attachments=4, entities=0))
    for record in server.state.items["attachment"].values():
        record["file_url"] = f"{server.base}/_sim/stats"  # any URL the simulator serves
    config = udesk_config(sqlite_url, {"kn": knowledge_settings(
        server, robot_ids=[], km_base_url=None, download_attachments=True, attachments_dir=str(tmp_path / "files"))})
    assert jobs.sync(config, "kn", ("attachments",)).status == "ok"
    engine = open_engine(sqlite_url)
    with engine.connect() as conn:
        paths = conn.execute(sa.text("SELECT local_path FROM udesk_knowledge_attachments")).scalars().all()
    assert len(paths) == 4 and all(p and (tmp_path / "files" / "kn").exists() for p in paths)


def test_an_entity_deleted_remotely_takes_its_values_with_it(db_url: str, knowledge_sim: Callable[..., KnowledgeServer],
                                                              udesk_config: Callable[..., Any]) -> None:
    server = knowledge_sim(Sizes(questions=5, expressions=2, links=2, attachments=0, entities=12))
    config = udesk_config(db_url, {"kn": knowledge_settings(server)})
    assert jobs.sync(config, "kn", ("km_entities",)).status == "ok"
    entity = next(i for i, e in sorted(server.state.entities.items()) if e.get("valueList"))
    values = len(server.state.entities[entity]["valueList"])
    del server.state.entities[entity]  # deleted remotely
    summary = jobs.sync(config, "kn", ("km_entities",))
    assert summary.status == "ok" and summary.deleted == 1
    engine = open_engine(db_url)
    with engine.connect() as conn:
        flags = conn.execute(sa.text("SELECT is_deleted FROM udesk_km_entity_values WHERE entity_id = :e"),
                             {"e": entity}).scalars().all()
        others = conn.execute(sa.text("SELECT count(*) FROM udesk_km_entity_values WHERE entity_id <> :e "
                                      "AND is_deleted"), {"e": entity}).scalar()
    assert len(flags) == values and all(flags), "the values and synonyms of a deleted entity are flagged with it"
    assert others == 0
    engine.dispose()
