"""Access control of the board and the API: a department sees and disposes of its own
alerts only, through every route; forms without a valid CSRF token are refused."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Any

import openpyxl
import orjson
import pytest
from aiohttp.test_utils import TestClient

from streams.board import BOARD
from streams.service import Service
from streams.store import Store
from tests import builders as b
from tests.board_helpers import ALERT_EDU, ALERT_HEALTH, EDU, HEALTH, TOKENS, bearer, login, prepare, serve

Client = TestClient[Any, Any]
# Every route the served app has, and how a department user of D102 is kept from D101's data.
ROUTES = {
    ("POST", "/events"), ("GET", "/metrics"), ("GET", "/healthz"), ("GET", "/api/status"), ("GET", "/api/alerts"),
    ("GET", "/api/reductions"), ("GET", "/api/rejected"), ("GET", "/"), ("GET", "/login"), ("POST", "/login"),
    ("POST", "/logout"), ("GET", "/board/alerts.json"), ("GET", "/alerts/{alert_id}"),
    ("POST", "/alerts/{alert_id}/dispose"), ("POST", "/alerts/{alert_id}/approve"), ("GET", "/projects/{project_id}"),
    ("GET", "/reductions"), ("GET", "/reductions.xlsx"), ("GET", "/api/alerts/{alert_id}/dispositions"),
    ("POST", "/api/alerts/{alert_id}/dispositions"), ("POST", "/api/alerts/{alert_id}/approvals"),
    ("GET", "/static/{filename}"),
}


def routes_of(client: Client) -> set[tuple[str, str]]:
    found = set()
    for route in client.server.app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or (info.get("prefix", "") + "/{filename}")
        found.add((route.method, path))
    return found


def event_count(service: Service) -> int:
    return service.store.event_count()


def test_a_department_cannot_read_or_dispose_of_another_departments_alert_anywhere(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    prepare(db)

    async def scenario(client: Client, service: Service) -> None:
        assert routes_of(client) == ROUTES, "a new route needs its access rule tested here"
        before = event_count(service)
        h = bearer("wjw")  # D102
        # the core API, filtered
        alerts = await (await client.get("/api/alerts", headers=h)).json()
        assert {a["department_id"] for a in alerts} == {HEALTH}
        assert await (await client.get(f"/api/alerts?department={EDU}", headers=h)).json() == []
        every = await (await client.get("/api/alerts?all=1", headers=h)).json()
        assert every and {a["department_id"] for a in every} == {HEALTH}
        status = await (await client.get("/api/status", headers=h)).json()
        assert [d["department_id"] for d in status["departments"]] == [HEALTH]
        assert {p["project_id"] for p in status["projects"]} == {"P2"}
        assert status["region"]["budget"] == "1000000.00"  # its own department, not the region's 2,000,000
        proposals = await (await client.get("/api/reductions", headers=h)).json()
        assert [p["project_id"] for p in proposals] == ["P2"]
        for path in ("/api/rejected", "/metrics"):
            assert (await client.get(path, headers=h)).status == 403
            assert (await client.get(path)).status == 401
        assert (await client.post("/events", data=b"{}", headers=h)).status == 403
        # the disposition API: another department's alert does not exist for it
        assert (await client.get(f"/api/alerts/{ALERT_EDU}/dispositions", headers=h)).status == 404
        answer = await client.post(f"/api/alerts/{ALERT_EDU}/dispositions", headers=h,
                                   data=orjson.dumps({"action": "continue", "note": "越权"}))
        assert answer.status == 404
        assert (await client.post(f"/api/alerts/{ALERT_EDU}/approvals", headers=h, data=b"{}")).status == 403
        assert (await client.get(f"/api/alerts/{ALERT_HEALTH}/dispositions", headers=h)).status == 200
        # the pages, with a logged-in session of D102
        csrf = await login(client, "wjw")
        # The page carries the session's random CSRF token, which may well contain "P1".
        board = (await (await client.get("/")).text()).replace(csrf, "")
        assert "P2" in board and "P1" not in board and "校舍维修改造" not in board and "教育局" not in board
        listed = await (await client.get(f"/board/alerts.json?status=all&department={EDU}")).json()
        assert listed["alerts"] == []
        listed = await (await client.get("/board/alerts.json?status=all")).json()
        assert {a["department_id"] for a in listed["alerts"]} == {HEALTH}
        assert (await client.get(f"/alerts/{ALERT_EDU}")).status == 404
        # the alert's rate is its evaluation's, and the page says of which day
        (own,) = [a for a in listed["alerts"] if a["alert_id"] == ALERT_HEALTH]
        assert f"执行率（{own['updated_on']} 评估时）" in await (await client.get(f"/alerts/{ALERT_HEALTH}")).text()
        assert (await client.get("/projects/P1")).status == 404
        assert (await client.get("/projects/P2")).status == 200
        answer = await client.post(f"/alerts/{ALERT_EDU}/dispose", allow_redirects=False,
                                   data={"csrf": csrf, "action": "continue", "note": "越权处置"})
        assert answer.status == 404
        answer = await client.post(f"/alerts/{ALERT_HEALTH}/approve", allow_redirects=False,
                                   data={"csrf": csrf, "disposition_event_id": "x", "approved": "1"})
        assert answer.status == 403  # departments do not approve
        page = (await (await client.get("/reductions")).text()).replace(csrf, "")
        assert "P2" in page and "P1" not in page
        xlsx = await (await client.get("/reductions.xlsx")).read()
        sheet = openpyxl.load_workbook(io.BytesIO(xlsx)).active
        assert sheet is not None
        ids = {row[0] for row in sheet.iter_rows(values_only=True)}
        assert "P2" in ids and "P1" not in ids
        # public routes carry no data
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/static/board.css")).status == 200
        assert event_count(service) == before  # nothing was appended by any attempt

    serve(db, scenario)


def test_forms_without_a_valid_csrf_token_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    prepare(db)

    async def scenario(client: Client, service: Service) -> None:
        before = event_count(service)
        # the login form itself
        assert (await client.post("/login", data={"login": "jyj", "password": "edu-pass-1"})).status == 403
        csrf = await login(client, "jyj")
        for data in ({"action": "continue", "note": "说明"}, {"action": "continue", "note": "说明", "csrf": "forged"}):
            answer = await client.post(f"/alerts/{ALERT_EDU}/dispose", data=data, allow_redirects=False)
            assert answer.status == 403
        assert (await client.post("/logout", data={}, allow_redirects=False)).status == 403
        # a browser session calling the JSON API must send X-CSRF-Token
        body = orjson.dumps({"action": "continue", "note": "说明"})
        assert (await client.post(f"/api/alerts/{ALERT_EDU}/dispositions", data=body)).status == 403
        assert event_count(service) == before
        answer = await client.post(f"/api/alerts/{ALERT_EDU}/dispositions", data=body,
                                   headers={"X-CSRF-Token": csrf})
        assert answer.status == 201
        assert event_count(service) == before + 1

    serve(db, scenario)


def test_dispositions_are_recorded_with_who_made_them_and_the_bureau_sees_and_approves(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    prepare(db)

    async def scenario(client: Client, service: Service) -> None:
        csrf = await login(client, "jyj")
        answer = await client.post(f"/alerts/{ALERT_EDU}/dispose", allow_redirects=False, data={
            "csrf": csrf, "action": "reduce", "amount": "500000", "note": "项目缩减规模", "by": "someone-else"})
        assert answer.status == 303, await answer.text()
        # a reduction beyond the unspent budget is refused with the reason, on the page
        page = await client.post(f"/alerts/{ALERT_EDU}/dispose", data={
            "csrf": csrf, "action": "reduce", "amount": "950000", "note": "已完成招标，<合同>下月签订"})
        text = await page.text()
        assert page.status == 400 and "超过项目 P1 的预算结余（未支付余额）" in text
        # …and what was typed comes back, escaped, with the note capped as the contract is
        assert "已完成招标，&lt;合同&gt;下月签订</textarea>" in text and 'value="950000"' in text
        assert '<option value="reduce" selected>' in text and 'maxlength="2000"' in text
        # an answer says why, through the API as on the page
        for body in ({"action": "continue"}, {"action": "continue", "note": "  "}):
            silent = await client.post(f"/api/alerts/{ALERT_EDU}/dispositions", headers=bearer("jxk"),
                                       data=orjson.dumps(body))
            assert silent.status == 400 and "请填写处置说明" in (await silent.json())["error"]
        seen = await (await client.get(f"/api/alerts/{ALERT_EDU}/dispositions", headers=bearer("jxk"))).json()
        latest = seen["disposition"]["latest"]
        assert (latest["by"], latest["action"], latest["amount"]) == ("jyj", "reduce", "500000.00")
        assert seen["disposition"]["status"] == "awaiting_approval"
        assert [h["transition"] for h in seen["history"]] == ["disposed"]
        answer = await client.post(f"/api/alerts/{ALERT_EDU}/approvals", headers=bearer("jxk"),
                                   data=orjson.dumps({"disposition_event_id": latest["event_id"], "note": "同意"}))
        assert answer.status == 201, await answer.text()
        approved = await answer.json()
        assert approved["disposition"]["status"] == "approved"
        assert approved["disposition"]["latest"]["approval"]["by"] == "jxk"
        status = await (await client.get("/api/status", headers=bearer("jxk"))).json()
        p1 = next(p for p in status["projects"] if p["project_id"] == "P1")
        assert p1["budget"] == "500000.00"
        with Store(db) as store:
            assert store.db.execute("SELECT amount FROM events WHERE event_id = ?",
                                    (f"{latest['event_id']}@budget_adjusted",)).fetchone() == (-50_000_000,)

    serve(db, scenario)


def test_without_a_users_file_the_api_stays_open_and_the_board_needs_a_login(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    prepare(db)

    async def scenario(client: Client, service: Service) -> None:
        alerts = await (await client.get("/api/alerts")).json()
        assert {a["department_id"] for a in alerts} == {EDU, HEALTH}
        answer = await client.get("/", allow_redirects=False)
        assert answer.status == 303 and answer.headers["Location"] == "/login"
        assert "未配置用户文件" in await (await client.get("/login")).text()
        answer = await client.post(f"/api/alerts/{ALERT_EDU}/dispositions",
                                   data=orjson.dumps({"action": "continue", "note": "说明", "by": "脚本"}))
        assert answer.status == 201
        assert (await answer.json())["disposition"]["latest"]["by"] == "脚本"

    serve(db, scenario, with_users=False)


def test_session_cookies_are_httponly_strict_and_secure_behind_https(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    prepare(db)

    async def scenario(client: Client, service: Service) -> None:
        page = await client.get("/login", headers={"X-Forwarded-Proto": "https"})
        cookie = page.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" in cookie
        client.session.cookie_jar.clear()  # a Secure cookie does not come back over plain http
        page = await client.get("/login")
        assert "Secure" not in page.headers["Set-Cookie"]
        found = re.search(r'name="csrf" value="([^"]+)"', await page.text())
        assert found is not None
        csrf = found.group(1)
        answer = await client.post("/login", allow_redirects=False,
                                   data={"login": "jxk", "password": "bureau-pass-3", "csrf": csrf})
        cookie = answer.headers["Set-Cookie"]
        assert answer.status == 303 and "bw_session=" in cookie
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie  # plain http
        wrong = await client.post("/login", data={"login": "jxk", "password": "nope", "csrf": csrf})
        assert wrong.status == 401 and "用户名或密码错误" in await wrong.text()

    serve(db, scenario)


def test_secrets_are_hashed_with_salt_and_the_example_users_file_loads() -> None:
    from streams.auth import hash_secret, load_users, verify_secret

    one, two = hash_secret("s3cret"), hash_secret("s3cret")
    assert one != two and "s3cret" not in one  # salted
    assert verify_secret("s3cret", one) and not verify_secret("S3cret", one)
    example = load_users(Path(__file__).resolve().parents[2] / "examples" / "users.yaml")
    bureau = example.authenticate("jxk", "change-me-jxk")
    assert bureau is not None and bureau.is_bureau
    assert example.authenticate("jyj", "wrong") is None
    # the example department user belongs to a department of the example directory and
    # of the demo's data (one of D101 logged in to an empty board)
    from connectors.directory import load_directory
    from connectors.synthetic import Spec, generate

    department = example.authenticate("jyj", "change-me-jyj")
    assert department is not None and not department.is_bureau
    examples = Path(__file__).resolve().parents[2] / "examples"
    assert department.department_id in load_directory(examples / "departments.yaml").departments
    demo = {line.split(b'"department_id":"', 1)[1].split(b'"', 1)[0].decode()
            for line in generate(Spec(projects=300, seed=1)) if b'"department_id":"' in line}
    assert department.department_id in demo


def test_a_disposition_is_dated_by_the_business_clock_never_by_the_client(tmp_path: Path) -> None:
    """A department user posting a date a year ahead would otherwise move every user's
    business clock there for good, firing deadlines on the way."""
    db = tmp_path / "bw.db"
    prepare(db)

    async def scenario(client: Client, service: Service) -> None:
        before = (await (await client.get("/api/status", headers=bearer("jxk"))).json())["as_of"]
        answer = await client.post(f"/api/alerts/{ALERT_EDU}/dispositions", headers=bearer("jyj"),
                                   data=orjson.dumps({"action": "continue", "note": "已完成招标",
                                                      "occurred_on": "2026-06-30"}))
        assert answer.status == 201, await answer.text()
        assert (await answer.json())["disposition"]["latest"]["on"] == before
        after = (await (await client.get("/api/status", headers=bearer("jxk"))).json())["as_of"]
        assert after == before == "2025-07-01"

    serve(db, scenario)


def test_a_recovery_without_an_amount_says_so_in_chinese(tmp_path: Path) -> None:
    """{"action": "recover", "note": "x"} got 422 whose Chinese said only 取值无效; that the
    amount was missing was in the English part alone. The API and the board's form say it."""
    db = tmp_path / "bw.db"
    prepare(db)

    async def scenario(client: Client, service: Service) -> None:
        for action, zh in (("recover", "收回（recover）须填写金额 amount"),
                           ("reduce", "调减（reduce）须填写金额 amount")):
            answer = await client.post(f"/api/alerts/{ALERT_EDU}/dispositions", headers=bearer("jyj"),
                                       data=orjson.dumps({"action": action, "note": "x"}))
            assert answer.status == 422, await answer.text()
            error = (await answer.json())["error"]
            assert zh in error and "取值无效" not in error
        csrf = await login(client, "jyj")
        page = await client.post(f"/alerts/{ALERT_EDU}/dispose", allow_redirects=False,
                                 data={"csrf": csrf, "action": "recover", "amount": "", "note": "收回结余"})
        assert page.status == 400
        html = await page.text()
        assert "收回（recover）须填写金额 amount" in html and "取值无效" not in html

    serve(db, scenario)


