"""The department partition: a tick's deltas ride on its ``closed`` marker, and a crash
anywhere inside that one message is recomputed exactly from the changelog prefix."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from alerts.profile import Profile
from connectors.profiles import load_profile
from streams.faust_state import DepartmentPartition

DEPT = "2025:D01"
MARKER_KEY = "__closed__:0"


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_profile("baseline")


def day(iso: str) -> int:
    return dt.date.fromisoformat(iso).toordinal()


def delta(on: str, budget: int, paid: int, projects: int, epoch: int = 1) -> dict[str, Any]:
    return {
        "kind": "delta", "source": 0, "epoch": epoch, "day": day(on), "fiscal_year": 2025,
        "department_id": "D01", "department_name": "教育局", "budget": budget, "paid": paid,
        "projects": projects,
    }


def closed(until: str, deltas: list[dict[str, Any]], epoch: int = 1) -> dict[str, Any]:
    return {"kind": "closed", "source": 0, "epoch": epoch, "day": day(until),
            "deltas": [[DEPT, d] for d in deltas]}


# Budget 1,000,000 yuan from March, 10% paid: at the 06-30 checkpoint the department is
# under 30% executed, so department_low_execution fires in the round closing 07-01.
DELTAS = [delta("2025-03-01", 100_000_000, 0, 1), delta("2025-05-10", 0, 10_000_000, 0)]


def seen(part: DepartmentPartition) -> tuple[Any, ...]:
    totals = part.totals[DEPT]
    alerts = sorted((a.alert_id, a.status, a.severity, a.since) for a in part.judge.book.alerts.values())
    return totals.budget, totals.paid, totals.projects, part.meta.clock, tuple(alerts)


def test_one_message_per_tick_gives_what_a_message_per_delta_gave(profile: Profile) -> None:
    batched = DepartmentPartition(0, profile, 1)
    out = batched.handle(0, MARKER_KEY, closed("2025-07-01", DELTAS))
    legacy = DepartmentPartition(0, profile, 1)
    legacy_transitions = []
    for offset, d in enumerate(DELTAS):
        assert legacy.handle(offset, DEPT, d).outcome == "applied"
    legacy_transitions = legacy.handle(len(DELTAS), MARKER_KEY, closed("2025-07-01", [])).transitions
    assert seen(batched) == seen(legacy)
    assert [t.to_json() for t in out.transitions] == [t.to_json() for t in legacy_transitions]
    assert [(t.alert.rule, t.kind, t.on) for t in out.transitions] == [
        ("department_low_execution", "firing", day("2025-06-30"))
    ]
    assert (batched.totals[DEPT].budget, batched.totals[DEPT].paid) == (100_000_000, 10_000_000)


def test_a_crash_anywhere_inside_the_message_counts_its_deltas_once(profile: Profile) -> None:
    whole = DepartmentPartition(0, profile, 1)
    writes = whole.handle(0, MARKER_KEY, closed("2025-07-01", DELTAS)).writes
    assert len(writes) >= 3  # department values, the round's values, then the meta
    for written in range(len(writes)):  # a changelog partition is a prefix of what was written
        items = [(key, value) for key, value in writes[:written] if value is not None]
        part = DepartmentPartition.restore(0, profile, 1, items)
        redone = part.handle(0, MARKER_KEY, closed("2025-07-01", DELTAS))
        assert redone.outcome == "applied", written
        assert seen(part) == seen(whole), written


def test_a_marker_sent_again_after_it_committed_adds_nothing(profile: Profile) -> None:
    part = DepartmentPartition(0, profile, 1)
    part.handle(0, MARKER_KEY, closed("2025-07-01", DELTAS))
    before = seen(part)
    again = part.handle(1, MARKER_KEY, closed("2025-07-01", DELTAS))  # a tick redone: same epoch
    assert again.outcome == "duplicate"
    assert again.transitions == []
    assert seen(part) == before
