"""Incremental streams on date_updated: tickets, users, organizations, knowledge base.

A scan of [lo, hi] is planned once (slices cut at probed page boundaries), saved in the stream's
state, then its slices are walked concurrently by key (see window.py). Every page commits with
its slice's new position, so a killed run resumes each slice where its last commit left it;
the cursor moves to `hi` only when all slices are done.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from etl.config import EddyDeskConnection
from etl.connectors.eddydesk import pull_children as children
from etl.connectors.eddydesk.streams import BY_NAME, Stream, Variant, children_queue
from etl.core.errors import MalformedResponse
from etl.core.log import get_logger
from etl.core.mirror.pending import add_pending
from etl.core.mirror.state import load_state, save_state
from etl.core.mirror.write import Packed, WriteStats
from etl.core.pool import Emit, run_jobs
from etl.core.pull.context import RunContext, helpdesk_writer
from etl.core.pull.window import Slice, fmt, local_now, next_second, plan_slices, probe_pages, window_start
from etl.core.pull.writer_process import Apply, WriterProcess, pickled
from etl.core.tuning import TUNING

ORDER = "date_updated{asc}"
_DRAIN_ATTEMPTS = 3


def state_key(stream: Stream, variant: Variant) -> str:
    return f"{stream.name}/{variant.suffix}" if variant.suffix else stream.name


@dataclass
class _PageResult:
    slice_index: int
    records: Packed | bytes  # packed by the fetch thread, and pickled there for a writer process
    lo: str | None
    done: bool


@dataclass
class ScanOutcome:
    seen_ids: set[Any] = field(default_factory=set)  # collected by reconciliation walks only
    records: int = 0


@dataclass
class PagesSpec:
    """What applying a scan's pages needs; plain data, so that it can go to a writer process."""

    connection: str
    settings: EddyDeskConnection
    stream: str
    marks_deleted: bool
    run_id: int
    child_streams: tuple[str, ...]
    state_key: str | None  # None: a reconciliation scan, which moves no cursor
    state: dict[str, Any]
    hi: str
    slices: list[Slice]
    pages: int


@dataclass
class PagesWritten:
    stats: WriteStats
    seen_ids: list[Any]  # a reconciliation walk's (no state key); empty for a scan
    records: int


def pages_writer(spec: PagesSpec) -> Apply:
    """Writes a batch of pages and the scan position after them (in the caller's transaction).

    A page's records arrive packed (by the fetch threads), here or in a writer process.
    """
    writer = helpdesk_writer(BY_NAME[spec.stream], spec.settings, spec.connection)
    queue = children_queue(BY_NAME[spec.stream])
    slices = [Slice(s.lo, s.hi, s.done) for s in spec.slices]

    def apply(conn: sa.Connection, batch: list[_PageResult]) -> PagesWritten:
        # the batch's pages in one apply: a few statements per batch, not per page
        packed = Packed()
        for item in batch:
            packed.extend(item.records if isinstance(item.records, Packed) else pickle.loads(item.records))
            slices[item.slice_index].lo = item.lo
            slices[item.slice_index].done = item.done
        result = writer.apply(conn, packed, spec.run_id, deleted=spec.marks_deleted)
        add_pending(conn, spec.connection, queue, spec.child_streams, result.changed_ids)
        # only a reconciliation walk needs the ids it saw: a scan's would grow with the table
        written = PagesWritten(result.stats, result.seen_ids if spec.state_key is None else [], len(packed.rows))
        if spec.state_key is not None:
            save_state(conn, spec.connection, spec.state_key, {**spec.state, "scan": _scan_json(spec.hi, slices, spec.pages)})
        return written

    return apply


def _params(variant: Variant, lo: str | None, hi: str, page: int = 1) -> dict[str, Any]:
    params: dict[str, Any] = {"page": page, "to_date_updated": hi, "order_by": ORDER, **variant.params}
    if lo is not None:
        params["from_date_updated"] = lo
    return params


