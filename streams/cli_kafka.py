"""`budgetwatch publish`, `worker` and `notifier`: the distributed runtime's commands."""

from __future__ import annotations

import datetime as dt
import socket
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape

from budget.events import record_to_json_dict
from connectors.files import read_events
from connectors.parsed import Accepted, Parsed, Rejected
from connectors.tabular import UNIT_CHOICES
from streams import render
from streams.cli import (
    DbOption,
    _check_readable,
    _count_lines,
    app,
    emit_json,
    parse_as_of,
    progress_bar,
    settings,
)
from streams.errors import BudgetwatchError
from streams.faust_state import ALERTS_TOPIC, CLOCK_KEY, EVENTS_TOPIC, tick_value
from streams.ingest import IngestCounts
from streams.settings import Settings, bootstrap_servers

BootstrapOption = Annotated[
    str | None,
    typer.Option("--bootstrap", help="Kafka bootstrap HOST:PORT [env BUDGETWATCH_KAFKA_BOOTSTRAP]"),
]


class PublishError(BudgetwatchError):
    """Kafka refused or could not be reached while publishing."""


def _producer(bootstrap: str) -> Any:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        return KafkaProducer(
            bootstrap_servers=bootstrap_servers(bootstrap),
            acks="all",
            enable_idempotence=True,
            linger_ms=20,
            batch_size=256 * 1024,
            key_serializer=lambda k: k.encode("utf-8"),
            value_serializer=None,
        )
    except KafkaError as err:
        raise PublishError(
            f"无法连接 Kafka {bootstrap}（{err}）：请检查 --bootstrap 或 BUDGETWATCH_KAFKA_BOOTSTRAP，"
            "以及 broker 是否已启动（`docker compose ps kafka`）（cannot reach Kafka）"
        ) from None


class SendFailures:
    """Counts sends the broker refused or never acknowledged (kafka-python reports them on
    each send's future, not by raising from flush)."""

    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None

    def __call__(self, error: BaseException) -> None:
        self.count += 1
        if self.first is None:
            self.first = f"{type(error).__name__}: {error}"


def publish_parsed(
    producer: Any, parsed: Iterable[Parsed], counts: IngestCounts, *, keep_reasons: int = 100,
    failures: SendFailures | None = None,
) -> None:
    """Send accepted events keyed by project_id; count rejections exactly as ingest does.

    ``applied`` counts events handed to Kafka (``failures``, when given, counts those the
    broker then refused); duplicates are the workers' business (by event_id), so the
    publisher counts none.
    """
    for item in parsed:
        counts.read += 1
        if isinstance(item, Accepted):
            record = item.record
            sent = producer.send(
                EVENTS_TOPIC, key=record.project_id, value=orjson.dumps(record_to_json_dict(record))
            )
            if failures is not None:
                sent.add_errback(failures)
            counts.applied += 1
        else:
            assert isinstance(item, Rejected)
            counts.rejected += 1
            if len(counts.reasons) < keep_reasons:
                counts.reasons.append({"source": item.source, "reason": item.reason})


class TickFailures:
    """The partitions whose clock tick the broker refused or never acknowledged, with the
    first error of each: a partition without its tick keeps its clock (and its department
    roll-ups wait for it), so the tick must be sent again."""

    def __init__(self) -> None:
        self.partitions: dict[int, str] = {}

    def errback(self, partition: int) -> Callable[[BaseException], None]:
        def failed(error: BaseException) -> None:
            self.partitions.setdefault(partition, f"{type(error).__name__}: {error}")

        return failed

    def message(self, as_of: dt.date) -> str:
        names = ", ".join(str(p) for p in sorted(self.partitions))
        first = self.partitions[min(self.partitions)]
        return (
            f"时钟推进到 {as_of.isoformat()} 未被 Kafka 确认：{EVENTS_TOPIC} 分区 {names}"
            f"（首个错误：{first}），这些分区的时钟没有前进；请排除故障后用同一 --as-of 重新发布——"
            f"重复的时钟推进和按 event_id 去重的事件都不会重复计数"
            f"（clock tick refused for {EVENTS_TOPIC} partitions {names}）"
        )


def publish_ticks(producer: Any, as_of: dt.date, failures: TickFailures | None = None) -> int:
    """One clock tick on every partition of budget-events; returns how many were handed
    to the producer (``failures``, when given, collects those the broker then refused)."""
    partitions = sorted(producer.partitions_for(EVENTS_TOPIC) or ())
    if not partitions:
        raise PublishError(
            f"主题 {EVENTS_TOPIC} 还没有分区：请先启动一个 worker（由它创建）"
            f"（topic {EVENTS_TOPIC} has no partitions yet: start a worker first）"
        )
    for partition in partitions:
        sent = producer.send(EVENTS_TOPIC, key=CLOCK_KEY, value=tick_value(as_of), partition=partition)
        if failures is not None:
            sent.add_errback(failures.errback(partition))
    return len(partitions)


