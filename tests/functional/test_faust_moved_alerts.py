"""A firing alert that follows its subject without a transition — a project
re-registered under another department, a renamed department (机构改革) — reaches
budget-alerts as a ``moved`` message: the alert as the embedded store rewrites it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from budget.calendar import to_day
from budget.events import parse_day
from connectors.jsonl import parse_lines
from connectors.profiles import load_profile
from streams.alert_sink import TRANSITION_ONLY
from streams.engine import Engine
from streams.faust_state import MOVED
from streams.ingest import ingest
from streams.store import Store
from tests import builders as b
from tests.functional.faust_harness import make_app, running

R, A, P = b.registered, b.approved, b.payment
BEFORE = [R("P1", department_id="D01", department_name="教育局"), A("P1", "1000.00"),
          P("P1", "100.00", on="2025-03-01"),
          R("P2", department_id="D03", department_name="交通局"), A("P2", "1000.00")]
# 07-20: P1 moves to D02 (its alerts stay firing); D03 is renamed (its alert stays firing)
MOVES = [R("P1", on="2025-07-20", department_id="D02", department_name="卫健委", event_id="P1-MOVE"),
         R("P2", on="2025-07-20", department_id="D03", department_name="交通运输局", event_id="P2-RENAME")]
STEPS: list[tuple[str, Any]] = [("events", BEFORE), ("tick", "2025-07-15"), ("events", MOVES), ("tick", "2025-08-01")]
WATCHED = ("2025:low_execution:project:P1", "2025:department_low_execution:department:D03")


Steps = list[tuple[str, Any]]


def embedded_alerts(tmp_path: Path, steps: Steps) -> dict[str, dict[str, Any]]:
    with Store(str(tmp_path / "bw.db")) as store:
        engine = Engine(store, load_profile("baseline"), dispositions=False)
        for kind, arg in steps:
            if kind == "events":
                ingest(store, parse_lines(b.jsonl(arg).splitlines(), "t.jsonl"))
            else:
                engine.run(to_day(parse_day(arg)))
        return {a["alert_id"]: a for a in store.alert_rows()}


def worker_messages(steps: Steps) -> tuple[list[dict[str, Any]], Any]:
    bapp, outlet = make_app(load_profile("baseline"), partitions=2)

    async def go() -> list[bytes]:
        async with running(bapp, outlet) as h:
            for kind, arg in steps:
                if kind == "events":
                    await h.publish(b.jsonl(arg).splitlines())
                else:
                    await h.tick(arg)
            return h.alert_messages

    return [orjson.loads(m) for m in asyncio.run(go())], bapp


def test_a_moved_or_renamed_alert_is_sent_as_the_embedded_store_keeps_it(tmp_path: Path) -> None:
    expected = embedded_alerts(tmp_path, STEPS)
    assert (expected[WATCHED[0]]["department_id"], expected[WATCHED[0]]["status"]) == ("D02", "firing")
    assert expected[WATCHED[1]]["department_name"] == "交通运输局"
    messages, bapp = worker_messages(STEPS)
    latest: dict[str, dict[str, Any]] = {}
    for message in messages:
        latest[message["alert_id"]] = message
    for alert_id in WATCHED:
        sent = latest[alert_id]
        assert (sent["transition"], sent["date"], sent["previous_severity"]) == (MOVED, "2025-07-20", None)
        assert {k: v for k, v in sent.items() if k not in TRANSITION_ONLY} == expected[alert_id]
    # every alert's latest message is the embedded store's alert, moved or not
    assert {a: {k: v for k, v in m.items() if k not in TRANSITION_ONLY} for a, m in latest.items()} == expected
    # a rewrite is not a transition: the transitions counter leaves it out
    counted = sum(
        sample.value
        for metric in bapp.metrics.registry.collect() if metric.name == "budget_stream_alert_transitions"
        for sample in metric.samples if sample.name.endswith("_total")
    )
    assert counted == sum(1 for m in messages if m["transition"] != MOVED) > 0


def test_an_alert_with_a_transition_on_the_day_it_moved_is_sent_once() -> None:
    """P1 moves on 07-20 and a payment the same day resolves its low_execution: the
    resolution carries the new department, and no `moved` message repeats it."""
    paid = P("P1", "300.00", on="2025-07-20", event_id="P1-PAY-0720")
    messages, _ = worker_messages([*STEPS[:2], ("events", [*MOVES, paid]), STEPS[3]])
    on_move = [(m["alert_id"], m["transition"], m["department_id"]) for m in messages
               if m["date"] == "2025-07-20" and m["subject_id"] == "P1"]
    assert ("2025:low_execution:project:P1", "resolved", "D02") in on_move
    assert not [m for m in on_move if m[0] == "2025:low_execution:project:P1" and m[1] == MOVED]
