"""The six rules of DESIGN §5, evaluated as of a day.

``evaluate_project`` / ``evaluate_department`` answer "which rules fire, at
which severity" cheaply (they run for every touched project every day);
``*_figures`` build the evidence only when an alert changes. ``next_due``
tells when a project's outcome could change with no new event, so a runtime
re-evaluates a project on that day instead of every project every day.

A value exactly on a threshold (30%, 20 points) is not a breach. Execution floors
are compared exactly, in fen (one fen under 30% of 1亿 fires); rates against plans and
indicators are compared as floats, and within ``BAND`` of the line exactly, in fractions
of the written decimals, so binary rounding neither fires nor hides an alert.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any, Final

from alerts.profile import Floor, Profile
from budget.calendar import (
    days_in_year,
    expected_progress,
    first_day_above,
    first_index_in,
    months_of,
    progress_in,
    time_progress_for_year,
    year_bounds,
)
from budget.indicators import Indicator, exact_performance_completion
from budget.ledger import ProjectState, Totals
from budget.money import fen_to_str, money_rate

# Within this of a threshold a float comparison cannot be trusted (binary rounding of the
# curve and of the profile's decimals), and beyond it a breach is certain: inside the band
# the rules decide exactly, in fractions of the written decimals — one fen under the line
# at 1亿 is 1e-10 of the budget, and must fire as the floors do.
BAND: Final = 1e-9

# Final: the compiled core uses them as constants, not as lookups in the module's dict.
LOW_EXECUTION: Final = "low_execution"
BEHIND_SCHEDULE: Final = "behind_schedule"
PROGRESS_GAP: Final = "progress_gap"
OVERSPEND: Final = "overspend"
STALLED: Final = "stalled"
DEPARTMENT_LOW_EXECUTION: Final = "department_low_execution"

PROJECT_RULES = (LOW_EXECUTION, BEHIND_SCHEDULE, PROGRESS_GAP, OVERSPEND, STALLED)
RULES = (*PROJECT_RULES, DEPARTMENT_LOW_EXECUTION)

Findings = dict[str, str]  # rule -> severity


@dataclass(frozen=True, slots=True)
class DayContext:
    """What every project evaluated on one day of one fiscal year shares."""

    day: int
    year: int
    first: int  # ordinal of Jan 1
    last: int  # ordinal of Dec 31
    floor: Floor | None
    profile: Profile
    # The profile's thresholds, read once per day: the profile is a pydantic model, and
    # each attribute read on it is a generic lookup (~6 per assessed project-day).
    overspend_severity: str
    stalled_days: int
    stalled_severity: str
    lag: float
    behind_severity: str
    gap: float
    gap_severity: str
    floor_value: float
    floor_severity: str
    # floor_value as the profile writes it (_exact), and the year's calendar (days, months):
    # looked up once per day, not through their caches once per project.
    floor_numerator: int
    floor_denominator: int
    total: int
    spans: tuple[tuple[int, int], ...]
    month_of: tuple[int, ...]
    time_progress: float | None  # _ratio(time_progress_for_year(day, year)), as figures give it


@lru_cache(maxsize=64)
def _exact(value: float) -> tuple[int, int]:
    fraction = Fraction(str(value))  # 0.3 as the profile writes it, not its binary double
    return fraction.numerator, fraction.denominator


def below_floor(paid: int, budget: int, floor: float) -> bool:
    """paid / budget < floor, exactly (money in fen, ``budget`` > 0)."""
    numerator, denominator = _exact(floor)
    return paid * denominator < numerator * budget


def _decimal(value: float) -> Fraction:
    numerator, denominator = _exact(value)
    return Fraction(numerator, denominator)


def exact_progress(index: int, year: int, plan: Sequence[float] | None) -> Fraction:
    """``progress_at`` in fractions of the plan's written decimals (for the band only)."""
    total = days_in_year(year)
    index = min(index, total - 1)
    if plan is None:
        return Fraction(index + 1, total)
    spans, month_of = months_of(year)
    month = month_of[index]
    start, length = spans[month]
    previous = _decimal(plan[month - 1]) if month else Fraction(0)
    return previous + (_decimal(plan[month]) - previous) * Fraction(index - start + 1, length)


