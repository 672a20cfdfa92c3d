"""Faust agents under at-least-once delivery: duplicates and redeliveries change
nothing, bad input lands in the DLQ with a reason and its topic:partition:offset,
time-driven rules fire on every partition with no event, and a crash in the middle
of a tick is recomputed exactly from the changelog tables."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
import pytest

from alerts.profile import Profile
from connectors.profiles import load_profile
from connectors.synthetic import Spec, generate
from streams.faust_app import table_items
from streams.faust_state import ProjectPartition, event_key, meta_key, partition_for, status_of
from tests.functional.faust_harness import Harness, make_app, running

AS_OF = "2025-09-30"


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_profile("baseline")


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    return [line for line in generate(Spec(projects=40, seed=5)) if line.strip()]


def event(kind: str, event_id: str, day: str, project: str, **fields: Any) -> bytes:
    return json.dumps(
        {"type": kind, "event_id": event_id, "occurred_on": day, "project_id": project, **fields}
    ).encode()


def register(project: str, department: str = "D01") -> list[bytes]:
    return [
        event(
            "project_registered",
            f"{project}-reg",
            "2025-01-10",
            project,
            fiscal_year=2025,
            name=f"项目{project}",
            department_id=department,
            department_name="教育局",
            fund_source="general",
        ),
        event("budget_approved", f"{project}-ok", "2025-01-15", project, amount="1000000.00"),
    ]


def run(profile: Profile, scenario: Any, partitions: int = 4) -> tuple[Harness, Any]:
    bapp, outlet = make_app(profile, partitions=partitions)

    async def go() -> tuple[Harness, Any]:
        async with running(bapp, outlet) as h:
            return h, await scenario(h)

    return asyncio.run(go())


def restored(h: Harness, profile: Profile) -> list[ProjectPartition]:
    items = list(table_items(h.bapp.projects_table))
    return [ProjectPartition.restore(p, profile, items) for p in range(h.partitions)]


def canonical(rows: list[dict[str, Any]]) -> list[bytes]:
    return sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rows)


def test_publishing_the_year_twice_changes_nothing(profile: Profile, lines: list[bytes]) -> None:
    async def once(h: Harness) -> None:
        await h.publish(lines)
        await h.tick(AS_OF)

    async def twice(h: Harness) -> None:
        await h.publish(lines)
        await h.publish(lines)  # every event re-sent: new offsets, same event_ids
        await h.tick(AS_OF)
        await h.publish(lines)  # and again after the clock moved on
        await h.tick(AS_OF)

    h1, _ = run(profile, once)
    h2, _ = run(profile, twice)
    assert len(h1.alerts) > 10
    assert canonical(h2.alerts) == canonical(h1.alerts)
    assert status_of(restored(h2, profile)) == status_of(restored(h1, profile))


def test_a_redelivered_message_is_skipped(profile: Profile) -> None:
    project = "P-REDELIVER"
    p = partition_for(project, 4)

    async def scenario(h: Harness) -> list[str]:
        for line in register(project):
            await h.put(project, line)
        pay = event("payment", "pay-1", "2025-02-01", project, amount="100000.00")
        first = h.offsets.get(p, 0)
        await h.put(project, pay)
        outcomes = []
        # the broker re-delivers the same offset after a crash before the commit
        await h.put(project, pay, offset=first)
        outcomes.append(h.events.results[max(h.events.results)])
        # and the producer re-sends the same event (a new offset, the same event_id)
        await h.put(project, pay)
        outcomes.append(h.events.results[max(h.events.results)])
        await h.tick("2025-03-01")
        return outcomes

    h, outcomes = run(profile, scenario)
    assert outcomes == ["redelivered", "duplicate"]
    (view,) = [x for x in status_of(restored(h, profile))["projects"] if x["project_id"] == project]
    assert view["paid"] == "100000.00"


def test_a_project_write_without_its_meta_is_still_deduplicated(profile: Profile) -> None:
    """Crash after the event's changelog entry, before the partition meta: the
    redelivered event is recognised by its entry, which is also its buffer."""
    project = "P-CRASH"
    part = ProjectPartition(0, profile)
    writes: list[tuple[str, Any]] = []
    for offset, line in enumerate(register(project)):
        writes += part.handle(offset, project, line).writes
    pay = event("payment", "pay-9", "2025-02-01", project, amount="5000.00")
    out = part.handle(2, project, pay)
    # The entry is the event's only record: no meta until the next tick.
    assert [k for k, _ in out.writes] == [event_key(project, "pay-9")]
    again = ProjectPartition.restore(0, profile, writes + out.writes)
    # The broker redelivers offset 2 (its commit was lost with the worker): handled
    # before, by its entry's offset; the producer sending the event again is a duplicate.
    assert again.handle(2, project, pay).outcome == "redelivered"
    assert again.handle(3, project, pay).outcome == "duplicate"
    assert again.meta.seq == part.meta.seq  # arrival order recounted from the entries
    tick = again.handle(4, "__clock__", b'{"type": "clock_tick", "as_of": "2025-03-01"}')
    assert tick.outcome == "tick"
    assert again.monitor.ledger.projects[project].paid == 500000


def test_a_tick_interrupted_half_way_is_recomputed_exactly(
    profile: Profile, lines: list[bytes]
) -> None:
    part = ProjectPartition(0, profile)
    writes: dict[str, Any] = {}
    for offset, line in enumerate(lines):
        for key, value in part.handle(offset, ProjectKey.of(line), line).writes:
            writes[key] = value
    tick_offset = len(lines)
    tick = b'{"type": "clock_tick", "as_of": "2025-09-30"}'
    complete = part.handle(tick_offset, "__clock__", tick)
    assert complete.transitions and len(complete.writes) > 10
    # the worker died after writing half of the tick's project values
    half = dict(writes)
    for key, value in complete.writes[: len(complete.writes) // 2]:
        half[key] = value
    again = ProjectPartition.restore(0, profile, half.items())
    assert again.clock is None, "the tick's meta was not written: it is not committed"
    redo = again.handle(tick_offset, "__clock__", tick)
    assert [t.to_json() for t in redo.transitions] == [t.to_json() for t in complete.transitions]
    assert redo.writes == complete.writes


class ProjectKey:
    @staticmethod
    def of(line: bytes) -> str:
        try:
            value = orjson.loads(line).get("project_id")
        except (orjson.JSONDecodeError, AttributeError):
            return "unparsable"
        return value if isinstance(value, str) else "unparsable"


def test_bad_events_land_in_the_dlq_with_a_reason(profile: Profile) -> None:
    bad = {
        "not-json": (b'{"type": "payment", "event_id": ', "not valid JSON"),
        "unknown-type": (
            event("refund", "r1", "2025-03-01", "not-json"),
            "unknown event type 'refund'",
        ),
        "zero-payment": (event("payment", "z1", "2025-03-01", "not-json", amount="0"), "amount"),
        "bad-date": (
            event("payment", "d1", "2025-02-30", "not-json", amount="1.00"),
            "occurred_on",
        ),
        "wrong-key": (
            event("payment", "k1", "2025-03-01", "P-OTHER", amount="1.00"),
            "is not the event's project_id",
        ),
    }

    async def scenario(h: Harness) -> list[tuple[int, int]]:
        where = []
        for raw, _ in bad.values():
            p = partition_for("not-json", 4)
            where.append((p, h.offsets.get(p, 0)))
            await h.put("not-json", raw)
        return where

    h, where = run(profile, scenario)
    assert len(h.dead_letters) == len(bad)
    for letter, (raw, reason), (p, offset) in zip(h.dead_letters, bad.values(), where, strict=True):
        assert reason in letter["reason"]
        assert letter["raw"] == raw.decode()
        assert (letter["topic"], letter["partition"], letter["offset"]) == (
            "budget-events",
            p,
            offset,
        )
        assert letter["source"] == f"budget-events:{p}:{offset}"
    assert h.bapp.project_partitions[partition_for("not-json", 4)].pending_count() == 0


def test_time_driven_rules_fire_on_every_partition_with_no_event(profile: Profile) -> None:
    projects = [f"P-QUIET-{i}" for i in range(24)]
    assert len({partition_for(p, 4) for p in projects}) == 4, "projects on every partition"

    async def scenario(h: Harness) -> list[dict[str, Any]]:
        for project in projects:
            for line in register(project, department="D-QUIET"):
                await h.put(project, line)
        await h.tick("2025-01-31")
        before = list(h.alerts)
        await h.tick(AS_OF)  # no event at all between the ticks
        return before

    h, before = run(profile, scenario)
    assert before == []
    fired = {(a["rule"], a["subject_id"]): a for a in h.alerts if a["transition"] == "firing"}
    for project in projects:
        assert fired[("stalled", project)]["date"] == "2025-04-15"  # 90 days after approval
        assert fired[("low_execution", project)]["date"] == "2025-06-30"  # the checkpoint
        assert ("behind_schedule", project) in fired
    assert fired[("department_low_execution", "D-QUIET")]["date"] == "2025-06-30"
    assert {a["date"] for a in h.alerts} <= {"2025-04-15", "2025-06-30"} | {
        a["date"] for a in h.alerts if a["rule"] == "behind_schedule"
    }


class SlowBroker:
    """An outlet whose deliveries are acknowledged only when the test says so."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.acks: list[asyncio.Future[None]] = []

    async def send(self, topic: str, key: str | None, value: bytes, partition: int | None = None) -> Any:
        self.sent.append(topic)
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack


