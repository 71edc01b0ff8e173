"""Turn API values into column values: dates, "null", multi-language objects, content hashes.

EddyDesk sends dates in three shapes and without a time zone (seed 003):
    "2017-01-13 12:36:58"   tickets, users, organizations, knowledge base
    "17:45:00 26.01.2017"   posts, comments, notes, audit, billing
    "13.01.2017 12:36"      sla_date
The account's time zone is a connection setting; the mirror stores UTC.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import orjson


class DateParseError(ValueError):
    """A date in none of the documented formats; the column gets NULL, `raw` keeps the text."""


_EMPTY = ("", "null", "0000-00-00 00:00:00", None)


_offsets: dict[tuple[tzinfo, Any], timedelta] = {}


def _offset(local: datetime, tz: tzinfo, hour_key: Any) -> timedelta:
    # Zone offsets change at most hourly (DST): cache them per local hour. Ambiguous and
    # missing local hours around DST changes follow zoneinfo (fold=0), as astimezone would.
    offset = _offsets.get((tz, hour_key))
    if offset is None:
        offset = local.replace(minute=0, second=0, tzinfo=tz).utcoffset() or timedelta(0)
        if len(_offsets) > 100_000:
            _offsets.clear()
        _offsets[(tz, hour_key)] = offset
    return offset


def _to_utc(local: datetime, tz: tzinfo) -> datetime:
    return (local - _offset(local, tz, local.replace(minute=0, second=0))).replace(tzinfo=UTC)


def parse_api_date(value: Any, tz: tzinfo) -> datetime | None:
    """Parse any documented EddyDesk date into an aware UTC datetime; None for empty/"null"."""
    if value in _EMPTY:
        return None
    if not isinstance(value, str):
        raise DateParseError(f"not a date string: {value!r}")
    s = value.strip()
    try:
        if len(s) == 19 and s[4] == "-" and s[10] == " " and s[7] == "-" and s[13] == ":" and s[16] == ":":
            # the common shape, parsed in C; its hour prefix ("2017-01-13 12") keys the offset
            local = datetime.fromisoformat(s)
            return (local - _offset(local, tz, s[:13])).replace(tzinfo=UTC)
        if len(s) == 19 and s[2] == ":" and s[8] == " ":
            local = datetime(int(s[15:19]), int(s[12:14]), int(s[9:11]), int(s[0:2]), int(s[3:5]), int(s[6:8]))
        elif len(s) == 16 and s[2] == "." and s[10] == " ":
            local = datetime(int(s[6:10]), int(s[3:5]), int(s[0:2]), int(s[11:13]), int(s[14:16]))
        elif len(s) == 16 and s[4] == "-" and s[7] == "-" and s[10] == " " and s[13] == ":":
            local = datetime.fromisoformat(s)  # Udesk ServiceGo: minute resolution
            return (local - _offset(local, tz, s[:13])).replace(tzinfo=UTC)
        elif len(s) == 10 and s[4] == "-":
            local = datetime(int(s[0:4]), int(s[5:7]), int(s[8:10]))
        elif len(s) > 19 and s[10] == "T":
            # ISO 8601 with its own offset (Udesk knowledge: "2018-03-22T11:29:59.000+08:00")
            parsed = datetime.fromisoformat(s)
            if parsed.tzinfo is not None:
                return parsed.astimezone(UTC)
            local = parsed
        else:
            raise DateParseError(f"unknown date format: {value!r}")
    except ValueError as exc:
        if isinstance(exc, DateParseError):
            raise
        raise DateParseError(f"invalid date {value!r}: {exc}") from None
    return _to_utc(local, tz)


def display_value(value: Any, language: str) -> str | None:
    """The text to show for a multi-language object ({"en": ..., "ru": ...}).

    Falls back to the first non-empty language; hierarchy field names nest one object per
    level ({"1": {"en": ...}, "2": ...}) and display as "level1 / level2 / ...".
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if not isinstance(value, dict) or not value:
        return None
    if all(isinstance(v, dict) for v in value.values()):
        parts = [display_value(v, language) for _, v in sorted(value.items(), key=lambda kv: str(kv[0]))]
        return " / ".join(p for p in parts if p)
    chosen = value.get(language)
    if chosen not in (None, "", []):
        return chosen if isinstance(chosen, str) else orjson.dumps(chosen).decode()
    for candidate in value.values():
        if candidate not in (None, "", []):
            return candidate if isinstance(candidate, str) else orjson.dumps(candidate).decode()
    return None


def to_int(value: Any) -> int | None:
    if value is None or value == "" or value == "null":
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    return int(str(value).strip())


def to_bool(value: Any) -> bool | None:
    if value is None or value == "" or value == "null":
        return None
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    return bool(value)


def to_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode() if isinstance(value, dict | list) else str(value)


class JsonText(str):
    """JSON already serialised (for the content hash); the engine's serializer passes it through."""


def canonical_json(record: Any) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def content_hash(canonical: bytes) -> str:
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()


def strip_secrets(record: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Remove secret members (EddyDesk puts every user's api_key in user objects)."""
    if not keys or not any(k in record for k in keys):
        return record
    return {k: v for k, v in record.items() if k not in keys}
