"""Write-back to EddyDesk: local updates, inserts and deletions arrive exactly, one request per changed
record (plus the documented lookups for upserts), none when nothing changed; merges, conflicts under
each policy, held rows; no echo."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from etl.connectors.eddydesk.simulator.data import Sizes
from etl.connectors.eddydesk.simulator.server import SimulatorServer
from etl.core.errors import DesksyncError
from etl.core.mirror.db import open_engine
from etl.core.push.conflicts import open_conflicts
from etl.core.run import jobs
from tests.mirror_check import assert_mirror_matches

TEXT_FIELD = 5  # the ticket custom field of type "text" (etl.connectors.eddydesk.simulator.data.custom_fields)
PUSH = {
    "tickets": {"allow_delete": True},
    "users": {"allow_delete": True, "create_defaults": {"group_id": 1, "department": [1]}},
    "organizations": {},
    "ticket_posts": {},
    "ticket_comments": {},
}


def _setup(url: str, simulator: Callable[..., SimulatorServer], make_config: Callable[..., Any],
           push: dict[str, Any] | None = None, pull_before_push: bool = True) -> tuple[SimulatorServer, Any, sa.Engine]:
    server = simulator(Sizes(tickets=40, users=30, organizations=5, kb_categories=2, kb_articles=2))
    config = make_config(url, server, push=push or PUSH, pull_before_push=pull_before_push)
    assert jobs.sync(config, "helpdesk").status == "ok"
    server.stats.__init__()
    return server, config, open_engine(url)


def _sql(engine: sa.Engine, statement: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def _assert_settled(server: SimulatorServer, config: Any, engine: sa.Engine) -> None:
    """Nothing is left to send; the next pull brings our own changes back as they are (no echo:
    no conflict, nothing pushed again) and the mirror matches the remote."""
    server.stats.__init__()
    assert jobs.push(config, "helpdesk").requests == 0, "nothing changed: nothing is sent"
    assert jobs.sync(config, "helpdesk").status == "ok"
    assert open_conflicts_of(engine) == []
    server.stats.__init__()
    assert jobs.push(config, "helpdesk").requests == 0
    assert_mirror_matches(engine, server.state, check_hard_deletes=False)


def _writes(server: SimulatorServer) -> dict[str, int]:
    return {k: v for k, v in server.stats.by_endpoint.items() if k.split()[0] in ("POST", "PUT", "DELETE")}


def test_local_updates_inserts_and_deletions_arrive_exactly(db_url: str, simulator: Callable[..., SimulatorServer],
                                                            make_config: Callable[..., Any]) -> None:
    # the push's own requests are counted: its pull first is tested on its own
    server, config, engine = _setup(db_url, simulator, make_config, pull_before_push=False)
    state = server.state
    t1, t2, t3, gone = 3, 4, 5, 6
    staff = state.staff_ids[-1]
    client_user = sorted(state.users.records)[-1]
    taken_email = state.users.records[client_user - 1]["email"]
    post = state.posts(t1)[0]["id"] if state.posts(t1) else None
    _sql(engine, "UPDATE eddydesk_tickets SET title = 'Edited ' || id, status_id = 'closed' WHERE id IN (:a, :b)", a=t1, b=t2)
    _sql(engine, "UPDATE eddydesk_tickets SET owner_id = :s, sla_date = :d WHERE id = :a", s=staff,
         d="2026-03-01 08:30:00+00:00", a=t3)
    _sql(engine, "DELETE FROM eddydesk_ticket_custom_field_values WHERE ticket_id = :a AND field_id = :f", a=t3, f=TEXT_FIELD)
    _sql(engine, "INSERT INTO eddydesk_ticket_custom_field_values (connection, ticket_id, field_id, value_text) "
                 "VALUES ('helpdesk', :a, :f, 'set locally')", a=t3, f=TEXT_FIELD)
    _sql(engine, "UPDATE eddydesk_ticket_custom_field_values SET value_text = 'changed locally' "
                 "WHERE ticket_id = :a AND field_id = :f", a=t3, f=TEXT_FIELD)
    _sql(engine, "UPDATE eddydesk_tickets SET is_deleted = true WHERE id = :a", a=gone)
    _sql(engine, "UPDATE eddydesk_users SET phone = '+37100000001' WHERE id = :u", u=client_user)
    _sql(engine, "UPDATE eddydesk_organizations SET address = 'Riga, Brivibas 1' WHERE id = 2")
    if post is not None:
        _sql(engine, "UPDATE eddydesk_ticket_posts SET text = '<p>reworded</p>' WHERE id = :p", p=post)
    # new rows: a ticket with its description and a second reply, a user, an existing user by e-mail
    _sql(engine, "INSERT INTO eddydesk_tickets (connection, id, title, priority_id, user_id) "
                 "VALUES ('helpdesk', -1, 'Printer on fire', 1, :u)", u=client_user)
    _sql(engine, "INSERT INTO eddydesk_ticket_custom_field_values (connection, ticket_id, field_id, value_text) "
                 "VALUES ('helpdesk', -1, :f, 'new ticket field')", f=TEXT_FIELD)
    _sql(engine, "INSERT INTO eddydesk_ticket_posts (connection, id, ticket_id, text) "
                 "VALUES ('helpdesk', -1, -1, '<p>It burns</p>'), ('helpdesk', -2, -1, '<p>Still burning</p>')")
    _sql(engine, "INSERT INTO eddydesk_users (connection, id, name, email) VALUES ('helpdesk', -1, 'Ada', 'ada@example.com')")
    _sql(engine, "INSERT INTO eddydesk_users (connection, id, name, lastname, email) "
                 "VALUES ('helpdesk', -2, 'Known', 'Already', :e)", e=taken_email)
    _sql(engine, "INSERT INTO eddydesk_organizations (connection, id, name, phone) VALUES ('helpdesk', -1, 'New Org', '123')")

    preview = jobs.push(config, "helpdesk", dry_run=True)
    assert server.stats.requests == 0, "a dry run sends nothing"
    planned = {(name, w.operation): [x.record_id for x in o.planned if x.operation == w.operation]
               for name, o in preview.tables.items() for w in o.planned}
    assert sorted(planned[("tickets", "update")]) == [t1, t2, t3]
    assert planned[("tickets", "create")] == [-1] and planned[("tickets", "delete")] == [gone]
    assert sorted(planned[("users", "create")]) == [-2, -1]
    changes = {w.record_id: dict((n, (b, loc)) for n, b, loc in w.changes) for w in preview.tables["tickets"].planned}
    assert changes[t3][f"custom_fields.{TEXT_FIELD}"][1] == "changed locally"
    assert changes[t3]["sla_date"][1] == "01.03.2026 10:30"  # the account's time zone (Europe/Riga)

    summary = jobs.push(config, "helpdesk")
    assert summary.failed == 0
    with engine.connect() as conn:  # recorded as a run of kind push (no pull first here: pull_before_push off)
        kinds = conn.execute(sa.text("SELECT kind, status FROM sync_runs WHERE id = :r"), {"r": summary.run_id}).all()
    assert kinds == [("push", "ok")]
    tickets = state.tickets.records
    assert tickets[t1]["title"] == f"Edited {t1}" and tickets[t1]["status_id"] == "closed"
    assert tickets[t3]["owner_id"] == staff and tickets[t3]["sla_date"] == "01.03.2026 10:30"
    assert {c["id"]: c["field_value"] for c in tickets[t3]["custom_fields"]}[TEXT_FIELD] == "changed locally"
    assert tickets[gone]["deleted"] == 1
    assert state.users.records[client_user]["phone"] == "+37100000001"
    assert state.organizations.records[2]["address"] == "Riga, Brivibas 1"
    new_ticket = next(t for t in tickets.values() if t["title"] == "Printer on fire")
    assert new_ticket["priority_id"] == 1 and new_ticket["user_id"] == client_user
    assert {c["id"]: c["field_value"] for c in new_ticket["custom_fields"]}[TEXT_FIELD] == "new ticket field"
    assert [p["text"] for p in state.posts(new_ticket["id"])] == ["<p>Still burning</p>", "<p>It burns</p>"]
    ada = [u for u in state.users.records.values() if u["email"] == "ada@example.com"]
    assert len(ada) == 1 and ada[0]["group"]["id"] == 1 and ada[0]["department"] == [1]
    assert [u["lastname"] for u in state.users.records.values() if u["email"] == taken_email] == ["Already"]
    assert len([o for o in state.organizations.records.values() if o["name"] == "New Org"]) == 1
    if post is not None:
        assert next(p for p in state.posts(t1) if p["id"] == post)["text"] == "<p>reworded</p>"
    # one request per changed record, plus the e-mail and name lookups of the upserts
    writes = _writes(server)
    assert writes == {"PUT tickets": 3, "POST tickets": 1, "DELETE tickets": 1, "POST posts": 1,
                      "PUT users": 2, "POST users": 1, "PUT organizations": 1, "POST organizations": 1,
                      **({"PUT posts": 1} if post is not None else {})}
    assert server.stats.by_endpoint.get("users") == 2 and server.stats.by_endpoint.get("organizations") == 1
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM eddydesk_tickets WHERE id < 0")).scalar() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM eddydesk_users WHERE id < 0")).scalar() == 0
        raw = conn.execute(sa.text("SELECT raw FROM eddydesk_users WHERE email = 'ada@example.com'")).scalar()
        assert "api_key" not in str(raw) and "password" not in str(raw)

    _assert_settled(server, config, engine)
    engine.dispose()


def test_custom_field_options_go_in_batches_of_at_most_100(db_url: str, simulator: Callable[..., SimulatorServer],
                                                           make_config: Callable[..., Any]) -> None:
    push = {"custom_field_options": {"allow_delete": True}}
    server, config, engine = _setup(db_url, simulator, make_config, push)
    state = server.state
    field_id = next(f["id"] for f in state.fields["ticket"] if f["field_type"] == "select")
    first, second, gone = (o["id"] for o in state.options["ticket"][field_id][:3])
    _sql(engine, "UPDATE eddydesk_custom_field_options SET name_display = 'Renamed ' || id WHERE id IN (:a, :b)",
         a=first, b=second)
    _sql(engine, "UPDATE eddydesk_custom_field_options SET is_deleted = true WHERE id = :g", g=gone)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO eddydesk_custom_field_options (connection, scope, field_id, id, name_display) "
                             "VALUES ('helpdesk', 'ticket', :f, :i, :n)"),
                     [{"f": field_id, "i": -n, "n": f"New option {n}"} for n in range(1, 151)])

    preview = jobs.push(config, "helpdesk", dry_run=True)
    assert server.stats.requests == 0
    operations = sorted(w.operation for w in preview.tables["custom_field_options"].planned)
    assert operations == ["create"] * 150 + ["delete"] + ["update"] * 2
    summary = jobs.push(config, "helpdesk")
    assert summary.failed == 0
    # 152 adds and renames of one field: two requests (100 + 52), as the docs' limit asks; one delete
    assert _writes(server) == {"POST options": 2, "DELETE options": 1}
    remote = {o["id"]: o for o in state.options["ticket"][field_id]}
    assert remote[first]["name"]["en"] == f"Renamed {first}" and remote[second]["name"]["en"] == f"Renamed {second}"
    assert gone not in remote
    names = sorted(o["name"]["en"] for o in remote.values() if o["name"]["en"].startswith("New option"))
    assert names == sorted(f"New option {n}" for n in range(1, 151))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM eddydesk_custom_field_options WHERE id < 0")).scalar() == 0
    _assert_settled(server, config, engine)
    engine.dispose()


def test_new_options_whose_answer_was_lost_are_found_not_created_again(
        sqlite_url: str, simulator: Callable[..., SimulatorServer], make_config: Callable[..., Any]) -> None:
    server = simulator(Sizes(tickets=5, users=5, organizations=2, kb_categories=1, kb_articles=1))
    config = make_config(sqlite_url, server, push={"custom_field_options": {}}, timeout_seconds=0.5)
    assert jobs.sync(config, "helpdesk").status == "ok"
    engine = open_engine(sqlite_url)
    field_id = next(f["id"] for f in server.state.fields["user"] if f["field_type"] == "select")
    _sql(engine, "INSERT INTO eddydesk_custom_field_options (connection, scope, field_id, id, name_display) "
                 "VALUES ('helpdesk', 'user', :f, -1, 'Gold'), ('helpdesk', 'user', :f, -2, 'Silver')", f=field_id)
    server.app.state.settings["write_delay"] = 5.0  # the options are made; the answer times out
    with pytest.raises(DesksyncError, match="ReadTimeout"):
        jobs.push(config, "helpdesk")
    server.app.state.settings["write_delay"] = 0.0
    time.sleep(0.3)  # the held-back answer goes out (and is counted) before the count starts again
    server.stats.__init__()
    assert jobs.push(config, "helpdesk").failed == 0
    assert _writes(server) == {}, "the lost answer's options were found in the field's list, not sent again"
    names = [o["name"]["en"] for o in server.state.options["user"][field_id]]
    assert names.count("Gold") == 1 and names.count("Silver") == 1
    assert jobs.sync(config, "helpdesk").status == "ok"
    assert_mirror_matches(engine, server.state, check_hard_deletes=False)
    engine.dispose()


def _option_names(engine: sa.Engine, field_id: int) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT id, name_display FROM eddydesk_custom_field_options "
                                         "WHERE scope = 'ticket' AND field_id = :f"), {"f": field_id}).all())


def test_options_renamed_while_their_push_is_under_way_keep_the_new_names(
        db_url: str, simulator: Callable[..., SimulatorServer], make_config: Callable[..., Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Options go out in one POST per field and their answers are written back together: a
    rename made in the mirror meanwhile, of an existing option or of a new one, is kept (on the
    created row for a new one) and sent by the next push."""
    import etl.connectors.eddydesk.push_options as loader

    server, config, engine = _setup(db_url, simulator, make_config, {"custom_field_options": {}})
    field_id = next(f["id"] for f in server.state.fields["ticket"] if f["field_type"] == "select")
    renamed = server.state.options["ticket"][field_id][0]["id"]
    _sql(engine, "UPDATE eddydesk_custom_field_options SET name_display = 'Sent name' WHERE id = :i", i=renamed)
    _sql(engine, "INSERT INTO eddydesk_custom_field_options (connection, scope, field_id, id, name_display) "
                 "VALUES ('helpdesk', 'ticket', :f, -1, 'Sent new')", f=field_id)
    matched = loader._match

    def rename_then_match(*args: Any) -> dict[int, dict[str, Any]]:
        _sql(engine, "UPDATE eddydesk_custom_field_options SET name_display = name_display || ', renamed' "
                     "WHERE id IN (:i, -1)", i=renamed)
        return matched(*args)

    monkeypatch.setattr(loader, "_match", rename_then_match)
    assert jobs.push(config, "helpdesk").failed == 0
    monkeypatch.setattr(loader, "_match", matched)
    remote = {o["id"]: o["name"]["en"] for o in server.state.options["ticket"][field_id]}
    created = max(remote)
    assert (remote[renamed], remote[created]) == ("Sent name", "Sent new")
    names = _option_names(engine, field_id)
    assert -1 not in names
    assert (names[renamed], names[created]) == ("Sent name, renamed", "Sent new, renamed"), "the renames are kept"
    assert open_conflicts_of(engine) == []
    server.stats.__init__()
    second = jobs.push(config, "helpdesk")
    assert sorted((w.record_id, w.operation) for w in second.tables["custom_field_options"].planned) == [
        (renamed, "update"), (created, "update")]
    assert _writes(server) == {"POST options": 1}
    remote = {o["id"]: o["name"]["en"] for o in server.state.options["ticket"][field_id]}
    assert (remote[renamed], remote[created]) == ("Sent name, renamed", "Sent new, renamed")
    _assert_settled(server, config, engine)
    engine.dispose()


