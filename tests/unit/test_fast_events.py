"""The ingest fast path answers exactly what the pydantic models answer, or nothing."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budget.events import EventRejected, parse_event
from budget.fast_events import fast_record
from connectors.synthetic import Spec, generate

TYPES = ["payment", "payment_reversed", "budget_approved", "budget_adjusted", "indicator_reported",
         "project_registered", "indicator_defined", "grant", ""]

texts = st.one_of(
    st.sampled_from(["P1", "V2025-000123", "某建设公司", "国库集中支付", "", " P1", "P1 ", "\tx",
                     "x\u3000", "a\x1c", "\x85b", "x" * 200, "y" * 201]),
    st.text(max_size=12),
)
amounts = st.one_of(
    st.sampled_from(["1500000.00", "0.01", "0.5", "12", "-3.20", "0", "-0.00", "0.00", "1.005",
                     " 5.00", "1,000.00", "1e3", "abc", "", "NaN", "Infinity", "00.10", "99999999999999999999.99",
                     "-", ".5", "5.", "+5.00", "１２"]),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.booleans(),
    st.none(),
    st.decimals(min_value=-(10**9), max_value=10**9, places=2).map(str),
)
days = st.one_of(
    st.sampled_from(["2025-03-18", "2025-02-30", "2025-03-18T10:00:00", "2025-03-18T10:00:00Z",
                     " 2025-03-18", "1989-12-31", "2101-01-01", "2025-W01-1", "20250318", "", "x"]),
    st.dates().map(lambda d: d.isoformat()),
    st.integers(-(2**63), 2**63 - 1),
)
actuals = st.one_of(st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
                    st.integers(min_value=-5, max_value=5), st.text(max_size=3), st.none())
optional = st.one_of(st.none(), texts, st.integers(-(2**63), 2**63 - 1), st.booleans())
numbers = st.one_of(st.floats(), st.integers(-(2**60), 2**60), st.sampled_from([0, 1, 2**53, 2**53 + 1, 1e-300]),
                    st.booleans(), st.none(), st.text(max_size=4))
years = st.one_of(st.integers(1985, 2105), st.sampled_from([2025.0, "2025", True]), st.none())
enum_values = st.one_of(
    st.sampled_from(["general", "government_fund", "state_capital", "social_insurance", "project",
                     "department_overall", "higher_better", "lower_better", "boolean", "output",
                     "effect", "satisfaction", " general", "GENERAL", "", "other"]),
    st.none(), st.integers(0, 3), st.lists(st.just("general"), max_size=1),
)
fractions = st.one_of(st.floats(min_value=-0.1, max_value=1.1), st.sampled_from([0, 1, 0.0, 1.0, True]))
plans = st.one_of(
    st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=12, max_size=12).map(sorted),
    st.lists(fractions, min_size=11, max_size=13),
    st.none(), st.text(max_size=3),
)

MISSING = object()


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, st.just(MISSING))


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    fields = {
        "type": draw(st.one_of(st.sampled_from(TYPES), st.integers(-(2**63), 2**63 - 1))),
        "event_id": draw(maybe(texts)),
        "occurred_on": draw(maybe(days)),
        "project_id": draw(maybe(texts)),
        "amount": draw(maybe(amounts)),
        "payee": draw(maybe(optional)),
        "method": draw(maybe(optional)),
        "reason": draw(maybe(optional)),
        "original_event_id": draw(maybe(optional)),
        "indicator_id": draw(maybe(texts)),
        "actual": draw(maybe(actuals)),
        "extra": draw(maybe(st.integers(-(2**63), 2**63 - 1))),
        "fiscal_year": draw(maybe(years)),
        "name": draw(maybe(texts)),
        "department_id": draw(maybe(texts)),
        "department_name": draw(maybe(texts)),
        "fund_source": draw(maybe(enum_values)),
        "kind": draw(maybe(enum_values)),
        "spending_plan": draw(maybe(plans)),
        "target": draw(maybe(numbers)),
        "unit": draw(maybe(optional)),
        "direction": draw(maybe(enum_values)),
        "weight": draw(maybe(numbers)),
        "category": draw(maybe(enum_values)),
    }
    return {k: v for k, v in fields.items() if v is not MISSING}


VALID: dict[str, dict[str, Any]] = {
    "payment": {"amount": "125000.00", "payee": "某建设公司", "method": "国库集中支付"},
    "payment_reversed": {"amount": "10.50", "original_event_id": "V1"},
    "budget_approved": {"amount": "1500000.00"},
    "budget_adjusted": {"amount": "-20000.00", "reason": "年中调减"},
    "indicator_reported": {"indicator_id": "I1", "actual": 0.75},
    "project_registered": {"fiscal_year": 2025, "name": "2025年农田水利项目", "department_id": "D1",
                           "department_name": "青石镇人民政府", "fund_source": "general",
                           "spending_plan": [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]},
    "indicator_defined": {"indicator_id": "I0", "name": "是否按期投入使用", "target": 1.0, "unit": "",
                          "direction": "boolean", "weight": 2, "category": "effect"},
}
GENERATORS: dict[str, st.SearchStrategy[Any]] = {
    "event_id": texts, "project_id": texts, "occurred_on": days, "amount": amounts,
    "payee": optional, "method": optional, "reason": optional, "original_event_id": optional,
    "indicator_id": texts, "actual": actuals, "type": st.sampled_from(TYPES),
    "fiscal_year": years, "name": texts, "department_id": texts, "department_name": texts,
    "fund_source": enum_values, "kind": enum_values, "spending_plan": plans, "target": numbers,
    "unit": optional, "direction": enum_values, "weight": numbers, "category": enum_values,
}


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event of a fast-path type with up to three fields changed or dropped."""
    kind = draw(st.sampled_from(sorted(VALID)))
    event: dict[str, Any] = {"type": kind, "event_id": "E1", "occurred_on": "2025-03-18",
                             "project_id": "P1", **VALID[kind]}
    for name in draw(st.lists(st.sampled_from(sorted(GENERATORS)), max_size=3)):
        if draw(st.integers(0, 5)) == 0:
            event.pop(name, None)
        else:
            event[name] = draw(GENERATORS[name])
    return event


