from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from etl.core.mirror.normalize import (
    DateParseError,
    display_value,
    parse_api_date,
    strip_secrets,
    to_bool,
    to_int,
    utc_text,
)

RIGA = ZoneInfo("Europe/Riga")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2017-01-13 12:36:58", datetime(2017, 1, 13, 10, 36, 58, tzinfo=UTC)),  # tickets, users (winter: UTC+2)
        ("17:45:00 26.01.2017", datetime(2017, 1, 26, 15, 45, 0, tzinfo=UTC)),  # posts, notes
        ("13.01.2017 12:36", datetime(2017, 1, 13, 10, 36, tzinfo=UTC)),  # sla_date
        ("2019-07-01 12:00:00", datetime(2019, 7, 1, 9, 0, tzinfo=UTC)),  # summer: UTC+3
    ],
)
def test_every_documented_date_format_becomes_utc(text, expected):
    assert parse_api_date(text, RIGA) == expected


@pytest.mark.parametrize("empty", ["null", "", None, "0000-00-00 00:00:00"])
def test_null_and_empty_dates_are_none(empty):
    assert parse_api_date(empty, RIGA) is None


@pytest.mark.parametrize("bad", ["31.02.2020 25:61", "yesterday", "2017/01/13 12:36:58", 17])
def test_unparseable_dates_raise_a_named_error(bad):
    with pytest.raises(DateParseError):
        parse_api_date(bad, RIGA)


@pytest.mark.parametrize("zone", ["Europe/Riga", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"])
def test_utc_text_agrees_with_zoneinfo_every_quarter_hour_around_dst_changes(zone):
    """The hour-by-hour offset cache against plain zoneinfo arithmetic (fold=0), over the spring
    and autumn changes of 2025 and in zones whose offset has minutes."""
    tz = ZoneInfo(zone)
    for start in (datetime(2025, 3, 8), datetime(2025, 3, 29), datetime(2025, 4, 5), datetime(2025, 10, 25),
                  datetime(2025, 11, 1)):
        for quarter in range(2 * 24 * 4):
            local = start + timedelta(minutes=15 * quarter, seconds=7)
            expected = local.replace(tzinfo=tz).astimezone(UTC).replace(tzinfo=None)
            assert utc_text(local.strftime("%Y-%m-%d %H:%M:%S"), tz) == str(expected), local


def test_display_value_prefers_the_configured_language_then_falls_back():
    assert display_value({"ru": "Клиент", "en": "Client"}, "en") == "Client"
    assert display_value({"fr": "Checkbox"}, "en") == "Checkbox"
    assert display_value({"en": "", "ru": "Да"}, "en") == "Да"
    assert display_value({"1": {"en": "Related"}, "2": {"en": "Related 2"}}, "en") == "Related / Related 2"
    assert display_value(None, "en") is None


def test_scalars():
    assert to_int("42") == 42 and to_int("null") is None and to_int(True) == 1
    assert to_bool(0) is False and to_bool("true") is True and to_bool("") is None
    with pytest.raises(ValueError):
        to_bool("maybe")


def test_secrets_are_stripped_without_copying_clean_records():
    clean = {"id": 1}
    assert strip_secrets(clean, ("api_key",)) is clean
    assert strip_secrets({"id": 1, "api_key": "k"}, ("api_key",)) == {"id": 1}


def test_dates_in_an_hour_met_before_are_still_checked_to_the_second():
    """The cached-hour shortcut of utc_text checks what it does not parse: minutes and seconds."""
    from zoneinfo import ZoneInfo

    from etl.core.mirror.normalize import DateParseError, utc_text

    tz = ZoneInfo("Asia/Shanghai")
    assert utc_text("2025-01-01 10:00", tz) == "2025-01-01 02:00:00"  # the hour is cached now
    assert utc_text("2025-01-01 10:30", tz) == "2025-01-01 02:30:00"
    assert utc_text("2025-01-01 10:30:59", tz) == "2025-01-01 02:30:59"
    for bad in ("2025-01-01 10:60", "2025-01-01 10:5x", "2025-01-01 10:5\u0663", "2025-01-01 10:30:61",
                "2025-01-01 10:30-00", "2025-01-01 10:30:5 "):
        with pytest.raises(DateParseError):
            utc_text(bad, tz)
