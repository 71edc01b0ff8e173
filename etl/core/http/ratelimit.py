"""Client-side rate limiting that never lets an account be blocked.

EddyDesk counts requests per minute (300 by default, 60 for the knowledge base) and blocks
the account for 20 minutes (1 hour) when a minute's count is exceeded (seed 003, "Speed limits").
The docs do not say whether "the current minute" is a fixed clock minute or a sliding one, so
this limiter keeps a sliding log of send times: at most `allowed` sends in any `window + pad`
seconds, which also keeps every fixed minute under the limit even when response latencies vary.

The server's own view wins when it is stricter: each response's X-Rate-Limit replaces the
limit, and X-Rate-Limit-Remaining caps how many more sends the current window may take (another
client of the same account may be spending the budget). A refusal means the account is blocked:
`acquire` then raises at once until the block must have ended instead of retrying into it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from etl.core.errors import LeaseLost, RateLimitBlocked, Stopped


class RateLimiter:
    def __init__(
        self,
        name: str,
        per_minute: int,
        window_seconds: float = 60.0,
        block_seconds: float = 1200.0,
        system: str = "eddydesk",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.system = system
        self.window = window_seconds
        # Sends and arrivals differ by up to a response's latency, which does not shrink with
        # a shorter test "minute": pad the window by a second of a real minute (at least 250 ms)
        # or by the slowest recent answer, whichever is longer.
        self.base_pad = max(window_seconds / 60.0, 0.25)
        self.pad = self.base_pad
        self._latencies: deque[float] = deque(maxlen=64)
        # When the server says its window is nearly spent, send one probe at a time this often
        # until a response shows the window has rolled over.
        self.probe_interval = 2 * self.pad
        self.block_seconds = block_seconds
        self._clock = clock
        self._wall = wall_clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._sent: deque[float] = deque()
        self._in_flight = 0
        self._server_left: int | None = None  # sends the server will still take in its window
        self._server_until = 0.0  # when that word is surely stale
        self.blocked_until = 0.0  # monotonic
        self._revoked: str | None = None  # why this process may not spend the budget now
        self.waited_seconds = 0.0
        self.limit = per_minute
        self.set_limit(per_minute)

    def set_limit(self, limit: int) -> None:
        self.limit = limit
        # keep 2% (at least one request) in reserve for clock and latency differences
        self.reserve = max(1, math.ceil(limit * 0.02))
        self.allowed = max(1, limit - self.reserve)

    def _blocked(self, what: str, seconds: float) -> RateLimitBlocked:
        return RateLimitBlocked(
            system=self.system,
            message=f"{what} for exceeding the {self.name} rate limit; no requests for {seconds:.0f}s",
            status=429,
            blocked_until=self._wall() + seconds,
            budget=self.name,
        )

    def _check_block(self, now: float) -> None:
        if now < self.blocked_until:
            raise self._blocked("the account is blocked", self.blocked_until - now)

    def _delay(self, now: float) -> float:
        span = self.window + self.pad
        while self._sent and self._sent[0] <= now - span:
            self._sent.popleft()
        delay = 0.0
        if len(self._sent) >= self.allowed:
            delay = self._sent[len(self._sent) - self.allowed] + span - now
        if self._server_left is not None:
            if now >= self._server_until:
                self._server_left = None
            elif self._server_left <= 0:
                delay = max(delay, self._server_until - now)
            elif self._server_left <= self.reserve:
                # nearly spent: one probe at a time until the window rolls over
                last = self._sent[-1] if self._sent else -math.inf
                if self._in_flight > 0:
                    delay = max(delay, self.probe_interval / 4)
                else:
                    delay = max(delay, last + self.probe_interval - now)
        return delay

    def acquire(self, stop: threading.Event | None = None, on_wait: Callable[[float], None] | None = None) -> float:
        """Wait for a send slot; returns the seconds waited. A wait raises Stopped as soon as `stop`
        is set: a budget's wait can be most of a minute, and a stop must not sit it out."""
        waited = 0.0
        while True:
            if stop is not None and stop.is_set():
                raise Stopped()
            with self._lock:
                if self._revoked is not None:
                    raise LeaseLost(self._revoked)
                now = self._clock()
                self._check_block(now)
                delay = self._delay(now)
                if delay <= 0:
                    self._sent.append(now)
                    self._in_flight += 1
                    if self._server_left is not None:
                        self._server_left -= 1
                    self.waited_seconds += waited
                    return waited
            step = min(delay, 0.1 * self.window)
            if on_wait is not None and delay >= 0.5:
                on_wait(delay)  # a progress display says so (a short wait is not worth a word)
            if stop is not None:
                stop.wait(step)
            else:
                self._sleep(step)
            waited += step

    def release(self, limit: int | None = None, remaining: int | None = None, latency: float = 0.0) -> None:
        """Called after each response with its X-Rate-Limit headers, if the server sent them."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            self._latencies.append(latency)
            self.pad = max(self.base_pad, max(self._latencies))
            if limit is not None and limit > 0 and limit != self.limit:
                self.set_limit(limit)
            if remaining is not None:
                # requests still in flight will be counted against what this answer reported
                self._server_left = remaining - self._in_flight
                self._server_until = self._clock() + self.window + self.pad

    def cancel(self) -> None:
        """A send slot was taken but no answer came (connection error): only the in-flight count changes."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)

    def block(self, seconds: float | None = None) -> RateLimitBlocked:
        """The server refused for rate reasons: stop this budget until the block must have ended."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            duration = self.block_seconds if seconds is None else seconds
            self.blocked_until = self._clock() + duration
            return self._blocked("the server refused a request and blocked the account", duration)

    def revoke(self, why: str) -> None:
        """Refuse every send from now on (a wait in progress ends within its step): the account's
        lease is gone, and another process may be spending this budget."""
        with self._lock:
            self._revoked = why

    def restore(self) -> None:
        """The lease is held again (a new run took it): sends may go."""
        with self._lock:
            self._revoked = None

    def recent_sends(self) -> list[float]:
        """This budget's sends still inside its window, as wall-clock times: what the account's
        next holder (another process, perhaps on another machine) must count as spent."""
        with self._lock:
            now, wall = self._clock(), self._wall()
            return [round(wall - (now - sent), 3) for sent in self._sent if sent > now - self.window - self.pad]

    def carry_sends(self, wall_times: list[float]) -> None:
        """Take the account's recent sends as its last holder left them. They already hold this
        process's own earlier sends (that holder carried them in turn, as the account's lease
        passes from process to process), so they replace what this limiter remembers."""
        with self._lock:
            now, wall = self._clock(), self._wall()
            self._sent = deque(sorted(now - (wall - t) for t in wall_times))

    def block_until_wall_time(self, until_epoch: float) -> None:
        """Carry a block recorded by an earlier process into this one."""
        with self._lock:
            self.blocked_until = self._clock() + max(0.0, until_epoch - self._wall())
