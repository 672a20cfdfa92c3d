"""The distributed runtime: a Faust app on Kafka (DESIGN §7), province scale.

Topics (key → value):

* ``budget-events`` — ``project_id`` → one contract event (JSON); clock ticks
  ``__clock__`` → ``{"type": "clock_tick", "as_of": "YYYY-MM-DD"}`` on every partition.
* ``budget-departments`` — ``__closed__:<source>`` → a ``tick_closed`` marker per tick to
  every partition, carrying the budget/paid deltas (per department and day) of the
  departments that partition holds (``partition_for("<fiscal_year>:<department_id>")``),
  with ``deltas`` chunks ahead of it when they are many.
* ``budget-alerts`` — ``alert_id`` → one transition: the fields of
  ``budgetwatch alerts --json`` plus ``transition``, ``date``, ``previous_severity``
  and ``origin`` (the message that produced it: ``topic:partition:offset``); with
  ``"transition": "moved"``, no transition but a firing alert that followed its subject
  to another department or name on ``date`` (the notifier rewrites its stored alert).
* ``budget-events-dlq`` — the raw key → reason, raw value, topic/partition/offset.

Agents run with ``concurrency=1`` under ``processing_guarantee="at_least_once"``;
state lives in changelog-backed tables (``projects``, ``departments``), RocksDB in
production (``BUDGETWATCH_STORE=rocksdb://``), ``memory://`` in tests. The agents
only move bytes: every decision is in :mod:`streams.faust_state`, which drives the
same :class:`alerts.monitor.Monitor` as the embedded engine.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import faust
import orjson
from faust.types import TP, TableT
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from alerts.lifecycle import Transition
from alerts.profile import Profile
from budget.calendar import from_day
from connectors.kept_json import kept_dumps
from connectors.metrics import (
    PartitionProgress,
    StreamProgressCollector,
    WorkerFiguresCollector,
    utc_midnight_seconds,
)
from connectors.profiles import load_profile
from streams.faust_state import (
    CLOCK_KEY,
    DELTAS,
    MOVED,
    TICK_CLOSED,
    DepartmentPartition,
    Output,
    ProjectPartition,
    dead_letter,
    is_meta_key,
    partition_for,
    tick_value,
)
from streams.gc_tuning import fewer_collections
from streams.settings import Settings

log = logging.getLogger("budgetwatch.faust")

from streams.faust_state import ALERTS_TOPIC, DEPARTMENTS_TOPIC, DLQ_TOPIC, EVENTS_TOPIC  # noqa: E402

Delivery = Awaitable[Any] | None  # the broker's acknowledgement of one message, if any
EMIT_RETRY_FIRST, EMIT_RETRY_MAX = 1.0, 60.0  # seconds between attempts to send an output


class Outlet(Protocol):
    """Where agents send what they produce: Kafka topics in a worker, a list in tests.
    ``send`` hands the message over and returns its delivery, to be awaited."""

    async def send(
        self, topic: str, key: str | None, value: bytes, partition: int | None = None
    ) -> Delivery: ...


class TopicOutlet:
    def __init__(self, topics: Mapping[str, faust.TopicT]) -> None:
        self.topics = topics

    async def send(
        self, topic: str, key: str | None, value: bytes, partition: int | None = None
    ) -> Delivery:
        return await self.topics[topic].send(
            key=key.encode("utf-8") if key is not None else None, value=value, partition=partition
        )


class MemoryOutlet:
    """Records every message in order; the functional tests feed them onward."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str | None, bytes, int | None]] = []

    async def send(
        self, topic: str, key: str | None, value: bytes, partition: int | None = None
    ) -> Delivery:
        self.messages.append((topic, key, value, partition))
        return None

    def take(self, topic: str) -> list[tuple[str | None, bytes, int | None]]:
        taken = [(k, v, p) for t, k, v, p in self.messages if t == topic]
        self.messages = [m for m in self.messages if m[0] != topic]
        return taken


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "budget_stream_messages_total",
            "budget-events messages by outcome (buffered, duplicate, redelivered, rejected, tick)",
            ["outcome"],
            registry=self.registry,
        )
        self.transitions = Counter(
            "budget_stream_alert_transitions_total",
            "Alert transitions sent to budget-alerts",
            ["rule", "severity", "transition"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "budget_stream_dead_letters_total",
            "Messages sent to budget-events-dlq",
            ["topic"],
            registry=self.registry,
        )
        self.clock = Gauge(
            "budget_stream_clock_timestamp_seconds",
            "Business date closed so far on a partition (midnight UTC, unix seconds)",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.pending = Gauge(
            "budget_stream_pending_events",
            "Events buffered until the next clock tick",
            ["partition"],
            registry=self.registry,
        )
        self.dedup = Gauge(
            "budget_stream_dedup_event_ids",
            "Event ids remembered for deduplication",
            ["partition"],
            registry=self.registry,
        )
        self.emit_retries = Counter(
            "budget_stream_emit_retries_total",
            "Failed attempts to send a message's output (alerts, dead letters, department "
            "messages) to the broker; the agent waits and retries",
            ["topic"],
            registry=self.registry,
        )
        self._children: dict[tuple[Any, ...], Any] = {}
        self._clocks: dict[tuple[str, int], int | None] = {}
        # Exported at 0 from the start: an alert on increase() cannot see the first
        # dead letters of a series that appears already at 3.
        for topic in (EVENTS_TOPIC, DEPARTMENTS_TOPIC):  # the topics the agents read
            self.dead_letters.labels(topic)
            self.emit_retries.labels(topic)

    def child(self, metric: Counter | Gauge, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once: the agents set several per message."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def forget_partition(self, topic: str, partition: int) -> None:
        """Stop exporting a partition this worker no longer owns: its last clock would
        otherwise stand still here, beside the new owner's, and look stuck."""
        label = str(partition)
        series: list[tuple[Gauge, tuple[str, ...]]] = [(self.clock, (topic, label))]
        if topic == EVENTS_TOPIC:
            series += [(self.pending, (label,)), (self.dedup, (label,))]
        for gauge, labels in series:
            if self._children.pop((id(gauge), *labels), None) is not None:
                gauge.remove(*labels)
        self._clocks.pop((topic, partition), None)

    def show_clock(self, topic: str, partition: int, day: int | None) -> None:
        """The partition clock gauge; it moves only at ticks, so it is set on a change."""
        if self._clocks.get((topic, partition), -1) != day:
            self._clocks[(topic, partition)] = day
            self.child(self.clock, topic, str(partition)).set(utc_midnight_seconds(day))


class BudgetApp:
    """The Faust app with its topics, tables and agents, built from :class:`Settings`."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        profile: Profile | None = None,
        outlet: Outlet | None = None,
        app_id: str = "budgetwatch",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        highwater: Callable[[str, int], int | None] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        s = settings or Settings()
        self.sleep = sleep  # between attempts to send a message's output (see _emit_until_sent)
        self.settings = s
        self.profile = profile or load_profile(s.profile)
        self.partitions = s.partitions
        self.app = faust_app(app_id, s, store=s.store)
        app = self.app
        raw = {"key_serializer": "raw", "value_serializer": "raw"}
        self.events_topic = app.topic(EVENTS_TOPIC, partitions=s.partitions, **raw)  # type: ignore[arg-type]
        self.departments_topic = app.topic(DEPARTMENTS_TOPIC, partitions=s.partitions, **raw)  # type: ignore[arg-type]
        self.alerts_topic = app.topic(ALERTS_TOPIC, partitions=s.partitions, **raw)  # type: ignore[arg-type]
        self.dlq_topic = app.topic(DLQ_TOPIC, partitions=s.partitions, **raw)  # type: ignore[arg-type]
        # Values are JSON bytes encoded here with orjson (value_type=bytes: Faust's "raw"
        # codec): Faust's own json codec was the agents' largest single cost.
        self.projects_table = app.Table("projects", partitions=s.partitions, key_type=str, value_type=bytes)
        self.departments_table = app.Table(
            "departments", partitions=s.partitions, key_type=str, value_type=bytes
        )
        self.outlet: Outlet = outlet or TopicOutlet(
            {
                DEPARTMENTS_TOPIC: self.departments_topic,
                ALERTS_TOPIC: self.alerts_topic,
                DLQ_TOPIC: self.dlq_topic,
                EVENTS_TOPIC: self.events_topic,
            }
        )
        self.metrics = Metrics()
        self.metrics.registry.register(
            WorkerFiguresCollector(lambda: [p.monitor for p in self.project_partitions.values()])
        )
        self.highwater = highwater or self._broker_highwater
        self.now = now
        # (topic, partition) -> (offset, broker timestamp) of the last message whose
        # output was sent, and -> when the partition was assigned to this worker
        self.consumed: dict[tuple[str, int], tuple[int, float | None]] = {}
        self.assigned: dict[tuple[str, int], float] = {}
        self.metrics.registry.register(StreamProgressCollector(self.progress))
        self.project_partitions: dict[int, ProjectPartition] = {}
        self.department_partitions: dict[int, DepartmentPartition] = {}
        self._sizes: dict[int, tuple[ProjectPartition, int, int]] = {}  # gauges, kept incrementally
        self.warming: asyncio.Future[None] | None = None  # restoring partitions after a rebalance
        self.events_agent = app.agent(self.events_topic, name="budget-events", concurrency=1)(
            self._events
        )
        self.departments_agent = app.agent(
            self.departments_topic, name="budget-departments", concurrency=1
        )(self._departments)
        app.page("/metrics")(self._metrics_view)
        app.page("/budgetwatch/partitions")(self._partitions_view)
        if s.clock == "wall":
            app.timer(interval=s.clock_interval, on_leader=True)(self.wall_clock_tick)
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        app.on_rebalance_complete.connect(self._on_rebalance_complete)  # type: ignore[arg-type]

    # -- partition state ---------------------------------------------------
    def project_partition(self, partition: int) -> ProjectPartition:
        state = self.project_partitions.get(partition)
        if state is None:
            state = ProjectPartition.restore(
                partition,
                self.profile,
                table_items(self.projects_table),
                topic=EVENTS_TOPIC,
                dedup_days=self.settings.dedup_days,
            )
            self.project_partitions[partition] = state
        return state

    def department_partition(self, partition: int) -> DepartmentPartition:
        state = self.department_partitions.get(partition)
        if state is None:
            state = DepartmentPartition.restore(
                partition,
                self.profile,
                self.partitions,
                table_items(self.departments_table),
                topic=DEPARTMENTS_TOPIC,
            )
            self.department_partitions[partition] = state
        return state

    async def warm(self, assignment: Callable[[], Iterable[Any]]) -> None:
        """Restore the project partitions this worker holds (``assignment``: its current
        TopicPartitions), so its share of the figures is exported at once — not only when
        each partition's next message arrives, which with no wall clock may be long after
        a restart. One partition at a time, yielding in between (each restore reads the
        table), skipping any revoked meanwhile; a restore that fails is logged and left
        to the partition's next message, which dead-letters it if it fails again."""
        for tp in sorted(assignment()):
            if tp.topic != EVENTS_TOPIC or tp.partition in self.project_partitions:
                continue
            await asyncio.sleep(0)
            if tp not in set(assignment()):
                continue
            try:
                self.project_partition(tp.partition)
            except Exception:
                log.exception("restoring budget-events partition %s failed; its next message retries", tp.partition)

    async def _on_rebalance_complete(self, sender: Any, **_: Any) -> None:
        # Sent by Faust once the tables are recovered from their changelogs (never before:
        # a partition restored from a half-recovered table would be wrong). In a task of
        # its own: the restores must not hold up the recovery that resumes the streams.
        self.warming = asyncio.ensure_future(self.warm(self.app.consumer.assignment))

    async def _on_revoked(self, sender: Any, revoked: Iterable[Any], **_: Any) -> None:
        # Another worker owns these now; rebuild from the changelog if they come back.
        for tp in revoked:
            if tp.topic in (EVENTS_TOPIC, DEPARTMENTS_TOPIC):
                self._drop_partition(tp.topic, tp.partition)
                self.metrics.forget_partition(tp.topic, tp.partition)
                self.consumed.pop((tp.topic, tp.partition), None)
                self.assigned.pop((tp.topic, tp.partition), None)

    async def _on_assigned(self, sender: Any, assigned: Iterable[Any], **_: Any) -> None:
        # From now on the partition is this worker's to read: exported (and aged from
        # this moment) even before its first message, so a worker that holds partitions
        # and reads nothing is seen.
        for tp in assigned:
            if tp.topic in (EVENTS_TOPIC, DEPARTMENTS_TOPIC):
                self.assigned.setdefault((tp.topic, tp.partition), self.now())

    # -- reading progress (scraped) ----------------------------------------
    def progress(self) -> list[PartitionProgress]:
        """Each partition this worker holds. Before its first message since the
        assignment, the next offset is the restored partition's (unknown while its table
        is still being recovered) and the position is aged from the assignment."""
        rows = []
        for key in sorted(self.assigned.keys() | self.consumed.keys()):
            topic, partition = key
            state: ProjectPartition | DepartmentPartition | None = (
                self.project_partitions if topic == EVENTS_TOPIC else self.department_partitions
            ).get(partition)
            handled = self.consumed.get(key)
            if handled is not None:
                next_offset: int | None = handled[0] + 1
                at = handled[1]
            else:
                next_offset = state.meta.offset + 1 if state is not None else None
                at = self.assigned.get(key)
            rows.append(PartitionProgress(
                topic, partition, next_offset, at,
                highwater=self.highwater(topic, partition),
                received_day=state.latest_day if isinstance(state, ProjectPartition) else None,
            ))
        return rows

    def _broker_highwater(self, topic: str, partition: int) -> int | None:
        """The end offset the worker's Kafka consumer last fetched for a partition; None
        before the worker has started a consumer (never create one just to ask)."""
        consumer = getattr(self.app, "_consumer", None)
        if consumer is None:
            return None
        try:
            value = consumer.highwater(TP(topic, partition))
        except Exception:  # not assigned, not fetched yet, consumer stopping
            return None
        return value if isinstance(value, int) else None

    # -- agents ------------------------------------------------------------
    def _failed(self, message: Any, topic: str, reason: str) -> Output:
        """A message whose handling raised: logged, dead-lettered with ``reason``, and its
        partition's state dropped, to be rebuilt from the table next time."""
        log.exception("%s %s:%s failed", topic, message.partition, message.offset)
        out = Output(outcome="rejected")
        out.dead_letters.append(dead_letter(
            reason=reason, raw=message.value, topic=topic, partition=message.partition,
            offset=message.offset, key=message.key,
        ))
        self._drop_partition(topic, message.partition)
        return out

    async def _events(self, stream: faust.StreamT[bytes]) -> AsyncIterator[str]:
        consumed = self.consumed
        # A tick builds a few containers per touched project (its value) and Faust a few per
        # message, all short-lived; with the default threshold the collector ran ~800 times
        # on the bench year and its older generations walked every project, alert and
        # table value: ~9% of the agents' time (gc.callbacks). See streams.gc_tuning.
        with fewer_collections():
            async for event in stream.events():
                message = event.message
                partition, offset = message.partition, message.offset
                try:
                    state = self.project_partition(partition)
                    out = state.handle(offset, message.key, message.value)
                except Exception as err:  # never a silent ack: the message goes to the DLQ
                    out = self._failed(
                        message, EVENTS_TOPIC, f"internal error {type(err).__name__}: {err}; "
                        "the message was not applied — fix the cause and re-publish it "
                        "(its event_id keeps the retry idempotent)",
                    )
                await self._emit_until_sent(out, self.projects_table, EVENTS_TOPIC, partition, offset)
                # Only now: a message stuck in its retries is still unread, behind the position.
                consumed[(EVENTS_TOPIC, partition)] = (offset, message.timestamp)
                state_now = self.project_partitions.get(partition)
                if state_now is not None:
                    self.metrics.show_clock(EVENTS_TOPIC, partition, state_now.clock)
                    if out.outcome in ("buffered", "tick"):
                        pending, dedup = self._buffer_sizes(state_now, out.outcome)
                        self.metrics.child(self.metrics.pending, str(partition)).set(pending)
                        self.metrics.child(self.metrics.dedup, str(partition)).set(dedup)
                yield out.outcome

    def _buffer_sizes(self, state: ProjectPartition, outcome: str) -> tuple[int, int]:
        """(pending events, dedup ids) of a partition, counted in full only after a tick or
        a rebuild: a buffered event adds exactly one of each, so counting every partition's
        buffers on every message (O(projects) per event) is not needed."""
        known = self._sizes.get(state.partition)
        if outcome == "tick" or known is None or known[0] is not state:
            sizes = (state.pending_count(), state.dedup_memory())
        else:
            sizes = (known[1] + 1, known[2] + 1)
        self._sizes[state.partition] = (state, *sizes)
        return sizes

    async def _departments(self, stream: faust.StreamT[bytes]) -> AsyncIterator[str]:
        consumed = self.consumed
        with fewer_collections():  # see _events
            async for event in stream.events():
                message = event.message
                partition, offset = message.partition, message.offset
                try:
                    body = orjson.loads(message.value)
                    if not isinstance(body, dict):
                        raise ValueError("a department message must be a JSON object")
                    out = self.department_partition(partition).handle(offset, message.key, body)
                except Exception as err:
                    out = self._failed(
                        message, DEPARTMENTS_TOPIC, f"{type(err).__name__}: {err}; department messages come "
                        "from the budget-events agent only — look for a foreign producer",
                    )
                await self._emit_until_sent(out, self.departments_table, DEPARTMENTS_TOPIC, partition, offset)
                consumed[(DEPARTMENTS_TOPIC, partition)] = (offset, message.timestamp)
                state_now = self.department_partitions.get(partition)
                if state_now is not None:
                    self.metrics.show_clock(DEPARTMENTS_TOPIC, partition, state_now.clock)
                yield out.outcome

    async def _emit_until_sent(
        self, out: Output, table: TableT[Any, Any], topic: str, partition: int, offset: int
    ) -> None:
        """:meth:`_emit`, again and again while the broker fails for a passing reason.

        The partition's state has already moved past the message; were the agent to go
        on after a failed send, a later tick would reuse the epoch whose markers some
        department partitions already took, and its deltas would be dropped there as
        duplicates. So while the broker is unreachable or times out, the agent waits and
        sends the whole output again (the at-least-once of a crash: department messages
        are deduplicated, table values are the same, a transition may reach
        budget-alerts again). An error that retrying cannot mend (a message refused as
        too large, a bug) is raised at once, after the partition's state is dropped, so
        it is rebuilt from the changelog and nothing in memory runs ahead of it."""
        delay, attempt = EMIT_RETRY_FIRST, 0
        while True:
            try:
                await self._emit(out, table, topic, origin=f"{topic}:{partition}:{offset}")
                return
            except Exception as err:
                if not _transient(err):
                    self._drop_partition(topic, partition)
                    raise
                attempt += 1
                self.metrics.child(self.metrics.emit_retries, topic).inc()
                log.error(
                    "%s:%s:%s: sending the message's output failed (attempt %d: %s: %s); "
                    "retrying in %.0f s — this agent waits, nothing is skipped",
                    topic, partition, offset, attempt, type(err).__name__, err, delay,
                )
                await self.sleep(delay)
                delay = min(delay * 2, EMIT_RETRY_MAX)

    def _drop_partition(self, topic: str, partition: int) -> None:
        """Forget a partition's state: it is rebuilt from the changelog when next needed."""
        if topic == EVENTS_TOPIC:
            self.project_partitions.pop(partition, None)
            self._sizes.pop(partition, None)
        else:
            self.department_partitions.pop(partition, None)

    async def _emit(self, out: Output, table: TableT[Any, Any], topic: str, *, origin: str) -> None:
        """Table values, then the messages — awaited until the broker has them — then the
        meta record that commits the message (and the tombstones after it). A crash
        before the meta redoes the message, so its alerts, dead letters and department
        deltas are sent again (at least once); none can be lost behind a committed meta.

        ``origin`` is the message that produced the output (topic:partition:offset): each
        transition carries it, so a transition sent again after a crash (recomputed from
        the same pre-message state) is the same message, while a same-day re-fire from a
        later tick, otherwise identical, is a message of its own. No index within the
        output: its order need not survive a restore, only its content."""
        send = self.outlet.send
        commit_at = next((i for i, (key, _) in enumerate(out.writes) if is_meta_key(key)), len(out.writes))
        _write(table, out.writes[:commit_at])
        deliveries: list[Delivery] = []
        for transition in out.transitions:
            value = transition_bytes(transition, origin)
            deliveries.append(await send(ALERTS_TOPIC, transition.alert.alert_id, value))
        for letter in out.dead_letters:
            deliveries.append(await send(DLQ_TOPIC, letter["key"], orjson.dumps(letter)))
        # A tick's deltas ride on its marker to each department partition: one message per
        # partition and tick, not one per department and day (those were half the
        # messages the agents handled); chunks ahead of it when they are many.
        deltas: dict[int, list[tuple[str, Any]]] = {}
        for key, delta in out.departments:
            deltas.setdefault(partition_for(key, self.partitions), []).append((key, delta))
        for marker in out.markers:
            key = f"__closed__:{marker['source']}"
            for partition in range(self.partitions):
                *chunks, last = _chunks(deltas.pop(partition, []))
                for chunk in chunks:
                    body = orjson.dumps({
                        "kind": DELTAS, "source": marker["source"], "epoch": marker["epoch"], "deltas": chunk,
                    })
                    deliveries.append(await send(DEPARTMENTS_TOPIC, key, body, partition))
                body = orjson.dumps({**marker, "kind": TICK_CLOSED, "deltas": last})
                deliveries.append(await send(DEPARTMENTS_TOPIC, key, body, partition))
        if deltas:  # only a tick makes deltas, and it always closes with a marker
            raise RuntimeError(f"department deltas without a tick marker: {sorted(deltas)} partitions")
        pending = [d for d in deliveries if d is not None]
        if pending:
            await asyncio.gather(*pending)
        _write(table, out.writes[commit_at:])
        # Counted once everything is out (a retried emit is not counted twice).
        for transition in out.transitions:
            alert = transition.alert
            if transition.kind != MOVED:  # an alert rewritten in place is no transition
                self.metrics.child(self.metrics.transitions, alert.rule, alert.severity, transition.kind).inc()
        for _ in out.dead_letters:
            self.metrics.child(self.metrics.dead_letters, topic).inc()
        if topic == EVENTS_TOPIC:
            self.metrics.child(self.metrics.messages, out.outcome).inc()

    # -- the wall clock (live mode) ------------------------------------------
    async def wall_clock_tick(self) -> None:
        """Publish today's tick (in the bureau's time zone) to every partition."""
        today = dt.datetime.now(ZoneInfo(self.settings.timezone)).date()
        for partition in range(self.partitions):
            await self.outlet.send(EVENTS_TOPIC, CLOCK_KEY, tick_value(today), partition)

    # -- web -----------------------------------------------------------------
    async def _metrics_view(
        self, web: faust.web.View, request: faust.web.Request
    ) -> faust.web.Response:
        return web.bytes(generate_latest(self.metrics.registry), content_type=CONTENT_TYPE_LATEST)

    async def _partitions_view(
        self, web: faust.web.View, request: faust.web.Request
    ) -> faust.web.Response:
        return web.json(
            {
                "events": {
                    str(p): {
                        "clock": _iso(s.clock),
                        "pending": s.pending_count(),
                        "dedup_ids": s.dedup_memory(),
                        "projects": len(s.monitor.ledger.projects),
                    }
                    for p, s in sorted(self.project_partitions.items())
                },
                "departments": {
                    str(p): {"clock": _iso(s.clock), "departments": len(s.totals)}
                    for p, s in sorted(self.department_partitions.items())
                },
            }
        )


# Kafka refuses messages over ~1 MB (the producer's max_request_size and the broker's
# message.max.bytes); a tick's deltas for one partition go in chunks of at most this.
MAX_DELTAS_BYTES = 256 * 1024


def _chunks(items: list[tuple[str, Any]], limit: int = MAX_DELTAS_BYTES) -> list[list[tuple[str, Any]]]:
    """``items`` cut into runs of at most ``limit`` encoded bytes; at least one run."""
    runs: list[list[tuple[str, Any]]] = [[]]
    size = 0
    for key, delta in items:
        n = len(key.encode()) + len(orjson.dumps(delta)) + 8
        if runs[-1] and size + n > limit:
            runs.append([])
            size = 0
        runs[-1].append((key, delta))
        size += n
    return runs


def _transient(err: BaseException) -> bool:
    """Whether sending again may succeed: the broker unreachable, slow or electing."""
    from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

    if isinstance(err, ConnectionError | OSError | asyncio.TimeoutError | KafkaConnectionError | KafkaTimeoutError):
        return True
    return isinstance(err, KafkaError) and bool(getattr(err, "retriable", False))


def transition_bytes(transition: Transition, origin: str) -> bytes:
    """A budget-alerts value: the transition's fields and its ``origin`` (see ``_emit``)."""
    return orjson.dumps({**transition.to_json(), "origin": origin})


def _iso(day: int | None) -> str | None:
    return from_day(day).isoformat() if day is not None else None


def _write(table: TableT[Any, Any], writes: Iterable[tuple[str, Any]]) -> None:
    for key, value in writes:
        if value is not None:
            table[key] = kept_dumps(value)  # held in the table until its next write
        elif key in table:
            del table[key]  # a tombstone in the changelog


def table_items(table: TableT[Any, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """A table's (key, value) pairs, decoded; what a partition is restored from."""
    for key, value in table.items():
        yield str(key), orjson.loads(value) if isinstance(value, bytes | str) else value


def faust_app(app_id: str, settings: Settings, *, store: str) -> faust.App:
    """A Faust app of this runtime: at-least-once, with the web server (/metrics)."""
    return faust.App(
        app_id,
        broker=_broker_url(settings.kafka_bootstrap),
        store=store,
        processing_guarantee="at_least_once",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        web_enabled=True,
        autodiscover=False,
    )


def _broker_url(bootstrap: str) -> str:
    hosts = [h.strip() for h in bootstrap.split(",") if h.strip()]
    return ";".join(h if "://" in h else f"kafka://{h}" for h in hosts)


def create_app(settings: Settings | None = None, **kwargs: Any) -> BudgetApp:
    return BudgetApp(settings, **kwargs)
