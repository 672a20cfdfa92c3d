"""Prometheus metrics of budget execution, computed at scrape time (DESIGN §8).

A custom collector reads a :class:`alerts.monitor.Monitor` (handed in through a
callable, so the embedded service and a Faust worker can each pass their own)
and turns its ledger and alert book into gauges. Nothing is kept between
scrapes: every scrape shows the monitor as it stands.

Labels are bounded: department, fund source, rule, severity and outcome. The
only per-project series is ``budget_project_execution_ratio``, and only for the
projects that have an active alert (a bounded, actionable set).

The collector registers on the registry it is given, never on the global one.
It does no I/O itself: event counters and processing progress come from
callables too (the service reads them from SQLite, a worker from its tables).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from alerts.lifecycle import Alert
from alerts.monitor import Monitor
from budget.calendar import CHINA_TIME, from_day, time_progress_for_year, year_of
from budget.ledger import ProjectState, counts_in_rollup, region_totals
from connectors.wall_clock import today_day

FEN_PER_YUAN = 100.0
# Business dates are Chinese calendar days: midnight in UTC+8.
OUTCOMES = ("applied", "duplicate", "rejected")

# name -> (type, help, labels); the README table and the dashboards test use this.
_DF = ("department", "fund_source")
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "budget_allocated_yuan": ("gauge", "Budget (approved + adjustments) of the year, yuan", _DF),
    "budget_paid_yuan": ("gauge", "Paid (payments - reversals) in the year, yuan", _DF),
    "budget_projects": ("gauge", "Registered projects in the fiscal year", _DF),
    "budget_region_execution_ratio": ("gauge", "Region execution rate, paid / budget", ()),
    "budget_department_execution_ratio": (
        "gauge", "Department execution rate, paid / budget", ("department",),
    ),
    "budget_fund_source_execution_ratio": (
        "gauge", "Execution rate of one fund source, paid / budget", ("fund_source",),
    ),
    "budget_time_progress_ratio": ("gauge", "Time progress of the fiscal year at the clock", ()),
    "budget_department_info": (
        "info", "Department names (join on department)", ("department", "department_name"),
    ),
    "budget_alerts_firing": (
        "gauge", "Active alerts by rule, severity and department",
        ("rule", "severity", "department"),
    ),
    "budget_project_execution_ratio": (
        "gauge", "Execution rate of a project with an active alert", ("project", "department"),
    ),
    "budget_alerts_disposition_overdue": (
        "gauge", "Active alerts whose department missed the disposition deadline (escalated)",
        ("department",),
    ),
    "budget_events_total": ("counter", "Input events by outcome", ("outcome",)),
    "budget_processing_lag_days": (
        "gauge", "Latest business date received minus the clock, days", (),
    ),
    "budget_processing_lag_seconds": (
        "gauge", "Seconds the oldest unprocessed input has waited (0 when caught up)", (),
    ),
    "budget_processing_failing": (
        "gauge", "1 when the last run failed: events stay pending and the figures may be absent", (),
    ),
    "budget_clock_timestamp_seconds": (
        "gauge", "The last closed business day (00:00 UTC+8) as a Unix time", (),
    ),
}


@dataclass(frozen=True, slots=True)
class Progress:
    """How far processing is behind its input, as the runtime sees it."""

    latest_event_day: int | None = None  # latest business date received (date ordinal)
    waiting_seconds: float = 0.0  # wall time the oldest unprocessed input has waited
    failing: bool = False  # the last run failed (its events stay pending)


MonitorSource = Callable[[], Monitor | None]
CounterSource = Callable[[], Mapping[str, int]]
ProgressSource = Callable[[], Progress]


def day_timestamp(day: int) -> float:
    """Unix time of 00:00 (UTC+8) of a business day given as a date ordinal."""
    return dt.datetime.combine(from_day(day), dt.time(), CHINA_TIME).timestamp()


def _ratio(paid: int, budget: int) -> float | None:
    return paid / budget if budget > 0 else None


class BudgetCollector(Collector):
    """Computes every ``budget_*`` metric from a monitor when scraped."""

    def __init__(
        self,
        monitor: MonitorSource,
        *,
        counters: CounterSource | None = None,
        progress: ProgressSource | None = None,
    ) -> None:
        self._monitor = monitor
        self._counters = counters
        self._progress = progress

    def describe(self) -> Iterator[Metric]:
        # Describing without collecting keeps registration free of side effects.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        yield from self._events()
        monitor = self._monitor()
        clock = monitor.clock if monitor is not None else None
        yield from self._lag(clock)
        if monitor is None or clock is None:
            return
        yield from self._business(monitor, clock)

    # -- families ----------------------------------------------------------
    def _events(self) -> Iterator[Metric]:
        if self._counters is None:
            return
        found = self._counters()
        family = CounterMetricFamily(
            "budget_events", METRICS["budget_events_total"][1], labels=["outcome"]
        )
        for outcome in OUTCOMES:
            family.add_metric([outcome], float(found.get(f"events_{outcome}", 0)))
        yield family

    def _lag(self, clock: int | None) -> Iterator[Metric]:
        if self._progress is None:
            return
        progress = self._progress()
        latest = progress.latest_event_day
        if latest is None:
            yield _gauge("budget_processing_lag_days", 0.0)
        elif clock is not None:  # before the first run there is no clock to measure from
            yield _gauge("budget_processing_lag_days", float(max(0, latest - clock)))
        yield _gauge("budget_processing_lag_seconds", max(0.0, progress.waiting_seconds))
        # Exported whatever the engine holds: a store it cannot load (another profile)
        # leaves no budget figures to show, and this is what says why.
        yield _gauge("budget_processing_failing", 1.0 if progress.failing else 0.0)

    def _business(self, monitor: Monitor, clock: int) -> Iterator[Metric]:
        year = year_of(clock)
        ledger = monitor.ledger
        yield _gauge("budget_clock_timestamp_seconds", day_timestamp(clock))
        yield _gauge("budget_time_progress_ratio", time_progress_for_year(clock, year))

        cells: Cells = {}
        names: dict[str, str] = {}
        add_cells(cells, names, ledger.projects.values(), year)
        allocated = _family("budget_allocated_yuan")
        paid = _family("budget_paid_yuan")
        projects = _family("budget_projects")
        by_fund: dict[str, list[int]] = {}
        for (department, fund), (budget_fen, paid_fen, count) in sorted(cells.items()):
            allocated.add_metric([department, fund], budget_fen / FEN_PER_YUAN)
            paid.add_metric([department, fund], paid_fen / FEN_PER_YUAN)
            projects.add_metric([department, fund], float(count))
            total = by_fund.setdefault(fund, [0, 0])
            total[0] += budget_fen
            total[1] += paid_fen
        yield allocated
        yield paid
        yield projects

        region_budget, region_paid = region_totals(ledger, year)
        region = _ratio(region_paid, region_budget)
        if region is not None:
            yield _gauge("budget_region_execution_ratio", region)

        departments = _family("budget_department_execution_ratio")
        info = InfoMetricFamily(
            "budget_department", METRICS["budget_department_info"][1], labels=["department"]
        )
        named: set[str] = set()
        for (fy, department), totals in sorted(ledger.departments.items()):
            if fy != year or totals.projects <= 0:
                continue
            rate = totals.execution_rate
            if rate is not None:
                departments.add_metric([department], rate)
            name = totals.department_name or names.get(department) or department
            info.add_metric([department], {"department_name": name})
            named.add(department)
        for department, name in sorted(alert_department_names(monitor.book.active()).items()):
            if department not in named:
                info.add_metric([department], {"department_name": name})
        yield departments
        yield info

        funds = _family("budget_fund_source_execution_ratio")
        for fund, (budget_fen, paid_fen) in sorted(by_fund.items()):
            rate = _ratio(paid_fen, budget_fen)
            if rate is not None:
                funds.add_metric([fund], rate)
        yield funds

        firing: dict[tuple[str, str, str], int] = {}
        in_alert: dict[str, str] = {}
        overdue: dict[str, int] = {}
        for alert in monitor.book.active():
            key3 = (alert.rule, alert.severity, alert.department_id)
            firing[key3] = firing.get(key3, 0) + 1
            late = alert.disposition is not None and alert.disposition.get("status") == "overdue"
            overdue[alert.department_id] = overdue.get(alert.department_id, 0) + late
            if alert.subject_type == "project":
                in_alert[alert.subject_id] = alert.department_id
        alerts = _family("budget_alerts_firing")
        for (rule, severity, department), count in sorted(firing.items()):
            alerts.add_metric([rule, severity, department], float(count))
        yield alerts
        # Per department with an active alert (0 where the disposition loop does not run).
        late_family = _family("budget_alerts_disposition_overdue")
        for department, count in sorted(overdue.items()):
            late_family.add_metric([department], float(count))
        yield late_family

        per_project = _family("budget_project_execution_ratio")
        for project_id, department in sorted(in_alert.items()):
            alerted = ledger.projects.get(project_id)
            rate = alerted.execution_rate if alerted is not None else None
            if rate is not None:
                per_project.add_metric([project_id, department], rate)
        yield per_project


Cells = dict[tuple[str, str], list[int]]  # (department, fund source) -> [budget, paid, projects]


def add_cells(cells: Cells, names: dict[str, str], projects: Iterable[ProjectState], year: int) -> None:
    """Add budget, paid and a count by (department, fund source) over the projects of
    ``year`` that count in the rollups (department_overall lines would count the same
    money twice); remember department names as seen."""
    for state in projects:
        if state.fiscal_year != year or not counts_in_rollup(state):
            continue
        department = state.department_id or ""
        key = (department, state.fund_source or "")
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = [0, 0, 0]
        cell[0] += state.budget
        cell[1] += state.paid
        cell[2] += 1
        if state.department_name:
            names[department] = state.department_name


def alert_department_names(alerts: Iterable[Alert]) -> dict[str, str]:
    """The name of every department with an active alert, as its latest alert carries it
    (alerts follow their subject's renamed department).

    The dashboards join the alert series on ``…department_info``: a department the
    year's rollups do not name — last year's alerts still firing after the year rolls
    over, a department with only department_overall lines — must be named too, or its
    alerts drop out of those panels."""
    latest: dict[str, tuple[tuple[int, int, str], str]] = {}
    for alert in alerts:
        rank = (alert.fiscal_year, alert.updated_on, alert.alert_id)
        seen = latest.get(alert.department_id)
        if seen is None or rank > seen[0]:
            latest[alert.department_id] = (rank, alert.department_name or alert.department_id)
    return {department: name for department, (_, name) in latest.items()}


class WorkerFiguresCollector(Collector):
    """A Faust worker's share of the budget figures, from the monitors of the partitions
    it holds now (a partition handed to another worker leaves with its series).

    Only additive series are exported (``budget_stream_allocated_yuan``, ``…_paid_yuan``,
    ``…_projects`` by department and fund source), plus department names, the time
    progress at the worker's clock and the execution rate of projects with an active
    alert. Departments are named when they have projects of the year or an active
    alert. Ratios of sums cannot be added across workers, so Prometheus recording
    rules (deploy/prometheus/rules.yml, group budgetwatch-figures) sum the shares and
    divide, giving the ``budget_*`` series the dashboards read."""

    def __init__(self, monitors: Callable[[], Iterable[Monitor]]) -> None:
        self._monitors = monitors

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        cells: Cells = {}
        names: dict[str, str] = {}
        alerted: dict[tuple[str, str], float] = {}
        firing: list[Alert] = []
        latest: int | None = None
        for monitor in self._monitors():
            clock = monitor.clock
            if clock is None:
                continue
            latest = clock if latest is None else max(latest, clock)
            projects = monitor.ledger.projects
            add_cells(cells, names, projects.values(), year_of(clock))
            for alert in monitor.book.active():
                firing.append(alert)
                state = projects.get(alert.subject_id) if alert.subject_type == "project" else None
                rate = state.execution_rate if state is not None else None
                if rate is not None:
                    alerted[(alert.subject_id, alert.department_id)] = rate
        families = {
            name: GaugeMetricFamily(f"budget_stream_{name}", help_text, labels=list(_DF))
            for name, help_text in WORKER_SHARES.items()
        }
        for (department, fund), (budget_fen, paid_fen, count) in sorted(cells.items()):
            families["allocated_yuan"].add_metric([department, fund], budget_fen / FEN_PER_YUAN)
            families["paid_yuan"].add_metric([department, fund], paid_fen / FEN_PER_YUAN)
            families["projects"].add_metric([department, fund], float(count))
        yield from families.values()
        info = GaugeMetricFamily(
            "budget_stream_department_info", "Department names of this worker's projects and active alerts",
            labels=["department", "department_name"],
        )
        for department, name in alert_department_names(firing).items():
            names.setdefault(department, name)
        for department, name in sorted(names.items()):
            info.add_metric([department, name], 1.0)
        yield info
        rates = GaugeMetricFamily(
            "budget_stream_project_execution_ratio",
            "Execution rate of a project of this worker with an active alert",
            labels=["project", "department"],
        )
        for (project, department), rate in sorted(alerted.items()):
            rates.add_metric([project, department], rate)
        yield rates
        if latest is not None:
            yield GaugeMetricFamily(
                "budget_stream_time_progress_ratio",
                "Time progress of the fiscal year at this worker's latest partition clock",
                value=time_progress_for_year(latest, year_of(latest)),
            )


WORKER_SHARES = {
    "allocated_yuan": "This worker's share of the budget of the year, yuan",
    "paid_yuan": "This worker's share of the paid amount of the year, yuan",
    "projects": "This worker's registered projects in the fiscal year",
}


def _family(name: str) -> GaugeMetricFamily:
    _, help_text, labels = METRICS[name]
    return GaugeMetricFamily(name, help_text, labels=list(labels))


def _gauge(name: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, METRICS[name][1], value=value)


def register(
    registry: CollectorRegistry,
    monitor: MonitorSource,
    *,
    counters: CounterSource | None = None,
    progress: ProgressSource | None = None,
) -> BudgetCollector:
    """Create the collector and register it on ``registry`` (never the global one)."""
    collector = BudgetCollector(monitor, counters=counters, progress=progress)
    registry.register(collector)
    return collector


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    """How far a worker has read one partition it holds.

    ``next_offset`` is the next message it will handle (``None`` while unknown);
    ``position_at`` the broker timestamp of the last message handled (Unix seconds) or,
    before any since the partition was assigned, the time of the assignment — the next
    message has waited no longer than since then, once it exists; ``highwater`` the
    partition's end offset (the next offset the broker will write), ``None`` while the
    consumer does not know it; ``received_day`` the latest business day accepted on a
    ``budget-events`` partition."""

    topic: str
    partition: int
    next_offset: int | None
    position_at: float | None
    highwater: int | None = None
    received_day: int | None = None


class StreamProgressCollector(Collector):
    """A Faust worker's reading progress, per partition it holds, at scrape time.

    The worker exports facts, not ages: how many messages wait on the broker for it
    (``budget_stream_consumer_lag_messages``), the timestamp of its position and the
    latest business date received, never after ``today`` (as ``serve`` counts it: an event
    dated later waits for its day and is not processing lag). Prometheus turns them into
    the ``budget_processing_lag_*`` series that ``budgetwatch serve`` exports itself
    (deploy/prometheus/rules.yml, group budgetwatch-lag), with its own clock. Anything
    unknown is left out, never exported as 0."""

    def __init__(
        self,
        progress: Callable[[], Iterable[PartitionProgress]],
        today: Callable[[], int] | None = None,
    ) -> None:
        self._progress = progress
        self._today = today or today_day  # the date the wall-clock worker ticks

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        lag, position, received = (
            GaugeMetricFamily(name, help_text, labels=list(labels))
            for name, (help_text, labels) in STREAM_PROGRESS.items()
        )
        today = self._today()
        for item in sorted(self._progress(), key=lambda p: (p.topic, p.partition)):
            labels = [item.topic, str(item.partition)]
            # aiokafka gives a record without a timestamp (pre-0.10 formats) as -1 ms
            if item.position_at is not None and item.position_at > 0:
                position.add_metric(labels, item.position_at)
            if item.highwater is not None and item.next_offset is not None:
                lag.add_metric(labels, float(max(0, item.highwater - item.next_offset)))
            if item.received_day is not None:
                day = min(item.received_day, today)
                received.add_metric([str(item.partition)], utc_midnight_seconds(day))
        yield from (lag, position, received)


# name -> (help, labels) of StreamProgressCollector's families, in the order it yields them
STREAM_PROGRESS: dict[str, tuple[str, tuple[str, ...]]] = {
    "budget_stream_consumer_lag_messages": (
        "Messages on the broker this worker has not handled yet", ("topic", "partition"),
    ),
    "budget_stream_position_timestamp_seconds": (
        "Broker timestamp of the last message handled (before any since the partition was "
        "assigned: the time of the assignment), Unix seconds", ("topic", "partition"),
    ),
    "budget_stream_received_timestamp_seconds": (
        "Latest business date accepted on a partition, not after today (midnight UTC, Unix seconds)",
        ("partition",),
    ),
}


def utc_midnight_seconds(day: int | None) -> float:
    """A business day as the Unix time of its midnight UTC (0 for none): the stream's
    day gauges, which Prometheus subtracts from one another."""
    if day is None:
        return 0.0
    return dt.datetime.combine(from_day(day), dt.time(), tzinfo=dt.UTC).timestamp()
