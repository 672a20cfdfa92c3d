"""Working-day arithmetic of disposition deadlines (weekends skipped)."""

from __future__ import annotations

import datetime as dt

import pytest

from alerts.dispositions import deadlines
from alerts.workdays import add_working_days, is_working_day, working_days_between


def d(text: str) -> int:
    return dt.date.fromisoformat(text).toordinal()


def naive(day: int, count: int) -> int:
    current, left = day, count
    if count == 0:
        while dt.date.fromordinal(current).weekday() >= 5:
            current += 1
        return current
    while left:
        current += 1
        if dt.date.fromordinal(current).weekday() < 5:
            left -= 1
    return current


def test_ten_working_days_from_a_monday_is_the_monday_two_weeks_later() -> None:
    assert add_working_days(d("2025-06-30"), 10) == d("2025-07-14")
    assert deadlines(d("2025-06-30"), 10) == (d("2025-07-14"), d("2025-07-15"))


@pytest.mark.parametrize(
    ("start", "count", "expected"),
    [
        ("2025-07-04", 1, "2025-07-07"),  # Friday + 1 -> Monday
        ("2025-07-05", 1, "2025-07-07"),  # Saturday + 1 -> Monday
        ("2025-07-06", 5, "2025-07-11"),  # Sunday + 5 -> Friday
        ("2025-07-05", 0, "2025-07-07"),  # a weekend day itself -> the next working day
        ("2025-07-09", 0, "2025-07-09"),
        ("2025-12-26", 10, "2026-01-09"),  # across the year end
    ],
)
def test_known_dates(start: str, count: int, expected: str) -> None:
    assert add_working_days(d(start), count) == d(expected)


def test_agrees_with_counting_day_by_day_for_two_years() -> None:
    first = d("2025-01-01")
    for day in range(first, first + 730):
        for count in range(0, 26):
            got = add_working_days(day, count)
            assert got == naive(day, count), (dt.date.fromordinal(day), count)
            assert is_working_day(got)
            if count:
                assert working_days_between(day, got) == count


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        add_working_days(d("2025-07-01"), -1)
