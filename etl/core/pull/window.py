"""The incremental window and how it is cut into independent slices (pure functions).

Window = [cursor - lookback, run start], in the account's local time at one-second resolution
(EddyDesk dates carry no zone and no fraction). The upper bound is fixed at the run's start;
records updated during the scan move above it and are taken by the next run.

Why slices are scanned by key, not by page number: a record updated during a scan leaves the
window, and every later record moves one position up, so page N+1 would silently skip one.
Each slice is therefore walked by date: request page 1 from `lo`, then from the newest date on
the page (inclusive, duplicates dropped by key). A record leaving cannot shift a request that
starts after it. Only when a whole page shares one second is that second drained by page
number, and checked against its reported total.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

API_DATE = "%Y-%m-%d %H:%M:%S"


def local_now(tz: tzinfo) -> datetime:
    return datetime.now(tz).replace(tzinfo=None, microsecond=0)


def fmt(value: datetime, date_format: str = API_DATE) -> str:
    return value.strftime(date_format)


def parse(value: str, date_format: str = API_DATE) -> datetime:
    return datetime.strptime(value, date_format)


def window_start(cursor: str | None, lookback_seconds: float, date_format: str = API_DATE) -> str | None:
    if cursor is None:
        return None
    return fmt(parse(cursor, date_format) - timedelta(seconds=lookback_seconds), date_format)


def next_second(value: str, date_format: str = API_DATE) -> str:
    return fmt(parse(value, date_format) + timedelta(seconds=1), date_format)


@dataclass
class Slice:
    lo: str | None
    hi: str
    done: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"lo": self.lo, "hi": self.hi, "done": self.done}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Slice:
        return cls(data.get("lo"), data["hi"], bool(data.get("done")))


def plan_slices(lo: str | None, hi: str, boundaries: list[str]) -> list[Slice]:
    """Cut [lo, hi] at the given dates (each slice's ends are inclusive; ends overlap by a second)."""
    cuts: list[str] = []
    for b in sorted(set(boundaries)):
        if (lo is None or b > lo) and b < hi and (not cuts or b > cuts[-1]):
            cuts.append(b)
    edges: list[str | None] = [lo, *cuts]
    his = [*cuts, hi]
    return [Slice(a, b) for a, b in zip(edges, his, strict=True)]


def probe_pages(total_pages: int, slices: int) -> list[int]:
    """Page numbers whose first record marks the start of each slice after the first."""
    return sorted({1 + (i * total_pages) // slices for i in range(1, slices)} - {1})
