"""Write-back to ServiceGo: local edits arrive remotely exactly, one request per changed record, none
when nothing changed; merges, conflicts under each policy, held rows; no echo."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from etl.connectors.udesk.servicego.diff import resolve
from etl.connectors.udesk.servicego.simulator.server import ServiceGoServer
from etl.connectors.udesk.servicego.simulator.store import Sizes
from etl.core.mirror.db import open_engine
from etl.core.push.conflicts import open_conflicts
from etl.core.run import jobs
from tests.conftest import servicego_settings
from tests.servicego_check import assert_servicego_matches

LOOKUPS = {"organization": {"object": "customer", "unique_field": "sysOrganizationNo"}}


def _objects(policy: str = "manual", allow_delete: bool = True) -> list[dict[str, Any]]:
    push = {"conflict_policy": policy, "allow_delete": allow_delete, "lookups": LOOKUPS}
    return [{"name": "customer"}, {"name": "contact", "push": push}, {"name": "case"}]


def _setup(url: str, servicego_sim: Callable[..., ServiceGoServer], udesk_config: Callable[..., Any],
           policy: str = "manual") -> tuple[ServiceGoServer, Any, sa.Engine]:
    server = servicego_sim(Sizes(customers=20, contacts=200, cases=20))
    config = udesk_config(url, {"sg": servicego_settings(server, objects=_objects(policy))})
    assert jobs.sync(config, "sg").status == "ok"
    return server, config, open_engine(url)


def _sql(engine: sa.Engine, statement: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def _requests(server: ServiceGoServer, endpoint: str) -> int:
    return server.requests_to(endpoint)


def test_local_updates_and_deletions_arrive_exactly(db_url: str, servicego_sim: Callable[..., ServiceGoServer],
                                                   udesk_config: Callable[..., Any]) -> None:
    server, config, engine = _setup(db_url, servicego_sim, udesk_config)
    state = server.state
    ids = list(state.ids["contact"])
    customer = state.ids["customer"][3]
    _sql(engine, "UPDATE servicego_contact SET name = 'Edited ' || id WHERE id IN (:a, :b, :c)", a=ids[0], b=ids[1], c=ids[2])
    _sql(engine, "UPDATE servicego_contact SET tags = 't_vip,t_partner', calc_formula = calc_formula WHERE id = :a", a=ids[3])
    _sql(engine, "UPDATE servicego_contact SET birthday = :d, youxiang = NULL WHERE id = :a", d="1999-12-31", a=ids[4])
    _sql(engine, "UPDATE servicego_contact SET organization = :c WHERE id = :a", c=str(customer), a=ids[5])
    _sql(engine, "UPDATE servicego_contact SET is_deleted = true WHERE id = :a", a=ids[6])

    preview = jobs.push(config, "sg", dry_run=True)
    assert _requests(server, "PUT /v1/data") == 0
    planned = {w.record_id: w for w in preview.tables["contact"].planned}
    assert set(planned) == set(ids[:7])
    assert planned[ids[0]].changes[0][0] == "name" and planned[ids[6]].operation == "delete"

    summary = jobs.push(config, "sg")
    assert summary.failed == 0
    assert _requests(server, "PUT /v1/data") == 6 and _requests(server, "DELETE /v1/data") == 1
    assert state.value("contact", ids[0], "name") == f"Edited {ids[0]}"
    assert state.value("contact", ids[3], "tags") == "t_vip,t_partner"
    assert state.value("contact", ids[4], "birthday") == "1999-12-31" and state.value("contact", ids[4], "youxiang") == ""
    assert state.value("contact", ids[5], "organization") == str(customer)
    assert ids[6] not in state.records["contact"]

    # no second push, and the pull that brings our own changes back is no conflict and no edit
    again = jobs.push(config, "sg")
    assert sum(len(o.planned) for o in again.tables.values()) == 0 and again.requests == 0
    assert jobs.sync(config, "sg").status == "ok"
    with engine.connect() as conn:
        assert open_conflicts(conn) == []
    assert jobs.push(config, "sg").requests == 0
    assert_servicego_matches(engine, state)
    engine.dispose()


def test_different_fields_changed_on_each_side_merge(sqlite_url: str, servicego_sim: Callable[..., ServiceGoServer],
                                                     udesk_config: Callable[..., Any]) -> None:
    server, config, engine = _setup(sqlite_url, servicego_sim, udesk_config)
    contact = server.state.ids["contact"][10]
    _sql(engine, "UPDATE servicego_contact SET name = 'Local name' WHERE id = :i", i=contact)
    server.state.update("contact", contact, {"birthday": "1988-08-08"})
    assert jobs.sync(config, "sg").status == "ok"  # the pull keeps the local name
    with engine.connect() as conn:
        name, birthday = conn.execute(sa.text("SELECT name, birthday FROM servicego_contact WHERE id = :i"),
                                      {"i": contact}).one()
    assert name == "Local name" and str(birthday)[:10] == "1988-08-08"
    summary = jobs.push(config, "sg")
    assert [[(name, local) for name, _, local in w.changes] for w in summary.tables["contact"].planned] == [
        [("name", "Local name")]]  # only the local field is sent
    assert summary.requests == 1
    assert server.state.value("contact", contact, "name") == "Local name"
    assert server.state.value("contact", contact, "birthday") == "1988-08-08"
    jobs.sync(config, "sg")
    assert_servicego_matches(engine, server.state)


@pytest.mark.parametrize("policy", ["remote_wins", "local_wins", "manual"])
def test_the_same_field_changed_on_both_sides_follows_the_policy(
        policy: str, sqlite_url: str, servicego_sim: Callable[..., ServiceGoServer],
        udesk_config: Callable[..., Any]) -> None:
    server, config, engine = _setup(sqlite_url, servicego_sim, udesk_config, policy)
    contact = server.state.ids["contact"][20]
    _sql(engine, "UPDATE servicego_contact SET name = 'Local' WHERE id = :i", i=contact)
    server.state.update("contact", contact, {"name": "Remote"})
    jobs.sync(config, "sg")
    with engine.connect() as conn:
        local_name = conn.execute(sa.text("SELECT name FROM servicego_contact WHERE id = :i"), {"i": contact}).scalar()
        found = open_conflicts(conn)
    if policy == "remote_wins":
        assert local_name == "Remote" and found == []
        assert jobs.push(config, "sg").requests == 0
    elif policy == "local_wins":
        assert local_name == "Local" and found == []
        jobs.push(config, "sg")
        assert server.state.value("contact", contact, "name") == "Local"
    else:
        assert local_name == "Local"
        assert [(c["record_id"], c["field"], c["local"], c["remote"]) for c in found] == [(contact, "name", "Local", "Remote")]
        held = jobs.push(config, "sg")
        assert held.tables["contact"].skipped_conflicts == 1 and held.requests == 0
        from zoneinfo import ZoneInfo

        with engine.begin() as conn:
            resolve(conn, found[0]["id"], "local", lambda name: ZoneInfo("Asia/Shanghai"))
        jobs.push(config, "sg")
        assert server.state.value("contact", contact, "name") == "Local"
    jobs.sync(config, "sg")
    assert_servicego_matches(engine, server.state)


def test_taking_the_remote_side_of_a_conflict_restores_the_remote_value(
        sqlite_url: str, servicego_sim: Callable[..., ServiceGoServer], udesk_config: Callable[..., Any]) -> None:
    server, config, engine = _setup(sqlite_url, servicego_sim, udesk_config)
    contact = server.state.ids["contact"][30]
    _sql(engine, "UPDATE servicego_contact SET name = 'Local' WHERE id = :i", i=contact)
    server.state.update("contact", contact, {"name": "Remote"})
    jobs.sync(config, "sg")
    from zoneinfo import ZoneInfo

    with engine.begin() as conn:
        conflict = open_conflicts(conn)[0]
        resolve(conn, conflict["id"], "remote", lambda name: ZoneInfo("Asia/Shanghai"))
    assert jobs.push(config, "sg").requests == 0
    assert_servicego_matches(engine, server.state)


def test_a_rejected_row_is_held_without_blocking_the_others(
        sqlite_url: str, servicego_sim: Callable[..., ServiceGoServer], udesk_config: Callable[..., Any]) -> None:
    server, config, engine = _setup(sqlite_url, servicego_sim, udesk_config)
    ids = server.state.ids["contact"]
    _sql(engine, "UPDATE servicego_contact SET tags = 't_nonsense' WHERE id = :i", i=ids[40])  # not an option
    _sql(engine, "UPDATE servicego_contact SET name = 'Fine' WHERE id = :i", i=ids[41])
    summary = jobs.push(config, "sg")
    assert summary.failed == 1 and summary.tables["contact"].ok == 1
    assert server.state.value("contact", ids[41], "name") == "Fine"
    with engine.connect() as conn:
        error = conn.execute(sa.text("SELECT error FROM push_held WHERE record_id = :i"), {"i": ids[40]}).scalar()
        logged = conn.execute(sa.text("SELECT status, code FROM push_log WHERE record_id = :i"), {"i": ids[40]}).all()
    assert error is not None and "[400]" in error and "'t_nonsense' is not an option" in error
    assert [tuple(r) for r in logged] == [("failed", "400")]
    assert jobs.push(config, "sg").tables["contact"].skipped_held == 1  # held until asked

    _sql(engine, "UPDATE servicego_contact SET tags = 't_new' WHERE id = :i", i=ids[40])
    retried = jobs.push(config, "sg", retry_failed=True)
    assert retried.failed == 0 and server.state.value("contact", ids[40], "tags") == "t_new"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM push_held")).scalar() == 0


def _insert_contact(engine: sa.Engine, local_id: int, name: str, external: str | None = None, **extra: Any) -> None:
    columns = {"connection": "sg", "id": local_id, "name": name, **({"external_id": external} if external else {}),
               **extra}
    names = ", ".join(columns)
    _sql(engine, f"INSERT INTO servicego_contact ({names}) VALUES ({', '.join(':' + c for c in columns)})", **columns)


def _upsert_objects() -> list[dict[str, Any]]:
    objects = _objects()
    objects[1]["push"]["upsert_by"] = "externalId"
    return objects


def test_new_rows_are_created_once_and_upserts_match_existing_records(
        db_url: str, servicego_sim: Callable[..., ServiceGoServer], udesk_config: Callable[..., Any]) -> None:
    server = servicego_sim(Sizes(customers=20, contacts=50, cases=10))
    config = udesk_config(db_url, {"sg": servicego_settings(server, objects=_upsert_objects())})
    jobs.sync(config, "sg")
    engine = open_engine(db_url)
    state = server.state
    existing = state.ids["contact"][7]
    customer = state.ids["customer"][2]
    _insert_contact(engine, -1, "Brand new", "EXT-NEW-1", organization=str(customer), tags="t_vip")
    _insert_contact(engine, -2, "Another", None, birthday="1990-01-02")
    _insert_contact(engine, -3, "Matches an existing record", state.value("contact", existing, "externalId"))
    before = len(state.records["contact"])
    summary = jobs.push(config, "sg")
    assert summary.failed == 0, summary.tables["contact"]
    assert _requests(server, "POST /v1/data") == 2  # the third one updated the record it matched
    assert _requests(server, "GET /v1/data") == 2  # the lookups of upsert_by (the row without a value needs none)
    assert len(state.records["contact"]) == before + 2
    assert state.value("contact", existing, "name") == "Matches an existing record"
    new_id = state.find_unique("contact", "externalId", "EXT-NEW-1")
    assert new_id is not None and state.value("contact", new_id, "organization") == str(customer)
    with engine.connect() as conn:
        local_ids = set(conn.execute(sa.text("SELECT id FROM servicego_contact WHERE id < 0")).scalars())
        placed = conn.execute(sa.text("SELECT name FROM servicego_contact WHERE id = :i"), {"i": new_id}).scalar()
    assert local_ids == set() and placed == "Brand new"
    assert jobs.push(config, "sg").requests == 0
    jobs.sync(config, "sg")  # brings the fields the server set (createTime, owner, ...)
    assert jobs.push(config, "sg").requests == 0
    assert_servicego_matches(engine, state)
    engine.dispose()


def test_a_new_row_may_point_at_a_new_row_of_another_object(
        db_url: str, servicego_sim: Callable[..., ServiceGoServer], udesk_config: Callable[..., Any]) -> None:
    """A new contact whose lookup names a customer created in the same push (its placeholder id) is
    sent with the customer's real id, whichever order the objects are configured in."""
    server = servicego_sim(Sizes(customers=10, contacts=20, cases=5))
    objects = [{"name": "contact", "push": {"lookups": LOOKUPS}}, {"name": "customer", "push": {}}, {"name": "case"}]
    config = udesk_config(db_url, {"sg": servicego_settings(server, objects=objects)})
    assert jobs.sync(config, "sg").status == "ok"
    engine = open_engine(db_url)
    _sql(engine, "INSERT INTO servicego_customer (connection, id, name, sys_organization_no) "
                 "VALUES ('sg', -1, 'New customer', 'ORG-NEW-1')")
    _insert_contact(engine, -1, "Works there", "EXT-W-1", organization="-1")
    _insert_contact(engine, -2, "Points nowhere yet", "EXT-W-2", organization="-7")
    summary = jobs.push(config, "sg")
    state = server.state
    customer = state.find_unique("customer", "sysOrganizationNo", "ORG-NEW-1")
    contact = state.find_unique("contact", "externalId", "EXT-W-1")
    assert customer is not None and contact is not None
    assert state.value("contact", contact, "organization") == str(customer), "sent with the customer's real id"
    assert state.find_unique("contact", "externalId", "EXT-W-2") is None, "a placeholder is never sent"
    assert summary.failed == 1
    with engine.connect() as conn:
        held = conn.execute(sa.text("SELECT error FROM push_held WHERE record_id = -2")).scalar()
    assert held is not None and "lookup organization points at new record -7" in held
    engine.dispose()
