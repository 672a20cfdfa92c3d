"""Real servers on 127.0.0.1: a webhook receiver that fails for a while, a DingTalk
stand-in that checks the signature, a WeCom stand-in that checks the payload,
and an SMTP server (aiosmtpd) that receives the Chinese email. The dispatcher
is restarted in the middle; every notification arrives, once per dedup key."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email
import email.policy
import hashlib
import hmac
import sqlite3
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web
from aiosmtpd.controller import Controller

from connectors.directory import parse_directory
from connectors.notify import DEDUP_HEADER
from connectors.notify.smtp import SmtpSettings
from streams.outbox import DeliveryLog, Dispatcher, RetryPolicy
from tests.notify_helpers import EDU, HEALTH, fire, free_port, resolve

SECRET = "SEC-test-秘钥-0123"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T0 = dt.datetime(2025, 7, 10, 1, 0, tzinfo=dt.UTC)


class Receivers:
    def __init__(self) -> None:
        self.down = True  # the department's own webhook fails until this is False
        self.acked: dict[str, Counter[str]] = defaultdict(Counter)  # path -> dedup key -> acks
        self.bodies: dict[str, list[Any]] = defaultdict(list)
        self.refused = 0
        self.bad_signatures = 0

    async def hook(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "flaky" and self.down:
            self.refused += 1
            return web.Response(status=500, text="维护中")
        body = await request.json()
        assert body["dedup_key"] == request.headers[DEDUP_HEADER]
        self.acked[name][body["dedup_key"]] += 1
        self.bodies[name].append(body)
        return web.json_response({"ok": True})

    async def dingtalk(self, request: web.Request) -> web.Response:
        timestamp, sign = request.query.get("timestamp", ""), request.query.get("sign", "")
        expected = base64.b64encode(
            hmac.new(SECRET.encode(), f"{timestamp}\n{SECRET}".encode(), hashlib.sha256).digest()
        ).decode()
        if request.query.get("access_token") != "T" or sign != expected:
            self.bad_signatures += 1
            return web.json_response({"errcode": 310000, "errmsg": "sign not match"})
        body = await request.json()
        assert body["msgtype"] == "markdown"
        self.acked["dingtalk"][request.headers[DEDUP_HEADER]] += 1
        self.bodies["dingtalk"].append({"timestamp": int(timestamp), **body})
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def wecom(self, request: web.Request) -> web.Response:
        body = await request.json()
        if request.query.get("key") != "K" or body.get("msgtype") != "markdown":
            return web.json_response({"errcode": 40008, "errmsg": "invalid message type"})
        content = body["markdown"]["content"]
        if not isinstance(content, str) or len(content.encode()) > 4096:
            return web.json_response({"errcode": 40058, "errmsg": "content exceed max length"})
        self.acked["wecom"][request.headers[DEDUP_HEADER]] += 1
        self.bodies["wecom"].append(body)
        return web.json_response({"errcode": 0, "errmsg": "ok"})


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 OK"


@asynccontextmanager
async def receiving(routes: dict[str, Handler]) -> AsyncIterator[str]:
    """An HTTP server on 127.0.0.1 taking POSTs on ``routes``; yields its base URL."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def test_every_channel_every_notification_across_an_outage_and_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    assert fire(db) == 8
    receivers, mailbox = Receivers(), Mailbox()
    smtp_port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()

    async def scenario() -> None:
        routes = {"/hook/{name}": receivers.hook, "/dingtalk": receivers.dingtalk, "/wecom": receivers.wecom}
        async with receiving(routes) as base:
            await exchange(base)

    async def exchange(base: str) -> None:
        directory = parse_directory(
            {
                "escalation": {"name": "财政局绩效科", "email": ["jxk@czj.example"]},
                "departments": {
                    EDU: {
                        "name": "教育局",
                        "webhook": f"{base}/hook/flaky",
                        "dingtalk": {"url": f"{base}/dingtalk?access_token=T", "secret": SECRET},
                        "wecom": f"{base}/wecom?key=K",
                        "email": ["cwk@jyj.example", "kz@jyj.example"],
                    },
                    HEALTH: {"name": "卫生健康委员会", "webhook": f"{base}/hook/health"},
                },
            }
        )
        smtp = SmtpSettings(host="127.0.0.1", port=smtp_port, sender="budgetwatch@czj.example")
        policy = RetryPolicy(tries=2, wait=0.01, backoff=30, backoff_max=300)

        def make() -> Dispatcher:
            return Dispatcher(db, directory, smtp=smtp, policy=policy, clock=lambda: T0)

        first = make()
        await first.run_once(T0)
        await first.run_once(T0 + dt.timedelta(seconds=30))  # still down: retried, backed off
        await first.aclose()
        pending = DeliveryLog(db).rows(("pending",))
        assert {r["channel"] for r in pending} == {"webhook"}
        assert all(r["recipient"] == EDU for r in pending)
        assert max(r["attempts"] for r in pending) == 2
        assert receivers.refused == 4  # the head of the queue: 2 attempts x 2 tries

        resolve(db)  # 8 more transitions while the dispatcher is down
        receivers.down = False
        second = make()  # a restart on the same SQLite file
        now = T0 + dt.timedelta(seconds=200)
        for _ in range(5):
            await second.run_once(now)
            now += dt.timedelta(seconds=300)
        await second.aclose()

    try:
        asyncio.run(scenario())
    finally:
        controller.stop()

    log = DeliveryLog(db)
    assert log.rows(("pending", "failed")) == []
    summary = log.summary()
    assert summary["webhook"]["delivered"] == 16
    assert summary["dingtalk"]["delivered"] == summary["wecom"]["delivered"] == 8
    assert (
        summary["email"]["delivered"] == 8 + 4
    )  # D101's 8, the bureau's 2 critical x (fire, resolve)

    # the flaky receiver got each of its 8 notifications exactly once after recovering
    flaky = receivers.acked["flaky"]
    assert len(flaky) == 8 and set(flaky.values()) == {1}
    kinds = Counter(b["transition"]["transition"] for b in receivers.bodies["flaky"])
    assert kinds == {"firing": 4, "resolved": 4}
    assert len(receivers.acked["health"]) == 8
    assert all(b["transition"]["department_id"] == HEALTH for b in receivers.bodies["health"])

    # DingTalk: every request signed correctly, markdown in Chinese
    assert receivers.bad_signatures == 0 and len(receivers.acked["dingtalk"]) == 8
    assert any("预算执行率偏低" in b["markdown"]["title"] for b in receivers.bodies["dingtalk"])
    assert {b["timestamp"] for b in receivers.bodies["dingtalk"]} >= {int(T0.timestamp() * 1000)}

    # WeCom: markdown content with the figures and the action
    contents = [b["markdown"]["content"] for b in receivers.bodies["wecom"]]
    assert len(contents) == 8 and any(
        "预算执行率：10.00%" in c and "建议措施" in c for c in contents
    )

    # email: Chinese subject and body, decoded from the SMTP wire
    by_rcpt: dict[str, list[EmailMessage]] = defaultdict(list)
    for rcpts, message in mailbox.messages:
        for rcpt in rcpts:
            by_rcpt[rcpt].append(message)
    assert len(by_rcpt["cwk@jyj.example"]) == 8 and len(by_rcpt["kz@jyj.example"]) == 8
    assert len(by_rcpt["jxk@czj.example"]) == 4
    subjects = {str(m["Subject"]) for m in by_rcpt["cwk@jyj.example"]}
    assert "【新预警·严重预警】预算执行率偏低：教育局 校舍改造" in subjects
    assert "【预警解除】预算执行率偏低：教育局 校舍改造" in subjects
    bureau = by_rcpt["jxk@czj.example"][0]
    assert str(bureau["Subject"]).startswith("【抄送财政局】")
    body = bureau.get_body().get_content()  # type: ignore[union-attr]
    assert "已支付：10.00万元" in body and "建议措施" in body
    assert len({m["Message-ID"] for m in by_rcpt["cwk@jyj.example"]}) == 8


