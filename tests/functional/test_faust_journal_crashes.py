"""The Faust department journal under crashes at any write: several sources and
departments, chunked ticks, ticks published again, and small JOURNAL_MAX bounds. Every
delta is counted once, as in a run without a crash (a review found a delta counted
twice: the committed body shared its pending buckets with the live ones)."""
from __future__ import annotations

import datetime as dt
import random
from typing import Any

import orjson
import pytest

from alerts.profile import Profile
from connectors.profiles import load_profile
from streams import faust_state
from streams.faust_state import DELTAS as CHUNK
from streams.faust_state import TICK_CLOSED, DepartmentPartition

DEPTS = ["D01", "D02", "D03"]


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_profile("baseline")


def day(iso: str) -> int:
    return dt.date.fromisoformat(iso).toordinal()


def delta(dept: str, on: int, budget: int, paid: int, projects: int, source: int, epoch: int) -> dict[str, Any]:
    return {"kind": "delta", "source": source, "epoch": epoch, "day": on, "fiscal_year": 2025,
            "department_id": dept, "department_name": "部门" + dept, "budget": budget, "paid": paid,
            "projects": projects}


def script(rng: random.Random, sources: int) -> list[tuple[str, dict[str, Any]]]:
    msgs: list[tuple[str, dict[str, Any]]] = []
    start = day("2025-06-20")
    reached = {s: start for s in range(sources)}
    epochs = {s: 0 for s in range(sources)}
    for _ in range(rng.randint(6, 14)):
        s = rng.randrange(sources)
        epochs[s] += 1
        e = epochs[s]
        until = reached[s] + rng.randint(0, 3)
        reached[s] = until
        deltas = []
        for on in range(until - 3, until + 1):
            for dept in DEPTS:
                if rng.random() < 0.4:
                    deltas.append([f"2025:{dept}", delta(dept, on, rng.randint(0, 9) * 1_000_000,
                                                         rng.randint(0, 3) * 100_000, rng.randint(0, 1), s, e)])
        key = f"__closed__:{s}"
        parts = [deltas[i:i + 2] for i in range(0, len(deltas), 2)] if rng.random() < 0.5 else []
        tick = []
        if parts and len(parts) > 1:
            for p in parts[:-1]:
                tick.append((key, {"kind": CHUNK, "source": s, "epoch": e, "deltas": p}))
            tick.append((key, {"kind": TICK_CLOSED, "source": s, "epoch": e, "day": until, "deltas": parts[-1]}))
        else:
            tick.append((key, {"kind": TICK_CLOSED, "source": s, "epoch": e, "day": until, "deltas": deltas}))
        msgs += tick
        if rng.random() < 0.2:  # the tick published again (its project partition redid it)
            msgs += tick
    for s in range(sources):  # every source closes the same last day: a final round
        epochs[s] += 1
        msgs.append((f"__closed__:{s}", {"kind": TICK_CLOSED, "source": s, "epoch": epochs[s],
                                         "day": max(reached.values()) + 1, "deltas": []}))
    return msgs


def seen(part: DepartmentPartition) -> Any:
    totals = {k: (t.budget, t.paid, t.projects) for k, t in sorted(part.totals.items())}
    alerts = sorted((a.alert_id, a.status, a.severity, a.since) for a in part.judge.book.alerts.values())
    return totals, part.meta.clock, alerts


def run(profile: Profile, sources: int, msgs: list[Any], crashes: list[tuple[int, int]]) -> Any:
    """Handle ``msgs``; at (message index, writes kept) crash: restore from the compacted
    changelog and let the broker redeliver from the start (handle skips what it did)."""
    changelog: dict[str, Any] = {}
    part = DepartmentPartition(0, profile, sources)
    i = 0
    pending = sorted(crashes)
    while i < len(msgs):
        key, message = msgs[i]
        out = part.handle(i, key, message)
        writes = out.writes
        if pending and pending[0][0] == i:
            _, kept = pending.pop(0)
            kept = min(kept, len(writes))
            for k, v in writes[:kept]:
                changelog[k] = orjson.loads(orjson.dumps(v))
            part = DepartmentPartition.restore(0, profile, sources, list(changelog.items()))
            i = part.meta.offset + 1  # redelivered from the meta's offset on
            continue
        for k, v in writes:
            changelog[k] = orjson.loads(orjson.dumps(v))
        i += 1
    return seen(part)


@pytest.mark.parametrize("bound", [-1, 0, 1, 3, 256])
@pytest.mark.parametrize("seed", range(40))
def test_random_crashes_count_every_delta_once(profile: Profile, seed: int, bound: int,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faust_state, "JOURNAL_MAX", bound)
    rng = random.Random(seed)
    sources = rng.randint(1, 3)
    msgs = script(rng, sources)
    whole = run(profile, sources, msgs, [])
    for _ in range(25):
        crashes = sorted({(rng.randrange(len(msgs)), rng.randint(0, 12)) for _ in range(rng.randint(1, 3))})
        # one crash per message index
        uniq = dict(crashes)
        got = run(profile, sources, msgs, sorted(uniq.items()))
        assert got == whole, (seed, bound, sorted(uniq.items()))


def test_a_crash_between_a_rounds_values_and_its_meta_counts_a_journaled_delta_once(profile: Profile) -> None:
    """The round writes each value with ``prev`` = the committed body, whose pending
    buckets are the very lists _take_delta mutates: a delta journaled since (not committed)
    is inside that ``prev``, and a restore takes it again from the journal."""
    from tests.functional.test_faust_departments import DEPT, closed, delta

    messages = [
        ("__closed__:1", {**closed("2025-07-01", []), "source": 1}),
        ("__closed__:0", closed("2025-07-02", [delta("2025-07-02", 100, 0, 1)])),          # round to 07-01
        ("__closed__:0", closed("2025-07-03", [delta("2025-07-02", 50, 0, 0, epoch=2)], epoch=2)),  # journaled
        ("__closed__:1", {**closed("2025-07-03", [], epoch=2), "source": 1}),            # round to 07-03
    ]
    whole = DepartmentPartition(0, profile, 2)
    changelog: dict[str, Any] = {}
    for offset, (key, message) in enumerate(messages):
        out = whole.handle(offset, key, message)
        writes = out.writes if offset < 3 else out.writes[:1]  # crash after the round's first value
        for k, v in writes:
            changelog[k] = orjson.loads(orjson.dumps(v))
    assert whole.totals[DEPT].budget == 150
    part = DepartmentPartition.restore(0, profile, 2, changelog.items())
    for offset, (key, message) in enumerate(messages):  # redelivered
        part.handle(offset, key, message)
    assert part.totals[DEPT].budget == 150  # 200: the epoch-2 delta counted twice
