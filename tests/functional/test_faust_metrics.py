"""The Faust agents' Prometheus metrics, read back from the app's own registry."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from connectors.profiles import load_profile
from streams.faust_state import partition_for
from tests.functional.faust_harness import make_app, running


def event(type_: str, event_id: str, day: str, project: str, **fields: object) -> bytes:
    return json.dumps(
        {"type": type_, "event_id": event_id, "occurred_on": day, "project_id": project, **fields}
    ).encode()


def midnight(day: str) -> float:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), tzinfo=dt.UTC).timestamp()


def test_clock_messages_buffers_and_transitions_are_counted_per_partition() -> None:
    bapp, outlet = make_app(load_profile("baseline"), partitions=2)
    registry = bapp.metrics.registry
    project = "P1"
    home = partition_for(project, 2)
    registered = event(
        "project_registered", "r1", "2025-01-10", project, fiscal_year=2025, name="项目",
        department_id="D01", department_name="单位", fund_source="general",
    )
    approved = event("budget_approved", "b1", "2025-01-10", project, amount="1000000.00")

    async def scenario() -> list[float | None]:
        async with running(bapp, outlet) as h:
            await h.publish([registered, approved, approved])  # the last one a duplicate
            buffered = registry.get_sample_value("budget_stream_pending_events", {"partition": str(home)})
            await h.tick("2025-01-31")
            first = registry.get_sample_value(
                "budget_stream_clock_timestamp_seconds", {"topic": "budget-events", "partition": str(home)}
            )
            await h.tick("2025-07-01")  # past the 06-30 checkpoint: nothing paid, it fires
            return [buffered, first]

    buffered, first = asyncio.run(scenario())
    value = registry.get_sample_value
    assert buffered == 2
    assert first == midnight("2025-01-31")
    for p in ("0", "1"):
        assert value("budget_stream_clock_timestamp_seconds",
                     {"topic": "budget-events", "partition": p}) == midnight("2025-07-01")
        assert value("budget_stream_pending_events", {"partition": p}) == 0
    assert value("budget_stream_dedup_event_ids", {"partition": str(home)}) == 2
    assert value("budget_stream_messages_total", {"outcome": "buffered"}) == 2
    assert value("budget_stream_messages_total", {"outcome": "duplicate"}) == 1
    assert value("budget_stream_messages_total", {"outcome": "tick"}) == 4  # 2 ticks x 2 partitions
    fired = value("budget_stream_alert_transitions_total",
                  {"rule": "low_execution", "severity": "critical", "transition": "firing"})
    assert fired == 1


def test_a_revoked_partition_is_no_longer_exported_and_comes_back_with_its_owner() -> None:
    """After a rebalance this worker's last clock of a partition would stand still beside
    the new owner's and look stuck (BudgetwatchPartitionClockBehind)."""
    from faust.types import TP

    bapp, outlet = make_app(load_profile("baseline"), partitions=2)
    value = bapp.metrics.registry.get_sample_value
    clock = "budget_stream_clock_timestamp_seconds"

    async def scenario() -> list[float | None]:
        async with running(bapp, outlet) as h:
            await h.tick("2025-01-31")
            await bapp._on_revoked(None, [TP("budget-events", 1), TP("budget-departments", 1)])
            gone = [
                value(clock, {"topic": "budget-events", "partition": "1"}),
                value(clock, {"topic": "budget-departments", "partition": "1"}),
                value("budget_stream_pending_events", {"partition": "1"}),
            ]
            kept = value(clock, {"topic": "budget-events", "partition": "0"})
            await h.tick("2025-02-28")  # partition 1 assigned here again
            back = value(clock, {"topic": "budget-events", "partition": "1"})
            return [*gone, kept, back]

    gone_events, gone_departments, gone_pending, kept, back = asyncio.run(scenario())
    assert gone_events is None and gone_departments is None and gone_pending is None
    assert kept == midnight("2025-01-31")
    assert back == midnight("2025-02-28")


def test_a_fresh_worker_exports_its_failure_counters_at_zero() -> None:
    """BudgetwatchDeadLetters and BrokerSendsFailing use increase(): a series that first
    appears already at 3 never fires for those first three."""
    bapp, _ = make_app(load_profile("baseline"), partitions=2)
    registry = bapp.metrics.registry
    for topic in ("budget-events", "budget-departments"):
        assert registry.get_sample_value("budget_stream_dead_letters_total", {"topic": topic}) == 0.0
        assert registry.get_sample_value("budget_stream_emit_retries_total", {"topic": topic}) == 0.0


