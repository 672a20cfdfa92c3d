from fractions import Fraction

import pytest

from budget.indicators import (
    Indicator,
    completion,
    exact_completion,
    exact_performance_completion,
    performance_completion,
)


@pytest.mark.parametrize(
    ("direction", "target", "actual", "expected"),
    [
        ("higher_better", 100, 50, 0.5), ("higher_better", 100, 150, 1.0), ("higher_better", 100, 100, 1.0),
        ("higher_better", 0, 3, 1.0), ("higher_better", 100, -5, 0.0),
        ("lower_better", 5, 4, 1.0), ("lower_better", 5, 5, 1.0), ("lower_better", 5, 10, 0.5),
        ("boolean", 1, True, 1.0), ("boolean", 1, False, 0.0), ("boolean", 1, 0, 0.0),
    ],
)
def test_completion_of_one_indicator(direction: str, target: float, actual: float, expected: float) -> None:
    assert completion(direction, target, actual) == pytest.approx(expected)
    assert exact_completion(direction, target, actual) == Fraction(expected)


def test_weighted_mean_over_reported_indicators_only() -> None:
    indicators = {
        "a": Indicator("a", target=100, actual=50, weight=1),
        "b": Indicator("b", target=10, actual=10, weight=3),
        "c": Indicator("c", target=10, actual=None, weight=5),  # defined, not reported
        "d": Indicator("d", target=None, actual=4),  # reported, never defined
    }
    assert performance_completion(indicators) == pytest.approx((0.5 * 1 + 1.0 * 3) / 4)


def test_nothing_reported_means_no_completion() -> None:
    assert performance_completion({"a": Indicator("a", target=1)}) is None
    assert performance_completion({}) is None


def test_exact_completion_is_that_of_the_written_decimals() -> None:
    """What the progress_gap band is decided on: 2.1 of 3 is 7/10, not its float."""
    assert completion("higher_better", 3.0, 2.1) != 0.7
    assert exact_completion("higher_better", 3.0, 2.1) == Fraction(7, 10)
    assert exact_completion("lower_better", 0.3, 0.6) == Fraction(1, 2)
    indicators = {
        "a": Indicator("a", target=1.0, actual=1.0, weight=1.0),
        "b": Indicator("b", target=100.0, actual=55.0, weight=2.0),
        "c": Indicator("c", target=10.0, actual=None, weight=5.0),
    }
    assert performance_completion(indicators) != 0.7
    assert exact_performance_completion(indicators) == Fraction(7, 10)
    assert exact_performance_completion({"a": Indicator("a", target=1.0)}) is None
