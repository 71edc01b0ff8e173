"""Rate limits as seed 003 describes them, with a time scale for tests.

Reading chosen (the docs leave it open): each account has a fixed window per clock minute
(`minute_seconds` long) per budget — the API's 300 and the knowledge base's separate 60. The
request that exceeds the window's limit is refused with HTTP 429 and starts a block (20 minutes,
1 hour for the knowledge base, scaled like the minute) during which every request of that budget
is refused with 429. Refused requests do not count. The docs do not say how a blocked request is
answered; 429 with the usual errors[] body is this simulator's choice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Budget:
    limit: int
    block_seconds: float
    window_start: float = 0.0
    used: int = 0
    blocked_until: float = 0.0


@dataclass
class Limits:
    per_minute: int | None = 300
    knowledge_base_per_minute: int | None = 60
    minute_seconds: float = 60.0
    block_minutes: float = 20.0
    knowledge_base_block_minutes: float = 60.0
    budgets: dict[tuple[str, str], Budget] = field(default_factory=dict)
    rejections: int = 0
    blocks: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    clock: Callable[[], float] = time.time  # tests may stop it: a minute that never rolls over

    def _budget(self, account: str, name: str) -> Budget | None:
        limit = self.per_minute if name == "main" else self.knowledge_base_per_minute
        if limit is None:
            return None
        key = (account, name)
        budget = self.budgets.get(key)
        if budget is None:
            minutes = self.block_minutes if name == "main" else self.knowledge_base_block_minutes
            budget = Budget(limit, minutes * self.minute_seconds)
            self.budgets[key] = budget
        return budget

    def _roll(self, budget: Budget, now: float) -> None:
        start = now - (now % self.minute_seconds)
        if start != budget.window_start:
            budget.window_start = start
            budget.used = 0

    def admit(self, account: str, name: str) -> tuple[bool, int | None, int | None]:
        """(allowed, limit, remaining) for one request arriving now."""
        with self.lock:
            budget = self._budget(account, name)
            if budget is None:
                return True, None, None
            now = self.clock()
            if now < budget.blocked_until:
                self.rejections += 1
                return False, budget.limit, 0
            self._roll(budget, now)
            if budget.used >= budget.limit:
                budget.blocked_until = now + budget.block_seconds
                self.rejections += 1
                self.blocks += 1
                return False, budget.limit, 0
            budget.used += 1
            return True, budget.limit, budget.limit - budget.used

    def consume(self, account: str, name: str, count: int) -> None:
        """Spend budget as another client of the same account would."""
        with self.lock:
            budget = self._budget(account, name)
            if budget is not None:
                self._roll(budget, self.clock())
                budget.used = min(budget.limit, budget.used + count)