class Robot:
    """A DingTalk stand-in that refuses (errcode 130101) a 21st message within 60 s of its
    signed timestamps and then everything for ten minutes, as DingTalk does, and a WeCom
    stand-in that takes everything."""

    def __init__(self, foreign: list[int] | None = None) -> None:
        self.stamps: list[int] = list(foreign or [])  # ms; messages of other senders included
        self.ours = 0
        self.refused = 0
        self.blocked_until = 0  # ms
        self.wecom: list[str] = []

    async def dingtalk(self, request: web.Request) -> web.Response:
        timestamp = int(request.query["timestamp"])
        if timestamp < self.blocked_until or len([s for s in self.stamps if s > timestamp - 60_000]) >= 20:
            self.refused += 1
            self.blocked_until = max(self.blocked_until, timestamp + 600_000)  # limited for ten minutes
            return web.json_response({"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"})
        self.stamps.append(timestamp)
        self.ours += 1
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def wecom_hook(self, request: web.Request) -> web.Response:
        self.wecom.append(request.headers[DEDUP_HEADER])
        return web.json_response({"errcode": 0, "errmsg": "ok"})


def _eight_projects_fire(db: Path) -> None:
    """Eight projects of one department fire together on 06-30: 25 warnings."""
    from tests.builders import approved, payment, registered
    from tests.notify_helpers import run_events

    events: list[dict[str, Any]] = []
    for i in range(8):
        pid = f"P{i}"
        events += [
            registered(pid, name=f"项目{i}", department_id=EDU, department_name="教育局", on="2025-01-02"),
            approved(pid, "1000000.00", on="2025-01-02"),
            payment(pid, "100000.00", on="2025-02-03", event_id=f"{pid}-PAY-1"),
        ]
    assert run_events(db, events, "2025-07-01") == 25


