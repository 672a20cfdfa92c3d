"""Drive the real Faust agents of streams.faust_app in memory (``agent.test_context()``,
no broker) — the same driver the functional tests use (tests/functional/faust_harness.py).

What is timed: every message through the ``budget-events`` agent (parse, dedup,
buffer, changelog-table writes) and the year-end clock tick on every partition
(the monitor over the buffered events, every day closed, alerts and department
deltas emitted), plus the department agent on what the ticks sent. Kafka I/O and
serialisation to a broker are not included: this is the agent code path only.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from typing import Any

import faust
import orjson

from connectors.profiles import load_profile
from streams.faust_app import ALERTS_TOPIC, DEPARTMENTS_TOPIC, DLQ_TOPIC, BudgetApp, MemoryOutlet
from streams.faust_state import CLOCK_KEY, partition_for, tick_value
from streams.settings import Settings


def _key(line: bytes) -> str:
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        return "unparsable"
    value = data.get("project_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else "unkeyed"


async def drive(lines: list[bytes], partitions: int, as_of: int) -> tuple[float, dict[str, int], int]:
    """(seconds, outcomes, alert transitions) for ``lines`` then a tick at ``as_of``."""
    outlet = MemoryOutlet()
    settings = Settings(partitions=partitions, store="memory://", clock="off")
    bapp = BudgetApp(settings, profile=load_profile("baseline"), outlet=outlet, app_id="budgetwatch-bench")
    raw: Any = faust.Schema(key_serializer="raw", value_serializer="raw")
    app = bapp.app
    keyed = [(_key(line), line) for line in lines]  # the producer's work, not timed
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
            alerts += len(outlet.take(ALERTS_TOPIC))
            outlet.take(DLQ_TOPIC)

        async def put(key: str, value: bytes, partition: int) -> None:
            at = offsets.get(partition, 0)
            offsets[partition] = at + 1
            events.sent_offset = at
            await events.put(value=value, key=key.encode("utf-8"), partition=partition)

        started = time.perf_counter()
        for key, line in keyed:
            await put(key, line, partition_for(key, partitions))
            if outlet.messages:
                await forward()
        tick = tick_value(dt.date.fromordinal(as_of))
        for p in range(partitions):
            await put(CLOCK_KEY, tick, p)
            await forward()
        seconds = time.perf_counter() - started
        outcomes.update(str(r) for r in events.results.values())
    return seconds, dict(outcomes), alerts