def test_a_tick_commits_its_meta_only_once_the_broker_has_its_alerts(profile: Profile) -> None:
    """The meta record commits a message: written before the alerts were delivered, a
    crash in between would skip the redelivered tick and lose them."""
    from streams.faust_app import BudgetApp
    from streams.settings import Settings

    broker = SlowBroker()
    bapp = BudgetApp(Settings(partitions=1, store="memory://", clock="off"), profile=profile,
                     outlet=broker, app_id="budgetwatch-test")
    part = ProjectPartition(0, profile)
    for offset, line in enumerate(register("P-ACK")):
        part.handle(offset, "P-ACK", line)
    out = part.handle(2, "__clock__", b'{"type": "clock_tick", "as_of": "2025-09-30"}')
    assert out.transitions, "the stalled project raises alerts by 09-30"
    table: dict[str, bytes] = {}

    async def scenario() -> None:
        emit = asyncio.ensure_future(bapp._emit(out, table, "budget-events", origin="budget-events:0:2"))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        assert "budget-alerts" in broker.sent
        assert meta_key(0) not in table and "P-ACK" in table  # values written, not committed
        for ack in broker.acks:
            ack.set_result(None)
        await emit
        assert meta_key(0) in table

    asyncio.run(scenario())


def test_a_registration_for_another_year_is_a_dead_letter_on_the_agents_too(profile: Profile) -> None:
    from tests import builders as b

    events = [b.registered("P1"), b.approved("P1", "1000.00"),
              {**b.registered("P1", on="2026-01-02", event_id="P1@registered:2026"), "fiscal_year": 2026}]

    async def scenario(h: Harness) -> None:
        await h.publish(b.jsonl(events).splitlines())
        await h.tick("2026-01-05")

    h, _ = run(profile, scenario)
    (letter,) = h.dead_letters
    assert "registered for fiscal year 2025" in letter["reason"] and letter["offset"] == 2  # refused on arrival
    assert letter["key"] == "P1" and json.loads(letter["raw"])["event_id"] == "P1@registered:2026"
    partition = h.bapp.project_partitions[partition_for("P1", 4)]
    assert partition.monitor.ledger.projects["P1"].fiscal_year == 2025 and partition.monitor.refused == []


