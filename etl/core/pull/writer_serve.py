"""The writer process's side: the pipe protocol (length-prefixed pickles), and serving scans
(see writer_process for the whole design)."""

from __future__ import annotations

import contextlib
import gc
import io
import os
import pickle
import queue
import signal
import struct
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

import sqlalchemy as sa

from etl.core import log
from etl.core.errors import MirrorError
from etl.core.tuning import TUNING

Apply = Callable[[sa.Connection, Any], Any]  # one batch -> its answer, inside the batch's transaction


_HEADER = struct.Struct("!Q")


_GROUP = TUNING.writer_transaction_batches


_IDLE_COMMIT = TUNING.writer_idle_commit_seconds


_CACHE_MB = TUNING.writer_cache_mb


def pickled(message: Any) -> bytes:
    """`message` pickled in fast mode: no memo of every object pickled. Batches are trees of
    tuples and strings (no object appears twice, none refers back), and the memo was about half
    of the pickling time (100,000 ServiceGo records: about 0.4 s less CPU in the fetching process)."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True
    pickler.dump(message)
    return buffer.getvalue()


def send(stream: IO[bytes], message: Any) -> None:
    data = pickled(message)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _read_exactly(stream: IO[bytes], size: int) -> bytearray:
    """`size` bytes (an unbuffered stream may return fewer per read), or EOFError at the end."""
    data = bytearray(size)
    view, got = memoryview(data), 0
    while got < size:
        more = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not more:
            raise EOFError
        got += more
    return data


def receive(stream: IO[bytes]) -> Any:
    (size,) = _HEADER.unpack(_read_exactly(stream, _HEADER.size))
    return pickle.loads(_read_exactly(stream, size))


def loadable(exc: BaseException) -> BaseException:
    """The exception itself if it survives a pickle round trip, else a MirrorError with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return MirrorError(f"{type(exc).__name__}: {exc}")


def become_writer(keep: tuple[int, ...]) -> None:
    """Drop what the fork copied from the fetching process and the writer must not use: other
    descriptors (the mirror's connections, sockets, other processes' pipes, whose ends it would
    otherwise keep open), the standard streams' objects (a lock another thread held at the fork
    stays held in this copy) and Ctrl-C (the fetching process decides, see the top)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    listing = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"  # Linux, else BSD and macOS
    for name in os.listdir(listing):
        fd = int(name)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - the writer's for its life
    sys.stdout = sys.stderr = os.fdopen(os.dup(2), "w", buffering=1)


class Inbox:
    """The writer's end of the pipe, read by a thread of its own.

    The writer applies a batch for longer than the fetching process takes to send the next, and a
    pipe holds 64 KB: unread, a 1.4 MB batch kept the sender waiting, fetching nothing. The thread
    takes each message's bytes off the pipe as they come (reading releases the GIL); the writer
    unpickles them when it gets to them. What waits here is bounded by the sender's batches in
    flight (`_UNAPPLIED`).
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._messages: queue.SimpleQueue[bytearray | None] = queue.SimpleQueue()  # None: the pipe's end
        self._next: list[bytearray | None] = []  # a message taken by `waiting`, not yet received
        threading.Thread(target=self._read, args=(stream,), name="inbox", daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        try:
            while True:
                (size,) = _HEADER.unpack(_read_exactly(stream, _HEADER.size))
                self._messages.put(_read_exactly(stream, size))
        except (EOFError, OSError):
            self._messages.put(None)

    def waiting(self, seconds: float) -> bool:
        """Whether a next message arrives within `seconds`."""
        if not self._next:
            try:
                self._next.append(self._messages.get(timeout=seconds))
            except queue.Empty:
                return False
        return True

    def receive(self) -> Any:
        data = self._next.pop() if self._next else self._messages.get()
        if data is None:
            self._next.append(None)  # the end stays the end
            raise EOFError
        return pickle.loads(data)


def serve(inbox: Inbox, outbox: IO[bytes]) -> None:
    """The writer: scan after scan, read the set-up, then apply batches until None; return at the
    end of its input.

    Up to `_GROUP` batches share a transaction; it commits early when no next batch is waiting
    (a slow fetch, the scan's end), and each batch is answered after its commit. A fetching
    process that dies leaves the open transaction uncommitted: its batches' positions roll back
    with their rows, and a restarted run fetches them again.
    """
    from etl.core.mirror.db import open_engine

    engine: sa.Engine | None = None
    conn: sa.Connection | None = None
    current_url = ""
    try:
        while True:
            try:
                factory, spec, url, log_settings, secrets = inbox.receive()
            except EOFError:
                return  # the run is over (or its process is gone)
            log.configure(*log_settings)
            for secret in secrets:
                log.register_secret(secret)
            if url != current_url:
                if conn is not None:
                    conn.close()
                if engine is not None:
                    engine.dispose()
                # The pages a transaction dirties stay in memory until its commit instead of
                # spilling to the WAL one by one (README, Benchmarks: the writer's page cache)
                engine = open_engine(url, sqlite_cache_mb=_CACHE_MB)
                conn = engine.connect()
                current_url = url
            apply: Apply = factory(spec)
            # Batches are tuples and lists, freed by reference counting once written; the cycle
            # collector walking the imported modules' objects again and again cost the writer
            # about a sixth of its time. Those are frozen, and young objects are collected less often.
            gc.freeze()
            gc.set_threshold(20_000, 50, 50)
            assert conn is not None
            if not _serve_scan(inbox, outbox, conn, apply):
                return
    finally:
        if conn is not None:
            conn.close()
        if engine is not None:
            engine.dispose()


def _serve_scan(inbox: Inbox, outbox: IO[bytes], conn: sa.Connection, apply: Apply) -> bool:
    """Apply one scan's batches until its None; False when the writer must exit (the pipe's
    end, or an error it has reported)."""
    answers: list[Any] = []  # of the batches applied in the open transaction

    def commit() -> None:
        conn.commit()
        for answer in answers:
            send(outbox, ("ok", answer))
        answers.clear()

    try:
        while True:
            if answers and (len(answers) >= _GROUP or not inbox.waiting(_IDLE_COMMIT)):
                commit()
            try:
                batch = inbox.receive()
            except EOFError:
                return False  # the fetching process is gone: what is committed stays, nothing half-done does
            if batch is None:
                commit()
                return True
            try:
                answers.append(apply(conn, batch))  # in the open transaction (begun by its first statement)
                send(outbox, ("applied", None))  # the sender may send the next (see _UNAPPLIED)
            except BaseException as exc:  # noqa: BLE001 - reported to the fetching process, which raises it
                # the batches before it in this transaction roll back too: their positions with
                # their rows, so a restarted run fetches them again
                conn.rollback()
                send(outbox, ("error", loadable(exc)))
                return False
    except BaseException as exc:  # noqa: BLE001 - a failed commit: reported likewise
        with contextlib.suppress(Exception):
            conn.rollback()
        with contextlib.suppress(OSError):
            send(outbox, ("error", loadable(exc)))
        return False
