"""run_jobs hands the caller's thread batches: whole ones when fetching is fast, smaller ones
(after `least_wait`) when it is slow, and the rest at the end."""

from __future__ import annotations

import threading
import time

from etl.core.pool import run_jobs


def _emitting(count: int, pause: float):
    def job(emit):
        for n in range(count):
            time.sleep(pause)
            emit(n)

    return job


def test_batches_wait_for_their_least_size_then_the_last_takes_the_rest():
    batches: list[list[int]] = []
    run_jobs([_emitting(45, 0.0)], batches.append, workers=1, stop=threading.Event(), batch_size=10, least=10)
    assert [len(b) for b in batches] == [10, 10, 10, 10, 5]
    assert [n for b in batches for n in b] == list(range(45))


def test_a_slow_fetch_is_consumed_after_least_wait_without_a_whole_batch():
    batches: list[list[int]] = []
    started = time.monotonic()
    run_jobs([_emitting(3, 0.15)], batches.append, workers=1, stop=threading.Event(), batch_size=10, least=10,
             least_wait=0.2)
    assert len(batches) >= 2  # not one batch of three at the end
    assert [n for b in batches for n in b] == [0, 1, 2]
    assert time.monotonic() - started < 2


def test_a_failure_or_the_end_is_seen_at_once_while_a_batch_waits_for_its_least_size():
    def failing(emit):
        emit(1)
        emit(2)
        raise ValueError("page 3 is malformed")

    batches: list[list[int]] = []
    started = time.monotonic()
    try:
        run_jobs([failing], batches.append, workers=1, stop=threading.Event(), batch_size=10, least=10, least_wait=30)
    except ValueError as exc:
        assert str(exc) == "page 3 is malformed"
    else:
        raise AssertionError("the worker's failure was not raised")
    assert time.monotonic() - started < 5  # not after least_wait
    assert batches == []  # nothing after a failure is written

    started = time.monotonic()
    run_jobs([_emitting(3, 0.0)], batches.append, workers=1, stop=threading.Event(), batch_size=10, least=10,
             least_wait=30)
    assert batches == [[0, 1, 2]]
    assert time.monotonic() - started < 5


def test_workers_wait_while_the_buffer_is_full_and_lose_nothing():
    seen: list[int] = []

    def slow_consumer(batch: list[int]) -> None:
        time.sleep(0.01)
        seen.extend(batch)

    run_jobs([_emitting(300, 0.0) for _ in range(4)], slow_consumer, workers=4, stop=threading.Event(),
             batch_size=8, least=8)
    assert sorted(seen) == sorted(list(range(300)) * 4)
