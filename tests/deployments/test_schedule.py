"""Unit tests for deployments_app.schedule (no Django, no database)."""

import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from importlib import resources
from zoneinfo import ZoneInfo as _ZoneInfo

import pytest

from deployments_app import schedule
from deployments_app.schedule import (
    MAX_EXPRESSION_LENGTH,
    DstNote,
    ScheduleError,
    describe,
    dst_notes,
    next_fires,
    parse,
    validate,
)

UTC = timezone.utc
NY = "America/New_York"
ROOT = Path(__file__).resolve().parents[2]


def ZoneInfo(key):
    """The zone from the pip tzdata package (the OS copy may differ)."""
    with resources.files("tzdata.zoneinfo").joinpath(*key.split("/")).open("rb") as f:
        return _ZoneInfo.from_file(f, key=key)


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def error_of(expression, tz="UTC"):
    with pytest.raises(ScheduleError) as info:
        validate(expression, tz)
    return str(info.value)


# --------------------------------------------------------------------------
# Rejections
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression, expected",
    [
        # field count
        ("0 0 * * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 6; "
                        "seconds and year fields are not supported"),
        ("0 0 * * * 2026 *", "got 7; seconds and year fields are not supported"),
        ("0 0 *", "expected 5 fields (minute hour day-of-month month day-of-week), got 3"),
        ("", "expression is empty"),
        ("   \t ", "expression is empty"),
        # special characters from other cron dialects
        ("0 0 L * *", 'day-of-month field "L": "L" (last day) is not supported'),
        ("0 0 * * 5L", 'day-of-week field "5L": "L" (last day) is not supported'),
        ("0 0 LW * *", '"L" (last day) is not supported'),
        ("0 0 15W * *", 'day-of-month field "15W": "W" (nearest weekday) is not supported'),
        ("0 0 * * 5#3", 'day-of-week field "5#3": "#" (nth weekday of the month) is not supported'),
        ("0 0 ? * MON", 'day-of-month field "?": "?" is not supported'),
        ("0 0 * * ?", 'day-of-week field "?": "?" is not supported'),
        ("H * * * *", 'minute field "H": "H" (hashed values) is not supported'),
        ("H/15 * * * *", '"H" (hashed values) is not supported'),
        ("H(0-29)/10 * * * *", '"H" (hashed values) is not supported'),
        # shortcuts
        ("@daily", 'shortcut "@daily" is not supported'),
        ("@daily", '(use "0 0 * * *")'),
        ("@reboot", 'shortcut "@reboot" is not supported'),
        ("  @hourly", 'shortcut "@hourly" is not supported'),
        # out of range
        ("61 * * * *", 'minute field "61": value 61 out of range 0-59'),
        ("* 24 * * *", 'hour field "24": value 24 out of range 0-23'),
        ("* * 0 * *", 'day-of-month field "0": value 0 out of range 1-31'),
        ("* * 32 * *", 'day-of-month field "32": value 32 out of range 1-31'),
        ("* * * 0 *", 'month field "0": value 0 out of range 1-12'),
        ("* * * 13 *", 'month field "13": value 13 out of range 1-12'),
        ("* * * * 8", 'day-of-week field "8": value 8 out of range 0-7'),
        ("0-60 * * * *", "value 60 out of range 0-59"),
        ("99999999999999999999 * * * *", "out of range 0-59"),
        # steps
        ("*/0 * * * *", 'minute field "*/0": step 0 is not allowed'),
        ("1-5/0 * * * *", "step 0 is not allowed"),
        ("*/60 * * * *", "step 60 out of range 1-59"),
        ("*/ * * * *", 'missing step after "/"'),
        ("*/x * * * *", 'step "x" is not a number'),
        ("1/2/3 * * * *", 'more than one "/"'),
        # ranges and lists
        ("5-1 * * * *", 'minute field "5-1": reversed range 5-1'),
        ("0 0 * * FRI-MON", "reversed range FRI-MON"),
        ("0 0 * DEC-JAN *", "reversed range DEC-JAN"),
        ("1,,2 * * * *", 'minute field "1,,2": empty list item'),
        ("1, * * * *", "empty list item"),
        (",1 * * * *", "empty list item"),
        ("1- * * * *", 'invalid range "1-"'),
        ("-5 * * * *", 'invalid range "-5"'),
        ("1-2-3 * * * *", 'invalid range "1-2-3"'),
        # names
        ("0 0 * FOO *", 'month field "FOO": unknown name "FOO" (use JAN-DEC)'),
        ("0 0 * * FOO", 'day-of-week field "FOO": unknown name "FOO" (use SUN-SAT)'),
        ("0 0 * MON *", 'unknown name "MON"'),
        ("0 0 * * JAN", 'unknown name "JAN"'),
        ("0 0 * * MONDAY", 'unknown name "MONDAY"'),
        ("abc * * * *", 'minute field "abc": invalid value "abc" (names are only allowed'),
        # garbage / non-ASCII / control characters
        ("0 0 \u00e9 * *", "non-ASCII character"),
        ("0\u00a00 * * * *", "non-ASCII character"),
        ("０ 0 * * *", "non-ASCII character"),
        ("0 0 * * *\n", "control character U+000A"),
        ("0 0 * * *\x00", "control character U+0000"),
        ("5% * * * *", 'invalid value "5%"'),
        ("** * * * *", 'invalid value "**"'),
        ("0 0 * * 1;rm", 'invalid value "1;rm"'),
        # never fires
        ("0 0 31 2 *", 'never fires: day-of-month "31" does not occur in month field "2" (February)'),
        ("0 0 30 2 *", "never fires"),
        ("0 0 30,31 FEB *", "never fires"),
        ("0 0 31 4,6,9,11 *", "(April, June, September, November)"),
    ],
)
def test_rejections_explain_what_and_where(expression, expected):
    assert expected in error_of(expression)


