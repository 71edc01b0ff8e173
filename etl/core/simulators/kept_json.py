"""JSON bytes that a simulator keeps for as long as the record does not change.

orjson 3.12 and later hand back their whole growing buffer (4 KB and up; 8 KB for a ticket of
1 KB, measured) and never shrink it, so a cache of 100,000 tickets' JSON held about 800 MB, and
filling it cost the simulator two page faults a record: 2.3 s of system time in the first sync of
a 100,000-ticket benchmark, taken from the cores the engine under test runs on. A copy of the
exact length costs about 0.2 us and keeps only what the text needs.
"""

from __future__ import annotations

from typing import Any

import orjson


def kept_json(value: Any) -> bytes:
    """orjson.dumps(value) in an allocation of its own length, for caches."""
    return bytes(memoryview(orjson.dumps(value)))
