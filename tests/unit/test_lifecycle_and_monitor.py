"""The alert lifecycle and the event-time monitor (pure)."""

from __future__ import annotations

from alerts.lifecycle import Alert
from alerts.monitor import Monitor
from alerts.profile import Profile, profile_from_mapping
from budget.ledger import ProjectState
from connectors.profiles import load_profile
from tests import builders as b
from tests.builders import day


def run(events: list[dict], until: str, profile: Profile | None = None,
        monitor: Monitor | None = None) -> tuple[Monitor, list[dict]]:
    monitor = monitor or Monitor(profile or load_profile("baseline"))
    records = sorted(b.records(events), key=lambda r: r.day)
    found = []
    for _, transitions in monitor.process(records, day(until)):
        found.extend(t.to_json() for t in transitions)
    return monitor, found


def by_rule(transitions: list[dict]) -> dict[str, list[tuple[str, str, str]]]:
    out: dict[str, list[tuple[str, str, str]]] = {}
    for t in transitions:
        out.setdefault(t["rule"], []).append((t["transition"], t["date"], t["severity"]))
    return out


def test_time_driven_rules_fire_on_their_business_date_with_no_events() -> None:
    events = [b.registered("P"), b.approved("P", "1000000", on="2025-01-05"),
              b.payment("P", "100000", on="2025-02-01")]
    monitor, transitions = run(events, "2025-09-30")
    rules = by_rule(transitions)
    # 90 days after the last payment on 02-01.
    assert rules["stalled"] == [("firing", "2025-05-02", "warning")]
    # Time progress passes 0.30 (rate 0.10 + 20 points) on day 110.
    assert rules["behind_schedule"] == [("firing", "2025-04-20", "warning")]
    # The floor applies from 06-30, however late the run.
    assert rules["low_execution"] == [("firing", "2025-06-30", "critical")]
    assert rules["department_low_execution"] == [("firing", "2025-06-30", "warning")]
    assert monitor.clock == day("2025-09-30")


def test_evaluating_the_same_state_again_changes_nothing() -> None:
    monitor, first = run([b.registered("P"), b.approved("P", "1000")], "2025-07-01")
    assert first
    again = []
    for _, transitions in monitor.process([], day("2025-07-10")):
        again.extend(transitions)
    assert again == []


def test_a_payment_resolves_and_the_alert_keeps_its_identity() -> None:
    events = [b.registered("P"), b.approved("P", "1000000", on="2025-01-05"),
              b.payment("P", "100000", on="2025-02-01"), b.payment("P", "500000", on="2025-07-15")]
    _, transitions = run(events, "2025-09-30")
    low = [t for t in transitions if t["rule"] == "low_execution"]
    assert [(t["transition"], t["date"]) for t in low] == [("firing", "2025-06-30"), ("resolved", "2025-07-15")]
    assert low[0]["alert_id"] == low[1]["alert_id"] == "2025:low_execution:project:P"
    assert low[1]["figures"]["execution_rate"] == 0.6
    assert "预警解除" in low[1]["message"]


def test_severity_changes_with_the_provincial_floors_and_a_new_episode_keeps_the_id() -> None:
    provincial = load_profile("provincial")
    events = [b.registered("P"), b.approved("P", "1000000", on="2025-01-05"),
              b.payment("P", "200000", on="2025-03-01"), b.payment("P", "300000", on="2025-07-15")]
    _, transitions = run(events, "2025-09-30", provincial)
    low = [(t["transition"], t["date"], t["severity"]) for t in transitions if t["rule"] == "low_execution"]
    assert low == [
        ("firing", "2025-04-30", "warning"),  # 20% < 25%
        ("escalated", "2025-06-30", "critical"),  # 20% < 40%
        ("resolved", "2025-07-15", "critical"),  # 50% >= 40%
        ("firing", "2025-08-31", "critical"),  # 50% < 60%
    ]
    episodes = {t["alert_id"] for t in transitions if t["rule"] == "low_execution"}
    assert episodes == {"2025:low_execution:project:P"}
    assert [t for t in transitions if t["rule"] == "low_execution"][-1]["since"] == "2025-08-31"


