"""Incremental lists filtered by update time, with a stable upper bound (EddyDesk's tickets,
users, organizations and knowledge base; any API that pages "updated between lo and hi").

A scan of [lo, hi] is planned once (slices cut at probed page boundaries), saved in the list's
state, then its slices are walked concurrently by key (see window.py). Every page commits with
its slice's new position, so a killed run resumes each slice where its last commit left it;
the cursor moves to `hi` only when all slices are done.

What differs between remotes is described, not coded: `DatePaging` names the parameters and
the record field; `WindowedList` says which list, how a page is fetched and how one is written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa

from etl.core.errors import MalformedResponse
from etl.core.log import get_logger
from etl.core.mirror.packing import Packed
from etl.core.mirror.state import load_state, save_state
from etl.core.mirror.write import TableWriter, WriteStats
from etl.core.pool import Emit, run_jobs
from etl.core.pull.context import RunContext
from etl.core.pull.sink import decode, page_sink
from etl.core.pull.window import (
    API_DATE,
    Slice,
    fmt,
    local_now,
    next_second,
    parse,
    plan_slices,
    probe_pages,
    window_start,
)
from etl.core.tuning import TUNING

_DRAIN_ATTEMPTS = 3


class ListPage(Protocol):
    """A page of a list as the connector's client parses it."""

    @property
    def records(self) -> list[dict[str, Any]]: ...

    @property
    def total(self) -> int: ...  # records in the whole filtered list

    @property
    def total_pages(self) -> int: ...


@dataclass(frozen=True)
class Page:
    """A ListPage for a client that parses no more than the scan reads."""

    records: list[dict[str, Any]]
    total: int
    total_pages: int


@dataclass(frozen=True)
class DatePaging:
    """How a remote filters a list by update time and pages it. Both bounds are inclusive; the
    list is ordered by update time, oldest first; dates are text in `date_format` (in the
    account's zone), which must sort as the moments do."""

    since: str  # the lower bound's parameter; left out for an unbounded scan
    until: str  # the upper bound's parameter
    updated_field: str  # the record's update time
    page: str = "page"  # the page number's parameter (1, 2, ...)
    fixed: Mapping[str, Any] = field(default_factory=dict)  # sent with every request (the order, say)
    id_field: str = "id"
    date_format: str = API_DATE


@dataclass(frozen=True)
class WindowedList:
    """One list of a run. `writer` and `after_write` travel to a writer process: module-level
    functions, or functools.partial of them, over plain data."""

    key: str  # its sync_state row
    path: str
    paging: DatePaging
    list_page: Callable[[str, dict[str, Any]], ListPage]  # (path, params) -> page
    writer: Callable[[], TableWriter]
    concurrency: int  # requests in flight
    lookback_seconds: float  # how far before the cursor a scan starts
    filters: Mapping[str, Any] = field(default_factory=dict)  # this view's own parameters
    marks_deleted: bool = False  # what the view lists is deleted (EddyDesk's trashed tickets)
    # (transaction, changed ids) after each batch, e.g. queueing the records' child lists
    after_write: Callable[[sa.Connection, list[Any]], None] | None = None


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
    writer: Callable[[], TableWriter]
    after_write: Callable[[sa.Connection, list[Any]], None] | None
    marks_deleted: bool
    run_id: int
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


def pages_writer(spec: PagesSpec) -> Callable[[sa.Connection, list[_PageResult]], PagesWritten]:
    """Writes a batch of pages and the scan position after them (in the caller's transaction)."""
    writer = spec.writer()
    slices = [Slice(s.lo, s.hi, s.done) for s in spec.slices]

    def apply(conn: sa.Connection, batch: list[_PageResult]) -> PagesWritten:
        # the batch's pages in one apply: a few statements per batch, not per page
        packed = Packed()
        for item in batch:
            packed.extend(decode(item.records))
            slices[item.slice_index].lo = item.lo
            slices[item.slice_index].done = item.done
        result = writer.apply(conn, packed, spec.run_id, deleted=spec.marks_deleted)
        if spec.after_write is not None:
            spec.after_write(conn, result.changed_ids)
        # only a reconciliation walk needs the ids it saw: a scan's would grow with the table
        written = PagesWritten(result.stats, result.seen_ids if spec.state_key is None else [], len(packed.rows))
        if spec.state_key is not None:
            save_state(conn, spec.connection, spec.state_key, {**spec.state, "scan": _scan_json(spec.hi, slices, spec.pages)})
        return written

    return apply