def test_overlong_expression_is_rejected_quickly_with_clear_message():
    huge = "1," * 5000 + "1 * * * *"
    start = time.perf_counter()
    message = error_of(huge)
    elapsed = time.perf_counter() - start
    assert message == f"expression is too long ({len(huge)} characters; the maximum is 256)"
    assert elapsed < 0.05
    assert MAX_EXPRESSION_LENGTH == 256
    # exactly at the cap is still parsed normally
    at_cap = "0" * (MAX_EXPRESSION_LENGTH - 8) + " * * * *"
    assert len(at_cap) == MAX_EXPRESSION_LENGTH
    assert parse(at_cap).minutes == frozenset({0})


@pytest.mark.parametrize(
    "tz",
    [
        "",
        "../../etc/passwd",
        "/etc/localtime",
        "/usr/share/zoneinfo/UTC",
        "localtime",
        "posixrules",
        "Factory",
        "Europe/../UTC",
        "Not/AZone",
        "America/New_York\x00",
        " America/New_York",
        "zone.tab",
        "tzdata.zi",
        "x" * 10000,
        "america/new_york",
    ],
)
def test_unknown_time_zones_are_rejected(tz):
    message = error_of("0 0 * * *", tz)
    assert "time zone" in message
    assert len(message) < 300


def test_time_zone_error_suggests_correct_case():
    assert 'did you mean "America/New_York"?' in error_of("* * * * *", "america/new_york")


def test_time_zone_must_be_a_string():
    assert "time zone must be a string" in error_of("* * * * *", None)


def test_expression_must_be_a_string():
    with pytest.raises(ScheduleError, match="must be a string"):
        parse(None)


def test_schedule_error_is_a_value_error():
    assert issubclass(ScheduleError, ValueError)
    with pytest.raises(ValueError):
        validate("61 * * * *", "UTC")


# --------------------------------------------------------------------------
# Acceptance and parsed sets
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tz", ["UTC", "America/New_York", "Europe/London", "Pacific/Chatham", "US/Eastern", "Etc/GMT+5"]
)
def test_valid_time_zones_are_accepted(tz):
    validate("0 9 * * 1-5", tz)


def test_names_are_case_insensitive_and_work_in_ranges():
    spec = parse("0 9 * jan-MAR mon-fri")
    assert spec.months == frozenset({1, 2, 3})
    assert spec.days_of_week == frozenset({1, 2, 3, 4, 5})
    assert parse("0 9 * Dec Sun").months == frozenset({12})
    assert parse("0 9 * Dec Sun").days_of_week == frozenset({0})


def test_lists_ranges_and_steps():
    spec = parse("0,15,30-32 */6 1-10/3 */4 *")
    assert spec.minutes == frozenset({0, 15, 30, 31, 32})
    assert spec.hours == frozenset({0, 6, 12, 18})
    assert spec.days_of_month == frozenset({1, 4, 7, 10})
    assert spec.months == frozenset({1, 5, 9})
    assert spec.days_of_week == frozenset(range(7))


def test_start_slash_step_means_start_to_max():
    assert parse("5/15 * * * *").minutes == frozenset({5, 20, 35, 50})
    assert parse("0 22/1 * * *").hours == frozenset({22, 23})
    assert parse("0 0 * 11/1 *").months == frozenset({11, 12})
    # day-of-week max is 7, so 1/2 = 1,3,5,7 and 7 is Sunday
    assert parse("0 0 * * 1/2").days_of_week == frozenset({1, 3, 5, 0})