def behind_exactly(paid: int, budget: int, index: int, year: int, plan: Sequence[float] | None,
                   lag: float) -> bool:
    """paid / budget < expected − lag, exactly."""
    return Fraction(paid, budget) < exact_progress(index, year, plan) - _decimal(lag)


def quiet_since(state: ProjectState) -> int | None:
    """The day the stall clock counts from: the last payment, or with none yet the first
    day the project had a budget (ProjectState.budget_on: its first approval, or a 追加
    when it has no approval at all) — not the approval in force, which a corrected
    approval dated later would move, restarting the count of days without payment."""
    if state.last_payment_on is not None:
        return state.last_payment_on
    if state.budget_on is not None:
        return state.budget_on
    return state.approved_on  # a state stored before budget_on was kept


def gap_exceeds(paid: int, budget: int, completion: float, gap: float,
                indicators: dict[str, Indicator]) -> bool:
    """|paid / budget − completion| > gap; exactly when the floats are too close to tell.

    Exactly means from the indicators' written values (``exact_performance_completion``),
    not from ``completion``: the float of 2.1/3 is 0.7000000000000001, 20.00 points from a
    50% rate read as a hair over the line."""
    margin = abs(paid / budget - completion) - gap
    if margin > BAND or margin < -BAND:
        return margin > 0
    return exact_gap(paid, budget, completion, indicators) > _decimal(gap)


def exact_gap(paid: int, budget: int, completion: float, indicators: dict[str, Indicator]) -> Fraction:
    """|paid / budget − completion| in fractions of the written values (``budget`` > 0)."""
    exact = exact_performance_completion(indicators)
    if exact is None:  # a completion with no indicators behind it (built by hand): its decimals
        exact = _decimal(completion)
    return abs(Fraction(paid, budget) - exact)


def _gap_figure(paid: int, budget: int, completion: float, indicators: dict[str, Indicator],
                gap: float) -> float:
    """The gap the rule judged, to six decimals, from the exact values. Over the line it is
    cut upward, so a gap that fired never reads as the threshold it exceeded (0.2000004 →
    0.200001, not 0.2); else to the nearest, so a gap of exactly 20 points reads 0.2 (cut
    upward from its float, 0.20000000000000007, it read 0.200001 beside no alert).

    The float decides when it is farther than its error (BAND) from the line and from
    every edge the rounding turns on (a whole or half micro-unit): it then rounds as the
    exact value does. Only the rest — gaps of round numbers, mostly — pays for fractions,
    which on every transition's figures cost a replay a third of its time."""
    rough = abs(paid / budget - completion)
    micro = rough * 1_000_000
    if abs(rough - gap) > BAND and abs(micro - round(micro * 2) / 2) > BAND * 1_000_000:
        return (math.ceil(micro) if rough > gap else round(micro)) / 1_000_000
    value = exact_gap(paid, budget, completion, indicators)
    exact = math.ceil(value * 1_000_000) if value > _decimal(gap) else round(value * 1_000_000)
    return exact / 1_000_000


def day_context(profile: Profile, day: int, year: int) -> DayContext:
    first, last = year_bounds(year)
    floor = profile.floor_on(day, year)
    numerator, denominator = _exact(floor.floor) if floor is not None else (0, 1)
    spans, month_of = months_of(year)
    return DayContext(
        day, year, first, last, floor, profile,
        profile.overspend.severity, profile.stalled.days, profile.stalled.severity,
        profile.behind_schedule.lag, profile.behind_schedule.severity,
        profile.progress_gap.gap, profile.progress_gap.severity,
        floor.floor if floor is not None else 0.0, floor.severity if floor is not None else "",
        numerator, denominator, days_in_year(year), spans, month_of,
        _ratio(time_progress_for_year(day, year)),
    )


