"""ServiceGo extraction end to end: simulator over HTTP -> wide tables, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson
import sqlalchemy as sa
from structlog.testing import capture_logs

from etl.connectors.udesk.servicego.simulator.server import ServiceGoServer
from etl.connectors.udesk.servicego.simulator.store import Sizes
from etl.core import log
from etl.core.mirror.db import open_engine
from etl.core.pull.writer_process import WriterProcess
from etl.core.run import jobs
from tests.conftest import servicego_settings
from tests.servicego_check import assert_servicego_matches


def _requests(server: ServiceGoServer) -> int:
    return int(server.stats["requests"])


def test_full_then_incremental_keeps_50k_records_exact(db_url: str, servicego_sim: Callable[..., ServiceGoServer],
                                                       udesk_config: Callable[..., Any]) -> None:
    server = servicego_sim(Sizes(customers=8_000, contacts=17_000, cases=25_000))
    config = udesk_config(db_url, {"sg": servicego_settings(server)})
    engine = open_engine(db_url)

    first = jobs.sync(config, "sg")
    assert first.status == "ok" and first.inserted == 50_000
    backfill = _requests(server)
    # pages of 100; per object a probe, an empty closing page at most, and the deletion count
    assert backfill <= math.ceil(50_000 / 100) + 3 * 3
    assert_servicego_matches(engine, server.state)

    changes = server.state.random_changes(seed=5, updates=150, creates=40, deletes=30)
    before = _requests(server)
    second = jobs.sync(config, "sg")
    incremental = _requests(server) - before
    assert second.status == "ok", second.errors
    assert_servicego_matches(engine, server.state)
    changed = sum(len(v) for v in changes.values())
    # per object: a probe, the updateTime scan, a count; then about 8 counts per deletion
    assert incremental <= 3 * 3 + math.ceil(changed / 100) * 3 + 10 * len(changes["deleted"]), incremental
    assert incremental < backfill * 0.7

    before = _requests(server)
    quiet = jobs.sync(config, "sg")
    assert (quiet.inserted, quiet.updated, quiet.deleted) == (0, 0, 0)
    assert _requests(server) - before <= 3 * 3
    engine.dispose()


def test_a_field_added_remotely_becomes_a_column(db_url: str, servicego_sim: Callable[..., ServiceGoServer],
                                                  udesk_config: Callable[..., Any]) -> None:
    server = servicego_sim(Sizes(customers=50, contacts=200, cases=100))
    config = udesk_config(db_url, {"sg": servicego_settings(server)})
    assert jobs.sync(config, "sg").status == "ok"

    state = server.state
    state.add_field("contact", "wechatId")
    some = state.ids["contact"][:5]
    for record_id in some:
        state.update("contact", record_id, {"wechatId": f"wx-{record_id}"})
    summary = jobs.sync(config, "sg")
    assert summary.status == "ok", summary.errors

    engine = open_engine(db_url)
    columns = {c["name"] for c in sa.inspect(engine).get_columns("servicego_contact")}
    assert "wechat_id" in columns
    assert_servicego_matches(engine, state)
    with engine.connect() as conn:
        values: dict[Any, Any] = dict(conn.execute(sa.text("SELECT id, wechat_id FROM servicego_contact WHERE wechat_id IS NOT NULL")).all())
    assert values == {i: f"wx-{i}" for i in some}
    engine.dispose()


def test_a_field_added_during_a_scan_through_the_writer_process(db_url: str,
                                                             servicego_sim: Callable[..., ServiceGoServer],
                                                             udesk_config: Callable[..., Any]) -> None:
    """The writer process adds the column when the pages show the field; the records read before
    it existed are read again by the next run (a full scan), so the mirror ends exact."""
    server = servicego_sim(Sizes(customers=300, contacts=3_000, cases=300))
    config = udesk_config(db_url, {"sg": servicego_settings(server)}, writer_process_min_pages=2)
    state = server.state
    # on the last of 30 pages: fetching runs at most about a dozen pages ahead of the answers
    late = state.ids["contact"][-3:]

    def meddle(stream: str, done: int, total: int | None) -> None:
        if stream == "servicego/contact" and state.objects["contact"].field("wechatId") is None:
            state.add_field("contact", "wechatId")
            for record_id in late:
                state.update("contact", record_id, {"wechatId": f"wx-{record_id}"})

    log.configure("info", json=True)
    try:
        with capture_logs() as logs:
            first = jobs.sync(config, "sg", progress=meddle, forked_writer=WriterProcess())
    finally:
        log.configure("warning", json=True)
    assert first.status == "ok", first.errors
    assert {e["object"] for e in logs if e["event"] == "scan_through_writer_process"} == {"customer", "contact", "case"}
    engine = open_engine(db_url)
    with engine.connect() as conn:
        values: dict[Any, Any] = dict(conn.execute(sa.text("SELECT id, wechat_id FROM servicego_contact WHERE wechat_id IS NOT NULL")).all())
        state_row = conn.execute(sa.text("SELECT state FROM sync_state WHERE stream = 'servicego/contact'")).scalar_one()
    saved = state_row if isinstance(state_row, dict) else orjson.loads(state_row)  # JSONB on PostgreSQL
    assert saved["rescan"] is True, "the records read before the field existed are read again"
    assert values == {i: f"wx-{i}" for i in late}, "the pages after the addition fill the new column at once"

    before = server.requests_to("POST /v1/datas/scrollSearch")
    second = jobs.sync(config, "sg")
    assert second.status == "ok", second.errors
    assert server.requests_to("POST /v1/datas/scrollSearch") - before > 30, "the contacts were read again"
    assert_servicego_matches(engine, state)
    engine.dispose()


def test_reconcile_finds_deletions_with_the_scroll_ids(sqlite_url: str, servicego_sim: Callable[..., ServiceGoServer],
                                                       udesk_config: Callable[..., Any]) -> None:
    server = servicego_sim(Sizes(customers=300, contacts=300, cases=300))
    config = udesk_config(sqlite_url, {"sg": servicego_settings(server)})
    jobs.sync(config, "sg")
    for obj in ("customer", "contact", "case"):
        for record_id in server.state.ids[obj][10:13]:
            server.state.delete(obj, record_id)
    summary = jobs.sync(config, "sg", reconcile_deletes=True)
    assert summary.deleted == 9
    assert server.requests_to("GET /v1/datas/scroll") == 3 * 3  # 300 ids per object: three pages
    assert_servicego_matches(open_engine(sqlite_url), server.state)


def test_changes_during_the_scan_are_read_by_the_next_run(sqlite_url: str,
                                                          servicego_sim: Callable[..., ServiceGoServer],
                                                          udesk_config: Callable[..., Any]) -> None:
    server = servicego_sim(Sizes(customers=100, contacts=1_500, cases=100))
    config = udesk_config(sqlite_url, {"sg": servicego_settings(server)})
    jobs.sync(config, "sg")
    server.state.random_changes(seed=2, updates=20, creates=5, deletes=0)
    state = server.state
    touched: list[int] = []

    def meddle(stream: str, done: int, total: int | None) -> None:
        # a record the scan has passed changes while the scan goes on
        if stream == "servicego/contact" and not touched:
            record_id = state.ids["contact"][0]
            state.update("contact", record_id, {"name": "changed mid-scan"})
            touched.append(record_id)

    jobs.sync(config, "sg", full=True, progress=meddle)
    assert touched
    jobs.sync(config, "sg")
    assert_servicego_matches(open_engine(sqlite_url), state)


def test_filter_and_custom_logic_select_the_mirrored_subset(sqlite_url: str,
                                                            servicego_sim: Callable[..., ServiceGoServer],
                                                            udesk_config: Callable[..., Any]) -> None:
    server = servicego_sim(Sizes(customers=50, contacts=400, cases=400))
    objects = [
        {"name": "case", "filter_id": 2},  # status not closed
        {"name": "contact", "judge_strategy": 3, "custom_judge_logic": "1 or 2 and 3", "conditions": [
            {"field": "tags", "operator": "is_any", "value": "t_vip"},
            {"field": "youxiang", "operator": "contains_any", "value": "example.cn"},
            {"field": "calcFormula", "operator": "greater_than", "value": "50"},
        ]},
    ]
    config = udesk_config(sqlite_url, {"sg": servicego_settings(server, objects=objects)})
    assert jobs.sync(config, "sg").status == "ok"
    engine = open_engine(sqlite_url)
    state = server.state
    with engine.connect() as conn:
        cases = set(conn.execute(sa.text("SELECT id FROM servicego_case WHERE NOT is_deleted")).scalars())
        contacts = set(conn.execute(sa.text("SELECT id FROM servicego_contact WHERE NOT is_deleted")).scalars())
    assert cases == {i for i, r in state.records["case"].items() if r["status"]["fieldValue"] != "closed"}

    def wanted(r: dict[str, Any]) -> bool:
        vip = "t_vip" in r["tags"]["fieldValue"].split(",")
        mail = any("example.cn" in t["tagValue"] for t in r["youxiang"].get("tagValueList", []))
        return vip or (mail and float(r["calcFormula"]["fieldValue"]) > 50)

    assert contacts == {i for i, r in state.records["contact"].items() if wanted(r)}
    assert 0 < len(contacts) < 400

    # a closed case leaves the filter: the next run marks it deleted in the mirror
    open_case = next(i for i in sorted(cases))
    state.update("case", open_case, {"status": "closed"})
    jobs.sync(config, "sg")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT is_deleted FROM servicego_case WHERE id = :i"), {"i": open_case}).scalar()


def test_the_udesk_limit_is_never_exceeded(sqlite_url: str, servicego_sim: Callable[..., ServiceGoServer],
                                           udesk_config: Callable[..., Any]) -> None:
    # the vendor's 60/minute, scaled to 20 per one-second "minute" so the test is paced
    server = servicego_sim(Sizes(customers=500, contacts=1_500, cases=1_000), per_minute=20, minute_seconds=1.0)
    config = udesk_config(sqlite_url, {"sg": servicego_settings(server, rate_limit={"per_minute": 20,
                                                                                     "window_seconds": 1.0})})
    summary = jobs.sync(config, "sg")
    assert summary.status == "ok", summary.errors
    assert summary.requests > 30 and summary.rate_limit_wait_seconds > 0
    assert server.app.state.limit.rejections == 0
    assert_servicego_matches(open_engine(sqlite_url), server.state)


def _related_rows(engine: sa.Engine) -> tuple[dict[int, set[int]], dict[int, set[tuple[int, int]]]]:
    related: dict[int, set[int]] = {}
    relations: dict[int, set[tuple[int, int]]] = {}
    with engine.connect() as conn:
        for parent, record in conn.execute(sa.text(
                "SELECT parent_id, record_id FROM servicego_related WHERE object_name = 'contact'")):
            related.setdefault(parent, set()).add(record)
        for major, data, relation in conn.execute(sa.text(
                "SELECT major_id, data_id, relation_id FROM servicego_relations")):
            relations.setdefault(major, set()).add((data, relation))
    return related, relations


def test_related_records_and_relations_follow_the_changed_records(
        sqlite_url: str, servicego_sim: Callable[..., ServiceGoServer], udesk_config: Callable[..., Any]) -> None:
    server = servicego_sim(Sizes(customers=40, contacts=150, cases=120))
    objects = [{"name": "customer", "related": [{"object": "contact"}]},
               {"name": "contact"},
               {"name": "case", "relations_ui_id": 4809}]
    config = udesk_config(sqlite_url, {"sg": servicego_settings(server, objects=objects)})
    state = server.state

    def expected() -> tuple[dict[int, set[int]], dict[int, set[tuple[int, int]]]]:
        related = {c: set(state.related_ids("customer", c, "contact")) for c in state.ids["customer"]}
        relations = {m: {(r, t) for r, t in links if state.object_of(r)} for m, links in state.relations.items()
                     if m in state.records["case"]}
        return ({k: v for k, v in related.items() if v}, {k: v for k, v in relations.items() if v})

    assert jobs.sync(config, "sg").status == "ok"
    engine = open_engine(sqlite_url)
    assert _related_rows(engine) == expected()
    assert server.requests_to("GET /v1/data/relatedDatas") == 40
    assert server.requests_to("GET /v1/selfObjectRelationData") == 120

    # a contact moves to another customer (both customers' lists change), a relation is added
    contact = state.ids["contact"][0]
    old_customer = int(state.value("contact", contact, "organization") or 0)
    new_customer = next(c for c in state.ids["customer"] if c != old_customer)
    state.update("contact", contact, {"organization": new_customer})
    for customer in (old_customer, new_customer):
        if customer:
            state.update("customer", customer, {"name": f"Customer {customer} (touched)"})
    case = state.ids["case"][5]
    state.relate(case, [state.ids["case"][6]], 8)
    before = server.requests_to("GET /v1/selfObjectRelationData")
    assert jobs.sync(config, "sg").status == "ok"
    assert _related_rows(engine) == expected()
    assert server.requests_to("GET /v1/selfObjectRelationData") - before == 1  # only the changed case


def test_the_live_rows_indexes_are_added_to_older_tables_and_used(db_url: str,
                                                                 servicego_sim: Callable[..., ServiceGoServer],
                                                                 udesk_config: Callable[..., Any]) -> None:
    # Every scan counts the live rows and looks for the ones it did not see, and the deletion
    # search counts live rows by createTime ranges: without these indexes each reads the whole
    # wide table (etl.connectors.udesk.servicego.models.ObjectSchema._build).
    server = servicego_sim(Sizes(customers=30, contacts=40, cases=50))
    config = udesk_config(db_url, {"sg": servicego_settings(server)})
    assert jobs.sync(config, "sg").status == "ok"
    engine = open_engine(db_url)
    with engine.begin() as conn:  # as a version before these indexes left the table
        conn.execute(sa.text("DROP INDEX ix_servicego_contact_live"))
        conn.execute(sa.text("DROP INDEX ix_servicego_contact_create_time_live"))
        conn.execute(sa.text("CREATE INDEX ix_servicego_contact_create_time ON servicego_contact (connection, create_time)"))

    server.state.random_changes(seed=3, updates=5, creates=2, deletes=0)
    for obj in ("contact", "case"):
        server.state.delete(obj, server.state.ids[obj][0])
    summary = jobs.sync(config, "sg", full=True)
    assert summary.status == "ok", summary.errors
    assert summary.deleted == 2  # found by the full scan's query of unseen live rows
    indexes = {i["name"]: i["column_names"] for i in sa.inspect(engine).get_indexes("servicego_contact")}
    assert indexes["ix_servicego_contact_live"] == ["connection", "is_deleted", "last_seen_at"]
    assert indexes["ix_servicego_contact_create_time_live"] == ["connection", "is_deleted", "create_time"]
    assert "ix_servicego_contact_create_time" not in indexes  # superseded
    assert_servicego_matches(engine, server.state)
    if engine.dialect.name == "sqlite":
        live = "FROM servicego_contact WHERE connection = 'sg' AND is_deleted IS 0"
        with engine.connect() as conn:
            # the plain count may take either index: both begin with (connection, is_deleted)
            for query, index in ((f"SELECT count(*) {live}", "COVERING INDEX ix_servicego_contact_"),
                                 (f"SELECT id {live} AND last_seen_at < '2000-01-01'", "INDEX ix_servicego_contact_live"),
                                 (f"SELECT count(*) {live} AND create_time >= '2020-01-01' AND create_time < '2030-01-01'",
                                  "COVERING INDEX ix_servicego_contact_create_time_live")):
                plan = " ".join(str(r[-1]) for r in conn.execute(sa.text(f"EXPLAIN QUERY PLAN {query}")))
                assert index in plan, plan
    engine.dispose()


def test_type_names_the_docs_never_print_are_read_by_their_values(
        db_url: str, udesk_config: Callable[..., Any]) -> None:
    """Seed 004 prints four fieldTypeApiName values; the service may spell the others otherwise.
    With date-times as `field_type_datetime` and employees as `field_type_user`, date-times are
    still UTC timestamps, employee fields keep their userEmail, and deletions are still found by
    createTime ranges (they crashed on text dates before)."""
    from etl.connectors.udesk.servicego import types as servicego_types
    from etl.connectors.udesk.servicego.simulator.store import ServiceGoState
    from tests.conftest import UDESK_TOKEN

    servicego_types._reported.clear()  # each unknown name is told once a process: this test wants to hear it

    state = ServiceGoState(Sizes(customers=150, contacts=300, cases=450), seed=4, api_token=UDESK_TOKEN,
                           type_names={"field_type_date_time": "field_type_datetime",
                                       "field_type_lookup_user": "field_type_user"})
    server = ServiceGoServer(state).start()
    try:
        config = udesk_config(db_url, {"sg": servicego_settings(server)})
        engine = open_engine(db_url)
        with capture_logs() as logs:
            assert jobs.sync(config, "sg").status == "ok"
        assert_servicego_matches(engine, state)
        columns = {c["name"]: c["type"] for c in sa.inspect(engine).get_columns("servicego_case")}
        assert {"assignee_email", "create_user_email", "update_user_email"} <= set(columns)
        assert isinstance(columns["create_time"], sa.DateTime) and isinstance(columns["due_time"], sa.DateTime)
        unknown = [e for e in logs if e["event"] == "servicego_unknown_field_type"]
        assert sorted(e["field_type"] for e in unknown) == ["field_type_datetime", "field_type_user"]
        assert {e["field_type"]: e["read_as"] for e in unknown} == {
            "field_type_datetime": "field_type_date_time", "field_type_user": "field_type_lookup_user"}

        state.random_changes(seed=6, updates=40, creates=10, deletes=12)
        second = jobs.sync(config, "sg")
        assert second.status == "ok", second.errors
        assert second.deleted > 0
        assert_servicego_matches(engine, state)
        engine.dispose()
    finally:
        server.stop()


def test_one_objects_crash_does_not_stop_the_others(sqlite_url: str, servicego_sim: Callable[..., ServiceGoServer],
                                                    udesk_config: Callable[..., Any], monkeypatch: Any) -> None:
    """Code meeting data it did not foresee fails that object's stream, named in the run; the
    other objects of the connection still sync."""
    from etl.connectors.udesk.servicego import connector as servicego_connector

    server = servicego_sim(Sizes(customers=30, contacts=40, cases=50))
    config = udesk_config(sqlite_url, {"sg": servicego_settings(server)})
    from etl.connectors.udesk.servicego.deletes import find_deletions as real

    def crash_on_contacts(sync_: Any, total: int, full_pass: bool) -> int:
        if sync_.obj.name == "contact":
            raise AttributeError("'str' object has no attribute 'tzinfo'")
        return real(sync_, total, full_pass)

    monkeypatch.setattr(servicego_connector, "find_deletions", crash_on_contacts)
    summary = jobs.sync(config, "sg")
    assert summary.status == "failed"
    assert list(summary.errors) == ["contact"] and "AttributeError" in summary.errors["contact"]
    engine = open_engine(sqlite_url)
    with engine.connect() as conn:
        counts = {o: conn.execute(sa.text(f"SELECT count(*) FROM servicego_{o}")).scalar() for o in ("customer", "case")}
    assert counts == {"customer": 30, "case": 50}, "the objects after the crashed one were synced"
    engine.dispose()


def test_a_run_ended_by_an_unforeseen_error_records_it(sqlite_url: str, servicego_sim: Callable[..., ServiceGoServer],
                                                       udesk_config: Callable[..., Any], monkeypatch: Any) -> None:
    """An error that stops the run (a database's, say) is the run's recorded error, not NULL."""
    import pytest

    from etl.connectors.udesk.servicego import connector as servicego_connector

    server = servicego_sim(Sizes(customers=5, contacts=5, cases=5))
    config = udesk_config(sqlite_url, {"sg": servicego_settings(server)})

    def database_gone(*_: Any, **__: Any) -> int:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(servicego_connector, "find_deletions", database_gone)
    with pytest.raises(RuntimeError):
        jobs.sync(config, "sg")
    with open_engine(sqlite_url).connect() as conn:
        status, error = conn.execute(sa.text("SELECT status, error FROM sync_runs")).one()
    assert status == "failed" and error == "run: RuntimeError: the database went away"
