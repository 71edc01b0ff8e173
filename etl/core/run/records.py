"""A run's record in the mirror (sync_runs), the account's recorded blocks, and what runs share."""

from __future__ import annotations

import gc
import os
import socket
import threading
import time
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
from etl.core.mirror.meta import AccountBlock, AccountSends, SyncRun
from etl.core.mirror.normalize import stored_utc
from etl.core.run.locks import account_lease
from etl.core.run.tasks import current_task

RUNS = table_of(SyncRun)
BLOCKS = table_of(AccountBlock)
SENDS = table_of(AccountSends)


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
            job=job, host=host, pid=pid, task_id=current_task.get(),
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


def _limiters_of(client: Client) -> dict[str, RateLimiter]:
    return {name: limiter for session in client.sessions() for name, limiter in session.limiters.items()}


def this_process() -> str:
    """Who saved an account's sends: host, pid and the process's start, so that a reused pid is
    not taken for the process that saved them."""
    return f"{socket.gethostname()}:{os.getpid()}:{_STARTED.setdefault(os.getpid(), time.time_ns())}"


_STARTED: dict[int, int] = {}


def carry_account_use(engine: sa.Engine, connection: str, client: Client) -> None:
    """Carry what earlier processes left of the account into this run's limiters: the blocks a
    server reported, and the requests sent within the budget's window (another process, perhaps
    on another machine, held the lease just before: its minute is this run's minute too)."""
    limiters = _limiters_of(client)
    with engine.connect() as conn:
        blocks = conn.execute(sa.select(BLOCKS).where(BLOCKS.c.connection == connection)).mappings().all()
        sends = conn.execute(sa.select(SENDS).where(SENDS.c.connection == connection,
                                                    SENDS.c.holder != this_process())).mappings().all()
    for row in blocks:
        until = stored_utc(row["blocked_until"])
        limiter = limiters.get(row["budget"])
        if limiter is not None and until > datetime.now(UTC):
            limiter.block_until_wall_time(until.timestamp())
    for row in sends:
        limiter = limiters.get(row["budget"])
        if limiter is not None:
            limiter.carry_sends(row["sent"])


def save_account_use(engine: sa.Engine, connection: str, client: Client) -> None:
    """Leave the account's recent requests for whoever holds its lease next (`carry_account_use`)."""
    recent = {name: limiter.recent_sends() for name, limiter in _limiters_of(client).items()}
    with engine.begin() as conn:
        for budget, sent in recent.items():
            conn.execute(SENDS.delete().where(SENDS.c.connection == connection, SENDS.c.budget == budget))
            if sent:
                conn.execute(SENDS.insert().values(connection=connection, budget=budget, sent=sent,
                                                   holder=this_process(), saved_at=datetime.now(UTC)))


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
