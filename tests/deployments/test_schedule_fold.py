"""The DST fold policy and the active window of next_fires / dst_notes, against a brute-force oracle.

The oracle extends the one of test_schedule_dst: it steps through every UTC minute of a window
widened by a margin on both sides, converts each to local wall time with zoneinfo and keeps the
matching ones, grouped by wall time. A wall time with two UTC instants happened twice; the
policy keeps both ("both"), the earlier ("first") or the later ("last") — decided from the whole
group, so a repeat whose other instant lies before `after` is judged right too. The margin (26
hours) is wider than any fall-back of the zones covered (at most one hour), so every group is
complete. The window keeps instants with start_at <= t <= end_at.
"""

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployments_app.schedule import DST_FOLDS, dst_notes, next_fires
from tests.deployments.test_schedule_dst import (
    _TRANSITIONS,
    ALL,
    DAYS,
    EPOCH,
    MONTHS,
    WINDOW,
    ZONES,
    OracleSpec,
    ZoneInfo,
    cases,
    field_containing,
    field_strategy,
)

UTC = timezone.utc
MARGIN = timedelta(hours=26)
NY = "America/New_York"


def _minute(dt: datetime) -> int:
    return int((dt - EPOCH).total_seconds()) // 60 * 60


def matching_groups(spec, tz, start, stop) -> dict:
    """{local wall time: [UTC seconds, ...]} for every matching minute in [start, stop]."""
    zone = ZoneInfo(tz)
    groups: dict = {}
    hours = spec.hours
    for ts in range(_minute(start), int((stop - EPOCH).total_seconds()) + 1, 60):
        wall = datetime.fromtimestamp(ts, zone)
        if wall.hour in hours and spec.matches(wall):
            groups.setdefault(wall.replace(tzinfo=None, fold=0), []).append(ts)
    return groups


def folded(groups: dict, dst_fold: str) -> list[int]:
    out = []
    for instants in groups.values():
        if dst_fold == "first":
            out.append(min(instants))
        elif dst_fold == "last":
            out.append(max(instants))
        else:
            out.extend(instants)
    return sorted(out)


def oracle(spec, tz, after, end, dst_fold="both", start_at=None, end_at=None, groups=None) -> list[datetime]:
    """Fire instants t with after < t <= end under the policy and the window."""
    if groups is None:
        groups = matching_groups(spec, tz, after - MARGIN, end + MARGIN)
    low = after.timestamp()
    high = end.timestamp()
    out = []
    for ts in folded(groups, dst_fold):
        if not low < ts <= high:
            continue
        if start_at is not None and ts < start_at.timestamp():
            continue
        if end_at is not None and ts > end_at.timestamp():
            continue
        out.append(EPOCH + timedelta(seconds=ts))
    return out


def test_the_oracle_folds_new_yorks_repeated_hour():
    spec = OracleSpec([30], [1], *ALL[2:], False, False)
    after, end = datetime(2026, 10, 31, 12, tzinfo=UTC), datetime(2026, 11, 2, 12, tzinfo=UTC)
    first, second, next_day = (datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 1, 6, 30, tzinfo=UTC),
                               datetime(2026, 11, 2, 6, 30, tzinfo=UTC))
    assert oracle(spec, NY, after, end) == [first, second, next_day]
    assert oracle(spec, NY, after, end, "first") == [first, next_day]
    assert oracle(spec, NY, after, end, "last") == [second, next_day]
    # Starting between the two instants: the second is the last, never the first.
    between = datetime(2026, 11, 1, 6, tzinfo=UTC)
    assert oracle(spec, NY, between, end, "first") == [next_day]
    assert oracle(spec, NY, between, end, "last") == [second, next_day]


# --------------------------------------------------------------------------
# Every fold policy, every zone of the DST suite
# --------------------------------------------------------------------------

K = 6


def fall_backs(tz, year) -> list[datetime]:
    zone = ZoneInfo(tz)
    return [point for point in _TRANSITIONS[(tz, year)]
            if (point - timedelta(minutes=1)).astimezone(zone).utcoffset() > point.astimezone(zone).utcoffset()]