def _rounds(db: Path, robot: Robot, plan: list[tuple[int, float]]) -> list[tuple[int, int, int]]:
    """Dispatch rounds at (dispatcher number, seconds after T0); a new number is a restart.
    Returns (seconds, DingTalk messages taken so far, queues held back) per round."""

    async def scenario() -> list[tuple[int, int, int]]:
        async with receiving({"/dingtalk": robot.dingtalk, "/wecom": robot.wecom_hook}) as base:
            return await dispatch(base)

    async def dispatch(base: str) -> list[tuple[int, int, int]]:
        directory = parse_directory({"departments": {EDU: {
            "name": "教育局",
            "dingtalk": {"url": f"{base}/dingtalk?access_token=T", "secret": SECRET},
            "wecom": f"{base}/wecom?key=K",
        }}})
        rounds: list[tuple[int, int, int]] = []
        dispatchers: dict[int, Dispatcher] = {}
        try:
            for number, seconds in plan:
                if number not in dispatchers:
                    for old in dispatchers.values():
                        await old.aclose()
                    dispatchers = {number: Dispatcher(db, directory, clock=lambda: T0)}
                stats = await dispatchers[number].run_once(T0 + dt.timedelta(seconds=seconds))
                rounds.append((int(seconds), robot.ours, stats.paced))
        finally:
            for old in dispatchers.values():
                await old.aclose()
        return rounds

    return asyncio.run(scenario())


def test_a_robot_gets_at_most_twenty_messages_a_minute_across_a_restart(tmp_path: Path) -> None:
    """25 warnings for one department's DingTalk and WeCom robots. The dispatcher never
    meets the robot's refusal, holds the rest without spending attempts and sends them
    as the minute frees up, also after a restart."""
    db = tmp_path / "bw.db"
    _eight_projects_fire(db)
    robot = Robot()
    rounds = _rounds(db, robot, [(1, 0), (1, 30), (2, 45), (2, 63)])
    assert rounds == [(0, 20, 2), (30, 20, 2), (45, 20, 2), (63, 25, 0)]  # 63: 62 s after the first went
    assert robot.refused == 0
    assert len(robot.wecom) == 25 and len(set(robot.wecom)) == 25
    log = DeliveryLog(db)
    assert log.rows(("pending", "failed")) == []
    assert {r["attempts"] for r in log.rows(("delivered",))} == {1}  # waiting cost no attempt
    # first in, first out: the robot got the department's warnings in outbox order
    delivered = [r for r in log.rows(("delivered",)) if r["channel"] == "dingtalk"]
    assert [r["outbox_id"] for r in delivered] == sorted(r["outbox_id"] for r in delivered)


