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

    head = "【新预警·严重预警】超预算支付：教育局「校舍改造」（P1）截至2025-03-01已支付5.00万元，"
    assert message("0.00") == head + "但尚无预算（无预算支出）。"
    assert message("40000.00") == head + "超过预算4.00万元。"
