"""Push local edits of Udesk knowledge (seed 001) and KM entities (seed 002).

What a user does (plain SQL on the mirror), per table with a `[connections.X.push.TABLE]` section:
- UPDATE writable columns (`etl.connectors.udesk.knowledge.diff.WRITABLE`): a catalog's name; a question's
  title, content, content_type, lasts, last_min, last_max; a useful expression's content; a
  useful link's name and url; a KM entity's name, api_name, regex, remark and its values in
  `udesk_km_entity_values` (UPDATE original_value or synonyms, INSERT a row with a negative
  value_id, DELETE a row);
- INSERT a new row with a negative placeholder id: a catalog with knowledge_type, name and
  parent_id (empty or 0: top level; it may be another new catalog's placeholder); a question,
  expression or link with its catalog_id (questions may leave it empty: uncategorised); agent_id,
  the owner, defaults to 0 (the administrator). An entity with robot_id, name and api_name, and
  its values as rows under its placeholder id;
- mark a row for deletion: `UPDATE … SET is_deleted = true` leaving `deleted_at` empty, with
  `allow_delete = true`.

`desksync push` sends what differs from the row's base version (`raw`): a PUT per changed
record, with the members the API requires (agent_id; a question's lasts; an entity's robotId,
name and apiName) besides the changed ones, and an entity's values as the value-level
difference (changeType 1 added, 2 modified, 3 deleted). Creates are POSTs (a new entity with
values: the POST, then a PUT adding them, as the create takes none). The answer becomes the
row's new base, so the next pull sees no change.

What the API cannot do is held with a message instead of sent: moving an existing catalog,
question, expression or link (the updates take no parent or catalog), and emptying a question's
title, content or content type or a link's name or url ("" means "unchanged" in the updates).

Creates record their intent first. Catalogs (by type, owner, parent and name, which the API keeps
unique) and entities (by robot and apiName) are looked up before creating (`upsert = true`): a
match is updated instead of duplicated, which also finds a create whose answer was lost. Questions,
expressions and links have no unique key: after a lost answer the retry lists the catalog and
takes the record with the same title (questions), content (expressions) or name and url (links).
One someone else created there with the same text would be taken for ours: the API offers
nothing surer.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa

from etl.connectors.udesk.knowledge.client import KnowledgeClient
from etl.connectors.udesk.knowledge.diff import (
    CREATE_ONLY,
    VALUES,
    parse_values,
    value_changes,
)
from etl.connectors.udesk.knowledge.pull import knowledge_writer
from etl.connectors.udesk.knowledge.push_create import Lookups, create_record, write_created
from etl.connectors.udesk.knowledge.push_shape import (
    NOT_EMPTIED,
    answer_record,
    context_columns,
    entity_body,
    owner_body,
    path_of,
    question_body,
    stream_of,
    text_or_none,
    update_body,
    with_validity,
)
from etl.connectors.udesk.knowledge.settings import KnowledgePush, UdeskKnowledgeConnection
from etl.core.errors import ApiError
from etl.core.mirror.rows import RowBuilder
from etl.core.push.columns import (
    Texts,
    Writable,
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
    held_ids,
    hold_unsendable,
    send_concurrently,
    send_creates,
)


def _placeholder_depth(rows: list[sa.RowMapping]) -> dict[int, int]:
    """New catalogs, each with how many new catalogs are above it: parents are created first."""
    parent_of = {int(r["id"]): int(r["parent_id"] or 0) for r in rows if int(r["id"]) < 0}

    def depth(catalog_id: int, seen: int = 0) -> int:
        parent = parent_of.get(catalog_id, 0)
        return 0 if parent >= 0 or seen > len(parent_of) else 1 + depth(parent, seen + 1)

    return {i: depth(i) for i in parent_of}


def plan(conn: sa.Connection, connection: str, spec: Writable, push: KnowledgePush, tz: tzinfo,
         retry_failed: bool) -> PushOutcome:
    """What a push of this table would send (`--dry-run` prints it)."""
    outcome = PushOutcome()
    t = spec.table
    stream = spec.stream
    builder = RowBuilder(t, tz, "en")
    held = held_ids(conn, connection, t.name)
    conflicted = open_conflict_ids(conn, connection, t.name)
    rows = conn.execute(sa.select(t.c.id, t.c.raw, t.c.is_deleted, t.c.deleted_at,
                                  *(t.c[c] for c in context_columns(stream)), *(t.c[c] for c in spec.columns))
                        .where(t.c.connection == connection, sa.or_(t.c.is_deleted.is_(False), t.c.deleted_at.is_(None)))
                        .order_by(t.c.id)).mappings().all()
    held_values = local_values(conn, spec, connection, [r["id"] for r in rows])
    levels = _placeholder_depth(list(rows)) if stream == "catalogs" else {}
    # creates in the order they can be sent: parents before their new children
    rows = sorted(rows, key=lambda r: (levels.get(int(r["id"]), 0), -int(r["id"])) if r["id"] < 0 else (-1, r["id"]))
    for row in rows:
        record_id = int(row["id"])
        local = {**texts(spec, row, tz), **held_values[record_id]}
        if record_id < 0:
            if row["is_deleted"]:
                continue
            write = _plan_create(spec, row, local, levels)
        elif row["is_deleted"]:
            if not push.allow_delete:
                outcome.skipped_deletes += 1
                continue
            write = PlannedWrite(t.name, record_id, "delete", payload={"path": path_of(stream, record_id),
                                                                        "body": owner_body(stream, row)})
        else:
            raw = row["raw"] if isinstance(row["raw"], dict) else orjson.loads(row["raw"])
            remote_row = builder.build(raw)[0]
            base, local_vals = with_values(texts(spec, remote_row, tz), record_values(spec, raw), held_values[record_id])
            local = {**texts(spec, row, tz), **local_vals}
            if stream == "questions":
                base, local = with_validity(base), with_validity(local)
            changed = changed_fields(base, local)
            moved = [c for c in CREATE_ONLY[stream] if c in row and row[c] != remote_row.get(c)]
            if not changed and not moved:
                continue
            write = PlannedWrite(t.name, record_id, "update", [(c, base[c], local[c]) for c in changed]
                                 + [(c, text_or_none(remote_row.get(c)), text_or_none(row[c])) for c in moved],
                                 payload={"path": path_of(stream, record_id),
                                          "body": update_body(stream, row, raw, changed, local)})
            if moved:
                write.problem = (f"{', '.join(moved)} of an existing record cannot be changed through the API "
                                 f"(create a new row and delete this one)")
            elif emptied := [c for c in changed if c in NOT_EMPTIED[stream] and not local[c]]:
                write.problem = f"{', '.join(emptied)} cannot be emptied through the API (an empty value means 'unchanged')"
        outcome.consider(write, conflicted, held, retry_failed)
    return outcome.finish(held)














def _plan_create(spec: Writable, row: Any, local: Texts, levels: dict[int, int]) -> PlannedWrite:
    stream = spec.stream
    record_id = int(row["id"])
    write = PlannedWrite(spec.table.name, record_id, "create", [(n, None, v) for n, v in local.items() if v is not None])
    if stream == "catalogs":
        parent = int(row["parent_id"] or 0)
        write.parent_id = parent or None
        body: dict[str, Any] = {"knowledge_catalog": {
            "knowledge_type_name": row["knowledge_type"], "name": local["name"], "agent_id": int(row["agent_id"]),
            **({"parent_id": parent} if parent else {})}}
        if parent < 0 and parent not in levels:
            write.problem = f"parent_id {parent} is no new catalog of this connection"
    elif stream == "km_entities":
        body = {k: v for k, v in entity_body(row, local).items() if v is not None}
        added = value_changes([], parse_values(local[VALUES]))
        write.payload = {"path": path_of(stream, None), "body": body, "values": added}
        return write
    else:
        catalog = int(row["catalog_id"] or 0)
        write.parent_id = catalog or None
        fields = question_body(local, None) if stream == "questions" else {n: local[n] for n in spec.columns}
        fields = {**fields, "agent_id": int(row["agent_id"]), "catalog_id": catalog}
        body = {"question": fields} if stream == "questions" else fields
        if catalog < 0:
            write.problem = f"catalog_id {catalog} is a new catalog that was not created (see its held row)"
    write.payload = {"path": path_of(stream, None), "body": body}
    return write


# --- sending ---------------------------------------------------------------------------------------





def send(engine: sa.Engine, client: KnowledgeClient, connection: str, settings: UdeskKnowledgeConnection,
         spec: Writable, outcome: PushOutcome, lookups: Lookups) -> None:
    """Send the planned writes: creates one by one (each records its intent first), updates and
    deletes several at a time within the rate limit, their answers written back in batches."""
    push = settings.push[spec.stream]
    stream = spec.stream
    tz = ZoneInfo(settings.timezone)
    # what the answers in hand were sent: an edit made in the mirror meanwhile survives their write-back
    sent: dict[int, Texts] = {}
    writer = knowledge_writer(stream_of(stream), settings, connection, tz, sent=sent)
    ready = hold_unsendable(engine, connection, outcome)
    new_ids: dict[int, int] = {}  # this run's new catalogs: placeholder -> id

    def create(write: PlannedWrite) -> dict[str, Any]:
        return create_record(engine, client, connection, spec, push, write, lookups, new_ids)

    def created(conn: sa.Connection, write: PlannedWrite, record: dict[str, Any]) -> None:
        write_created(conn, writer, spec, connection, write, record, tz)
        lookups.created(stream, write, record)
        new_ids[write.record_id] = int(record["id"])

    send_creates(engine, connection, outcome, ready, create, created)

    def send_one(write: PlannedWrite) -> dict[str, Any] | None:
        session = client.km if stream == "km_entities" else client.session
        assert session is not None
        path, body = write.payload["path"], write.payload["body"]
        if write.operation == "delete":
            try:
                session.request_json("DELETE", path, json=body or None)
            except ApiError as exc:
                if exc.code not in ("2005", "400") or "not" not in exc.message.lower():
                    raise  # "not found" / "Entity not exists": already gone, which is what we wanted
            return None
        return answer_record(stream, session.request_json("PUT", path, json=body).body, path)

    def written(conn: sa.Connection, done: list[tuple[PlannedWrite, dict[str, Any] | None]]) -> None:
        sent.clear()
        sent.update({write.record_id: write.sent_values() for write, _ in done})
        updated = [(w, a) for w, a in done if a is not None]
        context = _context(conn, spec, connection, [w.record_id for w, _ in updated])
        records, overrides = [], []
        for write, answer in updated:
            row = context[write.record_id]
            raw = row["raw"] if isinstance(row["raw"], dict) else orjson.loads(row["raw"])
            record = answer if stream == "km_entities" else {**raw, **answer}
            records.append(record)
            overrides.append(_overrides(stream, row, raw, record))
        if records:
            writer.upsert(conn, records, None, overrides=overrides)
        deleted = [w.record_id for w, _ in done if w.operation == "delete"]
        if deleted:
            t = spec.table
            conn.execute(t.update().where(t.c.connection == connection, t.c.id.in_(deleted))
                         .values(deleted_at=datetime.now(UTC)))

    send_concurrently(engine, connection, spec.table.name, outcome, ready, send_one, written, settings.concurrency)




def _context(conn: sa.Connection, spec: Writable, connection: str, ids: list[int]) -> dict[int, sa.RowMapping]:
    t = spec.table
    out: dict[int, sa.RowMapping] = {}
    for start in range(0, len(ids), 500):
        for row in conn.execute(sa.select(t.c.id, t.c.raw, *(t.c[c] for c in context_columns(spec.stream)))
                                .where(t.c.connection == connection, t.c.id.in_(ids[start:start + 500]))).mappings():
            out[int(row["id"])] = row
    return out


def _overrides(stream: str, row: Any, raw: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """The columns a record does not carry (owner, a catalog's place in the tree)."""
    if stream == "km_entities":
        return {}
    if stream != "catalogs":
        return {"agent_id": row["agent_id"]}
    path, old_name, name = str(row["path"]), str(raw.get("name") or ""), str(record.get("name") or "")
    if path.endswith(old_name):  # the catalog's own segment is the last one
        path = path[: len(path) - len(old_name)] + name
    return {"knowledge_type": row["knowledge_type"], "agent_id": row["agent_id"], "depth": row["depth"], "path": path}