class WindowScan:
    """Walks one list over [lo, hi]; writes and checkpoints every page."""

    def __init__(self, ctx: RunContext, source: WindowedList, *, persist: bool = True) -> None:
        self.ctx = ctx
        self.source = source
        self.paging = source.paging
        self.persist = persist  # reconciliation scans do not move the cursor
        self.key = source.key
        self.outcome = ScanOutcome()
        self.pages = 0  # the window's pages when planned: big scans go through the run's writer process
        self.expected: int | None = None  # the window's records when planned (a resumed scan does not know)
        self.log = get_logger(connection=ctx.connection, stream=self.key)

    def _fetch(self, lo: str | None, hi: str, page: int = 1) -> ListPage:
        paging = self.paging
        params: dict[str, Any] = {paging.page: page, paging.until: hi, **paging.fixed, **self.source.filters}
        if lo is not None:
            params[paging.since] = lo
        return self.source.list_page(self.source.path, params)

    def _date_of(self, records: list[dict[str, Any]], newest: bool = True) -> str:
        """The newest (or oldest) usable update time on a page; one bad record does not stop paging."""
        for record in reversed(records) if newest else records:
            value = record.get(self.paging.updated_field)
            if isinstance(value, str):
                try:
                    parse(value, self.paging.date_format)
                except ValueError:
                    continue
                return value
        raise MalformedResponse(self.ctx.settings.system, f"no record on the page has a usable {self.paging.updated_field}",
                                path=self.source.path)

    # -- planning ------------------------------------------------------------------------------
    def plan(self, lo: str | None, hi: str) -> tuple[list[Slice], Any]:
        first = self._fetch(lo, hi)
        self.pages = first.total_pages
        self.expected = first.total  # the window's records, for a progress display
        count = min(self.source.concurrency, first.total_pages // 2)
        if count <= 1:
            return [Slice(lo, hi)], first
        boundaries: list[str] = []

        def probe(page: int) -> Any:
            def job(emit: Emit) -> None:
                records = self._fetch(lo, hi, page).records
                if records:
                    emit(self._date_of(records, newest=False))

            return job

        run_jobs((probe(p) for p in probe_pages(first.total_pages, count)), boundaries.extend,
                 workers=self.source.concurrency, stop=self.ctx.stop)
        # the first page of the window is also the first page of the first slice
        return plan_slices(lo, hi, boundaries), first

    # -- walking a slice -----------------------------------------------------------------------
    def _walk(self, piece: Slice, prefetched: Any, emit: Callable[[list[dict[str, Any]], str | None, bool], None]) -> None:
        """Pages of one slice, each emitted with the slice's position after it and whether it is done."""
        lo = piece.lo
        page = prefetched
        while True:
            if page is None:
                page = self._fetch(lo, piece.hi)
            records = page.records
            if page.total_pages <= 1 or not records:
                emit(records, lo, True)
                return
            newest = self._date_of(records)
            if lo is not None and newest <= lo:
                # a whole page within one second: drain that second by page number, move past it
                drained = self._drain_second(lo)
                after = next_second(lo, self.paging.date_format)
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
        key = self.paging.id_field
        for _ in range(_DRAIN_ATTEMPTS):
            first = self._fetch(second, second)
            found = {r[key]: r for r in first.records}
            for number in range(2, first.total_pages + 1):
                found.update((r[key], r) for r in self._fetch(second, second, number).records)
            if len(found) >= first.total:
                return list(found.values())
            self.log.warning("drain_incomplete", second=second, expected=first.total, got=len(found))
        return list(found.values())

    # -- running -------------------------------------------------------------------------------
    def run(self, slices: list[Slice], prefetched: Any, hi: str, state: dict[str, Any]) -> None:
        ctx, source = self.ctx, self.source
        spec = PagesSpec(ctx.connection, source.writer, source.after_write, source.marks_deleted, ctx.run_id,
                         self.key if self.persist else None, state, hi, slices, self.pages)

        def answered(written: PagesWritten) -> None:
            ctx.stats.add(written.stats)
            self.outcome.seen_ids.update(written.seen_ids)
            self.outcome.records += written.records
            ctx.report(self.key, self.outcome.records, self.expected)

        left = [(i, s) for i, s in enumerate(slices) if not s.done]
        if not left:
            return
        table, dialect = source.writer(), ctx.engine.dialect
        with page_sink(ctx, pages_writer, spec, self.pages, in_process_batch=TUNING.in_process_batch_pages,
                       process_batch=TUNING.writer_batch_pages, log=self.log) as sink:

            def job_for(index: int, piece: Slice) -> Any:
                def job(emit: Emit) -> None:
                    def page(records: list[dict[str, Any]], lo: str | None, done: bool) -> None:
                        # Pages are packed (and encoded for a writer process) in the fetch
                        # threads: the work holds the GIL in short turns there, instead of in
                        # one busy consumer that every socket wait queues behind (README, Benchmarks).
                        emit(_PageResult(index, sink.encode(table.pack_records(records, dialect)), lo, done))

                    self._walk(piece, prefetched if index == 0 else None, page)

                return job

            run_jobs([job_for(i, s) for i, s in left], lambda batch: sink.submit(batch, answered),
                     workers=source.concurrency, stop=ctx.stop, batch_size=sink.batch_pages, least=sink.least_pages)


def _scan_json(hi: str, slices: list[Slice], pages: int) -> dict[str, Any]:
    return {"hi": hi, "slices": [s.as_json() for s in slices], "pages": pages}


def run_windowed(ctx: RunContext, source: WindowedList, *, full: bool = False) -> None:
    """Scan the list from its cursor (less the lookback) to now. A scan a killed run left is
    finished first and the run then scans on from where it ends, so a restarted run leaves the
    mirror as current as a clean one: what changed while nothing ran is not left to the next run."""
    with ctx.engine.connect() as conn:
        state = load_state(conn, ctx.connection, source.key)
    saved = state.get("scan")
    if saved and not full:
        hi = saved["hi"]
        scan = WindowScan(ctx, source)
        slices = [Slice.from_json(s) for s in saved["slices"]]
        scan.pages = saved.get("pages", 0)
        scan.log.info("scan_resumed", hi=hi, slices_left=sum(not s.done for s in slices))
        state = _finish_scan(ctx, scan, slices, None, hi, state)
    date_format = source.paging.date_format
    scan = WindowScan(ctx, source)
    lo = None if full else window_start(state.get("cursor"), source.lookback_seconds, date_format)
    hi = fmt(local_now(ctx.tz), date_format)
    slices, prefetched = scan.plan(lo, hi)
    with ctx.engine.begin() as conn:
        save_state(conn, ctx.connection, scan.key, {**state, "scan": _scan_json(hi, slices, scan.pages)})
    _finish_scan(ctx, scan, slices, prefetched, hi, state)


def _finish_scan(ctx: RunContext, scan: WindowScan, slices: list[Slice], prefetched: Any, hi: str,
                 state: dict[str, Any]) -> dict[str, Any]:
    """Walks what is left of a planned scan, then moves the cursor to its upper bound."""
    scan.run(slices, prefetched, hi, state)
    state = {**state, "cursor": hi, "scan": None}
    with ctx.engine.begin() as conn:
        save_state(conn, ctx.connection, scan.key, state, success=True)
    return state