def test_seven_is_sunday():
    assert parse("0 0 * * 7").days_of_week == frozenset({0})
    assert parse("0 0 * * 0").days_of_week == frozenset({0})
    assert parse("0 0 * * 5-7").days_of_week == frozenset({5, 6, 0})
    assert parse("0 0 * * 0-7").days_of_week == frozenset(range(7))
    assert parse("0 0 * * FRI-SUN").days_of_week == frozenset({5, 6, 0})
    assert parse("0 0 * * SUN-SUN").days_of_week == frozenset({0})
    assert parse("0 0 * * sun-sat").days_of_week == frozenset(range(7))
    assert parse("0 0 * * 7-7").days_of_week == frozenset({0})
    # 2026-05-03 is a Sunday
    assert next_fires("0 12 * * 7", "UTC", utc(2026, 5, 1), 2) == [
        utc(2026, 5, 3, 12),
        utc(2026, 5, 10, 12),
    ]


def test_restricted_flags_use_the_literal_star_rule():
    assert parse("0 0 * * *").dom_restricted is False
    assert parse("0 0 * * *").dow_restricted is False
    spec = parse("0 0 */1 * 1")
    assert spec.dom_restricted is True and spec.dow_restricted is True
    # */1 restricts day-of-month (to every day), so with the OR rule it fires daily
    assert next_fires("0 0 */1 * 1", "UTC", utc(2026, 5, 1), 3) == [
        utc(2026, 5, 2), utc(2026, 5, 3), utc(2026, 5, 4)
    ]


def test_sparse_but_valid_expressions_are_accepted():
    validate("0 0 29 2 *", "UTC")
    validate("0 0 31 2 1", "UTC")  # OR rule: fires every Monday
    validate("0 0 30,31 1-2 *", "UTC")
    validate("  0   0\t* * *  ", "UTC")


def test_parse_is_cached_and_frozen():
    assert parse("*/5 * * * *") is parse("*/5 * * * *")
    with pytest.raises(AttributeError):
        parse("*/5 * * * *").minutes = frozenset()


def test_cron_spec_matches():
    spec = parse("30 9 13 * 5")
    assert spec.matches(datetime(2026, 2, 13, 9, 30))  # Friday the 13th
    assert spec.matches(datetime(2026, 5, 13, 9, 30))  # 13th (Wednesday)
    assert spec.matches(datetime(2026, 5, 15, 9, 30))  # Friday
    assert not spec.matches(datetime(2026, 5, 14, 9, 30))
    assert not spec.matches(datetime(2026, 5, 15, 9, 31))


# --------------------------------------------------------------------------
# next_fires
# --------------------------------------------------------------------------


def test_documented_example_friday_8pm_new_york():
    fires = next_fires("0 20 * * 5", NY, utc(2026, 5, 2), 3)
    assert fires == [utc(2026, 5, 9), utc(2026, 5, 16), utc(2026, 5, 23)]
    assert all(f.tzinfo is UTC for f in fires)


def test_spring_forward_gap_does_not_fire():
    fires = next_fires("30 2 * * *", NY, utc(2026, 3, 6), 4)
    assert fires == [
        utc(2026, 3, 6, 7, 30),
        utc(2026, 3, 7, 7, 30),
        # 2026-03-08 02:30 does not exist in New York: no fire that day
        utc(2026, 3, 9, 6, 30),
        utc(2026, 3, 10, 6, 30),
    ]


def test_fall_back_overlap_fires_twice():
    fires = next_fires("30 1 * * *", NY, utc(2026, 10, 31, 12), 4)
    assert fires == [
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT
        utc(2026, 11, 1, 6, 30),  # 01:30 EST
        utc(2026, 11, 2, 6, 30),
        utc(2026, 11, 3, 6, 30),
    ]
    # starting between the two instants yields only the second
    assert next_fires("30 1 * * *", NY, utc(2026, 11, 1, 5, 30), 1) == [utc(2026, 11, 1, 6, 30)]


def test_dom_dow_or_rule():
    fires = next_fires("0 0 13 * 5", "UTC", utc(2026, 1, 31), 8)
    assert fires == [
        utc(2026, 2, 6),
        utc(2026, 2, 13),  # Friday and the 13th: once
        utc(2026, 2, 20),
        utc(2026, 2, 27),
        utc(2026, 3, 6),
        utc(2026, 3, 13),
        utc(2026, 3, 20),
        utc(2026, 3, 27),
    ]
    fires = next_fires("0 0 13 * 5", "UTC", utc(2026, 4, 1), 4)
    assert fires == [utc(2026, 4, 3), utc(2026, 4, 10), utc(2026, 4, 13), utc(2026, 4, 17)]


