"""Udesk knowledge and KM robot entities, as the engine sees them (etl.core.connector)."""

from __future__ import annotations

import functools
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from etl.connectors.udesk.knowledge import client, push, push_create, push_shape
from etl.connectors.udesk.knowledge.client import KnowledgeClient
from etl.connectors.udesk.knowledge.diff import WRITABLE
from etl.connectors.udesk.knowledge.pull import run_stream, select_streams
from etl.connectors.udesk.knowledge.settings import UdeskKnowledgeConnection
from etl.core import connector as core
from etl.core.errors import DesksyncError
from etl.core.mirror.base import table_of
from etl.core.pipelines.targets import Target, push_table_problem
from etl.core.push import columns
from etl.core.push.journal import PushOutcome
from etl.core.push.order import push_names

PIPELINE_TARGETS = ("catalogs", "questions", "useful_expressions", "useful_links")


def plan_pull(request: core.PullRequest) -> list[core.PlannedStream]:
    return [core.PlannedStream(s.name, "main", functools.partial(run_stream, stream=s))
            for s in select_streams(request.streams, request.settings)]


def status_tables(conn: sa.Connection, settings: UdeskKnowledgeConnection) -> list[core.StatusTable]:
    return [core.StatusTable(s.name, table_of(s.model), s.name) for s in select_streams((), settings)]


def push_tables(request: core.PushRequest) -> list[core.PushTable]:
    engine, connection, settings = request.engine, request.connection, request.settings
    names = push_names(connection, push_shape.ORDER, settings.push, request.tables)
    if "km_entities" in names and not settings.km_base_url:
        raise DesksyncError(f"connection {connection!r}: pushing km_entities needs km_base_url (the KM entity API)")
    tz = ZoneInfo(settings.timezone)
    lookups = push_create.Lookups()  # the remote lists new rows are matched in, fetched once a push

    def table(name: str) -> core.PushTable:
        spec = WRITABLE[name]

        def plan(conn: sa.Connection) -> PushOutcome:
            return push.plan(conn, connection, spec, settings.push[name], tz, request.retry_failed)

        def send(remote: KnowledgeClient, outcome: PushOutcome) -> None:
            push.send(engine, remote, connection, settings, spec, outcome, lookups)

        return core.PushTable(name, spec.table.name, plan, send)

    return [table(n) for n in names]


def resolve_conflict(conn: sa.Connection, conflict_id: int, take: str, settling: core.ConflictSettling) -> None:
    # knowledge records keep no language-dependent columns
    columns.resolve(WRITABLE.values(), conn, conflict_id, take, lambda name: ZoneInfo(settling.timezone_of(name)),
                    lambda name: "en")


def pipeline_target(conn: sa.Connection, settings: UdeskKnowledgeConnection, connection: str, obj: str) -> Target:
    spec = WRITABLE[obj]
    context = ("agent_id", "knowledge_type", "parent_id") if obj == "catalogs" else ("agent_id", "catalog_id")
    return Target(obj, spec.table, {c: c for c in (*spec.columns, *context)}, takes_placeholders=True)


pipeline_target_problem = functools.partial(push_table_problem, "udesk_knowledge", PIPELINE_TARGETS)

# what core.declare() collects by name, besides the functions above
connect = client.connect
new_limiters = client.new_limiters

CONNECTOR = core.declare("udesk_knowledge", UdeskKnowledgeConnection, globals())
