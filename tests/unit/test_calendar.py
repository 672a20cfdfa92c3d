import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from budget.calendar import (
    checkpoint_day,
    expected_curve,
    expected_progress,
    first_day_above,
    first_index_above,
    progress_at,
    time_progress,
    time_progress_for_year,
)
from tests.builders import day


@pytest.mark.parametrize(
    ("date", "progress"),
    [("2025-01-01", 1 / 365), ("2025-06-30", 181 / 365), ("2025-12-31", 1.0),
     ("2024-06-30", 182 / 366), ("2024-12-31", 1.0), ("2024-02-29", 60 / 366)],
)
def test_time_progress_counts_leap_years(date: str, progress: float) -> None:
    assert time_progress(dt.date.fromisoformat(date)) == pytest.approx(progress, abs=1e-12)


def test_time_progress_of_a_fiscal_year_outside_it() -> None:
    assert time_progress_for_year(day("2024-12-31"), 2025) == 0.0
    assert time_progress_for_year(day("2026-01-02"), 2025) == 1.0


def test_expected_progress_follows_the_plan_linearly_inside_a_month() -> None:
    plan = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0]
    assert expected_progress(day("2025-01-31"), 2025, plan) == pytest.approx(0.1)
    assert expected_progress(day("2025-02-14"), 2025, plan) == pytest.approx(0.1 + 0.1 * 14 / 28)
    assert expected_progress(day("2025-12-31"), 2025, plan) == pytest.approx(1.0)
    # Without a plan it is the time progress.
    assert expected_progress(day("2025-06-30"), 2025, None) == pytest.approx(181 / 365)


def test_first_day_above_finds_the_crossing() -> None:
    # Time progress exceeds 0.5 first on day 183 (183/365 = 0.5014).
    found = first_day_above(2025, None, 0.5, day("2025-01-01"))
    assert found == day("2025-07-02")
    assert first_day_above(2025, None, 1.0, day("2025-01-01")) is None
    assert first_day_above(2025, None, 0.1, day("2025-08-01")) == day("2025-08-02")


def test_checkpoint_of_feb_29_in_a_common_year_is_feb_28() -> None:
    assert checkpoint_day(2025, "02-29") == day("2025-02-28")
    assert checkpoint_day(2024, "02-29") == day("2024-02-29")


@settings(max_examples=300, deadline=None)
@given(
    year=st.sampled_from([2024, 2025]),
    raw=st.one_of(st.none(), st.lists(st.floats(0, 1), min_size=12, max_size=12)),
    threshold=st.floats(-0.1, 1.1),
    index=st.integers(0, 365),
)
def test_the_arithmetic_curve_equals_the_materialised_one(
    year: int, raw: list[float] | None, threshold: float, index: int
) -> None:
    plan = None if raw is None else (*sorted(raw[:11]), 1.0)
    curve = expected_curve(year, plan)
    index = min(index, len(curve) - 1)
    assert progress_at(index, year, plan) == curve[index]
    if curve[index] <= threshold:  # the precondition of the search
        found = next((i for i in range(index + 1, len(curve)) if curve[i] > threshold), None)
        assert first_index_above(year, plan, threshold, index) == found


def test_a_month_end_rounding_blip_does_not_delay_the_crossing() -> None:
    # Float rounding puts 2024-09-30 (0.7455…339) above 2024-10-01 (0.7455…338) on this plan:
    # the curve is not monotone, so a binary search would report November.
    plan = (0.0,) * 7 + (0.47552369812864825, 0.7455187552906338, 0.7455187552906338, 1.0, 1.0)
    threshold = 0.7455187552906338
    assert first_index_above(2024, plan, threshold, 0) == 273  # 09-30
    assert first_day_above(2024, plan, threshold, day("2024-01-01")) == day("2024-09-30")
