"""Drive the real Faust agents of streams.faust_app in memory (``agent.test_context()``,
no broker) — the same driver the functional tests use (tests/functional/faust_harness.py).

The stream is the live one: the year's events in business-date order and, after
each day's events, a clock tick for that day on every partition (what the wall
clock sends in production), so every day is closed as it ends. What is timed: every
message through the ``budget-events`` agent (parse, dedup, buffer, changelog-table
writes), every tick (the monitor over the day's events, time-driven rules, alerts
and department deltas), and the department agent on what the ticks sent. Kafka I/O
and serialisation to a broker are not included: this is the agent code path only.

Changelog writes: with no broker the app's producer never sends, and its buffer
would keep every table write (that, not the agents, was most of the driver's RSS).
:class:`ChangelogSink` takes them out of the buffer after each message, as a broker
would, and counts them — messages and bytes per event are the changelog traffic a
real deployment would send to Kafka.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import orjson

from connectors.profiles import load_profile
from streams.faust_app import ALERTS_TOPIC, DEPARTMENTS_TOPIC, DLQ_TOPIC, BudgetApp, MemoryOutlet
from streams.faust_state import CLOCK_KEY, partition_for, tick_value
from streams.settings import Settings


def _key_and_day(line: bytes) -> tuple[str, str]:
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        return "unparsable", "9999"
    if not isinstance(data, dict):
        return "unkeyed", "9999"
    value, day = data.get("project_id"), data.get("occurred_on")
    try:
        when = dt.date.fromisoformat(day[:10]).isoformat() if isinstance(day, str) else "9999"
    except ValueError:
        when = "9999"  # invalid: sent last, the agent rejects it
    return value if isinstance(value, str) else "unkeyed", when


class ChangelogSink:
    """Takes produced messages out of a broker-less producer's buffer, counting them."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self.messages = 0
        self.bytes = 0

    def drain(self) -> None:
        queue = self.app.producer.buffer.pending
        while not queue.empty():
            future = queue.get_nowait()
            value = future.message.value
            self.messages += 1
            self.bytes += len(value) if isinstance(value, bytes | str) else 0


def _schedule(lines: list[bytes], partitions: int) -> list[tuple[str, str, bytes, int]]:
    """The producer's work, not timed: key by project, order by business date, partition
    by key (murmur2, which a Kafka producer computes in its own process)."""
    keyed = sorted(((*_key_and_day(line), line) for line in lines), key=lambda item: item[1])
    return [(key, day, line, partition_for(key, partitions)) for key, day, line in keyed]


Put = Callable[[str, bytes, int], Awaitable[None]]


async def _play(
    keyed: list[tuple[str, str, bytes, int]],
    partitions: int,
    as_of: int,
    put: Put,
    settle: Callable[[], Awaitable[None]] | None = None,
) -> float:
    """Send the year in business-date order, a clock tick to every partition after each
    day (what the wall clock sends in production) and one at ``as_of``; ``settle`` runs
    after every message (the agents' own output handed on). The seconds it took."""
    last = dt.date.fromordinal(as_of).isoformat()

    async def send(key: str, value: bytes, partition: int) -> None:
        await put(key, value, partition)
        if settle is not None:
            await settle()

    async def tick(day: str) -> None:
        value = tick_value(dt.date.fromisoformat(day))
        for p in range(partitions):
            await send(CLOCK_KEY, value, p)

    started = time.perf_counter()
    current: str | None = None
    for key, day, line, partition in keyed:
        if day != current and current is not None and current <= last:
            await tick(current)
        current = day
        await send(key, line, partition)
    await tick(last)
    return time.perf_counter() - started


async def drive_floor(lines: list[bytes], partitions: int, as_of: int) -> tuple[float, int]:
    """The same messages through the same test driver into an agent that does only the
    least an at-least-once agent with changelog state must: one table write per message.

    This is the Faust path's practical ceiling, measured in the same run as
    :func:`drive` (seconds, messages): what the driver, the stream and the changelog
    cost per message before any of budgetwatch's work."""
    app = faust.App("budgetwatch-floor", broker="kafka://localhost:9092", store="memory://", autodiscover=False)
    raw: Any = faust.Schema(key_serializer="raw", value_serializer="raw")
    topic = app.topic("floor-events", partitions=partitions, key_serializer="raw", value_serializer="raw")
    table = app.Table("floor", partitions=partitions, key_type=str, value_type=bytes)

    async def floor_agent(stream: faust.StreamT[bytes]) -> Any:
        async for event in stream.events():
            message = event.message
            table[message.key.decode("utf-8")] = message.value
            yield None

    agent = app.agent(topic, name="floor", concurrency=1)(floor_agent)
    changelog = ChangelogSink(app)
    offsets: dict[int, int] = {}
    sent = 0
    async with agent.test_context(channel=app.channel(schema=raw)) as events:

        async def put(key: str, value: bytes, partition: int) -> None:
            nonlocal sent
            at = offsets.get(partition, 0)
            offsets[partition] = at + 1
            events.sent_offset = at
            await events.put(value=value, key=key.encode("utf-8"), partition=partition)
            changelog.drain()
            sent += 1

        seconds = await _play(_schedule(lines, partitions), partitions, as_of, put)
    return seconds, sent


async def drive(lines: list[bytes], partitions: int, as_of: int) -> tuple[float, dict[str, int], int, ChangelogSink]:
    """(seconds, outcomes, alert transitions, changelog) for ``lines`` then a tick at ``as_of``."""
    outlet = MemoryOutlet()
    settings = Settings(partitions=partitions, store="memory://", clock="off")
    bapp = BudgetApp(settings, profile=load_profile("baseline"), outlet=outlet, app_id="budgetwatch-bench")
    raw: Any = faust.Schema(key_serializer="raw", value_serializer="raw")
    app = bapp.app
    changelog = ChangelogSink(app)
    keyed = _schedule(lines, partitions)
    offsets: dict[int, int] = {}
    department_offsets: dict[int, int] = {}
    outcomes: Counter[str] = Counter()
    alerts = 0
    events_ctx = bapp.events_agent.test_context(channel=app.channel(schema=raw))
    departments_ctx = bapp.departments_agent.test_context(channel=app.channel(schema=raw))
    async with events_ctx as events, departments_ctx as departments:

        async def forward() -> None:
            nonlocal alerts
            for key, value, partition in outlet.take(DEPARTMENTS_TOPIC):
                assert key is not None
                q = partition if partition is not None else partition_for(key, partitions)
                at = department_offsets.get(q, 0)
                department_offsets[q] = at + 1
                departments.sent_offset = at
                await departments.put(value=value, key=key.encode("utf-8"), partition=q)
                changelog.drain()
            alerts += len(outlet.take(ALERTS_TOPIC))
            outlet.take(DLQ_TOPIC)

        async def put(key: str, value: bytes, partition: int) -> None:
            at = offsets.get(partition, 0)
            offsets[partition] = at + 1
            events.sent_offset = at
            await events.put(value=value, key=key.encode("utf-8"), partition=partition)
            changelog.drain()

        async def settle() -> None:
            if outlet.messages:
                await forward()

        seconds = await _play(keyed, partitions, as_of, put, settle)
        outcomes.update(str(r) for r in events.results.values())
    return seconds, dict(outcomes), alerts, changelog