def test_the_workers_shares_add_up_to_the_embedded_figures(tmp_path: Path) -> None:
    """What the recording rules in deploy/prometheus/rules.yml compute from the workers'
    budget_stream_* shares (sums, then ratios) equals what the embedded engine exports
    itself for the same year; a partition that leaves takes its share with it."""
    from prometheus_client import CollectorRegistry

    from budget.calendar import to_day
    from connectors import metrics
    from connectors.synthetic import Spec, generate
    from streams.engine import Engine
    from streams.ingest import ingest
    from streams.store import Store

    as_of = "2025-09-30"
    lines = [line for line in generate(Spec(projects=80, seed=21)) if line.strip()]
    year = tmp_path / "year.jsonl"
    year.write_bytes(b"\n".join(lines) + b"\n")
    embedded = CollectorRegistry()
    with Store(tmp_path / "bw.db") as store:
        from connectors.files import read_events
        ingest(store, read_events(year))
        engine = Engine(store, load_profile("baseline"), dispositions=False)
        engine.run(to_day(dt.date.fromisoformat(as_of)))
        metrics.register(embedded, lambda: engine.monitor)
        want = samples(embedded)

    bapp, outlet = make_app(load_profile("baseline"), partitions=4)

    async def scenario() -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        async with running(bapp, outlet) as h:
            await h.publish(lines)
            await h.tick(as_of)
            return samples(bapp.metrics.registry)

    got = asyncio.run(scenario())
    for name in ("allocated_yuan", "paid_yuan", "projects"):
        shares = got[f"budget_stream_{name}"]
        assert shares and shares.keys() == want[f"budget_{name}"].keys()
        for labels, value in shares.items():
            assert value == pytest.approx(want[f"budget_{name}"][labels])

    def ratio(by: str) -> dict[str, float]:
        paid, budget = sum_by(got["budget_stream_paid_yuan"], by), sum_by(got["budget_stream_allocated_yuan"], by)
        return {k: paid[k] / budget[k] for k in budget if budget[k] > 0}

    def keyed(series: dict[tuple[tuple[str, str], ...], float]) -> dict[str, float]:
        return {labels[0][1]: value for labels, value in series.items()}

    assert ratio("department") == pytest.approx(keyed(want["budget_department_execution_ratio"]))
    assert ratio("fund_source") == pytest.approx(keyed(want["budget_fund_source_execution_ratio"]))
    region = sum(got["budget_stream_paid_yuan"].values()) / sum(got["budget_stream_allocated_yuan"].values())
    assert region == pytest.approx(want["budget_region_execution_ratio"][()])
    assert got["budget_stream_time_progress_ratio"][()] == want["budget_time_progress_ratio"][()]
    assert got["budget_stream_department_info"] == want["budget_department_info"]
    assert got["budget_stream_project_execution_ratio"]
    assert got["budget_stream_project_execution_ratio"] == pytest.approx(want["budget_project_execution_ratio"])

    # a partition handed to another worker leaves with its share
    for p in range(4):
        bapp._drop_partition("budget-events", p)
    assert not samples(bapp.metrics.registry).get("budget_stream_allocated_yuan")

    # and one assigned back (tables recovered, no message since) is exported at once
    from faust.types import TP

    assigned = {TP("budget-events", p) for p in range(4)} | {TP("budget-departments", 0)}
    bapp.app.consumer.assignment = lambda: assigned  # what the broker assigned (none here)

    async def rebalanced() -> None:
        await bapp.app.on_rebalance_complete.send()  # as Faust does after table recovery
        assert bapp.warming is not None
        await bapp.warming

    asyncio.run(rebalanced())
    assert sorted(bapp.project_partitions) == [0, 1, 2, 3]
    back = samples(bapp.metrics.registry)
    for name in ("allocated_yuan", "paid_yuan", "projects"):
        assert back[f"budget_stream_{name}"] == got[f"budget_stream_{name}"]

    # partitions revoked while warming are skipped; one that fails to restore does not
    # stop the others (its next message retries)
    for p in range(4):
        bapp._drop_partition("budget-events", p)
    calls = [0]

    def shrinking() -> set[Any]:
        calls[0] += 1
        return assigned if calls[0] == 1 else {TP("budget-events", p) for p in (0, 1, 3)}

    restore = bapp.project_partition

    def failing_on_1(partition: int) -> Any:
        if partition == 1:
            raise OSError("RocksDB: I/O error")
        return restore(partition)

    bapp.project_partition = failing_on_1  # type: ignore[method-assign]
    asyncio.run(bapp.warm(shrinking))
    assert sorted(bapp.project_partitions) == [0, 3]


def samples(registry: Any) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in registry.collect():
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def sum_by(series: dict[tuple[tuple[str, str], ...], float], label: str) -> dict[str, float]:
    sums: dict[str, float] = {}
    for labels, value in series.items():
        key = dict(labels)[label]
        sums[key] = sums.get(key, 0.0) + value
    return sums


