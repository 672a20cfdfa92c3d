"""Property: the ledger's final state is the fold of the unique events, whatever the
duplicates, reorderings, batch sizes and restarts (DESIGN §3, issue 2)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from budget.ledger import Ledger, ProjectState, fold
from tests import builders as b
from tests.strategies import deliveries, event_logs


def snapshot(ledger: Ledger) -> dict[str, Any]:
    return {
        "projects": {pid: s.to_dict() for pid, s in sorted(ledger.projects.items())},
        "departments": {
            k: (t.budget, t.paid, t.projects) for k, t in sorted(ledger.departments.items()) if t.projects
        },
    }


def restart(ledger: Ledger) -> Ledger:
    """What a process restart keeps: the persisted project states and the seen ids."""
    again = Ledger(track_event_ids=True)
    for state in ledger.projects.values():
        again.attach(ProjectState.from_dict(state.to_dict()))
    assert ledger.seen is not None and again.seen is not None
    again.seen.update(ledger.seen)
    return again


@settings(max_examples=200, deadline=None)
@given(data=st.data(), events=event_logs())
def test_fold_of_unique_events_whatever_the_delivery(data: st.DataObject, events: list[dict[str, Any]]) -> None:
    reference = snapshot(fold(b.records(events)))
    delivered = data.draw(deliveries(events))
    cut_points = set(data.draw(st.lists(st.integers(0, len(delivered)), max_size=4)))
    ledger = Ledger(track_event_ids=True)
    for index, event in enumerate(delivered):
        if index in cut_points:
            ledger = restart(ledger)
        ledger.apply_once(b.record(event))
    assert snapshot(ledger) == reference


@settings(max_examples=100, deadline=None)
@given(events=event_logs(), batch=st.integers(1, 7))
def test_totals_always_equal_the_sum_of_their_projects(events: list[dict[str, Any]], batch: int) -> None:
    ledger = Ledger(track_event_ids=True)
    records = b.records(events)
    for start in range(0, len(records), batch):
        for record in records[start:start + batch]:
            ledger.apply_once(record)
        for (year, dept), totals in ledger.departments.items():
            members = [s for s in ledger.projects.values()
                       if s.fiscal_year == year and s.department_id == dept and s.kind == "project"]
            assert totals.budget == sum(s.budget for s in members)
            assert totals.paid == sum(s.paid for s in members)
            assert totals.projects == len(members)
