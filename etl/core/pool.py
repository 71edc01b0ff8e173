"""Fetch on worker threads, write on the caller's thread: overlapping the two is most of the speed.

Workers put results in a bounded buffer (memory stays flat whatever the dataset size); the
caller's thread takes whatever has arrived, in batches (or waits for a batch's least size),
and writes each batch in one transaction.
A failure in any worker stops the others and is raised in the caller's thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from etl.core.errors import Stopped

Emit = Callable[[Any], None]
Job = Callable[[Emit], None]



_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Results:
    """What the workers emitted, bounded, in the order they emitted it.

    The caller's thread is woken only when what it waits for is there (a batch's least size,
    the end or a failure), not at every item as a queue.Queue would: in a scan of 100,000 tickets
    that was 3,400 wake-ups, each a hand-off of the GIL away from the fetch threads."""

    def __init__(self, bound: int) -> None:
        self._items: deque[Any] = deque()
        lock = threading.Lock()
        self._ready = threading.Condition(lock)
        self._space = threading.Condition(lock)
        self._bound = bound
        self._wanted = 1
        self._ends = 0  # _DONE and failures waiting in the buffer: the caller must see them at once
        self._closed = False

    def put(self, item: Any) -> None:
        """Add an item, waiting while the buffer is full; dropped once the caller's thread has left."""
        end = item is _DONE or isinstance(item, _Failure)
        with self._space:
            while len(self._items) >= self._bound and not self._closed:
                self._space.wait(0.1)
            if self._closed:
                return
            self._items.append(item)
            self._ends += end
            if end or len(self._items) >= self._wanted:
                self._ready.notify()

    def take(self, most: int, least: int, wait: float) -> list[Any]:
        """Up to `most` items: waits up to `wait` seconds for `least` of them (or an end), then
        for at least one."""
        with self._ready:
            self._wanted = least
            deadline = time.monotonic() + wait
            while len(self._items) < least and not self._ends and (left := deadline - time.monotonic()) > 0:
                self._ready.wait(left)
            self._wanted = 1
            while not self._items:
                self._ready.wait()
            taken: list[Any] = []
            while self._items and len(taken) < most:
                item = self._items.popleft()
                taken.append(item)
                if item is _DONE or isinstance(item, _Failure):
                    self._ends -= 1
                    break
            self._space.notify_all()
            return taken

    def close(self) -> None:
        with self._space:
            self._closed = True
            self._space.notify_all()


def run_jobs(
    jobs: Iterable[Job],
    consume: Callable[[list[Any]], None],
    *,
    workers: int,
    stop: threading.Event,
    batch_size: int = 16,
    least: int = 1,
    least_wait: float = 2.0,
) -> None:
    """Run `jobs` on `workers` threads; `consume` gets what they emit, up to `batch_size` items
    at a time. It waits for `least` items (or the last) before it is called, but no longer than
    `least_wait` seconds: slow fetches (remote latency, a rate limit) still commit often."""
    results = _Results(max(4, workers * 2) + batch_size)
    local_stop = threading.Event()

    def stopping() -> bool:
        return stop.is_set() or local_stop.is_set()

    def emit(item: Any) -> None:
        if stopping():
            raise Stopped()
        results.put(item)
        if stopping():
            raise Stopped()

    def wrap(job: Job) -> None:
        try:
            if stopping():
                return
            job(emit)
        except Stopped:
            return
        except BaseException as exc:  # handed to the caller's thread, which re-raises it
            results.put(_Failure(exc))
            local_stop.set()

    job_list = list(jobs)
    remaining = len(job_list)
    if not remaining:
        return
    counter_lock = threading.Lock()

    def run_one(job: Job) -> None:
        nonlocal remaining
        try:
            wrap(job)
        finally:
            with counter_lock:
                remaining -= 1
                last = remaining == 0
            if last:
                results.put(_DONE)

    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch")
    try:
        for job in job_list:
            executor.submit(run_one, job)
        finished = False
        while not finished:
            batch: list[Any] = []
            for item in results.take(batch_size, least, least_wait):
                if item is _DONE:
                    finished = True
                elif isinstance(item, _Failure):
                    raise item.exc
                else:
                    batch.append(item)
            if batch:
                consume(batch)
            if stop.is_set():
                raise Stopped()
    finally:
        local_stop.set()
        results.close()
        executor.shutdown(wait=True, cancel_futures=True)
