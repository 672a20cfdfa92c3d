"""A served board over a small two-department year, for the access, board and browser tests."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from budget.calendar import to_day
from budget.events import parse_day
from connectors.jsonl import parse_lines
from connectors.profiles import load_profile
from streams.auth import Users, hash_secret, parse_users
from streams.board import install
from streams.engine import Engine
from streams.ingest import ingest
from streams.service import Service
from streams.store import Store
from tests.builders import approved, jsonl, payment, registered
from tests.service_harness import run_service

PLAN = [0.0] * 11 + [1.0]  # only low_execution fires (on Monday 06-30)
EDU, HEALTH = "D101", "D102"
ALERT_EDU = "2025:low_execution:project:P1"
ALERT_HEALTH = "2025:low_execution:project:P2"
PASSWORDS = {"jyj": "edu-pass-1", "wjw": "health-pass-2", "jxk": "bureau-pass-3"}
TOKENS = {"jyj": "tok-edu-aaaaaaaaaaaa", "wjw": "tok-health-bbbbbbbbbb", "jxk": "tok-bureau-cccccccccc"}
_USERS: Users | None = None


def users() -> Users:
    global _USERS
    if _USERS is None:
        _USERS = parse_users({"users": [
            {"login": "jyj", "name": "教育局财务科", "role": "department", "department_id": EDU,
             "password_hash": hash_secret(PASSWORDS["jyj"]), "token_hash": hash_secret(TOKENS["jyj"])},
            {"login": "wjw", "name": "卫健委财务科", "role": "department", "department_id": HEALTH,
             "password_hash": hash_secret(PASSWORDS["wjw"]), "token_hash": hash_secret(TOKENS["wjw"])},
            {"login": "jxk", "name": "财政局绩效科", "role": "bureau",
             "password_hash": hash_secret(PASSWORDS["jxk"]), "token_hash": hash_secret(TOKENS["jxk"])},
        ]})
    return _USERS


def year() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    projects = (("P1", EDU, "教育局", "校舍维修改造"), ("P2", HEALTH, "卫生健康委员会", "基层医疗设备购置"))
    for pid, dept, dept_name, name in projects:
        events += [
            registered(pid, plan=PLAN, on="2025-01-02", department_id=dept, department_name=dept_name, name=name),
            approved(pid, "1000000.00", on="2025-01-02"),
            payment(pid, "40000.00", on="2025-02-01", event_id=f"{pid}-PAY-1"),
            payment(pid, "30000.00", on="2025-04-15", event_id=f"{pid}-PAY-2"),
            payment(pid, "30000.00", on="2025-06-25", event_id=f"{pid}-PAY-3"),
        ]
    return events


def prepare(db: Path, as_of: str = "2025-07-01") -> None:
    with Store(db) as store:
        ingest(store, parse_lines(jsonl(year()).splitlines(), "year.jsonl"))
        Engine(store, load_profile("baseline")).run(to_day(parse_day(as_of)))


Scenario = Callable[[TestClient[Any, Any], Service], Awaitable[None]]


def serve(db: Path, scenario: Scenario, *, with_users: bool = True) -> None:
    configured = users() if with_users else None
    run_service(db, scenario, routes=[lambda app, s: install(app, s, configured)])


def bearer(login: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[login]}"}


async def login(client: TestClient[Any, Any], who: str) -> str:
    """Log in through the form; returns the session's CSRF token (from the board page)."""
    page = await client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', await page.text())
    assert token is not None
    answer = await client.post("/login", data={"login": who, "password": PASSWORDS[who], "csrf": token.group(1)},
                               allow_redirects=False)
    assert answer.status == 303, await answer.text()
    board = await client.get("/")
    assert board.status == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', await board.text())
    assert csrf is not None
    return csrf.group(1)
