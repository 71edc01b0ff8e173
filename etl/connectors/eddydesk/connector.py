"""EddyDesk, as the engine sees it (etl.core.connector)."""

from __future__ import annotations

import functools
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from etl.connectors.eddydesk import client, pull, push, push_options
from etl.connectors.eddydesk.diff import OPTIONS, WRITABLE
from etl.connectors.eddydesk.models import UserDepartment
from etl.connectors.eddydesk.settings import EddyDeskConnection
from etl.connectors.eddydesk.streams import select_streams
from etl.core import connector as core
from etl.core.mirror.base import table_of
from etl.core.mirror.state import reconcile_due
from etl.core.pipelines.targets import CreateExtra, Target, push_table_problem
from etl.core.push import columns
from etl.core.push.journal import PushOutcome
from etl.core.push.order import push_names

PIPELINE_TARGETS = ("users", "organizations")
_USER_DEPARTMENTS = table_of(UserDepartment)


def plan_pull(request: core.PullRequest) -> list[core.PlannedStream]:
    settings: EddyDeskConnection = request.settings
    plan = []
    for stream in select_streams(settings.streams, request.streams):
        due = stream.kind == "windowed" and (request.reconcile_deletes or reconcile_due(
            request.engine, request.connection, stream.name, settings.reconcile_every_hours))
        plan.append(core.PlannedStream(stream.name, client.budget_of(stream.path),
                                  functools.partial(pull.run_stream, stream=stream, full=request.full, do_reconcile=due),
                                  records_success=stream.kind != "windowed"))
    return plan


def status_tables(conn: sa.Connection, settings: EddyDeskConnection) -> list[core.StatusTable]:
    return [core.StatusTable(s.name, s.table, s.name) for s in select_streams(settings.streams)]


def pull_streams_for_push(settings: EddyDeskConnection, pushed: list[str]) -> tuple[str, ...]:
    """The streams whose pull brings the remote's current state of the pushed tables."""
    streams: list[str] = []
    for name in pushed:
        if name == OPTIONS:
            streams += [f"{scope}_{suffix}" for scope in ("ticket", "user", "organization")
                        for suffix in ("custom_fields", OPTIONS)]
        elif name in ("ticket_posts", "ticket_comments"):
            streams += ["tickets", name]  # a reply's edit moves its ticket: the ticket queues its lists
        else:
            streams.append(name)
    return tuple(dict.fromkeys(streams))


def push_tables(request: core.PushRequest) -> list[core.PushTable]:
    engine, connection, settings = request.engine, request.connection, request.settings
    tz = ZoneInfo(settings.timezone)

    def table(name: str) -> core.PushTable:
        spec, config = WRITABLE[name], settings.push[name]
        if name == OPTIONS:
            def plan_options(conn: sa.Connection) -> PushOutcome:
                return push_options.plan(conn, connection, spec, config, settings.language, request.retry_failed)

            def send_options(remote: client.EddyDeskClient, outcome: PushOutcome) -> None:
                push_options.send(engine, remote, connection, settings, spec, outcome)

            return core.PushTable(name, spec.table.name, plan_options, send_options)

        def plan(conn: sa.Connection) -> PushOutcome:
            return push.plan(conn, connection, spec, config, tz, request.retry_failed)

        def send(remote: client.EddyDeskClient, outcome: PushOutcome) -> None:
            push.send(engine, remote, connection, settings, spec, outcome)

        return core.PushTable(name, spec.table.name, plan, send)

    return [table(n) for n in push_names(connection, push.ORDER, settings.push, request.tables)]


def resolve_conflict(conn: sa.Connection, conflict_id: int, take: str, settling: core.ConflictSettling) -> None:
    columns.resolve(WRITABLE.values(), conn, conflict_id, take, lambda name: ZoneInfo(settling.timezone_of(name)),
                    lambda name: settling.settings_of(name).language)


def _user_departments(conn: sa.Connection, connection: str, user_id: int, departments: Any) -> None:
    ids = departments if isinstance(departments, list) else [departments]
    for department in ids:
        conn.execute(_USER_DEPARTMENTS.insert().values(connection=connection, user_id=user_id,
                                                       department_id=int(department)))


def pipeline_target(conn: sa.Connection, settings: EddyDeskConnection, connection: str, obj: str) -> Target:
    spec = WRITABLE[obj]
    extras: dict[str, CreateExtra] = {"department": _user_departments} if obj == "users" else {}
    return Target(obj, spec.table, {c: c for c in spec.columns}, extras)


pipeline_target_problem = functools.partial(push_table_problem, "eddydesk", PIPELINE_TARGETS)

# what core.declare() collects by name, besides the functions above
connect = client.connect
new_limiters = client.new_limiters

CONNECTOR = core.declare("eddydesk", EddyDeskConnection, globals())