@st.composite
def fold_cases(draw, tz, year):
    """Three cases in four aimed at a fall-back: the expression matches the repeated local hour on
    the day it repeats, and `after` lies within a few hours of it; the rest are the DST suite's."""
    backs = fall_backs(tz, year)
    if not backs or draw(st.integers(0, 3)) == 0:
        return draw(cases(tz, year))
    point = draw(st.sampled_from(backs))
    local = point.astimezone(ZoneInfo(tz))  # the first repeated wall minute
    minute = draw(field_strategy(0, 59, dense=True))
    hour = draw(field_containing(0, 23, local.hour))
    dom = draw(st.one_of(st.just(("*", set(range(1, 32)))), field_containing(1, 31, local.day)))
    month = draw(st.one_of(st.just(("*", set(range(1, 13)))), field_containing(1, 12, local.month, MONTHS)))
    dow = draw(st.one_of(st.just(("*", set(range(7)))), field_containing(0, 7, local.isoweekday() % 7, DAYS)))
    text = " ".join(f[0] for f in (minute, hour, dom, month, dow))
    spec = OracleSpec(minute[1], hour[1], dom[1], month[1], dow[1], dom[0] != "*", dow[0] != "*")
    after = point + timedelta(minutes=draw(st.integers(-150, 60)), seconds=draw(st.sampled_from([0, 0, 1, 59])))
    return text, spec, after


@pytest.mark.parametrize("dst_fold", DST_FOLDS)
@pytest.mark.parametrize("tz, year", ZONES)
def test_next_fires_matches_the_oracle_near_transitions_under_each_fold_policy(tz, year, dst_fold):
    mismatches = []

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(case=fold_cases(tz, year))
    def run(case):
        text, spec, after = case
        end = after + WINDOW
        expected = oracle(spec, tz, after, end, dst_fold)
        got = next_fires(text, tz, after, K, dst_fold=dst_fold)
        m = min(K, len(expected))
        if got[:m] != expected[:m] or (len(expected) < K and len(got) > len(expected) and got[len(expected)] <= end):
            mismatches.append((text, after, got, expected))
        assert got == sorted(set(got))

    run()
    assert mismatches == []


@pytest.mark.parametrize("dst_fold", DST_FOLDS)
@pytest.mark.parametrize("tz, year", ZONES)
def test_dense_schedules_across_each_transition_under_each_fold_policy(tz, year, dst_fold):
    """Every fire within a day either side of every transition of the year, from every start
    point of an hour around it too (so `after` also lands inside a repeated hour)."""
    spec = OracleSpec(set(range(0, 60, 10)), set(range(24)), *ALL[2:], False, False)
    points = _TRANSITIONS[(tz, year)] or [datetime(year, 6, 1, tzinfo=UTC)]
    for point in points:
        groups = matching_groups(spec, tz, point - timedelta(days=2), point + timedelta(days=2))
        for shift in range(-90, 91, 10):
            after = point + timedelta(minutes=shift) - timedelta(hours=1)
            end = after + timedelta(hours=26)
            expected = oracle(spec, tz, after, end, dst_fold, groups=groups)
            got = next_fires("*/10 * * * *", tz, after, len(expected) + 1, dst_fold=dst_fold)
            assert got[:-1] == expected, (tz, point, shift)
            assert got[-1] > end


WHOLE_YEAR = [
    ("30 1 * * *", NY, 2026, OracleSpec([30], [1], *ALL[2:], False, False)),
    ("*/30 1-3 * * *", NY, 2026, OracleSpec([0, 30], [1, 2, 3], *ALL[2:], False, False)),
    ("0,30 1 * * *", "Australia/Lord_Howe", 2026, OracleSpec([0, 30], [1], *ALL[2:], False, False)),
    ("45 2 * * *", "Pacific/Chatham", 2026, OracleSpec([45], [2], *ALL[2:], False, False)),
    ("0 23 * * *", "America/Santiago", 2026, OracleSpec([0], [23], *ALL[2:], False, False)),
    ("0 2 * * *", "Africa/Casablanca", 2026, OracleSpec([0], [2], *ALL[2:], False, False)),
    ("0 3 * * *", "Pacific/Apia", 2011, OracleSpec([0], [3], *ALL[2:], False, False)),
    ("0 1 * * *", "Europe/London", 2026, OracleSpec([0], [1], *ALL[2:], False, False)),
    ("0 1 * * *", "UTC", 2026, OracleSpec([0], [1], *ALL[2:], False, False)),
]


