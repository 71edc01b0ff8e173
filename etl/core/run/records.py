"""A run's record in the mirror (sync_runs), the account's recorded blocks, and what runs share."""

from __future__ import annotations

import gc
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from etl.core.config import ConnectionSettings
from etl.core.connector import Client, connector_of
from etl.core.errors import DesksyncError, RateLimitBlocked, Stopped
from etl.core.http.ratelimit import RateLimiter
from etl.core.log import get_logger
from etl.core.mirror.base import table_of
from etl.core.mirror.db import open_engine
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


SAVE_SECONDS = 1.0  # how stale the account's saved minute may be when its holder dies or loses the lease


class AccountUse:
    """A run's part in the account's budget as it passes from one lease holder to the next.

    On entering, the run's limiters take what earlier holders left: the blocks a server
    reported, and the requests sent within the budget's window (another process, perhaps on
    another machine, held the lease just before: its minute is this run's minute too). While the
    run goes on, its own recent requests are saved every `SAVE_SECONDS` (by its process's
    `_SendsKeeper`), and once more at its end: a holder killed (SIGKILL) or cut from its lease
    (etl.core.run.locks) has left its minute at most that stale for whoever takes the account next.
    """

    def __init__(self, engine: sa.Engine, connection: str, client: Client) -> None:
        self.engine = engine
        self.connection = connection
        self.limiters = _limiters_of(client)
        self._saving = threading.Lock()  # the keeper's save and the final one, one after the other
        self._saved: dict[str, list[float]] | None = None

    def __enter__(self) -> AccountUse:
        self._carry()
        if (keeper := _keeper_of(self.engine)) is not None:
            keeper.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if (keeper := _keeper_of(self.engine)) is not None:
            keeper.discard(self)
        self.save(self.engine)

    def _carry(self) -> None:
        with self.engine.connect() as conn:
            blocks = conn.execute(sa.select(BLOCKS).where(BLOCKS.c.connection == self.connection)).mappings().all()
            sends = conn.execute(sa.select(SENDS).where(SENDS.c.connection == self.connection,
                                                        SENDS.c.holder != this_process())).mappings().all()
        for row in blocks:
            until = stored_utc(row["blocked_until"])
            limiter = self.limiters.get(row["budget"])
            if limiter is not None and until > datetime.now(UTC):
                limiter.block_until_wall_time(until.timestamp())
        for row in sends:
            limiter = self.limiters.get(row["budget"])
            if limiter is not None:
                limiter.carry_sends(row["sent"])

    def save(self, engine: sa.Engine) -> None:
        """Leave the account's recent requests for whoever holds its lease next (nothing is
        written while they are what was saved last)."""
        with self._saving:
            recent = {name: limiter.recent_sends() for name, limiter in self.limiters.items()}
            if recent == self._saved:
                return
            with engine.begin() as conn:
                for budget, sent in recent.items():
                    conn.execute(SENDS.delete().where(SENDS.c.connection == self.connection, SENDS.c.budget == budget))
                    if sent:
                        conn.execute(SENDS.insert().values(connection=self.connection, budget=budget, sent=sent,
                                                           holder=this_process(), saved_at=datetime.now(UTC)))
            self._saved = recent


class _SendsKeeper:
    """Saves the sends of every account in use in this process, every `SAVE_SECONDS`, on one
    connection of its own: a connection (and thread) a run would cost each of 50 accounts'
    runs a SQLite connection's schema and page cache. It stops, its connection closed, as the
    last account in use ends: a process may fork a writer once its runs are over (etl.core.pull.
    writer_process), and a SQLite connection open across a fork breaks the child's."""

    def __init__(self, url: sa.engine.URL) -> None:
        self.url = url
        self.uses: set[AccountUse] = set()
        self.lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def add(self, use: AccountUse) -> None:
        with self.lock:
            self.uses.add(use)
            if self._thread is None:
                self._wake = threading.Event()
                self._thread = threading.Thread(target=self._keep, args=(self._wake,), name="desksync-account-sends",
                                                daemon=True)
                self._thread.start()

    def discard(self, use: AccountUse) -> None:
        with self.lock:
            self.uses.discard(use)
            if self.uses or self._thread is None:
                return
            thread, self._thread = self._thread, None
            self._wake.set()
        thread.join()

    def _keep(self, wake: threading.Event) -> None:
        engine: sa.Engine | None = None
        try:
            while not wake.wait(SAVE_SECONDS):
                with self.lock:
                    uses = list(self.uses)
                engine = engine or open_engine(self.url.render_as_string(hide_password=False))
                for use in uses:
                    try:
                        use.save(engine)
                    except sa.exc.SQLAlchemyError as exc:  # the run meets the database's trouble itself
                        get_logger(connection=use.connection).warning("account_sends_not_saved", error=str(exc))
        finally:
            if engine is not None:
                engine.dispose()


_KEEPERS: dict[str, _SendsKeeper] = {}
_KEEPERS_LOCK = threading.Lock()


def _keeper_of(engine: sa.Engine) -> _SendsKeeper | None:
    """None for an in-memory SQLite mirror: it lives in one process, with no next holder to save for."""
    if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
        return None
    key = engine.url.render_as_string(hide_password=False)
    with _KEEPERS_LOCK:
        return _KEEPERS.setdefault(key, _SendsKeeper(engine.url))


def save_block(engine: sa.Engine, connection: str, exc: RateLimitBlocked) -> None:
    until = datetime.fromtimestamp(exc.blocked_until, UTC)
    with engine.begin() as conn:
        conn.execute(BLOCKS.delete().where(BLOCKS.c.connection == connection, BLOCKS.c.budget == exc.budget))
        conn.execute(BLOCKS.insert().values(connection=connection, budget=exc.budget, blocked_until=until, reason=str(exc)))


def new_limiters(settings: ConnectionSettings) -> dict[str, RateLimiter]:
    """An account's rate budgets; the scheduler hands one set to every job of the account."""
    return connector_of(settings).new_limiters(settings)


def revoke(limiters: dict[str, RateLimiter], connection: str) -> None:
    """The account's lease is lost: its limiters refuse every further send."""
    why = (f"connection {connection!r}: the database session holding this process's lease on the account "
           "dropped, and another process may be using the account now; this run stops sending (the next one "
           "takes the lease again)")
    for limiter in limiters.values():
        limiter.revoke(why)


@contextmanager
def own_account(engine: sa.Engine, connection: str, settings: ConnectionSettings,
                limiters: dict[str, RateLimiter] | None) -> Iterator[dict[str, RateLimiter]]:
    """The limiters a run sends through. Given the scheduler's, the run is under the lease its job
    holds (etl.core.run.runner). Given none, the run holds the account's lease for its length
    (etl.core.run.locks: refused while another process spends the account's budget), with new
    limiters that the lease revokes if it is lost."""
    if limiters is not None:
        yield limiters
        return
    own = new_limiters(settings)
    with account_lease(engine, connection, lambda: revoke(own, connection)):
        yield own


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