def test_an_approval_that_is_neither_yes_nor_no_is_refused_not_read_as_yes(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    prepare(db)

    async def scenario(client: Client, service: Service) -> None:
        answer = await client.post(f"/api/alerts/{ALERT_EDU}/dispositions", headers=bearer("jyj"),
                                   data=orjson.dumps({"action": "reduce", "amount": "1000", "note": "缩减"}))
        assert answer.status == 201, await answer.text()
        disposition = (await answer.json())["disposition"]["latest"]["event_id"]
        for refused in ("maybe", None, 2, "", [True]):
            answer = await client.post(f"/api/alerts/{ALERT_EDU}/approvals", headers=bearer("jxk"), data=orjson.dumps(
                {"disposition_event_id": disposition, "approved": refused, "note": "不同意"}))
            assert answer.status == 400, (refused, await answer.text())
            assert "approved 应为 true" in (await answer.json())["error"]
        status = await (await client.get("/api/status", headers=bearer("jxk"))).json()
        assert next(p for p in status["projects"] if p["project_id"] == "P1")["budget"] == "1000000.00"
        answer = await client.post(f"/api/alerts/{ALERT_EDU}/approvals", headers=bearer("jxk"), data=orjson.dumps(
            {"disposition_event_id": disposition, "approved": "no", "note": "退回"}))
        assert answer.status == 201 and (await answer.json())["disposition"]["status"] == "returned"

    serve(db, scenario)


def test_a_browser_session_posting_events_must_send_its_csrf_token(tmp_path: Path) -> None:
    """POST /events appends to the log: from a bureau's browser session, a page on another
    site could otherwise make the browser post payments."""
    db = tmp_path / "bw.db"
    prepare(db)
    line = orjson.dumps({"type": "payment", "event_id": "CSRF-1", "occurred_on": "2025-07-01",
                         "project_id": "P1", "amount": "1.00"})

    async def scenario(client: Client, service: Service) -> None:
        before = event_count(service)
        csrf = await login(client, "jxk")
        for headers in ({}, {"X-CSRF-Token": "forged"}):
            answer = await client.post("/events", data=line, headers=headers)
            assert answer.status == 403 and "CSRF" in (await answer.json())["error"]
        assert event_count(service) == before
        answer = await client.post("/events", data=line, headers={"X-CSRF-Token": csrf})
        assert answer.status == 200 and (await answer.json())["applied"] == 1
        client.session.cookie_jar.clear()
        answer = await client.post("/events", data=line, headers=bearer("jxk"))  # an API token needs none
        assert answer.status == 200 and (await answer.json())["duplicate"] == 1
        assert event_count(service) == before + 1

    serve(db, scenario)


def test_only_the_events_post_takes_a_large_body_and_only_after_the_access_check(tmp_path: Path) -> None:
    """A 250 MB login form was read whole before any check: four at once held 2.5 GB."""
    db = tmp_path / "bw.db"
    prepare(db)
    big = b"x" * (2 * 1024 * 1024)

    async def scenario(client: Client, service: Service) -> None:
        refused = await client.post("/login", data={"login": "jxk", "password": big.decode()})
        assert refused.status == 413
        assert "请求体超过上限 1,048,576 字节" in (await refused.json())["error"]
        assert (await client.post(f"/api/alerts/{ALERT_EDU}/dispositions", data=big,
                                  headers=bearer("jyj"))).status == 413
        assert (await client.post("/events", data=big)).status == 401  # nobody: refused unread
        line = orjson.dumps({"type": "payment", "event_id": "BIG-0", "occurred_on": "2025-07-01",
                             "project_id": "P1", "amount": "1.00", "payee": "x" * 100})
        lines = b"\n".join(line.replace(b"BIG-0", f"BIG-{i}".encode()) for i in range(15_000))
        assert len(lines) > len(big)
        answer = await client.post("/events", data=lines, headers=bearer("jxk"))
        assert answer.status == 200 and (await answer.json())["applied"] == 15_000

    serve(db, scenario)


def slow_token_checks() -> tuple[Any, list[str], Any]:
    """Users whose token check (scrypt over every holder) lasts until released; the
    tokens checked are listed."""
    import threading

    from streams.auth import Users
    from tests.board_helpers import users

    release = threading.Event()
    calls: list[str] = []

    class SlowUsers(Users):
        def by_token(self, token: str) -> Any:
            calls.append(token)
            release.wait(30)
            return super().by_token(token)

    return SlowUsers(users=users().users), calls, release


def test_checking_made_up_tokens_never_freezes_the_service(tmp_path: Path) -> None:
    """An unknown token was checked with scrypt against every user, on the event loop:
    twenty bogus requests held /healthz for 24 s. The check now runs in a worker thread,
    one at a time, and a token that matched nobody is not checked again."""
    import asyncio

    from streams.board import install
    from tests.service_harness import run_service

    db = tmp_path / "bw.db"
    prepare(db)
    configured, calls, release = slow_token_checks()

    async def scenario(client: Client, service: Service) -> None:
        bogus = [asyncio.create_task(client.get("/api/alerts", headers={"Authorization": "Bearer made-up"}))
                 for _ in range(5)]
        await asyncio.sleep(0.2)
        health = await asyncio.wait_for(client.get("/healthz"), 10)  # answered while the check runs
        assert health.status == 200 and not release.is_set()
        release.set()
        assert [(await t).status for t in bogus] == [401] * 5
        assert calls == ["made-up"]  # five requests, one check
        again = await client.get("/api/alerts", headers={"Authorization": "Bearer made-up"})
        assert again.status == 401 and calls == ["made-up"]
        assert again.headers["WWW-Authenticate"] == 'Bearer realm="budgetwatch"'
        assert (await again.json())["error"].startswith("API 令牌无效或已停用")  # not "需要…令牌"
        answer = await client.get(f"/api/alerts/{ALERT_EDU}/dispositions")
        assert answer.status == 401 and answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await answer.json())["error"].startswith("需要登录或 API 令牌")
        ok = await client.get("/api/alerts", headers=bearer("jxk"))
        assert ok.status == 200
        # the scheme is case-insensitive (RFC 7235): "bearer" was refused
        lower = await client.get("/api/alerts", headers={"Authorization": "bearer " + TOKENS["jxk"]})
        assert lower.status == 200

    run_service(db, scenario, routes=[lambda app, s: install(app, s, configured)])