@app.command("publish")
def publish_cmd(
    files: Annotated[list[Path], typer.Argument(help="JSONL, CSV or XLSX files")],
    bootstrap: BootstrapOption = None,
    layout: Annotated[str, typer.Option(help="auto | projects | payments (CSV/XLSX)")] = "auto",
    unit: Annotated[
        str, typer.Option(help="auto | yuan | qian | wan | yi (元/千元/万元/亿元): unit of amounts in CSV/XLSX")
    ] = "auto",
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", help="then tick the clock of every partition to this business date"
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="machine-readable JSON on stdout")
    ] = False,
    allow_future: Annotated[bool, typer.Option(
        "--allow-future", help="let --as-of pass today (the workers' clocks cannot come back)")] = False,
) -> None:
    """Publish events to Kafka topic budget-events (key = project_id), parsed as `ingest` does."""
    if layout not in ("auto", "projects", "payments"):
        raise typer.BadParameter("应为 auto、projects 或 payments（--layout must be auto, projects or payments）")
    if unit not in UNIT_CHOICES:
        raise typer.BadParameter("应为 auto、yuan、qian、wan 或 yi（--unit must be auto, yuan, qian, wan or yi）")
    tick_day = parse_as_of(as_of, allow_future=allow_future)
    server = _kafka_settings(bootstrap, None).kafka_bootstrap
    for path in files:  # every file readable before anything is sent, as ingest does
        _check_readable(path, files, layout=layout, unit=unit)  # type: ignore[arg-type]
    producer = _producer(server)
    total = IngestCounts()
    failures = SendFailures()
    tick_failures = TickFailures()
    try:
        with progress_bar() as bar:
            for path in files:
                task = bar.add_task(f"发布 {escape(path.name)}", total=_count_lines(path))
                counts = IngestCounts()
                parsed = read_events(path, layout=layout, unit=unit)  # type: ignore[arg-type]
                for chunk in _chunks(parsed, 5000):
                    publish_parsed(producer, chunk, counts, failures=failures)
                    bar.update(task, completed=counts.read)
                bar.update(task, completed=counts.read, total=counts.read)
                total.add(counts)
        ticks = (
            publish_ticks(producer, dt.date.fromordinal(tick_day), tick_failures)
            if tick_day is not None else 0
        )
        producer.flush()
    finally:
        producer.close()
    problems: list[str] = []
    if failures.count:
        problems.append(
            f"{failures.count} 条事件未被 Kafka 确认（首个错误：{failures.first}），其余 "
            f"{total.applied - failures.count} 条已发布；请排除故障后重新发布这些文件——工作进程按 "
            f"event_id 去重，重复发布不会重复计数（{failures.count} sends failed）"
        )
    if tick_failures.partitions:
        assert tick_day is not None
        problems.append(tick_failures.message(dt.date.fromordinal(tick_day)))
    if problems:
        raise PublishError("；".join(problems))
    if as_json:
        emit_json({**total.to_json(), "topic": EVENTS_TOPIC, "bootstrap": server, "ticks": ticks})
        return
    out = render.console()
    out.print(render.ingest_table(total))
    out.print(
        f"read={total.read} accepted={total.accepted} "
        f"duplicate={total.duplicates} rejected={total.rejected}"
    )
    if total.rejected:
        for row in total.reasons[:20]:
            out.print(f"[yellow]{escape(row['source'])}[/yellow] {escape(row['reason'])}", highlight=False)
        out.print(f"[yellow]{total.rejected} 条记录被拒收，未发布到 {EVENTS_TOPIC}[/yellow]")
    if ticks:
        out.print(f"clock → {as_of} on {ticks} partitions")


def _chunks(items: Iterable[Parsed], size: int) -> Iterable[list[Parsed]]:
    chunk: list[Parsed] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@app.command("worker")
def worker_cmd(
    bootstrap: BootstrapOption = None,
    web_port: Annotated[
        int | None, typer.Option(help="web server port (/metrics) [env BUDGETWATCH_WEB_PORT]")
    ] = None,
    loglevel: Annotated[str, typer.Option(help="log level")] = "info",
) -> None:
    """Run a Faust worker (budget-events → budget-alerts, DLQ); /metrics on the web port."""
    from streams.faust_app import BudgetApp

    s = _kafka_settings(bootstrap, web_port)
    bapp = BudgetApp(s)
    render.console().print(
        f"worker: kafka={s.kafka_bootstrap} partitions={s.partitions} store={s.store} "
        f"profile={s.profile} web=http://{s.web_bind}:{s.web_port}/metrics clock={s.clock}",
        highlight=False,
    )
    wait_for_broker(s.kafka_bootstrap)  # after every local check: a bad setting is said at once
    _run_worker(bapp.app, loglevel)