def test_a_late_event_is_applied_at_the_clock() -> None:
    monitor, _ = run([b.registered("P"), b.approved("P", "1000000", on="2025-01-05")], "2025-07-31")
    late = [b.payment("P", "900000", on="2025-03-01")]
    _, transitions = run(late, "2025-07-31", monitor=monitor)
    resolved = {t["rule"]: t["date"] for t in transitions if t["transition"] == "resolved"}
    assert resolved == {"low_execution": "2025-07-31", "behind_schedule": "2025-07-31",
                        "department_low_execution": "2025-07-31"}
    # By business date the last payment is 03-01, 152 days ago: still stalled.
    assert "stalled" in monitor.book.firing_rules("project", "P", 2025)


def test_alert_messages_are_chinese_with_figures_and_an_action() -> None:
    _, transitions = run([b.registered("P", name="展示厅经费项目", department_name="科创中心"),
                          b.approved("P", "100000", on="2025-01-05")], "2025-06-30")
    low = next(t for t in transitions if t["rule"] == "low_execution")
    assert "科创中心「展示厅经费项目」" in low["message"]
    assert "0.00%" in low["message"] and "30.00%" in low["message"]
    assert "调减" in low["action"] and "10个工作日" in low["action"]
    assert low["figures"]["budget"] == "100000.00"


def test_restoring_a_monitor_mid_year_gives_the_same_transitions() -> None:
    events = [b.registered("P"), b.approved("P", "1000000", on="2025-01-05"),
              b.payment("P", "100000", on="2025-02-01"), b.payment("P", "500000", on="2025-08-15"),
              b.registered("Q", plan=[0.0] * 5 + [0.5] * 6 + [1.0]), b.approved("Q", "10")]
    _, whole = run(events, "2025-12-31")
    cut = day("2025-05-10")
    first, part1 = run([e for e in events if day(e["occurred_on"]) <= cut], "2025-05-10")
    restored = Monitor(load_profile("baseline"))
    restored.restore(
        [ProjectState.from_dict(s.to_dict()) for s in first.ledger.projects.values()],
        [Alert.from_json(a.to_json()) for a in first.book.alerts.values()],
        first.clock,
    )
    rest = sorted(b.records([e for e in events if day(e["occurred_on"]) > cut]), key=lambda r: r.day)
    part2 = []
    for _, transitions in restored.process(rest, day("2025-12-31")):
        part2.extend(t.to_json() for t in transitions)
    assert part1 + part2 == whole
    assert len(whole) > 5


def test_a_snapshot_copies_every_field_and_can_carry_another_message() -> None:
    import dataclasses

    values: dict[str, object] = {}
    ints, dicts = {"fiscal_year", "since", "updated_on"}, {"figures", "disposition"}
    for i, f in enumerate(dataclasses.fields(Alert)):
        # By name: the compiled core (compiled_core) reports a field's type less exactly.
        values[f.name] = i if f.name in ints else {"n": i} if f.name in dicts else f"v{i}"
    alert = Alert(**values)  # type: ignore[arg-type]
    copy = alert.snapshot()
    assert copy == alert and copy is not alert
    other = alert.snapshot("新消息", "新措施")
    assert dataclasses.replace(alert, message="新消息", action="新措施") == other


def test_a_book_forgets_resolved_alerts_only_with_an_archive_and_fetches_them_back() -> None:
    import pytest

    from alerts.lifecycle import AlertBook

    events = [b.registered("P"), b.approved("P", "1000000", on="2025-01-05"),
              b.payment("P", "100000", on="2025-02-01"), b.payment("P", "500000", on="2025-08-15")]
    monitor, transitions = run(events, "2025-12-31")
    resolved = {a for a, alert in monitor.book.alerts.items() if alert.status == "resolved"}
    assert resolved and any(t["transition"] == "resolved" for t in transitions), \
        "the August payment resolves mid-year alerts"
    with pytest.raises(ValueError, match="archive"):
        monitor.book.forget_resolved()
    stored = {a.alert_id: a.to_json() for a in monitor.book.alerts.values()}
    asked: list[str] = []

    def archive(alert_id: str) -> Alert | None:
        asked.append(alert_id)
        return Alert.from_json(stored[alert_id]) if alert_id in stored else None

    book: AlertBook = monitor.book
    book.archive = archive
    firing = {a.alert_id for a in book.active()}
    assert book.forget_resolved() == len(resolved)
    assert set(book.alerts) == firing
    some = sorted(resolved)[0]
    fetched = book.get(some)
    assert fetched is not None and fetched.to_json() == stored[some] and some in book.alerts
    assert book.get(some) is fetched and asked == [some]  # fetched once, then kept
    assert book.get("2025:overspend:project:nobody") is None


