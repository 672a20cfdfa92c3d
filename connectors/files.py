"""Read any supported input file: JSON Lines, CSV, XLSX."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from connectors.jsonl import read_jsonl
from connectors.parsed import Parsed
from connectors.tabular import Layout, Unit, read_table

SUFFIXES = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".csv": "table", ".xlsx": "table", ".xlsm": "table",
}


class InputError(ValueError):
    """An input file that cannot be read at all (missing, unknown format)."""


def read_events(path: Path, *, layout: Layout = "auto", unit: Unit = "auto") -> Iterator[Parsed]:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InputError(
            f"{path}: unknown file type {path.suffix!r}; use .jsonl (contract events), .csv or .xlsx"
        )
    if kind == "jsonl":
        return read_jsonl(path)
    return read_table(path, layout=layout, unit=unit)