def test_a_robot_that_says_too_fast_gets_nothing_until_it_takes_messages_again(tmp_path: Path) -> None:
    """Someone else posted 15 messages to the same robot: ours are refused after 5. One
    refusal, one attempt spent; nothing is posted while DingTalk blocks (ten minutes),
    and the rest goes after."""
    db = tmp_path / "bw.db"
    _eight_projects_fire(db)
    t0_ms = int(T0.timestamp() * 1000)
    robot = Robot(foreign=[t0_ms - 1_000] * 15)
    rounds = _rounds(db, robot, [(1, 0), (1, 70), (1, 300), (1, 601), (1, 700)])
    assert robot.refused == 1
    assert [r[1] for r in rounds] == [5, 5, 5, 25, 25]
    dingtalk = [r for r in DeliveryLog(db).rows(("pending", "delivered", "failed")) if r["channel"] == "dingtalk"]
    assert {r["status"] for r in dingtalk} == {"delivered"}
    assert sorted(r["attempts"] for r in dingtalk).count(2) == 1  # the refused one, sent again later


def test_a_restarted_dispatcher_does_not_post_into_a_robots_block(tmp_path: Path) -> None:
    """The refusal outlives the dispatcher that met it: restarted 70 s into DingTalk's
    ten-minute block, the next one posts nothing until the block is over."""
    db = tmp_path / "bw.db"
    _eight_projects_fire(db)
    t0_ms = int(T0.timestamp() * 1000)
    robot = Robot(foreign=[t0_ms - 1_000] * 15)
    rounds = _rounds(db, robot, [(1, 0), (2, 70), (2, 300), (3, 599), (3, 601), (3, 700)])
    assert robot.refused == 1
    assert [r[1] for r in rounds] == [5, 5, 5, 5, 25, 25]
    stored = sqlite3.connect(db).execute("SELECT robot FROM robot_refusals").fetchall()
    assert len(stored) == 1 and len(stored[0][0]) == 32 and "access_token" not in stored[0][0]


def test_a_webhook_that_redirects_has_not_received_the_message(tmp_path: Path) -> None:
    """A 302 was counted as delivered: the receiver never saw the warnings. Not followed
    (a POST must not go where nobody configured), it is a failed attempt that says where
    the receiver moved, without the new address's query (tokens live there)."""
    db = tmp_path / "bw.db"
    assert fire(db) == 8
    seen: list[str] = []

    async def moved(request: web.Request) -> web.Response:
        seen.append(request.path)
        raise web.HTTPFound("/new-hook?token=SECRET-9")

    async def scenario() -> None:
        async with receiving({"/hook": moved}) as base:
            directory = parse_directory({"departments": {EDU: {"name": "教育局", "webhook": f"{base}/hook"}}})
            dispatcher = Dispatcher(db, directory, policy=RetryPolicy(tries=1), clock=lambda: T0)
            try:
                stats = await dispatcher.run_once(T0)
            finally:
                await dispatcher.aclose()
            assert stats.delivered == 0 and stats.failed_attempts == 1

    asyncio.run(scenario())
    assert seen == ["/hook"]  # tried once, and the redirect was not followed
    rows = DeliveryLog(db).rows(("pending", "delivered", "failed"))
    assert rows and all(r["status"] != "delivered" for r in rows)
    head = min(rows, key=lambda r: r["id"])
    assert "改投" in head["last_error"] and "/new-hook" in head["last_error"]
    assert "SECRET-9" not in head["last_error"]


