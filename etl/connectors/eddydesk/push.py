"""Push local edits of EddyDesk tables (seed 003): tickets, users, organizations, replies, notes.

What a user does (plain SQL on the mirror), per table with a `[connections.X.push.TABLE]` section:
- UPDATE writable columns (`etl.connectors.eddydesk.diff.WRITABLE`) or a custom field's `value_text` in the
  table's custom-field values table;
- INSERT a new row with a negative placeholder id (custom-field values and, for users, department
  rows under that id too). A new ticket needs a description: its reply row with the
  placeholder ticket_id (`eddydesk_ticket_posts`, the highest placeholder id) is sent as the
  description; further placeholder replies and notes are added to the ticket after it exists;
- mark a row for deletion: `UPDATE … SET is_deleted = true` leaving `deleted_at` empty, with
  `allow_delete = true`.

`desksync push` sends what differs from the row's base version (`raw`): a JSON PUT per changed
ticket, user or organization with the changed members only, a form PUT per changed reply or
note; creates are form-encoded POSTs (`custom_fields[ID]=value`). The answer is the record as
the remote now holds it and becomes the row (its new base), so the next pull sees no change.

Creates record their intent first. Users (by e-mail) and organizations (by name) are looked up
before creating (`upsert = true`): a match is updated instead of duplicated, which also finds a
create whose answer was lost. Tickets, replies and notes have no unique key in the API: after a
lost answer (an intent without a result) the retry searches for them (tickets: the exact title
created since the intent; replies and notes: the same text under the ticket) before creating.
A record someone else created in that minute with the same title or text would be taken for
ours: the API offers nothing surer.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa

from etl.connectors.eddydesk import models as m
from etl.connectors.eddydesk.client import EddyDeskClient, record_path
from etl.connectors.eddydesk.settings import EddyDeskConnection, EddyDeskPush
from etl.connectors.eddydesk.streams import BY_NAME, children_queue
from etl.connectors.eddydesk.writers import helpdesk_writer
from etl.core.mirror.base import table_of
from etl.core.mirror.pending import add_pending
from etl.core.mirror.rows import RowBuilder
from etl.core.mirror.write import TableWriter
from etl.core.push.columns import (
    CUSTOM,
    Texts,
    Writable,
    carry_edits,
    edits_meanwhile,
    local_values,
    record_values,
    texts,
    with_values,
)
from etl.core.push.conflicts import open_conflict_ids
from etl.core.push.fields import changed_fields
from etl.core.push.journal import (
    PlannedWrite,
    PushOutcome,
    earlier_intents,
    held_ids,
    hold_unsendable,
    log_attempt,
    log_done,
    send_concurrently,
    send_creates,
)

# creates that later ones may refer to go first: a new ticket's replies need the ticket (options:
# `eddydesk_options`)
ORDER = ("custom_field_options", "organizations", "users", "tickets", "ticket_posts", "ticket_comments")
POSTS = table_of(m.TicketPost)
COMMENTS = table_of(m.TicketComment)
USER_DEPARTMENTS = table_of(m.UserDepartment)
ISO = "%Y-%m-%d %H:%M:%S"
Form = dict[str, str]
Record = dict[str, Any]


def _api_value(spec: Writable, name: str, text: str | None) -> Any:
    """A text as the JSON update sends it: numbers as numbers, the lock as a boolean."""
    if text is None:
        return ""
    if name in spec.numbers:
        return int(text)
    if name == "ticket_lock":
        return text == "1"
    return text


def _json_body(spec: Writable, names: list[str], local: dict[str, str | None]) -> dict[str, Any]:
    body: dict[str, Any] = {n: _api_value(spec, n, local[n]) for n in names if not n.startswith(CUSTOM)}
    custom = {n[len(CUSTOM):]: local[n] or "" for n in names if n.startswith(CUSTOM)}
    if custom:
        body["custom_fields"] = custom
    return body


def _form_body(local: dict[str, str | None]) -> Form:
    """A create's members as the form sends them: only what the row holds."""
    form: Form = {}
    for name, text in local.items():
        if text is None:
            continue
        key = f"custom_fields[{name[len(CUSTOM):]}]" if name.startswith(CUSTOM) else name
        form[key] = "true" if name == "ticket_lock" and text == "1" else text
    return form


# --- each table's ways (seed 003) ------------------------------------------------------------------

