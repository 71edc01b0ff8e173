"""Push EddyDesk custom-field options (seed 003): renames and new options in batches, deletions.

What a user does (plain SQL on `eddydesk_custom_field_options`, with a
`[connections.X.push.custom_field_options]` section):
- UPDATE name_display: the option's name in the connection's language (its other languages are
  kept);
- INSERT a row with a negative placeholder id, its scope (ticket, user or organization),
  field_id, name_display and, in a hierarchy field, pid (an existing option's id);
- mark a row for deletion (`is_deleted = true`, `deleted_at` empty) with `allow_delete = true`.

POST …/custom_fields/{id}/options adds and renames options, "100 entries per request" at most
(the docs' limit): a push sends one request per field and 100 changed options, not one per option.
The answer lists the affected options; the docs' example lists them in the order sent. Renames
are matched to it by id, new options by parent and name in that order. DELETE …/options/{id}
removes one option; its answer is the docs' "s-204" body.

The answers are written back against what was sent (etl.core.push.columns.merger), so a rename made
in the mirror while the request was under way is kept, and a new option's goes to its created
row. Option ids are keys within their field only (the table's key is scope, field, id): every
write keeps to the field; a placeholder id repeated across fields is held, since the push's
journal knows rows by id.

A batch with new options records each one's intent first. After a lost answer, the field's
options are listed and a new option whose parent and name are there is taken as made: options
have no other key, so an option someone else gave the same name under the same parent meanwhile
would be taken for ours.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from etl.connectors.eddydesk import models as m
from etl.connectors.eddydesk.client import SYSTEM, EddyDeskClient
from etl.connectors.eddydesk.settings import EddyDeskConnection, EddyDeskPush
from etl.connectors.eddydesk.streams import BY_NAME
from etl.connectors.eddydesk.writers import helpdesk_writer
from etl.core.errors import ApiError, MalformedResponse
from etl.core.mirror.base import table_of
from etl.core.mirror.rows import RowBuilder
from etl.core.mirror.write import in_scope
from etl.core.push.columns import Writable, carry_edits, edits_meanwhile, to_text
from etl.core.push.conflicts import open_conflict_ids
from etl.core.push.journal import (
    PlannedWrite,
    PushOutcome,
    earlier_intents,
    held_ids,
    hold,
    hold_unsendable,
    log_attempt,
    log_done,
    send_concurrently,
)

VALUES = {"ticket": table_of(m.TicketCustomFieldValue), "user": table_of(m.UserCustomFieldValue),
          "organization": table_of(m.OrganizationCustomFieldValue)}
PREFIX = {"ticket": "custom_fields/", "user": "users/custom_fields/", "organization": "organizations/custom_fields/"}
BATCH = 100  # "The general limit for adding/updating options is 100 entries per request"


def plan(conn: sa.Connection, connection: str, spec: Writable, push: EddyDeskPush, language: str,
         retry_failed: bool) -> PushOutcome:
    """What a push of the options would send (`--dry-run` prints it)."""
    outcome = PushOutcome()
    t = spec.table
    builder = RowBuilder(t, UTC, language)
    held = held_ids(conn, connection, t.name)
    conflicted = open_conflict_ids(conn, connection, t.name)
    rows = conn.execute(sa.select(t.c.scope, t.c.field_id, t.c.id, t.c.pid, t.c.raw, t.c.is_deleted, t.c.name_display)
                        .where(t.c.connection == connection, sa.or_(t.c.is_deleted.is_(False), t.c.deleted_at.is_(None)))
                        .order_by(t.c.scope, t.c.field_id, t.c.id.desc())).mappings().all()
    # a placeholder names its row in the push journal and in held rows, which know no field
    placeholders = Counter(int(r["id"]) for r in rows if int(r["id"]) < 0 and not r["is_deleted"])
    for row in rows:
        record_id, scope = int(row["id"]), str(row["scope"])
        where = {"scope": scope, "field_id": int(row["field_id"])}
        path = f"{PREFIX.get(scope, PREFIX['ticket'])}{row['field_id']}/options/"
        local = to_text(row["name_display"], UTC)
        if record_id < 0:
            if row["is_deleted"]:
                continue
            option: dict[str, Any] = {"name": {language: local}, **({"pid": int(row["pid"])} if row["pid"] else {})}
            write = PlannedWrite(t.name, record_id, "create", [("name_display", None, local)],
                                 payload={"path": path, **where, "option": option})
            if not local:
                write.problem = "a new option needs a name (name_display)"
            elif placeholders[record_id] > 1:
                write.problem = (f"placeholder id {record_id} is given to {placeholders[record_id]} new options: "
                                 "give each its own negative id")
        elif row["is_deleted"]:
            if not push.allow_delete:
                outcome.skipped_deletes += 1
                continue
            write = PlannedWrite(t.name, record_id, "delete", payload={"path": f"{path}{record_id}", **where})
        else:
            raw = row["raw"] if isinstance(row["raw"], dict) else orjson.loads(row["raw"])
            base = to_text(builder.build(raw)[0].get("name_display"), UTC)
            if base == local:
                continue
            known = raw.get("name")
            name = {**(known if isinstance(known, dict) else {}), language: local}
            write = PlannedWrite(t.name, record_id, "update", [("name_display", base, local)],
                                 payload={"path": path, **where, "option": {"id": record_id, "name": name}})
            if not local:
                write.problem = "an option's name cannot be emptied (delete the option instead)"
        if scope not in PREFIX:
            write.problem = f"scope {scope!r} is none of {', '.join(PREFIX)}"
        outcome.consider(write, conflicted, held, retry_failed)
    return outcome.finish(held)


def send(engine: sa.Engine, client: EddyDeskClient, connection: str, settings: EddyDeskConnection, spec: Writable,
         outcome: PushOutcome) -> None:
    ready = hold_unsendable(engine, connection, outcome)
    batches: dict[tuple[str, int], list[PlannedWrite]] = defaultdict(list)
    for write in ready:
        if write.operation != "delete":
            batches[(write.payload["scope"], write.payload["field_id"])].append(write)
    for (scope, field_id), writes in batches.items():
        for start in range(0, len(writes), BATCH):
            _send_batch(engine, client, connection, settings, spec, outcome, scope, field_id, writes[start:start + BATCH])

    def send_one(write: PlannedWrite) -> None:
        client.delete(write.payload["path"])

    def written(conn: sa.Connection, done: list[tuple[PlannedWrite, None]]) -> None:
        t = spec.table
        now = datetime.now(UTC)
        for write, _ in done:  # option ids are keys within their field only
            field = {"scope": write.payload["scope"], "field_id": write.payload["field_id"]}
            conn.execute(t.update().where(*in_scope(t, connection, field), t.c.id == write.record_id)
                         .values(deleted_at=now))

    send_concurrently(engine, connection, spec.table.name, outcome, [w for w in ready if w.operation == "delete"],
                      send_one, written, settings.concurrency)


def _send_batch(engine: sa.Engine, client: EddyDeskClient, connection: str, settings: EddyDeskConnection,
                spec: Writable, outcome: PushOutcome, scope: str, field_id: int, writes: list[PlannedWrite]) -> None:
    """One POST with up to 100 options of one field; its answer written back in one transaction."""
    language = settings.language
    creates = [w for w in writes if w.operation == "create"]
    lost = set(earlier_intents(engine, connection, spec.table.name, [w.record_id for w in creates]))
    with engine.begin() as conn:
        for write in creates:
            log_attempt(conn, connection, write, "intent", None, None)
    path = writes[0].payload["path"]
    answers: dict[int, dict[str, Any]] = {}
    if lost:
        listed = _all_options(client, path)
        for write in creates:
            if write.record_id in lost:
                found = _take(listed, write.payload["option"], language)
                if found is not None:
                    answers[write.record_id] = found
    to_send = [w for w in writes if w.record_id not in answers]
    if to_send:
        outcome.sent += len(to_send)
        try:
            # never retried blindly when it creates: a lost answer may have made the options already
            body = client.write_options(path, [w.payload["option"] for w in to_send],
                                        retry=not any(w.operation == "create" for w in to_send))
        except ApiError as exc:
            with engine.begin() as conn:
                for write in to_send:
                    hold(conn, connection, write, exc.code, exc.message)
            outcome.failed += len(to_send)
            to_send, writes = [], [w for w in writes if w.record_id in answers]
        else:
            answers.update(_match(body, to_send, language, path))
    if not writes:
        return
    # what the renames sent: a name given in the mirror while the request was under way is kept
    sent = {w.record_id: w.sent_values() for w in writes if w.operation == "update"}
    writer = helpdesk_writer(BY_NAME[f"{scope}_custom_field_options"], settings, connection, sent=sent)
    t = spec.table
    field = {"scope": scope, "field_id": field_id}
    with engine.begin() as conn:
        made = [w for w in creates if w.record_id in answers]
        edits = [edits_meanwhile(conn, spec, connection, UTC, w.record_id, w.sent_values(), field) for w in made]
        writer.upsert(conn, [answers[w.record_id] for w in writes], None, scope=field)
        if made:
            conn.execute(t.delete().where(*in_scope(t, connection, field), t.c.id.in_([w.record_id for w in made])))
        for write, edit in zip(made, edits, strict=True):
            new_id = int(answers[write.record_id]["id"])
            carry_edits(conn, spec, connection, new_id, edit, field)
            _follow_in_values(conn, connection, scope, field_id, write.record_id, new_id)
            write.payload = {**write.payload, "id": new_id}
        log_done(conn, connection, t.name, writes)
    outcome.succeeded(to_send)


def _follow_in_values(conn: sa.Connection, connection: str, scope: str, field_id: int, placeholder: int,
                      new_id: int) -> None:
    """Custom-field values that chose the new option by its placeholder id (a new ticket's, say)
    now hold its real id: the ticket or user pushed next sends that. In the transaction that
    writes the option's id back, so that no kill leaves a value naming a placeholder that is gone."""
    values = VALUES[scope]
    conn.execute(values.update().where(values.c.connection == connection, values.c.field_id == field_id,
                                       values.c.value_text == str(placeholder))
                 .values(value_text=str(new_id), value=new_id))


def _all_options(client: EddyDeskClient, path: str) -> list[dict[str, Any]]:
    page = client.list_page(path)
    options = list(page.records)
    for number in range(2, page.total_pages + 1):
        options += client.list_page(path, {"page": number}).records
    return options


def _take(options: list[dict[str, Any]], sent: dict[str, Any], language: str) -> dict[str, Any] | None:
    """The first option with the sent parent and name, removed from `options` (each matches once)."""
    pid, name = int(sent.get("pid") or 0), sent["name"].get(language)
    for n, option in enumerate(options):
        names = option.get("name")
        if int(option.get("pid") or 0) == pid and isinstance(names, dict) and names.get(language) == name:
            return options.pop(n)
    return None


def _match(body: Any, sent: list[PlannedWrite], language: str, path: str) -> dict[int, dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise MalformedResponse(SYSTEM, "answer has no 'data' array", path=path)
    affected = [o for o in body["data"] if isinstance(o, dict) and o.get("id") is not None]
    by_id = {int(o["id"]): o for o in affected}
    out: dict[int, dict[str, Any]] = {}
    for write in sent:
        if write.operation == "update":
            if write.record_id not in by_id:
                raise MalformedResponse(SYSTEM, f"the answer does not list option {write.record_id}", path=path)
            out[write.record_id] = by_id[write.record_id]
    created = [o for o in affected if int(o["id"]) not in out]
    for write in sent:
        if write.operation == "create":
            found = _take(created, write.payload["option"], language)
            if found is None:
                raise MalformedResponse(SYSTEM, f"the answer lists no new option named "
                                        f"{write.payload['option']['name'].get(language)!r}", path=path)
            out[write.record_id] = found
    return out
