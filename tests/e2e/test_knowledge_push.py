"""Write-back to Udesk knowledge and KM entities: local updates, inserts and deletions arrive exactly,
one request per changed record (plus the documented lookups for upserts), none when nothing changed;
merges, conflicts under each policy, held rows; no echo."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from etl.connectors.udesk.knowledge.simulator.server import KnowledgeServer
from etl.connectors.udesk.knowledge.simulator.store import Sizes
from etl.core.mirror.db import open_engine
from etl.core.push.conflicts import open_conflicts
from etl.core.run import jobs
from tests.conftest import knowledge_settings
from tests.knowledge_check import assert_knowledge_matches

SIZES = Sizes(questions=40, expressions=12, links=8, attachments=4, entities=8)
PUSH = {"catalogs": {}, "questions": {"allow_delete": True}, "useful_expressions": {"allow_delete": True},
        "useful_links": {}, "km_entities": {}}


def _setup(url: str, knowledge_sim: Callable[..., KnowledgeServer], udesk_config: Callable[..., Any],
           push: dict[str, Any] | None = None, pull_before_push: bool = False) -> tuple[KnowledgeServer, Any, sa.Engine]:
    """These tests count a push's own requests: its pull first is off unless asked for (and tested
    at the end of this file)."""
    server = knowledge_sim(SIZES)
    config = udesk_config(url, {"kn": knowledge_settings(server, push=PUSH if push is None else push,
                                                         pull_before_push=pull_before_push)})
    assert jobs.sync(config, "kn").status == "ok"
    _reset(server)
    return server, config, open_engine(url)


def _reset(server: KnowledgeServer) -> None:
    server.stats["requests"] = 0
    server.stats["by_endpoint"].clear()


def _sql(engine: sa.Engine, statement: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def _calls(server: KnowledgeServer) -> Counter[str]:
    """Requests per method and resource ("PUT knowledge_questions"), ids left out."""
    out: Counter[str] = Counter()
    for key, count in server.stats["by_endpoint"].items():
        method, path = key.split(" ", 1)
        resource = re.sub(r"/\d+$", "", path.removeprefix("/open_api_v1/").removeprefix("/api/"))
        out[f"{method} {resource}"] += count
    return out


def _leaf(server: KnowledgeServer, knowledge_type: str, agent: int = 0) -> int:
    return server.state.leaves(knowledge_type, agent)[0]


def _mine(server: KnowledgeServer, knowledge_type: str, agent: int = 0) -> list[int]:
    return sorted(i for (t, i), a in server.state.owners.items() if t == knowledge_type and a == agent)


def test_local_updates_inserts_and_deletions_arrive_exactly(db_url: str, knowledge_sim: Callable[..., KnowledgeServer],
                                                            udesk_config: Callable[..., Any]) -> None:
    server, config, engine = _setup(db_url, knowledge_sim, udesk_config)
    state = server.state
    top = next(c for c in state.catalogs.values() if c["knowledge_type"] == "question" and c["agent_id"] == 0
               and c["parent_id"] == 0)
    q1, q2, q_gone = _mine(server, "question")[:3]
    expression, expression_gone = _mine(server, "useful_expression")[:2]
    link = _mine(server, "useful_link")[0]
    entity = next(e for e in state.entities.values() if len(e["valueList"] or []) >= 2)
    kept, changed, dropped = entity["valueList"][0], entity["valueList"][1], None
    if len(entity["valueList"]) > 2:
        dropped = entity["valueList"][2]
    # updates
    _sql(engine, "UPDATE udesk_knowledge_catalogs SET name = 'Renamed top' WHERE id = :i", i=top["id"])
    _sql(engine, "UPDATE udesk_knowledge_questions SET title = 'Edited title', lasts = false, last_min = '2027-01-01', "
                 "last_max = '2027-06-30' WHERE id = :i", i=q1)
    _sql(engine, "UPDATE udesk_knowledge_questions SET content = '<p>new answer</p>' WHERE id = :i", i=q2)
    _sql(engine, "UPDATE udesk_useful_expressions SET content = 'Thanks for your patience' WHERE id = :i", i=expression)
    _sql(engine, "UPDATE udesk_useful_links SET url = 'https://help.example.cn/moved' WHERE id = :i", i=link)
    _sql(engine, "UPDATE udesk_km_entities SET name = 'City', remark = 'edited here' WHERE id = :i", i=entity["id"])
    _sql(engine, "UPDATE udesk_km_entity_values SET original_value = 'Riga', synonyms = '[\"RIX\"]' "
                 "WHERE entity_id = :e AND value_id = :v", e=entity["id"], v=changed["id"])
    if dropped is not None:
        _sql(engine, "DELETE FROM udesk_km_entity_values WHERE entity_id = :e AND value_id = :v", e=entity["id"],
             v=dropped["id"])
    _sql(engine, "INSERT INTO udesk_km_entity_values (connection, entity_id, value_id, original_value, synonyms) "
                 "VALUES ('kn', :e, -1, 'Tallinn', '[\"TLL\"]')", e=entity["id"])
    # creates: a catalog with a child catalog holding a question; an expression, a link, an entity
    # with values; a catalog that exists already (upserted: matched, not created)
    existing = next(c for c in state.catalogs.values() if c["knowledge_type"] == "useful_link" and c["agent_id"] == 0
                    and c["parent_id"] == 0)
    _sql(engine, "INSERT INTO udesk_knowledge_catalogs (connection, id, knowledge_type, name, parent_id) VALUES "
                 "('kn', -1, 'question', 'Migrated', 0), ('kn', -2, 'question', 'Printers', -1), "
                 "('kn', -3, 'useful_link', :n, 0)", n=existing["name"])
    _sql(engine, "INSERT INTO udesk_knowledge_questions (connection, id, catalog_id, title, content, content_type, lasts) "
                 "VALUES ('kn', -1, -2, 'Paper jam?', '<p>Open tray 2</p>', 'html', true)")
    _sql(engine, "INSERT INTO udesk_useful_expressions (connection, id, catalog_id, content) VALUES ('kn', -1, :c, 'Hello')",
         c=_leaf(server, "useful_expression"))
    _sql(engine, "INSERT INTO udesk_useful_links (connection, id, catalog_id, name, url) "
                 "VALUES ('kn', -1, :c, 'Status page', 'https://status.example.cn')", c=_leaf(server, "useful_link"))
    _sql(engine, "INSERT INTO udesk_km_entities (connection, id, robot_id, name, api_name) VALUES ('kn', -1, 83, 'Colour', 'colour')")
    _sql(engine, "INSERT INTO udesk_km_entity_values (connection, entity_id, value_id, original_value, synonyms) "
                 "VALUES ('kn', -1, -1, 'red', '[\"crimson\"]'), ('kn', -1, -2, 'blue', '[]')")
    # deletions
    _sql(engine, "UPDATE udesk_knowledge_questions SET is_deleted = true WHERE id = :i", i=q_gone)
    _sql(engine, "UPDATE udesk_useful_expressions SET is_deleted = true WHERE id = :i", i=expression_gone)

    preview = jobs.push(config, "kn", dry_run=True)
    assert server.stats["requests"] == 0, "a dry run sends nothing"
    planned = {(name, w.operation): sorted(x.record_id for x in o.planned if x.operation == w.operation)
               for name, o in preview.tables.items() for w in o.planned}
    assert planned[("catalogs", "create")] == [-3, -2, -1] and planned[("catalogs", "update")] == [top["id"]]
    assert planned[("questions", "update")] == sorted([q1, q2]) and planned[("questions", "delete")] == [q_gone]
    assert planned[("km_entities", "update")] == [entity["id"]] and planned[("km_entities", "create")] == [-1]
    changes = {w.record_id: {n: (b, v) for n, b, v in w.changes} for w in preview.tables["questions"].planned}
    assert changes[q1]["title"] == (state.items["question"][q1]["title"], "Edited title")

    summary = jobs.push(config, "kn")
    assert summary.failed == 0, [(t, o.planned) for t, o in summary.tables.items()]
    assert state.catalogs[top["id"]]["name"] == "Renamed top"
    questions = state.items["question"]
    assert questions[q1]["title"] == "Edited title" and questions[q1]["lasts"] is False
    assert (questions[q1]["last_min"], questions[q1]["last_max"]) == ("2027-01-01", "2027-06-30")
    assert questions[q2]["content"] == "<p>new answer</p>" and q_gone not in questions
    migrated = [c for c in state.catalogs.values() if c["name"] == "Migrated"]
    printers = [c for c in state.catalogs.values() if c["name"] == "Printers"]
    assert len(migrated) == 1 and len(printers) == 1 and printers[0]["parent_id"] == migrated[0]["id"]
    jam = [q for q in questions.values() if q["title"] == "Paper jam?"]
    assert len(jam) == 1 and jam[0]["catalog_id"] == printers[0]["id"] and jam[0]["lasts"] is True
    assert len([c for c in state.catalogs.values() if c["name"] == existing["name"] and c["agent_id"] == 0
                and c["knowledge_type"] == "useful_link"]) == 1, "the upsert created a duplicate"
    expressions = state.items["useful_expression"]
    assert expressions[expression]["content"] == "Thanks for your patience" and expression_gone not in expressions
    assert [e["content"] for e in expressions.values()].count("Hello") == 1
    assert state.items["useful_link"][link]["url"] == "https://help.example.cn/moved"
    edited = state.entities[entity["id"]]
    assert (edited["name"], edited["remark"]) == ("City", "edited here")
    values = {v["originalValue"]: v["similarValueList"] for v in edited["valueList"]}
    assert values[kept["originalValue"]] == kept["similarValueList"] and values["Riga"] == ["RIX"]
    assert values["Tallinn"] == ["TLL"] and (dropped is None or dropped["originalValue"] not in values)
    colour = [e for e in state.entities.values() if e["apiName"] == "colour"]
    assert len(colour) == 1
    assert {v["originalValue"]: v["similarValueList"] for v in colour[0]["valueList"]} == {"red": ["crimson"], "blue": []}

    # one request per changed record; the catalog tree and the entity list looked up once each for
    # the upserts; a new entity with values is its create plus the update adding them
    assert _calls(server) == {
        "PUT knowledge_catalogs": 1, "POST knowledge_catalogs": 2, "GET knowledge_catalogs": 2,
        "PUT knowledge_questions": 2, "POST knowledge_questions": 1, "DELETE knowledge_questions": 1,
        "PUT useful_expressions": 1, "POST useful_expressions": 1, "DELETE useful_expressions": 1,
        "PUT useful_links": 1, "POST useful_links": 1,
        "PUT v1/entity": 2, "POST v1/entity": 1, "GET v1/entity/robot": 1}
    with engine.connect() as conn:
        for table in ("udesk_knowledge_catalogs", "udesk_knowledge_questions", "udesk_useful_expressions",
                      "udesk_useful_links", "udesk_km_entities", "udesk_km_entity_values"):
            key = "value_id" if table.endswith("values") else "id"
            assert conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {key} < 0")).scalar() == 0, table
        path = conn.execute(sa.text("SELECT depth, path FROM udesk_knowledge_catalogs WHERE name = 'Printers'")).one()
        assert tuple(path) == (2, "Migrated / Printers")

    _reset(server)
    assert jobs.push(config, "kn").requests == 0, "nothing changed: nothing is sent"
    # no echo: the next pull brings our own changes back as they are, and nothing is pushed again
    assert jobs.sync(config, "kn").status == "ok"
    with engine.connect() as conn:
        assert open_conflicts(conn) == []
    _reset(server)
    assert jobs.push(config, "kn").requests == 0
    assert_knowledge_matches(engine, state)
    engine.dispose()


def test_changes_to_different_fields_merge(db_url: str, knowledge_sim: Callable[..., KnowledgeServer],
                                           udesk_config: Callable[..., Any]) -> None:
    server, config, engine = _setup(db_url, knowledge_sim, udesk_config)
    state = server.state
    question = _mine(server, "question")[0]
    entity = next(e for e in state.entities.values() if e["valueList"])
    _sql(engine, "UPDATE udesk_knowledge_questions SET title = 'Local title' WHERE id = :i", i=question)
    _sql(engine, "INSERT INTO udesk_km_entity_values (connection, entity_id, value_id, original_value) "
                 "VALUES ('kn', :e, -1, 'local value')", e=entity["id"])
    with state.lock:  # meanwhile, on the remote: other fields of the same records
        state.items["question"][question]["content"] = "<p>remote answer</p>"
        entity["remark"] = "remote remark"
    assert jobs.sync(config, "kn").status == "ok"
    with engine.connect() as conn:
        assert open_conflicts(conn) == []
        row = conn.execute(sa.text("SELECT title, content FROM udesk_knowledge_questions WHERE id = :i"), {"i": question}).one()
        assert tuple(row) == ("Local title", "<p>remote answer</p>")
        assert conn.execute(sa.text("SELECT count(*) FROM udesk_km_entity_values WHERE value_id = -1")).scalar() == 1
    _reset(server)
    assert jobs.push(config, "kn").failed == 0
    assert _calls(server) == {"PUT knowledge_questions": 1, "PUT v1/entity": 1}
    remote = state.items["question"][question]
    assert (remote["title"], remote["content"]) == ("Local title", "<p>remote answer</p>")
    assert state.entities[entity["id"]]["remark"] == "remote remark"
    assert "local value" in [v["originalValue"] for v in state.entities[entity["id"]]["valueList"]]
    assert jobs.sync(config, "kn").status == "ok"
    assert_knowledge_matches(engine, state)
    engine.dispose()


@pytest.mark.parametrize("policy", ["remote_wins", "local_wins", "manual"])
def test_the_same_field_changed_on_both_sides_follows_the_policy(
        sqlite_url: str, knowledge_sim: Callable[..., KnowledgeServer], udesk_config: Callable[..., Any],
        policy: str) -> None:
    push = {name: {**settings, "conflict_policy": policy} for name, settings in PUSH.items()}
    server, config, engine = _setup(sqlite_url, knowledge_sim, udesk_config, push)
    state = server.state
    link = _mine(server, "useful_link")[0]
    entity = next(e for e in state.entities.values() if e["valueList"])
    _sql(engine, "UPDATE udesk_useful_links SET name = 'Local name' WHERE id = :i", i=link)
    _sql(engine, "UPDATE udesk_km_entity_values SET original_value = 'local' WHERE entity_id = :e AND value_id = :v",
         e=entity["id"], v=entity["valueList"][0]["id"])
    with state.lock:
        state.items["useful_link"][link]["name"] = "Remote name"
        entity["valueList"][0]["originalValue"] = "remote"
    assert jobs.sync(config, "kn").status == "ok"
    with engine.connect() as conn:
        conflicts = open_conflicts(conn)
        name = conn.execute(sa.text("SELECT name FROM udesk_useful_links WHERE id = :i"), {"i": link}).scalar()
    _reset(server)
    summary = jobs.push(config, "kn")
    remote_value = state.entities[entity["id"]]["valueList"][0]["originalValue"]
    if policy == "remote_wins":
        assert conflicts == [] and name == "Remote name" and summary.requests == 0
        assert state.items["useful_link"][link]["name"] == "Remote name" and remote_value == "remote"
    elif policy == "local_wins":
        assert conflicts == [] and name == "Local name"
        assert state.items["useful_link"][link]["name"] == "Local name" and remote_value == "local"
    else:
        assert sorted(c["field"] for c in conflicts) == ["name", "valueList"] and summary.requests == 0
        assert summary.tables["useful_links"].skipped_conflicts == 1
        by_field = {c["field"]: c for c in conflicts}
        jobs.resolve(config, by_field["name"]["id"], "local")  # the link keeps the local name
        jobs.resolve(config, by_field["valueList"]["id"], "remote")  # the entity takes the remote values
        summary = jobs.push(config, "kn")
        assert summary.failed == 0 and _calls(server) == {"PUT useful_links": 1}
        assert state.items["useful_link"][link]["name"] == "Local name" and remote_value == "remote"
    assert jobs.sync(config, "kn").status == "ok"
    _reset(server)
    assert jobs.push(config, "kn").requests == 0
    assert_knowledge_matches(engine, state)
    engine.dispose()


def test_a_refused_row_is_held_with_the_api_error_and_goes_through_once_fixed(
        sqlite_url: str, knowledge_sim: Callable[..., KnowledgeServer], udesk_config: Callable[..., Any]) -> None:
    server, config, engine = _setup(sqlite_url, knowledge_sim, udesk_config)
    state = server.state
    bad, good, moved = _mine(server, "question")[:3]
    _sql(engine, "UPDATE udesk_knowledge_questions SET lasts = false, last_min = '2027-06-30', last_max = '2027-01-01' "
                 "WHERE id = :i", i=bad)  # the validity ends before it starts
    _sql(engine, "UPDATE udesk_knowledge_questions SET title = 'Fine' WHERE id = :i", i=good)
    _sql(engine, "UPDATE udesk_knowledge_questions SET catalog_id = :c WHERE id = :i",
         c=_leaf(server, "question"), i=moved)  # the API cannot move a question
    summary = jobs.push(config, "kn")
    assert summary.tables["questions"].failed == 2 and summary.tables["questions"].ok == 1
    assert state.items["question"][good]["title"] == "Fine"
    held = {h["record_id"]: h["error"] for h in jobs.status(config)["connections"]["kn"]["held"]}
    assert held[bad] == "[2000] last_max cannot be less than or equal to last_min"
    assert "catalog_id of an existing record cannot be changed" in held[moved]
    _reset(server)
    again = jobs.push(config, "kn")
    assert again.requests == 0 and again.tables["questions"].skipped_held == 2, "held rows wait for --retry-failed"

    _sql(engine, "UPDATE udesk_knowledge_questions SET last_max = '2027-12-31' WHERE id = :i", i=bad)
    _sql(engine, "UPDATE udesk_knowledge_questions SET catalog_id = :c WHERE id = :i",
         c=state.items["question"][moved]["catalog_id"], i=moved)  # moved back: nothing left to send
    retried = jobs.push(config, "kn", retry_failed=True)
    assert retried.failed == 0 and retried.tables["questions"].ok == 1
    assert (state.items["question"][bad]["last_min"], state.items["question"][bad]["last_max"]) == ("2027-06-30", "2027-12-31")
    assert jobs.status(config)["connections"]["kn"]["held"] == []
    assert jobs.sync(config, "kn").status == "ok"
    assert_knowledge_matches(engine, state)
    engine.dispose()


def test_an_edit_made_while_its_push_is_under_way_survives_the_answer(
        db_url: str, knowledge_sim: Callable[..., KnowledgeServer], udesk_config: Callable[..., Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An edit made in the mirror between the push's read of a row and the write-back of the
    remote's answer (here, the moment the answer arrives) is neither lost nor taken for a conflict."""
    import etl.connectors.udesk.knowledge.push as loader

    server, config, engine = _setup(db_url, knowledge_sim, udesk_config,
                                    push={**PUSH, "questions": {"conflict_policy": "manual"}})
    state = server.state
    question = _mine(server, "question")[0]
    _sql(engine, "UPDATE udesk_knowledge_questions SET title = 'Sent title' WHERE id = :i", i=question)
    from etl.connectors.udesk.knowledge.push_shape import answer_record as answered

    def edit_then_answer(stream: str, body: Any, path: str) -> Any:
        _sql(engine, "UPDATE udesk_knowledge_questions SET title = 'Edited again', content = '<p>local answer</p>' "
                     "WHERE id = :i", i=question)
        return answered(stream, body, path)

    monkeypatch.setattr(loader, "answer_record", edit_then_answer)
    assert jobs.push(config, "kn").failed == 0
    monkeypatch.setattr(loader, "answer_record", answered)
    assert state.items["question"][question]["title"] == "Sent title"
    with engine.connect() as conn:
        assert open_conflicts(conn) == []
        row = conn.execute(sa.text("SELECT title, content FROM udesk_knowledge_questions WHERE id = :i"),
                           {"i": question}).one()
    assert tuple(row) == ("Edited again", "<p>local answer</p>"), "the edits made meanwhile are kept"
    _reset(server)
    second = jobs.push(config, "kn")
    assert second.failed == 0 and _calls(server) == {"PUT knowledge_questions": 1}
    remote = state.items["question"][question]
    assert (remote["title"], remote["content"]) == ("Edited again", "<p>local answer</p>")
    _reset(server)
    assert jobs.push(config, "kn").requests == 0
    assert jobs.sync(config, "kn").status == "ok"
    assert_knowledge_matches(engine, state)
    engine.dispose()


