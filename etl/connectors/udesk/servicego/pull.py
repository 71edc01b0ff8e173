"""ServiceGo objects into their wide tables: scroll-search backfill, updateTime increments.

Per object and connection, one state row ("servicego/<object>") holds:
    cursor     the account-time minute from which the next increment must read (server clock)
    scan       the scan in progress: mode (full | incremental), scroll_id reached, since, started_at
    rescan     set when the object's fields changed: every record's fieldDataList changed with them
Each page's rows and the scan's scroll_id commit in one transaction, so a killed scan resumes at
the page after the last commit. A fetch thread reads and packs the pages (etl.core.pool);
a long scan's batches are written by the run's writer process (etl.core.pull.writer_process),
a short one's in this process, by the same `scan_writer`.

A full scan (first run, --full, or after a field change) reads every record and then marks the
records it did not see as deleted. An increment reads records with updateTime >= cursor minus
the overlap; updateTime has minute resolution, so records already mirrored come back and are
skipped by their content hash. Its cursor is the minute the scan started by the server's clock
(the Date header), so a record changed during the scan is read again next time. Deletions
between full scans are found by etl.connectors.udesk.servicego.deletes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa

from etl.connectors.udesk.servicego.client import (
    SCROLL_SEARCH,
    ScrollPage,
    ServiceGoClient,
    conditions_body,
    next_scroll_id,
    parse_scroll_page,
)
from etl.connectors.udesk.servicego.diff import merge_local_edits
from etl.connectors.udesk.servicego.models import SCHEMA_LOCK, ObjectSchema, RecordBuilder, fields_of
from etl.connectors.udesk.servicego.related import enqueue as enqueue_related
from etl.connectors.udesk.servicego.settings import ServiceGoConnection, ServiceGoObject
from etl.connectors.udesk.servicego.types import CARRYING, is_text, merge_kinds
from etl.core.log import get_logger
from etl.core.mirror.delete_guard import DeleteGuard
from etl.core.mirror.packing import Packed
from etl.core.mirror.state import load_state, save_state
from etl.core.mirror.write import TableWriter, UpsertResult, WriteStats
from etl.core.pool import Emit, run_jobs
from etl.core.pull.sink import page_sink
from etl.core.pull.writer_serve import Apply
from etl.core.tuning import TUNING

if TYPE_CHECKING:  # the writer process imports this module: it needs no clients
    from etl.core.pull.context import RunContext

MINUTE = "%Y-%m-%d %H:%M"
# A page the writer packs costs the two processes a second parse and saves the pickling of packed
# rows; the fetching process sheds its packing. A PostgreSQL writer waits on the server
# instead: its pages come packed.
_WRITER_PACKS_EVERY = TUNING.writer_packs_every


def state_key(obj: str) -> str:
    return f"servicego/{obj}"


def search_args(obj: ServiceGoObject, extra: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The object's configured filter and conditions, with `extra` conditions that must also hold."""
    conditions = conditions_body(obj.conditions)
    strategy, logic = obj.judge_strategy, obj.custom_judge_logic
    if extra:
        if conditions and strategy != 1:
            own = logic if strategy == 3 else " or ".join(str(n) for n in range(1, len(conditions) + 1))
            numbers = " and ".join(str(n) for n in range(len(conditions) + 1, len(conditions) + len(extra) + 1))
            strategy, logic = 3, f"({own}) and {numbers}"
        conditions = conditions + extra
    return {"filter_id": obj.filter_id, "conditions": conditions, "judge_strategy": strategy,
            "custom_judge_logic": logic}


def minute_of(moment: datetime, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).strftime(MINUTE)


def object_writer(schema: ObjectSchema, settings: ServiceGoConnection, obj: ServiceGoObject,
                  connection: str) -> TableWriter:
    """The writer of an object's table; with write-back configured, a pull keeps unpushed local edits."""
    tz = ZoneInfo(settings.timezone)
    builder = RecordBuilder(schema, tz)
    merge = None
    if obj.push is not None:
        policy = obj.push.conflict_policy

        def merge(conn: sa.Connection, prepared: Any) -> int:
            return merge_local_edits(conn, connection, schema, builder, tz, prepared.rows, policy)

    return TableWriter(schema.table, builder, connection, merge=merge)


