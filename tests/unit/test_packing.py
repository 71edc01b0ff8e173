"""Packing records straight into driver-ready tuples (RowBuilder.packer, TableWriter.pack_records)
must give exactly what building row dicts and packing those gives: the slow path is the
reference, with its problem reports, and the fast one only a shortcut."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from etl.config import parse_config
from etl.connectors.eddydesk.simulator.data import Sizes
from etl.connectors.eddydesk.streams import BY_NAME, STREAMS
from etl.connectors.eddydesk.writers import helpdesk_writer
from etl.core.mirror.rows import PackingBuilder

DIALECTS = {"sqlite": sqlite.dialect(), "postgresql": postgresql.psycopg.dialect()}


def _settings(**extra: Any) -> Any:
    config = parse_config({"mirror": {"url": "sqlite://"}, "connections": {"c": {
        "system": "eddydesk", "base_url": "http://127.0.0.1:1/api/v2", "email": "a@example.com",
        "api_key_env": "UNUSED_KEY", "timezone": "Asia/Kolkata", **extra}}})  # offsets with minutes, too
    return config.connections["c"]


def _records(base: str) -> dict[str, list[dict[str, Any]]]:
    """A page or two of every stream, as the simulator serves them."""
    out: dict[str, list[dict[str, Any]]] = {}
    with httpx.Client(base_url=base + "/", auth=("admin@example.com", "sim-api-key")) as http:
        def page(path: str) -> list[dict[str, Any]]:
            answer = http.get(path, params={"page": 1})
            if answer.status_code == 404:  # a custom field without options
                return []
            data = answer.raise_for_status().json()["data"]
            return list(data.values()) if isinstance(data, dict) else data

        for stream in STREAMS:
            if "{parent_id}" not in stream.path:
                out[stream.name] = page(stream.path)
                continue
            for parent in page(BY_NAME[stream.parent or ""].path):  # the first parent with children
                out[stream.name] = page(stream.path.format(parent_id=parent["id"]))
                if out[stream.name]:
                    break
    return out


ODD_TICKETS: list[dict[str, Any]] = [
    # every documented empty shape, numbers and flags as strings, members missing
    {"id": 900001, "date_created": "null", "date_updated": "0000-00-00 00:00:00", "sla_date": "",
     "freeze": "1", "deleted": "false", "priority_id": "7", "ticket_lock": True, "title": 12.5,
     "custom_fields": [{"id": 3, "field_type": "text", "field_value": {"nested": [1, 2]}}], "tags": [1, "x"]},
    {"id": 900002},
    # DST change days in other zones, posts' date shape, an ISO date with its own offset
    {"id": 900003, "date_created": "2025-03-30 03:30:00", "date_updated": "2025-10-26 03:30:00",
     "rate_date": "17:45:00 26.01.2017", "freeze_date": "2018-03-22T11:29:59.000+08:00",
     "followers": ["5", 6], "cc": ["a@example.com"]},
]

BAD_TICKETS: list[dict[str, Any]] = [
    {"id": 900101, "date_created": "31.02.2020 25:61", "date_updated": "2020-01-01 10:00:00"},
    {"id": 900102, "freeze": "maybe", "priority_id": "seven", "date_updated": "yesterday"},
]


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_packing_straight_from_records_equals_building_rows_first(simulator, dialect):
    server = simulator(Sizes(tickets=40, users=20, organizations=5, kb_categories=5, kb_articles=8))
    records = _records(server.url)
    records["tickets"] += ODD_TICKETS + BAD_TICKETS
    for store_keys in (False, True):
        settings = _settings(store_api_keys=store_keys)
        for stream in STREAMS:
            writer = helpdesk_writer(stream, settings, "c")
            given = records[stream.name]
            assert given, stream.name
            scope: dict[str, Any] = stream.scope
            if stream.name.endswith("_options") and stream.parent_column is not None:
                scope = {**stream.scope, stream.parent_column: 5}
            assert isinstance(writer.builder, PackingBuilder)
            writer.builder.packer(DIALECTS[dialect])(given[0])  # the shortcut takes the simulator's records
            fast = writer.pack_records(given, DIALECTS[dialect], scope=scope)
            slow = writer.pack(writer.prepare(given, scope=scope), DIALECTS[dialect])
            assert fast.columns == slow.columns, stream.name
            assert fast.rows == slow.rows, stream.name
            assert fast.problems == slow.problems, stream.name
    bad = helpdesk_writer(BY_NAME["tickets"], _settings(), "c").pack_records(BAD_TICKETS, DIALECTS[dialect])
    assert bad.problems == 4  # each unusable value is named, and its column left NULL
    columns = bad.columns
    row = bad.rows[900101][0]
    assert row[columns.index("date_created")] is None and row[columns.index("date_updated")] is not None


def test_packed_timestamps_are_what_sqlalchemy_stores(tmp_path):
    """The text a packed SQLite timestamp carries reads back as the same UTC time through SQLAlchemy."""
    writer = helpdesk_writer(BY_NAME["tickets"], _settings(), "c")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 't.sqlite'}")
    table = sa.Table("t", sa.MetaData(), sa.Column("at", sa.DateTime(timezone=True)))
    table.create(engine)
    packed = writer.pack_records([{"id": 1, "date_created": "2017-01-13 12:36:58"}], engine.dialect)
    text = packed.rows[1][0][packed.columns.index("date_created")]
    assert text == "2017-01-13 07:06:58.000000"  # Asia/Kolkata is UTC+05:30
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO t (at) VALUES (:at)"), {"at": text})
        read = conn.execute(sa.select(table.c.at)).scalar_one()
    assert read.isoformat() == "2017-01-13T07:06:58"


def test_child_rows_follow_their_tables_column_order(simulator):
    """Child rows are bare tuples: every value must sit under its own column (the names and
    types line up, the parent's id is in the parent column)."""
    server = simulator(Sizes(tickets=40, users=20, organizations=5, kb_categories=5, kb_articles=8))
    records = _records(server.url)
    records["tickets"] += ODD_TICKETS
    checked = 0
    for stream in STREAMS:
        if stream.child_rows is None:
            continue
        for record in records[stream.name]:
            made = stream.child_rows(record, "c")
            assert set(made) == {table for table, _ in stream.child_tables}, stream.name
            for table, parent_column in stream.child_tables:
                names = [c.name for c in table.columns]
                for values in made[table]:
                    row = dict(zip(names, values, strict=True))
                    assert row["connection"] == "c" and row[parent_column] == record["id"], (table.name, row)
                    for column in table.columns:
                        value = row[column.name]
                        if value is not None and isinstance(column.type, sa.Integer):
                            assert type(value) is int, (table.name, column.name, value)
                        elif value is not None and isinstance(column.type, sa.String) and column.name != "field_type":
                            assert type(value) is str, (table.name, column.name, value)
                    checked += 1
    assert checked > 100
    people = BY_NAME["tickets"].child_rows(ODD_TICKETS[2], "c")  # type: ignore[misc]
    participants = [dict(zip([c.name for c in t.columns], r, strict=True))
                    for t, rows in people.items() if t.name == "eddydesk_ticket_participants" for r in rows]
    assert [(p["role"], p["position"], p["email"], p["user_id"]) for p in participants] == [
        ("cc", 0, "a@example.com", None), ("follower", 0, None, 5), ("follower", 1, None, 6)]


ODD_SERVICEGO: list[dict[str, Any]] = [
    # empty values of every kind, numbers as numbers, a member missing, an unknown field
    {"id": 7000001, "fieldDataList": [
        {"fieldApiName": "name", "fieldTypeApiName": "field_type_single_line", "fieldValue": ""},
        {"fieldApiName": "annualRevenue", "fieldTypeApiName": "field_type_number", "fieldValue": 12.5},
        {"fieldApiName": "createTime", "fieldTypeApiName": "field_type_date_time", "fieldValue": ""},
        {"fieldApiName": "level", "fieldTypeApiName": "field_type_single_select", "fieldValue": "vip"},
        {"fieldApiName": "description", "fieldTypeApiName": "field_type_rich_text", "fieldValue": "<p/>",
         "richText": "not an object"},
        {"fieldApiName": "notInTheSchema", "fieldTypeApiName": "field_type_single_line", "fieldValue": "x"}]},
    {"id": 7000002},
    {"id": 7000003, "fieldDataList": None},
]
BAD_SERVICEGO: list[dict[str, Any]] = [
    {"id": 7000101, "fieldDataList": [
        {"fieldApiName": "annualRevenue", "fieldTypeApiName": "field_type_number", "fieldValue": "lots"},
        {"fieldApiName": "updateTime", "fieldTypeApiName": "field_type_date_time", "fieldValue": "2020-13-45 10:00"}]},
    {"id": 7000102, "fieldDataList": ["not an entry"]},
]


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_servicego_records_pack_straight_as_their_rows_would(dialect):
    """RecordBuilder.packer against building the row dicts first, for every field type."""
    from etl.connectors.udesk.servicego.models import FIELDS, ObjectSchema, RecordBuilder, fields_of
    from etl.connectors.udesk.servicego.pull import object_writer
    from etl.connectors.udesk.servicego.settings import ServiceGoConnection, ServiceGoObject
    from etl.connectors.udesk.servicego.simulator.store import ServiceGoState, Sizes

    state = ServiceGoState(Sizes(customers=20, contacts=20, cases=20))
    settings = parse_config({"mirror": {"url": "sqlite://"}, "connections": {"c": {
        "system": "servicego", "base_url": "http://127.0.0.1:1/api", "email": "a@example.com",
        "api_token_env": "UNUSED", "objects": [{"name": "customer"}]}}}).connections["c"]
    assert isinstance(settings, ServiceGoConnection)
    engine = sa.create_engine("sqlite://")
    FIELDS.create(engine)  # the registry the columns are named in
    for obj in ("customer", "contact", "case"):
        records = [orjson.loads(state.json(obj, i)) for i in list(state.records[obj])[:20]]
        if obj == "customer":
            records += ODD_SERVICEGO + BAD_SERVICEGO
        schema = ObjectSchema(obj)
        with engine.begin() as conn:
            schema.ensure(conn, fields_of(records[0]))
        writer = object_writer(schema, settings, ServiceGoObject(name=obj), "c")
        assert isinstance(writer.builder, RecordBuilder)
        writer.builder.packer(DIALECTS[dialect])(records[0])  # the shortcut takes the simulator's records
        fast = writer.pack_records(records, DIALECTS[dialect])
        slow = writer.pack(writer.prepare(records), DIALECTS[dialect])
        assert fast.columns == slow.columns, obj
        assert fast.rows == slow.rows, obj
        assert fast.problems == slow.problems, obj
        if obj == "customer":
            assert fast.problems == 3  # each unusable value (and entry) is named, and left NULL
