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

from etl.connectors.udesk.knowledge import models as m
from etl.connectors.udesk.knowledge.client import KM_SYSTEM, SYSTEM, KnowledgeClient
from etl.connectors.udesk.knowledge.diff import (
    CREATE_ONLY,
    VALUES,
    parse_values,
    record_value_list,
    value_changes,
)
from etl.connectors.udesk.knowledge.pull import STREAMS, knowledge_writer
from etl.connectors.udesk.knowledge.settings import KnowledgePush, UdeskKnowledgeConnection
from etl.core.errors import ApiError, MalformedResponse
from etl.core.mirror.base import table_of
from etl.core.mirror.rows import RowBuilder
from etl.core.mirror.write import TableWriter
from etl.core.push.columns import (
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

# catalogs first: new questions, expressions and links may sit in new catalogs
ORDER = ("catalogs", "questions", "useful_expressions", "useful_links", "km_entities")
RESOURCE = {"questions": "knowledge_questions", "useful_expressions": "useful_expressions",
            "useful_links": "useful_links"}
CATALOGS = table_of(m.KnowledgeCatalog)
ITEM_TABLES = tuple(table_of(model) for model in (m.KnowledgeQuestion, m.UsefulExpression, m.UsefulLink))
ENTITY_VALUES = table_of(m.KmEntityValue)
# what must not be emptied, as "" and null mean "unchanged" in the updates
NOT_EMPTIED = {"catalogs": ("name",), "questions": ("title", "content", "content_type"),
               "useful_expressions": ("content",), "useful_links": ("name", "url"), "km_entities": ("name", "api_name")}
# the texts a lookup after a lost answer compares (no unique key)
MATCHED_BY = {"questions": ("title",), "useful_expressions": ("content",), "useful_links": ("name", "url")}


def _context_columns(stream: str) -> tuple[str, ...]:
    if stream == "catalogs":
        return ("agent_id", "knowledge_type", "parent_id", "depth", "path")
    if stream == "km_entities":
        return ("robot_id",)
    return ("agent_id", "catalog_id")


def _path(stream: str, record_id: int | None) -> str:
    resource = {"catalogs": "knowledge_catalogs", "km_entities": "v1/entity", **RESOURCE}[stream]
    return resource if record_id is None else f"{resource}/{record_id}"


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
                                  *(t.c[c] for c in _context_columns(stream)), *(t.c[c] for c in spec.columns))
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
            write = PlannedWrite(t.name, record_id, "delete", payload={"path": _path(stream, record_id),
                                                                        "body": _owner_body(stream, row)})
        else:
            raw = row["raw"] if isinstance(row["raw"], dict) else orjson.loads(row["raw"])
            remote_row = builder.build(raw)[0]
            base, local_vals = with_values(texts(spec, remote_row, tz), record_values(spec, raw), held_values[record_id])
            local = {**texts(spec, row, tz), **local_vals}
            if stream == "questions":
                base, local = _validity(base), _validity(local)
            changed = changed_fields(base, local)
            moved = [c for c in CREATE_ONLY[stream] if c in row and row[c] != remote_row.get(c)]
            if not changed and not moved:
                continue
            write = PlannedWrite(t.name, record_id, "update", [(c, base[c], local[c]) for c in changed]
                                 + [(c, _str(remote_row.get(c)), _str(row[c])) for c in moved],
                                 payload={"path": _path(stream, record_id),
                                          "body": _update_body(stream, row, raw, changed, local)})
            if moved:
                write.problem = (f"{', '.join(moved)} of an existing record cannot be changed through the API "
                                 f"(create a new row and delete this one)")
            elif emptied := [c for c in changed if c in NOT_EMPTIED[stream] and not local[c]]:
                write.problem = f"{', '.join(emptied)} cannot be emptied through the API (an empty value means 'unchanged')"
        outcome.consider(write, conflicted, held, retry_failed)
    return outcome.finish(held)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _validity(values: Texts) -> Texts:
    """A question valid for ever keeps no limits (seed 001: they are not saved when lasts is true)."""
    return {**values, "last_min": None, "last_max": None} if values.get("lasts") == "1" else dict(values)


