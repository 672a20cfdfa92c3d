"""Working days for disposition deadlines (pure: days are ``date.toordinal()`` ints).

A working day is Monday to Friday. Deadlines are counted in working days from
the day an alert fired, that day itself not counted: an alert firing on Monday
2025-06-30 with a 10-working-day deadline must be disposed of by Monday
2025-07-14 and escalates on the next working day, Tuesday 2025-07-15.
"""

from __future__ import annotations

import datetime as dt

SATURDAY = 5  # date.weekday(): Monday 0 .. Sunday 6


def is_working_day(day: int) -> bool:
    return dt.date.fromordinal(day).weekday() < SATURDAY


def add_working_days(day: int, count: int) -> int:
    """The ``count``-th working day after ``day`` (``day`` itself is not counted).

    ``count`` 0 gives ``day`` itself when it is a working day, else the next one.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    current = day
    if count == 0:
        while not is_working_day(current):
            current += 1
        return current
    weekday = dt.date.fromordinal(day).weekday()
    # Move to the Friday-anchored week arithmetic: whole weeks first, then the rest.
    weeks, rest = divmod(count, 5)
    current = day + 7 * weeks
    if weekday >= SATURDAY:  # from a weekend day, step back to its Friday: same count
        current -= weekday - 4
    while rest:
        current += 1
        if is_working_day(current):
            rest -= 1
    return current


def working_days_between(start: int, end: int) -> int:
    """Working days in (start, end]: how many working days after ``start`` ``end`` is."""
    if end <= start:
        return 0
    return sum(1 for d in range(start + 1, end + 1) if is_working_day(d))
