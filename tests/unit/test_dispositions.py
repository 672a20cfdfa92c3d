"""The disposition loop on a pure monitor: deadlines, validation, escalation, approval."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from alerts.dispositions import (
    APPROVED_KIND,
    DISPOSED,
    OVERDUE_KIND,
    RETURNED_KIND,
    Desk,
    adjustment_event_id,
)
from alerts.lifecycle import Transition
from alerts.monitor import Monitor
from budget.events import EventRejected, parse_event_object
from connectors.profiles import load_profile
from tests.builders import approved, payment, record, registered

ALERT = "2025:low_execution:project:P1"
PLAN = [0.0] * 11 + [1.0]  # nothing expected before December: only low_execution fires


def d(text: str) -> int:
    return dt.date.fromisoformat(text).toordinal()


def base() -> list[dict[str, Any]]:
    """1,000,000 budget, 100,000 paid in three payments: low_execution fires on Monday 06-30."""
    return [
        registered("P1", plan=PLAN, on="2025-01-02"),
        approved("P1", "1000000.00", on="2025-01-02"),
        payment("P1", "40000.00", on="2025-02-01", event_id="PAY-1"),
        payment("P1", "30000.00", on="2025-04-15", event_id="PAY-2"),
        payment("P1", "30000.00", on="2025-06-25", event_id="PAY-3"),
    ]


def disposed(event_id: str, on: str, action: str = "continue", amount: str | None = None,
             alert_id: str = ALERT) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "alert_disposed", "event_id": event_id, "occurred_on": on,
                             "alert_id": alert_id, "action": action, "note": "说明原因", "by": "dept-user"}
    if amount is not None:
        event["amount"] = amount
    return event


def approval(event_id: str, on: str, target: str, approved_: bool = True) -> dict[str, Any]:
    return {"type": "disposition_approved", "event_id": event_id, "occurred_on": on, "alert_id": ALERT,
            "disposition_event_id": target, "approved": approved_, "by": "bureau"}


def run(events: list[dict[str, Any]], until: str, monitor: Monitor | None = None) -> tuple[Monitor, list[Transition]]:
    if monitor is None:
        monitor = Monitor(load_profile("baseline"))
        monitor.desk = Desk(10)
    records = sorted((record(e) for e in events), key=lambda r: r.day)
    out: list[Transition] = []
    for _, transitions in monitor.process(records, d(until)):
        out.extend(transitions)
    return monitor, out


def kinds(transitions: list[Transition]) -> list[tuple[str, str]]:
    return [(t.kind, dt.date.fromordinal(t.on).isoformat()) for t in transitions if t.alert.alert_id == ALERT]


def test_a_new_alert_gets_its_deadline_in_working_days() -> None:
    monitor, transitions = run(base(), "2025-07-01")
    assert kinds(transitions) == [("firing", "2025-06-30")]
    state = monitor.book.alerts[ALERT].to_json()["disposition"]
    assert state["status"] == "pending"
    assert (state["deadline"], state["escalate_on"]) == ("2025-07-14", "2025-07-15")
    assert transitions[0].to_json()["disposition"]["deadline"] == "2025-07-14"


def test_undisposed_alert_escalates_on_the_next_working_day_once_with_no_events() -> None:
    monitor, transitions = run(base(), "2025-09-30")
    assert kinds(transitions) == [("firing", "2025-06-30"), ("disposition_overdue", "2025-07-15")]
    alert = monitor.book.alerts[ALERT]
    assert alert.disposition is not None and alert.disposition["status"] == "overdue"
    assert alert.status == "firing"
    overdue = next(t for t in transitions if t.kind == OVERDUE_KIND and t.alert.alert_id == ALERT).to_json()
    assert "已超过处置期限" in overdue["message"] and "2025-07-14" in overdue["message"]


def test_escalation_fires_the_same_when_the_days_are_closed_one_run_at_a_time() -> None:
    monitor, first = run(base(), "2025-07-14")
    assert [k for k, _ in kinds(first)] == ["firing"]
    seen: list[Transition] = []
    for day in ("2025-07-15", "2025-07-16", "2025-08-01"):
        _, more = run([], day, monitor)
        seen.extend(more)
    assert kinds(seen) == [("disposition_overdue", "2025-07-15")]


def test_a_disposition_on_the_deadline_prevents_escalation() -> None:
    monitor, transitions = run([*base(), disposed("DSP-1", "2025-07-14")], "2025-09-30")
    assert kinds(transitions) == [("firing", "2025-06-30"), (DISPOSED, "2025-07-14")]
    state = monitor.book.alerts[ALERT].disposition
    assert state is not None and state["status"] == "disposed"
    assert state["latest"]["by"] == "dept-user" and state["latest"]["late"] is False


def test_a_late_disposition_after_escalation_is_recorded_as_late() -> None:
    monitor, transitions = run([*base(), disposed("DSP-1", "2025-07-20")], "2025-07-31")
    assert [k for k, _ in kinds(transitions)] == ["firing", OVERDUE_KIND, DISPOSED]
    state = monitor.book.alerts[ALERT].disposition
    assert state is not None and state["latest"]["late"] is True and state["overdue_on"] == "2025-07-15"


def test_a_reduction_larger_than_the_unspent_budget_is_refused_with_a_reason() -> None:
    monitor, transitions = run([*base(), disposed("DSP-1", "2025-07-02", "reduce", "900000.01")], "2025-07-03")
    assert [k for k, _ in kinds(transitions)] == ["firing"]
    assert monitor.desk is not None
    refused, emitted = monitor.desk.drain()
    assert emitted == []
    assert [r.event_id for r in refused] == ["DSP-1"]
    assert "超过项目 P1 的预算结余（未支付余额）900,000.00元" in refused[0].reason
    assert '"event_id":"DSP-1"' in refused[0].raw
    state = monitor.book.alerts[ALERT].disposition
    assert state is not None and state["status"] == "pending"  # nothing changed: it will still escalate


def test_an_unknown_alert_is_refused() -> None:
    monitor, _ = run([*base(), disposed("DSP-X", "2025-07-02", alert_id="2025:stalled:project:P1")], "2025-07-03")
    assert monitor.desk is not None
    refused, _ = monitor.desk.drain()
    assert [r.event_id for r in refused] == ["DSP-X"] and "不存在" in refused[0].reason


def test_an_approved_reduction_emits_budget_adjusted_and_the_rates_follow() -> None:
    events = [*base(), disposed("DSP-1", "2025-07-02", "reduce", "700000.00"),
              approval("APR-1", "2025-07-03", "DSP-1")]
    monitor, transitions = run(events, "2025-07-10")
    assert kinds(transitions) == [
        ("firing", "2025-06-30"), (DISPOSED, "2025-07-02"), (APPROVED_KIND, "2025-07-03"),
        ("resolved", "2025-07-03"),  # 100,000 / 300,000 = 33% > 30%: the rule clears the same day
    ]
    state = monitor.ledger.projects["P1"]
    assert (state.budget, state.paid) == (30_000_000, 10_000_000)  # fen
    assert monitor.desk is not None
    refused, emitted = monitor.desk.drain()
    assert refused == []
    assert len(emitted) == 1
    adj = emitted[0]
    assert (adj.type, adj.event_id, adj.project_id, adj.amount) == (
        "budget_adjusted", adjustment_event_id("DSP-1"), "P1", -70_000_000)
    assert adj.day == d("2025-07-03")
    alert = monitor.book.alerts[ALERT].to_json()["disposition"]
    assert alert["status"] == "approved" and alert["adjustments"] == ["DSP-1@budget_adjusted"]
    # The logged copy of the emitted adjustment (a replay meets it later) is not counted twice.
    copy = {"type": "budget_adjusted", "event_id": "DSP-1@budget_adjusted", "occurred_on": "2025-07-03",
            "project_id": "P1", "amount": "-700000.00"}
    run([copy], "2025-07-11", monitor)
    assert monitor.ledger.projects["P1"].budget == 30_000_000


def test_approval_needs_an_awaiting_disposition_and_may_return_it() -> None:
    events = [*base(), disposed("DSP-1", "2025-07-02", "continue"), approval("APR-1", "2025-07-03", "DSP-1")]
    monitor, _ = run(events, "2025-07-04")
    assert monitor.desk is not None
    refused, emitted = monitor.desk.drain()
    assert emitted == [] and [r.event_id for r in refused] == ["APR-1"] and "没有待审批的处置" in refused[0].reason

    events = [*base(), disposed("DSP-2", "2025-07-02", "recover", "100000.00"),
              approval("APR-2", "2025-07-03", "DSP-2", approved_=False)]
    monitor, transitions = run(events, "2025-09-30")
    # returned to the department: still unanswered, so it escalates on the escalation day
    assert kinds(transitions)[1:] == [(DISPOSED, "2025-07-02"), (RETURNED_KIND, "2025-07-03"),
                                      (OVERDUE_KIND, "2025-07-15")]
    state = monitor.book.alerts[ALERT].disposition
    assert state is not None and state["status"] == "overdue" and state["latest"]["approval"]["approved"] is False
    assert monitor.ledger.projects["P1"].budget == 100_000_000  # nothing adjusted


def test_a_monitor_without_a_desk_ignores_dispositions() -> None:
    monitor = Monitor(load_profile("baseline"))
    _, transitions = run([*base(), disposed("DSP-1", "2025-07-14")], "2025-09-30", monitor)
    assert kinds(transitions) == [("firing", "2025-06-30")]
    assert monitor.book.alerts[ALERT].disposition is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"action": "burn"}, "action"),
        ({"action": "reduce"}, "needs an amount"),
        ({"action": "reduce", "amount": "-5"}, "amount"),
        ({"alert_id": "P1"}, "alert_id"),
        ({"project_id": "P2"}, "is not the project of alert"),
        ({"note": "长" * 2001}, "note"),
    ],
)
def test_invalid_disposition_events_are_rejected_at_the_boundary(change: dict[str, Any], reason: str) -> None:
    event = {**disposed("DSP-1", "2025-07-02"), **change}
    with pytest.raises(EventRejected) as err:
        parse_event_object(event)
    assert reason in err.value.reason


def test_a_department_alert_disposition_takes_the_alert_id_as_its_key() -> None:
    event = parse_event_object(disposed("DSP-1", "2025-07-02", alert_id="2025:department_low_execution:department:D01"))
    assert event.project_id == "2025:department_low_execution:department:D01"
    assert parse_event_object(disposed("DSP-2", "2025-07-02")).project_id == "P1"


def test_a_disposition_returned_after_its_deadline_gets_a_new_one_and_escalates_if_unanswered() -> None:
    """Answered on time, returned after the escalation day: it stayed "returned" for ever,
    its deadline long past and never overdue (audit)."""
    events = [*base(), disposed("DSP-1", "2025-07-10", "reduce", "100000.00"),
              approval("APR-1", "2025-07-20", "DSP-1", approved_=False)]
    monitor, transitions = run(events, "2025-09-30")
    # 07-20 is a Sunday: ten working days from it end on Friday 08-01
    assert kinds(transitions)[1:] == [(DISPOSED, "2025-07-10"), (RETURNED_KIND, "2025-07-20"),
                                      (OVERDUE_KIND, "2025-08-04")]
    returned = next(t for t in transitions if t.kind == RETURNED_KIND).to_json()
    assert "2025-08-01 前重新提出" in returned["action"]
    state = monitor.book.alerts[ALERT].disposition
    assert state is not None and (state["deadline"], state["escalate_on"], state["overdue_on"]) == (
        "2025-08-01", "2025-08-04", "2025-08-04")


def test_an_answer_to_a_resolved_alert_is_refused() -> None:
    """The board offers no form for it and lists no approval for it; through the API a
    500,000 reduction waited unseen and could still be approved (audit)."""
    events = [*base(), payment("P1", "300000.00", on="2025-07-05", event_id="PAY-4"),  # 40%: resolved
              disposed("DSP-1", "2025-07-08", "reduce", "500000.00")]
    monitor, transitions = run(events, "2025-07-10")
    assert [k for k, _ in kinds(transitions)] == ["firing", "resolved"]
    assert monitor.desk is not None
    refused, emitted = monitor.desk.drain()
    assert emitted == [] and [r.event_id for r in refused] == ["DSP-1"]
    assert "已于 2025-07-05 解除" in refused[0].reason


def test_amounts_of_dispositions_and_approvals_are_told_to_the_fen() -> None:
    events = [*base(), disposed("DSP-1", "2025-07-02", "reduce", "49.00"), approval("APR-1", "2025-07-03", "DSP-1")]
    _, transitions = run(events, "2025-07-04")
    messages = [t.to_json()["message"] for t in transitions if t.kind in (DISPOSED, APPROVED_KIND)]
    assert "调减 49.00元" in messages[0] and "审批调减49.00元" in messages[1]


def test_an_alert_resolved_before_its_answer_owes_none() -> None:
    """It kept "pending" or "overdue" (逾期未处置 on its page) for ever after it resolved."""
    catch_up = payment("P1", "300000.00", on="2025-07-20", event_id="PAY-4")  # 40%: resolves
    monitor, transitions = run([*base(), catch_up], "2025-07-31")
    assert kinds(transitions) == [("firing", "2025-06-30"), (OVERDUE_KIND, "2025-07-15"), ("resolved", "2025-07-20")]
    state = monitor.book.alerts[ALERT].disposition
    assert state is not None and (state["status"], state["overdue_on"]) == ("closed", "2025-07-15")
    resolved = next(t for t in transitions if t.kind == "resolved").to_json()
    assert resolved["disposition"]["status"] == "closed"
    early = payment("P1", "300000.00", on="2025-07-04", event_id="PAY-4")
    monitor, _ = run([*base(), early], "2025-07-31")
    state = monitor.book.alerts[ALERT].disposition
    assert state is not None and (state["status"], state["overdue_on"]) == ("closed", None)
    # a reduction awaiting the bureau stays open to its decision
    monitor, _ = run([*base(), disposed("DSP-1", "2025-07-02", "reduce", "100000.00"), early], "2025-07-31")
    state = monitor.book.alerts[ALERT].disposition
    assert state is not None and state["status"] == "awaiting_approval"


def test_a_users_adjustment_is_applied_in_its_day_whatever_its_id() -> None:
    """An id ending in "@budget_adjusted" (as the desk's own) was held past the day's close:
    on a checkpoint the alert fired on the old budget and resolved at once (review)."""
    from tests.builders import adjusted

    plain = adjusted("P1", "-800000.00", on="2025-06-30", event_id="ADJ-2025-06")
    suffixed = adjusted("P1", "-800000.00", on="2025-06-30", event_id="import-7@budget_adjusted")
    _, with_plain = run([*base(), plain], "2025-07-01")
    _, with_suffix = run([*base(), suffixed], "2025-07-01")
    assert kinds(with_plain) == kinds(with_suffix) == []


def test_a_reduction_returned_after_its_alert_resolved_owes_no_new_answer() -> None:
    """Told to answer again by a new deadline, the department had every answer refused
    (the alert had resolved), and the alert stayed 'returned' for good (review)."""
    events = [*base(), disposed("DSP-1", "2025-07-02", "reduce", "100000.00"),
              payment("P1", "300000.00", on="2025-07-05", event_id="PAY-4"),  # 40%: resolved
              approval("APR-1", "2025-07-20", "DSP-1", approved_=False)]
    monitor, transitions = run(events, "2025-09-30")
    returned = next(t for t in transitions if t.kind == RETURNED_KIND).to_json()
    assert "无需重新处置" in returned["action"] and "前重新提出" not in returned["action"]
    state = monitor.book.alerts[ALERT].disposition
    assert state is not None and state["status"] == "closed"
    assert [k for k, _ in kinds(transitions)] == ["firing", DISPOSED, "resolved", RETURNED_KIND]
