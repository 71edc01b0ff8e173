"""Optional ServiceGo streams: related records (relatedDatas) and record relations
(selfObjectRelationData) of each record that changed.

Neither list can be asked for changes, so they are re-read for the records a scan inserted or
updated (relation changes set the major record's updateTime: the simulator's reading). Those
records are queued in sync_pending_children in the same transaction as their rows, and leave
the queue in the same transaction as their refreshed lists: a kill loses no refresh. Cost: one
request (or one per 100 rows) per changed record and list, which is why they are optional.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from etl.connectors.udesk.servicego.client import ServiceGoClient
from etl.connectors.udesk.servicego.models import ServiceGoRelated, ServiceGoRelation
from etl.connectors.udesk.servicego.settings import ServiceGoObject
from etl.core.errors import ApiError
from etl.core.mirror.base import table_of
from etl.core.mirror.pending import Queue, add_pending, done_pending, pending
from etl.core.pool import Emit, run_jobs

if TYPE_CHECKING:  # the writer process imports this module: it needs no clients
    from etl.core.pull.context import RunContext

RELATED = table_of(ServiceGoRelated)
RELATIONS = table_of(ServiceGoRelation)


def queue_names(obj: ServiceGoObject) -> list[str]:
    names = [f"servicego/{obj.name}/related/{r.object}" for r in obj.related]
    if obj.relations_ui_id is not None:
        names.append(f"servicego/{obj.name}/relations")
    return names


def _queue(name: str) -> Queue:
    return Queue(name, (name,))  # a queue a list: objects' lists come and go with the configuration


def enqueue(conn: sa.Connection, connection: str, obj: ServiceGoObject, ids: list[Any]) -> None:
    for name in queue_names(obj):
        add_pending(conn, connection, _queue(name), (name,), ids)


def refresh(ctx: RunContext, obj: ServiceGoObject) -> None:
    """Re-read the queued records' lists; four fetches in flight, batches committed with their dequeue."""
    client = ctx.client
    assert isinstance(client, ServiceGoClient)
    for spec in obj.related:
        name = f"servicego/{obj.name}/related/{spec.object}"

        def fetch_related(parent: int, child: str = spec.object, filter_id: int | None = spec.filter_id) -> Any:
            return client.related(obj.name, parent, child, filter_id)

        _drain(ctx, name, fetch_related, lambda conn, batch, child=spec.object: _replace_related(ctx, conn, obj, child, batch))
    if obj.relations_ui_id is not None:
        ui_id = obj.relations_ui_id
        _drain(ctx, f"servicego/{obj.name}/relations",
               lambda major: client.relations(major, ui_id),
               lambda conn, batch: _replace_relations(ctx, conn, obj, batch))


def _drain(ctx: RunContext, queue: str, fetch: Any, write: Any) -> None:
    with ctx.engine.connect() as conn:
        parents = pending(conn, ctx.connection, _queue(queue), queue)

    def job_for(parent: int) -> Any:
        def job(emit: Emit) -> None:
            try:
                emit((parent, fetch(parent)))
            except ApiError as exc:
                if exc.code != "404":
                    raise
                emit((parent, []))  # the record is gone: so are its lists

        return job

    def consume(batch: list[tuple[int, list[dict[str, Any]]]]) -> None:
        with ctx.engine.begin() as conn:
            write(conn, batch)
            done_pending(conn, ctx.connection, _queue(queue), queue, [parent for parent, _ in batch])

    run_jobs((job_for(p) for p in parents), consume, workers=4, stop=ctx.stop)


def _replace_related(ctx: RunContext, conn: sa.Connection, obj: ServiceGoObject, child: str,
                     batch: list[tuple[int, list[dict[str, Any]]]]) -> None:
    parents = [parent for parent, _ in batch]
    conn.execute(RELATED.delete().where(RELATED.c.connection == ctx.connection, RELATED.c.parent_object == obj.name,
                                        RELATED.c.object_name == child, RELATED.c.parent_id.in_(parents)))
    rows = [{"connection": ctx.connection, "parent_object": obj.name, "parent_id": parent, "object_name": child,
             "record_id": record["id"], "record": record, "last_run_id": ctx.run_id}
            for parent, records in batch for record in {r["id"]: r for r in records}.values()]
    if rows:
        conn.execute(RELATED.insert(), rows)


def _replace_relations(ctx: RunContext, conn: sa.Connection, obj: ServiceGoObject,
                       batch: list[tuple[int, list[dict[str, Any]]]]) -> None:
    majors = [major for major, _ in batch]
    conn.execute(RELATIONS.delete().where(RELATIONS.c.connection == ctx.connection,
                                          RELATIONS.c.object_name == obj.name, RELATIONS.c.major_id.in_(majors)))
    rows = {}
    for major, relations in batch:
        for r in relations:
            key = (major, int(r["dataId"]), int(r["relationId"]))
            rows[key] = {"connection": ctx.connection, "object_name": obj.name, "major_id": major,
                         "data_id": key[1], "relation_id": key[2], "relation_name": r.get("relationName"),
                         "data_name": r.get("dataName"), "field_values": r.get("fieldValueMap"),
                         "last_run_id": ctx.run_id}
    if rows:
        conn.execute(RELATIONS.insert(), list(rows.values()))
