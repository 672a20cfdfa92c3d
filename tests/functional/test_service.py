"""`budgetwatch serve` in-process: aiohttp's test server on 127.0.0.1, a temp SQLite store.

POST /events with ``?wait=1`` answers once the events are processed, so no test
waits on a timer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from connectors.profiles import load_profile
from streams.cli import app as cli_app
from streams.engine import Engine
from streams.service import Service
from streams.store import Store
from tests import builders as b
from tests.functional.engine_helpers import ingest_events
from tests.service_harness import run_service

Scenario = Callable[[TestClient[Any, Any], Service], Awaitable[None]]


def lagging_county() -> list[dict[str, Any]]:
    """P1 pays 10 % by 06-30 (low_execution on 06-30); P2 is on track."""
    return [
        b.registered("P1", department_id="D01", department_name="教育局"),
        b.approved("P1", "1000000.00"),
        b.payment("P1", "100000.00", on="2025-06-10", event_id="P1-PAY-1"),
        b.registered("P2", department_id="D02", department_name="卫生健康委员会"),
        b.approved("P2", "500000.00"),
        b.payment("P2", "300000.00", on="2025-06-20", event_id="P2-PAY-1"),
        b.payment("P2", "10000.00", on="2025-07-01", event_id="P2-PAY-2"),
    ]


def serve(
    tmp_path: Path,
    scenario: Scenario,
    *,
    routes: list[Callable[[web.Application, Service], None]] | None = None,
    workers: list[Any] | None = None,
    **options: Any,
) -> Path:
    db = tmp_path / "budgetwatch.db"
    run_service(db, scenario, routes=routes, workers=workers, **options)
    return db


async def post(client: TestClient[Any, Any], body: bytes, *, wait: bool = True,
               headers: dict[str, str] | None = None) -> dict[str, Any]:
    path = "/events?wait=1" if wait else "/events"
    response = await client.post(path, data=body, headers=headers)
    assert response.status == 200, await response.text()
    data: dict[str, Any] = await response.json()
    return data


def append_failing_on(call: int, error: Exception) -> Callable[..., Any]:
    """Store.append that raises ``error`` on its ``call``-th call (a full disk, a lock)."""
    from streams.store import Store as RealStore

    real, calls = RealStore.append, [0]

    def append(self: RealStore, records: Any, rejections: Any, **options: Any) -> Any:
        calls[0] += 1
        if calls[0] == call:
            raise error
        return real(self, records, rejections, **options)

    return append


def cli_json(db: Path, *args: str) -> str:
    result = CliRunner().invoke(cli_app, [*args, "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_posted_events_are_processed_and_the_alert_is_served(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        answer = await post(client, b.jsonl(lagging_county()))
        assert (answer["read"], answer["accepted"], answer["applied"]) == (7, 7, 7)
        assert (answer["duplicate"], answer["rejected"], answer["rejections"]) == (0, 0, [])
        assert answer["processed"] is True and answer["as_of"] == "2025-07-01"
        alerts = await (await client.get("/api/alerts")).json()
        low = [a for a in alerts if a["rule"] == "low_execution"]
        assert [(a["subject_id"], a["since"], a["department_id"]) for a in low] == [
            ("P1", "2025-06-30", "D01")
        ]
        only_d02 = await (await client.get("/api/alerts?department=D02")).json()
        assert all(a["department_id"] == "D02" for a in only_d02)
        history = await (await client.get("/api/alerts?all=1")).json()
        assert any(t["transition"] == "firing" and t["rule"] == "low_execution" for t in history)
        health = await (await client.get("/healthz")).json()
        assert health["status"] == "ok" and health["clock"] == "2025-07-01"

    serve(tmp_path, scenario)


def test_an_absurd_amount_is_rejected_and_the_rest_of_the_body_is_kept(tmp_path: Path) -> None:
    """"1e999999" overflowed the decimal context and 10**20 fen SQLite's integers: a 500
    that lost the valid lines of the same body."""
    good = b.jsonl(lagging_county()[:1])
    huge = [
        b'{"type":"payment","event_id":"X%d","occurred_on":"2025-03-01","project_id":"P1","amount":%s}\n' % (i, amount)
        for i, amount in enumerate([b'"1e999999"', b'"100000000000000000000"', b"100000000000000000000"])
    ]
    body = huge[0] + good + huge[1] + huge[2]

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        answer = await post(client, body)
        assert (answer["read"], answer["applied"], answer["rejected"]) == (4, 1, 3)
        assert all("check the unit" in r["reason"] for r in answer["rejections"])

    serve(tmp_path, scenario)


def test_a_body_sent_again_without_a_request_id_keeps_its_dead_letters_once(tmp_path: Path) -> None:
    """A random default id made each re-send's rejections new: a client retrying after
    timeouts filled the dead-letter store (12,000 re-sends added 280k rows)."""
    body = b.jsonl(lagging_county()[:1]) + b"not json\n"
    other = b.jsonl(lagging_county()[:1]) + b"not json either\n"

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        answers = [await post(client, body) for _ in range(3)]
        assert len({a["request_id"] for a in answers}) == 1
        assert (await post(client, other))["request_id"] != answers[0]["request_id"]
        rejected = await (await client.get("/api/rejected")).json()
        assert [r["raw"] for r in rejected] == ["not json", "not json either"]

    serve(tmp_path, scenario)


def test_rejected_lines_are_reported_with_source_and_duplicates_counted(tmp_path: Path) -> None:
    good = b.jsonl(lagging_county()[:2])
    body = good + b"{not json\n" + b'{"type":"grant","event_id":"x","occurred_on":"2025-01-01"}\n'

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        answer = await post(client, body, headers={"X-Request-ID": "req-7"})
        assert answer["request_id"] == "req-7"
        assert (answer["read"], answer["applied"], answer["rejected"]) == (4, 2, 2)
        assert [r["source"] for r in answer["rejections"]] == ["http:req-7:3", "http:req-7:4"]
        assert "grant" in answer["rejections"][1]["reason"]
        again = await post(client, good)
        assert (again["applied"], again["duplicate"]) == (0, 2)
        rejected = await (await client.get("/api/rejected")).json()
        assert [r["source"] for r in rejected] == ["http:req-7:3", "http:req-7:4"]
        assert rejected[0]["raw"] == "{not json"
        first = await client.get("/api/rejected?limit=1")  # page by page, as ?all=1 alerts
        assert await first.json() == rejected[:1] and first.headers["X-Next-After"]
        link = first.headers["Link"]
        second = await client.get(link[1:link.index(">")])
        assert await second.json() == rejected[1:] and "Link" not in second.headers
        scraped = await (await client.get("/metrics")).text()
        values = {
            (s.name, s.labels.get("outcome")): s.value
            for family in text_string_to_metric_families(scraped)
            for s in family.samples
        }
        assert values[("budget_events_total", "applied")] == 2.0
        assert values[("budget_events_total", "duplicate")] == 2.0
        assert values[("budget_events_total", "rejected")] == 2.0

    serve(tmp_path, scenario)


def test_a_broken_array_many_bad_lines_and_a_body_too_large(tmp_path: Path) -> None:
    events = lagging_county()
    pretty = json.dumps(events[:3], ensure_ascii=False, indent=2)
    broken = pretty.replace('"type": "budget_approved"', '"type": "budget_approved" "x"', 1).encode()
    bad_lines = b"".join(b"{not json %d\n" % i for i in range(150))

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        answer = await post(client, broken, headers={"X-Request-ID": "arr"})
        assert (answer["read"], answer["applied"], answer["rejected"]) == (2, 1, 1)
        assert answer["rejections"][0]["source"] == "http:arr:2"
        assert "JSON 数组的第 2 个元素" in answer["rejections"][0]["reason"]
        (kept,) = [r for r in await (await client.get("/api/rejected")).json()
                   if r["source"] == "http:arr:2"]
        assert '"type": "budget_approved" "x"' in kept["raw"] and events[2]["event_id"] in kept["raw"]

        many = await post(client, bad_lines)
        assert (many["rejected"], len(many["rejections"]), many["rejections_truncated"]) == (150, 100, True)
        assert answer["rejections_truncated"] is False

        too_large = await client.post("/events", data=b.jsonl(events) * 40)
        assert too_large.status == 413
        assert "请求体超过上限 4,096 字节" in (await too_large.json())["error"]

    serve(tmp_path, scenario, max_body_bytes=4096)


def test_one_json_event_an_array_and_an_empty_body(tmp_path: Path) -> None:
    events = lagging_county()

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        pretty = json.dumps(events[0], ensure_ascii=False, indent=2).encode()
        one = await post(client, pretty)
        assert (one["read"], one["applied"]) == (1, 1)
        array = await post(client, orjson.dumps(events[1:3]))
        assert (array["read"], array["applied"]) == (2, 2)
        empty = await client.post("/events", data=b"  \n")
        assert empty.status == 400
        assert "请求体为空" in (await empty.json())["error"]

    serve(tmp_path, scenario)


def test_a_jsonl_file_saved_with_a_bom_keeps_its_first_event(tmp_path: Path) -> None:
    from connectors.jsonl import read_jsonl
    from connectors.parsed import Accepted

    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b.jsonl(lagging_county()[:2]))
    parsed = list(read_jsonl(path))
    assert len(parsed) == 2 and all(isinstance(p, Accepted) for p in parsed)


def test_the_api_answers_the_same_json_as_the_cli(tmp_path: Path) -> None:
    served: dict[str, str] = {}

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        await post(client, b.jsonl(lagging_county()))
        for path in ("/api/status", "/api/alerts", "/api/alerts?all=1", "/api/reductions",
                     "/api/alerts?all=1&year=2025", "/api/alerts?year=2024"):
            response = await client.get(path)
            assert response.status == 200
            assert response.content_type == "application/json"
            served[path] = await response.text()

    db = serve(tmp_path, scenario)
    assert served["/api/status"] == cli_json(db, "status")
    assert served["/api/alerts"] == cli_json(db, "alerts")
    assert served["/api/alerts?all=1"] == cli_json(db, "alerts", "--all")
    assert served["/api/reductions"] == cli_json(db, "reductions")
    assert json.loads(served["/api/reductions"])[0]["project_id"] == "P1"
    # ?year= was ignored here: January listed last year's alerts for this year's
    assert served["/api/alerts?all=1&year=2025"] == cli_json(db, "alerts", "--all", "--year", "2025")
    assert json.loads(served["/api/alerts?all=1&year=2025"]) == json.loads(served["/api/alerts?all=1"])
    assert json.loads(served["/api/alerts?year=2024"]) == []


def test_status_before_any_event_says_what_to_do(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        response = await client.get("/api/status")
        assert response.status == 409
        assert "POST /events" in (await response.json())["error"]
        for bad in ("abc", "0", "10000", "99999", "%C2%B2", "1800"):  # '²' passed isdigit() and gave a 500
            for path in ("/api/status", "/api/reductions", "/api/alerts"):
                bad_year = await client.get(f"{path}?year={bad}")
                assert bad_year.status == 400, (path, bad)
                assert "不是年份" in (await bad_year.json())["error"]
                assert bad_year.headers["Cache-Control"] == "no-store"

    serve(tmp_path, scenario)


def test_metrics_match_the_status_figures(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        await post(client, b.jsonl(lagging_county()))
        status = await (await client.get("/api/status")).json()
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(await response.text())
            for s in family.samples
        }
        region = samples[("budget_region_execution_ratio", ())]
        assert region == pytest.approx(status["region"]["execution_rate"], abs=1e-6)
        progress = samples[("budget_time_progress_ratio", ())]
        assert progress == pytest.approx(status["region"]["time_progress"], abs=1e-6)
        project = ("budget_project_execution_ratio", (("department", "D01"), ("project", "P1")))
        assert samples[project] == pytest.approx(0.1)
        assert not any(dict(k[1]).get("project") == "P2" for k in samples)
        assert samples[("budget_processing_lag_days", ())] == 0.0
        assert samples[("budget_processing_failing", ())] == 0.0

    serve(tmp_path, scenario)


def test_live_mode_closes_days_by_the_injected_wall_clock(tmp_path: Path) -> None:
    today = [dt.date(2025, 6, 29)]
    county = lagging_county()[:3]  # P1 only: 10 % paid by 06-10

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        answer = await post(client, b.jsonl(county))
        assert answer["as_of"] == "2025-06-29"
        assert not [a for a in await (await client.get("/api/alerts")).json()
                    if a["rule"] == "low_execution"]
        # A payment dated in the future waits for its day.
        future = b.payment("P1", "500000.00", on="2025-07-15", event_id="P1-PAY-FUTURE")
        answer = await post(client, b.jsonl([future]))
        assert answer["processed"] is True and answer["waiting"] == 1
        assert answer["warning"].startswith("1 条事件的业务日期晚于今天（2025-06-29，北京时间），等待以后处理")
        today[0] = dt.date(2025, 6, 30)
        await service.process_now()
        alerts = await (await client.get("/api/alerts")).json()
        low = [a for a in alerts if a["rule"] == "low_execution"]
        assert [(a["subject_id"], a["since"]) for a in low] == [("P1", "2025-06-30")]
        status = await (await client.get("/api/status")).json()
        assert status["as_of"] == "2025-06-30" and status["region"]["paid"] == "100000.00"
        scraped = await (await client.get("/metrics")).text()
        # The waiting payment is dated after today: it waits for its day, no processing lag.
        assert "budget_processing_lag_days 0.0" in scraped
        today[0] = dt.date(2025, 7, 15)
        await service.process_now()
        status = await (await client.get("/api/status")).json()
        assert status["region"]["paid"] == "600000.00"

    serve(tmp_path, scenario, live=True, clock=lambda: today[0], tick_seconds=3600)


def test_an_event_after_today_is_said_to_wait_for_today_not_for_the_business_clock(tmp_path: Path) -> None:
    """serve in event time stops its runs at today (the wall clock): with the clock at
    07-01 (the latest event) on 07-20, a payment dated 08-05 was "later than 2025-07-01"
    — the business clock, which holds nothing back. It waits because it is after today."""

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        service.engine.today = lambda: dt.date(2025, 7, 20)
        answer = await post(client, b.jsonl(lagging_county()))
        assert answer["as_of"] == "2025-07-01" and "waiting" not in answer
        future = b.payment("P1", "500000.00", on="2025-08-05", event_id="P1-PAY-AUG")
        answer = await post(client, b.jsonl([future]))
        assert answer["processed"] is True and answer["as_of"] == "2025-07-01" and answer["waiting"] == 1
        assert answer["warning"].startswith("1 条事件的业务日期晚于今天（2025-07-20，北京时间），等待以后处理")
        assert "2025-07-01" not in answer["warning"]

    serve(tmp_path, scenario)


def test_a_failed_run_leaves_its_events_pending_and_the_service_unhealthy(tmp_path: Path) -> None:
    """A CLI `run --rebuild --profile provincial` replaces the state `serve` (baseline)
    holds and ends on the same cursor: serve must notice, refuse to mix the policies,
    and say its events are not processed rather than look healthy and caught up."""
    db = tmp_path / "budgetwatch.db"

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        assert (await post(client, b.jsonl(lagging_county())))["processed"] is True
        with Store(db) as store:
            other = Engine(store, load_profile("provincial"))
            other.rebuild()
            other.run(other.store.cursor()[0])
        late = b.payment("P2", "1000.00", on="2025-07-01", event_id="P2-PAY-3")
        answer = await post(client, b.jsonl([late]))
        assert answer["processed"] is False and "--rebuild" in answer["error"]
        health = await client.get("/healthz")
        assert health.status == 503
        body = await health.json()
        assert body["pending"] is True and body["status"] == "error"
        await asyncio.sleep(0.05)
        samples = {s.name: s.value for f in text_string_to_metric_families(await (await client.get("/metrics")).text())
                   for s in f.samples}
        assert samples["budget_processing_lag_seconds"] > 0.0
        assert samples["budget_processing_failing"] == 1.0
        assert "budget_region_execution_ratio" not in samples  # the engine holds nothing it may show

    run_service(db, scenario)


def test_a_burst_of_concurrent_posts_is_all_processed(tmp_path: Path) -> None:
    events = lagging_county()
    payments = [
        b.payment("P2", "100.00", on="2025-07-02", event_id=f"BURST-{i}") for i in range(40)
    ]

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        await post(client, b.jsonl(events))
        answers = await asyncio.gather(*(post(client, b.jsonl([p]), wait=False) for p in payments))
        assert sum(a["applied"] for a in answers) == 40
        await post(client, b.jsonl([b.payment("P2", "1.00", on="2025-07-02", event_id="LAST")]))
        status = await (await client.get("/api/status")).json()
        p2 = next(p for p in status["projects"] if p["project_id"] == "P2")
        assert p2["paid"] == "314001.00"

    serve(tmp_path, scenario)


def test_extension_hooks_add_routes_and_run_workers_until_stop(tmp_path: Path) -> None:
    seen: dict[str, Any] = {"commits": 0, "stopped": False}

    class Worker:
        def __init__(self) -> None:
            self.service: Service | None = None

        async def run_forever(self, stop: asyncio.Event) -> None:
            assert self.service is not None
            committed = self.service.subscribe()
            seen["started"] = True
            while not stop.is_set():
                await committed.wait()
                committed.clear()
                if not stop.is_set():
                    seen["commits"] += 1
            seen["stopped"] = True

    worker = Worker()

    def board(application: web.Application, service: Service) -> None:
        async def handler(_: web.Request) -> web.Response:
            return web.Response(text=f"看板 {service.health()['clock']}")

        application.router.add_get("/board", handler)
        worker.service = service

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        await post(client, b.jsonl(lagging_county()))
        assert await (await client.get("/board")).text() == "看板 2025-07-01"
        await asyncio.sleep(0)  # let the worker observe the commit's notification
        assert seen.get("started") is True

    serve(tmp_path, scenario, routes=[board], workers=[worker])
    assert seen["stopped"] is True
    assert seen["commits"] >= 1


def test_runs_that_end_on_the_same_day_apply_each_event_once(tmp_path: Path) -> None:
    """Regression (streams/store.py `pending`): events of the clock's own day were
    applied again by every later run that ended on that day."""
    from connectors.jsonl import parse_lines
    from streams.ingest import ingest

    with Store(tmp_path / "runs.db") as store:
        engine = Engine(store, load_profile("baseline"))
        ingest(store, parse_lines(b.jsonl(lagging_county()).splitlines(), "t"))
        engine.run(None)
        for i in range(3):
            payment = b.payment("P2", "100.00", on="2025-07-01", event_id=f"SAME-DAY-{i}")
            ingest(store, parse_lines(b.jsonl([payment]).splitlines(), "t"))
            engine.run(None)
        assert engine.monitor.ledger.projects["P2"].paid == 31_030_000  # fen
        restored = Engine(store, load_profile("baseline")).load()
        assert restored.ledger.projects["P2"].paid == 31_030_000


def test_a_year_missing_from_the_holiday_calendar_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    today = [dt.date(2026, 10, 1)]

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        await post(client, b.jsonl(lagging_county()))
        assert "does not list" not in caplog.text  # 2025 and 2026 are on the shipped calendar
        for day in (dt.date(2026, 12, 24), dt.date(2027, 1, 4), dt.date(2027, 1, 5)):
            today[0] = day
            await service.process_now()
        assert caplog.text.count("the holiday calendar does not list 2027") == 1

    with caplog.at_level("WARNING", logger="budgetwatch.service"):
        serve(tmp_path, scenario, live=True, clock=lambda: today[0], tick_seconds=3600)


def test_a_browser_post_sent_for_another_site_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """Any web page could make its visitor's browser POST text/plain JSON to a local
    serve: events, or dispositions without a users file (web audit)."""
    line = b.jsonl([b.payment("P1", "1.00", on="2025-03-01", event_id="X-1")])

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        host = f"{client.server.host}:{client.server.port}"
        refused = [
            {"Origin": "https://evil.example", "Content-Type": "text/plain"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site", "Origin": f"http://{host}"},
            {"Origin": "null"},
        ]
        for headers in refused:
            answer = await client.post("/events", data=line, headers=headers)
            assert answer.status == 403, headers
            assert "拒绝跨站请求" in (await answer.json())["error"]
        assert await service.db(service.store.event_count) == 0
        allowed = [{}, {"Origin": f"http://{host}"}, {"Sec-Fetch-Site": "same-origin", "Origin": "https://proxy"},
                   {"Origin": "https://bw.example", "X-Forwarded-Host": "bw.example"}]
        for headers in allowed:
            assert (await client.post("/events", data=line, headers=headers)).status == 200, headers
        assert (await client.get("/api/alerts", headers={"Sec-Fetch-Site": "cross-site"})).status == 200

    serve(tmp_path, scenario)


def test_unknown_addresses_and_methods_answer_in_chinese_and_json_is_not_cached(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        missing = await client.get("/nowhere")
        assert missing.status == 404 and "没有这个地址" in (await missing.json())["error"]
        wrong = await client.get("/events")
        assert wrong.status == 405 and "不接受这种请求方法" in (await wrong.json())["error"]
        alerts = await client.get("/api/alerts")
        assert alerts.headers["Cache-Control"] == "no-store"
        assert alerts.headers["X-Content-Type-Options"] == "nosniff"

    serve(tmp_path, scenario)


def test_a_failed_run_is_tried_again_when_the_client_sends_again(tmp_path: Path) -> None:
    """The disk filled during a run; freed, the client re-sent the same body: every event
    a duplicate, so nothing woke the processor and /healthz stayed 503 until a restart
    (audit of serve beside the CLI)."""
    import sqlite3

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        real = service._run_sync
        failures = [sqlite3.OperationalError("database or disk is full")]

        def flaky() -> Any:
            if failures and service.store.max_seq() > 0:  # the first run with events to process
                raise failures.pop()
            return real()

        service._run_sync = flaky  # type: ignore[method-assign]
        body = b.jsonl(lagging_county())
        first = await post(client, body)
        assert first["processed"] is False and "disk is full" in first["error"]
        assert (await client.get("/healthz")).status == 503
        again = await post(client, body)
        assert again["applied"] == 0 and again["duplicate"] == len(lagging_county())
        assert again["processed"] is True and again["as_of"] == "2025-07-01"
        assert (await client.get("/healthz")).status == 200

    serve(tmp_path, scenario)


def test_a_failed_run_is_tried_again_by_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run failed on a lock a CLI rebuild held: with no further POST nothing retried it,
    and while a CLI ingest's events waited /healthz said pending: false (audit of serve)."""
    import sqlite3

    import streams.service

    monkeypatch.setattr(streams.service, "RETRY_FIRST_SECONDS", 0.05)

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        real = service._run_sync
        failures = [sqlite3.OperationalError("database is locked")]

        def flaky() -> Any:
            if failures and service.store.max_seq() > 0:
                raise failures.pop()
            return real()

        service._run_sync = flaky  # type: ignore[method-assign]
        with Store(tmp_path / "budgetwatch.db") as other:  # a CLI ingest beside serve
            ingest_events(other, lagging_county())
        service.wake()
        for _ in range(200):
            await asyncio.sleep(0.02)
            if service.runs:
                break
        health = await (await client.get("/healthz")).json()
        assert (service.runs, failures) == (1, [])  # failed once, then retried unasked
        assert (health["status"], health["pending"], health["clock"]) == ("ok", False, "2025-07-01")

    serve(tmp_path, scenario, log_poll_seconds=0.02)