def write_records(conn: sa.Connection, writer: TableWriter, batch: Packed, obj: ServiceGoObject, connection: str,
                  run_id: int) -> UpsertResult:
    """Apply packed records (keeping unpushed local edits) and queue the changed ones' lists."""
    result = writer.apply(conn, batch, run_id)
    enqueue_related(conn, connection, obj, result.changed_ids)
    return result


def _has_unknown_fields(records: list[dict[str, Any]], schema: ObjectSchema) -> bool:
    # every record lists every field of its object: a field added during the scan shows in the
    # first or last record of a page
    return any(name not in schema.fields or (kind in CARRYING and is_text(schema.fields[name].field_type))
               for r in (records[0], records[-1]) for name, kind in fields_of(r).items())


@dataclass
class ScrollPageResult:
    """One fetched page: packed, or its records as received for the writer to pack: when they
    carry fields the packing schema lacks (the writer adds the columns), or as the answer's
    bytes (see _WRITER_PACKS_EVERY)."""

    records: Packed | list[dict[str, Any]] | bytes
    scroll_id: int  # the scan's position after the page
    total: int
    last: bool  # the scan's end


@dataclass
class ScanSpec:
    """What writing a scan's pages needs; plain data, so that it can go to a writer process."""

    connection: str
    settings: ServiceGoConnection
    obj: ServiceGoObject
    run_id: int
    scan: dict[str, Any]
    delete_guard: DeleteGuard


@dataclass
class ScanWritten:
    stats: WriteStats = field(default_factory=WriteStats)
    records: int = 0
    total: int = 0
    fields_added: bool = False


def scan_writer(spec: ScanSpec) -> Apply:
    """Writes a batch of pages with the scan's position after them (in the caller's
    transaction); the scan's last batch also finishes it (unseen rows, cursor)."""
    schema = ObjectSchema(spec.obj.name)
    key = state_key(spec.obj.name)
    scan = dict(spec.scan)
    log = get_logger(connection=spec.connection, object=spec.obj.name)
    writer: TableWriter | None = None  # a field added during the scan replaces it

    def current(conn: sa.Connection, added: dict[str, str] | None = None) -> TableWriter:
        nonlocal writer
        if writer is None or added:
            new = schema.ensure(conn, added or {})  # loads the registry first
            if new:
                # the records read before have no value for them: the next run reads all again
                scan["fields_added"] = True
                log.info("servicego_fields_added", fields=new)
            writer = object_writer(schema, spec.settings, spec.obj, spec.connection)
        return writer

    def write(conn: sa.Connection, packed: Packed, written: ScanWritten) -> None:
        result = write_records(conn, current(conn), packed, spec.obj, spec.connection, spec.run_id)
        written.stats.add(result.stats)
        written.records += len(packed.rows)

    def apply(conn: sa.Connection, batch: list[ScrollPageResult]) -> ScanWritten:
        written = ScanWritten(total=batch[-1].total)
        current(conn)  # the registry's fields, before any page is checked against them
        run = Packed()  # pages of one column list: one apply
        for page in batch:
            packed = page.records
            if isinstance(packed, bytes):
                packed = parse_scroll_page(orjson.loads(packed), SCROLL_SEARCH)  # checked once already
                if not packed or not _has_unknown_fields(packed, schema):
                    packed = current(conn).pack_records(packed, conn.dialect)
            if isinstance(packed, list):
                seen: dict[str, str] = {}
                for record in packed:
                    merge_kinds(seen, fields_of(record))
                known = len(schema.fields)
                packing = current(conn, seen)
                written.fields_added = written.fields_added or len(schema.fields) > known
                packed = packing.pack_records(packed, conn.dialect)
            if run.rows and packed.columns != run.columns:
                write(conn, run, written)
                run = Packed()
            run.extend(packed)
        if run.rows:
            write(conn, run, written)
        scan["scroll_id"] = batch[-1].scroll_id
        state = load_state(conn, spec.connection, key)
        if batch[-1].last:
            _finish(conn, spec, current(conn), scan, state, written)
        else:
            save_state(conn, spec.connection, key, {**state, "scan": scan})
        return written

    return apply


