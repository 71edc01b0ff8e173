"""Notes, as the engine sees it: one windowed list pulled incrementally, and edits pushed back.

New rows are not pushed: a create whose answer is lost cannot be found again through this API
(it has no unique field to look a note up by), so a retried create could duplicate it. They are
held with that reason instead.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa

from etl.core import connector as core
from etl.core.errors import DesksyncError
from etl.core.mirror.rows import RowBuilder
from etl.core.mirror.write import TableWriter
from etl.core.pull.context import RunContext
from etl.core.pull.windowed import DatePaging, WindowedList, run_windowed
from etl.core.push.columns import Texts, Writable, merger, resolve, texts
from etl.core.push.conflicts import open_conflict_ids
from etl.core.push.fields import changed_fields
from etl.core.push.journal import PlannedWrite, PushOutcome, held_ids, hold_unsendable, send_concurrently
from tests.connectors.notes import client
from tests.connectors.notes.models import NOTES, Note
from tests.connectors.notes.settings import NotesConnection

STREAM = "notes"
PAGING = DatePaging(since="updated_from", until="updated_to", updated_field="updated_at",
                    date_format="%Y-%m-%dT%H:%M:%SZ")
WRITABLE = Writable(STREAM, Note, ("title", "body"))


def notes_writer(settings: NotesConnection, connection: str, sent: Mapping[Any, Texts] | None = None) -> TableWriter:
    """The table's writer; with write-back configured, a pull keeps local edits (etl.core.push.columns)."""
    tz = ZoneInfo(settings.timezone)
    builder = RowBuilder(NOTES, tz, "en")
    merge = None if settings.push is None else merger(WRITABLE, connection, builder, tz,
                                                      settings.push.conflict_policy, sent)
    return TableWriter(NOTES, builder, connection, merge=merge)


def _pull(ctx: RunContext, full: bool) -> None:
    assert isinstance(ctx.client, client.NotesClient) and isinstance(ctx.settings, NotesConnection)
    settings = ctx.settings
    run_windowed(ctx, WindowedList(
        key=STREAM, path="notes", paging=PAGING, list_page=ctx.client.list_page,
        writer=functools.partial(notes_writer, settings, ctx.connection),
        concurrency=settings.concurrency, lookback_seconds=settings.lookback_seconds,
    ), full=full)


def plan_pull(request: core.PullRequest) -> list[core.PlannedStream]:
    if any(name != STREAM for name in request.streams):
        raise ValueError(f"unknown stream (Notes has one: {STREAM})")
    return [core.PlannedStream(STREAM, "main", functools.partial(_pull, full=request.full), records_success=False)]


def status_tables(conn: sa.Connection, settings: NotesConnection) -> list[core.StatusTable]:
    return [core.StatusTable(STREAM, NOTES, STREAM)] if sa.inspect(conn).has_table(NOTES.name) else []


def plan_push(conn: sa.Connection, connection: str, settings: NotesConnection, retry_failed: bool) -> PushOutcome:
    tz = ZoneInfo(settings.timezone)
    builder = RowBuilder(NOTES, tz, "en")
    outcome = PushOutcome()
    held, conflicted = held_ids(conn, connection, NOTES.name), open_conflict_ids(conn, connection, NOTES.name)
    rows = conn.execute(sa.select(NOTES).where(NOTES.c.connection == connection, NOTES.c.is_deleted.is_(False))
                        .order_by(NOTES.c.id)).mappings()
    for row in rows:
        local = texts(WRITABLE, row, tz)
        if row["id"] < 0:
            write = PlannedWrite(NOTES.name, row["id"], "create", [(c, None, v) for c, v in local.items()],
                                 problem="the Notes connector pushes edits only (see its connector module)")
        else:
            raw = row["raw"] if isinstance(row["raw"], dict) else orjson.loads(row["raw"])
            base = texts(WRITABLE, builder.build(raw)[0], tz)
            changed = changed_fields(base, local)
            if not changed:
                continue
            write = PlannedWrite(NOTES.name, row["id"], "update", [(c, base[c], local[c]) for c in changed],
                                 payload={"body": {c: local[c] or "" for c in changed}})
        outcome.consider(write, conflicted, held, retry_failed)
    return outcome.finish(held)


def send_push(engine: sa.Engine, remote: client.NotesClient, connection: str, settings: NotesConnection,
              outcome: PushOutcome) -> None:
    sent: dict[Any, Texts] = {}  # what the answers in hand were sent: edits made meanwhile survive
    writer = notes_writer(settings, connection, sent)
    ready = hold_unsendable(engine, connection, outcome)

    def send_one(write: PlannedWrite) -> dict[str, Any]:
        return remote.update(write.record_id, write.payload["body"])

    def written(conn: sa.Connection, done: list[tuple[PlannedWrite, dict[str, Any]]]) -> None:
        sent.clear()
        sent.update({write.record_id: write.sent_values() for write, _ in done})
        writer.upsert(conn, [answer for _, answer in done], None)

    send_concurrently(engine, connection, NOTES.name, outcome, ready, send_one, written, settings.concurrency)


def push_tables(request: core.PushRequest) -> list[core.PushTable]:
    settings: NotesConnection = request.settings
    if settings.push is None:
        raise DesksyncError(f"connection {request.connection!r}: the notes table has no push section")

    def plan(conn: sa.Connection) -> PushOutcome:
        return plan_push(conn, request.connection, settings, request.retry_failed)

    def send(remote: client.NotesClient, outcome: PushOutcome) -> None:
        send_push(request.engine, remote, request.connection, settings, outcome)

    return [core.PushTable(STREAM, NOTES.name, plan, send)]


def resolve_conflict(conn: sa.Connection, conflict_id: int, take: str, settling: core.ConflictSettling) -> None:
    resolve([WRITABLE], conn, conflict_id, take, lambda name: ZoneInfo(settling.timezone_of(name)), lambda name: "en")


def own_tables() -> list[sa.Table]:
    return [NOTES]

# what core.declare() collects by name, besides the functions above
connect = client.connect
new_limiters = client.new_limiters

CONNECTOR = core.declare("notes", NotesConnection, globals())
