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
        if not text:
            continue
        source = f"{origin}:{number}"
        record = fast_record(text)  # the common shapes without pydantic, identical result
        if record is not None:
            yield Accepted(record, source)
            continue
        try:
            event = parse_event(text)
        except EventRejected as err:
            yield Rejected(source, err.reason, text.decode("utf-8", errors="replace"))
            continue
        yield Accepted(event.to_record(), source)


def read_jsonl(path: Path) -> Iterator[Parsed]:
    with path.open("rb") as handle:
        yield from parse_lines(handle, str(path))
