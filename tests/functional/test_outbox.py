"""The outbox dispatcher in-process: fan-out, retries and backoff with an injected
clock, restarts, rebuilds, the Alertmanager push, metrics and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from alerts.notification_text import compose_notification
from connectors.directory import Directory, parse_directory
from connectors.notify import DEDUP_HEADER
from connectors.notify.smtp import SmtpSettings
from connectors.profiles import load_profile
from streams.cli import app
from streams.engine import Engine
from streams.errors import BudgetwatchError
from streams.outbox import (
    DeliveryLog,
    Dispatcher,
    RetryPolicy,
    register_delivery_metrics,
    service_workers,
)
from streams.store import Store
from tests.notify_helpers import EDU, HEALTH, fire, outbox_count, resolve, run_events, write_yaml

T0 = dt.datetime(2025, 7, 1, 8, 0, tzinfo=dt.UTC)

DIRECTORY = {
    "default": {"name": "财政局绩效科", "webhook": "https://hooks.example/default"},
    "escalation": {
        "name": "财政局（升级）",
        "email": ["bureau@czj.example"],
        "severities": ["critical"],
    },
    "departments": {
        EDU: {
            "name": "教育局",
            "webhook": "https://hooks.example/edu",
            "dingtalk": {"url": "https://ding.example/robot/send?access_token=T", "secret": "SECx"},
            "wecom": "https://wecom.example/send?key=K",
        },
    },
}


class Receiver:
    """An httpx MockTransport that records requests and can fail on demand."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.acked: list[str] = []  # dedup keys of the requests answered with success
        self.fail: Callable[[httpx.Request], bool] = lambda request: False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.fail(request):
            return httpx.Response(500, text="down")
        self.acked.append(request.headers[DEDUP_HEADER])
        if "ding" in request.url.host or "wecom" in request.url.host:
            return httpx.Response(200, json={"errcode": 0, "errmsg": "ok"})
        return httpx.Response(200, json={"ok": True})

    def ok_keys(self) -> list[str]:
        return list(self.acked)


class Mail:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def __call__(self, message: Any, **kwargs: Any) -> None:
        self.sent.append(message)


async def no_sleep(seconds: float) -> None:
    return None


def dispatcher(
    path: Path, receiver: Receiver, mail: Mail, directory: Directory | None = None, **options: Any
) -> Dispatcher:
    client = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
    return Dispatcher(
        path,
        directory or parse_directory(DIRECTORY),
        client=client,
        send_mail=mail,
        smtp=SmtpSettings("mail.example"),
        sleep=no_sleep,
        clock=lambda: T0,
        **options,
    )


def run(d: Dispatcher, now: dt.datetime) -> Any:
    return asyncio.run(d.run_once(now))


