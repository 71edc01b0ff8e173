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
from typing import Any, overload

import orjson


@overload
def stored_utc(value: datetime | str) -> datetime: ...
@overload
def stored_utc(value: None) -> None: ...
def stored_utc(value: datetime | str | None) -> datetime | None:
    """A timestamp read back from the mirror, as an aware UTC datetime: SQLite returns them naive,
    and an aggregate (max, min) over a column as text."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class DateParseError(ValueError):
    """A date in none of the documented formats; the column gets NULL, `raw` keeps the text."""


_EMPTY = ("", "null", "0000-00-00 00:00:00", None)


def _local_iso(s: str) -> str | None:
    """A documented local date shape rewritten as ISO "YYYY-MM-DD HH:MM:SS" (not yet validated)."""
    n = len(s)
    if n == 19:
        if s[4] == "-" and s[7] == "-" and s[10] == " " and s[13] == ":" and s[16] == ":":
            return s
        if s[2] == ":" and s[8] == " ":  # "17:45:00 26.01.2017"
            return f"{s[15:19]}-{s[12:14]}-{s[9:11]} {s[0:8]}"
    elif n == 16:
        if s[2] == "." and s[10] == " ":  # "13.01.2017 12:36"
            return f"{s[6:10]}-{s[3:5]}-{s[0:2]} {s[11:16]}:00"
        if s[4] == "-" and s[7] == "-" and s[10] == " " and s[13] == ":":  # Udesk ServiceGo: minutes
            return s + ":00"
    elif n == 10 and s[4] == "-":
        return s + " 00:00:00"
    return None


# Per zone: local hour ("2017-01-13 12") -> its UTC hour ("2017-01-13 10") and offset; the UTC
# hour is None in zones whose offset has minutes. Offsets change at most hourly (DST), so the
# hour carries the rest of the text over unchanged. A local hour missing from the cache takes
# its day's offset when the day has one offset from 00:00 to 23:00 (days with a DST change are
# looked up hour by hour). Ambiguous and missing local hours around DST changes follow zoneinfo
# (fold=0), as astimezone would.
_utc_hours: dict[tzinfo, dict[str, tuple[str | None, timedelta]]] = {}
_day_offsets: dict[tzinfo, dict[str, timedelta | None]] = {}
_HOUR = timedelta(hours=1)


def _offset(local: datetime, day: str, tz: tzinfo) -> timedelta:
    days = _day_offsets.setdefault(tz, {})
    try:
        offset = days[day]  # None: the day of a DST change
    except KeyError:
        first = datetime(local.year, local.month, local.day, 0, tzinfo=tz).utcoffset()
        last = datetime(local.year, local.month, local.day, 23, tzinfo=tz).utcoffset()
        offset = first if first == last else None
        if len(days) > 10_000:
            days.clear()
        days[day] = offset
    if offset is None:
        offset = datetime(local.year, local.month, local.day, local.hour, tzinfo=tz).utcoffset()
    return offset or timedelta(0)


def _shift(local: datetime, iso: str, tz: tzinfo) -> str:
    """UTC text of a local time (`iso` is its text)."""
    hour = iso[:13]
    hours = _utc_hours.get(tz)
    if hours is None:
        hours = _utc_hours[tz] = {}
    known = hours.get(hour)
    if known is None:
        offset = _offset(local, iso[:10], tz)
        utc_hour = None
        if offset % _HOUR == timedelta(0):
            utc_hour = str(datetime(local.year, local.month, local.day, local.hour) - offset)[:13]
        if len(hours) > 100_000:
            hours.clear()
        known = hours[hour] = (utc_hour, offset)
    utc_hour, offset = known
    if utc_hour is not None:
        return utc_hour + (iso[13:] if len(iso) == 19 else str(local)[13:])
    return str(local - offset)


def _minutes_valid(text: str) -> bool:
    """The ":MM" (and ":SS") after the hour of "YYYY-MM-DD HH:MM[:SS]" are in range."""
    minutes, seconds = text[14:16], text[17:19]
    if not (minutes.isascii() and minutes.isdigit() and minutes < "60"):
        return False
    return len(text) == 16 or (text[16] == ":" and seconds.isascii() and seconds.isdigit() and seconds < "60")


def utc_text(value: Any, tz: tzinfo) -> str | None:
    """A documented API date as UTC text, "YYYY-MM-DD HH:MM:SS" (".ffffff" added when there is a
    fraction); None for empty or "null". Raises DateParseError for anything else.

    Text, not a datetime, because the common case needs no datetime arithmetic at all: the mirror
    stores SQLite timestamps as text, and building datetimes costs microseconds each.
    """
    if type(value) is str and (len(value) == 19 or len(value) == 16) and value[13:14] == ":":
        # "YYYY-MM-DD HH:MM[:SS]" in an hour met before: its UTC hour is cached, and that hour's
        # text was validated when it was cached; only minutes and seconds are left to check
        hours = _utc_hours.get(tz)
        known = hours.get(value[:13]) if hours is not None else None
        if known is not None and known[0] is not None and _minutes_valid(value):
            return known[0] + (value[13:] if len(value) == 19 else value[13:] + ":00")
    if value in _EMPTY:
        return None
    if not isinstance(value, str):
        raise DateParseError(f"not a date string: {value!r}")
    s = value.strip()
    iso = _local_iso(s)
    try:
        if iso is not None:
            local = datetime.fromisoformat(iso)  # checks every part
        elif len(s) > 19 and s[10] == "T":
            # ISO 8601 with its own offset (Udesk knowledge: "2018-03-22T11:29:59.000+08:00")
            local = datetime.fromisoformat(s)
            if local.tzinfo is not None:
                return str(local.astimezone(UTC))[:-6]
            iso = str(local)
        else:
            raise DateParseError(f"unknown date format: {value!r}")
    except ValueError as exc:
        if isinstance(exc, DateParseError):
            raise
        raise DateParseError(f"invalid date {value!r}: {exc}") from None
    return _shift(local, iso, tz)


def iso_utc(value: Any) -> Any:
    """A moment as desksync prints it everywhere (text and JSON): UTC ISO 8601 with its offset,
    "2026-12-04T20:19:39.123456+00:00". Naive datetimes are UTC (the mirror stores UTC); ISO text
    is read and printed the same way; anything else is returned as it is."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    return value


def parse_api_date(value: Any, tz: tzinfo) -> datetime | None:
    """Parse any documented EddyDesk date into an aware UTC datetime; None for empty/"null"."""
    text = utc_text(value, tz)
    return None if text is None else datetime.fromisoformat(text + "+00:00")


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
