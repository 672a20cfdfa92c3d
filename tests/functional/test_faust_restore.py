"""A project partition restored from its changelog at any point — even in the middle
of one message's writes — continues exactly as the partition that never stopped."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.profiles import load_profile
from streams.faust_state import CLOCK_KEY, ProjectPartition, event_key, seen_day, tick_value
from tests.builders import day
from tests.strategies import deliveries, event_logs

PROFILE = load_profile("baseline")


def _messages(data: st.DataObject, events: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    delivered = data.draw(deliveries(events))
    ticks = sorted(data.draw(st.lists(st.integers(day("2025-01-01"), day("2025-12-31")), min_size=1, max_size=5)))
    at = sorted(data.draw(st.lists(st.integers(0, len(delivered)), min_size=len(ticks), max_size=len(ticks))))
    messages: list[tuple[str, bytes]] = [(e["project_id"], orjson.dumps(e)) for e in delivered]
    for position, tick in reversed(list(zip(at, ticks, strict=True))):
        messages.insert(position, (CLOCK_KEY, tick_value(dt.date.fromordinal(tick))))
    return messages


def _view(part: ProjectPartition) -> dict[str, Any]:
    monitor = part.monitor
    clock = part.clock
    horizon = (clock if clock is not None else 0) - part.dedup_days
    return {
        "clock": clock,
        "epoch": part.meta.epoch,
        "states": {p: s.to_dict() for p, s in monitor.ledger.projects.items()},
        # department alerts are the department agent's: a project partition keeps none
        "alerts": {a: alert.to_json() for a, alert in monitor.book.alerts.items() if alert.subject_type == "project"},
        "pending": {p: sorted((seq, r.event_id) for seq, r in items) for p, items in part.pending.items() if items},
        # ids past the horizon may outlive a crash between a tick's meta and its tombstones
        "seen": {p: kept for p, ids in part.seen.items()
                 if (kept := {e: v for e, v in ids.items() if seen_day(v) >= horizon})},
        "contributed": part.contributed,
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), events=event_logs(max_events=25))
def test_restored_anywhere_it_continues_exactly(data: st.DataObject, events: list[dict[str, Any]]) -> None:
    messages = _messages(data, events)
    dedup_days = data.draw(st.sampled_from([400, 20]))
    crash = data.draw(st.integers(0, len(messages) - 1))
    live = ProjectPartition(0, PROFILE, dedup_days=dedup_days)
    changelog: dict[str, Any] = {}
    outputs = []
    for offset, (key, raw) in enumerate(messages):
        out = live.handle(offset, key, raw)
        outputs.append(out)
        writes = out.writes
        if offset == crash:  # the worker dies after some of this message's writes
            writes = writes[: data.draw(st.integers(0, len(writes)))]
        if offset <= crash:
            for k, v in writes:
                if v is None:
                    changelog.pop(k, None)
                else:
                    changelog[k] = orjson.loads(orjson.dumps(v))  # what the changelog holds: JSON

    again = ProjectPartition.restore(0, PROFILE, changelog.items(), dedup_days=dedup_days)
    for offset in range(crash, len(messages)):  # at least once: the crashed message comes again
        key, raw = messages[offset]
        out = again.handle(offset, key, raw)
        if offset > crash or out.outcome not in ("redelivered", "duplicate"):
            assert [t.to_json() for t in out.transitions] == [t.to_json() for t in outputs[offset].transitions]
    assert _view(again) == _view(live)


def test_an_event_costs_one_small_record_however_many_came_before() -> None:
    part = ProjectPartition(0, PROFILE)
    register = [
        {"type": "project_registered", "event_id": "R", "occurred_on": "2025-01-02", "project_id": "P",
         "fiscal_year": 2025, "name": "项目", "department_id": "D", "department_name": "局", "fund_source": "general"},
        {"type": "budget_approved", "event_id": "A", "occurred_on": "2025-01-02", "project_id": "P",
         "amount": "100000.00"},
    ]
    offset = 0
    for e in register:
        part.handle(offset, "P", orjson.dumps(e))
        offset += 1
    sizes = []
    for n in range(200):
        payment = {"type": "payment", "event_id": f"PAY{n:04d}", "occurred_on": "2025-03-01", "project_id": "P",
                   "amount": "1.00"}
        out = part.handle(offset, "P", orjson.dumps(payment))
        offset += 1
        if n % 50 == 49:
            part.handle(offset, CLOCK_KEY, tick_value(dt.date(2025, 3, 1)))
            offset += 1
        ((key, value),) = out.writes  # the entry alone: no meta per event
        assert key == event_key("P", f"PAY{n:04d}")
        assert isinstance(value["seq"], int) and value["offset"] == offset - 1 - (n % 50 == 49)
        sizes.append(len(orjson.dumps({k: v for k, v in value.items() if k not in ("seq", "offset")})))
    # the changelog record does not grow with the project's history (but for the digits
    # of its arrival seq and offset)
    assert len(set(sizes)) == 1
    assert part.monitor.ledger.projects["P"].paid == 200 * 100


def test_ids_past_the_dedup_horizon_get_tombstones_after_the_tick_commits() -> None:
    part = ProjectPartition(0, PROFILE, dedup_days=10)
    table: dict[str, Any] = {}  # the compacted changelog: the last value of each key

    def handle(offset: int, key: str, raw: bytes) -> Any:
        out = part.handle(offset, key, raw)
        for k, v in out.writes:
            if v is None:
                table.pop(k, None)
            else:
                table[k] = v
        return out

    payment = {"type": "payment", "event_id": "OLD", "occurred_on": "2025-02-01", "project_id": "P",
               "amount": "1.00"}
    handle(0, "P", orjson.dumps(payment))
    handle(1, CLOCK_KEY, tick_value(dt.date(2025, 2, 1)))
    later = {**payment, "event_id": "NEW", "occurred_on": "2025-03-01"}
    handle(2, "P", orjson.dumps(later))
    assert part.dedup_memory() == 2
    out = handle(3, CLOCK_KEY, tick_value(dt.date(2025, 3, 1)))
    keys = [k for k, _ in out.writes]
    assert keys[-1] == event_key("P", "OLD") and out.writes[-1][1] is None
    assert keys.index("__partition__:0") < keys.index(event_key("P", "OLD"))
    assert set(part.seen["P"]) == {"NEW"}
    assert part.dedup_memory() == 1  # the gauge's count follows the tombstone
    again = ProjectPartition.restore(0, PROFILE, table.items(), dedup_days=10)
    assert set(again.seen["P"]) == {"NEW"} and again.dedup_memory() == 1
    assert part.handle(4, "P", orjson.dumps(payment)).outcome == "rejected"  # too old to check
    again = ProjectPartition.restore(0, PROFILE, [(k, v) for k, v in out.writes if v is not None], dedup_days=10)
    assert again.dedup_memory() == 0  # only the tick's own values: no event entry among them
