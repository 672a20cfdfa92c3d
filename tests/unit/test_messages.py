"""Alert messages and actions (alerts.messages)."""

from __future__ import annotations

from alerts.messages import compose

FIGURES = {"budget": "1000000.00", "paid": "100000.00", "execution_rate": 0.1, "time_progress": 0.5,
           "expected_progress": 0.5, "performance_completion": None, "floor": 0.3}


def _compose(subject: str, days: int) -> tuple[str, str]:
    return compose(rule="low_execution", kind="firing", severity="critical", subject=subject,
                   figures=FIGURES, as_of="2025-06-30", deadline_days=days)


def test_the_action_names_the_deadline_and_is_one_string_shared_by_every_alert() -> None:
    first_message, first_action = _compose("教育局「校舍改造」（P1）", 10)
    second_message, second_action = _compose("卫健委「设备更新」（P2）", 10)
    assert "10个工作日" in first_action
    assert first_message != second_message and "校舍改造" in first_message
    # thousands of alerts fire at once on a checkpoint: they hold one copy of the sentence
    assert first_action is second_action
    other = _compose("教育局「校舍改造」（P1）", 15)[1]
    assert "15个工作日" in other and other != first_action


def test_paying_a_project_with_no_budget_is_called_what_it_is() -> None:
    """Spending beyond a budget and spending with none (无预算支出) are different findings;
    "超过预算0.00万元" hid the second."""
    def message(budget: str) -> str:
        figures = {**FIGURES, "budget": budget, "paid": "50000.00", "execution_rate": None}
        return compose(rule="overspend", kind="firing", severity="critical", subject="教育局「校舍改造」（P1）",
                       figures=figures, as_of="2025-03-01", deadline_days=10)[0]

    head = "【新预警·严重预警】超预算支付：教育局「校舍改造」（P1）截至2025-03-01"
    assert message("0.00") == head + "预算为0，已支付50,000.00元（无预算支出）。"
    # cut below zero (a recovery larger than the budget): not "spent with no budget"
    assert message("-10000.00") == head + (
        "经调减（收回）后预算为-1.00万元（负数），已支付50,000.00元；请核对追加、调减和收回的金额。")
    # budget first: "已支付5.00万元，超过预算4.00万元" read as "over the budget by 4万"
    assert message("40000.00") == head + "预算4.00万元，已支付5.00万元，超支10,000.00元。"
    # 49 元 over a million: equal in 万元, told in 元
    assert message("49951.00").endswith("预算5.00万元，已支付5.00万元，超支49.00元。")


def test_behind_schedule_says_how_far_behind_and_behind_what() -> None:
    """"落后于计划进度25.75%超过20个百分点" read as 25.75% behind; the lag was never printed."""
    def behind(rate: float, expected: float, time: float) -> str:
        figures = {**FIGURES, "execution_rate": rate, "expected_progress": expected, "time_progress": time,
                   "behind_threshold": expected - 0.2}
        return compose(rule="behind_schedule", kind="firing", severity="warning", subject="S",
                       figures=figures, as_of="2025-04-05", deadline_days=10)[0]

    told = "预算执行率为5.74%，序时进度为25.75%，落后20.01个百分点，超过20个百分点的预警线"
    assert told in behind(0.0574, 0.2575, 0.2575)
    assert "用款计划进度为40.00%，落后35.00个百分点" in behind(0.05, 0.4, 0.2575)
    assert "落后20.0001个百分点" in behind(0.299999, 0.5, 0.5)  # never "落后20.00个百分点，超过20"



def test_a_breach_by_a_hair_never_reads_as_equal_to_its_threshold() -> None:
    def low(rate: float, floor: float = 0.3, rule: str = "low_execution") -> str:
        figures = {**FIGURES, "execution_rate": rate, "floor": floor, "projects": 3}
        return compose(rule=rule, kind="firing", severity="critical", subject="S",
                       figures=figures, as_of="2025-06-30", deadline_days=10)[0]

    assert "预算执行率为29.9999%，低于30.0000%的执行进度要求" in low(0.299999)
    assert "预算执行率为29.995%，低于30.000%" in low(0.29995)
    assert "预算执行率为10.00%，低于30.00%" in low(0.1)
    assert "部门整体预算执行率为29.9999%，低于30.0000%" in low(0.299999, rule="department_low_execution")


