"""Write a long scan in a process of its own, so that fetching and writing use two cores.

Python runs one thread at a time: in one process the fetch threads and the writer share a
core, and a backfill is bound by it (README, Benchmarks). For a scan of many pages the fetching
process sends each batch of pages, already packed into driver-ready tuples, to a writer process
instead. The writer binds and runs them, each batch with the scan position it covers, exactly
as the in-process writer does (the same `Apply` function runs in either); a few batches share a
transaction (see `_GROUP`), and each is answered with what it wrote once it is committed.

Kill safety is unchanged: a batch's rows commit with its position. If the fetching process dies,
the writer reads the end of its pipe and exits; the transaction it had open commits whole or
not at all, and a restarted run that reads an older position re-reads those pages (an
unchanged record is only touched). Ctrl-C reaches the whole process group: the writer
ignores it and lets the fetching process decide (it stops fetching and lets the writer finish
the batches it already has).

One process serves a whole run, scan after scan (RunContext.writer_process): it is started
when the first long scan knows it is long (its first page gives the page count) and imports
while the fetching process plans. Its start costs about a second of CPU, paid once per run
instead of once per stream or object. The protocol on its stdin and stdout: length-prefixed
pickles. Per scan, the set-up (the factory's name and its picklable spec, the mirror URL,
logging), then one message per batch, then None (commit now, the scan is over); each batch is
answered by ("ok", answer) or ("error", exception). The end of its stdin lets it exit.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import io
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, Any, NoReturn

import sqlalchemy as sa

from etl import log
from etl.errors import MirrorError

Apply = Callable[[sa.Connection, Any], Any]  # one batch -> its answer, inside the batch's transaction
Answered = Callable[[Any], None]

_HEADER = struct.Struct("!Q")
# Batches per writer transaction. The mirror's indexes on parent ids (child rows, the pending
# queue) take rows in random order: every commit rewrites about all of their pages, so commits
# that are too frequent make the writing quadratic (100,000 tickets in transactions of 64 pages:
# 1.1 GB written for a 220 MB database).
_GROUP = 4
_IDLE_COMMIT = 0.2  # seconds without a next batch: the writer commits what it has applied
_CACHE_MB = 16  # SQLite page cache of the writer's connection
_IN_FLIGHT = _GROUP + 2  # batches sent and not yet answered (answers come after their commit)


class WriterFailed(MirrorError):
    """The writer process stopped without answering (killed, or crashed before it could say why)."""


def pickled(message: Any) -> bytes:
    """`message` pickled in fast mode: no memo of every object pickled. Batches are trees of
    tuples and strings (no object appears twice, none refers back), and the memo was about half
    of the pickling time (100,000 ServiceGo records: about 0.4 s less CPU in the fetching process)."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True
    pickler.dump(message)
    return buffer.getvalue()


def _send(stream: IO[bytes], message: Any) -> None:
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


def _receive(stream: IO[bytes]) -> Any:
    (size,) = _HEADER.unpack(_read_exactly(stream, _HEADER.size))
    return pickle.loads(_read_exactly(stream, size))


