"""Who may run what: one copy of a job, and one process per account at a time, whatever the
number of processes; one scheduler per SQLite mirror.

An account's lease is what keeps its rate budget whole: every process keeps its own limiters, so
two processes syncing one account (a scheduler and a `desksync sync` typed meanwhile) would each
spend the whole budget, and EddyDesk blocks the account for 20 minutes. Their scans would also
interleave on the same cursors. The scheduler takes the lease for each job; a command run by hand
takes it for its run (`account_lease`) and is refused, naming the holder, while it is taken.

PostgreSQL: session-level advisory locks (`pg_try_advisory_lock`) for as long as the job (or the
account lease) lasts. They need no table, vanish with the session (a killed process frees its
locks at once), and work across machines sharing the database. A process holds all its locks on
one connection of its own: a connection per lock took the pool's connections two a job, and a
scheduler with dozens of accounts waited on its own pool.
A job whose lock is taken elsewhere is skipped this time, not queued: its next run comes anyway.
A lock session can drop while its jobs go on (the server restarted, a connection killed by an
administrator or an idle timeout): its locks are gone, and another process may take the account.
A watch thread asks the server every `CHECK_SECONDS` which locks the session still holds and
calls `on_lost` for each one gone; the account's limiters then refuse to send
(etl.core.http.ratelimit.RateLimiter.revoke), so the run ends instead of sharing the budget.
Locks need the session itself: connect PostgreSQL directly or through a session pooler, not a
transaction pooler (a pooler that hands the session's locks to other clients).

SQLite: an exclusive `flock` on a file beside the database (`<database>.locks/`), which the
kernel also frees when the process dies. The database file has one writer at a time anyway,
and a second scheduler would only wait on it: `<database>.scheduler.lock` makes the second one
refuse to start, naming the process that holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import sqlalchemy as sa

from etl.core.errors import AccountBusy, MirrorError
from etl.core.log import get_logger

# How often a PostgreSQL process checks that its lock session still holds its locks: a lease lost
# is seen within about a second (README, "A lease that drops"); the check also keeps the session
# from looking idle to an `idle_session_timeout`.
CHECK_SECONDS = 1.0


# This database's granted advisory locks (another mirror on the server has its own), and the key
# of one: a bigint key shows in pg_locks as its high (classid) and low (objid) halves.
_GRANTED_HERE = ("l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                 "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())")
_KEY_OF_LOCK = "((l.classid::bigint << 32) | l.objid::bigint)"


def pg_session_holding(conn: sa.Connection, kind: str, name: str) -> tuple[int, str | None] | None:
    """The PostgreSQL session (backend pid, client address) that holds a lock, if one does."""
    row = conn.execute(sa.text(
        "SELECT l.pid, (SELECT a.client_addr FROM pg_stat_activity a WHERE a.pid = l.pid) FROM pg_locks l "
        f"WHERE {_GRANTED_HERE} AND {_KEY_OF_LOCK} = :k"), {"k": advisory_key(kind, name)}).first()
    return None if row is None else (int(row[0]), None if row[1] is None else str(row[1]))


def advisory_key(kind: str, name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock."""
    digest = hashlib.blake2b(f"desksync:{kind}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _try_flock(path: Path) -> IO[str] | None:
    """The open, exclusively locked file (our pid written in it), or None when another holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 (held open for as long as the lock)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


class SchedulerFileLock:
    """Exclusive for the process lifetime: a second scheduler on one SQLite file refuses to start."""

    def __init__(self, database: str) -> None:
        self.path = Path(f"{database}.scheduler.lock")
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self._file = _try_flock(self.path)
        if self._file is None:
            holder = self.path.read_text().strip() or "another process"
            raise MirrorError(
                f"another desksync scheduler ({holder}) is already running on the SQLite mirror {self.path.stem}; "
                "SQLite takes one scheduler per file (use PostgreSQL to run several)"
            )

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


Held = IO[str] | None  # what keeps a lock on SQLite: a locked file (PostgreSQL: the process's lock session)


@dataclass
class _Lock:
    kind: str
    name: str
    count: int  # holders in this process (an account's jobs share its lease)
    held: Held


class AdvisoryLocks:
    """Try-locks for jobs and account leases (reference-counted within the process).
    `on_lost(kind, name)` is called (from the watch thread) for each lock its session lost."""

    def __init__(self, engine: sa.Engine, on_lost: Callable[[str, str], None] | None = None) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        # an in-memory SQLite database lives in one process: nothing to share, nothing to lock
        self.folder = Path(f"{database}.locks") if database and database != ":memory:" else None
        self.on_lost = on_lost
        self._held: dict[int, _Lock] = {}
        self._lock = threading.Lock()
        self._session: sa.Connection | None = None  # PostgreSQL: the one that holds this process's locks
        self._closed = threading.Event()
        self._watch: threading.Thread | None = None

    def _pg_session(self) -> sa.Connection:
        if self._session is None or self._session.closed or self._session.invalidated:
            self._session = self.engine.connect()
        return self._session

    def _pg(self, sql: str, key: int) -> bool:
        """Run an advisory lock function on the lock session (the caller holds `_lock`). A session
        found dropped is replaced once: the locks it held went with it, and `check` reports them."""
        try:
            return self._pg_once(sql, key)
        except sa.exc.DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            self._drop_session()
            return self._pg_once(sql, key)

    def _pg_once(self, sql: str, key: int) -> bool:
        session = self._pg_session()
        got = bool(session.execute(sa.text(sql), {"k": key}).scalar())
        session.commit()
        return got

    def _lock_file(self, key: int) -> Path:
        assert self.folder is not None
        return self.folder / f"{key & 0xFFFF_FFFF_FFFF_FFFF:016x}.lock"

    def try_acquire(self, kind: str, name: str) -> bool:
        key = advisory_key(kind, name)
        with self._lock:
            taken = self._held.get(key)
            if taken is not None and kind == "account":
                taken.count += 1
                return True
            if taken is not None:
                return False  # a job runs once per process too (APScheduler's max_instances)
            held: Held = None
            if self.postgres:
                if not self._pg("SELECT pg_try_advisory_lock(:k)", key):
                    return False
                self._start_watch()
            elif self.folder is not None:
                held = _try_flock(self._lock_file(key))
                if held is None:
                    return False
            self._held[key] = _Lock(kind, name, 1, held)
            return True

    def holder(self, kind: str, name: str) -> str:
        """Who holds a lock this process could not take, as far as the database can tell."""
        key = advisory_key(kind, name)
        if self.postgres:
            with self.engine.connect() as conn:
                session = pg_session_holding(conn, kind, name)
            if session is None:
                return "another desksync process"
            where = f" on {session[1]}" if session[1] else ""
            return f"another desksync process (PostgreSQL session {session[0]}{where})"
        if self.folder is not None:
            try:
                text = self._lock_file(key).read_text().strip()
            except OSError:
                text = ""
            return f"another desksync process ({text})" if text else "another desksync process"
        return "another desksync process"

    def release(self, kind: str, name: str) -> None:
        key = advisory_key(kind, name)
        with self._lock:
            taken = self._held.pop(key, None)  # None: a lock its session lost (nothing to free)
            if taken is None:
                return
            if taken.count > 1:
                taken.count -= 1
                self._held[key] = taken
            elif self.postgres:
                self._pg("SELECT pg_advisory_unlock(:k)", key)
            elif taken.held is not None:
                fcntl.flock(taken.held, fcntl.LOCK_UN)
                taken.held.close()

    # -- a lost lock session -------------------------------------------------------------------
    def _start_watch(self) -> None:
        if self._watch is None:
            self._watch = threading.Thread(target=self._watch_locks, name="desksync-lock-watch", daemon=True)
            self._watch.start()

    def _watch_locks(self) -> None:
        while not self._closed.wait(CHECK_SECONDS):
            self.check()

    def check(self) -> list[tuple[str, str]]:
        """The locks (kind, name) the session no longer holds, forgotten here and passed to
        `on_lost`; a session that answers nothing has lost them all."""
        with self._lock:
            if not self.postgres or not self._held:
                return []
            try:
                session = self._pg_session()
                keys = set(session.execute(sa.text(
                    f"SELECT {_KEY_OF_LOCK} FROM pg_locks l WHERE {_GRANTED_HERE} AND l.pid = pg_backend_pid()"
                )).scalars())
                session.commit()
            except sa.exc.DBAPIError as exc:
                get_logger(component="locks").warning("lock_session_failed", error=str(exc.orig).strip())
                self._drop_session()
                keys = set()
            lost = [self._held.pop(key) for key in list(self._held) if key not in keys]
        for taken in lost:
            get_logger(component="locks").error("lock_lost", kind=taken.kind, name=taken.name)
            if self.on_lost is not None:
                self.on_lost(taken.kind, taken.name)
        return [(taken.kind, taken.name) for taken in lost]

    def _drop_session(self) -> None:
        if self._session is not None:
            with contextlib.suppress(sa.exc.DBAPIError):  # a dead connection may refuse even that
                self._session.invalidate()
            self._session = None

    def close(self) -> None:
        """Free every lock this process still holds (its session ends)."""
        self._closed.set()
        with self._lock:
            for taken in self._held.values():
                if taken.held is not None:
                    fcntl.flock(taken.held, fcntl.LOCK_UN)
                    taken.held.close()
            self._held.clear()
            if self._session is not None:
                self._session.close()
                self._session = None


@contextmanager
def account_lease(engine: sa.Engine, connection: str, on_lost: Callable[[], None]) -> Iterator[None]:
    """Hold `connection`'s account for a run started by hand; refused while another process
    (a scheduler's job, another command) holds it. `on_lost` is called if the lease is lost."""
    locks = AdvisoryLocks(engine, lambda kind, name: on_lost())
    if not locks.try_acquire("account", connection):
        raise AccountBusy(connection, locks.holder("account", connection))
    try:
        yield
    finally:
        locks.release("account", connection)
        locks.close()