def pydantic_answer(raw: bytes) -> Any:
    try:
        return parse_event(raw).to_record()
    except EventRejected:
        return "rejected"


def check(raw: bytes) -> bool:
    fast = fast_record(raw)
    if fast is None:
        return False
    assert fast == pydantic_answer(raw), raw
    # The stored form (details JSON) is the same too, key order included.
    slow = parse_event(raw).to_record()
    assert orjson.dumps(fast.details) == orjson.dumps(slow.details)
    assert [type(v) for v in fast] == [type(v) for v in slow]
    return True


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(events(), near_valid()))
def test_fast_path_agrees_with_the_models(event: dict[str, Any]) -> None:
    check(orjson.dumps(event))


@settings(max_examples=500, deadline=None)
@given(st.one_of(events(), near_valid()), st.booleans())
def test_fast_path_agrees_on_any_json_spelling(event: dict[str, Any], ascii_only: bool) -> None:
    check(json.dumps(event, ensure_ascii=ascii_only, indent=1).encode())


@given(st.binary(max_size=40))
def test_garbage_is_left_to_the_models(raw: bytes) -> None:
    check(raw)


def test_a_generated_year_takes_the_fast_path_and_agrees() -> None:
    lines = list(generate(Spec(projects=60, seed=5, payments_per_project=10)))
    fast = sum(check(line) for line in lines)
    # Every shape is handled, not left to pydantic: only the few malformed lines are.
    assert fast >= len(lines) - 15


@pytest.mark.parametrize("amount", ["9999999999999.99", "10000000000000", "10000000000000.00", 10**13, 10**19])
def test_fast_path_agrees_at_the_amount_bound(amount: object) -> None:
    event = {"type": "payment", "event_id": "E1", "occurred_on": "2025-03-01", "project_id": "P1", "amount": amount}
    raw = orjson.dumps(event)
    fast = fast_record(raw)
    assert fast is None or fast == pydantic_answer(raw)
    assert pydantic_answer(raw) == ("rejected" if amount != "9999999999999.99" else fast)