def test_a_hanging_receiver_holds_its_own_queue_only(tmp_path: Path) -> None:
    """Each round waited for every queue: one department's webhook that hangs held every
    other department's new notifications for its whole timeout (~30 s each try)."""
    db = tmp_path / "bw.db"
    fire(db)
    release = asyncio.Event()
    got: dict[str, list[str]] = defaultdict(list)

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"ok": True})

    async def ok(request: web.Request) -> web.Response:
        got["ok"].append((await request.json())["transition"]["transition"])
        return web.json_response({"ok": True})

    async def scenario() -> None:
        app = web.Application()
        app.router.add_post("/hang", hang)
        app.router.add_post("/ok", ok)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        directory = parse_directory({"departments": {
            EDU: {"name": "教育局", "webhook": f"http://127.0.0.1:{port}/hang"},
            HEALTH: {"name": "卫生健康委员会", "webhook": f"http://127.0.0.1:{port}/ok"},
        }})
        d = Dispatcher(db, directory, poll_interval=0.05, timeout=60)
        stop = asyncio.Event()
        loop = asyncio.create_task(d.run_forever(stop))
        try:
            async def until(predicate: Callable[[], bool]) -> None:
                for _ in range(400):
                    if predicate():
                        return
                    await asyncio.sleep(0.05)
                raise AssertionError(f"not reached: {dict(got)}")

            await until(lambda: got["ok"].count("firing") == 4)
            await asyncio.to_thread(resolve, db)  # new transitions while /hang still hangs
            await until(lambda: got["ok"].count("resolved") == 4)
            assert not release.is_set()  # all of it while the other department's post hung
        finally:
            release.set()
            stop.set()
            await asyncio.wait_for(loop, 30)
            await runner.cleanup()

    asyncio.run(scenario())


