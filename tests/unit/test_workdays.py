"""Working-day arithmetic of disposition deadlines (weekends and public holidays
skipped, make-up working days counted)."""

from __future__ import annotations

import datetime as dt

import pytest

from alerts.dispositions import deadlines
from alerts.workdays import WEEKDAYS, WorkCalendar
from connectors.profiles import load_profile

NATIONAL = load_profile("baseline").work_calendar  # the shipped cn-mainland calendar


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
    assert WEEKDAYS.add_working_days(d("2025-06-30"), 10) == d("2025-07-14")
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
    assert WEEKDAYS.add_working_days(d(start), count) == d(expected)


def test_agrees_with_counting_day_by_day_for_two_years() -> None:
    first = d("2025-01-01")
    for day in range(first, first + 730):
        for count in range(0, 26):
            got = WEEKDAYS.add_working_days(day, count)
            assert got == naive(day, count), (dt.date.fromordinal(day), count)
            assert WEEKDAYS.is_working_day(got)
            if count:
                assert WEEKDAYS.working_days_between(day, got) == count


def by_definition(calendar: WorkCalendar, day: int, count: int) -> int:
    """Day by day, straight from the definition of a working day."""
    def works(x: int) -> bool:
        return x in calendar.workdays or (dt.date.fromordinal(x).weekday() < 5 and x not in calendar.holidays)

    current, left = day, count
    while not count and not works(current):
        current += 1
    while left:
        current += 1
        if works(current):
            left -= 1
    return current


@pytest.mark.parametrize(
    ("fired", "count", "expected", "weekdays_only"),
    [
        # National Day 2025: 10-01..10-08 off, Sunday 09-28 and Saturday 10-11 worked.
        ("2025-09-26", 10, "2025-10-16", "2025-10-10"),
        ("2025-09-26", 1, "2025-09-28", "2025-09-29"),  # a make-up Sunday can be the deadline
        ("2025-09-30", 1, "2025-10-09", "2025-10-01"),
        # Spring Festival 2025: 01-28..02-04 off, Sunday 01-26 and Saturday 02-08 worked.
        ("2025-01-24", 10, "2025-02-13", "2025-02-07"),
        # New Year 2026: 01-01..01-03 off, Sunday 01-04 worked (across the year end).
        ("2025-12-26", 10, "2026-01-12", "2026-01-09"),
        ("2025-10-03", 0, "2025-10-09", "2025-10-03"),  # a holiday itself -> the next working day
        ("2025-07-07", 10, "2025-07-21", "2025-07-21"),  # no holiday in the span: as Mon–Fri
    ],
)
def test_the_national_calendar_moves_deadlines_past_holidays(
    fired: str, count: int, expected: str, weekdays_only: str
) -> None:
    assert NATIONAL.add_working_days(d(fired), count) == d(expected)
    assert WEEKDAYS.add_working_days(d(fired), count) == d(weekdays_only)
    if count:
        assert NATIONAL.working_days_between(d(fired), d(expected)) == count


def test_escalation_is_the_working_day_after_the_deadline() -> None:
    # fired Thursday 2025-09-25, 3 working days: 09-26, Sunday 09-28, 09-29 -> escalates 09-30;
    # 4 working days: deadline 09-30 -> escalates after the holiday week, on 10-09.
    assert deadlines(d("2025-09-25"), 3, NATIONAL) == (d("2025-09-29"), d("2025-09-30"))
    assert deadlines(d("2025-09-25"), 4, NATIONAL) == (d("2025-09-30"), d("2025-10-09"))


def test_the_national_calendar_agrees_with_the_definition_for_both_years() -> None:
    first = d("2024-12-15")
    for day in range(first, first + 760):
        for count in range(0, 26):
            got = NATIONAL.add_working_days(day, count)
            assert got == by_definition(NATIONAL, day, count), (dt.date.fromordinal(day), count)
            assert NATIONAL.is_working_day(got)


def test_the_shipped_calendar_lists_both_years_with_their_make_up_days() -> None:
    assert NATIONAL.covers(2025) and NATIONAL.covers(2026) and not NATIONAL.covers(2027)
    assert len(NATIONAL.holidays & {d(f"2025-{m}") for m in ("01-01", "05-05", "10-08")}) == 3
    assert {dt.date.fromordinal(x).isoformat() for x in NATIONAL.workdays if x < d("2026-01-01")} == {
        "2025-01-26", "2025-02-08", "2025-04-27", "2025-09-28", "2025-10-11"}
    assert all(dt.date.fromordinal(x).weekday() >= 5 for x in NATIONAL.workdays)
