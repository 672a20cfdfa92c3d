"""Department rounds follow the days the project partitions have closed, not how many
ticks each got: a tick one partition got twice (a publish run again after a partial
failure) or never (its send failed) does not hold the department agent back."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from alerts.profile import Profile
from budget.calendar import to_day
from budget.events import parse_day
from connectors.jsonl import parse_lines
from connectors.profiles import load_profile
from streams.engine import Engine
from streams.faust_state import CLOCK_KEY, DELTAS, TICK_CLOSED, DepartmentPartition, department_meta_key, tick_value
from streams.ingest import ingest
from streams.store import Store
from tests import builders as b
from tests.functional.faust_harness import make_app, running

R, A, P = b.registered, b.approved, b.payment
# D01 is under the 30% floor at 06-30 (P1 paid 10%, P2 nothing) and above it from 08-15.
EVENTS = [R("P1"), A("P1", "1000.00"), P("P1", "100.00", on="2025-03-01"),
          R("P2"), A("P2", "1000.00"), P("P2", "900.00", on="2025-08-15")]


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_profile("baseline")


def day(iso: str) -> int:
    return dt.date.fromisoformat(iso).toordinal()


def departments(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(t["date"], t["subject_id"], t["transition"]) for t in rows if t["subject_type"] == "department"]


def embedded(profile: Profile, tmp_path: Path, ticks: list[str]) -> list[dict[str, Any]]:
    with Store(str(tmp_path / "bw.db")) as store:
        engine = Engine(store, profile, dispositions=False)
        ingest(store, parse_lines(b.jsonl(EVENTS).splitlines(), "t.jsonl"))
        for as_of in ticks:
            engine.run(to_day(parse_day(as_of)))
        return [{k: v for k, v in r.items() if not k.startswith("_")} for r in store.transition_rows()]


def distributed(profile: Profile, partial: dict[int, str], ticks: list[str]) -> tuple[list[dict[str, Any]], Any]:
    """The events, then a tick that reached only the partitions in ``partial``, then
    ``ticks`` on every partition."""
    bapp, outlet = make_app(profile, partitions=2)

    async def go() -> list[dict[str, Any]]:
        async with running(bapp, outlet) as h:
            await h.publish(b.jsonl(EVENTS).splitlines())
            for partition, as_of in partial.items():
                await h.put(CLOCK_KEY, tick_value(dt.date.fromisoformat(as_of)), partition=partition)
            for as_of in ticks:
                await h.tick(as_of)
            return list(h.alerts)

    return asyncio.run(go()), bapp


@pytest.mark.parametrize(
    ("partial", "ticks"),
    [
        ({0: "2025-06-30"}, ["2025-06-30", "2025-09-30"]),  # p0 gets 06-30 twice
        ({0: "2025-06-30"}, ["2025-09-30"]),  # p1 never gets 06-30
    ],
    ids=["repeated", "lost"],
)
def test_a_tick_repeated_or_lost_on_one_partition_holds_no_department_back(
    profile: Profile, tmp_path: Path, partial: dict[int, str], ticks: list[str]
) -> None:
    expected = departments(embedded(profile, tmp_path, ["2025-06-30", "2025-09-30"]))
    assert expected == [("2025-06-30", "D01", "firing"), ("2025-08-15", "D01", "resolved")]
    alerts, bapp = distributed(profile, partial, ticks)
    assert departments(alerts) == expected
    assert {s.clock for s in bapp.project_partitions.values()} == {day("2025-09-30")}
    assert {s.clock for s in bapp.department_partitions.values()} == {day("2025-09-30")}


def marker(source: int, epoch: int, on: str, deltas: list[Any] | None = None) -> dict[str, Any]:
    return {"kind": TICK_CLOSED, "source": source, "epoch": epoch, "day": day(on), "deltas": deltas or []}


def spend(source: int, epoch: int, on: str, budget: int, paid: int, projects: int, dept: str = "D01") -> list[Any]:
    return [f"2025:{dept}", {"source": source, "epoch": epoch, "day": day(on), "fiscal_year": 2025,
                             "department_id": dept, "department_name": dept,
                             "budget": budget, "paid": paid, "projects": projects}]


def test_a_department_meta_of_the_earlier_release_restores_and_catches_up(profile: Profile) -> None:
    """A meta stuck with an unmatched marker queue (what the pairing by count left) is
    read as how far each source got: the next marker of the laggard closes up to it."""
    part = DepartmentPartition(0, profile, 2)
    part.handle(0, "__closed__:0", marker(0, 1, "2025-06-30", [spend(0, 1, "2025-03-01", 100_000, 10_000, 1)]))
    writes = part.handle(1, "__closed__:1", marker(1, 1, "2025-06-30")).writes
    assert part.clock == day("2025-06-30")
    items = dict((k, v) for k, v in writes if v is not None)
    meta = dict(items[department_meta_key(0)])
    for key in ("reached", "heard"):
        del meta[key]
    meta["markers"] = {"0": [[3, day("2025-09-30")]], "1": []}  # p0's extra 06-30 tick, then 09-30
    meta["last_epoch"] = {"0": 3, "1": 1}
    items[department_meta_key(0)] = meta
    stuck = DepartmentPartition.restore(0, profile, 2, list(items.items()))
    assert stuck.clock == day("2025-06-30")
    out = stuck.handle(5, "__closed__:1", marker(1, 2, "2025-09-30", [spend(1, 2, "2025-08-15", 0, 50_000, 0)]))
    assert stuck.clock == day("2025-09-30")
    assert [(t.alert.subject_id, t.kind, t.on) for t in out.transitions] == [("D01", "resolved", day("2025-08-15"))]


def test_no_round_closes_between_a_ticks_chunks_and_its_marker(profile: Profile) -> None:
    """Source 1's tick (late events: deltas dated at its clock) comes in a chunk and a
    marker. Source 0's marker arriving between them lifts the day every source has
    reached; closing the round then would take the chunk and leave the marker's deltas
    waiting for a round that the marker alone does not make. The round waits for the
    whole tick — also in a partition rebuilt from the changelog meanwhile."""
    part = DepartmentPartition(0, profile, 2)
    changelog: dict[str, Any] = {}

    def handle(source: int, message: dict[str, Any]) -> None:
        changelog.update(part.handle(part.meta.offset + 1, f"__closed__:{source}", message).writes)

    handle(0, marker(0, 1, "2025-06-29", [spend(0, 1, "2025-03-01", 100_000, 40_000, 1)]))
    handle(1, marker(1, 1, "2025-07-01", [spend(1, 1, "2025-03-01", 100_000, 40_000, 1, "D02")]))
    assert part.clock == day("2025-06-29")
    handle(1, {"kind": DELTAS, "source": 1, "epoch": 2, "deltas": [spend(1, 2, "2025-07-01", 0, 10_000, 0)]})
    handle(0, marker(0, 2, "2025-07-01"))
    assert part.clock == day("2025-06-29")  # waits for the rest of source 1's tick
    restored = DepartmentPartition.restore(0, profile, 2, [(k, v) for k, v in changelog.items() if v])
    assert restored.clock == day("2025-06-29")
    last = marker(1, 2, "2025-07-01", [spend(1, 2, "2025-07-01", 0, 10_000, 0, "D02")])
    for partition in (part, restored):
        partition.handle(part.meta.offset + 1, "__closed__:1", last)
        assert partition.clock == day("2025-07-01")
        assert {d: t.paid for d, t in partition.totals.items()} == {"2025:D01": 50_000, "2025:D02": 50_000}
        assert not any(partition.pending.values())
