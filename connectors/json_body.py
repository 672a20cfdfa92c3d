"""The events of an HTTP request body: one JSON event, a JSON array, or JSON Lines.

One JSON object (even pretty-printed over several lines) is one event; a JSON array
holds one event per element; anything else is JSON Lines, one per line (a bad line
is rejected on its own, the others still count). Items are numbered from 1 in the
rejection sources.

A large array is split element by element, never decoded whole: the whole tree of
a 29 MB array took 201 MB (measured), element by element 67 MB with every element's
text held. A body broken by a syntax error keeps what came before; the rest, which
cannot be split into events, is kept whole as one rejection saying where the error is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

from connectors.jsonl import BOM, parse_text
from connectors.kept_json import kept_dumps
from connectors.parsed import Parsed, Rejected

# Below this size an array is decoded whole by orjson (0.35 s per 29 MB against 0.45 s
# element by element); above it, memory matters more than the speed.
WHOLE_ARRAY_BYTES = 4 << 20
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class Unsplit:
    """The rest of a body after a JSON syntax error, kept as one rejection."""

    reason: str
    raw: str


def parse_body(body: bytes, origin: str) -> Iterator[Parsed]:
    """Each event of a request body, accepted or rejected, sourced ``origin:<n>``."""
    for number, item in enumerate(split_body(body), start=1):
        source = f"{origin}:{number}"
        if isinstance(item, Unsplit):
            yield Rejected(source, item.reason, item.raw)
        elif text := item.strip():
            yield parse_text(text, source)


def split_body(body: bytes) -> Iterator[bytes | Unsplit]:
    """The event texts of a body (blank JSON Lines included, so numbers stay lines)."""
    body = body.removeprefix(BOM)
    text = body.strip()
    if not text:
        return
    if text[:1] == b"[":
        if len(text) <= WHOLE_ARRAY_BYTES:
            whole = _loads(text)
            if isinstance(whole, list):
                yield from [kept_dumps(item) for item in whole]  # the tree is dropped here
                return
        yield from _json_values(body, array=True)
        return
    if text[:1] == b"{":
        if isinstance(_loads(text), dict):
            yield text
            return
        if text[: text.find(b"\n") + 1].strip() == b"{":  # pretty-printed, not JSON Lines
            yield from _json_values(body, array=False)
            return
    yield from body.splitlines()


def _loads(text: bytes) -> object:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _json_values(body: bytes, *, array: bool) -> Iterator[bytes | Unsplit]:
    """Each JSON value of an array, or of whitespace-separated values, as its own text.

    The body is read as Latin-1, one character per byte and no bigger than the bytes:
    UTF-8 never puts an ASCII byte inside a character, so the boundaries the decoder
    finds are those of the UTF-8 text, and each value's bytes come back exactly as
    sent (bytes that are not UTF-8 too, to be refused as that event's own rejection).
    """
    doc = body.decode("latin-1")
    pos = _skip(doc, 0)
    if array:
        pos = _skip(doc, pos + 1)
        if doc.startswith("]", pos) and _skip(doc, pos + 1) == len(doc):
            return
    number = 0
    while pos < len(doc):
        number += 1
        try:
            _, end = _DECODER.raw_decode(doc, pos)
        except json.JSONDecodeError as err:
            yield _unsplit(body, pos, number, err.pos, f"无法解析（{err.msg}）", array)
            return
        except RecursionError:  # nested deeper than Python's stack (orjson stops at 1,024)
            yield _unsplit(body, pos, number, pos, "嵌套过深，无法解析（nested too deeply）", array)
            return
        yield doc[pos:end].encode("latin-1")
        pos = _skip(doc, end)
        if not array:
            continue
        if doc.startswith(",", pos):
            pos = _skip(doc, pos + 1)
            continue
        if doc.startswith("]", pos):
            after = _skip(doc, pos + 1)
            if after == len(doc):
                return
            yield _unsplit(body, after, number + 1, after, "：数组结尾的 ] 之后还有内容", array, after_end=True)
            return
        if pos == len(doc):  # a body cut short: what was sent of it counted, the rest never came
            yield _unsplit(body, pos, number, pos, "之后缺少结尾的 ]（请求体可能被截断，其后的事件未收到）", array)
            return
        yield _unsplit(body, pos, number, pos, "之后应为逗号或结尾的 ]", array)
        return


def _unsplit(
    body: bytes, pos: int, number: int, error_at: int, problem: str, array: bool, *, after_end: bool = False
) -> Unsplit:
    line = body.count(b"\n", 0, error_at) + 1
    column = len(body[body.rfind(b"\n", 0, error_at) + 1 : error_at].decode("utf-8", errors="replace")) + 1
    what = "JSON 数组" if after_end else (f"JSON 数组的第 {number} 个元素" if array else f"第 {number} 个 JSON 对象")
    rest = body[pos:].decode("utf-8", errors="replace")
    if not rest.strip():  # nothing after it to keep: the body ends there
        return Unsplit(f"{what}（第 {line} 行第 {column} 列）{problem}"
                       f"（invalid JSON at line {line} column {column}: the body ends early）", rest)
    reason = (
        f"{what}（第 {line} 行第 {column} 列）{problem}；此处起的内容无法拆分为事件，"
        f"原文整体保存在这条拒收记录中，修正后只需重新提交这一部分"
        f"（invalid JSON at line {line} column {column}; the rest of the body is kept as one rejection）"
    )
    return Unsplit(reason, rest)


def _skip(doc: str, pos: int) -> int:
    match = _WHITESPACE.match(doc, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()


__all__ = ["Unsplit", "parse_body", "split_body"]
