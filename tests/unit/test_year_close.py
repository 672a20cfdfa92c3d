"""The close of a fiscal year (年度结束, profile.year_end): what is still firing ends.

A closed year's alerts used to stay firing for good: in the board's 预警中, in
budget_alerts_firing beside the new year's, and re-sent to Alertmanager (and so to
departments every repeat interval) for ever. They now end on the profile's close
day of the following year, as a resolution with the reason ``year_closed`` and the
year-end figures; late events of the year count before that day and change figures
only after it.
"""

from __future__ import annotations

import pytest

from alerts.lifecycle import RESOLVED, YEAR_CLOSED
from alerts.monitor import Monitor
from alerts.profile import Profile, ProfileError, profile_from_mapping
from budget.calendar import iso
from connectors.profiles import load_profile
from tests import builders as b
from tests.builders import day
from tests.unit.test_lifecycle_and_monitor import run


def _profile(closes_on: str | None) -> Profile:
    base = load_profile("baseline").model_dump()
    base["year_end"] = {"closes_on": closes_on}
    return profile_from_mapping(base)


NEVER_PAID = [b.registered("P"), b.approved("P", "1000000", on="2025-01-05"),
              b.registered("Q"), b.approved("Q", "1000000", on="2025-01-05"),
              b.payment("Q", "950000", on="2025-03-01")]


def test_the_years_alerts_still_firing_end_on_its_close_day_with_year_end_figures() -> None:
    monitor, before = run(NEVER_PAID, "2026-01-30")
    firing = {t["alert_id"] for t in before if t["transition"] == "firing"} - {
        t["alert_id"] for t in before if t["transition"] == "resolved"}
    assert "2025:low_execution:project:P" in firing and "2025:department_low_execution:department:D01" not in firing
    assert {a.alert_id for a in monitor.book.active()} == firing

    closed: list[dict] = []
    for when, transitions in monitor.process([], day("2026-02-10")):
        closed.extend(t.to_json() | {"closed_on": when} for t in transitions)
    assert {t["alert_id"] for t in closed} == firing
    assert {(t["transition"], t["reason"], t["date"], t["status"]) for t in closed} == {
        ("resolved", YEAR_CLOSED, "2026-01-31", RESOLVED)}
    assert list(monitor.book.active()) == []
    low = next(t for t in closed if t["alert_id"] == "2025:low_execution:project:P")
    # the figures of Dec 31, not of the day it fired (06-30) nor of the close day
    assert low["figures"]["time_progress"] == 1.0 and low["figures"]["execution_rate"] == 0.0
    assert low["previous_severity"] == low["severity"] == "critical"
    assert low["message"].startswith("【年度结束】预算执行率偏低：") and "2025年度结束仍未解除" in low["message"]
    assert "随年度关闭。截至2025-12-31预算执行率为0.00%，低于30.00%的执行进度要求" in low["message"]
    assert "无需再报送处置" in low["action"]


def test_a_late_payment_of_the_year_counts_before_its_close_and_changes_figures_only_after() -> None:
    monitor, _ = run(NEVER_PAID, "2026-01-20")
    late_december = b.payment("P", "900000", on="2025-12-30")
    _, judged = run([late_december], "2026-01-20", monitor=monitor)
    # imported in January, before the close: P's year-end alerts resolve as of Dec 31
    assert {(t["rule"], t["transition"]) for t in judged} >= {("low_execution", "resolved")}
    assert all("reason" not in t for t in judged)

    after, _ = run(NEVER_PAID, "2026-02-05")
    assert list(after.book.active()) == []
    _, nothing = run([b.payment("P", "900000", on="2025-12-30")], "2026-02-05", monitor=after)
    assert nothing == []  # the year is closed: no alert of it fires or resolves again
    assert after.ledger.projects["P"].paid == 90_000_000  # but its figures count the payment


def test_a_department_alert_ends_with_its_year_too() -> None:
    events = [b.registered("A", on="2024-01-02", year=2024), b.approved("A", "1000000", on="2024-01-02"),
              b.payment("A", "500000", on="2025-01-10")]  # January's money: not the year's
    _, transitions = run(events, "2025-03-01")
    department = [(t["transition"], t["date"], t.get("reason")) for t in transitions
                  if t["alert_id"] == "2024:department_low_execution:department:D01"]
    assert department == [("firing", "2024-06-30", None), ("resolved", "2025-01-31", YEAR_CLOSED)]
    ended = next(t for t in transitions if t["alert_id"] == "2024:department_low_execution:department:D01"
                 and t["transition"] == "resolved")
    assert ended["message"].startswith("【年度结束】部门预算执行率偏低：")
    # its Dec 31 totals: the January payment is kept apart
    assert "截至2024-12-31部门整体预算执行率为0.00%，低于30.00%" in ended["message"]
    assert ended["figures"]["projects"] == 1 and ended["figures"]["as_of"] == "2024-12-31"
    assert ended["figures"]["paid"] == "0.00"


