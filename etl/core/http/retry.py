"""What to do with each answer or failure: decided here, in one table, and nowhere else.

    answer / failure                         action
    ---------------------------------------  ---------------------------------------------
    2xx with a JSON body                     OK
    2xx whose body is not valid JSON         RETRY  (truncated or HTML pages from proxies)
    429, or 403/503 naming the rate limit    BLOCKED (wait out the block, never retry into it)
    401, 403                                 AUTH   (credentials refused; not retried)
    other 4xx                                FAIL   (the API's own errors[] are reported)
    5xx, timeouts, connection errors         RETRY  (exponential backoff with full jitter)
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

import httpx


class Action(enum.Enum):
    OK = "ok"
    RETRY = "retry"
    BLOCKED = "blocked"
    AUTH = "auth"
    FAIL = "fail"


RETRYABLE_EXCEPTIONS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


def classify_status(status: int, body_text: str) -> Action:
    if 200 <= status < 300:
        return Action.OK
    if status == 429 or (status in (403, 503) and "rate limit" in body_text.lower()):
        return Action.BLOCKED
    if status in (401, 403):
        return Action.AUTH
    if status >= 500 or status == 408:
        return Action.RETRY
    return Action.FAIL


@dataclass(frozen=True)
class Backoff:
    attempts: int = 6
    base_seconds: float = 0.5
    max_seconds: float = 30.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**attempt)] (attempt counts from 1)."""
        cap = min(self.max_seconds, self.base_seconds * (2 ** (attempt - 1)))
        return (rng or random).uniform(0, cap)