def _ticket_description(conn: sa.Connection, connection: str, push: EddyDeskPush, record_id: int, form: Form) -> None:
    """A new ticket's description: its newest placeholder reply."""
    description = conn.execute(sa.select(POSTS.c.text).where(
        POSTS.c.connection == connection, POSTS.c.ticket_id == record_id, POSTS.c.id < 0)
        .order_by(POSTS.c.id.desc()).limit(1)).scalar()
    if description:
        form["description"] = description


def _user_departments(conn: sa.Connection, connection: str, push: EddyDeskPush, record_id: int, form: Form) -> None:
    """A new user's departments (its department rows, or the configured defaults) and other defaults."""
    departments = conn.execute(sa.select(USER_DEPARTMENTS.c.department_id).where(
        USER_DEPARTMENTS.c.connection == connection, USER_DEPARTMENTS.c.user_id == record_id)).scalars().all()
    defaults = push.create_defaults
    for name, value in defaults.items():
        if name != "department" and name not in form:
            form[name] = str(value)
    for n, department in enumerate(departments or defaults.get("department") or []):
        form[f"department[{n}]"] = str(department)


def _with_password(form: Form) -> Form:
    # required by the API; never stored or logged: the user sets their own through the helpdesk
    return {**form, "password": secrets.token_urlsafe(18)}


def _ticket_as_listed(record: Record) -> Record:
    """The single ticket spells the client's name "user_name", the list "username" (seed 003)."""
    if "user_name" in record:
        record = {**record, "username": record["user_name"]}
        del record["user_name"]
    return record


def _lost_ticket(client: EddyDeskClient, write: PlannedWrite, since: datetime, tz: tzinfo) -> Record | None:
    """A ticket created after a lost answer: the exact title, created since the intent (newest)."""
    form = write.payload["form"]
    start = (since - timedelta(minutes=1)).astimezone(tz).strftime(ISO)
    page = client.list_page("tickets/", {"search": form.get("title", ""), "exact_search": 1, "from_date_created": start})
    matches = [r for r in page.records if r.get("title") == form.get("title")
               and ("user_id" not in form or str(r.get("user_id")) == form["user_id"])]
    return max(matches, key=lambda r: int(r["id"]), default=None)


def _lost_child(client: EddyDeskClient, write: PlannedWrite, since: datetime, tz: tzinfo) -> Record | None:
    """A reply or note created after a lost answer: the same text under the ticket."""
    page = client.list_page(write.payload["path"])
    return next((r for r in page.records if r.get("text") == write.payload["form"].get("text")), None)


def _ticket_created(conn: sa.Connection, connection: str, placeholder: int, new_id: int) -> None:
    """The description reply is now on the remote (the next pull brings it); other new replies and
    notes of the ticket are created under its real id, and its lists are queued for the next pull
    (the row now matches the remote ticket, so the pull would not look at them)."""
    description = conn.execute(sa.select(sa.func.max(POSTS.c.id)).where(
        POSTS.c.connection == connection, POSTS.c.ticket_id == placeholder, POSTS.c.id < 0)).scalar()
    if description is not None:
        conn.execute(POSTS.delete().where(POSTS.c.connection == connection, POSTS.c.id == description))
    for table in (POSTS, COMMENTS):
        conn.execute(table.update().where(table.c.connection == connection, table.c.ticket_id == placeholder)
                     .values(ticket_id=new_id))
    add_pending(conn, connection, children_queue(BY_NAME["tickets"]), ("ticket_posts", "ticket_comments"), [new_id])


def _user_created(conn: sa.Connection, connection: str, placeholder: int, new_id: int) -> None:
    conn.execute(USER_DEPARTMENTS.delete().where(USER_DEPARTMENTS.c.connection == connection,
                                                 USER_DEPARTMENTS.c.user_id == placeholder))


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class TableWays:
    """What sets one table's writes apart (seed 003)."""

    child: bool = False  # replies and notes: under their ticket, sent as a form with the text only
    unique: str | None = None  # the member a create is matched on (`upsert`)
    create_extras: Callable[[sa.Connection, str, EddyDeskPush, int, Form], None] | None = None
    secret_form: Callable[[Form], Form] = _same  # what the POST adds and nothing records
    find_lost: Callable[[EddyDeskClient, PlannedWrite, datetime, tzinfo], Record | None] | None = None
    as_listed: Callable[[Record], Record] = _same  # an answer in the shape a pull lists it
    created: Callable[[sa.Connection, str, int, int], None] | None = None  # (conn, connection, placeholder, id)