def test_a_flood_of_made_up_tokens_is_turned_away_and_public_paths_check_none(tmp_path: Path) -> None:
    """Each unknown token costs a scrypt per token holder, one at a time: 200 parallel
    requests with made-up tokens delayed a real token's first use by 20 s (web audit)."""
    import asyncio

    from streams.board import MAX_WAITING_TOKEN_CHECKS, install
    from tests.service_harness import run_service

    db = tmp_path / "bw.db"
    prepare(db)
    configured, calls, release = slow_token_checks()

    async def scenario(client: Client, service: Service) -> None:
        public = [await client.get(path, headers={"Authorization": f"Bearer public-{i}"})
                  for i, path in enumerate(("/healthz", "/static/board.css", "/login"))]
        assert [r.status for r in public] == [200, 200, 200] and calls == []
        flood = [asyncio.create_task(client.get("/api/alerts", headers={"Authorization": f"Bearer bogus-{i}"}))
                 for i in range(MAX_WAITING_TOKEN_CHECKS + 10)]
        await asyncio.sleep(0.3)
        turned_away = [t for t in flood if t.done()]
        assert len(turned_away) == 10
        assert [(await t).status for t in turned_away] == [429] * 10
        release.set()
        statuses = [(await t).status for t in flood]
        assert statuses.count(401) == MAX_WAITING_TOKEN_CHECKS and len(calls) == MAX_WAITING_TOKEN_CHECKS

    run_service(db, scenario, routes=[lambda app, s: install(app, s, configured)])


