"""Compare the mirror with the simulator's data, field by field.

Expected values are computed here from the simulator's records with the docs' formats, not with
the engine's own normalisation, so a shared mistake cannot hide.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

import etl.connectors.eddydesk.models  # noqa: F401
from etl.connectors.eddydesk.simulator.store import HelpdeskState
from etl.core.mirror.base import Base


def _utc(value: str, fmt: str, tz: str) -> datetime | None:
    if value in ("", "null", None):
        return None
    return datetime.strptime(value, fmt).replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _table(name: str) -> sa.Table:
    return Base.metadata.tables[name]


def _rows(conn: sa.Connection, table: str, connection: str) -> dict[Any, Any]:
    t = _table(table)
    return {row.id: row for row in conn.execute(sa.select(t).where(t.c.connection == connection))}


def _child(conn: sa.Connection, table: str, connection: str, parent: str) -> dict[Any, list[Any]]:
    out: dict[Any, list[Any]] = {}
    t = _table(table)
    for row in conn.execute(sa.select(t).where(t.c.connection == connection)):
        out.setdefault(getattr(row, parent), []).append(row)
    return out


def _raw(row: Any) -> Any:
    import json

    return json.loads(row.raw) if isinstance(row.raw, str) else row.raw


def assert_mirror_matches(engine: sa.Engine, state: HelpdeskState, connection: str = "helpdesk",
                          tz: str = "Europe/Riga", check_hard_deletes: bool = True) -> None:
    with engine.connect() as conn:
        _check_tickets(conn, state, connection, tz, check_hard_deletes)
        _check_users(conn, state, connection, tz, check_hard_deletes)
        _check_organizations(conn, state, connection)
        _check_kb(conn, state, connection)
        _check_reference(conn, state, connection)


def _live(rows: dict[Any, Any]) -> set[Any]:
    return {i for i, r in rows.items() if not r.is_deleted}


def _check_tickets(conn: sa.Connection, state: HelpdeskState, connection: str, tz: str, hard: bool) -> None:
    rows = _rows(conn, "eddydesk_tickets", connection)
    remote = state.tickets.records
    if hard:
        assert _live(rows) == {i for i, t in remote.items() if not t["deleted"]}, "live ticket ids differ"
        assert {i for i, r in rows.items() if r.is_deleted} >= {i for i, t in remote.items() if t["deleted"]}
    assert set(remote) <= set(rows), f"{len(set(remote) - set(rows))} tickets missing from the mirror"
    tags = _child(conn, "eddydesk_ticket_tags", connection, "ticket_id")
    cfs = _child(conn, "eddydesk_ticket_custom_field_values", connection, "ticket_id")
    people = _child(conn, "eddydesk_ticket_participants", connection, "ticket_id")
    posts = _child(conn, "eddydesk_ticket_posts", connection, "ticket_id")
    comments = _child(conn, "eddydesk_ticket_comments", connection, "ticket_id")
    for tid, ticket in remote.items():
        row = rows[tid]
        assert _raw(row) == ticket, f"ticket {tid}: raw JSON differs"
        assert bool(row.is_deleted) == bool(ticket["deleted"]), f"ticket {tid}: deleted flag"
        assert row.title == ticket["title"] and row.status_id == ticket["status_id"], f"ticket {tid}"
        assert row.user_name == ticket["username"] and row.owner_id == ticket["owner_id"], f"ticket {tid}"
        assert _as_utc(row.date_updated) == _utc(ticket["date_updated"], "%Y-%m-%d %H:%M:%S", tz), f"ticket {tid}"
        assert _as_utc(row.sla_date) == _utc(ticket["sla_date"], "%d.%m.%Y %H:%M", tz), f"ticket {tid} sla_date"
        assert row.freeze_date is None if ticket["freeze_date"] == "null" else True
        assert [t.tag for t in sorted(tags.get(tid, []), key=lambda t: t.position)] == ticket["tags"], f"ticket {tid} tags"
        assert {c.field_id for c in cfs.get(tid, [])} == {c["id"] for c in ticket["custom_fields"]}, f"ticket {tid} fields"
        cc = [p.email for p in sorted(people.get(tid, []), key=lambda p: p.position) if p.role == "cc"]
        assert cc == ticket["cc"], f"ticket {tid} cc"
        followers = [p.user_id for p in sorted(people.get(tid, []), key=lambda p: p.position) if p.role == "follower"]
        assert followers == ticket["followers"], f"ticket {tid} followers"
        expected_posts = {p["id"]: p for p in state.posts(tid)}
        live_posts = {p.id: p for p in posts.get(tid, []) if not p.is_deleted}
        assert set(live_posts) == set(expected_posts), f"ticket {tid}: post ids differ"
        for pid, post in expected_posts.items():
            assert _raw(live_posts[pid]) == post and live_posts[pid].text == post["text"]
            assert _as_utc(live_posts[pid].date_created) == _utc(post["date_created"], "%H:%M:%S %d.%m.%Y", tz)
        expected_comments = {c["id"]: c for c in state.comments(tid)}
        live_comments = {c.id: c for c in comments.get(tid, []) if not c.is_deleted}
        assert set(live_comments) == set(expected_comments), f"ticket {tid}: comment ids differ"
        for cid, comment in expected_comments.items():
            assert _raw(live_comments[cid]) == comment


def _check_users(conn: sa.Connection, state: HelpdeskState, connection: str, tz: str, hard: bool) -> None:
    rows = _rows(conn, "eddydesk_users", connection)
    remote = state.users.records
    if hard:
        assert _live(rows) == set(remote), "user ids differ"
    departments = _child(conn, "eddydesk_user_departments", connection, "user_id")
    notes = _child(conn, "eddydesk_user_notes", connection, "user_id")
    for uid, user in remote.items():
        row = rows[uid]
        expected = {k: v for k, v in user.items() if k != "api_key"}
        assert _raw(row) == expected, f"user {uid}: raw JSON differs"
        assert "api_key" not in _raw(row) and row.api_key is None, "api keys must never be stored"
        assert row.email == user["email"] and row.group_id == user["group"]["id"]
        assert row.group_name_display == user["group"]["name"]["en"]
        assert sorted(d.department_id for d in departments.get(uid, [])) == sorted(user["department"])
        assert {n.id for n in notes.get(uid, []) if not n.is_deleted} == {n["id"] for n in state.user_notes(uid)}


def _check_organizations(conn: sa.Connection, state: HelpdeskState, connection: str) -> None:
    rows = _rows(conn, "eddydesk_organizations", connection)
    remote = state.organizations.records
    assert _live(rows) == set(remote), "organization ids differ"
    members = _child(conn, "eddydesk_organization_members", connection, "organization_id")
    notes = _child(conn, "eddydesk_organization_notes", connection, "organization_id")
    for oid, org in remote.items():
        assert _raw(rows[oid]) == org, f"organization {oid}: raw JSON differs"
        employees = sorted(m.user_id for m in members.get(oid, []) if m.role == "employee")
        assert employees == sorted(org["employees"]), f"organization {oid} employees"
        assert {n.id for n in notes.get(oid, []) if not n.is_deleted} == {n["id"] for n in state.organization_notes(oid)}


def _check_kb(conn: sa.Connection, state: HelpdeskState, connection: str) -> None:
    for table, coll in (("eddydesk_kb_categories", state.kb_categories), ("eddydesk_kb_articles", state.kb_articles)):
        rows = _rows(conn, table, connection)
        assert _live(rows) == set(coll.records), f"{table} ids differ"
        for rid, record in coll.records.items():
            assert _raw(rows[rid]) == record, f"{table} {rid}: raw JSON differs"
    articles = _rows(conn, "eddydesk_kb_articles", connection)
    for aid, article in state.kb_articles.records.items():
        assert articles[aid].title_display == article["title"]["en"]


def _check_reference(conn: sa.Connection, state: HelpdeskState, connection: str) -> None:
    for name, records in state.reference.items():
        table = {"statuses": "eddydesk_statuses", "types": "eddydesk_types"}.get(name, f"eddydesk_{name}")
        rows = _rows(conn, table, connection)
        assert {str(i) for i in _live(rows)} == {str(r["id"]) for r in records}, f"{table} ids"
    fields = conn.execute(sa.text("SELECT scope, id, field_type FROM eddydesk_custom_fields "
                                  "WHERE connection=:c AND NOT is_deleted"), {"c": connection}).all()
    expected = {(scope, f["id"], f["field_type"]) for scope, fs in state.fields.items() for f in fs}
    assert set(map(tuple, fields)) == expected
    options = conn.execute(sa.text("SELECT scope, field_id, id FROM eddydesk_custom_field_options "
                                   "WHERE connection=:c AND NOT is_deleted"),
                           {"c": connection}).all()
    expected_opts = {(scope, fid, o["id"]) for scope, per in state.options.items() for fid, os_ in per.items() for o in os_}
    assert set(map(tuple, options)) == expected_opts