def test_an_edit_made_to_a_new_row_while_its_create_is_under_way_moves_to_the_created_row(
        db_url: str, knowledge_sim: Callable[..., KnowledgeServer], udesk_config: Callable[..., Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A new question edited while its create is under way: the created row keeps the edit as a
    local change (its raw is what the remote holds), and the next push sends it."""
    import etl.connectors.udesk.knowledge.push_create as loader

    server, config, engine = _setup(db_url, knowledge_sim, udesk_config)
    state = server.state
    _sql(engine, "INSERT INTO udesk_knowledge_questions (connection, id, catalog_id, title, content, content_type, lasts) "
                 "VALUES ('kn', -1, :c, 'Sent title', '<p>Open tray 2</p>', 'html', true)", c=_leaf(server, "question"))
    from etl.connectors.udesk.knowledge.push_shape import answer_record as answered
    before = set(state.items["question"])

    def edit_then_answer(stream: str, body: Any, path: str) -> Any:
        if stream == "questions":
            _sql(engine, "UPDATE udesk_knowledge_questions SET content = '<p>Edited meanwhile</p>' WHERE id = -1")
        return answered(stream, body, path)

    monkeypatch.setattr(loader, "answer_record", edit_then_answer)
    assert jobs.push(config, "kn").failed == 0
    monkeypatch.setattr(loader, "answer_record", answered)
    (created,) = set(state.items["question"]) - before
    assert state.items["question"][created]["content"] == "<p>Open tray 2</p>"
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT title, content FROM udesk_knowledge_questions WHERE id = :i"),
                           {"i": created}).one()
        assert conn.execute(sa.text("SELECT count(*) FROM udesk_knowledge_questions WHERE id < 0")).scalar() == 0
    assert tuple(row) == ("Sent title", "<p>Edited meanwhile</p>")
    _reset(server)
    assert jobs.push(config, "kn").failed == 0 and _calls(server) == {"PUT knowledge_questions": 1}
    assert state.items["question"][created]["content"] == "<p>Edited meanwhile</p>"
    _reset(server)
    assert jobs.push(config, "kn").requests == 0
    assert jobs.sync(config, "kn").status == "ok"
    assert_knowledge_matches(engine, state)
    engine.dispose()


def test_a_push_pulls_first_and_never_overwrites_an_unseen_remote_edit(
        db_url: str, knowledge_sim: Callable[..., KnowledgeServer], udesk_config: Callable[..., Any]) -> None:
    server, config, engine = _setup(db_url, knowledge_sim, udesk_config, pull_before_push=True)
    state = server.state
    question = _mine(server, "question")[0]
    _sql(engine, "UPDATE udesk_knowledge_questions SET title = 'Local title' WHERE id = :i", i=question)
    state.items["question"][question] = {**state.items["question"][question], "title": "Remote title"}
    summary = jobs.push(config, "kn")
    assert state.items["question"][question]["title"] == "Remote title", "the remote edit is not overwritten"
    assert summary.tables["questions"].skipped_conflicts == 1
    with engine.connect() as conn:
        conflicts = open_conflicts(conn)
    assert [(c["field"], c["local"], c["remote"]) for c in conflicts] == [("title", "Local title", "Remote title")]
    assert not [k for k in _calls(server) if not k.startswith("GET")], "nothing was written"
    engine.dispose()