def test_a_pull_keeps_each_fields_option_edits_apart_when_option_ids_repeat(
        db_url: str, simulator: Callable[..., SimulatorServer], make_config: Callable[..., Any]) -> None:
    """An option's key is its scope, field and id (the docs do not say ids are unique across
    fields): a local rename of one field's option 7 is no edit of another field's option 7."""
    server, config, engine = _setup(db_url, simulator, make_config, {"custom_field_options": {}})
    field_id = next(f["id"] for f in server.state.fields["ticket"] if f["field_type"] == "select")
    option = server.state.options["ticket"][field_id][0]
    other = next(f["id"] for f in server.state.fields["user"] if f["field_type"] == "select")
    # the user field's option takes the ticket option's id, and is renamed locally
    server.state.options["user"][other][0]["id"] = option["id"]
    assert jobs.sync(config, "helpdesk").status == "ok"
    _sql(engine, "UPDATE eddydesk_custom_field_options SET name_display = 'Local' "
                 "WHERE scope = 'user' AND field_id = :f AND id = :i", f=other, i=option["id"])
    option["name"] = {"en": "Remote"}
    assert jobs.sync(config, "helpdesk").status == "ok"
    assert _option_names(engine, field_id)[option["id"]] == "Remote", "the other field's rename stays there"
    assert open_conflicts_of(engine) == []
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name_display FROM eddydesk_custom_field_options WHERE scope = 'user' "
                                    "AND field_id = :f AND id = :i"), {"f": other, "i": option["id"]}).scalar() == "Local"
    engine.dispose()


