"""Push local edits of ServiceGo tables: PUT /v1/data per changed record, DELETE when allowed.

What a user does (plain SQL on the mirror):
- UPDATE a row's field columns (not the derived `_names`, `_tags`, ... columns, not system fields);
- mark a row for deletion: `UPDATE … SET is_deleted = true` leaving `deleted_at` empty (a pull
  sets both), with `push.allow_delete = true` for the object.
`desksync push` finds the changed fields itself: a row's base version is its `raw` record, so the
fields whose text differs from `raw`'s are sent, one request per record, nothing when nothing
changed. A success patches `raw` with what was sent (no second push, and the next pull's copy of
our own change is not a remote change). A refusal holds the row with the API's code and message
(`push_held`) until `--retry-failed`; rows with open conflicts wait for a choice.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any

import orjson
import sqlalchemy as sa

from etl.connectors.udesk.servicego.client import SYSTEM, ServiceGoClient
from etl.connectors.udesk.servicego.diff import texts, writable
from etl.connectors.udesk.servicego.models import FieldColumn, ObjectSchema, RecordBuilder, table_name
from etl.connectors.udesk.servicego.settings import ServiceGoObject
from etl.core.errors import ApiError
from etl.core.mirror.normalize import canonical_json, content_hash
from etl.core.push.conflicts import open_conflict_ids
from etl.core.push.fields import changed_fields
from etl.core.push.journal import (
    PlannedWrite,
    PushOutcome,
    held_ids,
    hold_unsendable,
    log_attempt,
    log_done,
    send_concurrently,
    send_creates,
)


def _lookup_value(conn: sa.Connection, connection: str, target: str, unique_field: str, record_id: str) -> str | None:
    schema = ObjectSchema(target)
    schema.load(conn)
    unique = schema.fields.get(unique_field)
    if unique is None:
        return None
    t = schema.table
    value = conn.execute(sa.select(t.c[unique.column]).where(t.c.connection == connection, t.c.id == int(record_id))).scalar()
    return None if value is None else str(value)


def _field_item(conn: sa.Connection, connection: str, obj: ServiceGoObject, f: FieldColumn,
                text: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {"fieldApiName": f.field, "fieldValue": "" if text is None else text}
    if f.field_type == "field_type_lookup" and text is not None:
        assert obj.push is not None
        target = obj.push.lookups.get(f.field)
        value = _lookup_value(conn, connection, target.object, target.unique_field, text) if target else None
        if target is None or value is None:
            raise ValueError(f"lookup {f.field}: the looked-up record's external unique value is unknown (configure "
                             f"push.lookups.{f.field} = {{object, unique_field}} and mirror that object)")
        item.update(fieldValue=value, foreignExternalFieldApiName=target.unique_field)
    return item


def plan(conn: sa.Connection, connection: str, obj: ServiceGoObject, tz: tzinfo, retry_failed: bool) -> PushOutcome:
    """What a push of this object would send (`--dry-run` prints it)."""
    assert obj.push is not None
    outcome = PushOutcome()
    schema = ObjectSchema(obj.name)
    if not sa.inspect(conn).has_table(table_name(obj.name)):
        return outcome
    schema.load(conn)
    fields = writable(schema)
    builder = RecordBuilder(schema, tz)
    t = schema.table
    held = held_ids(conn, connection, t.name)
    conflicted = open_conflict_ids(conn, connection, t.name)
    rows = conn.execute(sa.select(t.c.id, t.c.raw, t.c.is_deleted, t.c.deleted_at, *(t.c[c] for c in fields))
                        .where(t.c.connection == connection,
                               sa.or_(t.c.is_deleted.is_(False), t.c.deleted_at.is_(None)))
                        .order_by(t.c.id)).mappings()
    for row in rows:
        record_id = int(row["id"])
        if record_id < 0:  # a new row: its id is a placeholder until the remote gives one
            if row["is_deleted"]:
                continue
            local = texts(fields, dict(row), tz)
            write = PlannedWrite(t.name, record_id, "create",
                                 [(fields[c].field, None, v) for c, v in local.items() if v is not None])
            write.payload = {"objectApiName": obj.name, "fieldDataList": [
                {"fieldApiName": fields[c].field, "fieldValue": v} for c, v in local.items() if v is not None]}
            write.problem = _placeholder_lookups(fields, local)
            try:  # updates name lookups by external unique field (seed 004)
                write.upsert_items = [_field_item(conn, connection, obj, fields[c], v)
                                      for c, v in local.items() if v is not None]
            except ValueError:
                write.upsert_items = None
            outcome.consider(write, conflicted, held, retry_failed)
            continue
        if row["is_deleted"]:
            if not obj.push.allow_delete:
                outcome.skipped_deletes += 1
                continue
            write = PlannedWrite(t.name, record_id, "delete", payload={"objectApiName": obj.name, "id": record_id})
        else:
            raw = row["raw"] if isinstance(row["raw"], dict) else orjson.loads(row["raw"])
            base = texts(fields, builder.build(raw)[0], tz)
            local = texts(fields, dict(row), tz)
            changed = changed_fields(base, local)
            if not changed:
                continue
            write = PlannedWrite(t.name, record_id, "update",
                                 [(fields[c].field, base[c], local[c]) for c in changed])
            try:
                write.problem = _placeholder_lookups(fields, {c: local[c] for c in changed})
                items = [] if write.problem else [_field_item(conn, connection, obj, fields[c], local[c])
                                                  for c in changed]
            except ValueError as exc:
                write.problem = str(exc)
                items = []
            write.payload = {"objectApiName": obj.name, "id": record_id, "fieldDataList": items}
        outcome.consider(write, conflicted, held, retry_failed)
    return outcome.finish(held)


def _patch_raw(raw: dict[str, Any], changes: list[tuple[str, str | None, str | None]]) -> dict[str, Any]:
    """`raw` as the remote now holds it, as far as the sent fields go: the new base version."""
    sent = {name: local for name, _, local in changes}
    entries = []
    for entry in raw.get("fieldDataList") or []:
        name = entry.get("fieldApiName")
        if name in sent:
            entry = {**entry, "fieldValue": "" if sent[name] is None else sent[name]}
        entries.append(entry)
    return {**raw, "fieldDataList": entries}


def send(engine: sa.Engine, client: ServiceGoClient, connection: str, obj: ServiceGoObject, outcome: PushOutcome,
         concurrency: int = 4, referrers: tuple[tuple[str, str], ...] = ()) -> None:
    """Send the planned writes. Creates go one by one (each records its intent first); updates and
    deletes go several at a time within the rate limit, their results committed in batches: a kill
    loses at most answers to updates and deletes, which are safe to send again."""
    with engine.connect() as conn:
        schema = ObjectSchema(obj.name)
        schema.load(conn)
    table = schema.table
    ready = hold_unsendable(engine, connection, outcome)

    with engine.connect() as conn:
        pointing = _lookup_columns(conn, referrers)  # once a push: the schema does not change during it

    def created(conn: sa.Connection, write: PlannedWrite, new_id: int) -> None:
        _created(conn, connection, table, obj, write, new_id)
        _follow_in_lookups(conn, connection, pointing, write.record_id, new_id)

    send_creates(engine, connection, outcome, ready, lambda w: _create(engine, client, connection, obj, w), created)

    def send_one(write: PlannedWrite) -> None:
        if write.operation == "update":
            client.session.request_json("PUT", "v1/data", json=write.payload)
            return
        try:
            client.session.request_json("DELETE", "v1/data", params=write.payload)
        except ApiError as exc:
            if exc.code != "404":  # already gone: what we wanted
                raise

    def written(conn: sa.Connection, done: list[tuple[PlannedWrite, None]]) -> None:
        _applied_many(conn, connection, table, [write for write, _ in done])

    send_concurrently(engine, connection, table.name, outcome, ready, send_one, written, concurrency)


def _find_existing(client: ServiceGoClient, obj: ServiceGoObject, write: PlannedWrite) -> int | None:
    """The remote record a new row stands for, by its external unique field (upsert_by)."""
    assert obj.push is not None
    unique = obj.push.upsert_by
    value = next((local for name, _, local in write.changes if name == unique), None) if unique else None
    if not unique or value is None:
        return None
    try:
        body = client.session.request_json("GET", "v1/data", params={
            "objectApiName": obj.name, "uniqueFieldApiName": unique, "uniqueFieldValue": value}).body
    except ApiError as exc:
        if exc.code == "404":
            return None
        raise
    return int(body["data"]["id"])


def _create(engine: sa.Engine, client: ServiceGoClient, connection: str, obj: ServiceGoObject,
            write: PlannedWrite) -> int:
    """Create (or, with upsert_by, update the matching record), recording the intent first.

    A create whose answer was lost (a kill, a timeout) left its intent in push_log; the retry
    looks the record up by its external unique field before creating again. Without
    upsert_by there is no sure way to find it (the seed offers no idempotency key), so such
    objects should have one; otherwise a lost answer can leave a second record.
    """
    with engine.begin() as conn:
        log_attempt(conn, connection, write, "intent", None, None)
    existing = _find_existing(client, obj, write)
    if existing is not None:
        if write.upsert_items is None:
            raise ApiError(SYSTEM, "a lookup of this row cannot be sent as an update (configure push.lookups)",
                           code="local")
        update = {"objectApiName": obj.name, "id": existing, "fieldDataList": write.upsert_items}
        client.session.request_json("PUT", "v1/data", json=update)
        return existing
    # a POST is never retried blindly: a lost answer may have created the record already
    body = client.session.request_json("POST", "v1/data", json=write.payload, retry=False).body
    return int(body["data"]["id"])


def _created(conn: sa.Connection, connection: str, table: sa.Table, obj: ServiceGoObject, write: PlannedWrite,
             new_id: int) -> None:
    """Put the remote id in the placeholder's place; `raw` holds what was sent until the next pull
    brings the fields the server set (createTime, owner, ...)."""
    schema = ObjectSchema(obj.name)
    schema.load(conn)
    kinds = {f.field: f.field_type for f in schema.fields.values()}
    raw = {"id": new_id, "fieldDataList": [
        {"fieldApiName": name, "fieldTypeApiName": kinds.get(name, ""), "fieldValue": local}
        for name, _, local in write.changes]}
    placeholder = (table.c.connection == connection, table.c.id == write.record_id)
    taken = conn.execute(sa.select(table.c.id).where(table.c.connection == connection, table.c.id == new_id)).first()
    if taken is None:
        conn.execute(table.update().where(*placeholder).values(
            id=new_id, raw=raw, content_hash=content_hash(canonical_json(raw)), first_seen_at=datetime.now(UTC),
            last_seen_at=datetime.now(UTC)))
    else:  # a pull already brought it
        conn.execute(table.delete().where(*placeholder))
    write.payload = {**write.payload, "id": new_id, "local_id": write.record_id}
    log_done(conn, connection, write.table, [write])


def referrers_of(target: str, objects: tuple[ServiceGoObject, ...]) -> tuple[tuple[str, str], ...]:
    """(object, lookup field) pairs whose push.lookups point at `target`."""
    return tuple((o.name, name) for o in objects if o.push is not None
                 for name, lookup in o.push.lookups.items() if lookup.object == target)


def push_order(objects: list[ServiceGoObject]) -> list[ServiceGoObject]:
    """The objects in an order where a lookup's target goes before the objects pointing at it, so
    that a new record's placeholder is replaced by its id before a new row that points at it is
    planned (configuration order otherwise; a cycle keeps it)."""
    names = {o.name for o in objects}
    placed: list[ServiceGoObject] = []
    waiting = list(objects)
    while waiting:
        ready = [o for o in waiting if all(t.object not in names or t.object == o.name
                                           or t.object in {p.name for p in placed}
                                           for t in (o.push.lookups.values() if o.push else ()))]
        chosen = ready[0] if ready else waiting[0]
        placed.append(chosen)
        waiting.remove(chosen)
    return placed


def _lookup_columns(conn: sa.Connection, referrers: tuple[tuple[str, str], ...]) -> list[tuple[sa.Table, str]]:
    """The mirrored (table, column) of each (object, lookup field) pair that exists."""
    found = []
    for other, field in referrers:
        if not sa.inspect(conn).has_table(table_name(other)):
            continue
        schema = ObjectSchema(other)
        schema.load(conn)
        column = schema.fields.get(field)
        if column is not None:
            found.append((schema.table, column.column))
    return found


def _follow_in_lookups(conn: sa.Connection, connection: str, pointing: list[tuple[sa.Table, str]],
                       placeholder: int, new_id: int) -> None:
    """Rows whose lookup pointed at the new record's placeholder point at its id: in the transaction
    that writes the id back, so that no kill leaves a lookup pointing at a placeholder that is gone."""
    for t, column in pointing:
        conn.execute(t.update().where(t.c.connection == connection, t.c[column] == str(placeholder))
                     .values({column: str(new_id)}))


def _placeholder_lookups(fields: dict[str, FieldColumn], local: dict[str, str | None]) -> str | None:
    """A problem when a lookup still points at a new row that has no id yet (its create failed, or
    its object is not pushed first): sent, the placeholder would be refused, or name another record."""
    for column, text in local.items():
        f = fields[column]
        if f.field_type == "field_type_lookup" and text is not None and text.lstrip("-").isdigit() and int(text) < 0:
            return (f"lookup {f.field} points at new record {text}, which has no id yet (its create failed, or its "
                    f"object has no push section or is not named in push.lookups.{f.field}); once it is created, "
                    f"push again with --retry-failed")
    return None


def _applied_many(conn: sa.Connection, connection: str, table: sa.Table, writes: list[PlannedWrite]) -> None:
    """Successful updates and deletes: `raw` patched with what was sent (the new base), deletes dated."""
    if not writes:
        return
    now = datetime.now(UTC)
    updates = {w.record_id: w for w in writes if w.operation == "update"}
    deletes = [w.record_id for w in writes if w.operation == "delete"]
    if deletes:
        conn.execute(table.update().where(table.c.connection == connection, table.c.id.in_(deletes))
                     .values(deleted_at=now))
    if updates:
        raws = conn.execute(sa.select(table.c.id, table.c.raw).where(
            table.c.connection == connection, table.c.id.in_(list(updates)))).all()
        params = []
        for record_id, raw in raws:
            patched = _patch_raw(raw if isinstance(raw, dict) else orjson.loads(raw), updates[record_id].changes)
            params.append({"k_id": record_id, "raw": patched, "content_hash": content_hash(canonical_json(patched))})
        conn.execute(table.update().where(table.c.connection == connection, table.c.id == sa.bindparam("k_id"))
                     .values(raw=sa.bindparam("raw"), content_hash=sa.bindparam("content_hash")), params)
