"""next_fires against an independent brute-force oracle, around DST transitions.

The oracle does not use the module's parser or matcher: expressions are built
from random field specs whose value sets the test computes itself, and the
oracle steps through every UTC minute of a window, converts it to local wall
time with zoneinfo and checks the five fields.  A UTC minute whose local wall
time matches is a fire, which by construction yields both instants of a
repeated wall time and none for a skipped one.
"""

from datetime import datetime, timedelta, timezone
from functools import lru_cache
from importlib import resources
from zoneinfo import ZoneInfo as _ZoneInfo
from zoneinfo import available_timezones

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployments_app import schedule  # noqa: F401  (pins zoneinfo to the tzdata package)
from deployments_app.schedule import next_fires

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=None)
def ZoneInfo(key):
    """The zone from the pip ``tzdata`` package, as the module uses.

    Not ``zoneinfo.ZoneInfo(key)``: its cache may hold an instance built from
    the OS copy of the tz database by code that ran before the module reset
    the search path (e.g. Django app loading under pytest-django).
    """
    path = resources.files("tzdata.zoneinfo").joinpath(*key.split("/"))
    with path.open("rb") as f:
        return _ZoneInfo.from_file(f, key=key)

ZONES = [
    ("America/New_York", 2026),
    ("Europe/London", 2026),
    ("Australia/Lord_Howe", 2026),
    ("Pacific/Chatham", 2026),
    ("America/Santiago", 2026),
    ("Africa/Casablanca", 2026),
    ("Pacific/Apia", 2011),
    ("UTC", 2026),
]

MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


# --------------------------------------------------------------------------
# Oracle
# --------------------------------------------------------------------------


class OracleSpec:
    """The five value sets, as the test generated them (dow uses 0-6, 0 = Sunday)."""

    def __init__(self, minutes, hours, doms, months, dows, dom_restricted, dow_restricted):
        self.minutes = set(minutes)
        self.hours = set(hours)
        self.doms = set(doms)
        self.months = set(months)
        self.dows = {d % 7 for d in dows}
        self.dom_restricted = dom_restricted
        self.dow_restricted = dow_restricted

    def matches(self, wall):
        if wall.minute not in self.minutes or wall.hour not in self.hours:
            return False
        if wall.month not in self.months:
            return False
        dom_ok = wall.day in self.doms
        dow_ok = wall.isoweekday() % 7 in self.dows
        if self.dom_restricted and self.dow_restricted:
            return dom_ok or dow_ok
        if self.dow_restricted:
            return dow_ok
        if self.dom_restricted:
            return dom_ok
        return True


def oracle_fires(spec, tz, after, end):
    """All fire instants t with after < t <= end (aware UTC datetimes)."""
    zone = ZoneInfo(tz)
    start = int((after - EPOCH).total_seconds()) // 60 * 60 + 60
    stop = int((end - EPOCH).total_seconds())
    hours = spec.hours
    out = []
    for ts in range(start, stop + 1, 60):
        wall = datetime.fromtimestamp(ts, zone)
        if wall.hour in hours and spec.matches(wall):
            out.append(EPOCH + timedelta(seconds=ts))
    return out


def transitions(tz, year):
    """UTC instants where the zone's offset changes during ``year`` (hourly scan + bisect)."""
    zone = ZoneInfo(tz)
    start = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())

    def off(ts):
        return datetime.fromtimestamp(ts, zone).utcoffset()

    found = []
    prev = off(start)
    for ts in range(start + 3600, end + 1, 3600):
        cur = off(ts)
        if cur != prev:
            lo, hi = ts - 3600, ts
            while hi - lo > 60:
                mid = (lo + hi) // 2 // 60 * 60
                if mid == lo:
                    break
                if off(mid) == prev:
                    lo = mid
                else:
                    hi = mid
            found.append(EPOCH + timedelta(seconds=hi))
        prev = cur
    return found


_TRANSITIONS = {(tz, year): transitions(tz, year) for tz, year in ZONES}


def test_oracle_sees_the_expected_transitions():
    assert len(_TRANSITIONS[("America/New_York", 2026)]) == 2
    assert _TRANSITIONS[("America/New_York", 2026)][0] == datetime(2026, 3, 8, 7, tzinfo=UTC)
    assert len(_TRANSITIONS[("Pacific/Apia", 2011)]) == 3
    assert _TRANSITIONS[("Australia/Lord_Howe", 2026)][1] == datetime(2026, 10, 3, 15, 30, tzinfo=UTC)
    assert _TRANSITIONS[("UTC", 2026)] == []
    spec = OracleSpec([30], [1], range(1, 32), range(1, 13), range(7), False, False)
    nov1 = oracle_fires(spec, "America/New_York", datetime(2026, 11, 1, tzinfo=UTC),
                        datetime(2026, 11, 2, tzinfo=UTC))
    assert nov1 == [datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 1, 6, 30, tzinfo=UTC)]


