"""The metrics collector, read from a fresh CollectorRegistry (never the global one)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from alerts.monitor import Monitor
from budget.calendar import time_progress_for_year
from connectors import metrics
from connectors.jsonl import parse_lines
from connectors.parsed import Accepted
from connectors.profiles import load_profile
from connectors.synthetic import Spec, generate
from connectors.wall_clock import today_day
from tests import builders as b
from tests.builders import day


def county() -> list[dict[str, Any]]:
    """P1 lags (10 % at 06-30), P2/P3 on track, P4 is a department_overall line."""
    return [
        b.registered("P1", department_id="D01", department_name="教育局", fund_source="general"),
        b.approved("P1", "1000000.00"),
        b.payment("P1", "100000.00", on="2025-06-25"),
        b.registered("P2", department_id="D01", department_name="教育局",
                     fund_source="government_fund"),
        b.approved("P2", "500000.00"),
        b.payment("P2", "400000.00", on="2025-06-20"),
        b.registered("P3", department_id="D02", department_name="卫生健康委员会",
                     fund_source="general"),
        b.approved("P3", "2000000.00"),
        b.payment("P3", "1200000.00", on="2025-06-25"),
        b.registered("P4", department_id="D02", department_name="卫生健康委员会",
                     fund_source="general", kind="department_overall"),
        b.approved("P4", "3000000.00"),
    ]


def processed(events: list[dict[str, Any]], until: str) -> Monitor:
    monitor = Monitor(load_profile("baseline"))
    for _ in monitor.process(sorted(b.records(events), key=lambda r: r.day), day(until)):
        pass
    return monitor


def scrape(
    monitor: Monitor | None,
    counters: dict[str, int] | None = None,
    progress: metrics.Progress | None = None,
) -> CollectorRegistry:
    registry = CollectorRegistry()
    metrics.register(
        registry,
        lambda: monitor,
        counters=(lambda: counters) if counters is not None else None,
        progress=(lambda: progress) if progress is not None else None,
    )
    return registry


def test_budget_and_paid_by_department_and_fund_source_in_yuan() -> None:
    registry = scrape(processed(county(), "2025-07-01"))
    value = registry.get_sample_value
    d01_general = {"department": "D01", "fund_source": "general"}
    d01_fund = {"department": "D01", "fund_source": "government_fund"}
    d02_general = {"department": "D02", "fund_source": "general"}
    assert value("budget_allocated_yuan", d01_general) == 1_000_000.0
    assert value("budget_paid_yuan", d01_general) == 100_000.0
    assert value("budget_allocated_yuan", d01_fund) == 500_000.0
    # The department_overall line (P4) is not added into the sums: no double counting.
    assert value("budget_allocated_yuan", d02_general) == 2_000_000.0
    assert value("budget_projects", d02_general) == 1.0


def test_execution_ratios_are_sums_of_money_not_means_of_rates() -> None:
    registry = scrape(processed(county(), "2025-07-01"))
    value = registry.get_sample_value
    assert value("budget_region_execution_ratio") == pytest.approx(1_700_000 / 3_500_000)
    d01 = value("budget_department_execution_ratio", {"department": "D01"})
    assert d01 == pytest.approx(500_000 / 1_500_000)
    general = value("budget_fund_source_execution_ratio", {"fund_source": "general"})
    assert general == pytest.approx(1_300_000 / 3_000_000)
    expected = time_progress_for_year(day("2025-07-01"), 2025)
    assert value("budget_time_progress_ratio") == pytest.approx(expected)
    info = {"department": "D02", "department_name": "卫生健康委员会"}
    assert value("budget_department_info", info) == 1.0


def test_alerts_firing_and_per_project_series_only_for_projects_in_alert() -> None:
    monitor = processed(county(), "2025-07-01")
    active = list(monitor.book.active())
    alerted = {a.subject_id for a in active if a.subject_type == "project"}
    assert "P1" in alerted and not alerted & {"P2", "P3"}  # the scenario holds
    registry = scrape(monitor)
    value = registry.get_sample_value
    low = {"rule": "low_execution", "severity": "critical", "department": "D01"}
    assert value("budget_alerts_firing", low) == 1.0
    total = sum(
        s.value for m in registry.collect() if m.name == "budget_alerts_firing" for s in m.samples
    )
    assert total == len(active)
    p1 = value("budget_project_execution_ratio", {"project": "P1", "department": "D01"})
    assert p1 == pytest.approx(0.1)
    assert value("budget_project_execution_ratio", {"project": "P2", "department": "D01"}) is None
    assert value("budget_project_execution_ratio", {"project": "P3", "department": "D02"}) is None
    per_project = {
        s.labels["project"]
        for m in registry.collect()
        if m.name == "budget_project_execution_ratio"
        for s in m.samples
    }
    assert per_project == alerted


def test_event_counters_and_processing_lag_come_from_the_callables() -> None:
    monitor = processed(county(), "2025-07-01")
    counters = {"events_applied": 11, "events_duplicate": 2, "events_rejected": 3}
    progress = metrics.Progress(latest_event_day=day("2025-07-04"), waiting_seconds=0.25)
    registry = scrape(monitor, counters, progress)
    value = registry.get_sample_value
    assert value("budget_events_total", {"outcome": "applied"}) == 11.0
    assert value("budget_events_total", {"outcome": "duplicate"}) == 2.0
    assert value("budget_events_total", {"outcome": "rejected"}) == 3.0
    assert value("budget_processing_lag_days") == 3.0
    assert value("budget_processing_lag_seconds") == 0.25
    assert value("budget_processing_failing") == 0.0
    assert value("budget_clock_timestamp_seconds") == metrics.day_timestamp(day("2025-07-01"))


def test_before_any_processing_only_counters_are_exposed() -> None:
    progress = metrics.Progress(latest_event_day=day("2025-03-01"))
    registry = scrape(None, {"events_applied": 5}, progress)
    assert registry.get_sample_value("budget_events_total", {"outcome": "applied"}) == 5.0
    assert registry.get_sample_value("budget_region_execution_ratio") is None
    assert registry.get_sample_value("budget_time_progress_ratio") is None
    assert registry.get_sample_value("budget_processing_lag_days") is None


def test_the_global_registry_is_left_alone() -> None:
    scrape(processed(county(), "2025-07-01"))
    assert REGISTRY.get_sample_value("budget_region_execution_ratio") is None
    assert b"budget_" not in generate_latest(REGISTRY)


def test_every_exposed_family_is_documented_in_METRICS() -> None:
    progress = metrics.Progress(day("2025-07-01"), 0.0)
    registry = scrape(processed(county(), "2025-07-01"), {"events_applied": 1}, progress)
    exposed = {s.name for m in registry.collect() for s in m.samples}
    assert exposed == set(metrics.METRICS)
    for m in registry.collect():
        for s in m.samples:
            assert set(s.labels) == set(metrics.METRICS[s.name][2]), s.name


@pytest.mark.slow
def test_a_county_year_has_no_per_project_series_except_projects_in_alert() -> None:
    """4,000 generated projects: series stay bounded by departments x fund sources x rules."""
    records = [
        item.record
        for item in parse_lines(generate(Spec(projects=4000)), "synthetic")
        if isinstance(item, Accepted) and item.record.day <= day("2025-09-30")
    ]
    records.sort(key=lambda r: r.day)
    monitor = Monitor(load_profile("baseline"))
    for _ in monitor.process(records, day("2025-09-30")):
        pass
    progress = metrics.Progress(day("2025-09-30"))
    registry = scrape(monitor, {"events_applied": len(records)}, progress)
    samples = [s for m in registry.collect() for s in m.samples]
    in_alert = {a.subject_id for a in monitor.book.active() if a.subject_type == "project"}
    assert 0 < len(in_alert) < 4000
    with_project = [s for s in samples if "project" in s.labels]
    assert {s.labels["project"] for s in with_project} <= in_alert
    assert all(s.name == "budget_project_execution_ratio" for s in with_project)
    departments = {k[1] for k in monitor.ledger.departments}
    bounded = len(samples) - len(with_project)
    # departments x 4 fund sources x 3 + department series + alert series (rule x severity x dept)
    assert bounded <= len(departments) * (4 * 3 + 2 + 6 * 2) + 20
    assert len(samples) < 4000


def test_a_workers_reading_progress_is_exported_as_facts_per_partition() -> None:
    """Lag in messages from the end offset; nothing exported that is not known (no end
    offset, no next offset, a message without a timestamp — which aiokafka gives as
    -1 ms — must not fail the scrape or look 56 years old); the business date as
    midnight UTC, as the partition clock gauge is."""
    from connectors.metrics import PartitionProgress, StreamProgressCollector

    rows = [
        PartitionProgress("budget-events", 0, next_offset=42, position_at=1_700.5, highwater=50,
                          received_day=dt.date(2025, 7, 5).toordinal()),
        PartitionProgress("budget-events", 1, next_offset=10, position_at=None, highwater=None),
        PartitionProgress("budget-events", 2, next_offset=None, position_at=-0.001, highwater=9),
        PartitionProgress("budget-departments", 0, next_offset=4, position_at=1_600.0, highwater=4),
    ]
    registry = CollectorRegistry()
    registry.register(StreamProgressCollector(lambda: rows))
    value = registry.get_sample_value

    def at(topic: str, partition: int) -> dict[str, str]:
        return {"topic": topic, "partition": str(partition)}

    lag, position = "budget_stream_consumer_lag_messages", "budget_stream_position_timestamp_seconds"
    assert value(lag, at("budget-events", 0)) == 8
    assert value(lag, at("budget-events", 1)) is None  # end unknown
    assert value(lag, at("budget-events", 2)) is None  # next offset unknown
    assert value(lag, at("budget-departments", 0)) == 0
    assert value(position, at("budget-events", 0)) == 1_700.5
    assert value(position, at("budget-events", 1)) is None
    assert value(position, at("budget-events", 2)) is None
    midnight = dt.datetime(2025, 7, 5, tzinfo=dt.UTC).timestamp()
    assert value("budget_stream_received_timestamp_seconds", {"partition": "0"}) == midnight
    assert value("budget_stream_received_timestamp_seconds", {"partition": "1"}) is None


def info_names(registry: CollectorRegistry, name: str = "budget_department_info") -> dict[str, str]:
    return {
        s.labels["department"]: s.labels["department_name"]
        for m in registry.collect() for s in m.samples if s.name == name
    }


def alert_departments(registry: CollectorRegistry) -> set[str]:
    return {
        s.labels["department"]
        for m in registry.collect() for s in m.samples if s.name == "budget_alerts_firing"
    }


def overall_only() -> list[dict[str, Any]]:
    """D01 has a lagging project; D03 only a department_overall line, which lags too."""
    return [
        *county()[:3],
        b.registered("O3", department_id="D03", department_name="卫健委", kind="department_overall"),
        b.approved("O3", "5000000.00"),
        b.payment("O3", "100000.00", on="2025-03-10"),
    ]


def test_departments_with_an_alert_are_named_after_the_year_rolls_over() -> None:
    """In January last year's alerts still fire, and the dashboards join them on the info
    series: every department with an alert is named, by the name its alerts carry."""
    monitor = processed(county(), "2026-01-05")
    assert {a.fiscal_year for a in monitor.book.active()} == {2025}  # the scenario holds
    registry = scrape(monitor)
    assert alert_departments(registry) == {"D01", "D02"}
    assert info_names(registry) == {"D01": "教育局", "D02": "卫生健康委员会"}


def test_a_department_with_only_department_overall_lines_is_named_when_in_alert() -> None:
    monitor = processed(overall_only(), "2025-07-10")
    registry = scrape(monitor)
    assert "D03" in alert_departments(registry)
    assert info_names(registry) == {"D01": "教育局", "D03": "卫健委"}
    assert registry.get_sample_value("budget_allocated_yuan", {"department": "D03",
                                                               "fund_source": "general"}) is None


def test_a_worker_names_the_departments_of_its_alerts_too() -> None:
    from connectors.metrics import WorkerFiguresCollector

    for monitor, expected in (
        (processed(county(), "2026-01-05"), {"D01": "教育局", "D02": "卫生健康委员会"}),
        (processed(overall_only(), "2025-07-10"), {"D01": "教育局", "D03": "卫健委"}),
    ):
        registry = CollectorRegistry()
        registry.register(WorkerFiguresCollector(lambda monitor=monitor: [monitor]))
        assert info_names(registry, "budget_stream_department_info") == expected


def test_a_future_dated_event_is_not_processing_lag_on_a_worker() -> None:
    """As serve counts it: the latest business date received is capped at today (a
    payment planned for later waits for its day)."""
    from connectors.metrics import PartitionProgress, StreamProgressCollector

    today = dt.date(2026, 12, 7).toordinal()
    rows = [
        PartitionProgress("budget-events", 0, next_offset=3, position_at=1.0, highwater=3,
                          received_day=dt.date(2026, 12, 28).toordinal()),
        PartitionProgress("budget-events", 1, next_offset=3, position_at=1.0, highwater=3,
                          received_day=dt.date(2026, 12, 5).toordinal()),
    ]
    registry = CollectorRegistry()
    registry.register(StreamProgressCollector(lambda: rows, today=lambda: today))
    value = registry.get_sample_value
    received = "budget_stream_received_timestamp_seconds"
    assert value(received, {"partition": "0"}) == dt.datetime(2026, 12, 7, tzinfo=dt.UTC).timestamp()
    assert value(received, {"partition": "1"}) == dt.datetime(2026, 12, 5, tzinfo=dt.UTC).timestamp()
    # The default is the wall-clock business date (UTC+8), which the worker ticks.
    far = [PartitionProgress("budget-events", 0, 0, None, received_day=dt.date(2999, 1, 1).toordinal())]
    registry = CollectorRegistry()
    before = today_day()
    registry.register(StreamProgressCollector(lambda: far))
    found = registry.get_sample_value(received, {"partition": "0"})
    assert found is not None
    value_day = dt.datetime.fromtimestamp(found, dt.UTC).date().toordinal()
    assert before <= value_day <= today_day()