def test_without_a_close_day_a_years_alerts_stay_firing() -> None:
    monitor, transitions = run(NEVER_PAID, "2026-12-31", _profile(None))
    assert not any(t.get("reason") for t in transitions)
    assert "2025:low_execution:project:P" in {a.alert_id for a in monitor.book.active()}


def test_a_later_close_day_is_taken_and_a_resumed_monitor_closes_alike() -> None:
    profile = _profile("03-15")
    _, whole = run(NEVER_PAID, "2026-04-01", profile)
    assert {t["date"] for t in whole if t.get("reason")} == {"2026-03-15"}

    first, part = run(NEVER_PAID, "2026-03-14", profile)
    resumed = Monitor(profile)
    resumed.restore(list(first.ledger.projects.values()), list(first.book.active()), first.clock)
    rest: list[dict] = []
    for _, transitions in resumed.process([], day("2026-04-01")):
        rest.extend(t.to_json() for t in transitions)
    assert part + rest == whole


@pytest.mark.parametrize("closes_on", ["02-29", "13-01", "1-31", "0131"])
def test_a_close_day_not_in_every_year_is_refused(closes_on: str) -> None:
    with pytest.raises(ProfileError, match=r"year_end\.closes_on"):
        _profile(closes_on)


def test_a_rate_a_hair_under_its_floor_and_an_overspend_of_a_few_yuan_still_read_so() -> None:
    """Printed with two decimals and in 万元, the close said 30.00% of a rate under 30%
    and nothing of an excess of 49 元 — the very conditions it reports as not lifted."""
    events = [b.registered("U"), b.approved("U", "1000000.00", on="2025-01-05"),
              b.payment("U", "299999.99", on="2025-12-20"),
              b.registered("O"), b.approved("O", "1000000.00", on="2025-01-05"),
              b.payment("O", "1000049.00", on="2025-12-20")]
    _, transitions = run(events, "2026-02-01")
    closed = {(t["rule"], t["subject_id"]): t["message"] for t in transitions if t.get("reason") == YEAR_CLOSED}
    assert "预算执行率为29.9999%，低于30.0000%" in closed[("low_execution", "U")]
    assert "超支49.00元" in closed[("overspend", "O")]
    actions = {(t["rule"], t["subject_id"]): t["action"] for t in transitions if t.get("reason") == YEAR_CLOSED}
    # an overspend has no "结余资金" to carry over, and is not ended by the year's end
    assert "超预算支付问题不因年度结束而消除" in actions[("overspend", "O")]
    assert "结余资金" in actions[("low_execution", "U")]


@pytest.mark.parametrize("after_the_year", [
    b.payment("P", "900000", on="2026-01-10"),
    b.adjusted("P", "-900000", on="2026-01-15"),  # a recovery (收回) dated in January
    b.reversal("P", "50000", on="2026-01-10"),
])
def test_money_dated_after_the_year_is_not_taken_for_a_year_end_figure(after_the_year: dict) -> None:
    """The ledger's sums hold 2026-dated money of a 2025 project: the close said 年末执行率
    100% of a project 10% spent at Dec 31 (100% "under" 30% after a recovery), and -10
    days without payment."""
    events = [b.registered("P"), b.approved("P", "1000000", on="2025-01-05"),
              b.payment("P", "100000", on="2025-02-01"), after_the_year]
    _, transitions = run(events, "2026-02-01")
    closed = {t["rule"]: t for t in transitions if t.get("reason") == YEAR_CLOSED}
    assert set(closed) >= {"low_execution", "stalled"}
    low = closed["low_execution"]
    assert low["figures"]["execution_rate"] == 0.1 and low["figures"]["paid"] == "100000.00"
    # its Dec 31 figures: what is dated after the year is kept apart
    assert "截至2025-12-31预算执行率为10.00%" in low["message"]
    assert low["figures"]["as_of"] == "2025-12-31"
    assert closed["stalled"]["figures"]["days_without_payment"] == 333  # 02-01 to 12-31
    # and so are the department's totals (100% "under" the floor was shown)
    department = closed["department_low_execution"]
    assert department["figures"]["execution_rate"] == 0.1
    assert "截至2025-12-31部门整体预算执行率为10.00%" in department["message"]


def test_a_monitor_that_passed_the_close_day_without_it_closes_on_its_next_day() -> None:
    """Faust workers check no profile fingerprint: upgraded after 01-31, they must still
    end last year's alerts (else nothing of that year could ever end them)."""
    before, _ = run(NEVER_PAID, "2026-02-10", _profile(None))
    firing = {a.alert_id for a in before.book.active()}
    assert firing
    upgraded = Monitor(load_profile("baseline"))
    upgraded.restore(list(before.ledger.projects.values()), list(before.book.active()), before.clock)
    closed: list[dict] = []
    for _, transitions in upgraded.process([], day("2026-02-12")):
        closed.extend(t.to_json() for t in transitions)
    assert {t["alert_id"] for t in closed} == firing
    assert {(t["date"], t["reason"]) for t in closed} == {("2026-02-11", YEAR_CLOSED)}
    again: list[dict] = []
    for _, transitions in upgraded.process([], day("2026-02-20")):
        again.extend(transitions)
    assert again == [] and list(upgraded.book.active()) == []