def chain(text, tz, start, end, **options):
    out, after = [], start
    for _ in range(2000):
        fires = next_fires(text, tz, after, 7, **options)
        assert fires and fires[0] > after
        for fire in fires:
            if fire > end:
                return out
            out.append(fire)
        after = fires[-1]
    raise AssertionError("the chain did not reach the end of the year")


@pytest.mark.parametrize("text, tz, year, spec", WHOLE_YEAR)
def test_whole_year_chains_match_the_oracle_under_each_fold_policy(text, tz, year, spec):
    start, end = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    groups = matching_groups(spec, tz, start - MARGIN, end + MARGIN)
    results = {}
    for dst_fold in DST_FOLDS:
        expected = oracle(spec, tz, start, end, dst_fold, groups=groups)
        assert len(expected) > 40
        results[dst_fold] = chain(text, tz, start, end, dst_fold=dst_fold)
        assert results[dst_fold] == expected, dst_fold
    repeats = sum(1 for instants in groups.values() if len(instants) > 1)
    # Each repeated wall time fires once fewer under "first" and "last" than under "both".
    assert len(results["first"]) == len(results["last"]) == len(results["both"]) - repeats


def test_a_repeated_daily_time_fires_365_times_a_year_under_first_and_last():
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    assert len(chain("30 1 * * *", NY, start, end)) == 366
    assert len(chain("30 1 * * *", NY, start, end, dst_fold="first")) == 365
    assert len(chain("30 1 * * *", NY, start, end, dst_fold="last")) == 365


@pytest.mark.parametrize("dst_fold", ["first", "last"])
def test_every_zone_first_transition_of_2026_under_fold_policies(dst_fold):
    """For every IANA zone with a 2026 offset change, */15 around the first one."""
    from zoneinfo import available_timezones

    spec = OracleSpec({0, 15, 30, 45}, range(24), *ALL[2:], False, False)
    checked = 0
    start_ts = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    for tz in sorted(available_timezones() - {"Factory", "localtime", "posixrules"}):
        zone = ZoneInfo(tz)
        first = datetime.fromtimestamp(start_ts, zone).utcoffset()
        point = None
        for day in range(1, 366):
            ts = start_ts + day * 86400
            if datetime.fromtimestamp(ts, zone).utcoffset() != first:
                point = EPOCH + timedelta(seconds=ts)
                break
        if point is None:
            continue
        after, end = point - timedelta(days=1, hours=1), point + timedelta(hours=1)
        expected = oracle(spec, tz, after, end, dst_fold)
        got = next_fires("*/15 * * * *", tz, after, len(expected) + 1, dst_fold=dst_fold)
        assert got[:-1] == expected, tz
        assert got[-1] > end, tz
        checked += 1
    assert checked > 50


# --------------------------------------------------------------------------
# The active window
# --------------------------------------------------------------------------


@st.composite
def windowed(draw, tz, year):
    text, spec, after = draw(cases(tz, year))
    start_at = end_at = None
    if draw(st.booleans()):
        start_at = after + timedelta(minutes=draw(st.integers(-600, 3 * 24 * 60)), seconds=draw(st.sampled_from([0, 1, 59])))
    if draw(st.booleans()):
        base = start_at or after
        end_at = base + timedelta(minutes=draw(st.integers(0, 3 * 24 * 60)), seconds=draw(st.sampled_from([0, 30])))
    return text, spec, after, start_at, end_at, draw(st.sampled_from(DST_FOLDS))


@pytest.mark.parametrize("tz, year", ZONES)
def test_next_fires_respects_the_window_like_the_oracle(tz, year):
    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(case=windowed(tz, year))
    def run(case):
        text, spec, after, start_at, end_at, dst_fold = case
        end = max(after, start_at or after) + WINDOW
        expected = oracle(spec, tz, after, end, dst_fold, start_at, end_at)
        got = next_fires(text, tz, after, K, dst_fold=dst_fold, start_at=start_at, end_at=end_at)
        m = min(K, len(expected))
        assert got[:m] == expected[:m], (text, after, start_at, end_at, dst_fold)
        if len(expected) < K and len(got) > len(expected):
            assert got[len(expected)] > end
        if end_at is not None:
            assert all(fire <= end_at for fire in got)
        if start_at is not None:
            assert all(fire >= start_at for fire in got)

    run()


