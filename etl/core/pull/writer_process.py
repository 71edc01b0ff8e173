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
import os
import signal
import subprocess
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, Any, NoReturn

from etl.core import log
from etl.core.errors import MirrorError
from etl.core.pull.writer_serve import Apply, Inbox, become_writer, receive, send, serve
from etl.core.tuning import TUNING

Answered = Callable[[Any], None]

# what waits in the pipe and the writer's inbox, however many batches a transaction takes (the
# writer says "applied" at once, and answers after the commit)
_UNAPPLIED = TUNING.writer_unapplied


class WriterFailed(MirrorError):
    """The writer process stopped without answering (killed, or crashed before it could say why)."""












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
            become_writer(keep=(to_writer, from_writer))
            serve(Inbox(os.fdopen(to_writer, "rb", buffering=0)), os.fdopen(from_writer, "wb"))
            code = 0
        except BaseException:  # noqa: BLE001 - said where the run's own errors go, then the exit status tells
            with contextlib.suppress(Exception):
                traceback.print_exc()
        finally:
            os._exit(code)
    os.close(to_writer)
    os.close(from_writer)
    return _Forked(pid), os.fdopen(from_fetcher, "wb"), os.fdopen(to_fetcher, "rb", buffering=0)




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
            send(self._to, message)
        except (BrokenPipeError, OSError):
            self._failed()

    def _failed(self) -> NoReturn:
        """The pipe broke: take the answers the writer left (its error, if it sent one), then say so."""
        self._ended = True
        while self._waiting:
            try:
                kind, payload = receive(self._from)
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
            kind, payload = receive(self._from)
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







