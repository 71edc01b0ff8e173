"""ServiceGo objects into their wide tables: scroll-search backfill, updateTime increments.

Per object and connection, one state row ("servicego/<object>") holds:
    cursor     the account-time minute from which the next increment must read (server clock)
    scan       the scan in progress: mode (full | incremental), scroll_id reached, since, started_at
    rescan     set when the object's fields changed: every record's fieldDataList changed with them
Each page's rows and the scan's scroll_id commit in one transaction, so a killed scan resumes at
the page after the last commit. Fetching runs one page ahead of writing (etl.extract.pool).

A full scan (first run, --full, or after a field change) reads every record and then marks the
records it did not see as deleted. An increment reads records with updateTime >= cursor minus
the overlap; updateTime has minute resolution, so records already mirrored come back and are
skipped by their content hash. Its cursor is the minute the scan started by the server's clock
(the Date header), so a record changed during the scan is read again next time. Deletions
between full scans are found by etl.extract.servicego_deletes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from etl.clients.servicego import ScrollPage, ServiceGoClient, conditions_body, next_scroll_id
from etl.config import ServiceGoConnection, ServiceGoObject
from etl.diff.servicego import merge_local_edits
from etl.extract.context import RunContext
from etl.extract.pool import Emit, run_jobs
from etl.extract.servicego_related import enqueue as enqueue_related
from etl.log import get_logger
from etl.mirror.servicego import ObjectSchema, RecordBuilder, fields_of
from etl.mirror.state import load_state, save_state
from etl.mirror.write import TableWriter, UpsertResult

MINUTE = "%Y-%m-%d %H:%M"


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
        return TableWriter(self.schema.table, RecordBuilder(self.schema, self.tz), self.ctx.connection)

    def write(self, conn: sa.Connection, writer: TableWriter, records: list[dict[str, Any]]) -> UpsertResult:
        """Apply fetched records, keeping unpushed local edits (write-back), and queue their lists."""
        prepared = writer.prepare(records)
        if self.obj.push is not None:
            conflicts = merge_local_edits(conn, self.ctx.connection, self.schema, writer.builder, self.tz,
                                          prepared.rows, self.obj.push.conflict_policy)
            if conflicts:
                self.log.warning("conflicts_recorded", count=conflicts)
        result = writer.apply(conn, prepared, self.ctx.run_id)
        enqueue_related(conn, self.ctx.connection, self.obj, result.changed_ids)
        return result

    def probe(self) -> ScrollPage:
        """One record and the total: shows the object's current fields (every record lists them all)."""
        page = self.client.scroll_search(self.obj.name, 0, page_size=1, **search_args(self.obj))
        with self.ctx.engine.begin() as conn:
            self.schema.load(conn)
            had_fields = bool(self.schema.fields)
            new = self.schema.ensure(conn, fields_of(page.records[0]) if page.records else {})
            if new and had_fields:
                state = load_state(conn, self.ctx.connection, self.key)
                save_state(conn, self.ctx.connection, self.key, {**state, "rescan": True})
                self.log.info("servicego_fields_added", fields=new, rescan=True)
        return page

    def run(self, full: bool) -> str:
        """Run (or resume) a scan; returns its mode."""
        probe = self.probe()
        with self.ctx.engine.begin() as conn:
            state = load_state(conn, self.ctx.connection, self.key)
            scan = state.get("scan")
            if scan is None:
                cursor = state.get("cursor")
                mode = "full" if full or cursor is None or state.get("rescan") else "incremental"
                server_now = probe.server_time or datetime.now(UTC)
                since = None
                if cursor is not None and mode == "incremental":
                    start = datetime.strptime(cursor, MINUTE) - timedelta(minutes=self.settings.overlap_minutes)
                    since = start.strftime(MINUTE)
                scan = {"mode": mode, "scroll_id": 0, "since": since, "server_start": minute_of(server_now, self.tz),
                        "started_at": datetime.now(UTC).isoformat()}
                state = {**state, "scan": scan}
                save_state(conn, self.ctx.connection, self.key, state)
        self.scan(scan)
        return str(scan["mode"])

    def scan(self, scan: dict[str, Any]) -> None:
        extra = [{"fieldApiName": "updateTime", "operator": "greater_than_eq", "value": scan["since"]}] if scan["since"] else None
        args = search_args(self.obj, extra)
        writer = self.writer()
        done = 0

        def fetch(emit: Emit) -> None:
            scroll_id = int(scan["scroll_id"])
            while True:
                page = self.client.scroll_search(self.obj.name, scroll_id, **args)
                if not page.records:
                    emit(([], scroll_id, page.total))
                    return
                scroll_id = next_scroll_id(page.records, scroll_id, "v1/datas/scrollSearch")
                emit((page.records, scroll_id, page.total))
                if len(page.records) < self.client.page_size:
                    emit(([], scroll_id, page.total))
                    return

        finished = False

        def consume(batch: list[tuple[list[dict[str, Any]], int, int]]) -> None:
            nonlocal done, finished, writer
            records = [r for page, _, _ in batch for r in page]
            finished = finished or any(not page for page, _, _ in batch)
            seen: dict[str, str] = {}
            # every record lists every field of its object: a field added during the scan shows
            # in the first or last record of a page
            for page, _, _ in batch:
                if page:
                    seen.update(fields_of(page[0]))
                    seen.update(fields_of(page[-1]))
            with self.ctx.engine.begin() as conn:
                if any(name not in self.schema.fields for name in seen):
                    self.schema.ensure(conn, seen)  # a field added during the scan
                    writer = self.writer()
                result = self.write(conn, writer, records)
                scan["scroll_id"] = batch[-1][1]
                if finished:
                    self._finish(conn, scan)
                else:
                    state = load_state(conn, self.ctx.connection, self.key)
                    save_state(conn, self.ctx.connection, self.key, {**state, "scan": scan})
            self.ctx.stats.add(result.stats)
            done += len(records)
            self.ctx.report(f"servicego/{self.obj.name}", done, batch[-1][2])

        run_jobs([fetch], consume, workers=1, stop=self.ctx.stop, batch_size=4)

    def _finish(self, conn: sa.Connection, scan: dict[str, Any]) -> None:
        state = load_state(conn, self.ctx.connection, self.key)
        if scan["mode"] == "full":
            deleted = self._mark_unseen(conn, datetime.fromisoformat(scan["started_at"]))
            self.ctx.stats.deleted += deleted
            state.pop("rescan", None)
            state["last_full_scan_at"] = datetime.now(UTC).isoformat()
        state.pop("scan", None)
        state["cursor"] = scan["server_start"]
        save_state(conn, self.ctx.connection, self.key, state, success=True)

    def _mark_unseen(self, conn: sa.Connection, since: datetime) -> int:
        """After a full scan: live rows it did not touch are gone remotely (or left the filter)."""
        t = self.schema.table
        gone = list(conn.execute(
            sa.select(t.c.id).where(t.c.connection == self.ctx.connection, t.c.is_deleted.is_(False),
                                    t.c.last_seen_at < since)
        ).scalars())
        enqueue_related(conn, self.ctx.connection, self.obj, gone)
        return self.writer().mark_deleted(conn, gone, self.ctx.run_id)