def test_a_monitor_upgraded_two_closed_years_late_ends_both_on_its_next_day() -> None:
    """Upgraded on 2026-01-10 after 2024 and 2025 ran without the close: 2024's close
    (2025-01-31) is long past and 2025's still ahead — 2024's alerts end at once."""
    events = [b.registered("A", on="2024-01-02", year=2024), b.approved("A", "1000000", on="2024-01-02"),
              b.registered("B", on="2025-01-02", year=2025), b.approved("B", "1000000", on="2025-01-02")]
    before, _ = run(events, "2026-01-10", _profile(None))
    upgraded = Monitor(load_profile("baseline"))
    upgraded.restore(list(before.ledger.projects.values()), list(before.book.active()), before.clock)
    closed: dict[str, set[int]] = {}
    for when, transitions in upgraded.process([], day("2026-02-02")):
        for t in transitions:
            closed.setdefault(iso(when), set()).add(t.alert.fiscal_year)
    assert closed == {"2026-01-11": {2024}, "2026-01-31": {2025}}
    assert list(upgraded.book.active()) == []


def test_a_reduction_approved_in_january_counts_as_the_years_own_at_the_close() -> None:
    """The desk's adjustment of a January approval is dated January, but answers the
    year's alert and is judged as of Dec 31: the close must report the reduced budget
    as of Dec 31, not fall back to the figures from before the reduction (review)."""
    from alerts.dispositions import Desk

    monitor = Monitor(load_profile("baseline"))
    monitor.desk = Desk(10, monitor.profile.work_calendar)
    events = [b.registered("P"), b.approved("P", "1000000", on="2025-01-05"),
              b.payment("P", "100000", on="2025-02-01")]
    run(events, "2026-01-05", monitor=monitor)
    alert_id = "2025:low_execution:project:P"
    answer = {"type": "alert_disposed", "event_id": "D1", "occurred_on": "2026-01-06", "project_id": "P",
              "alert_id": alert_id, "action": "reduce", "amount": "300000.00", "note": "调减", "by": "jyj"}
    approval = {"type": "disposition_approved", "event_id": "A1", "occurred_on": "2026-01-08", "project_id": "P",
                "alert_id": alert_id, "disposition_event_id": "D1", "approved": True, "by": "jxk"}
    _, later = run([answer, approval], "2026-02-02", monitor=monitor)
    assert monitor.ledger.projects["P"].budget == 70_000_000
    low = next(t for t in later if t["alert_id"] == alert_id and t.get("reason") == YEAR_CLOSED)
    assert low["figures"]["as_of"] == "2025-12-31" and low["figures"]["budget"] == "700000.00"
    assert "截至2025-12-31预算执行率为14.29%" in low["message"]


def test_a_state_stored_before_last_event_on_takes_its_latest_dated_fact() -> None:
    from budget.ledger import ProjectState

    monitor, _ = run([*NEVER_PAID, b.payment("P", "1000", on="2025-11-02")], "2025-12-31")
    stored = monitor.ledger.projects["P"].to_dict()
    assert stored["last_event_on"] == day("2025-11-02")
    del stored["last_event_on"]
    assert ProjectState.from_dict(stored).last_event_on == day("2025-11-02")
    assert ProjectState.from_dict({"project_id": "X"}).last_event_on is None
    # an adjustment's or a reversal's date is not kept: unknown, not guessed early (review)
    for kept in ({"adjusted": -90_000_000}, {"reversals": 5_000_000}):
        assert ProjectState.from_dict({**stored, **kept}).last_event_on is None


def test_a_closed_years_proposals_are_what_its_close_left_as_of_dec_31() -> None:
    ten_percent = [b.registered("R"), b.approved("R", "1000000", on="2025-01-05"),
                   b.payment("R", "100000", on="2025-03-01")]
    monitor, _ = run([*NEVER_PAID, *ten_percent], "2026-02-02")
    assert monitor.reductions(fiscal_year=2025) == []  # nothing of 2025 fires any more
    final = {p.project_id: p for p in monitor.closed_year_reductions(2025, ["R", "P", "gone"])}
    assert set(final) == {"P", "R"}
    assert (final["R"].projected, final["R"].proposed_reduction) == (10_000_000, 90_000_000)  # the unspent
    assert final["P"].proposed_reduction == 100_000_000 and final["P"].fiscal_year == 2025