def test_a_placeholder_id_given_to_new_options_of_two_fields_is_held_until_made_unique(
        db_url: str, simulator: Callable[..., SimulatorServer], make_config: Callable[..., Any]) -> None:
    """Option rows are keyed by their field, but a placeholder id also names the row in the push's
    journal: two new options under -1 are both held before any request, and go once renumbered (and
    retried, as held rows are)."""
    server, config, engine = _setup(db_url, simulator, make_config, {"custom_field_options": {}})
    first, second = sorted(server.state.options["ticket"])[:2]  # the select field and the hierarchy
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO eddydesk_custom_field_options (connection, scope, field_id, id, name_display) "
                             "VALUES ('helpdesk', 'ticket', :f, -1, :n)"),
                     [{"f": first, "n": "New in the first"}, {"f": second, "n": "New in the second"}])
    refused = jobs.push(config, "helpdesk")
    assert server.stats.requests == 0
    problems = [w.problem for w in refused.tables["custom_field_options"].planned]
    assert problems == ["placeholder id -1 is given to 2 new options: give each its own negative id"] * 2
    assert len(_option_names(engine, first)) + len(_option_names(engine, second)) == len(
        server.state.options["ticket"][first]) + len(server.state.options["ticket"][second]) + 2, "nothing is lost"
    _sql(engine, "UPDATE eddydesk_custom_field_options SET id = -2 WHERE field_id = :f AND id = -1", f=second)
    assert jobs.push(config, "helpdesk", retry_failed=True).failed == 0
    for field_id, name in ((first, "New in the first"), (second, "New in the second")):
        assert [o["name"]["en"] for o in server.state.options["ticket"][field_id]].count(name) == 1
        assert name in _option_names(engine, field_id).values()
    _assert_settled(server, config, engine)
    engine.dispose()