def test_only_one_day_field_restricted():
    # day-of-month only
    assert next_fires("0 0 13 * *", "UTC", utc(2026, 1, 1), 2) == [utc(2026, 1, 13), utc(2026, 2, 13)]
    # day-of-week only (2026-01-02 is a Friday)
    assert next_fires("0 0 * * 5", "UTC", utc(2026, 1, 1), 2) == [utc(2026, 1, 2), utc(2026, 1, 9)]


def test_strictly_after_and_truncation():
    after = utc(2026, 5, 1, 12, 0)
    assert next_fires("* * * * *", "UTC", after, 2) == [utc(2026, 5, 1, 12, 1), utc(2026, 5, 1, 12, 2)]
    after = utc(2026, 5, 1, 12, 0, 30, 5)
    fires = next_fires("* * * * *", "UTC", after, 1)
    assert fires == [utc(2026, 5, 1, 12, 1)]
    assert fires[0].second == 0 and fires[0].microsecond == 0


def test_after_in_other_time_zone_is_respected():
    after = datetime(2026, 5, 1, 8, 0, tzinfo=ZoneInfo("Asia/Tokyo"))  # 2026-04-30T23:00Z
    assert next_fires("0 0 * * *", "UTC", after, 1) == [utc(2026, 5, 1)]


def test_leap_day_schedule_is_fast_and_skips_2100():
    start = time.perf_counter()
    fires = next_fires("0 0 29 2 *", "UTC", utc(2026, 3, 1), 5)
    assert fires == [utc(2028, 2, 29), utc(2032, 2, 29), utc(2036, 2, 29), utc(2040, 2, 29), utc(2044, 2, 29)]
    assert next_fires("0 0 29 2 *", "UTC", utc(2096, 3, 1), 1) == [utc(2104, 2, 29)]
    assert time.perf_counter() - start < 1.0


def test_n_zero_and_bad_arguments():
    assert next_fires("* * * * *", "UTC", utc(2026, 1, 1), 0) == []
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fires("* * * * *", "UTC", datetime(2026, 1, 1), 1)
    with pytest.raises(ValueError, match="n must be >= 0"):
        next_fires("* * * * *", "UTC", utc(2026, 1, 1), -1)
    with pytest.raises(ScheduleError, match="out of range"):
        next_fires("61 * * * *", "UTC", utc(2026, 1, 1), 1)
    with pytest.raises(ScheduleError, match="time zone"):
        next_fires("* * * * *", "Mars/Olympus", utc(2026, 1, 1), 1)


def test_default_n_is_five_and_results_increase():
    fires = next_fires("*/15 * * * *", NY, utc(2026, 5, 1, 0, 7))
    assert fires == [utc(2026, 5, 1, 0, 15) + timedelta(minutes=15 * i) for i in range(5)]


def test_apia_skipped_day():
    # Samoa skipped 2011-12-30 entirely (UTC-10 -> UTC+14)
    fires = next_fires("0 12 * * *", "Pacific/Apia", utc(2011, 12, 28), 3)
    # local 12:00 on the 28th and 29th at UTC-10 are 22:00Z the same day; there is
    # no 2011-12-30 locally; 2011-12-31 12:00 at UTC+14 is 2011-12-30T22:00Z.
    assert fires == [utc(2011, 12, 28, 22), utc(2011, 12, 29, 22), utc(2011, 12, 30, 22)]
    local_dates = [f.astimezone(ZoneInfo("Pacific/Apia")).date() for f in fires]
    assert local_dates == [date(2011, 12, 28), date(2011, 12, 29), date(2011, 12, 31)]


def test_santiago_midnight_gap():
    # America/Santiago springs forward at 24:00 on 2026-09-05: 2026-09-06 00:00 does not exist
    fires = next_fires("0 0 * * *", "America/Santiago", utc(2026, 9, 4), 3)
    assert fires == [utc(2026, 9, 4, 4), utc(2026, 9, 5, 4), utc(2026, 9, 7, 3)]