def _finish(conn: sa.Connection, spec: ScanSpec, writer: TableWriter, scan: dict[str, Any], state: dict[str, Any],
            written: ScanWritten) -> None:
    if scan["mode"] == "full":
        # live rows a full scan did not touch are gone remotely (or left the filter)
        t = writer.table
        gone = list(conn.execute(
            sa.select(t.c.id).where(t.c.connection == spec.connection, t.c.is_deleted.is_(False),
                                    t.c.last_seen_at < datetime.fromisoformat(scan["started_at"]))
        ).scalars())
        enqueue_related(conn, spec.connection, spec.obj, gone)
        written.stats.deleted += writer.mark_deleted(conn, gone, spec.run_id, guard=spec.delete_guard)
        state.pop("rescan", None)
        state["last_full_scan_at"] = datetime.now(UTC).isoformat()
    if scan.get("fields_added"):
        state["rescan"] = True  # see scan_writer
    state.pop("scan", None)
    state["cursor"] = scan["server_start"]
    save_state(conn, spec.connection, state_key(spec.obj.name), state, success=True)


class ObjectSync:
    """One object of one connection: schema upkeep, scans, state."""

    def __init__(self, ctx: RunContext, obj: ServiceGoObject) -> None:
        self.ctx = ctx
        self.obj = obj
        self.client: ServiceGoClient = ctx.client  # type: ignore[assignment]
        self.settings: ServiceGoConnection = ctx.settings  # type: ignore[assignment]
        self.tz = ZoneInfo(self.settings.timezone)
        self.schema = ObjectSchema(obj.name)
        self.key = state_key(obj.name)
        self.log = get_logger(connection=ctx.connection, object=obj.name)

    def writer(self) -> TableWriter:
        return object_writer(self.schema, self.settings, self.obj, self.ctx.connection)

    def write(self, conn: sa.Connection, writer: TableWriter, records: list[dict[str, Any]]) -> UpsertResult:
        """Apply fetched records (keeping unpushed local edits) and queue their lists."""
        return write_records(conn, writer, writer.pack_records(records, conn.dialect), self.obj, self.ctx.connection,
                             self.ctx.run_id)

    def probe(self) -> ScrollPage:
        """One record and the total: shows the object's current fields (every record lists them all)."""
        page = self.client.scroll_search(self.obj.name, 0, page_size=1, **search_args(self.obj))
        seen = fields_of(page.records[0]) if page.records else {}
        for attempt in (1, 2):
            try:
                with SCHEMA_LOCK, self.ctx.engine.begin() as conn:
                    self.schema.load(conn)
                    had_fields = bool(self.schema.fields)
                    new = self.schema.ensure(conn, seen)
                    if new and had_fields:
                        state = load_state(conn, self.ctx.connection, self.key)
                        save_state(conn, self.ctx.connection, self.key, {**state, "rescan": True})
                        self.log.info("servicego_fields_added", fields=new, rescan=True)
                return page
            except sa.exc.DBAPIError:
                # another process (another account of the system) changed the schema between our
                # look and our change: look again, once
                if attempt == 2:
                    raise
                self.log.info("servicego_schema_changed_meanwhile", object=self.obj.name)
        return page

    def run(self, full: bool) -> None:
        """Run a scan; first finish the one a killed run left, so that a restarted run leaves the
        object as current as a clean one (the scan it resumes stops at the killed run's start)."""
        probe = self.probe()
        with self.ctx.engine.connect() as conn:
            left = load_state(conn, self.ctx.connection, self.key).get("scan")
        if left is not None:
            self.log.info("servicego_scan_resumed", mode=left["mode"], scroll_id=left["scroll_id"])
            self.scan(left)
        with self.ctx.engine.begin() as conn:
            state = load_state(conn, self.ctx.connection, self.key)
            cursor = state.get("cursor")
            mode = "full" if full or cursor is None or state.get("rescan") else "incremental"
            server_now = probe.server_time or datetime.now(UTC)
            since = None
            if cursor is not None and mode == "incremental":
                start = datetime.strptime(cursor, MINUTE) - timedelta(minutes=self.settings.overlap_minutes)
                since = start.strftime(MINUTE)
            scan = {"mode": mode, "scroll_id": 0, "since": since, "server_start": minute_of(server_now, self.tz),
                    "started_at": datetime.now(UTC).isoformat()}
            save_state(conn, self.ctx.connection, self.key, {**state, "scan": scan})
        self.scan(scan)

    def scan(self, scan: dict[str, Any]) -> None:
        ctx, client, name = self.ctx, self.client, self.obj.name
        extra = [{"fieldApiName": "updateTime", "operator": "greater_than_eq", "value": scan["since"]}] if scan["since"] else None
        args = search_args(self.obj, extra)
        dialect = ctx.engine.dialect
        # the first page in this thread: its total tells whether the scan is long enough for a writer process
        first = client.scroll_search(name, int(scan["scroll_id"]), **args)
        pages = math.ceil(first.total / client.page_size)
        packing = [self.writer()]  # replaced when the writer reports fields added during the scan

        def result(page: ScrollPage, number: int, scroll_id: int, last: bool, writer_packs: int) -> ScrollPageResult:
            """A page as the sink takes it: packed here, or (every `writer_packs`-th) as received,
            for the writer process to pack; records with fields new to the table go unpacked."""
            records = page.records
            if writer_packs and number % writer_packs == writer_packs - 1 and page.content:
                return ScrollPageResult(page.content, scroll_id, page.total, last)
            if records and _has_unknown_fields(records, self.schema):
                return ScrollPageResult(records, scroll_id, page.total, last)
            return ScrollPageResult(packing[0].pack_records(records, dialect), scroll_id, page.total, last)

        def fetch(emit: Emit) -> None:
            # pages are packed by the consuming thread: the next request is under way meanwhile
            scroll_id, page, number = int(scan["scroll_id"]), first, 0
            while True:
                if not page.records:
                    emit((page, number, scroll_id, True))
                    return
                scroll_id = next_scroll_id(page.records, scroll_id, SCROLL_SEARCH)
                last = len(page.records) < client.page_size
                emit((page, number, scroll_id, last))
                if last:
                    return
                page, number = client.scroll_search(name, scroll_id, **args), number + 1

        done = 0

        def answered(written: ScanWritten) -> None:
            nonlocal done
            if written.fields_added:
                with ctx.engine.connect() as conn:
                    self.schema.load(conn)
                packing[0] = self.writer()
            ctx.stats.add(written.stats)
            done += written.records
            ctx.report(f"servicego/{name}", done, written.total)

        spec = ScanSpec(ctx.connection, self.settings, self.obj, ctx.run_id, scan, ctx.delete_guard)
        with page_sink(ctx, scan_writer, spec, pages, in_process_batch=TUNING.in_process_batch_pages_servicego,
                       process_batch=TUNING.writer_batch_pages_servicego, log=self.log) as sink:
            # a writer process packs some pages itself (SQLite only: see etl.core.tuning)
            packs = 0 if sink.in_process or dialect.name != "sqlite" else _WRITER_PACKS_EVERY

            def consume(batch: list[tuple[ScrollPage, int, int, bool]]) -> None:
                sink.submit([result(page, number, scroll_id, last, packs) for page, number, scroll_id, last in batch],
                            answered)

            run_jobs([fetch], consume, workers=1, stop=ctx.stop, batch_size=sink.batch_pages, least=sink.least_pages)