WAYS = {
    "tickets": TableWays(create_extras=_ticket_description, find_lost=_lost_ticket, as_listed=_ticket_as_listed,
                         created=_ticket_created),
    "users": TableWays(unique="email", create_extras=_user_departments, secret_form=_with_password,
                       created=_user_created),
    "organizations": TableWays(unique="name"),
    "ticket_posts": TableWays(child=True, find_lost=_lost_child),
    "ticket_comments": TableWays(child=True, find_lost=_lost_child),
}


# --- planning --------------------------------------------------------------------------------------

def plan(conn: sa.Connection, connection: str, spec: Writable, push: EddyDeskPush, tz: tzinfo,
         retry_failed: bool) -> PushOutcome:
    """What a push of this table would send (`--dry-run` prints it)."""
    outcome = PushOutcome()
    t = spec.table
    ways = WAYS[spec.stream]
    builder = RowBuilder(t, tz, "en")
    held = held_ids(conn, connection, t.name)
    conflicted = open_conflict_ids(conn, connection, t.name)
    extra = [t.c.ticket_id] if ways.child else []
    rows = conn.execute(sa.select(t.c.id, t.c.raw, t.c.is_deleted, t.c.deleted_at, *extra, *(t.c[c] for c in spec.columns))
                        .where(t.c.connection == connection, sa.or_(t.c.is_deleted.is_(False), t.c.deleted_at.is_(None)))
                        .order_by(t.c.id)).mappings().all()
    custom = local_values(conn, spec, connection, [r["id"] for r in rows])
    for row in rows:
        record_id = int(row["id"])
        parent_id = int(row["ticket_id"]) if ways.child else None
        path = record_path(spec.stream, record_id, parent_id)
        if record_id < 0:
            if row["is_deleted"]:
                continue
            if parent_id is not None and parent_id < 0:
                continue  # goes with its new ticket (as its description, or right after it is created)
            local = {**texts(spec, row, tz), **custom[record_id]}
            write = _plan_create(conn, connection, spec, push, record_id, parent_id, local)
        elif row["is_deleted"]:
            if not push.allow_delete:
                outcome.skipped_deletes += 1
                continue
            write = PlannedWrite(t.name, record_id, "delete", payload={"path": path}, parent_id=parent_id)
        else:
            raw = row["raw"] if isinstance(row["raw"], dict) else orjson.loads(row["raw"])
            base, local_custom = with_values(texts(spec, builder.build(raw)[0], tz), record_values(spec, raw),
                                             custom[record_id])
            local = {**texts(spec, row, tz), **local_custom}
            changed = changed_fields(base, local)
            if not changed:
                continue
            body: dict[str, Any] = {"text": local["text"] or ""} if ways.child else _json_body(spec, changed, local)
            write = PlannedWrite(t.name, record_id, "update", [(c, base[c], local[c]) for c in changed],
                                 payload={"path": path, "body": body}, parent_id=parent_id)
        outcome.consider(write, conflicted, held, retry_failed)
    return outcome.finish(held)


def _plan_create(conn: sa.Connection, connection: str, spec: Writable, push: EddyDeskPush, record_id: int,
                 parent_id: int | None, local: dict[str, str | None]) -> PlannedWrite:
    ways = WAYS[spec.stream]
    form = {"text": local["text"] or ""} if ways.child else _form_body(local)
    if ways.create_extras is not None:
        ways.create_extras(conn, connection, push, record_id, form)
    write = PlannedWrite(spec.table.name, record_id, "create", [(n, None, v) for n, v in local.items() if v is not None],
                         parent_id=parent_id)
    write.payload = {"path": record_path(spec.stream, None, parent_id), "form": form}
    return write


# --- sending ---------------------------------------------------------------------------------------

def _apply(conn: sa.Connection, writer: TableWriter, spec: Writable, answers: list[tuple[Record, int | None]]) -> None:
    if not answers:
        return
    ways = WAYS[spec.stream]
    records = []
    for record, parent in answers:
        listed = ways.as_listed(dict(record))
        if parent is not None:
            listed.setdefault("ticket_id", parent)
        records.append(listed)
    overrides = [{"ticket_id": parent} for _, parent in answers] if ways.child else None
    writer.upsert(conn, records, None, overrides=overrides)


