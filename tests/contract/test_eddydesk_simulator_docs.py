"""The EddyDesk simulator against seed 003, line by line: each test quotes what it holds the simulator to.

Our client agreeing with our simulator proves nothing; these pin the simulator to the docs, and the
engine's suite runs against it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from etl.connectors.eddydesk.simulator.data import Sizes
from etl.connectors.eddydesk.simulator.server import SimulatorServer


@pytest.fixture
def api(simulator: Any) -> Any:
    server: SimulatorServer = simulator(Sizes(tickets=50, users=30, organizations=3, kb_articles=2))
    auth = (server.state.admin_email, server.state.admin_api_key)
    with httpx.Client(base_url=server.url + "/", auth=auth) as http:
        yield http, server


def test_deleting_a_ticket_moves_it_to_the_trash_and_delete_true_removes_it(api: Any) -> None:
    """seed 003, Delete order: "delete boolean ... false - move the order to the deleted ones.
    true - complete removal of the order. Default value is false"; 200 with
    {"errors":[{"code":"s-204","title":"No content","details":"Ticket with id {9} successfully deleted"}]}"""
    http, server = api
    answer = http.delete("tickets/9")
    assert answer.status_code == 200
    assert answer.json() == {"errors": [{"code": "s-204", "title": "No content",
                                         "details": "Ticket with id {9} successfully deleted"}]}
    assert server.state.tickets.records[9]["deleted"] == 1, "in the trash"
    assert http.get("tickets/", params={"deleted": 1, "search": server.state.tickets.records[9]["title"],
                                        "exact_search": 1}).json()["data"]
    assert http.delete("tickets/10", params={"delete": "true"}).status_code == 200
    assert 10 not in server.state.tickets.records, "removed outright"
    gone = http.delete("tickets/10")
    assert gone.status_code == 404 and gone.json()["errors"][0]["details"] == "Ticket with id {10} does not exist"


def test_every_delete_answers_the_documented_body(api: Any) -> None:
    """seed 003 prints the s-204 body for replies ("Post with id {15} in ticket with id {9}
    successfully deleted"), comments, users ("User with id {22} successfully deleted"),
    organizations and notes ("Note with id {80} successfully deleted")."""
    http, server = api
    state = server.state
    ticket = next(t for t in sorted(state.tickets.records) if state.posts(t) and state.comments(t))
    post, comment = state.posts(ticket)[0]["id"], state.comments(ticket)[0]["id"]
    client = max(state.users.records)
    note = http.post(f"users/{client}/notes/", data={"text": "test"}).json()["data"]["id"]
    answers = {
        f"tickets/{ticket}/posts/{post}": f"Post with id {{{post}}} in ticket with id {{{ticket}}} successfully deleted",
        f"tickets/{ticket}/comments/{comment}":
            f"Comment with id {{{comment}}} in ticket with id {{{ticket}}} successfully deleted",
        f"users/{client}/notes/{note}": f"Note with id {{{note}}} successfully deleted",
        f"users/{client}": f"User with id {{{client}}} successfully deleted",
        "organizations/3": "Organization with id {3} successfully deleted",
    }
    for path, details in answers.items():
        answer = http.delete(path)
        assert answer.status_code == 200, path
        assert answer.json() == {"errors": [{"code": "s-204", "title": "No content", "details": details}]}, path


def test_missing_records_are_named_as_the_docs_name_them(api: Any) -> None:
    """seed 003: "Post with id {15} in ticket with id {9} does not exist", "Comment with id {15} in
    ticket with id {9} does not exist", and for a user's note the code the docs print there:
    {"code": "s-204", "title": "No content", "details": "Note with id {80} in user with id {22} does not exist"}"""
    http, server = api
    ticket = min(t for t, r in server.state.tickets.records.items() if not r["deleted"])
    assert http.delete(f"tickets/{ticket}/posts/999999").json()["errors"][0]["details"] == (
        f"Post with id {{999999}} in ticket with id {{{ticket}}} does not exist")
    assert http.put(f"tickets/{ticket}/comments/999999", data={"text": "x"}).json()["errors"][0]["details"] == (
        f"Comment with id {{999999}} in ticket with id {{{ticket}}} does not exist")
    user = max(server.state.users.records)
    missing = http.delete(f"users/{user}/notes/999999")
    assert missing.status_code == 404
    assert missing.json() == {"errors": [{"code": "s-204", "title": "No content",
                                          "details": f"Note with id {{999999}} in user with id {{{user}}} does not exist"}]}


def test_refusals_are_titled_as_the_docs_print_them(api: Any) -> None:
    """seed 003, Create user 400: {"code": "e-411", "title": "Required {password} field", "details":
    "Required field {password} is missing or empty"}, one entry per missing field; Add reply 400:
    {"code": "e-411", "title": "Required {text} request", "details": "Required field is missing or empty"}"""
    http, server = api
    refused = http.post("users/", data={"name": "Ada"})
    assert refused.status_code == 400
    assert {"code": "e-411", "title": "Required {password} field",
            "details": "Required field {password} is missing or empty"} in refused.json()["errors"]
    assert [e["title"] for e in refused.json()["errors"]] == [
        "Required {email} field", "Required {group_id} field", "Required {department} field", "Required {password} field"]
    ticket = min(server.state.tickets.records)
    empty = http.post(f"tickets/{ticket}/posts/", data={"text": ""})
    assert empty.json() == {"errors": [{"code": "e-411", "title": "Required {text} request",
                                        "details": "Required field is missing or empty"}]}


def test_replies_are_stored_as_html_and_owned_as_asked(api: Any) -> None:
    """seed 003, Add reply: -d 'text=Problem with email' answers "text": "<p>Problem with email</p>";
    "user_id ... The owner of the comment, if not specified, the owner will be the API user"."""
    http, server = api
    ticket = min(t for t, r in server.state.tickets.records.items() if not r["deleted"])
    client = max(server.state.users.records)
    plain = http.post(f"tickets/{ticket}/posts/", data={"text": "Problem with email"}).json()["data"]
    assert plain["text"] == "<p>Problem with email</p>" and plain["user_id"] == 1
    owned = http.post(f"tickets/{ticket}/comments/", data={"text": "<p>Seen</p>", "user_id": client}).json()["data"]
    assert owned["text"] == "<p>Seen</p>" and owned["user_id"] == client


def test_a_new_tickets_first_reply_is_the_clients_unless_asked_otherwise(api: Any) -> None:
    """seed 003, Create ticket: "create_from_user ... The first response in the application on behalf
    of the employee is 0, on behalf of the user 1, by default 1"."""
    http, server = api
    client = max(server.state.users.records)
    by_default = http.post("tickets/", data={"title": "T1", "description": "Help", "user_id": client}).json()["data"]
    by_staff = http.post("tickets/", data={"title": "T2", "description": "Help", "user_id": client,
                                           "create_from_user": 0}).json()["data"]
    assert server.state.posts(by_default["id"])[-1]["user_id"] == client
    assert server.state.posts(by_staff["id"])[-1]["user_id"] == 1


def test_freeze_date_freezes_and_the_freeze_filter_lists_frozen_tickets(api: Any) -> None:
    """seed 003: "freeze_date ... Freeze the request to date and time"; list filter "freeze ... the
    value 0 - only active orders, the value 1 - only frozen orders. By default, all applications are
    listed". The seeded helpdesk has frozen tickets and tickets in the trash, as a live one does."""
    http, server = api
    frozen = {r["id"] for r in http.get("tickets/", params={"freeze": 1}).json()["data"].values()}
    assert frozen and all(server.state.tickets.records[t]["freeze"] == 1 for t in frozen)
    assert http.get("tickets/", params={"deleted": 1}).json()["data"], "the seed has tickets in the trash"
    ticket = min(t for t, r in server.state.tickets.records.items() if not r["freeze"] and not r["deleted"])
    http.put(f"tickets/{ticket}", json={"freeze_date": "01.01.2030 10:00"})
    assert ticket in {r["id"] for r in http.get("tickets/", params={"freeze": 1}).json()["data"].values()}


def test_user_and_organization_notes_are_added(api: Any) -> None:
    """seed 003: "Add note POST /users/{user_id}/notes/" answers {"data": {"id": 81, "creator_id": 1,
    "user_id": 22, "text": "test", ...}}; likewise POST /organizations/{organiz_id}/notes/."""
    http, server = api
    user = max(server.state.users.records)
    note = http.post(f"users/{user}/notes/", data={"text": "test"}).json()["data"]
    assert note["user_id"] == user and note["text"] == "test" and note["creator_id"] == 1
    assert note["id"] in [n["id"] for n in http.get(f"users/{user}/notes/").json()["data"]]
    org_note = http.post("organizations/2/notes/", data={"text": "org"}).json()["data"]
    assert org_note["text"] == "org"
    assert http.delete(f"organizations/2/notes/{org_note['id']}").json()["errors"][0]["details"] == (
        f"Note with id {{{org_note['id']}}} successfully deleted")


def test_a_users_status_history_is_listed_with_its_filters(api: Any) -> None:
    """seed 003, "User status history GET /users/{user_id}/statuses_log/{?page,from_date_created,
    to_date_created,statuses}": {"data": [{"id": 2, "status_id": "on-hold", "name": {"en": "On hold"},
    "date_created": "2020-11-30 23:28:36"}, ...], "pagination": {...}}; a missing user is "User with id
    {22} does not exist"."""
    http, server = api
    agent = next(u for u in server.state.staff_ids if server.state.status_log(u))
    listed = http.get(f"users/{agent}/statuses_log/").json()
    entries = listed["data"]
    assert set(entries[0]) == {"id", "status_id", "name", "date_created"} and listed["pagination"]["total"] == len(entries)
    assert [e["id"] for e in entries] == sorted((e["id"] for e in entries), reverse=True), "newest first"
    newest = entries[0]["date_created"]
    since = http.get(f"users/{agent}/statuses_log/", params={"from_date_created": newest}).json()["data"]
    assert [e["id"] for e in since] == [entries[0]["id"]], "the date filters are inclusive"
    status = entries[0]["status_id"]
    only = http.get(f"users/{agent}/statuses_log/", params={"statuses": status}).json()["data"]
    assert only and all(e["status_id"] == status for e in only)
    missing = http.get("users/999999/statuses_log/")
    assert missing.status_code == 404 and missing.json()["errors"][0]["details"] == "User with id {999999} does not exist"
