"""Fetch on worker threads, write on the caller's thread: overlapping the two is most of the speed.

Workers put results on a bounded queue (memory stays flat whatever the dataset size); the
caller's thread takes whatever has arrived, in batches (or waits for a batch's least size),
and writes each batch in one transaction.
A failure in any worker stops the others and is raised in the caller's thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Emit = Callable[[Any], None]
Job = Callable[[Emit], None]


class Stopped(Exception):
    """Raised inside workers when the run is stopping (an error elsewhere, or a signal)."""


_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


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
    results: queue.Queue[Any] = queue.Queue(maxsize=max(4, workers * 2))
    local_stop = threading.Event()

    def stopping() -> bool:
        return stop.is_set() or local_stop.is_set()

    def put(item: Any) -> bool:
        # never block forever: once the caller's thread has left, nobody empties the queue
        while True:
            try:
                results.put(item, timeout=0.1)
                return True
            except queue.Full:
                if local_stop.is_set():
                    return False

    def emit(item: Any) -> None:
        if stopping():
            raise Stopped()
        put(item)
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
            put(_Failure(exc))
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
                put(_DONE)

    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch")
    try:
        for job in job_list:
            executor.submit(run_one, job)
        finished = False
        while not finished:
            item = results.get()
            batch: list[Any] = []
            until = time.monotonic() + least_wait
            while True:
                if item is _DONE:
                    finished = True
                elif isinstance(item, _Failure):
                    raise item.exc
                else:
                    batch.append(item)
                if finished or len(batch) >= batch_size:
                    break
                if len(batch) < least and (left := until - time.monotonic()) > 0:
                    try:
                        item = results.get(timeout=left)
                    except queue.Empty:
                        break
                    continue
                try:
                    item = results.get_nowait()
                except queue.Empty:
                    break
            if batch:
                consume(batch)
            if stop.is_set():
                raise Stopped()
    finally:
        local_stop.set()
        executor.shutdown(wait=True, cancel_futures=True)