def _date_of(records: list[dict[str, Any]], path: str, newest: bool = True) -> str:
    """The newest (or oldest) usable date_updated on a page; one bad record does not stop paging."""
    for record in reversed(records) if newest else records:
        value = record.get("date_updated")
        if isinstance(value, str) and len(value) == 19 and value[4] == "-":
            return value
    raise MalformedResponse("eddydesk", "no record on the page has a usable date_updated", path=path)


class WindowScan:
    """Walks one variant of one stream over [lo, hi]; writes and checkpoints every page."""

    def __init__(self, ctx: RunContext, stream: Stream, variant: Variant, *, persist: bool = True) -> None:
        self.ctx = ctx
        self.stream = stream
        self.variant = variant
        self.persist = persist  # reconciliation scans do not move the cursor
        self.key = state_key(stream, variant)
        self.outcome = ScanOutcome()
        self.pages = 0  # the window's pages when planned: big scans go through the run's writer process
        self.expected: int | None = None  # the window's records when planned (a resumed scan does not know)
        self.log = get_logger(connection=ctx.connection, stream=self.key)

    # -- planning ------------------------------------------------------------------------------
    def plan(self, lo: str | None, hi: str) -> tuple[list[Slice], Any]:
        client, path = self.ctx.helpdesk, self.stream.path
        first = client.list_page(path, _params(self.variant, lo, hi))
        self.pages = first.total_pages
        self.expected = first.total  # the window's records, for a progress display
        count = min(self.ctx.helpdesk_settings.concurrency, first.total_pages // 2)
        if count <= 1:
            return [Slice(lo, hi)], first
        boundaries: list[str] = []

        def probe(page: int) -> Any:
            def job(emit: Emit) -> None:
                records = client.list_page(path, _params(self.variant, lo, hi, page)).records
                if records:
                    emit(_date_of(records, path, newest=False))

            return job

        run_jobs(
            (probe(p) for p in probe_pages(first.total_pages, count)),
            boundaries.extend,
            workers=self.ctx.helpdesk_settings.concurrency,
            stop=self.ctx.stop,
        )
        # the first page of the window is also the first page of the first slice
        return plan_slices(lo, hi, boundaries), first

    # -- walking a slice -----------------------------------------------------------------------
    def _walk(self, piece: Slice, prefetched: Any, emit: Callable[[list[dict[str, Any]], str | None, bool], None]) -> None:
        """Pages of one slice, each emitted with the slice's position after it and whether it is done."""
        client, path = self.ctx.helpdesk, self.stream.path
        lo = piece.lo
        page = prefetched
        while True:
            if page is None:
                page = client.list_page(path, _params(self.variant, lo, piece.hi))
            records = page.records
            if page.total_pages <= 1 or not records:
                emit(records, lo, True)
                return
            newest = _date_of(records, path)
            if lo is not None and newest <= lo:
                # a whole page within one second: drain that second by page number, move past it
                drained = self._drain_second(lo)
                after = next_second(lo)
                if after > piece.hi:
                    emit(drained, lo, True)
                    return
                emit(drained, after, False)
                lo = after
                page = None
                continue
            emit(records, newest, False)
            lo = newest
            page = None

    def _drain_second(self, second: str) -> list[dict[str, Any]]:
        """All records updated in one second, checked against the total the server reports."""
        client, path = self.ctx.helpdesk, self.stream.path
        for _ in range(_DRAIN_ATTEMPTS):
            first = client.list_page(path, _params(self.variant, second, second))
            found = {r["id"]: r for r in first.records}
            for number in range(2, first.total_pages + 1):
                found.update((r["id"], r) for r in client.list_page(path, _params(self.variant, second, second, number)).records)
            if len(found) >= first.total:
                return list(found.values())
            self.log.warning("drain_incomplete", second=second, expected=first.total, got=len(found))
        return list(found.values())

    # -- running -------------------------------------------------------------------------------
    def run(self, slices: list[Slice], prefetched: Any, hi: str, state: dict[str, Any]) -> None:
        ctx = self.ctx
        table, dialect = ctx.writer(self.stream), ctx.engine.dialect

        def job_for(index: int, piece: Slice) -> Any:
            def job(emit: Emit) -> None:
                def page(records: list[dict[str, Any]], lo: str | None, done: bool) -> None:
                    # Pages are packed in the fetch threads: the work holds the GIL in short turns
                    # there, instead of in one busy consumer that every socket wait queues behind
                    # (25,000 tickets: about 30 % less CPU in this process). For a writer process
                    # they are pickled there too, while their objects are fresh in the core's cache
                    # (the consumer pickling whole batches later spent about 10 µs a ticket on
                    # it), and they wait for their batch as bytes, not as objects.
                    packed = table.pack_records(records, dialect)
                    emit(_PageResult(index, packed if writer is None else pickled(packed), lo, done))

                self._walk(piece, prefetched if index == 0 else None, page)

            return job

        spec = PagesSpec(
            ctx.connection, ctx.helpdesk_settings, self.stream.name, self.variant.marks_deleted, ctx.run_id,
            children.child_streams(ctx, self.stream), self.key if self.persist else None, state, hi, slices,
            self.pages,
        )

        def answered(written: PagesWritten) -> None:
            ctx.stats.add(written.stats)
            self.outcome.seen_ids.update(written.seen_ids)
            self.outcome.records += written.records
            ctx.report(self.key, self.outcome.records, self.expected)

        jobs = [job_for(i, s) for i, s in enumerate(slices) if not s.done]
        writer = ctx.writer_process(self.pages) if jobs else None
        if writer is not None:
            self.log.info("scan_through_writer_process", pages=self.pages)
        scope: contextlib.AbstractContextManager[WriterProcess | None] = (
            contextlib.nullcontext() if writer is None else writer.scan(f"{__name__}.pages_writer", spec, ctx.mirror_url))
        with scope:
            if writer is not None:

                def consume(batch: list[_PageResult]) -> None:
                    writer.submit(batch, answered)
            else:
                apply = pages_writer(spec)

                def consume(batch: list[_PageResult]) -> None:
                    with ctx.engine.begin() as conn:
                        written = apply(conn, batch)
                    answered(written)

            # A writer process takes batches of a sixteenth of the scan at most, and waits for a
            # whole one unless fetching is slow (its transactions take several); in-process, a
            # batch is a transaction (etl.core.tuning).
            if writer is not None:
                size = least = min(TUNING.writer_batch_pages, max(1, self.pages // 16))
            else:
                size, least = TUNING.in_process_batch_pages, 1
            run_jobs(jobs, consume, workers=ctx.helpdesk_settings.concurrency, stop=ctx.stop, batch_size=size,
                     least=least)


def _scan_json(hi: str, slices: list[Slice], pages: int) -> dict[str, Any]:
    return {"hi": hi, "slices": [s.as_json() for s in slices], "pages": pages}


def run_windowed(ctx: RunContext, stream: Stream, *, full: bool = False) -> None:
    for variant in stream.variants:
        scan = WindowScan(ctx, stream, variant)
        with ctx.engine.connect() as conn:
            state = load_state(conn, ctx.connection, scan.key)
        saved = state.get("scan")
        if saved and not full:
            hi = saved["hi"]
            slices = [Slice.from_json(s) for s in saved["slices"]]
            scan.pages = saved.get("pages", 0)
            prefetched = None
            scan.log.info("scan_resumed", hi=hi, slices_left=sum(not s.done for s in slices))
        else:
            lo = None if full else window_start(state.get("cursor"), ctx.helpdesk_settings.lookback_seconds)
            hi = fmt(local_now(ctx.tz))
            slices, prefetched = scan.plan(lo, hi)
            with ctx.engine.begin() as conn:
                save_state(conn, ctx.connection, scan.key, {**state, "scan": _scan_json(hi, slices, scan.pages)})
        scan.run(slices, prefetched, hi, state)
        with ctx.engine.begin() as conn:
            save_state(conn, ctx.connection, scan.key, {**state, "cursor": hi, "scan": None}, success=True)
