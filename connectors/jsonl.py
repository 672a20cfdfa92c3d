"""JSON Lines in the contract format: one event object per line."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from budget.events import EventRejected, parse_event
from budget.fast_events import fast_record
from connectors.parsed import Accepted, Parsed, Rejected

BOM = b"\xef\xbb\xbf"  # Windows editors start UTF-8 files with it


def parse_lines(lines: Iterable[bytes], origin: str, *, first_line: int = 1) -> Iterator[Parsed]:
    for number, line in enumerate(lines, start=first_line):
        text = line.strip()
        if number == first_line:
            text = text.removeprefix(BOM).strip()
        if text:
            yield parse_text(text, f"{origin}:{number}")


def parse_text(text: bytes, source: str) -> Parsed:
    """One event's JSON text, already stripped, as an accepted record or a rejection."""
    record = fast_record(text)  # the common shapes without pydantic, identical result
    if record is not None:
        return Accepted(record, source)
    try:
        event = parse_event(text)
    except EventRejected as err:
        return _rejected(text, source, err.reason)
    return Accepted(event.to_record(), source)


def _rejected(text: bytes, source: str, reason: str) -> Rejected:
    try:
        raw = text.decode("utf-8")
    except UnicodeDecodeError as err:
        # JSON is UTF-8 (RFC 8259); a GBK export is refused, but named, and kept readable.
        try:
            raw = text.decode("gb18030")
        except UnicodeDecodeError:
            return Rejected(
                source,
                f"不是 UTF-8 编码（第 {err.start + 1} 字节起无法解码）；请以 UTF-8 重新导出后提交"
                f"（not UTF-8 at byte {err.start + 1}）",
                text.decode("utf-8", errors="replace"),
            )
        return Rejected(
            source,
            "不是 UTF-8 编码：内容可按 GBK/GB18030 解码，请转换为 UTF-8（如 "
            "iconv -f GB18030 -t UTF-8）后重新提交；原文已按 GB18030 解码保存"
            f"（not UTF-8, looks like GBK/GB18030 from byte {err.start + 1}）",
            raw,
        )
    return Rejected(source, reason, raw)


def read_jsonl(path: Path) -> Iterator[Parsed]:
    with path.open("rb") as handle:
        yield from parse_lines(handle, str(path))