# --------------------------------------------------------------------------
# Random expressions from structured field specs
# --------------------------------------------------------------------------


def field_strategy(low, high, names=None, dense=False, star_weight=1):
    """(text, set) pairs for one field; the set is computed here, not by the module."""

    def named(use_names, v):
        if names is None or not use_names:
            return str(v)
        return MONTHS[v - 1] if names is MONTHS else DAYS[v % 7]

    star = st.just(("*", set(range(low, high + 1))))

    @st.composite
    def single(draw):
        v = draw(st.integers(low, high))
        return named(draw(st.booleans()), v), {v}

    @st.composite
    def listed(draw):
        vals = draw(st.lists(st.integers(low, high), min_size=2, max_size=5, unique=True))
        use_names = draw(st.booleans())
        return ",".join(named(use_names, v) for v in vals), set(vals)

    @st.composite
    def ranged(draw):
        a = draw(st.integers(low, high))
        b = draw(st.integers(a, high))
        # "FRI-SUN": SUN ending a range means 7; "SUN-SUN" is just Sunday, so
        # 0-7 (every day) has no all-names spelling
        use_names = draw(st.booleans()) and not (names is DAYS and a == 0 and b == 7)
        return f"{named(use_names, a)}-{named(use_names, b)}", set(range(a, b + 1))

    @st.composite
    def stepped(draw):
        step = draw(st.integers(1, max(1, (high - low) // 2)))
        kind = draw(st.sampled_from(["star", "range", "start"]))
        if kind == "star":
            return f"*/{step}", set(range(low, high + 1, step))
        a = draw(st.integers(low, high))
        if kind == "start":  # a/n = a-max/n
            return f"{a}/{step}", set(range(a, high + 1, step))
        b = draw(st.integers(a, high))
        return f"{a}-{b}/{step}", set(range(a, b + 1, step))

    options = [star] * star_weight + [single(), listed(), ranged(), stepped()]
    if dense:
        options += [star, stepped()]
    return st.one_of(options)


def field_containing(low, high, value, names=None):
    """(text, set) pairs for one field whose set contains ``value``."""

    def show(v, use_names):
        if names is None or not use_names:
            return str(v)
        return MONTHS[v - 1] if names is MONTHS else DAYS[v % 7]

    @st.composite
    def build(draw):
        use_names = draw(st.booleans())
        kind = draw(st.sampled_from(["single", "list", "range", "step"]))
        if kind == "single":
            return show(value, use_names), {value}
        if kind == "list":
            others = draw(st.lists(st.integers(low, high), max_size=3, unique=True))
            vals = list(dict.fromkeys(others + [value]))
            vals = draw(st.permutations(vals))
            return ",".join(show(v, use_names) for v in vals), set(vals)
        if kind == "range":
            a = draw(st.integers(low, value))
            b = draw(st.integers(value, high))
            use_names = use_names and not (names is DAYS and a == 0 and b == 7)
            return f"{show(a, use_names)}-{show(b, use_names)}", set(range(a, b + 1))
        step = draw(st.integers(1, 4))
        a = value - step * draw(st.integers(0, (value - low) // step))
        return f"{a}/{step}", set(range(a, high + 1, step))

    return build()


@st.composite
def cases(draw, tz, year):
    """(expression text, oracle spec, after) with ``after`` near a transition.

    Day-level fields are either random or built to contain the local date of
    the transition, so most cases fire inside the oracle window.
    """
    found = _TRANSITIONS[(tz, year)]
    if found:
        base = draw(st.sampled_from(found))
        before = draw(st.integers(0, 3))  # mostly shortly before the transition
        minutes = draw(st.integers(1, 48 * 60)) * (-1 if before else 1)
    else:
        base = datetime(year, 1, 1, tzinfo=UTC)
        minutes = draw(st.integers(0, 365 * 24 * 60))
    seconds = draw(st.sampled_from([0, 0, 0, 1, 30, 59]))
    after = base + timedelta(minutes=minutes, seconds=seconds)
    local = (base if found else after).astimezone(ZoneInfo(tz))
    local += timedelta(days=draw(st.sampled_from([0, 0, 0, 1, -1])))

    minute = draw(field_strategy(0, 59, dense=True))
    hour = draw(st.one_of(field_strategy(0, 23, dense=True, star_weight=2),
                          field_containing(0, 23, local.hour)))
    dom = draw(st.one_of([field_strategy(1, 31, star_weight=3)] * 2
                         + [field_containing(1, 31, local.day)]))
    month = draw(st.one_of([st.just(("*", set(range(1, 13))))] * 2
                           + [field_containing(1, 12, local.month, MONTHS),
                              field_strategy(1, 12, names=MONTHS, star_weight=2)]))
    dow = draw(st.one_of([field_strategy(0, 7, names=DAYS, star_weight=3)] * 2
                         + [field_containing(0, 7, local.isoweekday() % 7, DAYS)]))
    # skip the (rejected) never-firing day-of-month/month combinations
    max_days = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}
    if dow[0] == "*" and not any(d <= max_days[m] for m in month[1] for d in dom[1]):
        dom = ("*", set(range(1, 32)))
    text = " ".join(f[0] for f in (minute, hour, dom, month, dow))
    spec = OracleSpec(minute[1], hour[1], dom[1], month[1], dow[1], dom[0] != "*", dow[0] != "*")
    return text, spec, after


WINDOW = timedelta(days=3)
K = 6


def check_against_oracle(text, spec, tz, after):
    end = after + WINDOW
    expected = oracle_fires(spec, tz, after, end)
    got = next_fires(text, tz, after, K)
    m = min(K, len(expected))
    assert got[:m] == expected[:m], (text, tz, after)
    if len(expected) < K and len(got) > len(expected):
        assert got[len(expected)] > end, (text, tz, after)
    assert got == sorted(set(got))
    assert all(g.tzinfo is UTC and g.second == 0 and g.microsecond == 0 for g in got)
    return expected


@pytest.mark.parametrize("tz, year", ZONES)
def test_next_fires_matches_oracle_near_transitions(tz, year):
    @settings(
        max_examples=60,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=cases(tz, year))
    def run(case):
        text, spec, after = case
        expected = check_against_oracle(text, spec, tz, after)
        counts.append(len(expected))

    counts = []
    run()
    # the generated cases must mostly fire inside the oracle window
    assert sum(1 for c in counts if c > 0) > len(counts) // 3


@pytest.mark.parametrize("tz, year", ZONES)
@pytest.mark.parametrize("text", ["*/30 * * * *", "* * * * *", "15,45 0-3 * * *", "*/7 1-3 * * *"])
def test_dense_schedules_across_each_transition(tz, year, text):
    """Every fire within a day either side of every transition of the year."""
    sets = {
        "*/30 * * * *": ({0, 30}, set(range(24))),
        "* * * * *": (set(range(60)), set(range(24))),
        "15,45 0-3 * * *": ({15, 45}, {0, 1, 2, 3}),
        "*/7 1-3 * * *": (set(range(0, 60, 7)), {1, 2, 3}),
    }[text]
    spec = OracleSpec(sets[0], sets[1], range(1, 32), range(1, 13), range(7), False, False)
    points = _TRANSITIONS[(tz, year)] or [datetime(year, 6, 1, tzinfo=UTC)]
    for point in points:
        after, end = point - timedelta(days=1), point + timedelta(days=1)
        expected = oracle_fires(spec, tz, after, end)
        got = next_fires(text, tz, after, len(expected) + 1)
        assert got[:-1] == expected, (tz, point)
        assert got[-1] > end


# --------------------------------------------------------------------------
# Whole-year chains
# --------------------------------------------------------------------------


def chain(text, tz, start, end, batch=7):
    out = []
    after = start
    while True:
        fires = next_fires(text, tz, after, batch)
        assert fires and fires[0] > after
        for f in fires:
            if f > end:
                return out
            out.append(f)
        after = fires[-1]


ALL = range(60), range(24), range(1, 32), range(1, 13), range(7)


@pytest.mark.parametrize(
    "text, tz, year, spec",
    [
        ("30 1 * * *", "America/New_York", 2026, OracleSpec([30], [1], *ALL[2:], False, False)),
        ("*/30 1-3 * * *", "America/New_York", 2026, OracleSpec([0, 30], [1, 2, 3], *ALL[2:], False, False)),
        ("0 2 * * 0", "America/New_York", 2026, OracleSpec([0], [2], *ALL[2:4], [0], False, True)),
        ("0,30 2 * * *", "Australia/Lord_Howe", 2026, OracleSpec([0, 30], [2], *ALL[2:], False, False)),
        ("45 2 * * *", "Pacific/Chatham", 2026, OracleSpec([45], [2], *ALL[2:], False, False)),
        ("0 0 * * *", "America/Santiago", 2026, OracleSpec([0], [0], *ALL[2:], False, False)),
        ("0 12 * * *", "Pacific/Apia", 2011, OracleSpec([0], [12], *ALL[2:], False, False)),
        ("0 0,12 13 * 5", "Africa/Casablanca", 2026, OracleSpec([0], [0, 12], [13], ALL[3], [5], True, True)),
    ],
)
def test_whole_year_chain_matches_oracle(text, tz, year, spec):
    start = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    expected = oracle_fires(spec, tz, start, end)
    assert len(expected) > 40
    assert chain(text, tz, start, end) == expected


def test_whole_year_chain_sees_both_dst_effects():
    # sanity on the oracle-backed chain: 365 days, one skipped, one repeated
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    assert len(chain("30 2 * * *", "America/New_York", start, end)) == 364
    assert len(chain("30 1 * * *", "America/New_York", start, end)) == 366


# --------------------------------------------------------------------------
# Every zone in the database, once
# --------------------------------------------------------------------------


def test_every_zone_first_transition_of_2026():
    """For every IANA zone with a 2026 offset change, */15 around the first one."""
    spec = OracleSpec({0, 15, 30, 45}, range(24), *ALL[2:], False, False)
    checked = 0
    zones = sorted(available_timezones() - {"Factory", "localtime", "posixrules"})
    start_ts = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    for tz in zones:
        zone = ZoneInfo(tz)
        first = datetime.fromtimestamp(start_ts, zone).utcoffset()
        point = None
        for day in range(1, 366):  # daily scan, then refine to the hour
            ts = start_ts + day * 86400
            if datetime.fromtimestamp(ts, zone).utcoffset() != first:
                point = EPOCH + timedelta(seconds=ts)
                break
        if point is None:
            continue
        after, end = point - timedelta(days=1, hours=1), point + timedelta(hours=1)
        expected = oracle_fires(spec, tz, after, end)
        got = next_fires("*/15 * * * *", tz, after, len(expected) + 1)
        assert got[:-1] == expected, tz
        assert got[-1] > end, tz
        checked += 1
    assert checked > 50


# --------------------------------------------------------------------------
# The probing assumption behind the module's transition search
# --------------------------------------------------------------------------


def test_no_offset_round_trip_shorter_than_probe_step():
    """The module finds transitions by probing the offset once a day; that is
    exact only if no zone changes its offset and back within one step."""
    common = pytest.importorskip("zoneinfo._common")
    if not hasattr(common, "load_tzdata") or not hasattr(common, "load_data"):
        pytest.skip("zoneinfo internals changed")
    shortest = None
    for key in available_timezones():
        with common.load_tzdata(key) as f:
            trans_idx, trans_utc, utcoff, _isdst, _abbr, _tz_str = common.load_data(f)
        effective = []
        current = utcoff[0] if utcoff else 0
        for t, idx in zip(trans_utc, trans_idx):
            if utcoff[idx] != current:
                effective.append((t, current, utcoff[idx]))
                current = utcoff[idx]
        for i, (t, before, _after) in enumerate(effective):
            for later, _b, new in effective[i + 1 : i + 6]:
                if new == before:
                    gap = later - t
                    shortest = gap if shortest is None else min(shortest, gap)
                    break
    assert shortest is not None
    assert shortest > schedule._PROBE_STEP


@pytest.mark.parametrize("tz", ["America/New_York", "Australia/Lord_Howe", "Africa/Casablanca", "Asia/Gaza"])
def test_module_transitions_match_tzif_data(tz):
    common = pytest.importorskip("zoneinfo._common")
    with common.load_tzdata(tz) as f:
        trans_idx, trans_utc, utcoff, _isdst, _abbr, _tz_str = common.load_data(f)
    expected = []
    current = None
    for t, idx in zip(trans_utc, trans_idx):
        if current is not None and utcoff[idx] != current and 631152000 <= t < 2082758400:  # 1990..2035
            expected.append((t, current, utcoff[idx]))
        current = utcoff[idx]
    last_year = datetime.fromtimestamp(trans_utc[-1], UTC).year
    got = [
        tr
        for year in range(1990, min(last_year, 2035) + 1)
        for tr in schedule._year_transitions(tz, year)
        if tr[0] <= trans_utc[-1]
    ]
    expected = [tr for tr in expected if tr[0] <= trans_utc[-1]]
    assert got == expected


def test_fixed_offset_shortcut_only_covers_fixed_zones():
    """The module skips probing for UTC/GMT aliases and Etc/* zones."""
    common = pytest.importorskip("zoneinfo._common")
    fixed = [k for k in available_timezones() if k in schedule._FIXED_ZONES or k.startswith("Etc/")]
    assert "UTC" in fixed and "Etc/GMT+5" in fixed
    for key in fixed:
        with common.load_tzdata(key) as f:
            _idx, trans_utc, utcoff, _isdst, _abbr, tz_str = common.load_data(f)
        assert len(set(utcoff)) == 1, key
        assert b"," not in tz_str, key  # no DST rule in the footer
