"""Which write a request is: method and path to a HelpdeskWrites call (seed 003's write endpoints)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from etl.connectors.eddydesk.simulator.forms import Record, deleted, number_of
from etl.connectors.eddydesk.simulator.writes import HelpdeskWrites


def dispatch(writes: HelpdeskWrites, method: str, parts: list[str], body: Record,
             not_found: Callable[..., Exception], params: Any = None) -> tuple[str, Any]:
    """(endpoint name, answer data) for a write; raises Refused or `not_found(details)`."""
    state = writes.state
    params = params or {}
    head, n = (parts[0] if parts else ""), len(parts)
    scopes = {"custom_fields": "ticket", "users": "user", "organizations": "organization"}
    at = 1 if head == "custom_fields" else 2
    if head in scopes and parts[at - 1:at] == ["custom_fields"] and parts[at + 1:at + 2] == ["options"]:
        scope, field_id = scopes[head], number_of(parts[at])
        if field_id is None or field_id not in state.options[scope]:
            raise not_found(f"Field with id {{{parts[at]}}} does not exist")
        if n == at + 2 and method == "POST":
            return "POST options", writes.write_options(scope, field_id, body)
        option_id = number_of(parts[at + 2]) if n == at + 3 else None
        if method == "DELETE" and option_id is not None:
            options = state.options[scope][field_id]
            if not any(o["id"] == option_id for o in options):
                raise not_found(f"Option with id {{{option_id}}} does not exist")
            options[:] = [o for o in options if o["id"] != option_id]
            return "DELETE options", deleted(f"Option with id {{{option_id}}} successfully deleted")
        raise not_found("Unknown API method")
    labels = {"tickets": (state.tickets, "Ticket"), "users": (state.users, "User"),
              "organizations": (state.organizations, "Organization")}
    if head not in labels:
        raise not_found("Unknown API method")
    collection, label = labels[head]
    if n == 1 and method == "POST":
        create = {"tickets": writes.create_ticket, "users": writes.create_user,
                  "organizations": writes.create_organization}[head]
        return f"POST {head}", create(body)
    record_id = number_of(parts[1]) if n >= 2 else None
    if record_id is None or collection.get(record_id) is None:
        raise not_found(f"{label} with id {{{parts[1] if n >= 2 else ''}}} does not exist")
    if n == 2 and method == "PUT":
        update = {"tickets": writes.update_ticket, "users": writes.update_user,
                  "organizations": writes.update_organization}[head]
        return f"PUT {head}", update(record_id, body)
    if n == 2 and method == "DELETE":
        if head == "tickets" and str(params.get("delete", "false")).lower() in ("true", "1"):
            state.hard_delete_ticket(record_id)
        elif head == "tickets":
            state.soft_delete_ticket(record_id)
        elif head == "users":
            state.hard_delete_user(record_id)
        else:
            state.hard_delete_organization(record_id)
        return f"DELETE {head}", deleted(f"{label} with id {{{record_id}}} successfully deleted")
    if head == "tickets" and n in (3, 4) and parts[2] in ("posts", "comments"):
        return _ticket_child(writes, method, parts, body, record_id, not_found)
    if head in ("users", "organizations") and n in (3, 4) and parts[2] == "notes":
        return _note(writes, method, parts, body, record_id, not_found)
    raise not_found("Unknown API method")


def _ticket_child(writes: HelpdeskWrites, method: str, parts: list[str], body: Record, ticket_id: int,
                  not_found: Callable[..., Exception]) -> tuple[str, Any]:
    state, kind, n = writes.state, parts[2], len(parts)
    listing = state.posts if kind == "posts" else state.comments
    label = "Post" if kind == "posts" else "Comment"
    if n == 3 and method == "POST":
        add = state.add_post if kind == "posts" else state.add_comment
        return f"POST {kind}", add(ticket_id, writes.child_text(body), user_id=writes.owner(body))
    child_id = number_of(parts[3]) if n == 4 else None
    if child_id is None or not any(c["id"] == child_id for c in listing(ticket_id)):
        raise not_found(f"{label} with id {{{parts[-1]}}} in ticket with id {{{ticket_id}}} does not exist")
    if method == "PUT":
        edit = state.edit_post if kind == "posts" else state.edit_comment
        edit(ticket_id, child_id, writes.child_text(body))
        return f"PUT {kind}", next(c for c in listing(ticket_id) if c["id"] == child_id)
    if method == "DELETE":
        remove = state.delete_post if kind == "posts" else state.delete_comment
        remove(ticket_id, child_id)
        return f"DELETE {kind}", deleted(f"{label} with id {{{child_id}}} in ticket with id {{{ticket_id}}} "
                                          "successfully deleted")
    raise not_found("Unknown API method")


def _note(writes: HelpdeskWrites, method: str, parts: list[str], body: Record, parent_id: int,
          not_found: Callable[..., Exception]) -> tuple[str, Any]:
    """POST …/notes/ and DELETE …/notes/{id} of a user or an organization (seed 003)."""
    state, n = writes.state, len(parts)
    users = parts[0] == "users"
    listing = state.user_notes if users else state.organization_notes
    if n == 3 and method == "POST":
        add = state.add_user_note if users else state.add_organization_note
        return f"POST {parts[0]} notes", add(parent_id, str(body.get("text") or ""))
    note_id = number_of(parts[3]) if n == 4 else None
    if method == "DELETE" and note_id is not None:
        if not any(note["id"] == note_id for note in listing(parent_id)):
            # the code the docs print for this answer
            owner = "user" if users else "organizations"
            raise not_found(f"Note with id {{{note_id}}} in {owner} with id {{{parent_id}}} does not exist",
                            code="s-204", title="No content")
        remove = state.delete_user_note if users else state.delete_organization_note
        remove(parent_id, note_id)
        return f"DELETE {parts[0]} notes", deleted(f"Note with id {{{note_id}}} successfully deleted")
    raise not_found("Unknown API method")
