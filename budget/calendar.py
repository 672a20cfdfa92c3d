"""Fiscal calendar: time progress (序时进度) and expected spending progress.

China's fiscal year is the calendar year. Days travel as ordinals
(``date.toordinal()``) on the hot path; these helpers cache per year.
"""

from __future__ import annotations

import calendar as _cal
import datetime as dt
from bisect import bisect_right
from collections.abc import Sequence
from functools import lru_cache


def days_in_year(year: int) -> int:
    return 366 if _cal.isleap(year) else 365


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


@lru_cache(maxsize=4096)
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


def expected_progress(day: int, fiscal_year: int, plan: Sequence[float] | None) -> float:
    curve = expected_curve(fiscal_year, tuple(plan) if plan is not None else None)
    first, _ = year_bounds(fiscal_year)
    index = day - first
    if index < 0:
        return 0.0
    if index >= len(curve):
        return curve[-1]
    return curve[index]


def first_day_above(
    fiscal_year: int, plan: Sequence[float] | None, threshold: float, after: int
) -> int | None:
    """First ordinal day > ``after`` in the fiscal year whose expected progress exceeds
    ``threshold``; None if the curve never does. Used to schedule time-driven rules
    instead of re-evaluating every project every day."""
    curve = expected_curve(fiscal_year, tuple(plan) if plan is not None else None)
    first, last = year_bounds(fiscal_year)
    index = bisect_right(curve, threshold)
    if index >= len(curve):
        return None
    day = max(first + index, after + 1)
    return day if day <= last else None


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