def test_an_event_id_reused_for_other_content_is_a_dead_letter_on_the_agents_too(profile: Profile) -> None:
    """It was a silent duplicate: voucher v0001 sent again with 900 instead of 100."""
    first = event("payment", "v0001", "2025-03-01", "P1", amount="100.00")
    other = event("payment", "v0001", "2025-03-01", "P1", amount="900.00")

    async def scenario(h: Harness) -> None:
        await h.put("P1", first)
        await h.put("P1", first)  # a redelivery: a plain duplicate
        await h.put("P1", other)

    h, _ = run(profile, scenario)
    (letter,) = h.dead_letters
    assert "'v0001' was already received with other content" in letter["reason"]
    assert json.loads(letter["raw"])["amount"] == "900.00"
    partition = h.bapp.project_partitions[partition_for("P1", 4)]
    assert [r.amount for _, r in partition.pending["P1"]] == [10000]


def test_a_department_renamed_by_re_registering_a_project_reaches_the_department(profile: Profile) -> None:
    """Re-registered under the same department with a new name (机构改革), the project's
    sums did not change, so no delta was sent and the department kept 教育局 (review)."""
    part = ProjectPartition(0, profile)
    for offset, line in enumerate(register("P1")):
        part.handle(offset, "P1", line)
    part.handle(2, "__clock__", b'{"type": "clock_tick", "as_of": "2025-03-01"}')
    renamed = event("project_registered", "P1-reg-2", "2025-03-05", "P1", fiscal_year=2025, name="项目P1",
                    department_id="D01", department_name="教育体育局", fund_source="general")
    part.handle(3, "P1", renamed)
    out = part.handle(4, "__clock__", b'{"type": "clock_tick", "as_of": "2025-03-10"}')
    deltas = [d for _, value in out.departments for d in _deltas(value)]
    assert [(d["department_name"], d["budget"], d["paid"], d["projects"]) for d in deltas] == [
        ("教育体育局", 0, 0, 0)]


