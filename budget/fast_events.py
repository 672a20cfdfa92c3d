"""A fast path for the common, plainly valid events: the same :class:`Record` as the
pydantic models (``parse_event(raw).to_record()``), or ``None`` to say "ask them".

Ingest spends most of its time in pydantic for events that are simple: payments,
reversals, approvals, adjustments and indicator reports are ~90% of a fiscal year,
registrations and indicator definitions most of the rest.
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

from budget.events import (
    EARLIEST_YEAR,
    LATEST_YEAR,
    MAX_WEIGHT,
    Category,
    Direction,
    FundSource,
    ProjectKind,
    Record,
    parse_day,
)
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
    "project_registered": (None, ()),
    "indicator_defined": (None, ()),
}
_FUND_SOURCES = frozenset(m.value for m in FundSource)
_PROJECT_KINDS = frozenset(m.value for m in ProjectKind)
_DIRECTIONS = frozenset(m.value for m in Direction)
_CATEGORIES = frozenset(m.value for m in Category)
_PLAN_MONTHS = 12
_EXACT_INT_FLOAT = 2**53  # a JSON integer the models turn into a float of the same value

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
    elif kind == "project_registered":
        details = _registration(data)
        if details is None:
            return None
    elif kind == "indicator_defined":
        details = _definition(data)
        if details is None:
            return None
    else:  # indicator_reported: indicator_id (Text) and actual (bool or a finite float)
        indicator_id = data.get("indicator_id")
        actual = data.get("actual")
        if not _text(indicator_id):
            return None
        if not (actual is True or actual is False or (type(actual) is float and math.isfinite(actual))):
            return None
        details = {"indicator_id": indicator_id, "actual": actual}
    return Record(kind, event_id, day, project_id, amount, details)  # type: ignore[arg-type]


def _member(value: object, values: frozenset[str]) -> bool:
    """An enum's value exactly as the models accept it unchanged (a list is not hashable)."""
    return type(value) is str and value in values


def _number(value: object) -> float | None:
    """A JSON number as the models' ``float`` field takes it (a finite float, or an int
    turned into the float of the same value); None for anything else."""
    if type(value) is float:
        return value if math.isfinite(value) else None
    if type(value) is int and -_EXACT_INT_FLOAT <= value <= _EXACT_INT_FLOAT:
        return float(value)
    return None


def _registration(data: dict[str, Any]) -> dict[str, Any] | None:
    """ProjectRegistered.details() for a plainly valid registration, else None."""
    year = data.get("fiscal_year")
    if type(year) is not int or not EARLIEST_YEAR <= year <= LATEST_YEAR:
        return None
    name, department_id, department_name = data.get("name"), data.get("department_id"), data.get("department_name")
    if not (_text(name) and _text(department_id) and _text(department_name)):
        return None
    fund_source = data.get("fund_source")
    kind = data.get("kind", "project")
    if not (_member(fund_source, _FUND_SOURCES) and _member(kind, _PROJECT_KINDS)):
        return None
    details: dict[str, Any] = {
        "fiscal_year": year, "name": name, "department_id": department_id,
        "department_name": department_name, "fund_source": fund_source, "kind": kind,
    }
    plan = data.get("spending_plan")
    if plan is not None:
        if type(plan) is not list or len(plan) != _PLAN_MONTHS:
            return None
        previous = 0.0
        for fraction in plan:  # cumulative fractions 0-1, as the model's validator wants
            if type(fraction) is not float or not previous <= fraction <= 1.0:
                return None
            previous = fraction
        details["spending_plan"] = plan
    return details


def _definition(data: dict[str, Any]) -> dict[str, Any] | None:
    """IndicatorDefined.details() for a plainly valid definition, else None."""
    indicator_id, name = data.get("indicator_id"), data.get("name")
    if not (_text(indicator_id) and _text(name)):
        return None
    target = _number(data.get("target"))
    weight = _number(data.get("weight", 1.0))
    if target is None or weight is None or not 0.0 < weight <= MAX_WEIGHT:
        return None
    unit = data.get("unit")
    direction = data.get("direction", "higher_better")
    category = data.get("category")
    if (unit is not None and not _plain(unit)) or not _member(direction, _DIRECTIONS) or (
        category is not None and not _member(category, _CATEGORIES)
    ):
        return None
    details: dict[str, Any] = {"indicator_id": indicator_id, "name": name, "target": target}
    if unit is not None:
        details["unit"] = unit
    details["direction"] = direction
    details["weight"] = weight
    if category is not None:
        details["category"] = category
    return details