def test_gaps_and_thresholds_are_told_apart_and_never_rounded_to_whole_points() -> None:
    def gap(rate: float, completion: float, threshold: float) -> str:
        figures = {**FIGURES, "execution_rate": rate, "performance_completion": completion,
                   "gap_threshold": threshold}
        return compose(rule="progress_gap", kind="firing", severity="warning", subject="S",
                       figures=figures, as_of="2025-06-30", deadline_days=10)[0]

    assert "相差10.0001个百分点，超过10个百分点（资金支付快于绩效目标完成）" in gap(0.400001, 0.3, 0.1)
    assert "相差30.00个百分点，超过12.5个百分点" in gap(0.6, 0.3, 0.125)
    assert "（绩效目标完成快于资金支付）" in gap(0.1, 0.6, 0.2)


def test_a_resolved_alert_with_no_budget_left_says_so() -> None:
    message, _ = compose(rule="overspend", kind="resolved", severity="critical", subject="S",
                         figures={**FIGURES, "budget": "-10000.00", "execution_rate": None}, as_of="2025-07-01",
                         deadline_days=10)
    assert message.endswith("的预警已于2025-07-01解除，当前预算为-1.00万元，无法计算预算执行率。")


def test_the_gap_printed_is_the_exact_one_the_rule_judged() -> None:
    """5,000,004 fen of 10,000,000 against 30% completion: the exact gap 0.2000004 fires,
    but from the six-decimal rate 0.5 it printed 相差20.0000个百分点，超过20个百分点 (review)."""
    from alerts.rules import project_figures
    from budget.ledger import ProjectState
    from connectors.profiles import load_profile

    state = ProjectState("P1", fiscal_year=2025, name="n", department_id="D", department_name="d",
                         fund_source="general", approved=10_000_000, approved_on=739252, payments=5_000_004,
                         completion=0.3)
    figures = project_figures(state, 739430, load_profile("baseline"))
    assert figures["execution_rate"] == 0.5 and figures["progress_gap"] == 0.200001
    message = compose(rule="progress_gap", kind="firing", severity="warning", subject="S", figures=figures,
                      as_of="2025-06-30", deadline_days=10)[0]
    assert "相差20.0001个百分点，超过20个百分点" in message


def test_a_gap_exactly_on_the_line_reads_as_the_line() -> None:
    """Paid 50% against 2.1 of 3 (70% as written, 0.7000000000000001 as a float): no gap
    alert, but the figures of the project's other alerts read progress_gap 0.200001, cut
    upward from the float (auditor's oracle). From the exact values it is 0.2."""
    from alerts.rules import project_figures
    from budget.ledger import fold
    from connectors.profiles import load_profile
    from tests import builders as b

    baseline = load_profile("baseline")
    for paid, gap in (("500.00", 0.2), ("499.99", 0.20001), ("600.00", 0.1)):
        state = fold(b.records([
            b.registered("P"), b.approved("P", "1000.00"), b.payment("P", paid, on="2025-01-02"),
            b.indicator("P", "K", 3), b.report("P", "K", 2.1, on="2025-01-03"),
        ])).projects["P"]
        assert project_figures(state, b.day("2025-07-01"), baseline)["progress_gap"] == gap, paid


def test_tables_cut_a_rate_rather_than_round_it_up_to_its_threshold() -> None:
    """A status table showed 30.00% for 0.299999, beside an alert saying 29.9999% < 30%."""
    from alerts.messages import pct_down

    assert pct_down(0.299999) == "29.99%"
    assert (pct_down(0.29), pct_down(0.3), pct_down(1.0), pct_down(0.0)) == ("29.00%", "30.00%", "100.00%", "0.00%")
    assert (pct_down(0.666667), pct_down(-0.05), pct_down(None)) == ("66.66%", "-5.00%", "—")