def test_window_bounds_are_inclusive_and_the_search_stops_at_the_end():
    after = datetime(2026, 1, 1, tzinfo=UTC)
    start, end = datetime(2026, 3, 1, 10, tzinfo=UTC), datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert next_fires("0 * * * *", "UTC", after, 5, start_at=start, end_at=end) == [
        start, start + timedelta(hours=1), end]
    # A start a microsecond after the hour excludes that hour; an end a microsecond before excludes it.
    tiny = timedelta(microseconds=1)
    assert next_fires("0 * * * *", "UTC", after, 5, start_at=start + tiny, end_at=end - tiny) == [
        start + timedelta(hours=1)]
    # A window that ended answers nothing at once instead of searching ten years.
    assert next_fires("0 0 29 2 *", "UTC", after, 5, end_at=after - timedelta(days=1)) == []
    assert next_fires("0 0 29 2 *", "UTC", after, 5, end_at=datetime(2027, 1, 1, tzinfo=UTC)) == []
    assert next_fires("0 0 29 2 *", "UTC", after, 1, start_at=datetime(2030, 1, 1, tzinfo=UTC)) == [
        datetime(2032, 2, 29, tzinfo=UTC)]


def test_a_window_opening_beyond_the_searched_years_never_fires():
    after = datetime(2026, 1, 1, tzinfo=UTC)
    assert next_fires("* * * * *", NY, after, 3, start_at=datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)) == []
    assert next_fires("0 0 1 1 *", "UTC", after, 1, start_at=datetime(9980, 6, 1, tzinfo=UTC)) == [
        datetime(9981, 1, 1, tzinfo=UTC)]
    assert next_fires("* * * * *", NY, after, 1, start_at=datetime(1, 1, 1, tzinfo=UTC),
                      end_at=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == [after + timedelta(minutes=1)]


def test_engine_options_are_checked():
    after = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="dst_fold"):
        next_fires("0 * * * *", "UTC", after, 1, dst_fold="middle")
    with pytest.raises(ValueError, match="start_at"):
        next_fires("0 * * * *", "UTC", after, 1, start_at=datetime(2026, 1, 1))
    with pytest.raises(TypeError, match="end_at"):
        next_fires("0 * * * *", "UTC", after, 1, end_at="2026-01-01")


# --------------------------------------------------------------------------
# DST notes say what each policy does
# --------------------------------------------------------------------------


def test_dst_notes_say_which_instants_fire_under_each_policy():
    after = datetime(2026, 10, 1, tzinfo=UTC)
    first, second = datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    [default] = dst_notes("30 1 * * *", NY, after, days=60)
    assert default.fires is None and "fires" not in default.as_dict()  # unchanged without a policy
    for dst_fold, fires in (("both", [first, second]), ("first", [first]), ("last", [second])):
        [note] = dst_notes("30 1 * * *", NY, after, days=60, dst_fold=dst_fold,
                           start_at=datetime(2026, 1, 1, tzinfo=UTC))
        assert note.instants == (first, second)
        assert list(note.fires) == fires
        assert note.as_dict()["fires"] == [f"{at:%Y-%m-%dT%H:%M:%S}Z" for at in fires]
    # Each note's fires are exactly the engine's fires at those instants.
    for dst_fold in DST_FOLDS:
        [note] = dst_notes("30 1 * * *", NY, after, days=60, dst_fold=dst_fold)
        engine = next_fires("30 1 * * *", NY, first - timedelta(minutes=1), 2, dst_fold=dst_fold)
        assert [at for at in engine if at in note.instants] == list(note.fires or note.instants)


def test_dst_notes_outside_the_window_do_not_fire():
    after = datetime(2026, 10, 1, tzinfo=UTC)
    [note] = dst_notes("30 1 * * *", NY, after, days=60, end_at=datetime(2026, 11, 1, 6, tzinfo=UTC))
    assert note.fires == (datetime(2026, 11, 1, 5, 30, tzinfo=UTC),)
    [skipped] = dst_notes("30 2 * * *", NY, datetime(2027, 3, 1, tzinfo=UTC), days=30, dst_fold="last")
    assert skipped.kind == "skipped" and skipped.fires == () and skipped.as_dict()["fires"] == []