def test_events_a_cli_ingest_appended_show_as_pending_until_processed(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        for _ in range(3000):  # the run at start (which would take them), 30 s at most
            if service.runs and not service.busy():
                break
            await asyncio.sleep(0.01)
        assert service.runs and service.last_error is None
        with Store(tmp_path / "budgetwatch.db") as other:
            ingest_events(other, lagging_county())
        assert (await (await client.get("/healthz")).json())["pending"] is True  # it said false
        await service.process_now()
        while service.busy():  # a run the processor started meanwhile
            await asyncio.sleep(0.01)
        assert (await (await client.get("/healthz")).json())["pending"] is False

    serve(tmp_path, scenario, log_poll_seconds=60)


def test_a_body_that_is_not_what_its_content_encoding_says_is_a_chinese_400(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        response = await client.post("/events", data=b"not gzip", headers={"Content-Encoding": "gzip"})
        assert response.status == 400  # was a 500 "Server got itself in trouble"
        assert "Content-Encoding" in (await response.json())["error"]
        assert service.store.max_seq() == 0

    serve(tmp_path, scenario)


def test_probes_and_scrapes_are_answered_while_a_large_post_holds_the_database(tmp_path: Path) -> None:
    """/healthz took 20.75 s behind a 210 MB POST and /metrics 7.1 s behind a run: a probe
    or a scrape timed out (live-operations audit). They answer from this process's state."""
    import threading

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        await post(client, b.jsonl(lagging_county()))
        scraped = await (await client.get("/metrics")).text()
        release = threading.Event()
        blocker = asyncio.ensure_future(service.db(release.wait, 30))  # the thread, held as a large POST holds it
        held = asyncio.ensure_future(service.ingest_body(b.jsonl(lagging_county()), "big"))  # queued behind
        try:
            await asyncio.sleep(0.05)
            health = await asyncio.wait_for(client.get("/healthz"), 5)
            assert health.status == 200 and (await health.json())["pending"] is True
            metrics = await asyncio.wait_for(client.get("/metrics"), 5)
            assert await metrics.text() == scraped
            # for a while only: a stand-in older than that waits for the thread
            assert service.last_scrape is not None
            service.last_scrape = (service.last_scrape[0] - 3600, service.last_scrape[1])
            stale = asyncio.ensure_future(client.get("/metrics"))
            await asyncio.sleep(0.1)
            assert not stale.done()
        finally:
            release.set()
            await blocker
            await held
        assert (await stale).status == 200

    serve(tmp_path, scenario)


def test_a_body_is_taken_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk filled midway through a large POST: an English 500, yet the first batches
    were logged — and after a kill -9 midway, a restart processed half a body as if
    complete, so the re-sent rest applied late, dated at the wrong clock (audit)."""
    import sqlite3

    import streams.ingest
    from streams.store import Store as RealStore

    monkeypatch.setattr(streams.ingest, "BATCH", 3)  # the county's 7 events: three batches
    full_on_the_second = append_failing_on(2, sqlite3.OperationalError("database or disk is full"))

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        monkeypatch.setattr(RealStore, "append", full_on_the_second)
        body = b.jsonl(lagging_county())
        response = await client.post("/events?wait=1", data=body)
        assert response.status == 503
        error = (await response.json())["error"]
        assert error.startswith("数据库操作失败：database or disk is full。本次请求的事件均未接收")
        assert service.store.event_count() == 0  # nothing of the body, not its first batch
        health = await client.get("/healthz")  # it stayed "ok" while every POST got a 503
        assert health.status == 503 and "disk is full" in (await health.json())["error"]
        answer = await post(client, body)  # the disk freed, the client re-sends
        assert answer["applied"] == len(lagging_county()) and answer["processed"] is True
        assert (await client.get("/healthz")).status == 200

    serve(tmp_path, scenario)


def test_a_failed_ingest_never_sent_again_does_not_keep_healthz_at_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One "database is locked" whose client gave up kept /healthz at 503 for good, runs
    succeeding meanwhile (review)."""
    import sqlite3

    from streams.store import Store as RealStore

    locked_once = append_failing_on(2, sqlite3.OperationalError("database is locked"))

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        monkeypatch.setattr(RealStore, "append", locked_once)
        await post(client, b.jsonl(lagging_county()[:2]))
        assert (await client.post("/events?wait=1", data=b.jsonl(lagging_county()[2:]))).status == 503
        assert (await client.get("/healthz")).status == 503
        assert await service.process_now() is not None
        assert (await client.get("/healthz")).status == 200

    serve(tmp_path, scenario)


def test_events_imported_beside_serve_are_processed(tmp_path: Path) -> None:
    """A CLI `ingest` beside an event-time serve waited for serve's next POST or a
    restart, while /healthz said nothing was pending (audit of serve beside the CLI)."""
    from connectors.jsonl import parse_lines
    from streams.ingest import ingest
    from streams.store import Store

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        await post(client, b.jsonl(lagging_county()[:2]))
        with Store(service.store.path) as other:  # the operator's `budgetwatch ingest`
            ingest(other, parse_lines(b.jsonl(lagging_county()[2:]).splitlines(), "cli.jsonl"))
        for _ in range(100):
            if (await (await client.get("/healthz")).json())["clock"] == "2025-07-01":
                break
            await asyncio.sleep(0.05)
        status = await (await client.get("/api/status")).json()
        assert status["as_of"] == "2025-07-01" and status["region"]["paid"] == "410000.00"

    serve(tmp_path, scenario, log_poll_seconds=0.1)


def test_healthz_answers_while_a_run_holds_the_database_thread(tmp_path: Path) -> None:
    """/healthz reloaded on the DB thread and so waited behind a run (a replay: minutes):
    a probe's timeout could restart serve mid-run (review)."""
    import time

    took: list[float] = []

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        real_run = service.engine.run

        def slow_run(*args: Any, **kwargs: Any) -> Any:
            time.sleep(2.0)  # stands for a long replay on the DB thread
            return real_run(*args, **kwargs)

        service.engine.run = slow_run  # type: ignore[method-assign]
        task = asyncio.create_task(service.process_now())
        await asyncio.sleep(0.2)
        started = time.monotonic()
        response = await client.get("/healthz")
        took.append(time.monotonic() - started)
        assert response.status == 200
        await task

    serve(tmp_path, scenario)
    assert took[0] < 1.0


def test_every_transition_is_served_a_page_at_a_time_following_the_next_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """?all=1 built every transition ever stored into one answer (~800k a province year).
    Asked for a page it answers one; asked for everything it writes every row, a few at
    a time (here two), the same text as the CLI's."""
    import streams.service

    monkeypatch.setattr(streams.service, "STREAM_PAGE_ROWS", 2)
    pages: list[list[dict[str, Any]]] = []
    links: list[str] = []
    streamed: list[str] = []

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        await post(client, b.jsonl(lagging_county()))
        await post(client, b.jsonl([b.payment("P1", "250000.00", on="2025-07-05", event_id="P1-PAY-2")]))
        answer = await client.get("/api/alerts?all=1")
        assert answer.content_type == "application/json" and "Link" not in answer.headers
        streamed.append(await answer.text())
        whole = json.loads(streamed[0])
        assert whole == service.store.transition_rows() and len(whole) >= 5  # more than two pages of two
        path = "/api/alerts?all=1&limit=3"
        while path:
            response = await client.get(path)
            assert response.status == 200
            pages.append(await response.json())
            link = response.headers.get("Link", "")
            assert ("X-Next-After" in response.headers) == bool(link)
            links.append(link)
            path = link[1:link.index(">")] if link else ""
        assert [t for page in pages for t in page] == whole
        only_d01 = await (await client.get("/api/alerts?all=1&department=D01&limit=1")).json()
        assert only_d01 == [t for t in whole if t["department_id"] == "D01"][:1]
        for bad in ("limit=0", "limit=100001", "limit=ten", "after=-1"):
            response = await client.get(f"/api/alerts?all=1&{bad}")
            assert response.status == 400 and "应为" in (await response.json())["error"]
        response = await client.get("/api/alerts?limit=5")
        assert response.status == 400 and "all=1" in (await response.json())["error"]

    db = serve(tmp_path, scenario)
    assert streamed[0] == cli_json(db, "alerts", "--all")
    assert all(len(page) == 3 for page in pages[:-1]) and 1 <= len(pages[-1]) <= 3
    assert links[-1] == "" and all('rel="next"' in link and "limit=3" in link for link in links[:-1])


def _failing_on(call: int, real: Callable[..., Any], failure: Callable[[], None]) -> Callable[..., Any]:
    """``real`` that runs ``failure`` (raise, or change the store) on its ``call``-th call."""
    calls = 0

    def page(**kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == call:
            failure()
        return real(**kw)

    return page


def _locked() -> None:
    raise sqlite3.OperationalError("database is locked")


@pytest.mark.parametrize("failing_page", [1, 2])
def test_a_storage_error_while_streaming_is_a_503_or_a_cut_connection_never_a_short_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_page: int,
) -> None:
    """Review: the 200 was under way when a later page failed; the error middleware's 503
    was written inside its body and the client waited for the rest until its timeout."""
    import aiohttp

    import streams.service

    monkeypatch.setattr(streams.service, "STREAM_PAGE_ROWS", 1)
    outcome: dict[str, Any] = {}

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        await post(client, b.jsonl(lagging_county()))
        real = service.store.transition_page
        service.store.transition_page = _failing_on(failing_page, real, _locked)  # type: ignore[method-assign]
        response = await client.get("/api/alerts?all=1", timeout=aiohttp.ClientTimeout(total=20))
        outcome["status"] = response.status
        try:
            outcome["body"] = await response.text()
        except aiohttp.ClientPayloadError as err:
            outcome["cut"] = repr(err)
        service.store.transition_page = real  # type: ignore[method-assign]
        outcome["after"] = len(await (await client.get("/api/alerts?all=1")).json())

    serve(tmp_path, scenario)
    if failing_page == 1:  # nothing written yet: a proper error answer
        assert outcome["status"] == 503 and "error" in json.loads(outcome["body"])
    else:
        assert outcome["status"] == 200 and "cut" in outcome and "body" not in outcome
    assert outcome["after"] >= 4  # and the service answers in full afterwards


def test_a_rebuild_between_two_pages_of_a_stream_cuts_it_rather_than_mix_two_histories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import aiohttp

    import streams.service
    from budget.calendar import to_day
    from budget.events import parse_day

    monkeypatch.setattr(streams.service, "STREAM_PAGE_ROWS", 2)
    outcome: dict[str, Any] = {}

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        await post(client, b.jsonl(lagging_county()))

        def rebuild_elsewhere() -> None:  # `budgetwatch run --rebuild --profile provincial` beside serve
            other = Engine(Store(service.store.path), load_profile("provincial"))
            other.rebuild()
            other.run(to_day(parse_day("2025-07-01")))
            other.store.close()

        real = service.store.transition_page
        service.store.transition_page = _failing_on(2, real, rebuild_elsewhere)  # type: ignore[method-assign]
        response = await client.get("/api/alerts?all=1", timeout=aiohttp.ClientTimeout(total=20))
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.text()
        service.store.transition_page = real  # type: ignore[method-assign]
        outcome["rows"] = await (await client.get("/api/alerts?all=1")).json()
        outcome["store"] = service.store.transition_rows()

    serve(tmp_path, scenario)
    assert outcome["rows"] == outcome["store"]  # asked again: the new history, whole


def test_the_board_and_the_api_leave_department_overall_lines_out_of_reductions(tmp_path: Path) -> None:
    """The board's page, its XLSX and /api/reductions: no proposal for a 部门整体支出 line,
    whose money the department's projects already hold."""
    import io

    import openpyxl

    from tests.board_helpers import bearer, login
    from tests.board_helpers import serve as serve_board

    db = tmp_path / "bw.db"
    events = [
        *lagging_county(),
        b.registered("ALL", department_id="D01", department_name="教育局", kind="department_overall"),
        b.approved("ALL", "9000000.00"), b.payment("ALL", "100000.00", on="2025-03-01"),
    ]
    with Store(db) as store:
        ingest_events(store, events)
        Engine(store, load_profile("baseline")).run(b.day("2025-07-01"))

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        api = await (await client.get("/api/reductions", headers=bearer("jxk"))).json()
        assert [p["project_id"] for p in api] == ["P1"]
        csrf = await login(client, "jxk")  # the bureau, which sees every department
        page = (await (await client.get("/reductions")).text()).replace(csrf, "")
        assert "调减建议（1个项目）" in page and "/projects/ALL" not in page
        sheet = openpyxl.load_workbook(io.BytesIO(await (await client.get("/reductions.xlsx")).read())).active
        assert sheet is not None
        assert [row[0] for row in sheet.iter_rows(min_row=2, values_only=True)] == ["P1", "合计"]

    serve_board(db, scenario)