def open_conflicts_of(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return open_conflicts(conn)


def test_changes_to_different_fields_merge(db_url: str, simulator: Callable[..., SimulatorServer],
                                           make_config: Callable[..., Any]) -> None:
    server, config, engine = _setup(db_url, simulator, make_config)
    state = server.state
    ticket = 7
    _sql(engine, "UPDATE eddydesk_tickets SET title = 'Local title' WHERE id = :t", t=ticket)
    _sql(engine, "DELETE FROM eddydesk_ticket_custom_field_values WHERE ticket_id = :t AND field_id = :f", t=ticket, f=TEXT_FIELD)
    _sql(engine, "INSERT INTO eddydesk_ticket_custom_field_values (connection, ticket_id, field_id, value_text) "
                 "VALUES ('helpdesk', :t, :f, 'local value')", t=ticket, f=TEXT_FIELD)
    state.update_ticket(ticket, status_id="process", priority_id=3)
    assert jobs.sync(config, "helpdesk").status == "ok"
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT title, status_id, priority_id FROM eddydesk_tickets WHERE id = :t"),
                           {"t": ticket}).one()
        value = conn.execute(sa.text("SELECT value_text FROM eddydesk_ticket_custom_field_values "
                                     "WHERE ticket_id = :t AND field_id = :f"), {"t": ticket, "f": TEXT_FIELD}).scalar()
    assert tuple(row) == ("Local title", "process", 3), "the remote change came in, the local edit stayed"
    assert value == "local value", "a local custom-field edit survives a pull of its ticket"
    assert open_conflicts_of(engine) == []
    summary = jobs.push(config, "helpdesk")
    assert [w.changes for w in summary.tables["tickets"].planned] == [
        [("title", state.tickets.records[ticket]["title"], "Local title"), (f"custom_fields.{TEXT_FIELD}", None, "local value")]
    ] or summary.tables["tickets"].planned[0].record_id == ticket
    remote = state.tickets.records[ticket]
    assert (remote["title"], remote["status_id"], remote["priority_id"]) == ("Local title", "process", 3)
    assert {c["id"]: c["field_value"] for c in remote["custom_fields"]}[TEXT_FIELD] == "local value"
    assert _writes(server) == {"PUT tickets": 1}
    engine.dispose()


