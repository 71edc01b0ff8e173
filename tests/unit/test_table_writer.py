"""TableWriter.apply on a real database: what it looks up, and what it concludes from it."""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa

from etl.config import parse_config
from etl.connectors.udesk.servicego.models import ObjectSchema, fields_of
from etl.connectors.udesk.servicego.pull import object_writer
from etl.connectors.udesk.servicego.settings import ServiceGoConnection, ServiceGoObject
from etl.connectors.udesk.servicego.simulator.store import ServiceGoState, Sizes
from etl.core.mirror.db import open_engine, upgrade


def _lookups(engine: sa.Engine) -> list[tuple[str, Any]]:
    """Every content-hash lookup the engine runs, with its parameters."""
    seen: list[tuple[str, Any]] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "content_hash" in statement:
            seen.append((statement, parameters))

    return seen


def test_a_backfill_in_id_order_looks_up_only_ids_the_table_can_hold(db_url):
    state = ServiceGoState(Sizes(customers=80, contacts=0, cases=0))
    records = [orjson.loads(state.json("customer", i)) for i in sorted(state.records["customer"])]
    settings = parse_config({"mirror": {"url": db_url}, "connections": {"c": {
        "system": "servicego", "base_url": "http://127.0.0.1:1/api", "email": "a@example.com",
        "api_token_env": "UNUSED", "objects": [{"name": "customer"}]}}}).connections["c"]
    assert isinstance(settings, ServiceGoConnection)
    engine = open_engine(db_url)
    upgrade(engine)
    schema = ObjectSchema("customer")
    with engine.begin() as conn:
        schema.ensure(conn, fields_of(records[0]))
    lookups = _lookups(engine)

    def apply(connection: str, batch: list[dict[str, Any]]) -> Any:
        writer = object_writer(schema, settings, ServiceGoObject(name="customer"), connection)
        with engine.begin() as conn:
            return writer.apply(conn, writer.pack_records(batch, conn.dialect), 1).stats

    # another account's rows, with higher ids, are not this connection's
    assert apply("other", records[40:]).inserted == 40
    lookups.clear()
    first = apply("c", records[:50])
    assert (first.inserted, first.updated, first.unchanged) == (50, 0, 0)
    assert lookups == []  # nothing at or below this connection's largest id (none): no lookup
    changed = [{**r, "updateTime": "2030-01-01 00:00"} for r in records[25:30]]
    second = apply("c", changed + records[30:75])
    assert (second.inserted, second.updated, second.unchanged) == (25, 5, 20)
    assert len(lookups) == 1  # the 25 ids a row could hold were looked up, the 25 new ones not
    looked_up = [v for v in (lookups[0][1].values() if isinstance(lookups[0][1], dict) else lookups[0][1])
                 if isinstance(v, int) and not isinstance(v, bool)]
    assert sorted(looked_up) == sorted(r["id"] for r in records[25:50])
    engine.dispose()
