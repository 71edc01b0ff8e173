"""Compare the Udesk knowledge mirror with the knowledge simulator's data, field by field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from etl.connectors.udesk.knowledge.simulator.store import KnowledgeState

LISTS = {"question": "udesk_knowledge_questions", "useful_expression": "udesk_useful_expressions",
         "useful_link": "udesk_useful_links", "attachment": "udesk_knowledge_attachments"}


def _rows(conn: sa.Connection, table: str) -> dict[int, Any]:
    return {r.id: r._mapping for r in conn.execute(sa.text(f"SELECT * FROM {table} WHERE connection = 'kn'"))}


def _raw(row: Any) -> Any:
    return row["raw"] if isinstance(row["raw"], dict) else json.loads(row["raw"])


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def assert_knowledge_matches(engine: sa.Engine, state: KnowledgeState) -> None:
    with engine.connect() as conn:
        catalogs = _rows(conn, "udesk_knowledge_catalogs")
        live = {i: r for i, r in catalogs.items() if not r["is_deleted"]}
        assert set(live) == set(state.catalogs)
        for catalog_id, catalog in state.catalogs.items():
            row = live[catalog_id]
            assert (row["name"], row["parent_id"], row["knowledge_type"], row["agent_id"]) == (
                catalog["name"], catalog["parent_id"], catalog["knowledge_type"], catalog["agent_id"])
            assert row["depth"] == state.depth(catalog_id) <= 4
        for knowledge_type, table in LISTS.items():
            rows = _rows(conn, table)
            live = {i: r for i, r in rows.items() if not r["is_deleted"]}
            remote = state.items[knowledge_type]
            assert set(live) == set(remote), f"{table}: {set(live) ^ set(remote)}"
            for item_id, record in remote.items():
                row = live[item_id]
                assert _raw(row) == record, f"{table} {item_id}"
                assert row["agent_id"] == state.owners[(knowledge_type, item_id)]
                assert row["catalog_id"] == record["catalog_id"]
                if knowledge_type == "question":
                    assert (row["title"], row["content"], row["content_type"], bool(row["lasts"])) == (
                        record["title"], record["content"], record["content_type"], record["lasts"])
                    assert (row["last_min"], row["last_max"]) == (record["last_min"], record["last_max"])
                    assert _utc(row["updated_at"]) == datetime.fromisoformat(record["updated_at"]).astimezone(UTC)
                if knowledge_type == "attachment":
                    size = record["file_size"]
                    assert row["file_size"] == (None if size is None else int(size))
        entities = {i: r for i, r in _rows(conn, "udesk_km_entities").items() if not r["is_deleted"]}
        assert set(entities) == set(state.entities)
        values = conn.execute(sa.text(
            "SELECT entity_id, value_id, original_value, synonyms FROM udesk_km_entity_values WHERE connection = 'kn'"
        )).all()
        got = {(e, v): (o, s if isinstance(s, list) else json.loads(s)) for e, v, o, s in values}
        want = {(e["id"], v["id"]): (v["originalValue"], v["similarValueList"])
                for e in state.entities.values() for v in e["valueList"] or []}
        assert got == want
        for entity_id, entity in state.entities.items():
            row = entities[entity_id]
            assert (row["api_name"], row["robot_id"], row["type"], row["sys_entity_identifier"]) == (
                entity["apiName"], entity["robotId"], entity["type"], entity["sysEntityIdentifier"])
