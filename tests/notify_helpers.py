"""Alerts from the real engine, directories and free ports for the notification tests."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import yaml

from budget.calendar import to_day
from budget.events import parse_day
from connectors.jsonl import parse_lines
from connectors.profiles import load_profile
from streams.engine import Engine
from streams.ingest import ingest
from streams.store import Store
from tests.builders import approved, jsonl, payment, registered

EDU, HEALTH = "D101", "D102"
PROJECTS = {  # project -> (department id, department name, project name)
    "P1": (EDU, "教育局", "校舍改造"),
    "P2": (HEALTH, "卫生健康委员会", "医疗设备更新"),
}


def run_events(path: Path, events: list[dict[str, Any]], as_of: str) -> int:
    """Ingest ``events`` and run the engine to ``as_of``; the transitions it made."""
    with Store(path) as store:
        ingest(store, parse_lines(jsonl(events).splitlines(), "test.jsonl"))
        summary = Engine(store, load_profile("baseline"), dispositions=False).run(to_day(parse_day(as_of)))
    return summary.transitions


def fire(path: Path) -> int:
    """Both projects pay 10% by February, so on 06-30 each fires low_execution
    (critical), behind_schedule, stalled and its department's
    department_low_execution (warnings): 8 transitions in all."""
    events: list[dict[str, Any]] = []
    for pid, (dept, dept_name, name) in PROJECTS.items():
        events += [
            registered(
                pid, name=name, department_id=dept, department_name=dept_name, on="2025-01-02"
            ),
            approved(pid, "1000000.00", on="2025-01-02"),
            payment(pid, "100000.00", on="2025-02-03", event_id=f"{pid}-PAY-1"),
        ]
    return run_events(path, events, "2025-07-01")


def resolve(path: Path) -> int:
    """Both projects pay 60% more on 07-05: every alert resolves (8 transitions)."""
    events = [
        payment(pid, "600000.00", on="2025-07-05", event_id=f"{pid}-PAY-2") for pid in PROJECTS
    ]
    return run_events(path, events, "2025-07-06")


def outbox_count(path: Path) -> int:
    with Store(path) as store:
        return int(store.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
