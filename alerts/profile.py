"""Policy profiles: every threshold the rules use, parsed from plain data (YAML text
is read by ``connectors.profiles``)."""

from __future__ import annotations

import datetime as dt
import re
from bisect import bisect_right
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from alerts.workdays import WEEKDAYS, WorkCalendar
from budget.calendar import checkpoint_day
from budget.events import problem_zh

Severity = Literal["warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"warning": 1, "critical": 2}
_MONTH_DAY = re.compile(r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")


class ProfileError(ValueError):
    """A policy profile that cannot be used; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Floor(_Strict):
    """From ``checkpoint`` (MM-DD) on, execution below ``floor`` fires ``low_execution``."""

    checkpoint: str
    floor: float = Field(gt=0, le=1)
    severity: Severity = "critical"

    @field_validator("checkpoint")
    @classmethod
    def _month_day(cls, value: str) -> str:
        if not _MONTH_DAY.match(value):
            raise ValueError(
                f"检查点 {value!r} 应写作 月-日，如 06-30（checkpoint {value!r} must be MM-DD, e.g. 06-30）"
            )
        try:
            checkpoint_day(2024, value)  # a leap year: 02-29 is a day (Feb 28 in other years)
        except ValueError:
            raise ValueError(
                f"检查点 {value!r} 不是一年中的日期（checkpoint {value!r} is not a day of the year, MM-DD）"
            ) from None
        return value


class LowExecution(_Strict):
    floors: tuple[Floor, ...] = (Floor(checkpoint="06-30", floor=0.30),)

    @model_validator(mode="after")
    def _ordered(self) -> LowExecution:
        dates = [f.checkpoint for f in self.floors]
        if dates != sorted(dates) or len(set(dates)) != len(dates):
            raise ValueError(
                "各检查点应按日期先后排列，每个日期一条（low_execution.floors must be in date order, one per date）"
            )
        return self


class BehindSchedule(_Strict):
    lag: float = Field(default=0.20, gt=0, le=1)
    severity: Severity = "warning"


class ProgressGap(_Strict):
    gap: float = Field(default=0.20, gt=0, le=1)
    severity: Severity = "warning"


class Overspend(_Strict):
    severity: Severity = "critical"


class Stalled(_Strict):
    days: int = Field(default=90, gt=0, le=366)
    severity: Severity = "warning"


class DepartmentLowExecution(_Strict):
    severity: Severity = "warning"


def _expand(entry: Any) -> list[dt.date]:
    """A date, or a range written ``YYYY-MM-DD..YYYY-MM-DD`` (both ends included)."""
    if isinstance(entry, dt.date):
        return [entry]
    if isinstance(entry, str):
        first, sep, last = entry.partition("..")
        try:
            start = dt.date.fromisoformat(first.strip())
            end = dt.date.fromisoformat(last.strip()) if sep else start
        except ValueError:
            raise ValueError(_not_a_date(entry)) from None
        if end < start:
            raise ValueError(f"日期范围 {entry!r} 的结束早于开始（range {entry!r} ends before it starts）")
        return [dt.date.fromordinal(d) for d in range(start.toordinal(), end.toordinal() + 1)]
    raise ValueError(_not_a_date(entry))


def _not_a_date(entry: Any) -> str:
    return (f"{entry!r} 不是日期，也不是 YYYY-MM-DD..YYYY-MM-DD 的日期范围"
            f"（{entry!r} is not a date or a YYYY-MM-DD..YYYY-MM-DD range）")


class CalendarYear(_Strict):
    """One year's public holidays and make-up working days (调休上班)."""

    source: str = ""  # e.g. the State Council notice: 国办发明电〔2024〕12号
    holidays: tuple[dt.date, ...] = ()
    workdays: tuple[dt.date, ...] = ()

    @field_validator("holidays", "workdays", mode="before")
    @classmethod
    def _dates(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        return tuple(day for entry in value for day in _expand(entry))


class HolidayCalendar(_Strict):
    """Working-day calendar of disposition deadlines; years it does not list count
    Monday to Friday."""

    name: str = ""
    description: str = ""
    years: dict[int, CalendarYear] = {}

    @model_validator(mode="after")
    def _consistent(self) -> HolidayCalendar:
        for year, entry in self.years.items():
            for day in (*entry.holidays, *entry.workdays):
                if day.year != year:
                    raise ValueError(
                        f"{day.isoformat()} 不在 {year} 年内（years.{year}: {day.isoformat()} is not in {year}）"
                    )
            for day in entry.workdays:
                if day.weekday() < 5:
                    raise ValueError(
                        f"调休上班日 {day.isoformat()} 本来就是工作日，只需列出调休上班的周六、周日"
                        f"（years.{year}: make-up working day {day.isoformat()} is a weekday already）"
                    )
            both = set(entry.holidays) & set(entry.workdays)
            if both:
                raise ValueError(
                    f"{min(both).isoformat()} 既列为节假日又列为调休上班日"
                    f"（years.{year}: {min(both).isoformat()} is both a holiday and a working day）"
                )
        return self

    def work_calendar(self) -> WorkCalendar:
        return WorkCalendar.of(
            (d.toordinal() for entry in self.years.values() for d in entry.holidays),
            (d.toordinal() for entry in self.years.values() for d in entry.workdays),
            self.years,
        )


class Disposition(_Strict):
    deadline_working_days: int = Field(default=10, gt=0, le=60)
    # A name or file resolved by connectors.profiles into the calendar itself; none: Mon–Fri.
    calendar: HolidayCalendar | None = None


class Reduction(_Strict):
    round_down_to_yuan: int = Field(default=100, gt=0)


class YearEnd(_Strict):
    """When a fiscal year's alerts still firing are closed (年度结束): on ``closes_on``
    (MM-DD) of the following year, late enough for December's payments imported in
    January to be judged first. ``null`` keeps them firing for good."""

    closes_on: str | None = "01-31"

    @field_validator("closes_on")
    @classmethod
    def _month_day(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _MONTH_DAY.match(value):
            raise ValueError(
                f"年度结束日 {value!r} 应写作 月-日，如 01-31（closes_on {value!r} must be MM-DD, e.g. 01-31）"
            )
        try:
            dt.date(2023, int(value[:2]), int(value[3:]))  # not a leap year: the day is in every year
        except ValueError:
            raise ValueError(
                f"年度结束日 {value!r} 不是每年都有的日期（closes_on {value!r} is not a day of every year）"
            ) from None
        return value


class Profile(_Strict):
    name: str
    description: str = ""
    low_execution: LowExecution = LowExecution()
    behind_schedule: BehindSchedule = BehindSchedule()
    progress_gap: ProgressGap = ProgressGap()
    overspend: Overspend = Overspend()
    stalled: Stalled = Stalled()
    department_low_execution: DepartmentLowExecution = DepartmentLowExecution()
    disposition: Disposition = Disposition()
    reduction: Reduction = Reduction()
    year_end: YearEnd = YearEnd()

    def model_post_init(self, _context: Any) -> None:
        object.__setattr__(self, "_floor_cache", {})

    @cached_property
    def work_calendar(self) -> WorkCalendar:
        """The working days disposition deadlines count (Mon–Fri without a calendar)."""
        calendar = self.disposition.calendar
        return calendar.work_calendar() if calendar is not None else WEEKDAYS

    def uncovered_calendar_years(self, first_day: int, last_day: int) -> list[int]:
        """Years a deadline set between ``first_day`` and ``last_day`` may count days in
        that the holiday calendar does not list (they count Monday to Friday): a deadline
        set in late December ends in the next year. Empty without a calendar."""
        if self.disposition.calendar is None:
            return []
        # deadline and escalation day: n + 1 working days, with room for a holiday week
        reach = (self.disposition.deadline_working_days + 1) * 7 // 5 + 14
        first, last = dt.date.fromordinal(first_day).year, dt.date.fromordinal(last_day + reach).year
        return [year for year in range(first, last + 1) if not self.work_calendar.covers(year)]

    def floors_in_year(self, year: int) -> tuple[list[int], list[Floor]]:
        cache: dict[int, tuple[list[int], list[Floor]]] = self._floor_cache  # type: ignore[attr-defined]
        found = cache.get(year)
        if found is None:
            days = [checkpoint_day(year, f.checkpoint) for f in self.low_execution.floors]
            found = cache[year] = (days, list(self.low_execution.floors))
        return found

    def floor_on(self, day: int, year: int) -> Floor | None:
        """The low-execution floor in force on ordinal ``day`` of fiscal ``year``."""
        days, floors = self.floors_in_year(year)
        index = bisect_right(days, day)
        return floors[index - 1] if index else None

    def checkpoint_days(self, year: int) -> frozenset[int]:
        return frozenset(self.floors_in_year(year)[0])

    def year_close_day(self, fiscal_year: int) -> int | None:
        """The day (ordinal) fiscal ``fiscal_year`` is closed: its alerts still firing end
        then, and from then on nothing of that year is judged again. None: never."""
        closes_on = self.year_end.closes_on
        if closes_on is None:
            return None
        return dt.date(fiscal_year + 1, int(closes_on[:2]), int(closes_on[3:])).toordinal()


def profile_from_mapping(data: Any, *, origin: str = "profile") -> Profile:
    if not isinstance(data, dict):
        raise ProfileError(f"{origin}：策略文件应为“设置项: 值”的映射（a profile must be a mapping of settings）")
    try:
        return Profile.model_validate(data)
    except ValidationError as err:
        problems = "；".join(_setting_problem(e) for e in err.errors(include_url=False))
        raise ProfileError(f"{origin}：{problems}") from None


def _setting_problem(error: Any) -> str:
    """``where：问题（where: message）`` for one pydantic error of a profile."""
    where = ".".join(str(p) for p in error["loc"]) or "（整个文件）"
    kind, message = error["type"], error["msg"].removeprefix("Value error, ")
    if kind == "value_error":  # this module's own messages, already in both languages
        return f"{where}：{message}"
    if kind == "missing":
        return f"缺少设置项 {where}（missing setting {where}）"
    if kind == "extra_forbidden":
        return f"{where} 不是可用的设置项，请检查拼写（unknown setting {where}）"
    return f"{where}：{problem_zh(kind, error.get('ctx'), message)}（{where}: {message}）"
