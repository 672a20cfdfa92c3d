"""Small builders of contract events for tests (plain dicts, as users write them)."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import orjson

from budget.events import Record, parse_event_object

_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def registered(
    project_id: str,
    *,
    on: str = "2025-01-05",
    year: int = 2025,
    name: str | None = None,
    department_id: str = "D01",
    department_name: str = "园区管理局",
    fund_source: str = "general",
    kind: str | None = None,
    plan: list[float] | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "project_registered", "event_id": event_id or f"{project_id}-REG", "occurred_on": on,
        "project_id": project_id, "fiscal_year": year, "name": name or f"{project_id}项目",
        "department_id": department_id, "department_name": department_name, "fund_source": fund_source,
    }
    if kind:
        event["kind"] = kind
    if plan is not None:
        event["spending_plan"] = plan
    return event


def approved(project_id: str, amount: str, *, on: str = "2025-01-05", event_id: str | None = None) -> dict[str, Any]:
    return {"type": "budget_approved", "event_id": event_id or f"{project_id}-APP", "occurred_on": on,
            "project_id": project_id, "amount": amount}


def adjusted(project_id: str, amount: str, *, on: str, event_id: str | None = None) -> dict[str, Any]:
    return {"type": "budget_adjusted", "event_id": event_id or _id(f"{project_id}-ADJ"), "occurred_on": on,
            "project_id": project_id, "amount": amount}


def payment(project_id: str, amount: str, *, on: str, event_id: str | None = None) -> dict[str, Any]:
    return {"type": "payment", "event_id": event_id or _id(f"{project_id}-PAY"), "occurred_on": on,
            "project_id": project_id, "amount": amount}


def reversal(project_id: str, amount: str, *, on: str, event_id: str | None = None) -> dict[str, Any]:
    return {"type": "payment_reversed", "event_id": event_id or _id(f"{project_id}-REV"), "occurred_on": on,
            "project_id": project_id, "amount": amount}


def indicator(project_id: str, indicator_id: str, target: float, *, on: str = "2025-01-05",
              direction: str = "higher_better", weight: float = 1) -> dict[str, Any]:
    return {"type": "indicator_defined", "event_id": f"{project_id}-{indicator_id}-DEF", "occurred_on": on,
            "project_id": project_id, "indicator_id": indicator_id, "name": f"指标{indicator_id}",
            "target": target, "direction": direction, "weight": weight}


def report(project_id: str, indicator_id: str, actual: float | bool, *, on: str) -> dict[str, Any]:
    return {"type": "indicator_reported", "event_id": _id(f"{project_id}-{indicator_id}-R"), "occurred_on": on,
            "project_id": project_id, "indicator_id": indicator_id, "actual": actual}


def record(event: dict[str, Any]) -> Record:
    return parse_event_object(event).to_record()


def records(events: list[dict[str, Any]]) -> list[Record]:
    return [record(e) for e in events]


def day(text: str) -> int:
    return dt.date.fromisoformat(text).toordinal()


def jsonl(events: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def alert_transition(**over: Any) -> dict[str, Any]:
    """The JSON of one alert transition, as the engine stores it and notifications receive it."""
    data: dict[str, Any] = {
        "alert_id": "2025:low_execution:project:P1",
        "rule": "low_execution",
        "severity": "critical",
        "status": "firing",
        "subject_type": "project",
        "subject_id": "P1",
        "subject_name": "校舍改造",
        "department_id": "D101",
        "department_name": "教育局",
        "fiscal_year": 2025,
        "since": "2025-06-30",
        "updated_on": "2025-06-30",
        "figures": {
            "budget": "1000000.00",
            "paid": "100000.00",
            "execution_rate": 0.1,
            "time_progress": 0.49589,
            "expected_progress": 0.49589,
            "floor": 0.3,
            "performance_completion": None,
            "days_without_payment": 147,
        },
        "message": "【新预警·严重预警】预算执行率偏低：校舍改造截至2025-06-30预算执行率为10.00%。",
        "action": "请预算单位在10个工作日内说明执行缓慢原因并提出整改措施。",
        "transition": "firing",
        "date": "2025-06-30",
        "previous_severity": None,
    }
    data.update(over)
    return data