def assess(state: ProjectState, ctx: DayContext) -> tuple[Findings, int | None]:
    """Findings on ``ctx.day`` and the next day they may change with no new event.

    The hot path of both runtimes: one pass, no allocation beyond the result.
    Equivalent to ``evaluate_project`` + ``next_due`` (checked by tests).
    """
    findings: Findings = {}
    approved = state.approved
    adjusted = state.adjusted
    if approved is None and adjusted == 0:
        if state.payments > state.reversals:  # money paid with no budget at all: 无预算支出
            findings[OVERSPEND] = ctx.overspend_severity
        return findings, None
    day = ctx.day
    budget = (approved or 0) + adjusted
    paid = state.payments - state.reversals
    due: int | None = None
    if paid > budget:
        findings[OVERSPEND] = ctx.overspend_severity
    elif paid < budget:
        anchor = quiet_since(state)
        if anchor is not None:
            stall_day = anchor + ctx.stalled_days
            if day >= stall_day:
                findings[STALLED] = ctx.stalled_severity
            else:
                due = stall_day
    if budget <= 0:
        return findings, due
    rate = paid / budget
    # below_floor, with the floor's fraction looked up once for the day
    if ctx.floor is not None and paid * ctx.floor_denominator < ctx.floor_numerator * budget:
        findings[LOW_EXECUTION] = ctx.floor_severity
    index = day - ctx.first
    plan = state.plan
    expected = progress_in(index, ctx.total, ctx.spans, ctx.month_of, plan)
    lag = ctx.lag
    margin = expected - lag - rate
    if margin > BAND or (margin >= -BAND and behind_exactly(paid, budget, index, ctx.year, plan, lag)):
        findings[BEHIND_SCHEDULE] = ctx.behind_severity
    else:
        if margin >= -BAND:  # a hair from the line, not over it: look again tomorrow
            behind_day: int | None = day + 1 if day < ctx.last else None
        else:  # the first day the curve comes within the band
            behind_index = first_index_in(ctx.total, ctx.spans, ctx.month_of, plan, rate + lag - BAND, index)
            behind_day = ctx.first + behind_index if behind_index is not None else None
        if behind_day is not None and behind_day > day and (due is None or behind_day < due):
            due = behind_day
    completion = state.completion
    if completion is not None and gap_exceeds(paid, budget, completion, ctx.gap, state.indicators):
        findings[PROGRESS_GAP] = ctx.gap_severity
    return findings, due


def evaluate_project(state: ProjectState, day: int, profile: Profile) -> Findings:
    """Rules firing for a registered project on ordinal ``day`` of its fiscal year."""
    findings: Findings = {}
    if not state.has_budget:
        if state.paid > 0:
            findings[OVERSPEND] = profile.overspend.severity
        return findings
    year: int = state.fiscal_year  # type: ignore[assignment]
    budget = state.budget
    paid = state.payments - state.reversals
    if paid > budget:
        findings[OVERSPEND] = profile.overspend.severity
    elif paid < budget:
        anchor = quiet_since(state)
        if anchor is not None and day - anchor >= profile.stalled.days:
            findings[STALLED] = profile.stalled.severity
    if budget <= 0:
        return findings
    floor = profile.floor_on(day, year)
    if floor is not None and below_floor(paid, budget, floor.floor):
        findings[LOW_EXECUTION] = floor.severity
    first, _ = year_bounds(year)
    if day >= first and behind_exactly(paid, budget, day - first, year, state.plan, profile.behind_schedule.lag):
        findings[BEHIND_SCHEDULE] = profile.behind_schedule.severity
    completion = state.completion
    if completion is not None and gap_exceeds(paid, budget, completion, profile.progress_gap.gap, state.indicators):
        findings[PROGRESS_GAP] = profile.progress_gap.severity
    return findings


