from fractions import Fraction

from alerts.reductions import proposals, propose
from budget.ledger import fold
from tests import builders as b
from tests.builders import day


def project(budget: str, *payments: tuple[str, str]) -> object:
    events = [b.registered("P", name="园区修缮经费项目"), b.approved("P", budget)]
    events += [b.payment("P", amount, on=on) for amount, on in payments]
    return fold(b.records(events)).projects["P"]


def test_a_project_that_paid_nothing_gets_a_100_percent_proposal() -> None:
    proposal = propose(project("100000"), day("2025-09-30"))
    assert proposal is not None
    assert proposal.proposed_reduction == 10000000
    assert proposal.reduction_rate == 1.0


def test_projection_rounds_down_to_100_yuan() -> None:
    # 09-30 is day 273 of 365: projected = 200000 * 365 / 273 = 267399.27 yuan.
    proposal = propose(project("1000000", ("200000", "2025-03-01")), day("2025-09-30"))
    assert proposal is not None
    exact = Fraction(100000000) - Fraction(20000000 * 365, 273)
    assert proposal.proposed_reduction == int(exact // 10000) * 10000 == 73260000
    assert proposal.to_json()["proposed_reduction"] == "732600.00"
    assert round(proposal.reduction_rate, 4) == 0.7326


def test_projection_is_capped_at_the_budget() -> None:
    # Paid 90% by mid-year: the projection exceeds the budget, so nothing to cut.
    assert propose(project("1000", ("900", "2025-03-01")), day("2025-06-30")) is None


def test_the_seed_report_case_of_a_one_third_cut() -> None:
    # 园区修缮经费: budget 150万, cut 50万 (33.33%) — a project on course to spend 100万.
    # At 12-31 time progress is 1, so the projection is what was paid.
    proposal = propose(project("1500000", ("1000000", "2025-11-01")), day("2025-12-31"))
    assert proposal is not None
    assert proposal.proposed_reduction == 50000000
    assert round(proposal.reduction_rate * 100, 2) == 33.33


def test_a_department_overall_line_gets_no_proposal() -> None:
    """部门整体支出 contains the department's projects: proposed beside them, the same money
    was counted twice in the proposals' 合计 (audit), as the department sums never count it."""
    ledger = fold(b.records([
        b.registered("P"), b.approved("P", "100000"), b.payment("P", "10000", on="2025-03-01"),
        b.registered("ALL", kind="department_overall"), b.approved("ALL", "500000"),
        b.payment("ALL", "10000", on="2025-03-01"),
    ]))
    overall = ledger.projects["ALL"]
    assert propose(overall, day("2025-09-30")) is None
    found = proposals([ledger.projects["P"], overall], day("2025-09-30"))
    assert [p.project_id for p in found] == ["P"]
