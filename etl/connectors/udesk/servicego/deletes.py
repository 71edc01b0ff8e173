"""Find ServiceGo records deleted remotely, at a cost that follows the deletions.

ServiceGo has no deleted-records feed. The seed's cheap way is GET /v1/datas/scroll (ids and
updateTime only), but one pass over it costs total/100 requests: as much as a backfill. So
between full passes we compare counts instead:

1. scrollSearch with pageSize 1 answers paging.total, the number of matching records: one
   request counts any createTime range remotely; the mirror counts its live rows in the same
   range. Equal counts for the whole object: nothing to do (one request).
2. Otherwise halve the createTime range and count again, descending only into halves whose
   counts differ, down to ranges of at most LEAF_ROWS mirror rows (or one minute); those are
   read whole and their missing ids are marked deleted.

A deletion costs about log2(rows / LEAF_ROWS) counts. When the count walk would cost more
than a full id pass, or on --reconcile / the reconcile cadence, the full pass runs instead:
GET /v1/datas/scroll when the object is selected by a filter only, scrollSearch with the
conditions otherwise (the scroll endpoint takes no conditions).
A deletion hidden by a record created in the same range and not yet mirrored is found by the
next run, once the new record is mirrored.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from etl.connectors.udesk.servicego.client import SCROLL, SCROLL_SEARCH, next_scroll_id
from etl.connectors.udesk.servicego.pull import MINUTE, ObjectSync, search_args
from etl.connectors.udesk.servicego.related import enqueue as enqueue_related
from etl.connectors.udesk.servicego.types import DATE_TIME

LEAF_ROWS = 200


class _TooCostly(Exception):
    pass


def _local(moment: datetime, sync: ObjectSync) -> str:
    return moment.astimezone(sync.tz).strftime(MINUTE)


def _range(sync: ObjectSync, lo: datetime, hi: datetime) -> list[dict[str, str]]:
    return [
        {"fieldApiName": "createTime", "operator": "greater_than_eq", "value": _local(lo, sync)},
        {"fieldApiName": "createTime", "operator": "less_than", "value": _local(hi, sync)},
    ]


class DeletionFinder:
    def __init__(self, sync: ObjectSync, budget: int) -> None:
        self.sync = sync
        self.budget = budget  # requests a full id pass would cost
        self.spent = 0
        self.table = sync.schema.table
        created = sync.schema.fields.get("createTime")
        # counted by createTime ranges only where the column holds UTC timestamps; a table made
        # before the type was read right keeps it as text, and is checked by a full id pass
        usable = created is not None and created.field_type == DATE_TIME
        self.created = self.table.c[created.column] if created is not None and usable else None

    def _live(self) -> list[Any]:
        t = self.table
        return [t.c.connection == self.sync.ctx.connection, t.c.is_deleted.is_(False)]

    def _mirror_count(self, conn: sa.Connection, lo: datetime, hi: datetime) -> int:
        assert self.created is not None
        return int(conn.execute(sa.select(sa.func.count()).select_from(self.table).where(
            *self._live(), self.created >= lo, self.created < hi)).scalar_one())

    def _remote_count(self, lo: datetime, hi: datetime) -> int:
        self.spent += 1
        if self.spent > self.budget:
            raise _TooCostly()
        page = self.sync.client.scroll_search(self.sync.obj.name, 0, page_size=1,
                                              **search_args(self.sync.obj, _range(self.sync, lo, hi)))
        return page.total

    def run(self, remote_total: int) -> int:
        """Mark deleted rows; returns how many. Falls back to a full id pass when cheaper."""
        engine, conn_name = self.sync.ctx.engine, self.sync.ctx.connection
        with engine.connect() as conn:
            mirror_total = int(conn.execute(sa.select(sa.func.count()).select_from(self.table).where(*self._live())).scalar_one())
            if mirror_total == remote_total:
                return 0
            if self.created is None:
                return full_id_pass(self.sync)
            lo, hi = conn.execute(sa.select(sa.func.min(self.created), sa.func.max(self.created)).where(*self._live())).one()
        if lo is None:
            return 0
        lo, hi = _aware(lo), _aware(hi) + timedelta(minutes=1)
        try:
            return self._walk(lo, hi, None)
        except _TooCostly:
            self.sync.log.info("servicego_deletes_full_pass", reason="count walk costs more than an id pass")
            return full_id_pass(self.sync)
        finally:
            self.sync.log.debug("servicego_deletes_checked", connection=conn_name, requests=self.spent)

    def _walk(self, lo: datetime, hi: datetime, remote: int | None) -> int:
        with self.sync.ctx.engine.connect() as conn:
            mirror = self._mirror_count(conn, lo, hi)
        if remote is None:
            remote = self._remote_count(lo, hi)
        if remote == mirror:
            return 0
        if mirror <= LEAF_ROWS or hi - lo <= timedelta(minutes=1):
            return self._leaf(lo, hi)
        middle = lo + timedelta(minutes=math.floor((hi - lo).total_seconds() / 120))
        left_remote = self._remote_count(lo, middle)
        return self._walk(lo, middle, left_remote) + self._walk(middle, hi, remote - left_remote)

    def _leaf(self, lo: datetime, hi: datetime) -> int:
        """Read the range whole: refresh what is there, mark what is not."""
        sync = self.sync
        args = search_args(sync.obj, _range(sync, lo, hi))
        records: list[dict[str, Any]] = []
        scroll_id = 0
        while True:
            self.spent += 1
            page = sync.client.scroll_search(sync.obj.name, scroll_id, **args)
            records.extend(page.records)
            if len(page.records) < sync.client.page_size:
                break
            scroll_id = next_scroll_id(page.records, scroll_id, SCROLL_SEARCH)
        writer = sync.writer()
        with sync.ctx.engine.begin() as conn:
            result = sync.write(conn, writer, records)
            assert self.created is not None
            ids = conn.execute(sa.select(self.table.c.id).where(
                *self._live(), self.created >= lo, self.created < hi)).scalars().all()
            gone = sorted(set(ids) - set(result.seen_ids))
            enqueue_related(conn, sync.ctx.connection, sync.obj, gone)
            deleted = writer.mark_deleted(conn, gone, sync.ctx.run_id, guard=sync.ctx.delete_guard)
        sync.ctx.stats.add(result.stats)
        return deleted


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def full_id_pass(sync: ObjectSync) -> int:
    """Every remote id of the object, compared with the mirror's live ids."""
    client, obj = sync.client, sync.obj
    remote: set[int] = set()
    scroll_id = 0
    use_scroll = not obj.conditions
    while True:
        if use_scroll:
            page = client.scroll(obj.name, scroll_id, filter_id=obj.filter_id)
        else:
            page = client.scroll_search(obj.name, scroll_id, **search_args(obj))
        remote.update(r["id"] for r in page.records)
        if len(page.records) < client.page_size:
            break
        scroll_id = next_scroll_id(page.records, scroll_id, SCROLL if use_scroll else SCROLL_SEARCH)
    writer = sync.writer()
    with sync.ctx.engine.begin() as conn:
        gone = sorted(writer.live_ids(conn) - remote)
        enqueue_related(conn, sync.ctx.connection, sync.obj, gone)
        return writer.mark_deleted(conn, gone, sync.ctx.run_id, guard=sync.ctx.delete_guard)


def find_deletions(sync: ObjectSync, remote_total: int, full_pass: bool) -> int:
    if full_pass:
        return full_id_pass(sync)
    budget = max(1, math.ceil(remote_total / sync.client.page_size))
    return DeletionFinder(sync, budget).run(remote_total)
