"""Performance indicators (绩效目标指标) and their completion."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from budget.versions import version_pair


@dataclass(slots=True)
class Indicator:
    indicator_id: str
    name: str | None = None
    target: float | None = None
    unit: str | None = None
    direction: str = "higher_better"
    weight: float = 1.0
    category: str | None = None
    actual: float | bool | None = None
    reported_on: int | None = None
    defined_version: str | None = None  # budget.versions
    reported_version: str | None = None
    # (actual, reported_on, reported_version) of the latest report dated within the
    # project's fiscal year, kept while the current one is dated after it (a January
    # 绩效自评): the year's own, for a judgement as of its Dec 31.
    in_year: tuple[float | bool, int, str] | None = None
    # Every report while the project's year is unknown (not registered yet), placed then.
    unplaced: list[tuple[float | bool, int, str]] | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "indicator_id": self.indicator_id,
            "name": self.name,
            "target": self.target,
            "unit": self.unit,
            "direction": self.direction,
            "weight": self.weight,
            "category": self.category,
            "actual": self.actual,
            "reported_on": self.reported_on,
            "defined_version": version_pair(self.defined_version),
            "reported_version": version_pair(self.reported_version),
            "in_year": (
                [self.in_year[0], self.in_year[1], version_pair(self.in_year[2])] if self.in_year is not None else None
            ),
            "unplaced": (
                [[a, d, version_pair(v)] for a, d, v in sorted(self.unplaced, key=lambda r: r[2])]
                if self.unplaced is not None else None
            ),
        }


def completion(direction: str, target: float, actual: float | bool) -> float:
    """Completion of one indicator, 0-1.

    higher_better: min(actual/target, 1); lower_better: 1 if actual <= target
    else target/actual; boolean: 1 or 0. A zero target is met by any actual
    that is not worse than it.
    """
    if direction == "boolean":
        return 1.0 if bool(actual) else 0.0
    value = float(actual)
    if direction == "lower_better":
        if value <= target:
            return 1.0
        return max(target / value, 0.0) if value > 0 else 0.0
    if target <= 0:
        return 1.0 if value >= target else 0.0
    return min(max(value / target, 0.0), 1.0)


def performance_completion(indicators: dict[str, Indicator]) -> float | None:
    """Weighted mean completion over indicators that are both defined and reported."""
    total_weight = 0.0
    weighted = 0.0
    for ind in indicators.values():
        if ind.target is None or ind.actual is None:
            continue
        total_weight += ind.weight
        weighted += ind.weight * completion(ind.direction, ind.target, ind.actual)
    if total_weight == 0:
        return None
    return weighted / total_weight


def _written(value: float | bool) -> Fraction:
    """A number as the event wrote it: the shortest repr of its float (2.1, not the double
    nearest 2.1), so an exact decision sees the user's decimals."""
    if value is True or value is False:
        return Fraction(int(value))
    return Fraction(repr(float(value)))


def exact_completion(direction: str, target: float, actual: float | bool) -> Fraction:
    """``completion`` in fractions of the written target and actual (for thresholds)."""
    if direction == "boolean":
        return Fraction(1 if bool(actual) else 0)
    value, goal = _written(actual), _written(target)
    if direction == "lower_better":
        if value <= goal:
            return Fraction(1)
        return max(goal / value, Fraction(0)) if value > 0 else Fraction(0)
    if goal <= 0:
        return Fraction(1 if value >= goal else 0)
    return min(max(value / goal, Fraction(0)), Fraction(1))


def exact_performance_completion(indicators: dict[str, Indicator]) -> Fraction | None:
    """``performance_completion`` exactly, from the written targets, actuals and weights:
    the float mean of 2.1/3 is 0.7000000000000001, and a threshold decision must see 0.7."""
    total_weight = Fraction(0)
    weighted = Fraction(0)
    for ind in indicators.values():
        if ind.target is None or ind.actual is None:
            continue
        weight = _written(ind.weight)
        total_weight += weight
        weighted += weight * exact_completion(ind.direction, ind.target, ind.actual)
    if total_weight == 0:
        return None
    return weighted / total_weight
