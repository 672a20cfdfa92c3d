"""Splitting a POST /events body into events: arrays, JSON Lines, broken JSON, encodings."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import orjson
import pytest

from connectors import json_body
from connectors.json_body import Unsplit, parse_body, split_body
from connectors.parsed import Accepted, Rejected


def payment(n: int, **extra: Any) -> dict[str, Any]:
    return {"type": "payment", "event_id": f"PAY-{n}", "occurred_on": "2026-03-0" + str(1 + n % 9),
            "project_id": f"P{n % 7}", "amount": f"{n}.50", **extra}


def sources(parsed: list[Any]) -> list[tuple[str, str]]:
    return [(p.source, "ok" if isinstance(p, Accepted) else "rejected") for p in parsed]


def test_json_lines_an_object_and_an_array_with_or_without_a_bom() -> None:
    assert list(split_body(b'{"a":1}\n{"b":2}\n')) == [b'{"a":1}', b'{"b":2}']
    assert list(split_body(b'\xef\xbb\xbf{"a":1}\n{"b":2}\n')) == [b'{"a":1}', b'{"b":2}']
    assert list(split_body(b'\xef\xbb\xbf{"a":\n 1}')) == [b'{"a":\n 1}']
    assert list(split_body(b'\xef\xbb\xbf[{"a":1}]')) == [b'{"a":1}']
    assert list(split_body(b" [ ] \n")) == []


@pytest.mark.parametrize("pretty", [False, True])
def test_an_array_split_element_by_element_gives_the_events_of_the_whole(
    monkeypatch: pytest.MonkeyPatch, pretty: bool
) -> None:
    events = [payment(n, note="项目“一”\\n", details={"nested": [1, {"x": "]"}]}) for n in range(50)]
    body = json.dumps(events, ensure_ascii=False, indent=2 if pretty else None).encode()
    whole = [orjson.loads(t) for t in split_body(body)]
    monkeypatch.setattr(json_body, "WHOLE_ARRAY_BYTES", 0)
    by_element = [orjson.loads(t) for t in split_body(body)]  # type: ignore[arg-type]
    assert whole == by_element == events


def test_one_nan_element_is_rejected_on_its_own() -> None:
    body = b"[" + orjson.dumps(payment(1)) + b',{"type":"payment","event_id":"X","occurred_on":' \
        b'"2026-03-01","project_id":"P1","amount":NaN},' + orjson.dumps(payment(3)) + b"]"
    parsed = list(parse_body(body, "http:r"))
    assert sources(parsed) == [("http:r:1", "ok"), ("http:r:2", "rejected"), ("http:r:3", "ok")]
    assert "amount" in parsed[1].reason and "NaN" in parsed[1].raw


def test_a_pretty_printed_array_broken_midway_keeps_the_elements_before_it() -> None:
    good = json.dumps([payment(1), payment(2)], indent=2)
    broken = good[:-2] + ',\n  {\n    "type": "payment"\n    "event_id": "B"\n  },\n' + \
        json.dumps(payment(4)) + "\n]"
    parsed = list(parse_body(broken.encode(), "http:r"))
    assert sources(parsed) == [("http:r:1", "ok"), ("http:r:2", "ok"), ("http:r:3", "rejected")]
    error_line = broken.splitlines().index('    "event_id": "B"') + 1
    assert f"第 3 个元素（第 {error_line} 行" in parsed[2].reason
    assert parsed[2].raw.startswith('{\n    "type": "payment"') and '"PAY-4"' in parsed[2].raw


def test_a_pretty_printed_object_with_an_error_is_one_rejection_not_its_lines() -> None:
    body = b'{\n  "type": "payment",\n  "event_id": "E1"\n  "project_id": "P1"\n}\n'
    parsed = list(parse_body(body, "http:r"))
    assert sources(parsed) == [("http:r:1", "rejected")]
    assert "第 1 个 JSON 对象（第 4 行第 3 列）" in parsed[0].reason
    assert parsed[0].raw == body.decode()


def test_pretty_printed_objects_one_after_another_are_each_an_event() -> None:
    body = "\n".join(json.dumps(payment(n), indent=2) for n in range(3)).encode()
    assert [orjson.loads(t)["event_id"] for t in split_body(body)] == ["PAY-0", "PAY-1", "PAY-2"]


@pytest.mark.parametrize(("tail", "problem"), [("", "缺少结尾的 ]"), (" x", "应为逗号或结尾的 ]")])
def test_an_array_that_does_not_end_well_says_so_after_its_last_event(tail: str, problem: str) -> None:
    body = ("[" + json.dumps(payment(1)) + "," + json.dumps(payment(2)) + tail).encode()
    parsed = list(parse_body(body, "http:r"))
    assert sources(parsed) == [("http:r:1", "ok"), ("http:r:2", "ok"), ("http:r:3", "rejected")]
    assert problem in parsed[2].reason and parsed[2].raw == tail.strip()


def test_a_gbk_event_is_refused_naming_the_encoding_and_kept_readable() -> None:
    event = json.dumps(payment(1, name="教育局项目"), ensure_ascii=False)
    for body in (event.encode("gbk"), b"[" + event.encode("gbk") + b"]"):
        (parsed,) = parse_body(body, "http:r")
        assert isinstance(parsed, Rejected)
        assert "GBK/GB18030" in parsed.reason and "UTF-8" in parsed.reason
        assert parsed.raw == event


def test_bytes_that_are_no_known_encoding_are_refused_with_their_offset() -> None:
    (parsed,) = parse_body(b'{"type":"payment","x":"\xff\xff"}', "http:r")
    assert isinstance(parsed, Rejected) and "第 24 字节" in parsed.reason


def test_a_large_array_is_never_decoded_whole() -> None:
    events = [payment(n) for n in range(40_000)]
    body = orjson.dumps(events)
    assert len(body) > json_body.WHOLE_ARRAY_BYTES
    tracemalloc.start()
    try:
        count = sum(1 for _ in split_body(body))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == len(events)
    assert peak < 1.5 * len(body), f"{peak / len(body):.1f}× the body held at once"


def test_unsplit_is_what_parse_body_turns_into_a_rejection() -> None:
    items = list(split_body(b"[1, }"))
    assert items[0] == b"1" and isinstance(items[1], Unsplit)


def test_the_column_of_an_error_counts_characters_not_bytes() -> None:
    text = '[{"name": "教育局项目" "x": 1}]'
    (parsed,) = parse_body(text.encode(), "http:r")
    assert isinstance(parsed, Rejected)
    column = text.index('"x"') + 1
    assert f"（第 1 行第 {column} 列）" in parsed.reason
    assert parsed.raw == text[1:]


def test_arrays_cut_short_nested_too_deep_or_followed_by_more_say_exactly_that() -> None:
    cut = list(parse_body(b'[{"a":1},{"b":2}', "r"))
    assert cut[-1].reason.startswith("JSON 数组的第 2 个元素（第 1 行第 17 列）之后缺少结尾的 ]（请求体可能被截断")
    assert cut[-1].raw == "" and "此处起" not in cut[-1].reason
    after = list(parse_body(b'[{"a":1}]\nx', "r"))
    assert after[-1].reason.startswith("JSON 数组（第 2 行第 1 列）：数组结尾的 ] 之后还有内容")
    assert after[-1].raw == "x"
    deep = list(parse_body(b'[{"a":1},' + b"[" * 5000 + b"]" * 5000 + b"]", "r"))
    assert len(deep) == 2 and "嵌套过深" in deep[1].reason and deep[1].raw.startswith("[[[")
