"""The JSON the CLI prints with ``--json`` and the API answers: one text, byte for byte."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def json_text(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


class JsonArray:
    """What :func:`json_text` gives for a list, in pieces, item by item: a listing of
    every transition of a province year (~800k) is gigabytes as one list."""

    def __init__(self) -> None:
        self.empty = True

    def items(self, rows: Iterable[Any]) -> str:
        parts = []
        for row in rows:
            parts.append("[\n  " if self.empty else ",\n  ")
            parts.append(json.dumps(row, ensure_ascii=False, indent=2).replace("\n", "\n  "))
            self.empty = False
        return "".join(parts)

    def end(self) -> str:
        return "[]\n" if self.empty else "\n]\n"