def _deltas(value: Any) -> list[dict[str, Any]]:
    if value.get("kind") == "delta":
        return [value]
    return [d for _, d in value.get("deltas", [])]


def test_a_message_whose_handling_raises_is_a_dead_letter_and_its_partition_is_rebuilt(
    profile: Profile, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Never a silent ack: an internal error dead-letters the message (topic, partition,
    offset, key, reason) and drops the partition's state, rebuilt from its table."""
    from streams.faust_state import ProjectPartition
    from tests import builders as b

    real = ProjectPartition.handle

    def failing(self: ProjectPartition, offset: int, key: Any, value: Any) -> Any:
        if b"P1-PAY-9" in bytes(value):
            raise RuntimeError("boom")
        return real(self, offset, key, value)

    monkeypatch.setattr(ProjectPartition, "handle", failing)
    events = [b.registered("P1"), b.approved("P1", "1000.00"),
              b.payment("P1", "10.00", on="2025-03-01", event_id="P1-PAY-9"),
              b.payment("P1", "20.00", on="2025-03-02", event_id="P1-PAY-10")]

    async def scenario(h: Harness) -> tuple[Any, Any]:
        await h.publish(b.jsonl(events[:2]).splitlines())
        before = h.bapp.project_partitions.get(partition_for("P1", 4))
        await h.publish(b.jsonl(events[2:]).splitlines())
        await h.tick("2025-03-05")
        return before, h.bapp.project_partitions.get(partition_for("P1", 4))

    h, (before, after) = run(profile, scenario)
    (letter,) = h.dead_letters
    assert letter["reason"].startswith("internal error RuntimeError: boom") and "re-publish" in letter["reason"]
    assert (letter["topic"], letter["partition"], letter["offset"], letter["key"]) == (
        "budget-events", partition_for("P1", 4), 2, "P1")
    assert before is not after  # dropped, and rebuilt from the table by the next message
    assert after.monitor.ledger.projects["P1"].paid == 2000  # the other payment, in fen