def next_due(state: ProjectState, day: int, profile: Profile, findings: Findings) -> int | None:
    """The first day after ``day`` on which the project's findings may change with no
    new event (checkpoints excepted: a runtime evaluates everything on those)."""
    year: int = state.fiscal_year  # type: ignore[assignment]
    first, _ = year_bounds(year)
    if day < first:
        return first
    if not state.has_budget:
        return None
    due: int | None = None
    budget = state.budget
    paid = state.paid
    if STALLED not in findings and paid < budget:
        anchor = quiet_since(state)
        if anchor is not None:
            stall_day = anchor + profile.stalled.days
            if stall_day > day:
                due = stall_day
    if BEHIND_SCHEDULE not in findings and budget > 0:
        # The first later day the curve comes within the band of the line (where the exact
        # check decides), or tomorrow when it already is.
        lag = profile.behind_schedule.lag
        margin = expected_progress(day, year, state.plan) - lag - paid / budget if day >= first else -1.0
        if margin >= -BAND:
            behind_day: int | None = day + 1 if day < year_bounds(year)[1] else None
        else:
            behind_day = first_day_above(year, state.plan, paid / budget + lag - BAND, day)
        if behind_day is not None and (due is None or behind_day < due):
            due = behind_day
    return due


def evaluate_department(totals: Totals, day: int, profile: Profile) -> Findings:
    if totals.budget <= 0:
        return {}
    floor = profile.floor_on(day, totals.fiscal_year)
    if floor is not None and below_floor(totals.paid, totals.budget, floor.floor):
        return {DEPARTMENT_LOW_EXECUTION: profile.department_low_execution.severity}
    return {}


def _ratio(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def project_figures(
    state: ProjectState, day: int, profile: Profile, ctx: DayContext | None = None
) -> dict[str, Any]:
    """The evidence behind a project's alerts on ``day``: amounts as yuan strings, ratios 0-1.

    Built for every alert transition (one per few events of a year), so budget and paid
    are computed once, not again by each of the state's properties. ``ctx``: the day's
    context of the project's year, if the caller has it (the same values, looked up once
    for the day rather than on the profile and through the calendar's caches)."""
    year: int = state.fiscal_year  # type: ignore[assignment]
    if ctx is not None and ctx.day == day and ctx.year == year:
        floor = ctx.floor
        index = day - ctx.first
        expected = progress_in(index, ctx.total, ctx.spans, ctx.month_of, state.plan) if index >= 0 else 0.0
        time_progress = ctx.time_progress
        lag, gap, stall_days = ctx.lag, ctx.gap, ctx.stalled_days
    else:
        floor = profile.floor_on(day, year)
        expected = expected_progress(day, year, state.plan)
        time_progress = _ratio(time_progress_for_year(day, year))
        lag, gap, stall_days = profile.behind_schedule.lag, profile.progress_gap.gap, profile.stalled.days
    anchor = quiet_since(state)
    budget = (state.approved or 0) + state.adjusted
    paid = state.payments - state.reversals
    return {
        "budget": fen_to_str(budget),
        "paid": fen_to_str(paid),
        "execution_rate": money_rate(paid, budget),
        "time_progress": time_progress,
        "expected_progress": _ratio(expected),
        "performance_completion": _ratio(state.completion),
        "floor": floor.floor if floor is not None else None,
        "behind_threshold": _ratio(expected - lag),
        # The gap the rule judged, from the exact values (not from the six-decimal rate,
        # which could read equal to the threshold it exceeded): see _gap_figure.
        "progress_gap": (_gap_figure(paid, budget, state.completion, state.indicators, gap)
                         if budget > 0 and state.completion is not None else None),
        "gap_threshold": gap,
        "days_without_payment": (day - anchor) if anchor is not None else None,
        "stall_days": stall_days,
    }


def department_figures(totals: Totals, day: int, profile: Profile) -> dict[str, Any]:
    floor = profile.floor_on(day, totals.fiscal_year)
    return {
        "budget": fen_to_str(totals.budget),
        "paid": fen_to_str(totals.paid),
        "execution_rate": money_rate(totals.paid, totals.budget),
        "time_progress": _ratio(time_progress_for_year(day, totals.fiscal_year)),
        "floor": floor.floor if floor is not None else None,
        "projects": totals.projects,
    }
