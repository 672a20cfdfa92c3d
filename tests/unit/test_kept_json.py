"""JSON bytes that stay in memory take the memory of their length, not orjson's buffer."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from connectors.kept_json import kept_dumps
from streams.faust_app import _write

# A project body of the Faust tables, abridged: ~300 bytes, as most are.
VALUE: dict[str, Any] = {
    "state": {"project_id": "P2025000001", "fiscal_year": 2025, "name": "2025年青石镇农田水利项目",
              "approved": 206940000, "payments": 248833008, "indicators": []},
    "alerts": [],
    "contributed": [2025, "D287", 206940000, 248833008, 1, False, False],
}
COPIES = 400
# A bytes object's header, its slot in a list and the allocators' rounding; orjson's own
# buffer is 4 KiB and more.
OVERHEAD = 120


def traced_bytes_per_value(make: Callable[[], bytes]) -> tuple[float, int]:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [make() for _ in range(COPIES)]
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (after - before) / COPIES, len(kept[0])


def test_kept_dumps_is_orjson_output_byte_for_byte() -> None:
    assert kept_dumps(VALUE) == orjson.dumps(VALUE)
    assert kept_dumps(VALUE, option=orjson.OPT_SORT_KEYS) == orjson.dumps(VALUE, option=orjson.OPT_SORT_KEYS)
    assert orjson.loads(kept_dumps(VALUE)) == VALUE


@pytest.mark.parametrize("size", [10, 300, 3_000])
def test_a_kept_value_holds_no_more_than_its_length(size: int) -> None:
    value = {**VALUE, "name": "项" * size}
    per_value, length = traced_bytes_per_value(lambda: kept_dumps(value))
    assert per_value <= length + OVERHEAD, f"{per_value:.0f} bytes held for {length} bytes of JSON"


def test_faust_table_values_are_right_sized() -> None:
    table: dict[str, bytes] = {}

    def write_all() -> bytes:
        _write(table, [("P1", VALUE)])  # type: ignore[arg-type]
        return table.pop("P1")

    per_value, length = traced_bytes_per_value(write_all)
    assert per_value <= length + OVERHEAD, f"{per_value:.0f} bytes held for {length} bytes of JSON"


def test_a_none_value_deletes_the_key_as_a_tombstone() -> None:
    table: dict[str, bytes] = {"P1": b"{}", "P2": b"{}"}
    _write(table, [("P1", None), ("P3", None)])  # type: ignore[arg-type]
    assert table == {"P2": b"{}"}


def test_the_events_of_a_posted_array_are_right_sized_until_ingested() -> None:
    from connectors.json_body import split_body

    body = orjson.dumps([{**VALUE, "event_id": f"E{i}"} for i in range(COPIES)])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        events = list(split_body(body))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert [orjson.loads(e)["event_id"] for e in events] == [f"E{i}" for i in range(COPIES)]
    length = max(len(e) for e in events)
    assert held / COPIES <= length + OVERHEAD, f"{held / COPIES:.0f} bytes held per {length}-byte event"
