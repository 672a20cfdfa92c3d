"""A fast path for the common, plainly valid events: the same :class:`Record` as the
pydantic models (``parse_event(raw).to_record()``), or ``None`` to say "ask them".

Ingest spends most of its time in pydantic for events that are simple: payments,
reversals, approvals, adjustments and indicator reports are ~95% of a fiscal year.
:func:`fast_record` decodes such a line with orjson and checks it with the *same*
rules as the models (it calls the same ``parse_day`` and ``to_fen``); whenever
anything is unusual — another type, a missing or mistyped field, whitespace to
strip, a number where a string is expected, an amount out of range, bad JSON — it
returns ``None`` and the caller runs the pydantic path, which accepts or rejects
with its reason. So it never rejects and never accepts what the models would
reject; ``tests/unit/test_fast_events.py`` checks with hypothesis that whenever it
answers, it answers exactly what the models answer.

Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from budget.events import Record, parse_day
from budget.money import MoneyError, to_fen

_TEXT_MAX = 200  # events.Text: min_length=1, max_length=200 (after stripping)
# A plain yuan decimal: exactly what Decimal * 100 turns into this many fen.
# Up to 13 whole digits: below money.MAX_FEN, so no bound check is needed here.
_PLAIN_AMOUNT = re.compile(r"(-?)(0|[1-9][0-9]{0,12})(?:\.([0-9]{1,2}))?")

# type -> (amount rule, optional string detail fields in model order)
#   amount rule: "gt0" (> 0), "ge0" (>= 0), "any" (signed), None (no amount field)
_SHAPES: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "payment": ("gt0", ("payee", "method")),
    "payment_reversed": ("gt0", ("original_event_id",)),
    "budget_approved": ("ge0", ()),
    "budget_adjusted": ("any", ("reason",)),
    "indicator_reported": (None, ()),
}

_days: dict[str, int] = {}


def _plain(value: object) -> bool:
    """A str that ``str_strip_whitespace`` leaves as it is (Python's str.strip removes
    every character pydantic-core trims, and more)."""
    return type(value) is str and value == value.strip()


def _text(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= _TEXT_MAX and value == value.strip()


def _day(value: object) -> int | None:
    if not isinstance(value, str):
        return None
    day = _days.get(value)
    if day is None:
        try:
            day = parse_day(value).toordinal()
        except ValueError:
            return None
        if len(_days) > 8192:
            _days.clear()
        _days[value] = day
    return day


def _fen(value: object) -> int | None:
    if isinstance(value, str):
        match = _PLAIN_AMOUNT.fullmatch(value)
        if match is not None:
            sign, whole, part = match.groups()
            fen = int(whole) * 100 + (int(part) * (10 if len(part) == 1 else 1) if part else 0)
            return -fen if sign else fen
    elif isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return to_fen(value)
    except MoneyError:
        return None


def fast_record(raw: bytes | str) -> Record | None:
    """The record the pydantic models would give for ``raw``, or None (then ask them)."""
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict:
        return None
    kind = data.get("type")
    shape = _SHAPES.get(kind) if isinstance(kind, str) else None
    if shape is None:
        return None
    event_id = data.get("event_id")
    project_id = data.get("project_id")
    if not (_text(event_id) and _text(project_id)):
        return None
    day = _day(data.get("occurred_on"))
    if day is None:
        return None
    rule, optional = shape
    amount: int | None = None
    details: dict[str, Any] | None = None
    if rule is not None:
        amount = _fen(data.get("amount"))
        if amount is None or (rule == "gt0" and amount <= 0) or (rule == "ge0" and amount < 0):
            return None
        for name in optional:
            value = data.get(name)
            if value is None:
                continue
            if not _plain(value):
                return None
            if details is None:
                details = {}
            details[name] = value
    else:  # indicator_reported: indicator_id (Text) and actual (bool or a finite float)
        indicator_id = data.get("indicator_id")
        actual = data.get("actual")
        if not _text(indicator_id):
            return None
        if not (actual is True or actual is False or (type(actual) is float and math.isfinite(actual))):
            return None
        details = {"indicator_id": indicator_id, "actual": actual}
    return Record(kind, event_id, day, project_id, amount, details)  # type: ignore[arg-type]
