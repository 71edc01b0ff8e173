"""Creating knowledge records: one at a time, each with its intent logged first; a create whose answer was lost is found again in the remote lists (Lookups) instead of being sent twice."""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

import sqlalchemy as sa

from etl.connectors.udesk.knowledge.client import SYSTEM, KnowledgeClient
from etl.connectors.udesk.knowledge.diff import (
    VALUES,
    record_value_list,
    value_changes,
)
from etl.connectors.udesk.knowledge.push_shape import (
    CATALOGS,
    ENTITY_VALUES,
    ITEM_TABLES,
    MATCHED_BY,
    RESOURCE,
    answer_record,
    context_columns,
    path_of,
)
from etl.connectors.udesk.knowledge.settings import KnowledgePush
from etl.core.errors import ApiError
from etl.core.mirror.write import TableWriter
from etl.core.push.columns import (
    Writable,
    carry_edits,
    edits_meanwhile,
)
from etl.core.push.journal import (
    PlannedWrite,
    earlier_intents,
    log_attempt,
    log_done,
)


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


def _refused(message: str) -> ApiError:
    return ApiError(SYSTEM, message, code="local")


def create_record(engine: sa.Engine, client: KnowledgeClient, connection: str, spec: Writable, push: KnowledgePush,
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
        answer = answer_record(stream, client.session.request_json("POST", path_of(stream, None), json=body, retry=False).body,
                         path_of(stream, None))
        return {"id": answer["id"], "parent_id": parent, "name": answer.get("name", spec_body["name"])}
    fields = body["question"] if stream == "questions" else body
    if lost:
        existing = _find_item(client, stream, fields)
        if existing is not None:
            write.payload = {**write.payload, "matched": existing["id"]}
            return existing
    path = path_of(stream, None)
    answer = answer_record(stream, client.session.request_json("POST", path, json=body, retry=False).body, path)
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
        path = path_of("km_entities", int(existing["id"]))
        update = {**{k: existing.get(k) for k in ("robotId", "name", "apiName", "regex", "remark")}, **body,
                  VALUES: changes}
        return answer_record("km_entities", client.km.request_json("PUT", path, json=update).body, path)
    path = path_of("km_entities", None)
    record = answer_record("km_entities", client.km.request_json("POST", path, json=body, retry=False).body, path)
    if not added:
        return record
    path = path_of("km_entities", int(record["id"]))
    update = {**{k: record.get(k) for k in ("robotId", "name", "apiName", "regex", "remark")}, VALUES: added}
    return answer_record("km_entities", client.km.request_json("PUT", path, json=update).body, path)


def write_created(conn: sa.Connection, writer: TableWriter, spec: Writable, connection: str, write: PlannedWrite,
             record: dict[str, Any], tz: tzinfo) -> None:
    """The remote record takes the placeholder's place; rows under the placeholder follow it,
    and so do the edits made to it while its create was under way."""
    t = spec.table
    stream = spec.stream
    new_id = int(record["id"])
    edits = edits_meanwhile(conn, spec, connection, tz, write.record_id, write.sent_values())
    row = conn.execute(sa.select(*(t.c[c] for c in context_columns(stream))).where(
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
