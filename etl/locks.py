"""Who may run what: one scheduler per SQLite mirror; on PostgreSQL, one copy of a job and one
process per account at a time, whatever the number of scheduler processes or machines.

PostgreSQL: session-level advisory locks (`pg_try_advisory_lock`) held on a dedicated connection
for as long as the job (or the account lease) lasts. They need no table, vanish with the session
(a killed scheduler frees its locks at once), and work across machines sharing the database.
A job whose lock is taken elsewhere is skipped this time, not queued: its next run comes anyway.

SQLite: the database file has one writer at a time anyway, and a second scheduler would only
wait on it; an exclusive `flock` on `<database>.scheduler.lock` makes the second one refuse to
start, naming the process that holds it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from pathlib import Path
from typing import IO

import sqlalchemy as sa

from etl.errors import MirrorError


def advisory_key(kind: str, name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock."""
    digest = hashlib.blake2b(f"desksync:{kind}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class SchedulerFileLock:
    """Exclusive for the process lifetime: a second scheduler on one SQLite file refuses to start."""

    def __init__(self, database: str) -> None:
        self.path = Path(f"{database}.scheduler.lock")
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        handle = open(self.path, "a+")  # noqa: SIM115 (held open for the process lifetime)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise MirrorError(
                f"another desksync scheduler ({holder}) is already running on the SQLite mirror {self.path.stem}; "
                "SQLite takes one scheduler per file (use PostgreSQL to run several)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class AdvisoryLocks:
    """Try-locks for jobs and account leases (reference-counted within the process)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self._held: dict[int, tuple[int, sa.Connection | None]] = {}
        self._lock = threading.Lock()

    def try_acquire(self, kind: str, name: str) -> bool:
        key = advisory_key(kind, name)
        with self._lock:
            count, conn = self._held.get(key, (0, None))
            if count and kind == "account":
                self._held[key] = (count + 1, conn)
                return True
            if count:
                return False  # a job runs once per process too (APScheduler's max_instances)
            if self.postgres:
                conn = self.engine.connect()
                got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
                conn.commit()
                if not got:
                    conn.close()
                    return False
            self._held[key] = (1, conn)
            return True

    def release(self, kind: str, name: str) -> None:
        key = advisory_key(kind, name)
        with self._lock:
            count, conn = self._held.pop(key, (0, None))
            if count > 1:
                self._held[key] = (count - 1, conn)
                return
            if conn is not None:
                try:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
                finally:
                    conn.close()