def _loadable(exc: BaseException) -> BaseException:
    """The exception itself if it survives a pickle round trip, else a MirrorError with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return MirrorError(f"{type(exc).__name__}: {exc}")


class WriterProcess:
    """The fetching side: sends batches, hands each answer to its callback, in order, once the
    batch is committed."""

    def __init__(self, module: str) -> None:
        """Start a writer that imports `module` (where the first factory is) while it waits."""
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "etl.extract.write_process", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._to, self._from = self._proc.stdin, self._proc.stdout
        self._waiting: deque[Answered] = deque()
        self._ended = False  # the writer said it failed, or vanished, or was closed

    @property
    def usable(self) -> bool:
        """Whether it can take another scan."""
        return not self._ended and self._proc.poll() is None

    def begin(self, factory: str, spec: Any, mirror_url: str) -> None:
        """Start a scan: `factory(spec)` (factory is "module.function") gives the function applying its batches."""
        self._send((factory, spec, mirror_url, log.current_settings(), log.known_secrets()))

    @contextlib.contextmanager
    def scan(self, factory: str, spec: Any, mirror_url: str) -> Iterator[WriterProcess]:
        """`begin`, then `finish` when the block ends. After an error or a stop the writer still
        commits what was fetched (it is good), then exits: the next scan gets a new one."""
        self.begin(factory, spec, mirror_url)
        try:
            yield self
        except BaseException as exc:
            if not self._ended and not isinstance(exc, KeyboardInterrupt):
                try:
                    self.finish()
                except BaseException as late:  # noqa: BLE001 - the first error is the one to report
                    log.get_logger().warning("writer_finish_failed", error=str(late))
            self.kill()
            raise
        self.finish()

    def _send(self, message: Any) -> None:
        try:
            _send(self._to, message)
        except (BrokenPipeError, OSError):
            self._failed()

    def _failed(self) -> NoReturn:
        """The pipe broke: take the answers the writer left (its error, if it sent one), then say so."""
        self._ended = True
        while self._waiting:
            try:
                kind, payload = _receive(self._from)
            except (EOFError, OSError):
                break
            if kind == "error":
                raise payload
            self._waiting.popleft()(payload)
        code = self._proc.wait()
        raise WriterFailed(f"the mirror's writer process ended unexpectedly (exit status {code})")

    def _collect(self) -> None:
        try:
            kind, payload = _receive(self._from)
        except EOFError:
            self._failed()
        if kind == "error":
            self._ended = True
            raise payload
        self._waiting.popleft()(payload)

    def submit(self, batch: Any, answered: Answered) -> None:
        """Send a batch; `answered` gets the writer's answer once the batch is committed."""
        self._send(batch)
        self._waiting.append(answered)
        while len(self._waiting) > _IN_FLIGHT:
            self._collect()

    def finish(self) -> None:
        """End the scan: the writer commits at once, and every batch sent is answered."""
        self._send(None)
        while self._waiting:
            self._collect()

    def close(self) -> None:
        """Let the writer exit (after `finish` it holds nothing uncommitted) and release the pipes."""
        if self.usable:
            with contextlib.suppress(OSError):
                self._to.close()
            with contextlib.suppress(subprocess.TimeoutExpired):  # then killed
                self._proc.wait(timeout=30)
        self.kill()
        for pipe in (self._to, self._from):
            with contextlib.suppress(OSError):  # unsent bytes to a writer that is gone
                pipe.close()

    def kill(self) -> None:
        self._ended = True
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


class _Inbox:
    """The writer's end of the pipe, read by a thread of its own.

    The writer applies a batch for longer than the fetching process takes to send the next, and a
    pipe holds 64 KB: unread, a 1.4 MB batch kept the sender waiting, fetching nothing. The thread
    takes each message's bytes off the pipe as they come (reading releases the GIL); the writer
    unpickles them when it gets to them. What waits here is bounded by the sender's batches in
    flight (`_IN_FLIGHT`).
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


def _child() -> None:
    """The writer: scan after scan, read the set-up, then apply batches until None; exit at the
    end of its stdin.

    Up to `_GROUP` batches share a transaction; it commits early when no next batch is waiting
    (a slow fetch, the scan's end), and each batch is answered after its commit. A fetching
    process that dies leaves the open transaction uncommitted: its batches' positions roll back
    with their rows, and a restarted run fetches them again.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    importlib.import_module(sys.argv[1])  # while the fetching process plans the scan
    inbox = _Inbox(os.fdopen(os.dup(0), "rb", buffering=0))
    # the protocol owns stdout: anything else printed goes to stderr
    outbox = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    from etl.mirror.db import open_engine

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
                # spilling to the WAL one by one (100,000 tickets: writer CPU about 11 -> 7 s
                # with _GROUP, 643 MB written, not 1.1 GB)
                engine = open_engine(url, sqlite_cache_mb=_CACHE_MB)
                conn = engine.connect()
                current_url = url
            module, _, name = factory.rpartition(".")
            apply: Apply = getattr(importlib.import_module(module), name)(spec)
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


def _serve_scan(inbox: _Inbox, outbox: IO[bytes], conn: sa.Connection, apply: Apply) -> bool:
    """Apply one scan's batches until its None; False when the writer must exit (the pipe's
    end, or an error it has reported)."""
    answers: list[Any] = []  # of the batches applied in the open transaction

    def commit() -> None:
        conn.commit()
        for answer in answers:
            _send(outbox, ("ok", answer))
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
            except BaseException as exc:  # noqa: BLE001 - reported to the fetching process, which raises it
                # the batches before it in this transaction roll back too: their positions with
                # their rows, so a restarted run fetches them again
                conn.rollback()
                _send(outbox, ("error", _loadable(exc)))
                return False
    except BaseException as exc:  # noqa: BLE001 - a failed commit: reported likewise
        with contextlib.suppress(Exception):
            conn.rollback()
        with contextlib.suppress(OSError):
            _send(outbox, ("error", _loadable(exc)))
        return False


if __name__ == "__main__":
    _child()
