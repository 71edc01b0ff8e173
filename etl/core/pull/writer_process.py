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

One process serves a whole run, scan after scan (RunContext.writer_process). It is forked by
`desksync sync` before the run opens the mirror, when the connection's budget lets fetching
outrun one process (etl.core.pull.context.writer_process_pays): it starts at once with every
module imported, and the pages neither side writes to stay shared, so the run pays its
imports once (README, Benchmarks). The scheduler, whose runs share one process with their
threads and connections, never forks one: its runs write in-process. The writer drops what it
inherited (other descriptors, the standard streams' objects) and opens its own engine. The
protocol on its pipes: length-prefixed pickles. Per scan, the set-up (the factory function and
its picklable spec, the mirror URL, logging), then one message per batch, then None (commit
now, the scan is over); each batch is acknowledged by ("applied", None) once applied (the
sender keeps at most `_UNAPPLIED` batches unapplied) and answered by ("ok", answer) once
committed, or by ("error", exception). The end of its input lets it exit.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, Any, NoReturn

import sqlalchemy as sa

from etl.core import log
from etl.core.errors import MirrorError
from etl.core.tuning import TUNING

Apply = Callable[[sa.Connection, Any], Any]  # one batch -> its answer, inside the batch's transaction
Answered = Callable[[Any], None]

_HEADER = struct.Struct("!Q")
_GROUP = TUNING.writer_transaction_batches
_IDLE_COMMIT = TUNING.writer_idle_commit_seconds
_CACHE_MB = TUNING.writer_cache_mb
# what waits in the pipe and the writer's inbox, however many batches a transaction takes (the
# writer says "applied" at once, and answers after the commit)
_UNAPPLIED = TUNING.writer_unapplied


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


class _Forked:
    """The writer's process id, seen as much of subprocess.Popen as the fetching side uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: gone all the same
                pid, status = self.pid, 255 << 8
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("writer process", timeout or 0)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def _fork_writer() -> tuple[_Forked, IO[bytes], IO[bytes]]:
    """Fork the writer; the fetching side's ends of its two pipes."""
    to_writer, from_fetcher = os.pipe()
    to_fetcher, from_writer = os.pipe()
    # What lives now stays shared with the writer only if neither side writes to its pages: the
    # cycle collector, which marks every object it walks, is kept off it on both sides.
    gc.collect()
    gc.freeze()
    pid = os.fork()
    if pid == 0:  # the writer: it never returns into the caller's code
        code = 1
        try:
            _become_writer(keep=(to_writer, from_writer))
            _serve(_Inbox(os.fdopen(to_writer, "rb", buffering=0)), os.fdopen(from_writer, "wb"))
            code = 0
        except BaseException:  # noqa: BLE001 - said where the run's own errors go, then the exit status tells
            with contextlib.suppress(Exception):
                traceback.print_exc()
        finally:
            os._exit(code)
    os.close(to_writer)
    os.close(from_writer)
    return _Forked(pid), os.fdopen(from_fetcher, "wb"), os.fdopen(to_fetcher, "rb", buffering=0)


def _become_writer(keep: tuple[int, ...]) -> None:
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


class WriterProcess:
    """The fetching side: sends batches, hands each answer to its callback, in order, once the
    batch is committed."""

    def __init__(self) -> None:
        """Fork a writer, which waits for its first scan. Only where this process has no SQLite
        mirror open (SQLite's locks and shared-memory index are per process: a fork would
        copy this process's without holding them) and no other thread (one could hold a lock
        the writer needs)."""
        self._proc, self._to, self._from = _fork_writer()
        self._waiting: deque[Answered] = deque()  # sent, not yet answered (after the commit)
        self._unapplied = 0
        self._ended = False  # the writer said it failed, or vanished, or was closed

    @property
    def usable(self) -> bool:
        """Whether it can take another scan."""
        return not self._ended and self._proc.poll() is None

    def begin(self, factory: Callable[[Any], Apply], spec: Any, mirror_url: str) -> None:
        """Start a scan: `factory(spec)` gives the function applying its batches. Both travel
        pickled: the factory a module-level function (pickled by name), the spec plain data."""
        self._send((factory, spec, mirror_url, log.current_settings(), log.known_secrets()))

    @contextlib.contextmanager
    def scan(self, factory: Callable[[Any], Apply], spec: Any, mirror_url: str) -> Iterator[WriterProcess]:
        """`begin`, then `finish` when the block ends. After an error or a stop the writer still
        commits what was fetched (it is good), then exits: the run's next scans are written in-process."""
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
            if kind == "ok":
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
        if kind == "applied":
            self._unapplied -= 1
        else:
            self._waiting.popleft()(payload)

    def submit(self, batch: Any, answered: Answered) -> None:
        """Send a batch; `answered` gets the writer's answer once the batch is committed."""
        self._send(batch)
        self._waiting.append(answered)
        self._unapplied += 1
        while self._unapplied > _UNAPPLIED:
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


def _serve(inbox: _Inbox, outbox: IO[bytes]) -> None:
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
                # spilling to the WAL one by one (100,000 tickets: writer CPU about 11 -> 7 s
                # with _GROUP, 643 MB written, not 1.1 GB)
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
                _send(outbox, ("applied", None))  # the sender may send the next (see _UNAPPLIED)
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