def _owner_body(stream: str, row: Any) -> dict[str, Any]:
    if stream == "catalogs":
        return {"knowledge_catalog": {"agent_id": int(row["agent_id"])}}
    return {} if stream == "km_entities" else {"agent_id": int(row["agent_id"])}


def _question(local: Texts, names: list[str] | None) -> dict[str, Any]:
    """A question's members: the named ones (all on create), lasts always, limits when it lasts not."""
    body: dict[str, Any] = {n: local[n] for n in ("title", "content", "content_type") if names is None or n in names}
    lasts = local.get("lasts")
    body["lasts"] = None if lasts is None else lasts == "1"
    if lasts == "0":
        body["last_min"], body["last_max"] = local.get("last_min"), local.get("last_max")
    return body


def _entity(row: Any, local: Texts) -> dict[str, Any]:
    robot = row["robot_id"]
    return {"robotId": None if robot is None else int(robot), "name": local["name"], "apiName": local["api_name"],
            "regex": local["regex"], "remark": local["remark"]}


def _update_body(stream: str, row: Any, raw: dict[str, Any], changed: list[str], local: Texts) -> dict[str, Any]:
    agent = {"agent_id": int(row["agent_id"])} if "agent_id" in row else {}
    if stream == "catalogs":
        return {"knowledge_catalog": {"name": local["name"], **agent}}
    if stream == "questions":
        return {"question": {**agent, **_question(local, changed)}}
    if stream == "km_entities":
        body = _entity(row, local)
        if VALUES in changed:
            body[VALUES] = value_changes(record_value_list(raw), parse_values(local[VALUES]))
        return body
    return {**agent, **{n: local[n] for n in changed}}


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
        body = {k: v for k, v in _entity(row, local).items() if v is not None}
        added = value_changes([], parse_values(local[VALUES]))
        write.payload = {"path": _path(stream, None), "body": body, "values": added}
        return write
    else:
        catalog = int(row["catalog_id"] or 0)
        write.parent_id = catalog or None
        fields = _question(local, None) if stream == "questions" else {n: local[n] for n in spec.columns}
        fields = {**fields, "agent_id": int(row["agent_id"]), "catalog_id": catalog}
        body = {"question": fields} if stream == "questions" else fields
        if catalog < 0:
            write.problem = f"catalog_id {catalog} is a new catalog that was not created (see its held row)"
    write.payload = {"path": _path(stream, None), "body": body}
    return write


# --- sending ---------------------------------------------------------------------------------------

def _stream(name: str) -> Any:
    return next(s for s in STREAMS if s.name == name)


class Lookups:
    """The remote lists a push looks new rows up in, each fetched once per push (then kept current)."""

    def __init__(self) -> None:
        self.trees: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.entities: dict[int, list[dict[str, Any]]] = {}

    def catalog(self, client: KnowledgeClient, knowledge_type: str, agent_id: int, parent_id: int,
                name: str) -> dict[str, Any] | None:
        key = (knowledge_type, agent_id)
        if key not in self.trees:
            self.trees[key] = [c["record"] for c in client.catalogs(knowledge_type, agent_id)]
        return next((c for c in self.trees[key] if int(c.get("parent_id") or 0) == parent_id and c.get("name") == name),
                    None)

    def entity(self, client: KnowledgeClient, robot_id: int, api_name: str) -> dict[str, Any] | None:
        if robot_id not in self.entities:
            self.entities[robot_id] = client.entities(robot_id)
        return next((e for e in self.entities[robot_id] if e.get("apiName") == api_name), None)

    def created(self, stream: str, write: PlannedWrite, record: dict[str, Any]) -> None:
        body = write.payload["body"]
        if stream == "catalogs":
            spec = body["knowledge_catalog"]
            self.trees.setdefault((spec["knowledge_type_name"], spec["agent_id"]), []).append(record)
        elif stream == "km_entities":
            self.entities.setdefault(int(body["robotId"]), []).append(record)


