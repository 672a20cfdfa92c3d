"""Drive the real Faust agents through ``agent.test_context()`` (no broker).

Messages the agents send (department deltas and markers, alerts, dead letters)
are recorded by :class:`streams.faust_app.MemoryOutlet`; the harness hands the
department messages on to the department agent the way Kafka would (same key →
same partition, explicit partitions kept), so both agents and their tables run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson

from alerts.profile import Profile
from streams.faust_app import (
    ALERTS_TOPIC,
    DEPARTMENTS_TOPIC,
    DLQ_TOPIC,
    BudgetApp,
    MemoryOutlet,
)
from streams.faust_state import CLOCK_KEY, partition_for, tick_value
from streams.settings import Settings


def make_app(profile: Profile, *, partitions: int = 4) -> tuple[BudgetApp, MemoryOutlet]:
    outlet = MemoryOutlet()
    settings = Settings(partitions=partitions, store="memory://", clock="off")
    return BudgetApp(settings, profile=profile, outlet=outlet, app_id="budgetwatch-test"), outlet


def key_of(line: bytes) -> str:
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        return "unparsable"
    value = data.get("project_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else "unkeyed"


@dataclass
class Harness:
    bapp: BudgetApp
    outlet: MemoryOutlet
    events: Any
    departments: Any
    offsets: dict[int, int] = field(default_factory=dict)
    department_offsets: dict[int, int] = field(default_factory=dict)
    # What the agents sent to budget-alerts: the values as sent, and their transitions
    # without `origin` (the producing message's offset, which differs between runs).
    alert_messages: list[bytes] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)

    @property
    def partitions(self) -> int:
        return self.bapp.partitions

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        partition: int | None = None,
        offset: int | None = None,
        timestamp: float | None = None,
    ) -> Any:
        """One message on budget-events at the next offset of its partition (or a given one),
        stamped by the broker at ``timestamp`` (default: now)."""
        p = partition_for(key, self.partitions) if partition is None else partition
        at = self.offsets.get(p, 0) if offset is None else offset
        if offset is None:
            self.offsets[p] = at + 1
        self.events.sent_offset = at  # the test wrapper stamps this offset on the message
        event = await self.events.put(value=value, key=key.encode("utf-8"), partition=p, timestamp=timestamp)
        await self._forward()
        return event

    async def publish(self, lines: Iterable[bytes]) -> None:
        for line in lines:
            if line.strip():
                await self.put(key_of(line), line.strip())

    async def tick(self, as_of: str) -> None:
        for p in range(self.partitions):
            await self.put(CLOCK_KEY, tick_value(dt.date.fromisoformat(as_of)), partition=p)

    async def _forward(self) -> None:
        for key, value, partition in self.outlet.take(DEPARTMENTS_TOPIC):
            assert key is not None
            q = partition if partition is not None else partition_for(key, self.partitions)
            at = self.department_offsets.get(q, 0)
            self.department_offsets[q] = at + 1
            self.departments.sent_offset = at
            await self.departments.put(value=value, key=key.encode("utf-8"), partition=q)
        for _, value, _ in self.outlet.take(ALERTS_TOPIC):
            self.alert_messages.append(value)
            transition = orjson.loads(value)
            del transition["origin"]
            self.alerts.append(transition)
        self.dead_letters.extend(orjson.loads(v) for _, v, _ in self.outlet.take(DLQ_TOPIC))


@asynccontextmanager
async def running(bapp: BudgetApp, outlet: MemoryOutlet) -> AsyncIterator[Harness]:
    raw = faust.Schema(key_serializer="raw", value_serializer="raw")
    app = bapp.app
    events_ctx = bapp.events_agent.test_context(channel=app.channel(schema=raw))
    departments_ctx = bapp.departments_agent.test_context(channel=app.channel(schema=raw))
    async with events_ctx as events, departments_ctx as departments:
        yield Harness(bapp, outlet, events, departments)


def year_alert_messages(projects: int = 60, seed: int = 11, partitions: int = 4) -> list[bytes]:
    """What the worker agents send to budget-alerts for a generated year ticked monthly
    (alerts fire, change severity and resolve), in the order they were sent."""
    from connectors.profiles import load_profile
    from connectors.synthetic import Spec, generate

    lines = [line for line in generate(Spec(projects=projects, seed=seed)) if line.strip()]
    bapp, outlet = make_app(load_profile("baseline"), partitions=partitions)

    async def go() -> list[bytes]:
        async with running(bapp, outlet) as h:
            await h.publish(lines)
            for month in range(3, 13):
                await h.tick(f"2025-{month:02d}-28")
            return h.alert_messages

    sent = asyncio.run(go())
    kinds = {orjson.loads(m)["transition"] for m in sent}
    assert {"firing", "resolved"} <= kinds, kinds
    return sent
