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

SQLite: an exclusive `flock` on a file beside the database (`<database>.locks/`), which the
kernel also frees when the process dies. The database file has one writer at a time anyway,
and a second scheduler would only wait on it: `<database>.scheduler.lock` makes the second one
refuse to start, naming the process that holds it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import sqlalchemy as sa

from etl.core.errors import AccountBusy, MirrorError


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


class AdvisoryLocks:
    """Try-locks for jobs and account leases (reference-counted within the process)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        # an in-memory SQLite database lives in one process: nothing to share, nothing to lock
        self.folder = Path(f"{database}.locks") if database and database != ":memory:" else None
        self._held: dict[int, tuple[int, Held]] = {}
        self._lock = threading.Lock()
        self._session: sa.Connection | None = None  # PostgreSQL: the one that holds this process's locks

    def _pg_session(self) -> sa.Connection:
        if self._session is None or self._session.closed or self._session.invalidated:
            self._session = self.engine.connect()
        return self._session

    def _pg(self, sql: str, key: int) -> bool:
        """Run an advisory lock function on the lock session (the caller holds `_lock`)."""
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
            count, held = self._held.get(key, (0, None))
            if count and kind == "account":
                self._held[key] = (count + 1, held)
                return True
            if count:
                return False  # a job runs once per process too (APScheduler's max_instances)
            if self.postgres:
                if not self._pg("SELECT pg_try_advisory_lock(:k)", key):
                    return False
            elif self.folder is not None:
                held = _try_flock(self._lock_file(key))
                if held is None:
                    return False
            self._held[key] = (1, held)
            return True

    def holder(self, kind: str, name: str) -> str:
        """Who holds a lock this process could not take, as far as the database can tell."""
        key = advisory_key(kind, name)
        if self.postgres:
            with self.engine.connect() as conn:
                # a bigint key shows in pg_locks as its high (classid) and low (objid) halves
                row = conn.execute(sa.text(
                    "SELECT a.pid, a.client_addr FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                    "AND l.objsubid = 1 AND ((l.classid::bigint << 32) | l.objid::bigint) = :k"
                ), {"k": key}).first()
            if row is None:
                return "another desksync process"
            where = f" on {row[1]}" if row[1] else ""
            return f"another desksync process (PostgreSQL session {row[0]}{where})"
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
            count, held = self._held.pop(key, (0, None))
            if count > 1:
                self._held[key] = (count - 1, held)
                return
            if self.postgres and count:
                self._pg("SELECT pg_advisory_unlock(:k)", key)
            elif held is not None:
                fcntl.flock(held, fcntl.LOCK_UN)
                held.close()


    def close(self) -> None:
        """Free every lock this process still holds (its session ends)."""
        with self._lock:
            for _, held in self._held.values():
                if held is not None:
                    fcntl.flock(held, fcntl.LOCK_UN)
                    held.close()
            self._held.clear()
            if self._session is not None:
                self._session.close()
                self._session = None


@contextmanager
def account_lease(engine: sa.Engine, connection: str) -> Iterator[None]:
    """Hold `connection`'s account for a run started by hand; refused while another process
    (a scheduler's job, another command) holds it."""
    locks = AdvisoryLocks(engine)
    if not locks.try_acquire("account", connection):
        raise AccountBusy(connection, locks.holder("account", connection))
    try:
        yield
    finally:
        locks.release("account", connection)
        locks.close()