def send(engine: sa.Engine, client: KnowledgeClient, connection: str, settings: UdeskKnowledgeConnection,
         spec: Writable, outcome: PushOutcome, lookups: Lookups) -> None:
    """Send the planned writes: creates one by one (each records its intent first), updates and
    deletes several at a time within the rate limit, their answers written back in batches."""
    push = settings.push[spec.stream]
    stream = spec.stream
    tz = ZoneInfo(settings.timezone)
    # what the answers in hand were sent: an edit made in the mirror meanwhile survives their write-back
    sent: dict[int, Texts] = {}
    writer = knowledge_writer(_stream(stream), settings, connection, tz, sent=sent)
    ready = hold_unsendable(engine, connection, outcome)
    new_ids: dict[int, int] = {}  # this run's new catalogs: placeholder -> id

    def create(write: PlannedWrite) -> dict[str, Any]:
        return _create(engine, client, connection, spec, push, write, lookups, new_ids)

    def created(conn: sa.Connection, write: PlannedWrite, record: dict[str, Any]) -> None:
        _created(conn, writer, spec, connection, write, record, tz)
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
        return _answer(stream, session.request_json("PUT", path, json=body).body, path)

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


def _answer(stream: str, body: Any, path: str) -> dict[str, Any]:
    """The record an answer carries: KM answers wrap it in `data`; knowledge answers are the
    record's members beside `code`."""
    if stream == "km_entities":
        if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
            raise MalformedResponse(KM_SYSTEM, "answer has no 'data' object", path=path)
        return dict(body["data"])
    if not isinstance(body, dict) or body.get("id") is None:
        raise MalformedResponse(SYSTEM, "answer has no 'id'", path=path)
    record = {k: v for k, v in body.items() if k not in ("code", "message")}
    record["id"] = int(record["id"])
    return record