def _kafka_settings(bootstrap: str | None, web_port: int | None) -> Settings:
    """The settings with the Kafka commands' --bootstrap / --web-port over the environment's."""
    overrides: dict[str, Any] = {}
    if bootstrap is not None:
        overrides["kafka_bootstrap"] = bootstrap
    if web_port is not None:
        overrides["web_port"] = web_port
    # Validated like the environment's values (model_copy would not check them).
    return Settings.model_validate({**settings().model_dump(), **overrides})


BROKER_WAIT_SECONDS = 30.0


def wait_for_broker(bootstrap: str, *, seconds: float = BROKER_WAIT_SECONDS) -> None:
    """Return once one bootstrap server accepts a TCP connection; after ``seconds`` of
    refusals, a one-line error instead of the Faust traceback a worker dies with (a
    broker still starting, e.g. beside `docker compose up`, gets that long)."""
    deadline = time.monotonic() + seconds
    servers = bootstrap_servers(bootstrap)
    last = ""
    while True:
        for server in servers:
            host, _, port = server.rpartition(":")
            try:
                socket.create_connection((host.strip("[]"), int(port)), timeout=2.0).close()
                return
            except OSError as err:
                last = f"{server}: {err.strerror or err}"
        if time.monotonic() >= deadline:
            raise PublishError(
                f"无法连接 Kafka {bootstrap}（{last}，已等待 {seconds:g} 秒）：请检查 --bootstrap 或 "
                "BUDGETWATCH_KAFKA_BOOTSTRAP，以及 broker 是否已启动（`docker compose ps kafka`）"
                "（cannot reach Kafka）"
            )
        time.sleep(1.0)


def _run_worker(faust_app: Any, loglevel: str) -> None:
    from faust.worker import Worker

    worker = Worker(faust_app, loglevel=loglevel)
    sys.argv = sys.argv[:1]  # Faust's own command line must not see ours
    worker.execute_from_commandline()


@app.command("notifier")
def notifier_cmd(
    bootstrap: BootstrapOption = None,
    db: DbOption = None,
    web_port: Annotated[
        int | None, typer.Option(help="web server port (/metrics) [env BUDGETWATCH_WEB_PORT]")
    ] = None,
    loglevel: Annotated[str, typer.Option(help="log level")] = "info",
) -> None:
    """Consume budget-alerts into a store of its own and notify departments (outbox
    dispatcher, Alertmanager push, Grafana annotations); /metrics on the web port."""
    from connectors.directory import DirectoryError
    from connectors.grafana import GrafanaAnnotator
    from streams.cli_service import ServiceSettings
    from streams.faust_notifier import NotifierApp, NotifierHost
    from streams.outbox import Dispatcher, NotifyConfigError
    from streams.service import GrafanaAnnotations
    from streams.store import Store

    s = _kafka_settings(bootstrap, web_port)
    extra = ServiceSettings()
    store = Store(db or s.db)
    try:
        dispatcher: Dispatcher | None = Dispatcher.from_settings(store, s)
    except DirectoryError as err:
        store.close()
        raise NotifyConfigError(str(err)) from None
    if dispatcher is not None and not dispatcher.enabled:
        dispatcher.log.close()
        dispatcher = None
    grafana = None
    if extra.grafana_url:
        annotator = GrafanaAnnotator.from_url(extra.grafana_url, extra.grafana_token or "")

        def grafana(host: NotifierHost) -> GrafanaAnnotations:
            return GrafanaAnnotations(host, annotator)

    notifier = NotifierApp(s, store, dispatcher=dispatcher, grafana=grafana)
    channels = [
        name for name, on in (
            ("departments", s.departments), ("alertmanager", s.alertmanager_url),
            ("grafana", extra.grafana_url),
        ) if on
    ]
    render.console().print(
        f"notifier: kafka={s.kafka_bootstrap} {ALERTS_TOPIC} → {store.path}; "
        f"notify: {', '.join(channels) or '（未配置：只保存预警，`budgetwatch deliver` 可稍后投递）'}; "
        f"web=http://{s.web_bind}:{s.web_port}/metrics",
        highlight=False,
    )
    try:
        wait_for_broker(s.kafka_bootstrap)  # after the directory and store are checked
        _run_worker(notifier.app, loglevel)
    finally:
        notifier.close()
        store.close()
