"""Cron schedules for deployments: strict parsing, next fire times, DST notes.

This module deliberately has **no Django imports** so it can be used (and
tested, and benchmarked) on its own.

Grammar (classic 5-field POSIX / Vixie cron)::

    minute hour day-of-month month day-of-week

* minute 0-59, hour 0-23, day-of-month 1-31, month 1-12 or JAN-DEC,
  day-of-week 0-7 or SUN-SAT (0 and 7 are both Sunday, so ``5-7`` means
  Friday, Saturday, Sunday).  Names are case-insensitive and may be used in
  ranges (``mon-fri``, ``JAN-MAR``); as a convenience a range *ending* in
  ``SUN`` (``FRI-SUN``) means "through Sunday" (SUN counts as 7 there).
* Each field is a comma-separated list of items; an item is ``*``, a value
  ``a``, or a range ``a-b``, optionally followed by a step ``/n``.  ``a/n``
  means ``a-max/n`` as in Vixie cron.  Steps must be between 1 and the
  field's maximum value.
* Not supported (rejected with an explanation): seconds or year fields,
  ``@daily``-style shortcuts, Quartz/Jenkins extensions ``L``, ``W``, ``#``,
  ``?`` and ``H``.

Day rule (classic cron): a field is *restricted* when its text is anything
other than exactly ``*``.  When day-of-month and day-of-week are both
restricted, a day matches when EITHER matches (``0 0 13 * 5`` runs on every
13th and on every Friday); when only one is restricted only that one counts.
Note that Vixie cron/cronie decide "restricted" by whether the field text
*starts* with ``*`` (so there ``*/2`` counts as unrestricted); we use the
simpler "exactly ``*``" rule, so ``*/1`` or ``*/2`` are restricted here.

Time zones are IANA keys, and schedules use *literal wall-clock* matching:
a UTC instant fires when its local wall-clock time (in the schedule's time
zone) matches the expression.  Consequently a local time that does not exist
(spring-forward gap) does not fire at all, and a local time that happens
twice (fall-back overlap) fires twice.

Two options refine that, for :func:`next_fires` and :func:`dst_notes` alike
(so every caller that previews or fires a schedule gets them from one place):

* ``dst_fold``: what a local time that happens twice does.  ``"both"`` (the
  default, the rule above) fires at both UTC instants, ``"first"`` only at the
  earlier one, ``"last"`` only at the later one.  Skipped times never fire.
* ``start_at`` / ``end_at``: an active window; no instant before ``start_at``
  or after ``end_at`` fires (both bounds inclusive, either may be None).
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone as dt_timezone
from functools import lru_cache

# Pin independence: zoneinfo normally reads the operating system's tz
# database (/usr/share/zoneinfo) first and only falls back to the pip
# ``tzdata`` package when a key is not found there.  The OS copy differs from
# machine to machine (and changes with OS updates), so fire times would
# silently drift between developers, CI and production.  With an empty search
# path zoneinfo uses only the ``tzdata`` package, whose version is pinned with
# the project's other dependencies.  This is process-wide; it must run before
# any ZoneInfo is created (we additionally load our zones with
# ``ZoneInfo.no_cache`` so an instance created from the OS copy before this
# module was imported is never reused here).  ``available_timezones()`` keeps
# working: with an empty path it reads the ``tzdata`` package's zone list.
zoneinfo.reset_tzpath(to=[])

__all__ = [
    "MAX_EXPRESSION_LENGTH",
    "DST_FOLDS",
    "CronSpec",
    "DstNote",
    "ScheduleError",
    "describe",
    "dst_notes",
    "next_fires",
    "parse",
    "validate",
]

#: Longest accepted expression (characters, before stripping whitespace).
MAX_EXPRESSION_LENGTH = 256
#: Longest accepted time zone key (the longest IANA key is ~30 characters).
MAX_TIMEZONE_LENGTH = 64
#: Most notes returned by :func:`dst_notes`.
MAX_DST_NOTES = 200
#: What a local time that happens twice (a fall-back overlap) does: fire at both UTC instants, the
#: first only, or the last only.  The first is the default (the hosted API's literal rule).
DST_FOLDS = ("both", "first", "last")

UTC = dt_timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DAY = 86400
_MAX_ORDINAL = date.max.toordinal()

# Search gives up when no fire was found for this long (seconds).  The
# sparsest valid schedule (``0 0 29 2 *``) can go 8 years without firing
# (2096-02-29 -> 2104-02-29), so 10 years never cuts off a real schedule.
_GIVE_UP_AFTER = 3660 * _DAY

# Transitions are located by probing the zone's UTC offset every
# ``_PROBE_STEP`` seconds and bisecting to the second.  This is exact as long
# as the offset never changes and changes *back* to the same value within one
# step.  In tzdata the shortest such round trip is ~6.96 days (Brazil 2000,
# Gaza/Hebron projections), so a 2-day step leaves a 3x margin; a test
# re-checks this against the installed data.  Tables are cached per
# (zone, year), so a zone-year costs ~180 offset look-ups once per process.
_PROBE_STEP = 2 * _DAY

# Zones that by definition never change offset (the tz database's "Etc" area
# and its aliases): no probing needed.
_FIXED_ZONES = frozenset({"UTC", "UCT", "GMT", "GMT0", "GMT+0", "GMT-0", "Greenwich",
                          "Universal", "Zulu"})

_MIN_YEAR = 2
_MAX_YEAR = 9980

_MONTH_NAMES = {
    name: i
    for i, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN",
         "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"),
        start=1,
    )
}
_DOW_NAMES = {
    name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))
}
_MONTH_LABELS = (
    None, "January", "February", "March", "April", "May", "June", "July",
    "August", "September", "October", "November", "December",
)
_MAX_MONTH_DAYS = (None, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_MONTH_DAYS = (None, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

# (name, low, high, names)
_FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day-of-month", 1, 31, None),
    ("month", 1, 12, _MONTH_NAMES),
    ("day-of-week", 0, 7, _DOW_NAMES),
)

_SHORTCUTS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_DIGITS = re.compile(r"[0-9]+")
_L_TOKEN = re.compile(r"[0-9]*L[W]?", re.IGNORECASE)
_W_TOKEN = re.compile(r"[0-9]*W", re.IGNORECASE)
_H_TOKEN = re.compile(r"H(\(.*)?", re.IGNORECASE)


class ScheduleError(ValueError):
    """An invalid cron expression or time zone; the message says what and where."""


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class CronSpec:
    """A parsed, validated cron expression.

    The five sets hold plain ints; ``days_of_week`` uses 0-6 with 0 = Sunday
    (a 7 in the expression is folded into 0).  ``dom_restricted`` /
    ``dow_restricted`` are True when the field text is not exactly ``*``;
    see the module docstring for the day rule.
    """

    expression: str
    minutes: frozenset
    hours: frozenset
    days_of_month: frozenset
    months: frozenset
    days_of_week: frozenset
    dom_restricted: bool
    dow_restricted: bool
    _minute_list: tuple = field(repr=False, compare=False, default=())
    _hour_list: tuple = field(repr=False, compare=False, default=())
    _dom_list: tuple = field(repr=False, compare=False, default=())
    _month_list: tuple = field(repr=False, compare=False, default=())

    def day_matches(self, d: date) -> bool:
        """Whether calendar day ``d`` matches (month + day rule)."""
        if d.month not in self.months:
            return False
        dow = (d.weekday() + 1) % 7
        if self.dom_restricted and self.dow_restricted:
            return d.day in self.days_of_month or dow in self.days_of_week
        if self.dow_restricted:
            return dow in self.days_of_week
        return d.day in self.days_of_month

    def matches(self, wall: datetime) -> bool:
        """Whether the naive local wall-clock minute ``wall`` matches."""
        return (
            wall.minute in self.minutes
            and wall.hour in self.hours
            and self.day_matches(wall.date())
        )


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _token_problem(token: str, names) -> str:
    """Explain why ``token`` is not a valid value."""
    if token == "":
        return "missing value"
    if "?" in token:
        return '"?" is not supported (it is Quartz syntax); use "*" instead'
    if "#" in token:
        return '"#" (nth weekday of the month) is not supported'
    if _L_TOKEN.fullmatch(token):
        return '"L" (last day) is not supported'
    if _W_TOKEN.fullmatch(token):
        return '"W" (nearest weekday) is not supported'
    if _H_TOKEN.fullmatch(token):
        return '"H" (hashed values) is not supported'
    if token.isalpha():
        if names is None:
            return f'invalid value "{token}" (names are only allowed in the month and day-of-week fields)'
        first, last = next(iter(names)), list(names)[-1]
        return f'unknown name "{token}" (use {first}-{last})'
    return f'invalid value "{token}"'


def _parse_field(index: int, text: str) -> frozenset:
    fname, low, high, names = _FIELDS[index]

    def fail(problem: str):
        raise ScheduleError(f'{fname} field "{_short(text)}": {problem}')

    def value(token: str, range_start: int | None = None) -> int:
        if _DIGITS.fullmatch(token):
            v = int(token)
        elif names is not None and token.upper() in names:
            v = names[token.upper()]
            if index == 4 and v == 0 and range_start:
                v = 7  # "FRI-SUN": through Sunday (but "SUN-SUN" is just Sunday)
        else:
            fail(_token_problem(token, names))
        if not low <= v <= high:
            fail(f"value {v} out of range {low}-{high}")
        return v

    values: set[int] = set()
    for item in text.split(","):
        if item == "":
            fail("empty list item (check for doubled or trailing commas)")
        if item.count("/") > 1:
            fail(f'more than one "/" in "{item}"')
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if step_text == "":
                fail(f'missing step after "/" in "{item}"')
            if not _DIGITS.fullmatch(step_text):
                problem = _token_problem(step_text, None)
                if problem.startswith("invalid value"):
                    problem = f'step "{step_text}" is not a number'
                fail(problem)
            step = int(step_text)
            if step == 0:
                fail("step 0 is not allowed (a step must be at least 1)")
            if step > high:
                fail(f"step {step} out of range 1-{high}")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            parts = base.split("-")
            if len(parts) != 2 or parts[0] == "" or parts[1] == "":
                for part in parts:
                    if part and not _DIGITS.fullmatch(part) and not (
                        names is not None and part.upper() in names
                    ):
                        fail(_token_problem(part, names))
                fail(f'invalid range "{base}" (write ranges as start-end, e.g. 1-5)')
            start = value(parts[0])
            end = value(parts[1], range_start=start)
            if start > end:
                fail(
                    f"reversed range {parts[0]}-{parts[1]} "
                    f"(start {start} is after end {end}; ranges do not wrap around)"
                )
        else:
            start = value(base)
            end = high if slash else start  # "a/n" means "a-max/n" (Vixie cron)
        values.update(range(start, end + 1, step))
    if index == 4 and 7 in values:
        values.discard(7)
        values.add(0)
    return frozenset(values)


@lru_cache(maxsize=1024)
def parse(expression: str) -> CronSpec:
    """Strictly parse a 5-field cron expression (raises :class:`ScheduleError`)."""
    if not isinstance(expression, str):
        raise ScheduleError("cron expression must be a string")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise ScheduleError(
            f"expression is too long ({len(expression)} characters; "
            f"the maximum is {MAX_EXPRESSION_LENGTH})"
        )
    for pos, ch in enumerate(expression, start=1):
        if ch == "\t":
            continue
        if ord(ch) > 126:
            raise ScheduleError(
                f"expression contains a non-ASCII character {ch!r} (U+{ord(ch):04X}) "
                f"at position {pos}; only ASCII is allowed"
            )
        if ord(ch) < 32 or ord(ch) == 127:
            raise ScheduleError(
                f"expression contains a control character U+{ord(ch):04X} at position {pos}"
            )
    stripped = expression.strip()
    if not stripped:
        raise ScheduleError("expression is empty; expected 5 fields "
                            "(minute hour day-of-month month day-of-week)")
    if stripped.startswith("@"):
        shortcut = stripped.split()[0]
        equivalent = _SHORTCUTS.get(shortcut.lower())
        hint = f' (use "{equivalent}")' if equivalent else ""
        raise ScheduleError(
            f'shortcut "{_short(shortcut)}" is not supported; write the 5 fields '
            f"(minute hour day-of-month month day-of-week) instead{hint}"
        )
    fields = stripped.split()
    if len(fields) != 5:
        msg = (
            "expected 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(fields)}"
        )
        if len(fields) > 5:
            msg += "; seconds and year fields are not supported"
        raise ScheduleError(msg)
    sets = [_parse_field(i, text) for i, text in enumerate(fields)]
    minutes, hours, doms, months, dows = sets
    dom_restricted = fields[2] != "*"
    dow_restricted = fields[4] != "*"
    if not dow_restricted and not any(
        d <= _MAX_MONTH_DAYS[m] for m in months for d in doms
    ):
        month_names = ", ".join(_MONTH_LABELS[m] for m in sorted(months))
        raise ScheduleError(
            f'never fires: day-of-month "{_short(fields[2])}" does not occur in '
            f"month field \"{_short(fields[3])}\" ({month_names})"
        )
    return CronSpec(
        expression=" ".join(fields),
        minutes=minutes,
        hours=hours,
        days_of_month=doms,
        months=months,
        days_of_week=dows,
        dom_restricted=dom_restricted,
        dow_restricted=dow_restricted,
        _minute_list=tuple(sorted(minutes)),
        _hour_list=tuple(sorted(hours)),
        _dom_list=tuple(sorted(doms)),
        _month_list=tuple(sorted(months)),
    )


# --------------------------------------------------------------------------
# Time zones
# --------------------------------------------------------------------------

# Keys present in tzdata that are not meaningful schedule zones.
_EXCLUDED_ZONES = frozenset({"Factory", "localtime", "posixrules"})


@lru_cache(maxsize=1)
def _available_zones() -> frozenset:
    return frozenset(zoneinfo.available_timezones()) - _EXCLUDED_ZONES


@lru_cache(maxsize=1)
def _zones_by_lower() -> dict:
    return {k.lower(): k for k in _available_zones()}


@lru_cache(maxsize=512)
def _load_zone(key: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo.no_cache(key)


def _zone(key) -> zoneinfo.ZoneInfo:
    if not isinstance(key, str):
        raise ScheduleError("time zone must be a string such as \"Europe/Paris\"")
    if len(key) <= MAX_TIMEZONE_LENGTH and key in _available_zones():
        return _load_zone(key)
    if key == "":
        raise ScheduleError('time zone is empty; use an IANA name such as "Europe/Paris"')
    hint = ""
    if len(key) <= MAX_TIMEZONE_LENGTH:
        suggestion = _zones_by_lower().get(key.strip().lower())
        if suggestion:
            hint = f'; did you mean "{suggestion}"?'
    raise ScheduleError(
        f"unknown time zone {_short(key)!r}: use an IANA time zone name such as "
        f'"Europe/Paris" or "America/New_York"{hint}'
    )


def validate(expression: str, timezone: str) -> None:
    """Raise :class:`ScheduleError` unless the expression and time zone are valid."""
    parse(expression)
    _zone(timezone)


# --------------------------------------------------------------------------
# Offsets and transitions (all instants are integer POSIX seconds)
# --------------------------------------------------------------------------


def _offset(tz, ts: int) -> int:
    """UTC offset (seconds) of ``tz`` at UTC instant ``ts``."""
    off = datetime.fromtimestamp(ts, tz).utcoffset()
    return off.days * _DAY + off.seconds


def _year_start(year: int) -> int:
    return (date(year, 1, 1).toordinal() - _EPOCH_ORDINAL) * _DAY


@lru_cache(maxsize=8192)
def _year_transitions(key: str, year: int) -> tuple:
    """Offset changes ``(T, offset_before, offset_after)`` with T in (Jan 1 year, Jan 1 year+1].

    ``T`` is the first UTC second with the new offset.
    """
    if year < 1 or year >= 9999 or key in _FIXED_ZONES or key.startswith("Etc/"):
        return ()
    tz = _load_zone(key)
    p = _year_start(year)
    end = _year_start(year + 1)
    op = _offset(tz, p)
    out = []
    while p < end:
        q = min(p + _PROBE_STEP, end)
        oq = _offset(tz, q)
        if oq == op:
            p = q
            continue
        lo, hi = p, q  # offset(lo) == op != offset(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _offset(tz, mid) == op:
                lo = mid
            else:
                hi = mid
        new = _offset(tz, hi)
        out.append((hi, op, new))
        p, op = hi, new
    return tuple(out)


def _utc_year(ts: int) -> int:
    return date.fromordinal(ts // _DAY + _EPOCH_ORDINAL).year


def _next_transition(key: str, t: int, limit: int):
    """First offset change strictly after ``t`` and before ``limit``, or None."""
    year = _utc_year(t)
    while year < 9999:
        if _year_start(year) >= limit:
            return None
        table = _year_transitions(key, year)
        for tr in table:
            if tr[0] > t:
                return tr if tr[0] < limit else None
        year += 1
    return None


# --------------------------------------------------------------------------
# Wall-clock matching
# --------------------------------------------------------------------------


def _month_days(spec: CronSpec, year: int, month: int):
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        ndays = 29
    else:
        ndays = _MONTH_DAYS[month]
    if not spec.dow_restricted:
        if ndays >= 31:
            return spec._dom_list
        return [d for d in spec._dom_list if d <= ndays]
    first = (date(year, month, 1).weekday() + 1) % 7
    dows = spec.days_of_week
    if spec.dom_restricted:
        doms = spec.days_of_month
        return [d for d in range(1, ndays + 1) if (first + d - 1) % 7 in dows or d in doms]
    return [d for d in range(1, ndays + 1) if (first + d - 1) % 7 in dows]


def _walls(spec: CronSpec, start: int, end: int):
    """Matching local wall times in [start, end), increasing.

    Wall times are integer "wall seconds": the naive local datetime's seconds
    since 1970-01-01T00:00 as if it were UTC.
    """
    start = -(-start // 60) * 60  # next whole minute
    if start >= end:
        return
    sday = start // _DAY
    rem = start - sday * _DAY
    d0 = date.fromordinal(sday + _EPOCH_ORDINAL)
    h0, m0 = rem // 3600, (rem // 60) % 60
    y0, mo0, dd0 = d0.year, d0.month, d0.day
    last_year = date.fromordinal(
        min((end - 1) // _DAY + _EPOCH_ORDINAL, _MAX_ORDINAL)
    ).year
    minutes, hours = spec._minute_list, spec._hour_list
    for year in range(y0, last_year + 1):
        for month in spec._month_list:
            month_first = year == y0 and month == mo0
            if year == y0 and month < mo0:
                continue
            ordinal0 = date(year, month, 1).toordinal() - 1
            for day in _month_days(spec, year, month):
                day_first = month_first and day == dd0
                if month_first and day < dd0:
                    continue
                base = (ordinal0 + day - _EPOCH_ORDINAL) * _DAY
                if base >= end:
                    return
                for hour in hours:
                    hour_first = day_first and hour == h0
                    if day_first and hour < h0:
                        continue
                    hbase = base + hour * 3600
                    for minute in minutes:
                        if hour_first and minute < m0:
                            continue
                        w = hbase + minute * 60
                        if w >= end:
                            return
                        yield w


def _check_after(after) -> int:
    if not isinstance(after, datetime):
        raise TypeError("after must be a datetime")
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError("after must be a timezone-aware datetime")
    try:
        naive = after.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        raise ValueError(f"after must be between years {_MIN_YEAR} and {_MAX_YEAR}") from None
    if not _MIN_YEAR <= naive.year <= _MAX_YEAR:
        raise ValueError(f"after must be between years {_MIN_YEAR} and {_MAX_YEAR}")
    delta = naive - _EPOCH_NAIVE
    return delta.days * _DAY + delta.seconds  # floor to the second


def _last_transition(key: str, t: int, span: int = 2 * _DAY):
    """The last offset change at or before ``t`` and after ``t - span``, or None."""
    found = None
    for year in range(_utc_year(t - span), _utc_year(t) + 1):
        for tr in _year_transitions(key, year):
            if t - span < tr[0] <= t:
                found = tr
    return found


def _iter_fires(spec: CronSpec, key: str, after_s: int, dst_fold: str = "both"):
    """Yield fire instants (POSIX seconds) strictly after ``after_s``, increasing.

    Walks the zone's constant-offset segments in UTC order; within a segment
    [lo, hi) with offset ``o`` the local wall times are exactly [lo+o, hi+o),
    so the matching walls ``w`` fire at ``w - o``.  Gaps are simply never
    produced by any segment; overlaps are produced by two segments.

    A fall-back change at ``T`` from offset ``b`` to ``a < b`` makes the walls
    [T+a, T+b) happen twice: at the end of the segment before ``T`` and again
    at the start of the segment from ``T``.  ``dst_fold="first"`` drops them
    from the later segment, ``"last"`` from the earlier one.  (Transitions are
    days apart, so an overlap never spans more than these two segments; the
    search starts inside one when ``after`` lies in its second pass.)
    """
    tz = _load_zone(key)
    lo = after_s + 1
    off = _offset(tz, lo)
    repeats_below = None  # under "first": walls of this segment below it happened before
    if dst_fold == "first":
        tr = _last_transition(key, lo)
        if tr is not None and tr[2] < tr[1]:
            repeats_below = tr[0] + tr[1]
    last = lo
    while True:
        give_up = last + _GIVE_UP_AFTER
        if lo >= give_up:
            return
        tr = _next_transition(key, lo, give_up)
        hi = tr[0] if tr is not None else give_up
        wall_lo, wall_hi = lo + off, hi + off
        if repeats_below is not None:
            wall_lo = max(wall_lo, repeats_below)
        if dst_fold == "last" and tr is not None and tr[2] < tr[1]:
            wall_hi = min(wall_hi, tr[0] + tr[2])  # these walls happen again after tr
        for w in _walls(spec, wall_lo, wall_hi):
            last = w - off
            yield last
        repeats_below = None
        if tr is None:
            if hi + off >= _year_start(9999):
                return
            lo = hi
            continue
        lo, off = tr[0], tr[2]
        if dst_fold == "first" and tr[2] < tr[1]:
            repeats_below = tr[0] + tr[1]


def _check_fold(dst_fold) -> str:
    if dst_fold not in DST_FOLDS:
        raise ValueError(f"dst_fold must be one of {', '.join(DST_FOLDS)}")
    return dst_fold


def _bound(name: str, value) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return value


def _ceil_seconds(value: datetime) -> int:
    delta = value.astimezone(UTC).replace(tzinfo=None) - _EPOCH_NAIVE
    return delta.days * _DAY + delta.seconds + (1 if delta.microseconds else 0)


def _floor_seconds(value: datetime) -> int:
    delta = value.astimezone(UTC).replace(tzinfo=None) - _EPOCH_NAIVE
    return delta.days * _DAY + delta.seconds


def _to_datetime(ts: int) -> datetime:
    return _EPOCH + timedelta(seconds=ts)


def next_fires(
    expression: str,
    timezone: str,
    after: datetime,
    n: int = 5,
    *,
    dst_fold: str = "both",
    start_at: datetime | None = None,
    end_at: datetime | None = None,
) -> list[datetime]:
    """The next ``n`` fire instants strictly after aware ``after``.

    Returns aware UTC datetimes (``tzinfo=datetime.timezone.utc``), increasing.
    Literal wall-clock DST semantics: a local time inside a spring-forward gap
    never fires; a local time inside a fall-back overlap fires twice (once per
    UTC instant) with ``dst_fold="both"``, at its first instant only with
    ``"first"``, at its last only with ``"last"``.  With ``start_at`` /
    ``end_at`` (aware, inclusive) only instants inside the window count.
    Fewer than ``n`` results when the window ends, or when the schedule does
    not fire for 10 years (or the search reaches the year 9999).  ``after``
    must be aware (naive -> ValueError) and in years 2-9980.

    Instants are whole UTC minutes whenever the zone's offset is a whole number
    of minutes, i.e. for all modern dates; for historical local-mean-time
    offsets such as New York's -4:56:02 before 1883 the local minute boundary
    (and so the instant) carries seconds.
    """
    spec = parse(expression)
    _zone(timezone)
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError("n must be an int")
    if n < 0:
        raise ValueError("n must be >= 0")
    _check_fold(dst_fold)
    after_s = _check_after(after)
    if start_at is not None:
        # t >= start_at for a whole second t  <=>  t > ceil(start_at) - 1
        after_s = max(after_s, _ceil_seconds(_bound("start_at", start_at)) - 1)
    end_s = _floor_seconds(_bound("end_at", end_at)) if end_at is not None else None
    out = []
    if n == 0 or (end_s is not None and end_s <= after_s) or after_s >= _year_start(_MAX_YEAR + 1):
        return out  # (a window opening after the years the engine searches never fires)
    for u in _iter_fires(spec, timezone, after_s, dst_fold):
        if end_s is not None and u > end_s:
            break
        out.append(_to_datetime(u))
        if len(out) >= n:
            break
    return out


# --------------------------------------------------------------------------
# Descriptions
# --------------------------------------------------------------------------


def _describe_dow(days) -> str:
    """Day-of-week set as text cron_descriptor describes well (0 = Sunday)."""
    if len(days) == 7:
        return "*"
    for order in ((0, 1, 2, 3, 4, 5, 6), (1, 2, 3, 4, 5, 6, 0)):
        idx = sorted(order.index(d) for d in days)
        if len(idx) >= 3 and idx[-1] - idx[0] == len(idx) - 1:
            return f"{order[idx[0]]}-{order[idx[-1]]}"
    return ",".join(str(d) for d in sorted(days, key=lambda d: (d - 1) % 7))


def describe(expression: str) -> str:
    """The schedule in English words, e.g. ``"At 08:00 PM, only on Friday"``.

    Raises :class:`ScheduleError` for an invalid expression; never raises for
    a valid one (falls back to ``cron "<expression>"`` if the describer fails).
    """
    spec = parse(expression)
    fields = spec.expression.split(" ")
    either = spec.dom_restricted and spec.dow_restricted
    # cron_descriptor mishandles 7 (= Sunday) in ranges ("0-7" -> "Sunday
    # through Sunday") and "a/n" steps in the day-of-week field (it assumes
    # 0-6); hand it the explicit set instead.
    if spec.dow_restricted and any(c in fields[4] for c in "-/7"):
        fields[4] = _describe_dow(spec.days_of_week)
        if fields[4] == "*":  # every weekday: with the OR rule, every day
            fields[2] = "*"
            either = False
    try:
        from cron_descriptor import CasingTypeEnum, ExpressionDescriptor, Options

        options = Options()
        options.locale_code = "en_US"
        options.use_24hour_time_format = False
        options.day_of_week_start_index_zero = True
        options.casing_type = CasingTypeEnum.Sentence
        text = ExpressionDescriptor(" ".join(fields), options).get_description()
    except Exception:  # never fail on a valid expression
        return f'cron "{spec.expression}"'
    if not text:
        return f'cron "{spec.expression}"'
    if either:
        text += " (runs when either the day of the month or the day of the week matches)"
    return text


# --------------------------------------------------------------------------
# DST notes
# --------------------------------------------------------------------------


def _iso_z(dt: datetime) -> str:
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


@dataclass(frozen=True)
class DstNote:
    """A matching local time that is skipped or repeated by a DST transition."""

    date: date  # local date
    local_time: str  # "HH:MM"
    kind: str  # "skipped" | "repeated"
    instants: tuple  # () for skipped, (first, second) UTC datetimes for repeated
    # The instants that fire, when a dst_fold other than "both" or a window was asked for (None
    # otherwise: then a repeated time fires at both instants, a skipped one at none).
    fires: tuple | None = field(default=None, compare=False)

    def as_dict(self) -> dict:
        data = {
            "date": self.date.isoformat(),
            "local_time": self.local_time,
            "kind": self.kind,
            "instants": [_iso_z(i) for i in self.instants],
        }
        if self.fires is not None:
            data["fires"] = [_iso_z(i) for i in self.fires]
        return data


def _folded(instants: tuple, dst_fold: str) -> tuple:
    if dst_fold == "first":
        return instants[:1]
    if dst_fold == "last":
        return instants[1:]
    return instants


def dst_notes(
    expression: str,
    timezone: str,
    after: datetime,
    days: int = 366,
    *,
    dst_fold: str = "both",
    start_at: datetime | None = None,
    end_at: datetime | None = None,
) -> list[DstNote]:
    """Matching local times in the next ``days`` days that DST skips or repeats.

    For each offset change of the zone in (after, after + days], the wall
    times in the gap (skipped) or overlap (repeated) that the schedule
    matches.  When a ``dst_fold`` other than ``"both"`` or a window is given,
    each note's ``fires`` are the instants that fire: none for a skipped time;
    for a repeated one the first or the last per ``dst_fold`` (both with
    ``"both"``), and only those inside the ``start_at``/``end_at`` window.
    At most :data:`MAX_DST_NOTES` notes, in time order.
    """
    spec = parse(expression)
    _zone(timezone)
    if isinstance(days, bool) or not isinstance(days, int):
        raise TypeError("days must be an int")
    if days < 0:
        raise ValueError("days must be >= 0")
    _check_fold(dst_fold)
    after_s = _check_after(after)
    lowest = _ceil_seconds(_bound("start_at", start_at)) if start_at is not None else None
    highest = _floor_seconds(_bound("end_at", end_at)) if end_at is not None else None
    refined = dst_fold != "both" or start_at is not None or end_at is not None

    def inside(instant: datetime) -> bool:
        seconds = _floor_seconds(instant)
        return (lowest is None or seconds >= lowest) and (highest is None or seconds <= highest)

    end = after_s + min(days, 3660) * _DAY
    notes: list[DstNote] = []
    t = after_s
    while len(notes) < MAX_DST_NOTES:
        tr = _next_transition(timezone, t, end + 1)
        if tr is None:
            break
        T, before, now = tr
        if now > before:  # spring forward: walls [T+before, T+now) do not exist
            for w in _walls(spec, T + before, T + now):
                wall = _EPOCH_NAIVE + timedelta(seconds=w)
                notes.append(DstNote(wall.date(), wall.strftime("%H:%M"), "skipped", (), () if refined else None))
                if len(notes) >= MAX_DST_NOTES:
                    break
        else:  # fall back: walls [T+now, T+before) happen twice
            for w in _walls(spec, T + now, T + before):
                wall = _EPOCH_NAIVE + timedelta(seconds=w)
                instants = (_to_datetime(w - before), _to_datetime(w - now))
                fires = tuple(i for i in _folded(instants, dst_fold) if inside(i)) if refined else None
                notes.append(DstNote(wall.date(), wall.strftime("%H:%M"), "repeated", instants, fires))
                if len(notes) >= MAX_DST_NOTES:
                    break
        t = T
    return notes