def test_repeated_department_and_indicator_strings_are_stored_once() -> None:
    from budget.ledger import Ledger

    ledger = Ledger()
    for pid in ("A", "B"):
        for event in (b.registered(pid, department_id="D" + "01", department_name="教育" + "局"),
                      b.indicator(pid, "I" + "1", target=100)):
            ledger.apply(b.record(event))
    a, bb = ledger.projects["A"], ledger.projects["B"]
    assert a.department_name == "教育局" and a.department_name is bb.department_name
    assert a.department_id is bb.department_id and a.fund_source is bb.fund_source
    assert next(iter(a.indicators)) is next(iter(bb.indicators))
    restored = ProjectState.from_dict(a.to_dict())
    assert restored.department_name is a.department_name


def test_a_department_alert_belongs_to_its_fiscal_year() -> None:
    # D01 under the floor all through 2024; in 2025 its only project is registered and
    # approved on 06-30 with nothing paid. The 2024 alert stands as it was (its year is
    # over, like a project's, and with no close day it is never ended), and 2025 gets its
    # own alert on 06-30 — it used to be taken for the 2024 one (same rule, same
    # severity) and never fired.
    events = [
        b.registered("A", on="2024-01-02", year=2024), b.approved("A", "1000000", on="2024-01-02"),
        b.registered("B", on="2025-06-30", year=2025), b.approved("B", "1000000", on="2025-06-30"),
    ]
    never_closed = profile_from_mapping({**load_profile("baseline").model_dump(), "year_end": {"closes_on": None}})
    monitor, transitions = run(events, "2025-12-31", never_closed)
    departments = [(t["alert_id"], t["transition"], t["date"]) for t in transitions
                   if t["subject_type"] == "department"]
    assert departments == [
        ("2024:department_low_execution:department:D01", "firing", "2024-06-30"),
        ("2025:department_low_execution:department:D01", "firing", "2025-06-30"),
    ]
    assert monitor.book.firing_rules("department", "D01", 2024)["department_low_execution"].since == day("2024-06-30")
    assert monitor.book.firing_rules("department", "D01", 2025)["department_low_execution"].since == day("2025-06-30")


def test_nothing_stays_scheduled_after_a_fiscal_year_ends() -> None:
    """A December payment puts the stall check 90 days later, in the next year, when
    nothing of this year is judged any more: no schedule may be kept for it (a province
    ended its replay holding ~100k such entries), and emptied days are let go."""
    events = [b.registered("P"), b.approved("P", "1000000", on="2025-01-05"),
              b.payment("P", "100000", on="2025-11-20"),
              b.registered("R"), b.approved("R", "1000000", on="2025-01-05"),
              b.payment("R", "780000", on="2025-11-20")]
    monitor, transitions = run(events, "2025-12-01")
    # R falls 20 points behind time progress in late December: that day is kept
    assert day("2025-12-01") < monitor._due_of["R"] <= day("2025-12-31")
    # P's stall check would be 2026-02-18: not kept
    assert "P" not in monitor._due_of
    assert all(d <= day("2025-12-31") and bucket for d, bucket in monitor._due.items())
    later: list[dict] = []
    for _, closed in monitor.process([], day("2026-04-30")):
        later.extend(t.to_json() for t in closed)
    assert monitor._due == {} and monitor._due_of == {}
    # and the year's alerts are what a run straight to that day gives
    _, whole = run(events, "2026-04-30")
    assert transitions + later == whole
    assert {t["rule"] for t in whole} >= {"stalled", "low_execution"}
