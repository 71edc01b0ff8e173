"""A ServiceGo object's table and its indexes, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

from etl.connectors.udesk.servicego.models import ObjectSchema, index_name
from etl.core.mirror.db import open_engine, upgrade


def test_index_names_keep_within_postgresqls_63_characters() -> None:
    assert index_name("servicego_case", "live") == "ix_servicego_case_live"
    long_a, long_b = "servicego_" + "a" * 50, "servicego_" + "a" * 49 + "b"
    names = {index_name(t, w) for t in (long_a, long_b) for w in ("live", "create_time")}
    assert len(names) == 4 and all(len(n) <= 63 for n in names)


def test_an_object_with_a_long_name_gets_its_table_and_indexes(db_url: str) -> None:
    engine = open_engine(db_url)
    upgrade(engine)
    schema = ObjectSchema("custom_object_with_a_name_as_long_as_a_tenant_may_choose_it")
    with engine.begin() as conn:
        assert schema.ensure(conn, {"createTime": "field_type_datetime", "name": "field_type_text"}) == [
            "createTime", "name"]
    indexes = {tuple(i["column_names"]) for i in sa.inspect(engine).get_indexes(schema.table.name)}
    assert {("connection", "is_deleted", "last_seen_at"), ("connection", "is_deleted", "create_time")} <= indexes
    engine.dispose()