# --------------------------------------------------------------------------
# describe
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression, words",
    [
        ("0 20 * * 5", "At 08:00 PM, only on Friday"),
        ("0 9 * * 1-5", "At 09:00 AM, Monday through Friday"),
        ("0 9 * * mon-fri", "At 09:00 AM, Monday through Friday"),
        ("*/15 * * * *", "Every 15 minutes"),
        ("0 0 * * 5-7", "At 12:00 AM, Friday through Sunday"),
        ("0 0 * * 7", "At 12:00 AM, only on Sunday"),
        ("0 0 * * 1/2", "At 12:00 AM, only on Monday, Wednesday, Friday, and Sunday"),
        ("0 0 1 JAN-MAR *", "At 12:00 AM, on day 1 of the month, January through March"),
    ],
)
def test_describe(expression, words):
    assert describe(expression) == words


def test_describe_mentions_or_rule():
    text = describe("0 0 13 * 5")
    assert "day 13" in text and "Friday" in text and "either" in text


def test_describe_rejects_invalid():
    with pytest.raises(ScheduleError):
        describe("@daily")


# --------------------------------------------------------------------------
# dst_notes
# --------------------------------------------------------------------------


def test_dst_notes_skipped():
    notes = dst_notes("30 2 * * *", NY, utc(2026, 11, 23))
    assert notes == [DstNote(date(2027, 3, 14), "02:30", "skipped", ())]
    assert notes[0].as_dict() == {
        "date": "2027-03-14",
        "local_time": "02:30",
        "kind": "skipped",
        "instants": [],
    }


def test_dst_notes_repeated():
    notes = dst_notes("30 1 * * *", NY, utc(2026, 11, 23))
    assert notes == [
        DstNote(date(2027, 11, 7), "01:30", "repeated", (utc(2027, 11, 7, 5, 30), utc(2027, 11, 7, 6, 30)))
    ]
    assert notes[0].as_dict() == {
        "date": "2027-11-07",
        "local_time": "01:30",
        "kind": "repeated",
        "instants": ["2027-11-07T05:30:00Z", "2027-11-07T06:30:00Z"],
    }


def test_dst_notes_unaffected_schedule_and_zone():
    assert dst_notes("0 12 * * *", NY, utc(2026, 1, 1)) == []
    assert dst_notes("30 2 * * *", "UTC", utc(2026, 1, 1)) == []
    assert dst_notes("30 2 * * *", NY, utc(2026, 1, 1), days=30) == []


def test_dst_notes_minute_level_and_cap():
    notes = dst_notes("* * * * *", NY, utc(2026, 1, 1))
    skipped = [n for n in notes if n.kind == "skipped"]
    repeated = [n for n in notes if n.kind == "repeated"]
    assert len(skipped) == 60 and len(repeated) == 60
    assert skipped[0].local_time == "02:00" and skipped[-1].local_time == "02:59"
    assert {n.date for n in skipped} == {date(2026, 3, 8)}
    assert repeated[0].instants == (utc(2026, 11, 1, 5, 0), utc(2026, 11, 1, 6, 0))
    # Samoa skipped a whole day: capped
    capped = dst_notes("* * * * *", "Pacific/Apia", utc(2011, 12, 1), days=60)
    assert len(capped) == schedule.MAX_DST_NOTES == 200
    assert all(n.kind == "skipped" and n.date == date(2011, 12, 30) for n in capped)


def test_dst_notes_lord_howe_half_hour():
    # Lord Howe: 02:00 -> 02:30 on 2026-10-04, 02:00 -> 01:30 on 2026-04-05
    notes = dst_notes("*/15 1-2 * * *", "Australia/Lord_Howe", utc(2026, 1, 1))
    assert [(n.date, n.local_time, n.kind) for n in notes] == [
        (date(2026, 4, 5), "01:30", "repeated"),
        (date(2026, 4, 5), "01:45", "repeated"),
        (date(2026, 10, 4), "02:00", "skipped"),
        (date(2026, 10, 4), "02:15", "skipped"),
    ]
    assert notes[0].instants == (utc(2026, 4, 4, 14, 30), utc(2026, 4, 4, 15, 0))


def test_dst_notes_year_is_cheap():
    start = time.perf_counter()
    dst_notes("* * * * *", "Europe/Berlin", utc(2030, 1, 1))
    assert time.perf_counter() - start < 0.5


# --------------------------------------------------------------------------
# Module hygiene
# --------------------------------------------------------------------------


def test_module_imports_without_django():
    code = (
        "import deployments_app.schedule, sys; "
        "assert 'django' not in sys.modules, 'django imported'; "
        "print(sorted(deployments_app.schedule.__all__))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "next_fires" in result.stdout


def test_uses_tzdata_package_not_os_copy():
    import zoneinfo

    assert zoneinfo.TZPATH == ()
    assert "America/New_York" in zoneinfo.available_timezones()
