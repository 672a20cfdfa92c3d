"""Policy profiles: every threshold the rules use, parsed from plain data (YAML text
is read by ``connectors.profiles``)."""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from budget.calendar import checkpoint_day

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
            raise ValueError(f"checkpoint {value!r} must be MM-DD, e.g. 06-30")
        return value


class LowExecution(_Strict):
    floors: tuple[Floor, ...] = (Floor(checkpoint="06-30", floor=0.30),)

    @model_validator(mode="after")
    def _ordered(self) -> LowExecution:
        dates = [f.checkpoint for f in self.floors]
        if dates != sorted(dates) or len(set(dates)) != len(dates):
            raise ValueError("low_execution.floors must be in date order, one per date")
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


class Disposition(_Strict):
    deadline_working_days: int = Field(default=10, gt=0, le=60)


class Reduction(_Strict):
    round_down_to_yuan: int = Field(default=100, gt=0)


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

    def model_post_init(self, _context: Any) -> None:
        object.__setattr__(self, "_floor_cache", {})

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


def profile_from_mapping(data: Any, *, origin: str = "profile") -> Profile:
    if not isinstance(data, dict):
        raise ProfileError(f"{origin}: a profile must be a mapping of settings")
    try:
        return Profile.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors(include_url=False)
        )
        raise ProfileError(f"{origin}: {problems}") from None
