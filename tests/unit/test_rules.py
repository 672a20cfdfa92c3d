"""Every rule at its boundaries (DESIGN §5), baseline profile unless said."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.rules import (
    BEHIND_SCHEDULE,
    DEPARTMENT_LOW_EXECUTION,
    LOW_EXECUTION,
    OVERSPEND,
    PROGRESS_GAP,
    STALLED,
    assess,
    day_context,
    evaluate_department,
    evaluate_project,
    next_due,
    project_figures,
)
from budget.ledger import Ledger, ProjectState, fold
from connectors.profiles import load_profile
from tests import builders as b
from tests.builders import day

BASELINE = load_profile("baseline")


def state_of(*events: dict) -> ProjectState:
    return fold(b.records([b.registered("P", plan=None), *events])).projects["P"]


def fires(state: ProjectState, on: str, profile=BASELINE) -> dict[str, str]:
    return evaluate_project(state, day(on), profile)


def test_low_execution_at_exactly_30_percent_does_not_fire() -> None:
    at_floor = state_of(b.approved("P", "1000000"), b.payment("P", "300000", on="2025-06-01"))
    below = state_of(b.approved("P", "1000000"), b.payment("P", "299999.99", on="2025-06-01"))
    assert LOW_EXECUTION not in fires(at_floor, "2025-06-30")
    assert fires(below, "2025-06-30")[LOW_EXECUTION] == "critical"


@pytest.mark.parametrize("budget", ["100000000", "10000000000"])  # 1亿 and 100亿
def test_one_fen_under_the_floor_fires_on_any_budget(budget: str) -> None:
    """Compared as floats with 1e-9 slack, 29,999,999.99 of 1亿 passed as 30%."""
    floor = int(budget) * 3 // 10
    at_floor = state_of(b.approved("P", budget), b.payment("P", f"{floor}.00", on="2025-06-01"))
    below = state_of(b.approved("P", budget), b.payment("P", f"{floor - 1}.99", on="2025-06-01"))
    assert LOW_EXECUTION not in fires(at_floor, "2025-06-30")
    assert fires(below, "2025-06-30")[LOW_EXECUTION] == "critical"
    assert LOW_EXECUTION in assess(below, day_context(BASELINE, day("2025-06-30"), 2025))[0]
    ledger = fold(b.records([b.registered("P"), b.approved("P", budget),
                             b.payment("P", f"{floor - 1}.99", on="2025-06-01")]))
    totals = ledger.departments[(2025, "D01")]
    assert evaluate_department(totals, day("2025-06-30"), BASELINE) == {DEPARTMENT_LOW_EXECUTION: "warning"}


@pytest.mark.parametrize("budget", ["100000000", "10000000000"])  # 1亿 and 100亿
def test_one_fen_past_the_schedule_or_the_gap_fires_as_the_floors_do(budget: str) -> None:
    """behind_schedule and progress_gap compared floats with 1e-9 slack: one fen at 1亿 (a
    1e-10 breach) fired a day late, or never (oracle audit). Inside the band they decide
    exactly, on the hot path (assess, with its next day) as in the reference."""
    fen = int(budget) * 100
    # 2025-05-26 is day 146 of 365: time progress 0.4 exactly, so the line is 20%.
    line = fen // 5
    behind = state_of(b.approved("P", budget), b.payment("P", f"{(line - 1) // 100}.{(line - 1) % 100:02d}",
                                                           on="2025-01-02"))
    on_line = state_of(b.approved("P", budget), b.payment("P", f"{line // 100}.00", on="2025-01-02"))
    assert BEHIND_SCHEDULE in fires(behind, "2025-05-26") and BEHIND_SCHEDULE not in fires(on_line, "2025-05-26")
    assert BEHIND_SCHEDULE not in fires(behind, "2025-05-25")
    ctx = day_context(BASELINE, day("2025-05-25"), 2025)
    findings, due = assess(behind, ctx)
    assert BEHIND_SCHEDULE not in findings and due == day("2025-05-26")  # looked at again on the day
    assert BEHIND_SCHEDULE in assess(behind, day_context(BASELINE, day("2025-05-26"), 2025))[0]
    # |0.7000000001 − 0.5| > 0.2 by 1e-10 of the budget
    seventy = fen * 7 // 10 + 1
    gap = state_of(b.approved("P", budget), b.payment("P", f"{seventy // 100}.{seventy % 100:02d}", on="2025-05-20"),
                   b.indicator("P", "I1", 10), b.report("P", "I1", 5, on="2025-05-20"))
    assert PROGRESS_GAP in fires(gap, "2025-05-26")
    assert PROGRESS_GAP in assess(gap, day_context(BASELINE, day("2025-05-26"), 2025))[0]


def test_low_execution_only_from_the_checkpoint_on() -> None:
    lagging = state_of(b.approved("P", "1000000"), b.payment("P", "100000", on="2025-06-01"))
    assert LOW_EXECUTION not in fires(lagging, "2025-06-29")
    assert LOW_EXECUTION in fires(lagging, "2025-06-30")
    assert LOW_EXECUTION in fires(lagging, "2025-11-30")


def test_progress_gap_at_exactly_20_points_does_not_fire() -> None:
    for paid, actual in (("450000", 25), ("700000", 50), ("500000", 30), ("300000", 50)):
        at_gap = state_of(
            b.approved("P", "1000000"), b.payment("P", paid, on="2025-03-01"),
            b.indicator("P", "I", 100), b.report("P", "I", actual, on="2025-03-31"),
        )
        assert PROGRESS_GAP not in fires(at_gap, "2025-04-01"), (paid, actual)
    over = state_of(
        b.approved("P", "1000000"), b.payment("P", "450100", on="2025-03-01"),
        b.indicator("P", "I", 100), b.report("P", "I", 25, on="2025-03-31"),
    )
    assert fires(over, "2025-04-01")[PROGRESS_GAP] == "warning"


def test_progress_gap_exactly_20_points_from_a_noisy_float_completion_does_not_fire() -> None:
    """2.1 of 3 is 70% as written, but its float quotient is 0.7000000000000001: settled
    from that float, a 50% rate fired "相差20.0001个百分点" (auditor's oracle). So did a
    weighted mean (1 × 100% + 2 × 55%) / 3. The band is decided from the written values."""
    one = state_of(b.approved("P", "1000.00"), b.payment("P", "500.00", on="2025-01-02"),
                   b.indicator("P", "K", 3), b.report("P", "K", 2.1, on="2025-01-03"))
    weighted = state_of(b.approved("P", "1000.00"), b.payment("P", "500.00", on="2025-01-02"),
                        b.indicator("P", "A", 1, weight=1), b.indicator("P", "B", 100, weight=2),
                        b.report("P", "A", 1, on="2025-01-03"), b.report("P", "B", 55, on="2025-01-03"))
    for state in (one, weighted):
        assert state.completion is not None and state.completion != 0.7  # the float is noisy
        for on in ("2025-01-03", "2025-01-20"):
            assert PROGRESS_GAP not in fires(state, on)
            assert PROGRESS_GAP not in assess(state, day_context(BASELINE, day(on), 2025))[0]
    # a fen more paid is over the line, whatever the float says
    over = state_of(b.approved("P", "1000.00"), b.payment("P", "499.99", on="2025-01-02"),
                    b.indicator("P", "K", 3), b.report("P", "K", 2.1, on="2025-01-03"))
    assert fires(over, "2025-01-03")[PROGRESS_GAP] == "warning"
    assert PROGRESS_GAP in assess(over, day_context(BASELINE, day("2025-01-03"), 2025))[0]


def test_progress_gap_needs_a_reported_indicator() -> None:
    state = state_of(b.approved("P", "1000000"), b.payment("P", "900000", on="2025-03-01"), b.indicator("P", "I", 100))
    assert PROGRESS_GAP not in fires(state, "2025-04-01")


def test_behind_schedule_at_exactly_20_points_below_the_plan() -> None:
    plan = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0]
    def planned(paid: str) -> ProjectState:
        return fold(b.records([b.registered("P", plan=plan), b.approved("P", "1000000"),
                               b.payment("P", paid, on="2025-02-01")])).projects["P"]
    assert BEHIND_SCHEDULE not in fires(planned("500000"), "2025-06-30")  # expected 0.6, rate 0.5
    assert BEHIND_SCHEDULE in fires(planned("300000"), "2025-06-30")  # 30 points behind
    assert BEHIND_SCHEDULE not in fires(planned("400000"), "2025-06-30")  # exactly 20 points
    assert fires(planned("399999.99"), "2025-06-30")[BEHIND_SCHEDULE] == "warning"


def test_behind_schedule_follows_time_progress_in_a_leap_year() -> None:
    def leap(paid: str) -> ProjectState:
        return fold(b.records([b.registered("P", year=2024, on="2024-01-05"),
                               b.approved("P", "1000000", on="2024-01-05"),
                               b.payment("P", paid, on="2024-02-01")])).projects["P"]
    # 2024-06-30 is day 182 of 366: expected 0.49727, threshold 0.29727.
    assert BEHIND_SCHEDULE not in fires(leap("297300"), "2024-06-30")
    assert BEHIND_SCHEDULE in fires(leap("297200"), "2024-06-30")
    # In a common year the same date is day 181 of 365 (0.49589): 297200 is fine there.
    common = state_of(b.approved("P", "1000000"), b.payment("P", "297200", on="2025-02-01"))
    assert BEHIND_SCHEDULE not in fires(common, "2025-06-30")


def test_overspend_only_above_the_budget() -> None:
    exact = state_of(b.approved("P", "1000"), b.payment("P", "1000", on="2025-03-01"))
    over = state_of(b.approved("P", "1000"), b.payment("P", "1000.01", on="2025-03-01"))
    assert OVERSPEND not in fires(exact, "2025-03-01")
    assert fires(over, "2025-03-01")[OVERSPEND] == "critical"


def test_overspend_after_adjusting_the_budget_to_zero() -> None:
    state = state_of(b.approved("P", "1000"), b.payment("P", "10", on="2025-03-01"),
                     b.adjusted("P", "-1000", on="2025-04-01"))
    found = fires(state, "2025-07-01")
    assert found == {OVERSPEND: "critical"}  # no rate rules without a budget


def test_stalled_from_the_90th_day_without_payment() -> None:
    never = state_of(b.approved("P", "1000", on="2025-01-05"))
    assert STALLED not in fires(never, "2025-04-04")  # 89 days after approval
    assert fires(never, "2025-04-05")[STALLED] == "warning"  # 90 days
    paid_once = state_of(b.approved("P", "1000", on="2025-01-05"), b.payment("P", "10", on="2025-03-01"))
    assert STALLED not in fires(paid_once, "2025-05-29")
    assert STALLED in fires(paid_once, "2025-05-30")
    fully_paid = state_of(b.approved("P", "1000", on="2025-01-05"), b.payment("P", "1000", on="2025-01-06"))
    assert STALLED not in fires(fully_paid, "2025-12-01")


def stall_day_of(state: ProjectState, start: str) -> int:
    """The day stalled first fires, as a runtime finds it: evaluated on ``start``, then on
    each due day assess gives (no event in between); evaluate_project agrees."""
    on = day(start)
    while True:
        findings, due = assess(state, day_context(BASELINE, on, 2025))
        assert (STALLED in findings) == (STALLED in evaluate_project(state, on, BASELINE))
        if STALLED in findings:
            assert STALLED not in evaluate_project(state, on - 1, BASELINE)
            return on
        assert due is not None and due > on
        on = due


def test_stalled_counts_from_a_追加_when_the_budget_has_no_approval() -> None:
    """Funded by budget_adjusted alone (no budget_approved), a project that never paid
    never stalled: the clock started at approved_on, None (auditor's oracle)."""
    only_added = state_of(b.adjusted("P", "1000.00", on="2025-01-05"))
    assert stall_day_of(only_added, "2025-01-05") == day("2025-04-05")
    assert project_figures(only_added, day("2025-07-10"), BASELINE)["days_without_payment"] == 186
    # a cut does not give a budget: the clock starts at the first 追加
    cut_first = state_of(b.adjusted("P", "-10.00", on="2025-01-02"), b.adjusted("P", "1000.00", on="2025-02-01"))
    assert stall_day_of(cut_first, "2025-02-01") == day("2025-02-01") + 90
    # a 追加 before the approval: the budget dates from the 追加
    added_first = state_of(b.adjusted("P", "500.00", on="2025-01-05"), b.approved("P", "1000", on="2025-02-10"))
    assert stall_day_of(added_first, "2025-02-10") == day("2025-04-05")


def test_a_corrected_approval_does_not_restart_the_stall_clock() -> None:
    """Approved 01-01, a corrected 年初批复 03-15: stalled fired 06-13 instead of 04-01, and
    days_without_payment read 90 when nothing had been paid for 163 days."""
    first = b.approved("P", "1000", on="2025-01-01", event_id="APPR-1")
    corrected = b.approved("P", "1200", on="2025-03-15", event_id="APPR-2")
    for events in ((first, corrected), (corrected, first)):  # whatever order they arrive in
        state = state_of(*events)
        assert state.approved == 120000 and state.approved_on == day("2025-03-15")
        assert stall_day_of(state, "2025-03-15") == day("2025-04-01")
        assert project_figures(state, day("2025-06-13"), BASELINE)["days_without_payment"] == 163


def test_a_state_stored_before_budget_on_loads_and_stalls_from_its_approval() -> None:
    state = state_of(b.approved("P", "1000", on="2025-01-01", event_id="A1"),
                     b.approved("P", "1000", on="2025-03-15", event_id="A2"))
    stored = state.to_dict()
    assert stored["budget_on"] == day("2025-01-01")
    assert ProjectState.from_dict(stored).budget_on == day("2025-01-01")
    del stored["budget_on"]  # a projects-table row or changelog value of an earlier release
    old = ProjectState.from_dict(stored)
    assert old.budget_on is None
    assert stall_day_of(old, "2025-03-15") == day("2025-03-15") + 90  # as that release had it


def test_no_budget_no_rules() -> None:
    state = fold(b.records([b.registered("P")])).projects["P"]
    assert fires(state, "2025-09-30") == {}
    zero = state_of(b.approved("P", "0"))
    assert fires(zero, "2025-09-30") == {}


def test_paying_with_no_budget_at_all_is_an_overspend() -> None:
    """budget = approved + adjustments = 0 < paid, approved or not (DESIGN §4, §5)."""
    unapproved = state_of(b.payment("P", "50000", on="2025-03-01"))
    approved_zero = state_of(b.approved("P", "0"), b.payment("P", "50000", on="2025-03-01"))
    for state in (unapproved, approved_zero):
        assert fires(state, "2025-03-01") == {OVERSPEND: "critical"}
        assert assess(state, day_context(BASELINE, day("2025-03-01"), 2025)) == ({OVERSPEND: "critical"}, None)
    reversed_ = state_of(b.payment("P", "50", on="2025-03-01"), b.reversal("P", "50", on="2025-03-02"))
    assert fires(reversed_, "2025-03-02") == {}


def test_department_rule_uses_the_floor_in_force() -> None:
    ledger = fold(b.records([
        b.registered("A"), b.approved("A", "1000"), b.payment("A", "100", on="2025-03-01"),
        b.registered("B"), b.approved("B", "1000"), b.payment("B", "499.99", on="2025-03-01"),
    ]))
    totals = ledger.departments[(2025, "D01")]
    assert evaluate_department(totals, day("2025-06-29"), BASELINE) == {}
    assert evaluate_department(totals, day("2025-06-30"), BASELINE) == {DEPARTMENT_LOW_EXECUTION: "warning"}
    ledger.apply(b.record(b.payment("B", "0.01", on="2025-07-01")))
    assert evaluate_department(totals, day("2025-07-01"), BASELINE) == {}  # exactly 30%


@pytest.mark.parametrize("profile_name", ["baseline", "provincial"])
@settings(max_examples=300, deadline=None)
@given(
    approved=st.one_of(st.none(), st.integers(0, 10_000_000)),
    adjusted=st.integers(-2_000_000, 2_000_000),
    payments=st.integers(0, 12_000_000),
    reversals=st.integers(0, 1_000_000),
    last_payment=st.one_of(st.none(), st.integers(0, 364)),
    approved_on=st.integers(0, 60),
    completion=st.one_of(st.none(), st.floats(0, 1)),
    plan=st.booleans(),
    offset=st.integers(0, 364),
)
def test_the_fused_hot_path_equals_the_plain_rules(
    profile_name: str, approved: int | None, adjusted: int, payments: int, reversals: int,
    last_payment: int | None, approved_on: int, completion: float | None, plan: bool, offset: int,
) -> None:
    profile = load_profile(profile_name)
    first = day("2025-01-01")
    state = ProjectState("P", fiscal_year=2025, name="n", department_id="D", department_name="d",
                         fund_source="general", approved=approved, approved_on=first + approved_on,
                         adjusted=adjusted, payments=payments, reversals=reversals,
                         last_payment_on=None if last_payment is None else first + last_payment,
                         plan=(0.05, 0.1, 0.2, 0.3, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0) if plan else None)
    state.completion = completion
    today = first + offset
    findings, due = assess(state, day_context(profile, today, 2025))
    assert findings == evaluate_project(state, today, profile)
    assert due == next_due(state, today, profile, findings)
    if due is not None:
        # Nothing time-driven changes before the due day (checkpoints aside).
        assert due > today
        for between in range(today + 1, min(due, first + 365)):
            if profile.floor_on(between, 2025) == profile.floor_on(today, 2025):
                assert evaluate_project(state, between, profile) == findings


def test_a_ledger_state_evaluates_after_a_registration_arrives_last() -> None:
    ledger = Ledger()
    for r in b.records([b.approved("P", "1000"), b.payment("P", "10", on="2025-02-01"), b.registered("P")]):
        ledger.apply(r)
    assert LOW_EXECUTION in fires(ledger.projects["P"], "2025-07-01")
