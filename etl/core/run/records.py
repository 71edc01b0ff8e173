"""A run's record in the mirror (sync_runs), the account's recorded blocks, and what runs share."""

from __future__ import annotations

import gc
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from etl.core.config import ConnectionSettings
from etl.core.connector import Client, connector_of
from etl.core.errors import DesksyncError, RateLimitBlocked, Stopped
from etl.core.http.ratelimit import RateLimiter
from etl.core.mirror.base import table_of
from etl.core.mirror.meta import AccountBlock, SyncRun
from etl.core.run.locks import account_lease

RUNS = table_of(SyncRun)
BLOCKS = table_of(AccountBlock)


def start_run(engine: sa.Engine, connection: str, kind: str, streams: list[str], job: str | None) -> int:
    """A run's sync_runs row, "running" until `end_run`.

    A run starts only under its account's lease (etl.core.run.locks), so any other run of the account still
    "running" belongs to a process that ended without finishing it (killed, or its machine lost):
    it is marked "abandoned" here, with who ran it. Runs of this very process are left alone.
    """
    host, pid = socket.gethostname(), os.getpid()
    with engine.begin() as conn:
        conn.execute(RUNS.update().where(
            RUNS.c.connection == connection, RUNS.c.status == "running",
            sa.not_(sa.and_(RUNS.c.host == host, RUNS.c.pid == pid))).values(
            status="abandoned", finished_at=datetime.now(UTC),
            error=sa.literal("abandoned: its process (") + sa.func.coalesce(RUNS.c.host, "?") + sa.literal(", pid ")
            + sa.func.coalesce(sa.cast(RUNS.c.pid, sa.String), "?")
            + sa.literal(") ended without finishing it; the next run resumed from its checkpoint")))
        return int(conn.execute(RUNS.insert().values(
            connection=connection, kind=kind, started_at=datetime.now(UTC), status="running", streams=streams,
            job=job, host=host, pid=pid,
        )).inserted_primary_key[0])  # type: ignore[index]


@dataclass
class Ending:
    """How a recorded run ended: "ok" once its work is done, or what `_ending` saw end it."""

    status: str = "failed"
    error: str | None = None


@contextmanager
def watch_ending(ending: Ending) -> Iterator[None]:
    try:
        yield
    except (Stopped, KeyboardInterrupt):
        ending.status = "interrupted"
        raise
    except DesksyncError as exc:
        ending.error = str(exc)
        raise


def end_run(engine: sa.Engine, run_id: int, status: str, error: str | None, **counts: Any) -> None:
    with engine.begin() as conn:
        conn.execute(RUNS.update().where(RUNS.c.id == run_id).values(
            finished_at=datetime.now(UTC), status=status, error=error, **counts))


def ensure_own_tables(engine: sa.Engine, settings: ConnectionSettings) -> None:
    """Create the tables a connector keeps outside the Alembic history, where they are missing."""
    own = connector_of(settings).own_tables
    if own is None:
        return
    for table in own():
        table.create(engine, checkfirst=True)


def check_blocks(engine: sa.Engine, connection: str, client: Client) -> None:
    """Carry blocks recorded by earlier runs into this run's limiters."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(BLOCKS).where(BLOCKS.c.connection == connection)).mappings().all()
    for row in rows:
        until = row["blocked_until"]
        if until.tzinfo is None:
            until = until.replace(tzinfo=UTC)
        limiter = client.session.limiters.get(row["budget"])
        if limiter is not None and until > datetime.now(UTC):
            limiter.block_until_wall_time(until.timestamp())


def save_block(engine: sa.Engine, connection: str, exc: RateLimitBlocked) -> None:
    until = datetime.fromtimestamp(exc.blocked_until, UTC)
    with engine.begin() as conn:
        conn.execute(BLOCKS.delete().where(BLOCKS.c.connection == connection, BLOCKS.c.budget == exc.budget))
        conn.execute(BLOCKS.insert().values(connection=connection, budget=exc.budget, blocked_until=until, reason=str(exc)))


def own_account(engine: sa.Engine, connection: str,
                 limiters: dict[str, RateLimiter] | None) -> AbstractContextManager[None]:
    """A run given no limiters holds the account's lease for its length (etl.core.run.locks: refused while
    another process spends the account's budget); one given the scheduler's limiters runs under
    the lease its job holds."""
    return nullcontext() if limiters is not None else account_lease(engine, connection)


_frozen_by_runs = 0  # runs of this process inside `long_lived_objects_frozen`
_frozen_lock = threading.Lock()


@contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    """Keep the cycle collector off what lives for the whole run (modules, settings, engine).

    A scan allocates containers by the million; each young-generation collection that ends in an
    older one walked every imported module's objects again (README, How a sync works). Frozen objects are still freed by reference counting. Where runs share the
    process (the scheduler), the first to start collects and freezes and the last to end
    unfreezes: a full collection at every run's start stopped every other run's threads (with
    many accounts, often), and an unfreeze at one run's end undid the others'.
    """
    global _frozen_by_runs
    with _frozen_lock:
        if _frozen_by_runs == 0:
            gc.collect()
            gc.freeze()
        _frozen_by_runs += 1
    try:
        yield
    finally:
        with _frozen_lock:
            _frozen_by_runs -= 1
            if _frozen_by_runs == 0:
                gc.unfreeze()  # back to the collector, for a long-lived process
