"""Udesk ServiceGo, as the engine sees it (etl.core.connector). Its tables follow the objects'
fields as the remote reports them (etl.connectors.udesk.servicego.models)."""

from __future__ import annotations

import functools
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from etl.connectors.udesk.servicego import client, push
from etl.connectors.udesk.servicego.client import ServiceGoClient
from etl.connectors.udesk.servicego.deletes import find_deletions
from etl.connectors.udesk.servicego.diff import resolve, writable
from etl.connectors.udesk.servicego.models import ObjectSchema, table_name
from etl.connectors.udesk.servicego.pull import ObjectSync, search_args, state_key
from etl.connectors.udesk.servicego.related import refresh as refresh_related
from etl.connectors.udesk.servicego.settings import ServiceGoConnection, ServiceGoObject
from etl.core import connector as core
from etl.core.errors import DesksyncError
from etl.core.mirror.state import mark_reconciled, reconcile_due
from etl.core.pipelines.targets import Target
from etl.core.pull.context import RunContext
from etl.core.push.journal import PushOutcome


def _pull_object(ctx: RunContext, obj: ServiceGoObject, request: core.PullRequest) -> None:
    assert isinstance(ctx.client, ServiceGoClient)
    settings: ServiceGoConnection = request.settings
    sync = ObjectSync(ctx, obj)
    sync.run(request.full)
    # Even after a full scan: one that was resumed cannot have seen deletions among the
    # records it read before the interruption. Equal counts cost one request.
    due = request.reconcile_deletes or reconcile_due(request.engine, request.connection, sync.key,
                                                     settings.reconcile_every_hours)
    total = ctx.client.scroll_search(obj.name, 0, page_size=1, **search_args(obj)).total
    ctx.stats.deleted += find_deletions(sync, total, full_pass=due)
    if due:
        mark_reconciled(request.engine, request.connection, sync.key)
    refresh_related(ctx, obj)


def plan_pull(request: core.PullRequest) -> list[core.PlannedStream]:
    settings: ServiceGoConnection = request.settings
    known = [o.name for o in settings.objects]
    unknown = [n for n in request.streams if n not in known]
    if unknown:
        raise ValueError(f"unknown object {unknown[0]!r} (configured: {', '.join(known)})")
    return [core.PlannedStream(o.name, "main", functools.partial(_pull_object, obj=o, request=request), False,
                          state_key(o.name))
            for o in settings.objects if not request.streams or o.name in request.streams]


def status_tables(conn: sa.Connection, settings: ServiceGoConnection) -> list[core.StatusTable]:
    existing = set(sa.inspect(conn).get_table_names())
    out = []
    for obj in settings.objects:
        schema = ObjectSchema(obj.name)
        if schema.table.name in existing:
            schema.load(conn)
            out.append(core.StatusTable(obj.name, schema.table, state_key(obj.name)))
    return out


def push_tables(request: core.PushRequest) -> list[core.PushTable]:
    engine, connection, settings = request.engine, request.connection, request.settings
    objects = push.push_order([o for o in settings.objects
                               if o.push is not None and (not request.tables or o.name in request.tables)])
    if not objects:
        raise DesksyncError(f"connection {connection!r}: no object has a [push] section (see config/desksync.example.toml)")
    tz = ZoneInfo(settings.timezone)

    def table(obj: ServiceGoObject) -> core.PushTable:
        def plan(conn: sa.Connection) -> PushOutcome:
            return push.plan(conn, connection, obj, tz, request.retry_failed)

        def send(remote: ServiceGoClient, outcome: PushOutcome) -> None:
            push.send(engine, remote, connection, obj, outcome, referrers=push.referrers_of(obj.name, settings.objects))

        return core.PushTable(obj.name, table_name(obj.name), plan, send)

    return [table(o) for o in objects]


def resolve_conflict(conn: sa.Connection, conflict_id: int, take: str, settling: core.ConflictSettling) -> None:
    resolve(conn, conflict_id, take, lambda name: ZoneInfo(settling.timezone_of(name)))


def pipeline_target(conn: sa.Connection, settings: ServiceGoConnection, connection: str, obj: str) -> Target:
    if not sa.inspect(conn).has_table(table_name(obj)):
        raise DesksyncError(f"the fields of {connection}'s {obj} are not known yet: pull it first "
                            f"(desksync sync {connection} {obj})")
    schema = ObjectSchema(obj)
    schema.load(conn)
    return Target(obj, schema.table, {f.field: f.column for f in writable(schema).values()})


def runtime_table(conn: sa.Connection, name: str) -> sa.Table | None:
    """An object's table by its name (servicego_<object>), as the remote's fields made it."""
    if not name.startswith("servicego_") or not sa.inspect(conn).has_table(name):
        return None
    schema = ObjectSchema(name.removeprefix("servicego_"))
    schema.load(conn)
    return schema.table


def pipeline_target_problem(settings: ServiceGoConnection, connection: str, obj: str) -> str:
    found = next((o for o in settings.objects if o.name == obj), None)
    if found is None or found.push is None:
        return (f"{connection!r} has no object {obj!r} with a [push] section "
                "(pipelines write through the target's push)")
    return ""


# what core.declare() collects by name, besides the functions above
connect = client.connect
new_limiters = client.new_limiters

CONNECTOR = core.declare("servicego", ServiceGoConnection, globals())