def test_an_open_api_says_so_when_the_service_starts(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Without a users file anyone who reaches the port may dispose and approve; an
    empty BUDGETWATCH_USERS= meant the same, silently."""
    import logging

    from aiohttp import web

    from streams.board import register

    for value in (None, " "):
        if value is None:
            monkeypatch.delenv("BUDGETWATCH_USERS", raising=False)
        else:
            monkeypatch.setenv("BUDGETWATCH_USERS", value)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="budgetwatch.board"):
            register(web.Application(), None)  # type: ignore[arg-type]
        assert "未配置用户文件（BUDGETWATCH_USERS）" in caplog.text


def test_a_form_body_that_is_not_a_form_is_a_400_in_chinese(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    prepare(db)

    async def scenario(client: Client, service: Service) -> None:
        for body, content_type in (
            (b"login=\xff", "application/x-www-form-urlencoded"),
            (b"login=a", "application/x-www-form-urlencoded; charset=foo-bar"),
            (b"abc", "multipart/form-data"),
            (b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1", "multipart/form-data; boundary=x"),
        ):
            answer = await client.post("/login", data=body, headers={"Content-Type": content_type},
                                       cookies={"bw_login_csrf": "a" * 64})
            assert answer.status == 400, content_type
            assert "表单无法读取" in await answer.text()

    serve(db, scenario)


def test_ids_with_url_characters_keep_their_links_forms_and_redirects_on_their_page(tmp_path: Path) -> None:
    """A project code like X/../P2?x#y put unencoded into a link or a form action led
    to another page (a dispose form could post to another project's alert)."""
    from urllib.parse import quote

    from budget.calendar import to_day
    from budget.events import parse_day
    from connectors.jsonl import parse_lines
    from connectors.profiles import load_profile
    from streams.engine import Engine
    from streams.ingest import ingest
    from tests.board_helpers import PLAN, login
    from tests.builders import approved, jsonl, payment, registered

    db = tmp_path / "bw.db"
    prepare(db)
    odd = "X/../P2?x#y 中文%2F"
    with Store(db) as store:
        ingest(store, parse_lines(jsonl([
            registered(odd, plan=PLAN, on="2025-01-02", department_id="D101", department_name="教育局", name="怪编码"),
            approved(odd, "1000000.00", on="2025-01-02"), payment(odd, "1000.00", on="2025-02-01", event_id="ODD-1"),
        ]).splitlines(), "odd.jsonl"))
        Engine(store, load_profile("baseline")).run(to_day(parse_day("2025-07-02")))
    alert_id = f"2025:low_execution:project:{odd}"
    encoded = quote(alert_id, safe=":")

    async def scenario(client: Client, service: Service) -> None:
        csrf = await login(client, "jxk")
        board = await (await client.get("/")).text()
        assert f'href="/alerts/{encoded}"' in board
        page = await client.get(f"/alerts/{encoded}")
        assert page.status == 200
        html = await page.text()
        assert f'action="/alerts/{encoded}/dispose"' in html and f'href="/projects/{quote(odd, safe=":")}"' in html
        answer = await client.post(f"/alerts/{encoded}/dispose", allow_redirects=False,
                                   data={"csrf": csrf, "action": "continue", "note": "编码含特殊字符"})
        assert answer.status == 303 and answer.headers["Location"] == f"/alerts/{encoded}?ok=disposed"
        assert (await client.get(answer.headers["Location"])).status == 200

    serve(db, scenario)


def test_wrong_passwords_make_the_next_try_wait_and_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Forty wrong passwords in a row took 2.4 s and nothing was logged (web audit). After
    five, the sixth try waits (README); tries 1-6 all got 401 and only the seventh 429."""
    import logging
    import re as re_

    from streams.board import BOARD
    from tests.board_helpers import PASSWORDS

    db = tmp_path / "bw.db"
    prepare(db)
    now = [1000.0]

    async def scenario(client: Client, service: Service) -> None:
        board = client.app[BOARD]  # type: ignore[index]
        board.throttle.clock = lambda: now[0]

        async def attempt(password: str) -> Any:
            page = await client.get("/login")
            csrf = re_.search(r'name="csrf" value="([^"]+)"', await page.text())
            assert csrf is not None
            return await client.post("/login", allow_redirects=False,
                                     data={"login": "jxk", "password": password, "csrf": csrf.group(1)})

        with caplog.at_level(logging.WARNING, logger="budgetwatch.board"):
            assert [(await attempt(f"wrong-{i}")).status for i in range(5)] == [401] * 5
            waiting = await attempt(PASSWORDS["jxk"])  # the sixth waits, even the right password, unchecked
            assert waiting.status == 429 and "登录失败次数过多，请 30 秒后再试" in await waiting.text()
        assert caplog.text.count("登录失败：jxk") == 5 and "登录被暂缓：jxk" in caplog.text
        now[0] += 31
        assert (await attempt(PASSWORDS["jxk"])).status == 303
        client.session.cookie_jar.clear()  # logged out again
        assert (await attempt("wrong-again")).status == 401  # a success cleared the login's count

    serve(db, scenario)



def test_serve_follows_a_run_the_cli_committed_meanwhile(tmp_path: Path) -> None:
    """serve at 07-01 while the CLI runs the store on to 09-30: /healthz and /metrics kept
    07-01, and a department's answer was dated 07-01 — on replay, before the alert it
    answered — so a rebuild refused it (audit of serve beside the CLI)."""
    from connectors.profiles import load_profile
    from streams.engine import Engine
    from tests.builders import day

    db = tmp_path / "bw.db"
    prepare(db, "2025-07-01")

    async def idle(service: Service) -> None:
        # Serve's own start-up run may still be going: during a run /healthz answers from
        # memory (it never waits behind one), so the reload is checked between runs.
        while service.running() or service._wake.is_set():
            await asyncio.sleep(0.01)

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        await idle(service)
        assert (await (await client.get("/healthz")).json())["clock"] == "2025-07-01"
        with Store(db) as store:  # the operator's `budgetwatch run --as-of 2025-09-30`
            Engine(store, load_profile("baseline")).run(day("2025-09-30"))
        await idle(service)
        assert (await (await client.get("/healthz")).json())["clock"] == "2025-09-30"
        metrics = await (await client.get("/metrics", headers=bearer("jxk"))).text()
        assert "budget_processing_lag_days 0.0" in metrics
        answer = await client.post(f"/api/alerts/{ALERT_EDU}/dispositions", headers=bearer("jyj"),
                                   json={"action": "continue", "note": "正在推进"})
        assert answer.status == 201, await answer.text()
        assert (await answer.json())["disposition"]["latest"]["on"] == "2025-09-30"

    serve(db, scenario)
    with Store(db) as store:
        engine = Engine(store, load_profile("baseline"))
        before = engine.store.alert_row(ALERT_EDU)
        engine.rebuild()
        engine.run(day("2025-09-30"))
        assert engine.store.alert_row(ALERT_EDU) == before
        assert before is not None and before["disposition"]["status"] == "disposed"


def test_the_board_shows_the_year_asked_for(tmp_path: Path) -> None:
    """In January the board showed only the new year's figures (zeros) beside last year's
    alerts, with no way to see last year's year-end execution (audit of the rollover)."""
    from connectors.profiles import load_profile
    from streams.engine import Engine
    from tests.builders import approved, day, registered
    from tests.functional.engine_helpers import ingest_events

    db = tmp_path / "bw.db"
    prepare(db, "2025-07-01")
    with Store(db) as store:
        ingest_events(store, [registered("Q1", year=2026, on="2026-01-05", department_id=EDU, department_name="教育局"),
                              approved("Q1", "500000.00", on="2026-01-05")])
        Engine(store, load_profile("baseline")).run(day("2026-01-10"))

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        await login(client, "jxk")
        now = await (await client.get("/")).text()
        assert "2026 年度：预算 50.00万元" in now
        last = await (await client.get("/?year=2025")).text()
        assert "2025 年度：预算 200.00万元" in last
        listed = await (await client.get("/board/alerts.json?year=2026&status=all")).json()
        assert listed["count"] == 0
        listed = await (await client.get("/board/alerts.json?year=2025")).json()
        assert listed["count"] > 0 and {a["fiscal_year"] for a in listed["alerts"]} == {2025}
        edu = sum(1 for a in listed["alerts"] if a["department_id"] == EDU)

        def edu_alerts(page: str) -> int:
            row = re.search(rf"（{EDU}）</td>(?:<td>[^<]*</td>\s*){{3}}<td>.*?</td>\s*<td>(\d+)</td>", page, re.S)
            assert row is not None, page
            return int(row.group(1))

        assert edu > 0 and edu_alerts(last) == edu  # last year's ranking counts last year's alerts
        assert edu_alerts(now) == 0  # this year's ranking: this year's (none yet)

    serve(db, scenario)


def test_the_bureaus_department_filter_names_each_department(tmp_path: Path) -> None:
    """The filter listed D101, D102 alone: a bureau has sixty of them (text audit M9)."""
    db = tmp_path / "bw.db"
    prepare(db)

    async def scenario(client: Client, service: Service) -> None:
        await login(client, "jxk")
        board = await (await client.get("/")).text()
        assert f'<option value="{EDU}" >教育局（{EDU}）</option>' in board
        assert f'<option value="{HEALTH}" >卫生健康委员会（{HEALTH}）</option>' in board

    serve(db, scenario)


def test_a_project_page_writes_targets_actuals_and_amounts_as_people_do(tmp_path: Path) -> None:
    """Targets read 2000.0人, actuals had no unit, payments no separators (text audit M16)."""
    from budget.calendar import to_day
    from budget.events import parse_day
    from connectors.jsonl import parse_lines
    from connectors.profiles import load_profile
    from streams.engine import Engine
    from streams.ingest import ingest
    from tests.builders import indicator, jsonl, payment, report

    db = tmp_path / "bw.db"
    prepare(db)
    with Store(db) as store:
        ingest(store, parse_lines(jsonl([
            {**indicator("P1", "I1", 2000), "unit": "人"}, report("P1", "I1", 2024.57, on="2025-03-01"),
            {**indicator("P1", "I2", 1), "direction": "boolean"}, report("P1", "I2", True, on="2025-03-01"),
            payment("P1", "12053.46", on="2025-06-26", event_id="P1-PAY-9"),
        ]).splitlines(), "more.jsonl"))
        Engine(store, load_profile("baseline")).run(to_day(parse_day("2025-07-02")))

    async def scenario(client: Client, service: Service) -> None:
        await login(client, "jxk")
        page = await (await client.get("/projects/P1")).text()
        assert "<td>2000人</td><td>2024.57人</td>" in page and "2000.0" not in page
        assert "<td>1</td><td>是</td>" in page
        assert '<td class="amount">12,053.46</td>' in page

    serve(db, scenario)


def test_the_boards_default_view_reads_no_resolved_alert_yet_offers_their_departments_and_lists_them(
    tmp_path: Path,
) -> None:
    """The board read every alert ever raised on each page and poll (most are resolved:
    hundreds of thousands in a province); its default view now reads the active ones."""
    from budget.calendar import to_day
    from budget.events import parse_day
    from connectors.jsonl import parse_lines
    from connectors.profiles import load_profile
    from streams.engine import Engine
    from streams.ingest import ingest
    from tests.builders import jsonl, payment

    dept_alert = "2025:department_low_execution:department:{}".format
    DEPT_EDU, DEPT_HEALTH = dept_alert(EDU), dept_alert(HEALTH)
    db = tmp_path / "bw.db"
    prepare(db)
    with Store(db) as store:  # P1 (教育局) reaches 35% on 07-05: its alert resolves
        july = jsonl([payment("P1", "250000.00", on="2025-07-05", event_id="P1-PAY-4")])
        ingest(store, parse_lines(july.splitlines(), "july.jsonl"))
        Engine(store, load_profile("baseline")).run(to_day(parse_day("2025-07-10")))
        assert {a["alert_id"] for a in store.alert_rows(status="resolved")} == {ALERT_EDU, DEPT_EDU}

    async def scenario(client: Client, service: Service) -> None:
        await login(client, "jxk")
        client.server.app[BOARD]._active = None  # read afresh (the login's page kept it)
        statements: list[str] = []
        service.store.db.set_trace_callback(statements.append)
        board = await (await client.get("/")).text()
        polled = await (await client.get("/board/alerts.json")).json()
        service.store.db.set_trace_callback(None)
        reads = [s for s in statements if "FROM alerts" in s and "SELECT data" in s]
        assert reads and all("status = 'firing' OR" in s for s in reads), reads
        assert {a["alert_id"] for a in polled["alerts"]} == {ALERT_HEALTH, DEPT_HEALTH}
        assert ALERT_HEALTH in board and ALERT_EDU not in board
        assert f'<option value="{EDU}" >教育局（{EDU}）</option>' in board  # its only alert resolved
        assert '<option value="2025"' in board
        resolved = await (await client.get(f"/board/alerts.json?status=resolved&department={EDU}")).json()
        assert {a["alert_id"] for a in resolved["alerts"]} == {ALERT_EDU, DEPT_EDU}
        every = await (await client.get("/board/alerts.json?status=all&year=2025")).json()
        assert {a["alert_id"] for a in every["alerts"]} == {ALERT_EDU, ALERT_HEALTH, DEPT_EDU, DEPT_HEALTH}

    serve(db, scenario)


def test_a_department_pages_through_its_own_transitions_only(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    prepare(db)

    async def scenario(client: Client, service: Service) -> None:
        every = await (await client.get("/api/alerts?all=1", headers=bearer("jxk"))).json()
        own = [t for t in every if t["department_id"] == HEALTH]
        assert len(own) >= 2 and len(own) < len(every)
        got: list[dict[str, Any]] = []
        path = "/api/alerts?all=1&limit=1"
        while path:
            response = await client.get(path, headers=bearer("wjw"))
            page = await response.json()
            assert len(page) == 1  # a page of its own rows, not a page of everyone's filtered down
            got += page
            link = response.headers.get("Link", "")
            path = link[1:link.index(">")] if link else ""
        assert got == own
        assert await (await client.get("/api/alerts?all=1", headers=bearer("wjw"))).json() == own  # streamed
        other = await client.get(f"/api/alerts?all=1&department={EDU}", headers=bearer("wjw"))
        assert await other.json() == [] and "Link" not in other.headers

    serve(db, scenario)


def test_the_board_lists_the_most_urgent_alerts_and_counts_every_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The list held every firing alert, refreshed every 3 s: ~10k rows in a province."""
    import streams.board

    db = tmp_path / "bw.db"
    prepare(db)
    monkeypatch.setattr(streams.board, "LIST_LIMIT", 1)

    async def scenario(client: Client, service: Service) -> None:
        await login(client, "jxk")
        every = await (await client.get("/api/alerts")).json()
        polled = await (await client.get("/board/alerts.json")).json()
        assert polled["count"] == len(every) >= 2 and [a["alert_id"] for a in polled["alerts"]] == [ALERT_EDU]
        page = await (await client.get("/")).text()
        assert f"（{len(every)}条，显示最紧要的1条，可用筛选缩小范围）" in page
        narrowed = await (await client.get(f"/board/alerts.json?department={HEALTH}&rule=low_execution")).json()
        assert narrowed["count"] == 1 and [a["alert_id"] for a in narrowed["alerts"]] == [ALERT_HEALTH]

    serve(db, scenario)


def test_the_bureaus_list_is_read_once_per_commit(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    prepare(db)

    async def scenario(client: Client, service: Service) -> None:
        await login(client, "jxk")
        first = await (await client.get("/board/alerts.json")).json()
        statements: list[str] = []
        service.store.db.set_trace_callback(statements.append)
        again = await (await client.get("/board/alerts.json")).json()
        service.store.db.set_trace_callback(None)
        assert again["alerts"] == first["alerts"] and not [s for s in statements if "FROM alerts" in s]
        # P1 pays to 35% on 07-05: its alert resolves, and the next poll reads the new list
        payment = b.jsonl([b.payment("P1", "250000.00", on="2025-07-05", event_id="P1-PAY-4")])
        assert (await client.post("/events?wait=1", data=payment, headers=bearer("jxk"))).status == 200
        after = await (await client.get("/board/alerts.json")).json()
        assert ALERT_EDU in {a["alert_id"] for a in first["alerts"]} - {a["alert_id"] for a in after["alerts"]}

    serve(db, scenario)