@pytest.mark.parametrize("policy", ["remote_wins", "local_wins", "manual"])
def test_the_same_field_changed_on_both_sides_follows_the_policy(sqlite_url: str, simulator: Callable[..., SimulatorServer],
                                                                 make_config: Callable[..., Any], policy: str) -> None:
    push = {**PUSH, "tickets": {"conflict_policy": policy}, "users": {"conflict_policy": policy}}
    server, config, engine = _setup(sqlite_url, simulator, make_config, push)
    state = server.state
    ticket, user = 8, sorted(state.users.records)[-2]
    _sql(engine, "UPDATE eddydesk_tickets SET title = 'Local title' WHERE id = :t", t=ticket)
    _sql(engine, "UPDATE eddydesk_users SET phone = '111' WHERE id = :u", u=user)
    state.update_ticket(ticket, title="Remote title")
    state.update_user(user, phone="222")
    assert jobs.sync(config, "helpdesk").status == "ok"
    with engine.connect() as conn:
        title = conn.execute(sa.text("SELECT title FROM eddydesk_tickets WHERE id = :t"), {"t": ticket}).scalar()
        phone = conn.execute(sa.text("SELECT phone FROM eddydesk_users WHERE id = :u"), {"u": user}).scalar()
    conflicts = open_conflicts_of(engine)
    if policy == "remote_wins":
        assert (title, phone) == ("Remote title", "222") and conflicts == []
        assert jobs.push(config, "helpdesk").requests == 0
    elif policy == "local_wins":
        assert (title, phone) == ("Local title", "111") and conflicts == []
        jobs.push(config, "helpdesk")
        assert state.tickets.records[ticket]["title"] == "Local title" and state.users.records[user]["phone"] == "111"
    else:
        assert (title, phone) == ("Local title", "111"), "kept until someone chooses"
        assert {(c["table_name"], c["field"], c["local"], c["remote"]) for c in conflicts} == {
            ("eddydesk_tickets", "title", "Local title", "Remote title"), ("eddydesk_users", "phone", "111", "222")}
        summary = jobs.push(config, "helpdesk")
        assert summary.requests == 0 and summary.tables["tickets"].skipped_conflicts == 1
        by_table = {c["table_name"]: c["id"] for c in conflicts}
        jobs.resolve(config, by_table["eddydesk_tickets"], "local")
        jobs.resolve(config, by_table["eddydesk_users"], "remote")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT phone FROM eddydesk_users WHERE id = :u"), {"u": user}).scalar() == "222"
        summary = jobs.push(config, "helpdesk")
        assert summary.requests == 1
        assert state.tickets.records[ticket]["title"] == "Local title" and state.users.records[user]["phone"] == "222"
    assert open_conflicts_of(engine) == []
    engine.dispose()


