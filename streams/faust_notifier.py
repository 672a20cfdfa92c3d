"""The notifier: ``budget-alerts`` → a store of its own → departments, Alertmanager, Grafana.

The Faust workers decide; the notifier tells people. One process (its own consumer
group, ``budgetwatch-notifier``) keeps every transition in a SQLite store with the
embedded engine's tables (:mod:`streams.alert_sink`) and runs on it what ``serve``
runs on an embedded store: the outbox dispatcher (webhook, DingTalk, WeCom, email;
Alertmanager push) and, with ``GRAFANA_URL``, Grafana annotations. ``/metrics``
exports the active alerts (``budget_alerts_firing``), the delivery figures and what
was received.

A message is stored before it is acknowledged (``processing_guarantee=
"at_least_once"``) and kept once by its digest, so a restart neither loses a
transition nor sends it twice; a store that cannot be written holds the line (the
agent retries with backoff) instead of acknowledging what it did not keep.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import faust
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.alert_sink import OUTCOMES, STORED, AlertSink, Received
from streams.errors import StoreError
from streams.faust_app import faust_app
from streams.faust_state import ALERTS_TOPIC
from streams.outbox import Dispatcher, register_delivery_metrics
from streams.service import GrafanaAnnotations
from streams.settings import Settings
from streams.store import Store

log = logging.getLogger("budgetwatch.notifier")
T = TypeVar("T")
STORE_RETRY_FIRST, STORE_RETRY_MAX = 1.0, 60.0  # seconds between attempts to store a message
# Notifications wait while the consumer is behind the topic's end, then until messages
# have stopped coming for SETTLE_SECONDS: the business clock (the latest date stored)
# then stands where the stream is, not somewhere in its backlog. Caught up, a steady live
# trickle (messages produced within MAX_HOLD_SECONDS) holds notifications at most that long.
SETTLE_SECONDS, MAX_HOLD_SECONDS = 2.0, 60.0


class FiringAlerts(Collector):
    """``budget_alerts_firing`` from the store's alerts table, read at scrape time.
    (Department names, which the dashboards join on, come from the workers.)"""

    def __init__(self, db_path: str) -> None:
        self.path = db_path

    def collect(self) -> Iterator[Metric]:
        db = sqlite3.connect(self.path, timeout=5)
        try:
            rows = db.execute(
                "SELECT json_extract(data, '$.rule'), json_extract(data, '$.severity'), department_id,"
                " COUNT(*) FROM alerts WHERE status = 'firing' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            ).fetchall()
        finally:
            db.close()
        family = GaugeMetricFamily(
            "budget_alerts_firing", "Active alerts by rule, severity and department",
            labels=["rule", "severity", "department"],
        )
        for rule, severity, department, count in rows:
            family.add_metric([str(rule), str(severity), str(department)], float(count))
        yield family


class NotifierHost:
    """What :class:`streams.service.GrafanaAnnotations` needs of a service: a store on a
    thread of its own (not the agent's connection, whose transactions it must not
    join) and a wake-up after new transitions."""

    def __init__(self, path: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notifier-db")
        self.store: Store = self._executor.submit(Store, path).result()
        self._subscribers: list[asyncio.Event] = []

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args))

    def subscribe(self) -> asyncio.Event:
        event = asyncio.Event()
        self._subscribers.append(event)
        return event

    def notify(self) -> None:
        for event in self._subscribers:
            event.set()

    def close(self) -> None:
        self._executor.submit(self.store.close).result()
        self._executor.shutdown(wait=True)


Worker = GrafanaAnnotations | Dispatcher


class NotifierApp:
    """The Faust app of ``budgetwatch notifier``, built from :class:`Settings`."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        dispatcher: Dispatcher | None = None,
        grafana: Callable[[NotifierHost], GrafanaAnnotations] | None = None,
        app_id: str = "budgetwatch-notifier",
        registry: CollectorRegistry | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        highwater: Callable[[Any], int | None] | None = None,
    ) -> None:
        self.settings = settings
        self.sink = AlertSink(store)
        self.store = store
        self.sleep = sleep
        self.monotonic = monotonic
        self.wall = wall
        self._stored_at: float | None = None  # monotonic time of the latest stored message
        self._holding_since: float | None = None  # of the first stored since the last release
        self._produced_at: float | None = None  # Kafka timestamp of the latest stored message
        # The end of a topic partition (its next offset), None when not known yet.
        self.highwater = highwater or self._consumer_highwater
        self._behind: dict[int, bool] = {}  # partition -> messages after the last one read
        self.app = faust_app(app_id, settings, store="memory://")  # no tables: SQLite is the state
        self.alerts_topic = self.app.topic(
            ALERTS_TOPIC, partitions=settings.partitions, key_serializer="raw", value_serializer="raw"
        )
        self.registry = registry or CollectorRegistry()
        self.received = Counter(
            "budget_notifier_messages_total",
            "budget-alerts messages by outcome (stored, duplicate, rejected)",
            ["outcome"], registry=self.registry,
        )
        self.store_retries = Counter(
            "budget_notifier_store_retries_total",
            "Failed attempts to store a budget-alerts message; the agent waits and retries",
            registry=self.registry,
        )
        for outcome in OUTCOMES:
            self.received.labels(outcome)
        Gauge(
            "budget_notifier_holding",
            "1 while new notifications wait for the notifier to catch up with budget-alerts",
            registry=self.registry,
        ).set_function(lambda: float(self.holding()))
        self.registry.register(FiringAlerts(store.path))
        register_delivery_metrics(self.registry, store.path,
                                  routed=dispatcher is not None and dispatcher.directory is not None)
        self.dispatcher = dispatcher
        self.host: NotifierHost | None = NotifierHost(store.path) if grafana is not None else None
        self.workers: list[Worker] = []
        if dispatcher is not None:
            dispatcher.wake = asyncio.Event()
            dispatcher.hold = self.catching_up
            self.workers.append(dispatcher)
        if grafana is not None and self.host is not None:
            self.workers.append(grafana(self.host))
        self.agent = self.app.agent(self.alerts_topic, name="budget-alerts-notifier", concurrency=1)(
            self._alerts
        )
        self.app.page("/metrics")(self._metrics_view)
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        for worker in self.workers:
            self.app.task(partial(self._run_worker, worker))

    async def _alerts(self, stream: faust.StreamT[bytes]) -> AsyncIterator[str]:
        async for event in stream.events():
            message = event.message
            source = f"{ALERTS_TOPIC}:{message.partition}:{message.offset}"
            received = await self._store(message.value, source)
            self.received.labels(received.outcome).inc()
            end = self.highwater(message.tp)
            if end is not None:
                self._behind[message.partition] = message.offset + 1 < end
            if received.outcome == STORED:
                now = self.monotonic()
                self._stored_at = now
                if self._holding_since is None:
                    self._holding_since = now
                self._produced_at = message.timestamp
                self._wake()
            yield received.outcome

    def catching_up(self) -> bool:
        """Whether notifications should wait (the dispatcher's ``hold``).

        Each message moves the store's business clock to its date, and the notification
        horizon judges by that clock: fanned out while a backlog is still being read (a
        new notifier on a topic kept for a year, a year published with one closing
        tick), every old transition would look current. So new transitions wait while
        the consumer is behind the end of a partition it reads, and while messages keep
        coming; they go once it has caught up and the stream has been quiet for
        ``SETTLE_SECONDS`` — or, caught up, after ``MAX_HOLD_SECONDS`` when the latest
        message is live (produced that recently): a steady live trickle is not held for
        ever. A release by ``MAX_HOLD_SECONDS`` starts the next such window."""
        held, self._holding_since = self._hold()
        return held

    def holding(self) -> bool:
        """What :meth:`catching_up` would answer, without moving its window (a scrape
        must not take the dispatcher's release)."""
        return self._hold()[0]

    def _hold(self) -> tuple[bool, float | None]:
        """(hold now?, the start of the hold window after this answer)."""
        if any(self._behind.values()):
            return True, self._holding_since
        if self._stored_at is None:
            return False, self._holding_since
        now = self.monotonic()
        if now - self._stored_at >= SETTLE_SECONDS:
            return False, None
        assert self._holding_since is not None
        live = self._produced_at is not None and self.wall() - self._produced_at <= MAX_HOLD_SECONDS
        if live and now - self._holding_since >= MAX_HOLD_SECONDS:
            return False, now
        return True, self._holding_since

    async def _store(self, value: bytes | None, source: str) -> Received:
        delay = STORE_RETRY_FIRST
        while True:
            try:
                return self._receive(value, source)
            except (sqlite3.Error, StoreError) as err:
                self.store_retries.inc()
                log.error("cannot store %s (%s); retrying in %.0f s", source, err, delay)
                await self.sleep(delay)
                delay = min(delay * 2, STORE_RETRY_MAX)

    def _receive(self, value: bytes | None, source: str) -> Received:
        try:
            return self.sink.receive(value, source=source)
        except (sqlite3.Error, StoreError):
            raise
        except Exception as err:
            # A message this code cannot handle (a bug, a value no test foresaw): kept with
            # its offset and reason (retried like any write), never acknowledged untraced.
            log.exception("%s: cannot store the message; kept in rejected", source)
            reason = f"{type(err).__name__}: {err} (a notifier error: please report it)"
            return self.sink.reject(source, reason, value or b"")

    async def _on_revoked(self, sender: Any, revoked: Iterable[Any], **_: Any) -> None:
        # A partition read elsewhere now is no backlog of ours: it must not hold for ever.
        for tp in revoked:
            if tp.topic == ALERTS_TOPIC:
                self._behind.pop(tp.partition, None)

    def _consumer_highwater(self, tp: Any) -> int | None:
        try:
            end = self.app.consumer.highwater(tp)
        except Exception:  # no consumer yet (starting, tests): not known
            return None
        return int(end) if end is not None else None

    def _wake(self) -> None:
        if self.dispatcher is not None and self.dispatcher.wake is not None:
            self.dispatcher.wake.set()
        if self.host is not None:
            self.host.notify()

    async def _run_worker(self, worker: Worker) -> None:
        await worker.run_forever(asyncio.Event())  # until the worker's shutdown cancels it

    async def _metrics_view(
        self, web: faust.web.View, request: faust.web.Request
    ) -> faust.web.Response:
        return web.bytes(generate_latest(self.registry), content_type=CONTENT_TYPE_LATEST)

    def close(self) -> None:
        if self.host is not None:
            self.host.close()
