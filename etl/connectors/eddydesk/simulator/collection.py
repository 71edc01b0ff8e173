"""An in-memory record collection with the orderings the list endpoints need.

The incremental order (date_updated, id) is kept in a sorted index, so a windowed page is a
bisect plus a slice even with 100,000 records; other orders are sorted on demand and cached
until the next change. Each record's JSON is cached too (`dump` must give bytes of their own
length: see etl/core/simulators/kept_json.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sortedcontainers import SortedList

from etl.core.simulators.kept_json import kept_json

Record = dict[str, Any]


class Collection:
    def __init__(self, partition: Callable[[Record], Any] = lambda r: 0) -> None:
        self.records: dict[int, Record] = {}
        self.partition = partition
        self._by_updated: dict[Any, SortedList] = {}
        self._json: dict[int, bytes] = {}
        self._sorted_cache: dict[Any, list[int]] = {}
        self.version = 0

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, record_id: int) -> bool:
        return record_id in self.records

    def get(self, record_id: int) -> Record | None:
        return self.records.get(record_id)

    def _index_key(self, record: Record) -> tuple[str, int]:
        return (record.get("date_updated") or "", record["id"])

    def put(self, record: Record) -> None:
        old = self.records.get(record["id"])
        if old is not None:
            self._by_updated[self.partition(old)].remove(self._index_key(old))
        self.records[record["id"]] = record
        self._by_updated.setdefault(self.partition(record), SortedList()).add(self._index_key(record))
        self._json.pop(record["id"], None)
        self._sorted_cache.clear()
        self.version += 1

    def put_many(self, records: Iterable[Record]) -> None:
        for record in records:
            self.records[record["id"]] = record
        self._by_updated = {}
        grouped: dict[Any, list[tuple[str, int]]] = {}
        for record in self.records.values():
            grouped.setdefault(self.partition(record), []).append(self._index_key(record))
        self._by_updated = {k: SortedList(v) for k, v in grouped.items()}
        self._json.clear()
        self._sorted_cache.clear()
        self.version += 1

    def remove(self, record_id: int) -> Record | None:
        old = self.records.pop(record_id, None)
        if old is not None:
            self._by_updated[self.partition(old)].remove(self._index_key(old))
            self._json.pop(record_id, None)
            self._sorted_cache.clear()
            self.version += 1
        return old

    def json(self, record_id: int, dump: Callable[[Record], bytes] | None = None) -> bytes:
        cached = self._json.get(record_id)
        if cached is None:
            record = self.records[record_id]
            cached = (dump or kept_json)(record)
            self._json[record_id] = cached
        return cached

    def updated_range(self, part: Any, lo: str | None, hi: str | None) -> tuple[SortedList, int, int]:
        """Positions [start, stop) of records with lo <= date_updated <= hi, in (date_updated, id) order."""
        index = self._by_updated.get(part) or SortedList()
        start = 0 if lo is None else index.bisect_left((lo, -1))
        stop = len(index) if hi is None else index.bisect_right((hi, float("inf")))
        return index, start, max(start, stop)

    def sorted_ids(self, key: Any, make: Callable[[], list[int]]) -> list[int]:
        cached = self._sorted_cache.get(key)
        if cached is None:
            cached = make()
            self._sorted_cache[key] = cached
        return cached