def test_a_refused_row_is_held_with_the_api_error_and_goes_through_once_fixed(
        sqlite_url: str, simulator: Callable[..., SimulatorServer], make_config: Callable[..., Any]) -> None:
    server, config, engine = _setup(sqlite_url, simulator, make_config)
    state = server.state
    _sql(engine, "UPDATE eddydesk_tickets SET owner_id = 99999 WHERE id = 9")
    _sql(engine, "UPDATE eddydesk_tickets SET title = 'Fine' WHERE id = 10")
    _sql(engine, "INSERT INTO eddydesk_tickets (connection, id, title) VALUES ('helpdesk', -5, 'No description')")
    summary = jobs.push(config, "helpdesk")
    outcome = summary.tables["tickets"]
    assert (outcome.ok, outcome.failed) == (1, 2)
    assert state.tickets.records[10]["title"] == "Fine"
    with engine.connect() as conn:
        held: dict[Any, Any] = dict(conn.execute(sa.text("SELECT record_id, error FROM push_held ORDER BY record_id")).all())
        logged = conn.execute(sa.text("SELECT code, message FROM push_log WHERE record_id = 9")).one()
    assert held[9] == "[e-411] Bad request: Field {owner_id} with id {99999} does not exist"
    assert "Required field {description} is missing or empty" in held[-5]
    assert tuple(logged) == ("e-411", "Bad request: Field {owner_id} with id {99999} does not exist")
    status = jobs.status(config)
    assert [(h["record_id"], h["operation"]) for h in status["connections"]["helpdesk"]["held"]] == [
        (-5, "create"), (9, "update")]
    assert jobs.push(config, "helpdesk").tables["tickets"].skipped_held == 2, "held rows wait for --retry-failed"

    staff = next(s for s in state.staff_ids if s != state.tickets.records[9]["owner_id"])
    _sql(engine, "UPDATE eddydesk_tickets SET owner_id = :s WHERE id = 9", s=staff)
    _sql(engine, "INSERT INTO eddydesk_ticket_posts (connection, id, ticket_id, text) VALUES ('helpdesk', -9, -5, 'Now it has one')")
    summary = jobs.push(config, "helpdesk", retry_failed=True)
    assert summary.failed == 0 and summary.tables["tickets"].ok == 2
    assert state.tickets.records[9]["owner_id"] == staff
    assert any(t["title"] == "No description" for t in state.tickets.records.values())
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM push_held")).scalar() == 0
    engine.dispose()