def send(engine: sa.Engine, client: EddyDeskClient, connection: str, settings: EddyDeskConnection, spec: Writable,
         outcome: PushOutcome) -> None:
    """Send the planned writes. Creates go one by one (each records its intent first); updates and
    deletes go several at a time within the rate limit, their answers written back in batches: a
    kill loses at most answers to updates and deletes, which are safe to send again."""
    push = settings.push[spec.stream]
    # what the answers in hand were sent: an edit made in the mirror meanwhile survives their write-back
    sent: dict[int, Texts] = {}
    writer = helpdesk_writer(BY_NAME[spec.stream], settings, connection, sent=sent)
    tz = ZoneInfo(settings.timezone)
    ready = hold_unsendable(engine, connection, outcome)

    def created(conn: sa.Connection, write: PlannedWrite, record: Record) -> None:
        _created(conn, writer, spec, connection, write, record, tz)

    send_creates(engine, connection, outcome, ready, lambda w: _create(engine, client, connection, spec, push, w, tz),
                 created)

    def send_one(write: PlannedWrite) -> Record | None:
        if write.operation == "delete":
            client.delete(write.payload["path"])
            return None
        return client.update(write.payload["path"], write.payload["body"], as_form=WAYS[spec.stream].child)

    def written(conn: sa.Connection, done: list[tuple[PlannedWrite, Record | None]]) -> None:
        sent.clear()
        sent.update({write.record_id: write.sent_values() for write, _ in done})
        _apply(conn, writer, spec, [(record, write.parent_id) for write, record in done if record is not None])
        deleted = [w.record_id for w, _ in done if w.operation == "delete"]
        if deleted:
            t = spec.table
            conn.execute(t.update().where(t.c.connection == connection, t.c.id.in_(deleted))
                         .values(deleted_at=datetime.now(UTC)))

    send_concurrently(engine, connection, spec.table.name, outcome, ready, send_one, written, settings.concurrency)


def _find_existing(client: EddyDeskClient, spec: Writable, push: EddyDeskPush, write: PlannedWrite,
                   since: datetime | None, tz: tzinfo) -> Record | None:
    """The remote record a new row stands for: by its unique member (users, organizations), or
    after a lost answer by the best search the API offers (tickets, replies, notes)."""
    ways = WAYS[spec.stream]
    if ways.unique is not None:
        value = write.payload["form"].get(ways.unique)
        if not value or not (push.upsert or since is not None):
            return None
        page = client.list_page(spec.stream + "/", {"search": value, "exact_search": 1})
        return next((r for r in page.records if str(r.get(ways.unique, "")).lower() == value.lower()), None)
    if since is None or ways.find_lost is None:
        return None
    return ways.find_lost(client, write, since, tz)


def _create(engine: sa.Engine, client: EddyDeskClient, connection: str, spec: Writable, push: EddyDeskPush,
            write: PlannedWrite, tz: tzinfo) -> Record:
    """Create (or update the matching record), recording the intent first; the answer's record."""
    since = earlier_intents(engine, connection, write.table, [write.record_id]).get(write.record_id)
    with engine.begin() as conn:
        log_attempt(conn, connection, write, "intent", None, None)
    ways = WAYS[spec.stream]
    existing = _find_existing(client, spec, push, write, since, tz)
    if existing is not None:
        write.payload = {**write.payload, "matched": existing["id"]}
        if ways.unique is None:
            return existing  # found again after a lost answer: it holds what we sent
        # the row's own values only (create defaults must not move an existing user), and only
        # those the remote record does not hold already: after a lost answer, often none
        remote = {**texts(spec, RowBuilder(spec.table, tz, "en").build(existing)[0], tz), **record_values(spec, existing)}
        local = {n: v for n, _, v in write.changes if remote.get(n) != v}
        if not local:
            return existing
        return client.update(record_path(spec.stream, existing["id"]), _json_body(spec, list(local), local))
    return client.create(write.payload["path"], ways.secret_form(write.payload["form"]))


def _created(conn: sa.Connection, writer: TableWriter, spec: Writable, connection: str, write: PlannedWrite,
             record: Record, tz: tzinfo) -> None:
    """The remote record takes the placeholder's place; children of the placeholder follow it,
    and so do the edits made to it while its create was under way."""
    t = spec.table
    new_id = int(record["id"])
    edits = edits_meanwhile(conn, spec, connection, tz, write.record_id, write.sent_values())
    _apply(conn, writer, spec, [(record, write.parent_id)])
    carry_edits(conn, spec, connection, new_id, edits)
    conn.execute(t.delete().where(t.c.connection == connection, t.c.id == write.record_id))
    for child, column in BY_NAME[spec.stream].child_tables:
        conn.execute(child.delete().where(child.c.connection == connection, child.c[column] == write.record_id))
    ways = WAYS[spec.stream]
    if ways.created is not None:
        ways.created(conn, connection, write.record_id, new_id)
    write.payload = {**write.payload, "id": new_id}
    log_done(conn, connection, t.name, [write])