def _context(conn: sa.Connection, spec: Writable, connection: str, ids: list[int]) -> dict[int, sa.RowMapping]:
    t = spec.table
    out: dict[int, sa.RowMapping] = {}
    for start in range(0, len(ids), 500):
        for row in conn.execute(sa.select(t.c.id, t.c.raw, *(t.c[c] for c in _context_columns(spec.stream)))
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


def _refused(message: str) -> ApiError:
    return ApiError(SYSTEM, message, code="local")


def _create(engine: sa.Engine, client: KnowledgeClient, connection: str, spec: Writable, push: KnowledgePush,
            write: PlannedWrite, lookups: Lookups, new_ids: dict[int, int]) -> dict[str, Any]:
    """Create (or update the matching record), recording the intent first; the record as listed."""
    stream = spec.stream
    body = write.payload["body"]
    if write.parent_id is not None and write.parent_id < 0:
        if write.parent_id not in new_ids:
            raise _refused(f"parent catalog {write.parent_id} was not created (see its held row)")
        body = {"knowledge_catalog": {**body["knowledge_catalog"], "parent_id": new_ids[write.parent_id]}}
        write.payload = {**write.payload, "body": body}
    lost = write.record_id in earlier_intents(engine, connection, write.table, [write.record_id])
    with engine.begin() as conn:
        log_attempt(conn, connection, write, "intent", None, None)
    if stream == "km_entities":
        return _create_entity(client, write, lookups, push.upsert or lost)
    if stream == "catalogs":
        spec_body = body["knowledge_catalog"]
        parent = int(spec_body.get("parent_id") or 0)
        if push.upsert or lost:
            existing = lookups.catalog(client, spec_body["knowledge_type_name"], spec_body["agent_id"], parent,
                                       spec_body["name"])
            if existing is not None:
                write.payload = {**write.payload, "matched": existing["id"]}
                return {"id": int(existing["id"]), "parent_id": parent, "name": existing.get("name")}
        answer = _answer(stream, client.session.request_json("POST", _path(stream, None), json=body, retry=False).body,
                         _path(stream, None))
        return {"id": answer["id"], "parent_id": parent, "name": answer.get("name", spec_body["name"])}
    fields = body["question"] if stream == "questions" else body
    if lost:
        existing = _find_item(client, stream, fields)
        if existing is not None:
            write.payload = {**write.payload, "matched": existing["id"]}
            return existing
    path = _path(stream, None)
    answer = _answer(stream, client.session.request_json("POST", path, json=body, retry=False).body, path)
    sent = {k: v for k, v in fields.items() if k != "agent_id"}
    sent["catalog_id"] = sent.get("catalog_id") or None
    return {**sent, **answer}


def _find_item(client: KnowledgeClient, stream: str, fields: dict[str, Any]) -> dict[str, Any] | None:
    catalog = int(fields.get("catalog_id") or 0)
    listed = client.list_all(RESOURCE[stream], int(fields["agent_id"]), catalog if catalog > 0 else -1)
    keys = MATCHED_BY[stream]
    return next((r for r in reversed(listed) if all(r.get(k) == fields.get(k) for k in keys)), None)


def _create_entity(client: KnowledgeClient, write: PlannedWrite, lookups: Lookups, look_up: bool) -> dict[str, Any]:
    """POST the entity (the create takes no values), then PUT its values; a matching entity (same
    robot and apiName) is updated to the row instead."""
    assert client.km is not None
    body, added = write.payload["body"], write.payload["values"]
    existing = (lookups.entity(client, int(body["robotId"]), str(body["apiName"]))
                if look_up and "robotId" in body else None)
    if existing is not None:
        write.payload = {**write.payload, "matched": existing["id"]}
        local = [(-n, v["originalValue"], v["similarValueList"]) for n, v in enumerate(added, start=1)]
        remote_values = record_value_list(existing)
        # values the remote holds under another id count as the same value
        by_text = {(o, tuple(s)): i for i, o, s in remote_values}
        local = [(by_text.get((o, tuple(s)), i), o, s) for i, o, s in local]
        changes = value_changes(remote_values, local)
        same = all(existing.get(k) == body.get(k) for k in ("name", "regex", "remark"))
        if same and not changes:
            return existing
        path = _path("km_entities", int(existing["id"]))
        update = {**{k: existing.get(k) for k in ("robotId", "name", "apiName", "regex", "remark")}, **body,
                  VALUES: changes}
        return _answer("km_entities", client.km.request_json("PUT", path, json=update).body, path)
    path = _path("km_entities", None)
    record = _answer("km_entities", client.km.request_json("POST", path, json=body, retry=False).body, path)
    if not added:
        return record
    path = _path("km_entities", int(record["id"]))
    update = {**{k: record.get(k) for k in ("robotId", "name", "apiName", "regex", "remark")}, VALUES: added}
    return _answer("km_entities", client.km.request_json("PUT", path, json=update).body, path)


def _created(conn: sa.Connection, writer: TableWriter, spec: Writable, connection: str, write: PlannedWrite,
             record: dict[str, Any], tz: tzinfo) -> None:
    """The remote record takes the placeholder's place; rows under the placeholder follow it,
    and so do the edits made to it while its create was under way."""
    t = spec.table
    stream = spec.stream
    new_id = int(record["id"])
    edits = edits_meanwhile(conn, spec, connection, tz, write.record_id, write.sent_values())
    row = conn.execute(sa.select(*(t.c[c] for c in _context_columns(stream))).where(
        t.c.connection == connection, t.c.id == write.record_id)).mappings().one()
    overrides: dict[str, Any] = {}
    if stream == "catalogs":
        parent = int(record.get("parent_id") or 0)
        above = conn.execute(sa.select(CATALOGS.c.depth, CATALOGS.c.path).where(
            CATALOGS.c.connection == connection, CATALOGS.c.id == parent)).first() if parent else None
        name = str(record.get("name") or "")
        overrides = {"knowledge_type": row["knowledge_type"], "agent_id": row["agent_id"],
                     "depth": above[0] + 1 if above else 1, "path": f"{above[1]} / {name}" if above else name}
    elif stream != "km_entities":
        overrides = {"agent_id": row["agent_id"]}
    conn.execute(t.delete().where(t.c.connection == connection, t.c.id == write.record_id))
    if stream == "km_entities":
        conn.execute(ENTITY_VALUES.delete().where(ENTITY_VALUES.c.connection == connection,
                                                  ENTITY_VALUES.c.entity_id == write.record_id))
    writer.upsert(conn, [record], None, overrides=[overrides])
    carry_edits(conn, spec, connection, new_id, edits)
    if stream == "catalogs":
        conn.execute(CATALOGS.update().where(CATALOGS.c.connection == connection, CATALOGS.c.parent_id == write.record_id)
                     .values(parent_id=new_id))
        for items in ITEM_TABLES:
            conn.execute(items.update().where(items.c.connection == connection, items.c.catalog_id == write.record_id)
                         .values(catalog_id=new_id))
    write.payload = {**write.payload, "id": new_id}
    log_done(conn, connection, t.name, [write])

