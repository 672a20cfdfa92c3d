"""Working days for disposition deadlines (pure: days are ``date.toordinal()`` ints).

A working day is Monday to Friday, except the public holidays of a
:class:`WorkCalendar`, plus its make-up working days (调休上班, a Saturday or
Sunday worked in exchange for a bridge day). Deadlines are counted in working days
from the day an alert fired, that day itself not counted: an alert firing on
Monday 2025-06-30 with a 10-working-day deadline must be disposed of by Monday
2025-07-14 and escalates on the next working day, Tuesday 2025-07-15. With the
2025 national calendar, one firing on Friday 2025-09-26 has until 2025-10-16: the
National Day week (10-01..10-08) is off, Sunday 09-28 and Saturday 10-11 are worked.

Years a calendar does not list fall back to Monday–Friday (:meth:`WorkCalendar.covers`
tells which years are listed, so a runtime can warn).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field

SATURDAY = 5  # Monday 0 .. Sunday 6


def _weekday(day: int) -> int:
    return (day + 6) % 7  # ordinal 1 (0001-01-01) was a Monday


def _weekday_rule(day: int) -> bool:
    return _weekday(day) < SATURDAY


@dataclass(frozen=True, slots=True)
class WorkCalendar:
    """Public holidays and make-up working days (ordinals) over the listed years."""

    holidays: frozenset[int] = frozenset()
    workdays: frozenset[int] = frozenset()  # weekend days that are worked (调休)
    years: frozenset[int] = frozenset()
    # Sorted days where the weekday rule does not hold: the fast path skips spans without one.
    _exceptions: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        exceptions = {d for d in self.holidays if _weekday_rule(d)}
        exceptions |= {d for d in self.workdays if not _weekday_rule(d)}
        object.__setattr__(self, "_exceptions", tuple(sorted(exceptions)))

    @classmethod
    def of(cls, holidays: Iterable[int] = (), workdays: Iterable[int] = (), years: Iterable[int] = ()) -> WorkCalendar:
        return cls(frozenset(holidays), frozenset(workdays), frozenset(years))

    def covers(self, year: int) -> bool:
        return year in self.years

    def is_working_day(self, day: int) -> bool:
        if day in self.workdays:
            return True
        return _weekday_rule(day) and day not in self.holidays

    def _has_exception_in(self, start: int, end: int) -> bool:
        """Whether a holiday or make-up day lies in (start, end]."""
        exceptions = self._exceptions
        index = bisect_right(exceptions, start)
        return index < len(exceptions) and exceptions[index] <= end

    def add_working_days(self, day: int, count: int) -> int:
        """The ``count``-th working day after ``day`` (``day`` itself is not counted).

        ``count`` 0 gives ``day`` itself when it is a working day, else the next one.
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if count == 0:
            current = day
            while not self.is_working_day(current):
                current += 1
            return current
        plain = _add_weekdays(day, count)
        if not self._has_exception_in(day, plain):
            return plain
        current, left = day, count
        while left:
            current += 1
            if self.is_working_day(current):
                left -= 1
        return current

    def working_days_between(self, start: int, end: int) -> int:
        """Working days in (start, end]: how many working days after ``start`` ``end`` is."""
        if end <= start:
            return 0
        return sum(1 for d in range(start + 1, end + 1) if self.is_working_day(d))


WEEKDAYS = WorkCalendar()  # Monday to Friday, no holidays


def _add_weekdays(day: int, count: int) -> int:
    """``count`` >= 1 Monday–Friday days after ``day``: whole weeks first, then the rest."""
    weekday = _weekday(day)
    weeks, rest = divmod(count, 5)
    current = day + 7 * weeks
    if weekday >= SATURDAY:  # from a weekend day, step back to its Friday: same count
        current -= weekday - 4
    while rest:
        current += 1
        if _weekday_rule(current):
            rest -= 1
    return current

