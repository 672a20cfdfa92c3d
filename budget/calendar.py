"""Fiscal calendar: time progress (序时进度) and expected spending progress.

China's fiscal year is the calendar year. Days travel as ordinals
(``date.toordinal()``) on the hot path; these helpers cache per year.
"""

from __future__ import annotations

import calendar as _cal
import datetime as dt
from collections.abc import Sequence
from functools import lru_cache

# Business dates are China time (UTC+8, no daylight saving): one zone for every reader.
CHINA_TIME = dt.timezone(dt.timedelta(hours=8), "CST")


@lru_cache(maxsize=256)
def days_in_year(year: int) -> int:
    # Cached: every rule evaluation asks (the cache lookup is one C call, isleap two in Python).
    return 366 if _cal.isleap(year) else 365


@lru_cache(maxsize=256)
def year_end_of(year: int) -> int:
    """Dec 31 of ``year`` as an ordinal (cached: the ledger asks once per payment)."""
    return dt.date(year, 12, 31).toordinal()


@lru_cache(maxsize=256)
def year_bounds(year: int) -> tuple[int, int]:
    """First and last day of a fiscal year, as ordinals."""
    return dt.date(year, 1, 1).toordinal(), dt.date(year, 12, 31).toordinal()


def time_progress(day: dt.date) -> float:
    """序时进度: day-of-year / days-in-year (Dec 31 is 1.0)."""
    return day.timetuple().tm_yday / days_in_year(day.year)


def time_progress_for_year(day: int, fiscal_year: int) -> float:
    """Time progress of ``fiscal_year`` on ordinal ``day`` (0 before it starts, 1 after it ends)."""
    first, last = year_bounds(fiscal_year)
    if day < first:
        return 0.0
    if day > last:
        return 1.0
    return (day - first + 1) / (last - first + 1)


@lru_cache(maxsize=16)
def expected_curve(fiscal_year: int, plan: tuple[float, ...] | None) -> tuple[float, ...]:
    """Expected cumulative progress for each day of the year (index 0 = Jan 1).

    With a spending plan (12 cumulative month-end fractions) the curve is
    linear inside each month; without one it is the time progress.
    """
    total = days_in_year(fiscal_year)
    if plan is None:
        return tuple((i + 1) / total for i in range(total))
    curve: list[float] = []
    previous = 0.0
    for month in range(1, 13):
        length = _cal.monthrange(fiscal_year, month)[1]
        target = plan[month - 1]
        for day in range(1, length + 1):
            curve.append(previous + (target - previous) * day / length)
        previous = target
    return tuple(curve)


@lru_cache(maxsize=256)
def months_of(year: int) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...]]:
    """Per month (index of its first day in the year, its length), and the month of each day."""
    spans: list[tuple[int, int]] = []
    month_of: list[int] = []
    start = 0
    for month in range(12):
        length = _cal.monthrange(year, month + 1)[1]
        spans.append((start, length))
        month_of.extend([month] * length)
        start += length
    return tuple(spans), tuple(month_of)


def progress_at(index: int, fiscal_year: int, plan: Sequence[float] | None) -> float:
    """``expected_curve(fiscal_year, plan)[index]`` (clamped to the year) by the same
    arithmetic, without building or caching a 366-value curve per plan: a province has
    tens of thousands of distinct plans."""
    spans, month_of = months_of(fiscal_year)
    return progress_in(index, days_in_year(fiscal_year), spans, month_of, plan)


def progress_in(index: int, total: int, spans: tuple[tuple[int, int], ...], month_of: tuple[int, ...],
                plan: Sequence[float] | None) -> float:
    """``progress_at`` given the year's length and ``months_of`` (a caller that asks for
    many projects of one year looks those up once)."""
    if index >= total:
        index = total - 1
    if plan is None:
        return (index + 1) / total
    month = month_of[index]
    start, length = spans[month]
    previous = plan[month - 1] if month else 0.0
    return previous + (plan[month] - previous) * (index - start + 1) / length


def first_index_above(fiscal_year: int, plan: Sequence[float] | None, threshold: float, after: int) -> int | None:
    """The first day index after ``after`` whose expected progress exceeds ``threshold``
    (None if none does), computed month by month without the curve. Requires that the
    value at index ``after`` does not exceed it (the search starts in its month)."""
    spans, month_of = months_of(fiscal_year)
    return first_index_in(days_in_year(fiscal_year), spans, month_of, plan, threshold, after)


def first_index_in(total: int, spans: tuple[tuple[int, int], ...], month_of: tuple[int, ...],
                   plan: Sequence[float] | None, threshold: float, after: int) -> int | None:
    """``first_index_above`` given the year's length and ``months_of``."""
    if plan is None:
        index = max(int(threshold * total) - 1, 0)
        while index > 0 and index / total > threshold:  # value(index - 1) = index / total
            index -= 1
        while index < total and (index + 1) / total <= threshold:
            index += 1
        return index if index < total else None
    for month in range(month_of[min(max(after, 0), total - 1)], 12):
        start, length = spans[month]
        previous = plan[month - 1] if month else 0.0
        target = plan[month]
        if previous + (target - previous) * length / length <= threshold:
            continue
        step = target - previous
        d = min(max(int((threshold - previous) * length / step), 1), length) if step > 0 else 1
        while d > 1 and previous + step * (d - 1) / length > threshold:
            d -= 1
        while d <= length and previous + step * d / length <= threshold:
            d += 1
        return start + d - 1
    return None


def expected_progress(day: int, fiscal_year: int, plan: Sequence[float] | None) -> float:
    first, _ = year_bounds(fiscal_year)
    index = day - first
    if index < 0:
        return 0.0
    return progress_at(index, fiscal_year, plan)


def first_day_above(
    fiscal_year: int, plan: Sequence[float] | None, threshold: float, after: int
) -> int | None:
    """First ordinal day > ``after`` in the fiscal year whose expected progress exceeds
    ``threshold``; None if none does. The reference for the hot path's
    ``first_index_above``: a plain scan, because the curve is not strictly monotone —
    float rounding can put a month's last day a hair above the next month's first."""
    curve = expected_curve(fiscal_year, tuple(plan) if plan is not None else None)
    first, _ = year_bounds(fiscal_year)
    for index in range(max(after + 1 - first, 0), len(curve)):
        if curve[index] > threshold:
            return first + index
    return None


def checkpoint_day(year: int, month_day: str) -> int:
    """Ordinal of a `MM-DD` checkpoint in ``year`` (02-29 falls back to 02-28)."""
    month, day = (int(part) for part in month_day.split("-"))
    if month == 2 and day == 29 and not _cal.isleap(year):
        day = 28
    return dt.date(year, month, day).toordinal()


def to_day(value: dt.date) -> int:
    return value.toordinal()


def from_day(day: int) -> dt.date:
    return dt.date.fromordinal(day)


@lru_cache(maxsize=8192)
def iso(day: int) -> str:
    # Hot: every alert snapshot, transition and JSON row formats its dates (cached: 2x faster).
    return dt.date.fromordinal(day).isoformat()


def year_of(day: int) -> int:
    return dt.date.fromordinal(day).year
