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
        raise InputError(f"{path}：文件不存在，请检查路径（no such file）")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InputError(
            f"{path}：不支持的文件类型 {path.suffix!r}，请使用 .jsonl（契约格式事件）、.csv 或 .xlsx；"
            f".xls 请先用 Excel 或 WPS 另存为 .xlsx（unknown file type {path.suffix!r})"
        )
    if kind == "jsonl":
        return read_jsonl(path)
    return read_table(path, layout=layout, unit=unit)
