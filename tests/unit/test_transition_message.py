"""The budget-alerts message contract: what the workers send parses back to the same
transition; anything else is refused with a reason naming the field."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest

from alerts.lifecycle import Alert, Transition
from alerts.transition_message import MessageRefused, message_digest, parse_transition
from budget.calendar import to_day


def transition() -> Transition:
    day = to_day(dt.date(2025, 9, 30))
    alert = Alert(
        "2025:low_execution:project:P1", "low_execution", "critical", "firing", "project", "P1",
        "园区修缮经费项目", "KC", "高新区科创中心", 2025, day, day, {"execution_rate": 0.12},
        "执行率偏低", "请整改",
    )
    return Transition(alert, "escalated", day, "warning")


def test_a_worker_message_parses_back_to_the_same_transition() -> None:
    sent = transition()
    parsed, data = parse_transition(orjson.dumps(sent.to_json()))
    assert parsed == sent
    assert data == sent.to_json()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"rule": "low_spending"}, "unknown rule 'low_spending'"),
        ({"severity": "info"}, "unknown severity 'info'"),
        ({"previous_severity": "minor"}, "unknown previous_severity 'minor'"),
        ({"transition": "closed"}, "transition: Input should be"),
        ({"status": "active"}, "status: Input should be"),
        ({"subject_type": "region"}, "subject_type: Input should be"),
        ({"date": "2025-02-30"}, "date: Input should be a valid date"),
        ({"fiscal_year": "2025"}, "fiscal_year: Input should be a valid integer"),
        ({"fiscal_year": 20250}, "fiscal_year: Input should be less than or equal to 2200"),
        ({"alert_id": ""}, "alert_id: String should have at least 1 character"),
        ({"figures": [1]}, "figures: Input should be an object"),
        ({"date": "2205-09-30"}, "date 2205-09-30 is outside fiscal year 2025"),
        ({"date": "2024-12-31"}, "date 2024-12-31 is outside fiscal year 2025"),
        ({"since": "2025-10-01"}, "since 2025-10-01 is after the transition's date 2025-09-30"),
    ],
)
def test_a_wrong_field_is_refused_by_name(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(MessageRefused, match="not an alert transition") as refused:
        parse_transition(orjson.dumps({**transition().to_json(), **change}))
    assert reason in str(refused.value)


def test_a_transition_may_be_dated_in_the_year_after_its_fiscal_year() -> None:
    data = {**transition().to_json(), "date": "2026-01-15", "updated_on": "2026-01-15"}
    parsed, _ = parse_transition(orjson.dumps(data))
    assert parsed.on == to_day(dt.date(2026, 1, 15))


def test_a_missing_field_and_non_objects_are_refused() -> None:
    data = transition().to_json()
    del data["department_id"]
    with pytest.raises(MessageRefused, match="department_id: Field required"):
        parse_transition(orjson.dumps(data))
    with pytest.raises(MessageRefused, match="not JSON"):
        parse_transition(b"\xff\xfe")
    with pytest.raises(MessageRefused, match="not a JSON object but str"):
        parse_transition(b'"firing"')


def test_the_digest_ignores_key_order_and_sees_any_change() -> None:
    data = transition().to_json()
    reordered = dict(reversed(list(data.items())))
    assert message_digest(reordered) == message_digest(data)
    assert message_digest({**data, "figures": {"execution_rate": 0.13}}) != message_digest(data)


def test_a_years_close_keeps_its_reason_and_only_a_resolved_alert_may_carry_one() -> None:
    from dataclasses import replace

    from alerts.lifecycle import RESOLVED, YEAR_CLOSED

    sent = transition()
    closed = Transition(replace(sent.alert, status=RESOLVED, reason=YEAR_CLOSED), RESOLVED, sent.on, "critical")
    parsed, data = parse_transition(orjson.dumps(closed.to_json()))
    assert parsed == closed and data["reason"] == YEAR_CLOSED and parsed.reason == YEAR_CLOSED
    with pytest.raises(MessageRefused, match="belongs to a resolved alert"):
        parse_transition(orjson.dumps({**sent.to_json(), "reason": YEAR_CLOSED}))
    with pytest.raises(MessageRefused, match="reason"):
        parse_transition(orjson.dumps({**closed.to_json(), "reason": "tired"}))
