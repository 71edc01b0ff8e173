"""The limiter never lets more than the limit through in any window, with a fake clock."""

import pytest

from etl.core.errors import LeaseLost, RateLimitBlocked
from etl.core.http.ratelimit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _limiter(clock: FakeClock, per_minute: int = 100, window: float = 60.0) -> RateLimiter:
    return RateLimiter("main", per_minute, window, 1200, clock=clock, wall_clock=clock, sleep=clock.sleep)


def test_no_window_ever_holds_more_than_the_limit():
    clock = FakeClock()
    limiter = _limiter(clock, 100)
    sends = []
    for _ in range(450):
        limiter.acquire()
        sends.append(clock.now)
        limiter.release(None, None)
    for i, start in enumerate(sends):
        in_window = [t for t in sends[i:] if t < start + 60.0]
        assert len(in_window) <= 100
    # and the budget is used: 450 requests take a little over four windows
    assert sends[-1] - sends[0] < 4.5 * 61


def test_the_servers_limit_header_replaces_the_configured_limit():
    clock = FakeClock()
    limiter = _limiter(clock, 1000)
    limiter.acquire()
    limiter.release(limit=40, remaining=39)
    assert limiter.limit == 40 and limiter.allowed < 40


def test_few_remaining_slows_down_to_single_probes():
    clock = FakeClock()
    limiter = _limiter(clock, 300)
    limiter.acquire()
    limiter.release(limit=300, remaining=3)  # someone else spent the budget
    start = clock.now
    limiter.acquire()
    limiter.release(limit=300, remaining=2)
    limiter.acquire()
    assert clock.now - start >= limiter.probe_interval  # paced, not a burst
    limiter.release(limit=300, remaining=0)
    before = clock.now
    limiter.acquire()  # nothing left: wait for the window to roll over
    assert clock.now - before >= 60.0


def test_a_block_refuses_at_once_until_it_ends():
    clock = FakeClock()
    limiter = _limiter(clock, 100)
    limiter.acquire()
    error = limiter.block(1200)
    assert isinstance(error, RateLimitBlocked)
    with pytest.raises(RateLimitBlocked, match="blocked"):
        limiter.acquire()
    clock.now += 1201
    limiter.acquire()


def test_a_revoked_budget_refuses_even_a_send_already_waiting():
    clock = FakeClock()
    limiter = _limiter(clock, 3)  # two sends a window (one kept in reserve)
    limiter.acquire()
    limiter.acquire()

    def lease_lost_while_waiting(seconds: float) -> None:
        limiter.revoke("the lease is lost")
        clock.sleep(seconds)

    limiter._sleep = lease_lost_while_waiting
    with pytest.raises(LeaseLost, match="the lease is lost"):
        limiter.acquire()  # the window is full: it waits, and the revoke ends the wait
    assert clock.now - 1000.0 < 60  # it did not sit the window out
    limiter._sleep = clock.sleep
    limiter.restore()
    limiter.acquire()


def test_slow_answers_widen_the_window_pad():
    clock = FakeClock()
    limiter = _limiter(clock, 100)
    limiter.acquire()
    limiter.release(None, None, latency=3.0)
    assert limiter.pad == 3.0


def test_an_accounts_next_holder_counts_what_the_last_one_spent():
    """The lease passes from one process to another (another machine, say) within a minute:
    the second starts with the first's sends, so the minute never holds more than the limit."""
    clock = FakeClock()
    first = _limiter(clock, 100)
    for _ in range(90):
        first.acquire()
        first.release(None, None)
        clock.now += 0.1
    handed = first.recent_sends()
    assert len(handed) == 90
    second = _limiter(clock, 100)
    second.carry_sends(handed)
    sends = [*handed]
    for _ in range(50):
        second.acquire()
        sends.append(clock.now)
        second.release(None, None)
    for i, start in enumerate(sends):
        assert len([t for t in sends[i:] if t < start + 60.0]) <= 100
    # and what it hands back includes the first's sends still inside the window: they are not counted twice
    first.carry_sends(second.recent_sends())
    assert len(first.recent_sends()) == len([t for t in sends if t > clock.now - first.window - first.pad])