def test_a_worker_exports_how_far_it_has_read_each_partition() -> None:
    """The facts behind budget_processing_lag_* on the compose stack (rules.yml, group
    budgetwatch-lag), per partition this worker holds: messages waiting on the broker,
    the time of its position and the latest business date received — from the
    assignment on (a worker that holds partitions and reads nothing must be seen),
    through a message stuck in its send retries (still unread), a restore and a
    revoke. The broker's end offsets come from the consumer in production; here they
    are handed in (there is no broker)."""
    from faust.types import TP

    from streams.faust_app import BudgetApp, MemoryOutlet
    from streams.faust_state import CLOCK_KEY, tick_value
    from streams.settings import Settings

    project = "P1"
    home = partition_for(project, 2)
    ends: dict[tuple[str, int], int] = {("budget-events", home): 10}
    scraped: dict[str, float | None] = {}
    value: Any = None
    home_events = {"topic": "budget-events", "partition": str(home)}
    lag, position = "budget_stream_consumer_lag_messages", "budget_stream_position_timestamp_seconds"
    received = "budget_stream_received_timestamp_seconds"

    class FailsOnce(MemoryOutlet):
        """Once armed, the broker refuses the next department message (a tick's output)."""

        armed = failed = False

        async def send(self, topic: str, key: str | None, value: bytes, partition: int | None = None) -> Any:
            if topic == "budget-departments" and self.armed and not self.failed:
                self.failed = True
                raise ConnectionError("broker unreachable")
            return await super().send(topic, key, value, partition)

    async def sleep(_: float) -> None:  # between send attempts: scrape while stuck
        scraped["stuck_lag"], scraped["stuck_at"] = value(lag, home_events), value(position, home_events)

    outlet = FailsOnce()
    bapp = BudgetApp(
        Settings(partitions=2, store="memory://", clock="off"), profile=load_profile("baseline"),
        outlet=outlet, app_id="budgetwatch-test", sleep=sleep,
        highwater=lambda t, p: ends.get((t, p)), now=lambda: 5_000.0,
    )
    value = bapp.metrics.registry.get_sample_value
    registered = event(
        "project_registered", "r1", "2025-01-10", project, fiscal_year=2025, name="项目",
        department_id="D01", department_name="单位", fund_source="general",
    )
    paid_late = event("budget_approved", "b1", "2025-02-03", project, amount="1000.00")

    async def scenario() -> dict[str, float | None]:
        seen = scraped
        async with running(bapp, outlet) as h:
            await bapp._on_assigned(None, [TP("budget-events", home)])
            seen["assigned_at"], seen["assigned_lag"] = value(position, home_events), value(lag, home_events)
            bapp.project_partition(home)  # restored, as warm() does after the rebalance
            seen["restored_lag"] = value(lag, home_events)
            await h.put(project, paid_late, timestamp=1_000.0)  # out of order: allowed
            await h.put(project, registered, timestamp=1_001.5)
            seen["lag"], seen["at"] = value(lag, home_events), value(position, home_events)
            seen["received"] = value(received, {"partition": str(home)})
            outlet.armed = True  # the home partition's tick fails once: retried in place
            await h.put(CLOCK_KEY, tick_value(dt.date(2025, 1, 31)), partition=home)
            await h.put(CLOCK_KEY, tick_value(dt.date(2025, 1, 31)), partition=1 - home)
            seen["lag_after_tick"] = value(lag, home_events)
            ends[("budget-events", home)] = 3  # the broker has nothing beyond the tick
            seen["caught_up"] = value(lag, home_events)
            bapp._drop_partition("budget-events", home)
            bapp.project_partition(home)  # rebuilt from the table, as after a restart
            seen["received_restored"] = value(received, {"partition": str(home)})
            await bapp._on_revoked(None, [TP("budget-events", home)])
            seen["revoked"] = value(position, home_events)
        return seen

    seen = asyncio.run(scenario())
    assert seen["assigned_at"] == 5_000.0  # aged from the assignment before any message
    assert seen["assigned_lag"] is None  # the table not restored yet: no next offset known
    assert seen["restored_lag"] == 10  # nothing handled: everything up to the end waits
    assert seen["lag"] == 8  # offsets 0 and 1 handled; the broker ends at 10
    assert seen["at"] == 1_001.5
    assert seen["received"] == midnight("2025-02-03")  # the latest, not the last received
    assert outlet.failed and seen["stuck_lag"] == 8 and seen["stuck_at"] == 1_001.5  # the tick still unread
    assert seen["lag_after_tick"] == 7
    assert seen["caught_up"] == 0
    assert seen["received_restored"] == midnight("2025-02-03")
    assert seen["revoked"] is None


def test_without_a_started_consumer_the_end_offsets_are_unknown() -> None:
    """The default end offsets come from the worker's Kafka consumer, asked for the
    partition (the TP it is given is checked here); a worker that has not started one,
    or whose consumer cannot answer, exports no lag, never a made-up 0."""
    bapp, _ = make_app(load_profile("baseline"), partitions=2)
    assert bapp.highwater("budget-events", 0) is None
    consumer = bapp.app.consumer  # created, not started: asking it fails, and that is "unknown"
    assert consumer is not None and bapp.highwater("budget-events", 0) is None

    class Fetched:
        """A started consumer's answers: the end offsets of the partitions it fetched."""

        def highwater(self, tp: Any) -> int | None:
            return {("budget-events", 0): 7}.get((tp.topic, tp.partition))

    bapp.app.consumer = Fetched()  # type: ignore[assignment]
    assert bapp.highwater("budget-events", 0) == 7
    assert bapp.highwater("budget-events", 1) is None  # not fetched yet (aiokafka: None)