def test_fan_out_to_every_channel_once(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    assert fire(db) == 8
    receiver, mail = Receiver(), Mail()
    d = dispatcher(db, receiver, mail)
    stats = run(d, T0)
    # D101: 4 transitions x (webhook, dingtalk, wecom); D102 is not listed: 4 x default webhook;
    # the bureau gets an email for each critical one (low_execution of P1 and P2).
    assert (stats.fanned_out, stats.created, stats.delivered) == (8, 18, 18)
    hosts = Counter(r.url.host for r in receiver.requests)
    assert hosts == {"hooks.example": 8, "ding.example": 4, "wecom.example": 4}
    paths = Counter(r.url.path for r in receiver.requests if r.url.host == "hooks.example")
    assert paths == {"/edu": 4, "/default": 4}
    assert len(mail.sent) == 2 and all("抄送财政局" in m["Subject"] for m in mail.sent)
    keys = receiver.ok_keys() + [m[DEDUP_HEADER] for m in mail.sent]
    assert len(set(keys)) == 18
    default_bodies = [json.loads(r.content) for r in receiver.requests if r.url.path == "/default"]
    assert {b["transition"]["department_id"] for b in default_bodies} == {HEALTH}
    # nothing new: nothing sent again
    assert run(d, T0 + dt.timedelta(minutes=5)).delivered == 0
    assert len(receiver.requests) == 16


def test_a_backfilled_history_is_not_notified_beyond_the_horizon(tmp_path: Path) -> None:
    # Imported late: the 06-30 firings are history once the business clock is at 07-06
    # and they resolved on 07-05; so are the resolutions of alerts nobody was told of.
    for horizon, expect_all in ((3, False), (0, True)):
        db = tmp_path / f"h{horizon}.db"
        fire(db)
        resolve(db)
        receiver, mail = Receiver(), Mail()
        d = dispatcher(db, receiver, mail, horizon_days=horizon)
        stats = run(d, T0)
        assert stats.fanned_out == 16
        assert stats.skipped_historical == (0 if expect_all else 16)
        kinds = Counter(json.loads(r.content)["transition"]["transition"]
                        for r in receiver.requests if r.url.host == "hooks.example")
        assert kinds == (Counter(firing=8, resolved=8) if expect_all else Counter())
        assert stats.created == stats.delivered == len(receiver.requests) + len(mail.sent)
        asyncio.run(d.aclose())
        # judged once, also by a new dispatcher (no in-memory state): nothing re-fanned or sent
        d = dispatcher(db, receiver, mail, horizon_days=horizon)
        again = run(d, T0 + dt.timedelta(minutes=5))
        assert (again.fanned_out, again.skipped_historical, again.created, again.delivered) == (0, 0, 0, 0)
        asyncio.run(d.aclose())


def test_an_old_alert_still_firing_is_announced_and_its_resolution_follows(tmp_path: Path) -> None:
    """behind_schedule (04-20) and stalled (05-04) were still firing when a bureau went
    live on 07-01 with a 30-day horizon: they were never announced, and their later
    resolutions went to departments that had never heard of them (notification audit)."""
    db = tmp_path / "bw.db"
    fire(db)
    receiver, mail = Receiver(), Mail()
    d = dispatcher(db, receiver, mail, horizon_days=30)
    def hooks(kind: str) -> set[str]:
        bodies = [json.loads(r.content)["transition"] for r in receiver.requests if r.url.host == "hooks.example"]
        return {t["alert_id"] for t in bodies if t["transition"] == kind}

    first = run(d, T0)
    told = hooks("firing")
    assert first.skipped_historical == 0
    assert {"2025:behind_schedule:project:P1", "2025:stalled:project:P1"} <= told
    resolve(db)
    run(d, T0 + dt.timedelta(days=5))
    assert hooks("resolved") == told  # every one it was told of, and no other


def test_a_backfill_fanned_out_between_its_commits_is_judged_by_where_the_run_ends(
    tmp_path: Path,
) -> None:
    # A dispatcher polls while a backfill commits in steps: the 06-30 firings are committed
    # with the clock at 07-01, yet the run is heading to 07-06, so they are history (3 days).
    from budget.calendar import to_day
    from budget.events import parse_day
    from connectors.jsonl import parse_lines
    from streams.ingest import ingest
    from tests.builders import approved, jsonl, payment, registered
    from tests.notify_helpers import PROJECTS

    events: list[dict[str, Any]] = []
    for pid, (dept, dept_name, name) in PROJECTS.items():
        events += [
            registered(pid, name=name, department_id=dept, department_name=dept_name, on="2025-01-02"),
            approved(pid, "1000000.00", on="2025-01-02"),
            payment(pid, "100000.00", on="2025-02-03", event_id=f"{pid}-PAY-1"),
            payment(pid, "1.00", on="2025-07-01", event_id=f"{pid}-PAY-SMALL"),  # a commit on 07-01
            payment(pid, "600000.00", on="2025-07-05", event_id=f"{pid}-PAY-2"),
        ]
    directory = parse_directory(DIRECTORY)
    db = tmp_path / "bw.db"
    log = DeliveryLog(db)
    totals = [0, 0, 0, 0]
    clocks: list[int | None] = []
    with Store(db) as store:
        ingest(store, parse_lines(jsonl(events).splitlines(), "backfill.jsonl"))
        engine = Engine(store, load_profile("baseline"), dispositions=False, commit_every=1)

        def poll(done: int, pending: int) -> None:  # after each commit, as `serve` would
            clocks.append(store.cursor()[0])
            for i, n in enumerate(log.fan_out(directory, 0.0, horizon_days=3)):
                totals[i] += n

        engine.run(to_day(parse_day("2025-07-06")), progress=poll)
    log.close()
    assert to_day(parse_day("2025-07-01")) in clocks  # a round did see the clock at 07-01
    fanned, created, skipped, year_closed = totals
    assert year_closed == 0
    with Store(db) as store:
        outbox_dates = [r[0] for r in store.db.execute(
            "SELECT json_extract(t.data, '$.date') FROM outbox o JOIN transitions t ON t.id = o.transition_id")]
        delivered_dates = {r[0] for r in store.db.execute(
            "SELECT DISTINCT json_extract(t.data, '$.date') FROM deliveries d"
            " JOIN outbox o ON o.id = d.outbox_id JOIN transitions t ON t.id = o.transition_id")}
    # Polled at 07-01 the 06-30 alerts were firing, yet the run was heading to 07-06 where
    # they resolve: their rows waited, and in the end every one was history.
    assert "2025-06-30" in outbox_dates and fanned == len(outbox_dates)
    assert skipped == len(outbox_dates) >= 16
    assert created == 0 and delivered_dates == set()


def test_retries_with_backoff_on_an_injected_clock(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    fire(db)
    receiver, mail = Receiver(), Mail()
    receiver.fail = lambda r: r.url.path == "/edu"
    policy = RetryPolicy(tries=3, backoff=30, backoff_max=120, max_attempts=50)
    d = dispatcher(db, receiver, mail, policy=policy)
    first = run(d, T0)
    edu = [r for r in receiver.requests if r.url.path == "/edu"]
    # only the head of the queue is tried (3 immediate tries), the rest wait behind it
    assert len(edu) == 3 and first.failed_attempts == 1
    head = json.loads(edu[0].content)["dedup_key"]
    assert all(json.loads(r.content)["dedup_key"] == head for r in edu)
    rows = {r["dedup_key"]: r for r in DeliveryLog(db).rows(("pending",))}
    assert rows[head]["attempts"] == 1 and "HTTP 500" in rows[head]["last_error"]
    assert rows[head]["next_attempt"] == (T0 + dt.timedelta(seconds=30)).isoformat()
    shown = CliRunner().invoke(app, ["outbox", "--db", str(db)], env={"COLUMNS": "400"}).output
    assert "07-01 16:00:30" in shown  # the next try in Beijing time (08:00:30 UTC)
    assert shown.count("排在同一通道一条失败待重试的通知之后") == 3  # the rest of the edu queue
    assert "新预警" in shown and " firing " not in shown  # kinds in Chinese, as everywhere else
    # not due yet: nothing is tried
    before = len(receiver.requests)
    run(d, T0 + dt.timedelta(seconds=29))
    assert len(receiver.requests) == before
    # due: tried again, fails again, the delay doubles (30, 60, 120, 120 …)
    run(d, T0 + dt.timedelta(seconds=30))
    rows = {r["dedup_key"]: r for r in DeliveryLog(db).rows(("pending",))}
    assert rows[head]["attempts"] == 2
    assert rows[head]["next_attempt"] == (T0 + dt.timedelta(seconds=90)).isoformat()
    assert policy.delay(3) == 120 and policy.delay(9) == 120
    # the receiver recovers: the whole queue drains in order, each key once
    receiver.fail = lambda r: False
    stats = run(d, T0 + dt.timedelta(seconds=90))
    assert stats.delivered == 4
    delivered = [json.loads(r.content)["dedup_key"] for r in receiver.requests[-4:]]
    assert delivered[0] == head
    assert len(set(delivered)) == 4
    assert DeliveryLog(db).summary()["webhook"]["pending"] == 0


def test_failed_after_max_attempts_is_listed_and_requeued(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    fire(db)
    receiver, mail = Receiver(), Mail()
    receiver.fail = lambda r: r.url.host == "wecom.example"
    d = dispatcher(db, receiver, mail, policy=RetryPolicy(tries=1, backoff=1, max_attempts=2))
    run(d, T0)
    stats = run(d, T0 + dt.timedelta(seconds=5))
    assert stats.gave_up == 1
    runner = CliRunner()
    result = runner.invoke(app, ["outbox", "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    failed = [r for r in data["deliveries"] if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["channel"] == "wecom"
    assert "HTTP 500" in failed[0]["last_error"]
    assert data["totals"]["pending"] == 3  # queued behind the failed one, never dropped
    # after the fix, --retry-failed re-queues it and everything goes out
    receiver.fail = lambda r: False
    result = runner.invoke(app, ["outbox", "--db", str(db), "--retry-failed"])
    assert "已重新排队 1 条" in result.output
    run(d, T0 + dt.timedelta(seconds=10))
    run(d, T0 + dt.timedelta(seconds=20))
    assert DeliveryLog(db).summary()["wecom"] == {"pending": 0, "delivered": 4, "failed": 0}


def test_restart_loses_none_and_rebuild_sends_nothing_twice(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    fire(db)
    receiver, mail = Receiver(), Mail()
    receiver.fail = lambda r: r.url.host == "ding.example"
    first = dispatcher(db, receiver, mail)
    run(first, T0)
    asyncio.run(first.aclose())
    assert resolve(db) == 8
    # a new dispatcher on the same file: the failed ones and the new transitions go out
    receiver.fail = lambda r: False
    second = dispatcher(db, receiver, mail)
    stats = run(second, T0 + dt.timedelta(hours=2))
    assert stats.fanned_out == 8
    keys = Counter(receiver.ok_keys())
    with Store(db) as store:
        expected = {
            k
            for (k,) in store.db.execute(
                "SELECT dedup_key FROM deliveries WHERE channel != 'email'"
            )
        }
    assert set(keys) == expected and len(expected) == 32
    assert max(keys.values()) == 1
    # a rebuild replays the log: same transitions, same keys, nothing re-sent
    with Store(db) as store:
        engine = Engine(store, load_profile("baseline"), dispositions=False)
        engine.rebuild()
        engine.run(dt.date(2025, 7, 6).toordinal())
    assert outbox_count(db) == 16
    third = dispatcher(db, receiver, Mail())  # a fresh process scans the whole outbox
    again = run(third, T0 + dt.timedelta(hours=3))
    assert (again.created, again.delivered) == (0, 0)
    # even when every outbox row looks new (ids reused after a reset), the content
    # keys of the re-derived transitions match: nothing is created or sent twice
    with Store(db) as store:
        store.db.execute("DELETE FROM delivery_fanout")
    fourth = dispatcher(db, receiver, Mail())
    again = run(fourth, T0 + dt.timedelta(hours=4))
    assert (again.fanned_out, again.created, again.delivered) == (16, 0, 0)
    assert len(receiver.acked) == 32


def test_unroutable_department_is_visible_not_dropped(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    fire(db)
    directory = parse_directory(
        {"departments": {EDU: {"name": "教育局", "webhook": "https://hooks.example/edu"}}}
    )
    receiver = Receiver()
    d = dispatcher(db, receiver, Mail(), directory=directory)
    run(d, T0)
    log = DeliveryLog(db)
    assert log.summary()["none"]["failed"] == 4
    unrouted = log.rows(("failed",))
    assert all(
        r["department_id"] == HEALTH and "不在部门目录中" in r["last_error"] for r in unrouted
    )
    registry = CollectorRegistry()
    register_delivery_metrics(registry, db, clock=lambda: T0.timestamp())
    assert (
        registry.get_sample_value(
            "budget_notification_deliveries", {"channel": "none", "status": "failed"}
        )
        == 4
    )
    assert (
        registry.get_sample_value(
            "budget_notification_deliveries", {"channel": "webhook", "status": "delivered"}
        )
        == 4
    )
    assert (
        registry.get_sample_value("budget_notifications_delivered_total", {"channel": "webhook"})
        == 4
    )
    assert registry.get_sample_value("budget_notification_outbox_backlog") == 0


def test_an_unroutable_department_warns_at_start_and_is_sent_once_the_directory_is_fixed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A typo (D0101 for D101) with no default: the notifications failed on channel none,
    and after fixing the directory --retry-failed requeued 0 of them, for good (audit)."""
    import logging

    db = tmp_path / "bw.db"
    fire(db)
    typo = parse_directory({"departments": {"D0101": {"name": "教育局", "webhook": "https://hooks.example/edu"},
                                            HEALTH: {"name": "卫健委", "webhook": "https://hooks.example/health"}}})
    receiver = Receiver()
    with caplog.at_level(logging.WARNING, logger="budgetwatch.outbox"):
        d = dispatcher(db, receiver, Mail(), directory=typo, horizon_days=30)
    assert "部门目录中没有这些部门的通知通道" in caplog.text and "D101" in caplog.text
    run(d, T0)
    log = DeliveryLog(db)
    assert log.summary()["none"]["failed"] == 4 and receiver.ok_keys() and all(
        "|D102|" in k for k in receiver.ok_keys())
    assert log.retry_failed() == 4
    fixed = parse_directory({"departments": {EDU: {"name": "教育局", "webhook": "https://hooks.example/edu"},
                                             HEALTH: {"name": "卫健委", "webhook": "https://hooks.example/health"}}})
    # weeks later: routed again on request, not judged as history by then
    later = dispatcher(db, receiver, Mail(), directory=fixed, horizon_days=30)
    stats = run(later, T0 + dt.timedelta(days=60))
    edu = [k for k in receiver.ok_keys() if "|D101|" in k]
    assert stats.delivered == 4 and len(edu) == len(set(edu)) == 4
    assert "none" not in DeliveryLog(db).summary()
    assert Counter(receiver.ok_keys()).most_common(1)[0][1] == 1  # D102's were not sent again


def test_alertmanager_push_resend_and_resolve(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    fire(db)
    posts: list[list[dict[str, Any]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v2/alerts"
        posts.append(json.loads(request.content))
        return httpx.Response(200)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    d = Dispatcher(
        db, None, client=client, alertmanager_url="http://am.example/", alertmanager_interval=60
    )
    t1 = T0 + dt.timedelta(days=9)  # 07-10: the wall clock is after the business dates
    assert run(d, t1).alertmanager_pushed == 8
    assert {a["labels"]["department"] for a in posts[0]} == {EDU, HEALTH}
    assert all(a["endsAt"] == "2025-07-10T08:04:00Z" for a in posts[0])
    run(d, t1 + dt.timedelta(seconds=30))
    assert len(posts) == 1  # nothing changed, not yet due
    run(d, t1 + dt.timedelta(seconds=60))
    assert len(posts) == 2  # re-sent while active
    resolve(db)
    stats = run(d, t1 + dt.timedelta(seconds=70))  # a change is pushed at once
    assert stats.alertmanager_pushed == 8
    assert all(a["endsAt"] == "2025-07-04T16:00:00Z" for a in posts[-1])  # 07-05 Beijing
    assert {a["labels"]["alertname"] for a in posts[-1]} == {
        "low_execution",
        "behind_schedule",
        "stalled",
        "department_low_execution",
    }
    run(d, t1 + dt.timedelta(seconds=200))
    assert len(posts) == 3  # nothing active, nothing to end: no more posts


def test_alertmanager_keeps_what_it_was_told_while_new_transitions_are_held(tmp_path: Path) -> None:
    """The notifier holds new transitions while it reads a backlog (half an hour is
    foreseen). Nothing was re-sent meanwhile, so every alert Alertmanager had expired
    at its endsAt — a false resolution for every department — and fired anew after."""
    db = tmp_path / "bw.db"
    fire(db)
    posts: list[list[dict[str, Any]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        posts.append(json.loads(request.content))
        return httpx.Response(200)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    d = Dispatcher(db, None, client=client, alertmanager_url="http://am.example/", alertmanager_interval=60,
                   board_url="https://budget.example.gov.cn/bw/")
    t1 = T0 + dt.timedelta(days=9)
    assert run(d, t1).alertmanager_pushed == 8
    told = {a["labels"]["alertname"] + a["labels"].get("project", "") for a in posts[0]}
    assert all(a["generatorURL"] == "https://budget.example.gov.cn/bw/alerts/" + quote(a["annotations"]["alert_id"],
                                                                                       safe=":") for a in posts[0])
    holding = [True]
    d.hold = lambda: holding[0]
    resolve(db)  # read from the backlog: held, not yet told
    for seconds in (60, 120, 180, 240, 300):
        stats = run(d, t1 + dt.timedelta(seconds=seconds))
        assert stats.held and stats.alertmanager_pushed == 8
        again = posts[-1]
        assert {a["labels"]["alertname"] + a["labels"].get("project", "") for a in again} == told
        assert all(a["endsAt"] == format_time(t1 + dt.timedelta(seconds=seconds + 240)) for a in again)
    assert len(posts) == 6
    run(d, t1 + dt.timedelta(seconds=330))
    assert len(posts) == 6  # not due, and nothing new may go while held
    holding[0] = False
    assert run(d, t1 + dt.timedelta(seconds=340)).alertmanager_pushed == 8  # the held resolutions, at once
    assert all(a["endsAt"] == "2025-07-04T16:00:00Z" for a in posts[-1])


def format_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_cli_alertmanager_config_and_deliver_once(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    fire(db)
    directory = write_yaml(
        tmp_path / "departments.yaml",
        {
            "departments": {EDU: {"name": "教育局", "webhook": "http://127.0.0.1:9/edu"}},
        },
    )
    runner = CliRunner()
    result = runner.invoke(
        app, ["alertmanager-config", "--departments", str(directory), "--group-wait", "1s"]
    )
    assert result.exit_code == 0, result.output
    assert 'department="D101"' in result.output and "group_wait: 1s" in result.output
    bad = write_yaml(tmp_path / "bad.yaml", {"departments": {EDU: {"webhook": "x"}}})
    result = runner.invoke(app, ["alertmanager-config", "--departments", str(bad)])
    assert result.exit_code != 0
    result = runner.invoke(
        app, ["deliver", "--once", "--db", str(db)], env={"BUDGETWATCH_DEPARTMENTS": ""}
    )
    assert result.exit_code != 0


def test_serve_hook_builds_the_dispatcher_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams.service import Service

    db = tmp_path / "bw.db"
    fire(db)
    for name in ("BUDGETWATCH_DEPARTMENTS", "BUDGETWATCH_ALERTMANAGER_URL"):
        monkeypatch.delenv(name, raising=False)
    with Store(db) as store:
        service = Service(Engine(store, load_profile("baseline")))
        assert service_workers(service) == []  # nothing configured: no worker ...
        # ... but the metrics are there; with no directory to route them, no backlog: it
        # would only grow (an Alertmanager-only setup's alert on it fired for good)
        assert service.registry.get_sample_value("budget_notification_oldest_pending_age_seconds") == 0
        assert service.registry.get_sample_value("budget_notification_outbox_backlog") is None
        monkeypatch.setenv("BUDGETWATCH_ALERTMANAGER_URL", "http://127.0.0.1:9")
        service = Service(Engine(store, load_profile("baseline")))
        assert len(service_workers(service)) == 1
        assert service.registry.get_sample_value("budget_notification_outbox_backlog") is None
        directory = write_yaml(tmp_path / "d.yaml", DIRECTORY)
        monkeypatch.setenv("BUDGETWATCH_DEPARTMENTS", str(directory))
        service = Service(Engine(store, load_profile("baseline")))
        workers = service_workers(service)
        assert len(workers) == 1 and workers[0].directory is not None
        assert workers[0].wake is not None  # woken after each commit with transitions
        assert service.registry.get_sample_value("budget_notification_outbox_backlog") == 8  # not yet routed
        assert workers[0].horizon_days == 30  # the default horizon of notified history
        asyncio.run(workers[0].aclose())
        monkeypatch.setenv("BUDGETWATCH_NOTIFY_HORIZON_DAYS", "0")
        workers = service_workers(Service(Engine(store, load_profile("baseline"))))
        assert workers[0].horizon_days == 0
        asyncio.run(workers[0].aclose())
        monkeypatch.delenv("BUDGETWATCH_NOTIFY_HORIZON_DAYS")
        monkeypatch.delenv("BUDGETWATCH_DEPARTMENTS")
        workers = service_workers(  # `serve --departments`, with no environment
            Service(Engine(store, load_profile("baseline"))), departments=str(directory)
        )
        assert len(workers) == 1 and workers[0].directory is not None
        asyncio.run(workers[0].aclose())
        monkeypatch.setenv(
            "BUDGETWATCH_DEPARTMENTS", str(write_yaml(tmp_path / "bad.yaml", {"x": 1}))
        )
        with pytest.raises(BudgetwatchError, match=r"bad\.yaml"):
            service_workers(Service(Engine(store, load_profile("baseline"))))


def test_deliver_once_says_how_much_history_it_left_unsent(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    fire(db)
    resolve(db)
    directory = write_yaml(tmp_path / "departments.yaml", {"departments": {}})  # nobody reachable
    result = CliRunner().invoke(
        app, ["deliver", "--once", "--db", str(db), "--departments", str(directory)],
        env={"BUDGETWATCH_NOTIFY_HORIZON_DAYS": "3", "BUDGETWATCH_ALERTMANAGER_URL": ""},
    )
    assert result.exit_code == 0, result.output
    assert "16 条预警变动属于历史数据（早于业务日期 3 天以上且预警已解除，或其预警从未通知过）" in result.output
    assert "alerts --all" in result.output


def test_deliver_once_says_how_many_are_still_waiting(tmp_path: Path) -> None:
    """One round sends a bounded batch per queue and leaves failed attempts for their
    retry; its summary counted only what it sent ("投递成功 240 条" with 351 waiting)."""
    import socket

    db = tmp_path / "bw.db"
    assert fire(db) == 8
    with socket.socket() as probe:  # a port nothing listens on: every post is refused
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    directory = write_yaml(tmp_path / "departments.yaml", {
        "departments": {EDU: {"name": "教育局", "webhook": f"http://127.0.0.1:{closed}/hook"}},
    })
    result = CliRunner().invoke(
        app, ["deliver", "--once", "--db", str(db), "--departments", str(directory)],
        env={"BUDGETWATCH_ALERTMANAGER_URL": "", "BUDGETWATCH_NOTIFY_HORIZON_DAYS": "0"},
    )
    assert result.exit_code == 0, result.output
    log = DeliveryLog(db)
    try:
        waiting = sum(c.get("pending", 0) for c in log.summary().values())
    finally:
        log.close()
    assert waiting > 0 and f"仍有 {waiting} 条通知待投递" in result.output


def test_a_defect_in_one_delivery_sets_it_aside_instead_of_holding_the_queue(tmp_path: Path) -> None:
    """An exception that is not a DeliveryError (here the mail library refusing a header)
    meets every retry again: the delivery is failed at once, listed and re-queueable, and
    the recipient's next messages go out in the same round."""
    db = tmp_path / "bw.db"
    assert fire(db) == 8
    receiver = Receiver()

    class Picky(Mail):
        calls = 0

        async def __call__(self, message: Any, **kwargs: Any) -> None:
            self.calls += 1
            if self.calls == 1:
                raise ValueError("Header values may not contain linefeed or carriage return characters")
            self.sent.append(message)

    mail = Picky()
    stats = run(dispatcher(db, receiver, mail), T0)
    assert stats.gave_up == 1 and stats.failed_attempts == 1
    emails = [r for r in DeliveryLog(db).rows(("pending", "delivered", "failed")) if r["channel"] == "email"]
    assert sorted(r["status"] for r in emails) == ["delivered", "failed"]
    failed = next(r for r in emails if r["status"] == "failed")
    assert failed["attempts"] == 1 and "ValueError: Header values" in failed["last_error"]
    assert failed["last_error"].startswith("发送时出现程序错误，已停止重试")  # said in Chinese, with what to do
    assert mail.calls == 2 and len(mail.sent) == 1  # the second email went in the same round


def test_a_name_with_a_line_break_makes_a_one_line_subject(tmp_path: Path) -> None:
    from connectors.notify import Note
    from connectors.notify.smtp import build_message

    transition = {"transition": "firing", "rule": "low_execution", "severity": "critical", "subject_type": "project",
                  "department_name": "教育局", "subject_name": "校舍改造\r\n二期", "subject_id": "P1"}
    text = compose_notification(transition)
    assert "\n" not in text.title and "\r" not in text.title and text.title.endswith("教育局 校舍改造 二期")
    note = Note(dedup_key="k", transition=transition, text=text, now=T0, recipient=EDU)
    assert build_message(note, ["a@b.example"], SmtpSettings("mail.example"))["Subject"] == text.title


def test_a_second_dispatcher_on_the_same_store_sends_nothing(tmp_path: Path) -> None:
    """deliver --once beside a running deliver without --once (or serve) sent every
    notification twice; a group robot cannot drop the copies (notification audit). The
    refusal names the commands that hold the store as they are spelt (there is no
    `deliver --loop`)."""
    from streams.outbox import DispatchLock, NotifyConfigError

    db = tmp_path / "bw.db"
    fire(db)
    receiver = Receiver()
    running = DispatchLock(str(db))
    assert running.acquire()
    try:
        second = dispatcher(db, receiver, Mail())
        with pytest.raises(NotifyConfigError, match=r"另一个投递进程（pid \d+）正在投递"):
            run(second, T0)
        # the same store through a symlink (a "current.db" link) is the same store
        link = tmp_path / "current.db"
        link.symlink_to(db)
        with pytest.raises(NotifyConfigError, match=r"另一个投递进程"):
            run(dispatcher(link, receiver, Mail()), T0)
        looping = asyncio.run(second.run_once(T0, wait=False))
        assert looping.busy and looping.delivered == 0 and receiver.requests == []
        directory = write_yaml(tmp_path / "d.yaml", {"departments": {EDU: {"name": "教育局",
                                                                          "webhook": "http://127.0.0.1:9/x"}}})
        result = CliRunner().invoke(app, ["deliver", "--once", "--db", str(db)],
                                    env={"BUDGETWATCH_DEPARTMENTS": str(directory)})
        assert result.exit_code != 0 and "另一个投递进程" in str(result.exception)
        refusal = str(result.exception)
        assert "--loop" not in refusal and "serve、notifier 或不带 --once 的 deliver" in refusal
    finally:
        running.release()
    assert run(dispatcher(db, receiver, Mail()), T0).delivered > 0  # released: the next one goes


def test_a_receiver_asking_to_slow_down_or_timing_out_gets_no_copies_at_once(tmp_path: Path) -> None:
    """429 was tried three times within ~1.5 s ignoring Retry-After, and a receiver slower
    than the timeout got three copies an attempt (each timed-out post had often arrived)."""
    db = tmp_path / "bw.db"
    fire(db)
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/edu":
            return httpx.Response(429, headers={"Retry-After": "600"}, text="slow down")
        if request.url.path == "/default":
            raise httpx.ReadTimeout("no answer", request=request)
        return httpx.Response(200, json={"errcode": 0})

    directory = parse_directory({"default": {"name": "财政局", "webhook": "https://hooks.example/default"},
                                 "departments": {EDU: {"name": "教育局", "webhook": "https://hooks.example/edu"}}})
    d = Dispatcher(db, directory, client=httpx.AsyncClient(transport=httpx.MockTransport(answer)),
                   sleep=no_sleep, clock=lambda: T0, policy=RetryPolicy(tries=3, backoff=30))
    asyncio.run(d.run_once(T0))
    assert seen.count("/edu") == 1 and seen.count("/default") == 1  # the heads of the queues, once each
    rows = {r["recipient"]: r for r in DeliveryLog(db).rows(("pending",)) if r["attempts"]}
    assert rows[EDU]["next_attempt"] == (T0 + dt.timedelta(seconds=600)).isoformat()
    assert "对方要求 600 秒后重试" in rows[EDU]["last_error"]
    assert rows["default"]["next_attempt"] == (T0 + dt.timedelta(seconds=30)).isoformat()


def test_the_years_close_tells_no_department_and_ends_the_alerts_in_alertmanager(tmp_path: Path) -> None:
    """Every alert still firing ends on Jan 31 of the next year (年度结束). Nothing is asked
    of anyone, so no department hears of it — a "预警解除" for a warning nobody cleared
    would mislead — while Alertmanager is told the alerts ended (else it re-notified the
    closed year every repeat interval for good)."""
    db = tmp_path / "bw.db"
    fire(db)
    receiver, mail = Receiver(), Mail()
    posts: list[list[dict[str, Any]]] = []

    def alertmanager(request: httpx.Request) -> httpx.Response:
        if request.url.host == "am.example":
            posts.append(json.loads(request.content))
            return httpx.Response(200)
        return receiver(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(alertmanager))
    d = Dispatcher(db, parse_directory(DIRECTORY), client=client, send_mail=mail,
                   smtp=SmtpSettings("mail.example"), sleep=no_sleep, clock=lambda: T0,
                   alertmanager_url="http://am.example/", alertmanager_interval=60)
    first = run(d, T0)
    assert (first.delivered, first.alertmanager_pushed) == (18, 8)
    closed = run_events(db, [], "2026-02-02")
    assert closed == 8
    later = T0 + dt.timedelta(days=215)
    stats = run(d, later)
    assert (stats.fanned_out, stats.skipped_year_closed, stats.created, stats.delivered) == (8, 8, 0, 0)
    assert len(receiver.requests) == 16 and len(mail.sent) == 2  # the 06-30 round's, nothing since
    assert stats.alertmanager_pushed == 8
    assert {a["endsAt"] for a in posts[-1]} == {"2026-01-30T16:00:00Z"}  # 01-31 Beijing
    # its own resolved notice (send_resolved) reads 年度结束, not 新预警 or 预警解除
    assert all(a["annotations"]["summary"].startswith("【年度结束】") for a in posts[-1])
    assert {a["annotations"]["reason"] for a in posts[-1]} == {"year_closed"}
    run(d, later + dt.timedelta(seconds=120))
    assert len(posts) == 2  # nothing active any more: the closed year is not re-sent
    with Store(db) as store:
        kinds = {(r["transition"], r.get("reason")) for r in store.transition_rows() if r["date"] == "2026-01-31"}
    assert kinds == {("resolved", "year_closed")}
    asyncio.run(d.aclose())


async def _cancelled_in_its_thread(
    d: Dispatcher, call: Callable[[], None], started: Any
) -> asyncio.Future[None]:
    """A task running ``call`` through the dispatcher's store thread, cancelled once the
    call has started there (``started``, a threading.Event, is set by the call)."""
    task = asyncio.ensure_future(d._db(call))
    while not started.is_set():
        await asyncio.sleep(0.01)
    task.cancel()
    return task


def test_a_cancelled_store_call_finishes_in_its_thread_before_the_store_closes(tmp_path: Path) -> None:
    """Cancelling a queue's task left its SQLite call running in a thread; the shutdown
    then closed the connection under it (a segfault seen at the end of a test run)."""
    import threading
    import time

    db = tmp_path / "bw.db"
    d = Dispatcher(db, parse_directory({"departments": {}}), poll_interval=0.05)
    started, outcome = threading.Event(), []

    def slow_read() -> None:
        started.set()
        time.sleep(0.3)  # the call is still in its thread when the task is cancelled
        try:
            outcome.append(d.log.db.execute("SELECT count(*) FROM deliveries").fetchone()[0])
        except Exception as err:  # the connection closed under it
            outcome.append(err)

    async def scenario() -> None:
        task = await _cancelled_in_its_thread(d, slow_read, started)
        with pytest.raises(asyncio.CancelledError):
            await task
        await d.aclose()

    asyncio.run(scenario())
    assert outcome == [0]


def test_a_cancelled_store_call_that_then_fails_still_ends_as_cancelled(tmp_path: Path) -> None:
    import sqlite3
    import threading
    import time

    d = Dispatcher(tmp_path / "bw.db", parse_directory({"departments": {}}), poll_interval=0.05)
    started = threading.Event()

    def failing() -> None:
        started.set()
        time.sleep(0.2)
        raise sqlite3.OperationalError("database is locked")

    async def scenario() -> bool:
        task = await _cancelled_in_its_thread(d, failing, started)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await d.aclose()
        return task.cancelled()

    assert asyncio.run(scenario())  # not an OperationalError from a call no one waits for


def test_an_earlier_episode_of_an_alert_firing_again_is_history_also_after_a_rebuild(tmp_path: Path) -> None:
    """Low execution fired on 04-30, resolved on 05-10 and fired again on 08-31. Imported
    late (clock 11-15, 30-day horizon), the old episode's rows were sent as news because
    the alert was firing *now*, and `run --rebuild` sent them again (operator audit)."""
    from budget.calendar import to_day
    from budget.events import parse_day
    from connectors.jsonl import parse_lines
    from streams.ingest import ingest
    from tests.builders import approved, jsonl, payment, registered
    from tests.notify_helpers import EDU

    alert = "2025:low_execution:project:P1"
    events = [
        registered("P1", name="校舍改造", department_id=EDU, department_name="教育局", on="2025-01-02",
                   plan=[0.0] * 11 + [1.0]),  # nothing expected before December
        approved("P1", "1000000.00", on="2025-01-02"),
        payment("P1", "100000.00", on="2025-01-10", event_id="PAY-1"),  # 10% < 25% on 04-30
        payment("P1", "350000.00", on="2025-05-10", event_id="PAY-2"),  # 45%: resolved
        *(payment("P1", "1.00", on=f"2025-{m:02d}-01", event_id=f"PAY-M{m}") for m in range(6, 12)),
    ]  # 45% < 60% on 08-31: fires again, and is still firing on 11-15
    db = tmp_path / "bw.db"
    directory = parse_directory(DIRECTORY)

    def routed() -> list[tuple[str, str]]:
        with Store(db) as store:
            return sorted(set(store.db.execute(
                "SELECT json_extract(t.data, '$.transition'), json_extract(t.data, '$.date') FROM deliveries d"
                " JOIN outbox o ON o.id = d.outbox_id JOIN transitions t ON t.id = o.transition_id"
                " WHERE d.alert_id = ?", (alert,)).fetchall()))

    with Store(db) as store:
        ingest(store, parse_lines(jsonl(events).splitlines(), "late.jsonl"))
        engine = Engine(store, load_profile("provincial"), dispositions=False)
        engine.run(to_day(parse_day("2025-11-15")))
        kinds = [(t["transition"], t["date"]) for t in store.transition_rows(alert)]
        assert kinds == [("firing", "2025-04-30"), ("resolved", "2025-05-10"), ("firing", "2025-08-31")]
    log = DeliveryLog(db)
    log.fan_out(directory, 0.0, horizon_days=30)
    log.close()
    assert routed() == [("firing", "2025-08-31")]  # the episode still firing, and only it

    with Store(db) as store:
        engine = Engine(store, load_profile("provincial"), dispositions=False)
        engine.rebuild()
        engine.run(to_day(parse_day("2025-11-15")))
        # Rows a rebuild gives back under other ids (a replay ordered otherwise, derived
        # events in between) are judged again, as if new.
        store.db.execute("DELETE FROM delivery_fanout")
    log = DeliveryLog(db)
    fanned, created, skipped, _ = log.fan_out(directory, 0.0, horizon_days=30)
    log.close()
    assert (fanned, skipped) == (8, 6)  # P1 and D101: the rows of the six episodes that ended
    assert created == 0 and routed() == [("firing", "2025-08-31")]  # nothing sent again

    # The old episode resolved on the very day the alert fired again (a live partial day
    # can do that): its row is dated on the new `since`, yet its episode has ended.
    with Store(db) as store:
        store.db.execute(
            "UPDATE transitions SET data = json_set(data, '$.date', '2025-08-31')"
            " WHERE alert_id = ? AND json_extract(data, '$.transition') = 'resolved'", (alert,))
        store.db.execute("DELETE FROM delivery_fanout")
    log = DeliveryLog(db)
    created = log.fan_out(directory, 0.0, horizon_days=30)[1]
    log.close()
    assert created == 0 and routed() == [("firing", "2025-08-31")]