def test_an_address_the_mail_server_refuses_fails_the_delivery_and_names_it(tmp_path: Path) -> None:
    """The server took the mail for cwk@ and answered 550 for bgs@: aiosmtplib raises only
    when every address is refused, so it was recorded as delivered (notification audit)."""
    db = tmp_path / "bw.db"
    fire(db)
    received: list[list[str]] = []

    class Picky:
        async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                              rcpt_options: Any) -> str:
            if address.startswith("bgs@"):
                return "550 5.1.1 no such user"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(list(envelope.rcpt_tos))
            return "250 OK"

    port = free_port()
    controller = Controller(Picky(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        directory = parse_directory({"departments": {
            EDU: {"name": "教育局", "email": ["cwk@edu.example", "bgs@edu.example"]}}})
        d = Dispatcher(db, directory, smtp=SmtpSettings("127.0.0.1", port=port, sender="bw@czj.example"),
                       policy=RetryPolicy(tries=1))
        stats = asyncio.run(d.run_once(T0))
    finally:
        controller.stop()
    assert received and all(r == ["cwk@edu.example"] for r in received)
    log = DeliveryLog(db)
    failed = [r for r in log.rows(("failed",)) if r["channel"] == "email"]
    assert len(failed) == len(received) == 4 and stats.delivered == 0  # set aside: a retry would mail cwk@ again
    assert all("拒收部分收件人：bgs@edu.example（550" in r["last_error"] for r in failed)
    assert all("已送达：cwk@edu.example" in r["last_error"] for r in failed)


def test_a_project_code_in_chinese_reaches_every_channel_on_the_first_attempt(tmp_path: Path) -> None:
    """The dedup key (alert id, hence the project and department codes) went into HTTP
    headers as it was: httpx sends header values as ASCII, so "自然资源-2026-01" raised
    UnicodeEncodeError, the delivery was set aside as failed after one attempt and
    `outbox --retry-failed` failed the same way. The headers are percent-encoded UTF-8
    (unquote gives the body's dedup_key back); an ASCII key goes byte for byte as before."""
    from typer.testing import CliRunner

    from streams.cli import app
    from tests.builders import approved, payment, registered
    from tests.notify_helpers import run_events, write_yaml

    natural, project = "自然资源局", "自然资源-2026-01"
    events: list[dict[str, Any]] = []
    for pid, dept, dept_name in ((project, natural, "自然资源和规划局"), ("P1", EDU, "教育局")):
        events += [
            registered(pid, name="耕地保护", department_id=dept, department_name=dept_name, on="2025-01-02"),
            approved(pid, "1000000.00", on="2025-01-02"),
            payment(pid, "100000.00", on="2025-02-03", event_id=f"{pid}-PAY-1"),
        ]
    db = tmp_path / "bw.db"
    assert run_events(db, events, "2025-07-01") == 8
    headers: dict[str, list[tuple[str, str, str]]] = defaultdict(list)  # path -> (dedup, idempotency, body key)
    mailbox = Mailbox()
    smtp_port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        headers[request.match_info["name"]].append(
            (request.headers[DEDUP_HEADER], request.headers["Idempotency-Key"], body["dedup_key"])
        )
        return web.json_response({"ok": True})

    async def robot(request: web.Request) -> web.Response:
        headers[request.path.strip("/")].append((request.headers[DEDUP_HEADER], "", ""))
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def scenario() -> None:
        async with receiving({"/hook/{name}": hook, "/dingtalk": robot, "/wecom": robot}) as base:
            directory = {"departments": {
                natural: {
                    "name": "自然资源和规划局",
                    "webhook": f"{base}/hook/natural",
                    "dingtalk": {"url": f"{base}/dingtalk?access_token=T", "secret": SECRET},
                    "wecom": f"{base}/wecom?key=K",
                    "email": ["cwk@zrzy.example"],
                },
                EDU: {"name": "教育局", "webhook": f"{base}/hook/edu"},
            }}
            smtp = SmtpSettings(host="127.0.0.1", port=smtp_port, sender="budgetwatch@czj.example")
            first = Dispatcher(db, parse_directory(directory), smtp=smtp, policy=RetryPolicy(tries=1), clock=lambda: T0)
            try:
                stats = await first.run_once(T0)
            finally:
                await first.aclose()
            assert stats.failed_attempts == 0 and stats.delivered == 4 * 4 + 4, stats.errors

            # a store whose deliveries failed before the fix: re-queued, they go out too
            with sqlite3.connect(db) as con:
                con.execute("UPDATE deliveries SET status = 'failed', last_error = 'UnicodeEncodeError'"
                            " WHERE channel = 'webhook'")
            path = write_yaml(tmp_path / "departments.yaml", directory)
            env = {"BUDGETWATCH_DEPARTMENTS": str(path), "BUDGETWATCH_ALERTMANAGER_URL": "",
                   "BUDGETWATCH_NOTIFY_HORIZON_DAYS": "0"}
            requeued = await asyncio.to_thread(CliRunner().invoke, app, ["outbox", "--retry-failed", "--db", str(db)],
                                               env=env)
            assert requeued.exit_code == 0, requeued.output
            second = Dispatcher(db, parse_directory(directory), smtp=smtp, policy=RetryPolicy(tries=1),
                                clock=lambda: T0)
            try:
                again = await second.run_once(T0 + dt.timedelta(seconds=5))
            finally:
                await second.aclose()
            assert again.failed_attempts == 0 and again.delivered == 8, again.errors

    try:
        asyncio.run(scenario())
    finally:
        controller.stop()

    assert DeliveryLog(db).rows(("pending", "failed")) == []
    natural_hooks = headers["natural"]
    assert len(natural_hooks) == 8  # 4 warnings, sent twice (the second time re-queued)
    assert sum(project in key for _, _, key in natural_hooks) == 6  # the project's 3 alerts, and its department's
    for dedup, idempotency, key in natural_hooks:
        assert natural in key
        assert dedup == idempotency == quote(key, safe="|:-_.")  # ASCII only, percent-encoded UTF-8
        assert unquote(dedup) == key
    edu_hooks = headers["edu"]
    assert len(edu_hooks) == 8
    assert all(dedup == idempotency == key for dedup, idempotency, key in edu_hooks)  # byte-identical
    stored = {r["dedup_key"] for r in DeliveryLog(db).rows(("delivered",))}
    for channel in ("dingtalk", "wecom"):
        sent = [unquote(dedup) for dedup, _, _ in headers[channel]]
        assert len(sent) == 4 and set(sent) <= stored and all(natural in k for k in sent)
    # email carries non-ASCII headers as RFC 2047 encoded words: the key arrives as it is
    assert len(mailbox.messages) == 4
    assert {str(m[DEDUP_HEADER]) for _, m in mailbox.messages} <= stored
    assert all(str(m["Message-ID"]).isascii() for _, m in mailbox.messages)