def test_an_edit_made_while_its_push_is_under_way_survives_the_answer(
        db_url: str, simulator: Callable[..., SimulatorServer], make_config: Callable[..., Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The push reads a row, sends it, and writes the remote's answer back: an edit made in the
    mirror in between (here, the moment the answer arrives) is neither lost nor taken for a conflict."""
    import etl.connectors.eddydesk.client as loader

    server, config, engine = _setup(db_url, simulator, make_config,
                                    push={"tickets": {"conflict_policy": "manual"}})
    ticket = 9
    priority = 3 if server.state.tickets.records[ticket]["priority_id"] != 3 else 2  # another of the three
    _sql(engine, "UPDATE eddydesk_tickets SET title = 'Sent title' WHERE id = :t", t=ticket)
    from etl.connectors.eddydesk.client import data_of as answered

    def edit_then_answer(body: Any, path: str) -> dict[str, Any]:
        # another session edits the row (and the title again) before the answer is written back
        _sql(engine, "UPDATE eddydesk_tickets SET title = 'Edited again', priority_id = :p WHERE id = :t", t=ticket,
             p=priority)
        return answered(body, path)

    monkeypatch.setattr(loader, "data_of", edit_then_answer)
    first = jobs.push(config, "helpdesk")
    monkeypatch.setattr(loader, "data_of", answered)
    assert first.tables["tickets"].ok == 1 and server.state.tickets.records[ticket]["title"] == "Sent title"
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT title, priority_id, raw FROM eddydesk_tickets WHERE id = :t"),
                           {"t": ticket}).one()
    assert (row.title, row.priority_id) == ("Edited again", priority), "the edits made meanwhile are kept"
    raw = row.raw if isinstance(row.raw, dict) else __import__("json").loads(row.raw)
    assert raw["title"] == "Sent title", "the base is what the remote now holds"
    assert open_conflicts_of(engine) == []
    second = jobs.push(config, "helpdesk")
    assert [(w.record_id, sorted(c[0] for c in w.changes)) for w in second.tables["tickets"].planned] == [
        (ticket, ["priority_id", "title"])]
    assert second.tables["tickets"].ok == 1, second
    remote = server.state.tickets.records[ticket]
    assert (remote["title"], remote["priority_id"]) == ("Edited again", priority)
    _assert_settled(server, config, engine)
    engine.dispose()


def test_an_edit_made_to_a_new_row_while_its_create_is_under_way_moves_to_the_created_row(
        db_url: str, simulator: Callable[..., SimulatorServer], make_config: Callable[..., Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The placeholder row gives way to the created one: what was edited in it meanwhile (a
    column and a custom field) goes with it as a local edit, and the next push sends it."""
    import etl.connectors.eddydesk.client as loader

    server, config, engine = _setup(db_url, simulator, make_config)
    client_user = sorted(server.state.users.records)[-1]
    _sql(engine, "INSERT INTO eddydesk_tickets (connection, id, title, priority_id, user_id) "
                 "VALUES ('helpdesk', -1, 'Sent title', 1, :u)", u=client_user)
    _sql(engine, "INSERT INTO eddydesk_ticket_posts (connection, id, ticket_id, text) "
                 "VALUES ('helpdesk', -1, -1, '<p>It burns</p>')")
    from etl.connectors.eddydesk.client import data_of as answered

    def edit_then_answer(body: Any, path: str) -> dict[str, Any]:
        if path.rstrip("/") == "tickets":  # the create's answer: the placeholder is edited meanwhile
            _sql(engine, "UPDATE eddydesk_tickets SET title = 'Edited meanwhile' WHERE id = -1")
            _sql(engine, "INSERT INTO eddydesk_ticket_custom_field_values (connection, ticket_id, field_id, value_text) "
                         "VALUES ('helpdesk', -1, :f, 'set meanwhile')", f=TEXT_FIELD)
        return answered(body, path)

    monkeypatch.setattr(loader, "data_of", edit_then_answer)
    assert jobs.push(config, "helpdesk").failed == 0
    monkeypatch.setattr(loader, "data_of", answered)
    created = max(server.state.tickets.records)
    assert server.state.tickets.records[created]["title"] == "Sent title"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM eddydesk_tickets WHERE id < 0")).scalar() == 0
        assert conn.execute(sa.text("SELECT title FROM eddydesk_tickets WHERE id = :t"), {"t": created}).scalar() \
            == "Edited meanwhile"
        assert conn.execute(sa.text("SELECT value_text FROM eddydesk_ticket_custom_field_values "
                                    "WHERE ticket_id = :t AND field_id = :f"), {"t": created, "f": TEXT_FIELD}).scalar() \
            == "set meanwhile"
    second = jobs.push(config, "helpdesk")
    assert [(w.record_id, w.operation, sorted(c[0] for c in w.changes)) for w in second.tables["tickets"].planned] == [
        (created, "update", [f"custom_fields.{TEXT_FIELD}", "title"])]
    remote = server.state.tickets.records[created]
    assert remote["title"] == "Edited meanwhile"
    assert {c["id"]: c["field_value"] for c in remote["custom_fields"]}[TEXT_FIELD] == "set meanwhile"
    _assert_settled(server, config, engine)
    engine.dispose()


@pytest.mark.parametrize("policy", ["remote_wins", "local_wins", "manual"])
def test_a_push_never_overwrites_a_remote_edit_it_has_not_seen(db_url: str, simulator: Callable[..., SimulatorServer],
                                                               make_config: Callable[..., Any], policy: str) -> None:
    """Local edit, then a remote edit of the same field, then a push with no pull between: the push
    pulls first, so the policy applies as if the pull had been run by hand."""
    push = {**PUSH, "tickets": {"conflict_policy": policy}}
    server, config, engine = _setup(db_url, simulator, make_config, push)
    state = server.state
    ticket = 9
    _sql(engine, "UPDATE eddydesk_tickets SET title = 'Local title' WHERE id = :t", t=ticket)
    state.update_ticket(ticket, title="Remote title")
    summary = jobs.push(config, "helpdesk")
    remote = state.tickets.records[ticket]["title"]
    with engine.connect() as conn:
        mirrored = conn.execute(sa.text("SELECT title FROM eddydesk_tickets WHERE id = :t"), {"t": ticket}).scalar()
    conflicts = open_conflicts_of(engine)
    if policy == "remote_wins":
        assert (remote, mirrored, conflicts) == ("Remote title", "Remote title", [])
        assert _writes(server) == {}
    elif policy == "local_wins":
        assert (remote, mirrored, conflicts) == ("Local title", "Local title", [])
        assert _writes(server) == {"PUT tickets": 1}
    else:
        assert remote == "Remote title", "the remote edit is not overwritten"
        assert mirrored == "Local title" and summary.tables["tickets"].skipped_conflicts == 1
        assert [(c["field"], c["local"], c["remote"]) for c in conflicts] == [("title", "Local title", "Remote title")]
        assert _writes(server) == {}
    engine.dispose()


def test_a_new_ticket_may_choose_an_option_created_in_the_same_push(
        db_url: str, simulator: Callable[..., SimulatorServer], make_config: Callable[..., Any]) -> None:
    push = {**PUSH, "custom_field_options": {}}
    server, config, engine = _setup(db_url, simulator, make_config, push)
    state = server.state
    field_id = next(f["id"] for f in state.fields["ticket"] if f["field_type"] == "select")
    _sql(engine, "INSERT INTO eddydesk_custom_field_options (connection, scope, field_id, id, name_display) "
                 "VALUES ('helpdesk', 'ticket', :f, -5, 'Brand new choice')", f=field_id)
    _sql(engine, "INSERT INTO eddydesk_tickets (connection, id, title, priority_id) VALUES ('helpdesk', -1, 'Chooses', 1)")
    _sql(engine, "INSERT INTO eddydesk_ticket_custom_field_values (connection, ticket_id, field_id, value_text) "
                 "VALUES ('helpdesk', -1, :f, '-5')", f=field_id)
    _sql(engine, "INSERT INTO eddydesk_ticket_posts (connection, id, ticket_id, text) "
                 "VALUES ('helpdesk', -1, -1, '<p>Which one?</p>')")
    summary = jobs.push(config, "helpdesk")
    assert summary.failed == 0
    option = next(o["id"] for o in state.options["ticket"][field_id] if o["name"]["en"] == "Brand new choice")
    ticket = next(t for t in state.tickets.records.values() if t["title"] == "Chooses")
    chosen = {c["id"]: c["field_value"] for c in ticket["custom_fields"]}[field_id]
    assert str(chosen) == str(option), "the ticket was sent with the option's real id, not its placeholder"
    engine.dispose()
