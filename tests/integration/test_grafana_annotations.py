"""Alert transitions become Grafana annotations through grafana-client.

Grafana itself cannot run on this machine, so a local HTTP receiver on
127.0.0.1 stands in for Grafana's `POST /api/annotations`: it records what the
real grafana-client sends (path, bearer token, JSON body) and can fail for a
while. The service side is real: `budgetwatch serve`'s aiohttp app in-process
with a temp SQLite store, and the Grafana worker reading the transitions table.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from budget.calendar import to_day
from budget.events import parse_day
from connectors.grafana import AnnotationError, GrafanaAnnotator, annotation_for
from connectors.profiles import load_profile
from streams.engine import Engine
from streams.service import (
    GRAFANA_CURSOR,
    GRAFANA_DAY,
    GRAFANA_GENERATION,
    GrafanaAnnotations,
    Service,
    build_app,
    optional_workers,
)
from streams.store import Store
from tests import builders as b
from tests.functional.engine_helpers import ingest_events

CHINA = dt.timezone(dt.timedelta(hours=8))


def county() -> list[dict[str, Any]]:
    return [
        b.registered("P1", department_id="D01", department_name="教育局"),
        b.approved("P1", "1000000.00"),
        b.payment("P1", "100000.00", on="2025-06-10", event_id="P1-PAY-1"),
        b.registered("P2", department_id="D02", department_name="卫生健康委员会"),
        b.approved("P2", "500000.00"),
        b.payment("P2", "400000.00", on="2025-06-20", event_id="P2-PAY-1"),
        b.payment("P2", "1.00", on="2025-07-01", event_id="P2-PAY-2"),
    ]


class FakeGrafana:
    """Stands in for Grafana's annotations API; fails the first ``failures`` requests."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[dict[str, Any]] = []
        self.authorizations: set[str] = set()
        self.arrived = asyncio.Event()
        self.expected = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.authorizations.add(request.headers.get("Authorization", ""))
        if self.failures > 0:
            self.failures -= 1
            return web.json_response({"message": "database is locked"}, status=500)
        body = await request.json()
        self.received.append(body)
        if self.expected and len(self.received) >= self.expected:
            self.arrived.set()
        return web.json_response({"id": len(self.received), "message": "Annotation added"})

    def app(self) -> web.Application:
        application = web.Application()
        application.router.add_post("/api/annotations", self.handle)
        return application


def run(tmp_path: Path, grafana: FakeGrafana, scenario: Any) -> None:
    async def main() -> None:
        async with TestServer(grafana.app(), host="127.0.0.1") as receiver:
            url = str(receiver.make_url("")).rstrip("/")
            engine = Engine(Store(tmp_path / "bw.db"), load_profile("baseline"))
            service = Service(engine)
            service.prepare()
            try:
                await scenario(service, url)
            finally:
                service.close()
                engine.store.close()

    asyncio.run(main())


def test_each_transition_is_annotated_once_even_after_grafana_fails(tmp_path: Path) -> None:
    grafana = FakeGrafana(failures=2)

    async def scenario(service: Service, url: str) -> None:
        annotator = GrafanaAnnotator.from_url(url, "glsa_token")
        worker = GrafanaAnnotations(service, annotator, retry_seconds=3600)
        async with TestClient(TestServer(build_app(service), host="127.0.0.1")) as client:
            await client.post("/events?wait=1", data=b.jsonl(county()))
            transitions = await (await client.get("/api/alerts?all=1")).json()
        assert transitions
        with pytest.raises(AnnotationError, match="GRAFANA_URL"):  # says what to check
            await worker.flush()
        assert grafana.received == []
        cursor_after_failure = await service.db(service.store.meta, GRAFANA_CURSOR)
        with contextlib.suppress(AnnotationError):  # the second failure (if not retried inside)
            await worker.flush()
        assert await worker.flush() == len(transitions)  # Grafana is back: all of them
        assert await worker.flush() == 0  # and never again
        assert cursor_after_failure is None
        assert len(grafana.received) == len(transitions)
        assert grafana.authorizations == {"Bearer glsa_token"}
        for sent, transition in zip(grafana.received, transitions, strict=True):
            assert sent["tags"][:2] == ["budgetwatch", transition["transition"]]
            assert f"department:{transition['department_id']}" in sent["tags"]
            assert f"rule:{transition['rule']}" in sent["tags"]
            day = dt.date.fromisoformat(transition["date"])
            midnight = dt.datetime.combine(day, dt.time(), CHINA)
            assert sent["time"] == int(midnight.timestamp() * 1000)
            assert transition["subject_name"] in sent["text"]
        first = grafana.received[0]["text"]
        assert first.startswith("【新预警") and "建议：" in first

    run(tmp_path, grafana, scenario)


def test_the_worker_annotates_new_transitions_in_the_background(tmp_path: Path) -> None:
    grafana = FakeGrafana()

    async def scenario(service: Service, url: str) -> None:
        workers = optional_workers(service, grafana_url=url, grafana_token="t0ken")
        annotating = [w for w in workers if isinstance(w, GrafanaAnnotations)]
        assert len(annotating) == 1
        application = build_app(service, workers=annotating)
        async with TestClient(TestServer(application, host="127.0.0.1")) as client:
            await client.post("/events?wait=1", data=b.jsonl(county()))
            transitions = await (await client.get("/api/alerts?all=1")).json()
            grafana.expected = len(transitions)
            if len(grafana.received) < len(transitions):
                await asyncio.wait_for(grafana.arrived.wait(), timeout=60)  # a guard, not a timing
        assert [s["tags"][1] for s in grafana.received] == [t["transition"] for t in transitions]
        assert grafana.authorizations == {"Bearer t0ken"}

    run(tmp_path, grafana, scenario)


def test_without_grafana_url_there_is_no_annotation_worker(tmp_path: Path) -> None:
    async def scenario(service: Service, url: str) -> None:
        workers = optional_workers(service)
        assert not [w for w in workers if isinstance(w, GrafanaAnnotations)]

    run(tmp_path, FakeGrafana(), scenario)


def _note_of(**over: str) -> Any:
    """The annotation of a transition of P1's low_execution alert, with ``over`` changed."""
    return annotation_for({
        "transition": "resolved", "rule": "low_execution", "severity": "critical",
        "department_id": "D01", "subject_name": "校舍改造", "date": "2025-09-01",
        "message": "执行率已恢复", "action": "无需处理", "alert_id": "2025:low_execution:project:P1", **over,
    })


def test_a_resolution_says_so_in_chinese_without_an_action() -> None:
    note = _note_of()
    assert note.text.startswith("【预警解除·严重预警】校舍改造")
    assert "建议" not in note.text
    assert "resolved" in note.tags


def test_a_years_close_is_tagged_and_headed_as_such() -> None:
    note = _note_of(reason="year_closed", date="2026-01-31", message="【年度结束】预算执行率偏低：…",
                    action="年度已结束")
    assert note.text.startswith("【年度结束·严重预警】校舍改造")
    assert {"resolved", "reason:year_closed"} <= set(note.tags)


def test_a_disposition_step_is_named_in_chinese_too() -> None:
    """Grafana's own table named four kinds: an overdue answer showed 【disposition_overdue·一般】."""
    note = _note_of(transition="disposition_overdue", severity="warning", date="2025-07-15",
                    message="逾期未处置", action="请尽快处置")
    assert note.text.startswith("【逾期未处置·一般预警】校舍改造")


def test_after_a_rebuild_the_rebuilt_history_is_not_annotated_again_and_what_follows_is(tmp_path: Path) -> None:
    """A rebuild renumbers the transitions from 1; the cursor stayed on the old numbers,
    so new transitions were silently never annotated until they passed it."""
    from importlib import resources

    grafana = FakeGrafana()

    async def scenario(service: Service, url: str) -> None:
        worker = GrafanaAnnotations(service, GrafanaAnnotator.from_url(url, "t"), retry_seconds=3600)
        async with TestClient(TestServer(build_app(service), host="127.0.0.1")) as client:
            await client.post("/events?wait=1", data=b.jsonl(county()))
            before = await (await client.get("/api/alerts?all=1")).json()
            assert await worker.flush() == len(before) >= 3
            # rebuilt under a laxer policy (a 5% floor): fewer transitions, numbered from 1 again
            lax = tmp_path / "lax.yaml"
            baseline = resources.files("alerts").joinpath("profiles/baseline.yaml").read_text("utf-8")
            lax.write_text(baseline.replace("name: baseline", "name: lax").replace("floor: 0.30", "floor: 0.05"),
                           "utf-8")
            service.engine = Engine(service.store, load_profile(str(lax)))
            await service.db(service.engine.rebuild)
            await service.db(service.engine.run, to_day(parse_day(before[-1]["date"])))
            assert len(await (await client.get("/api/alerts?all=1")).json()) < len(before)
            # a project registered in July that pays nothing: its alerts follow the annotated history
            later = [b.registered("P3", department_id="D03", department_name="民政局", on="2025-07-10"),
                     b.approved("P3", "800000.00", on="2025-07-10"),
                     b.payment("P1", "1000.00", on="2025-07-20", event_id="P1-PAY-9")]
            await client.post("/events?wait=1", data=b.jsonl(later))
            after = await (await client.get("/api/alerts?all=1")).json()
        new = [t for t in after if t["date"] > before[-1]["date"]]
        assert new and any(t["subject_id"] == "P3" for t in new)
        sent = await worker.flush()
        assert [annotated(r) for r in grafana.received[len(before):]] == [annotated(t) for t in new]
        assert sent == len(new)

    run(tmp_path, grafana, scenario)


def annotated(item: dict[str, Any]) -> tuple[Any, ...]:
    """(time, tags, text) of an annotation Grafana received, or of the one a transition makes."""
    if "transition" in item:
        note = annotation_for(item)
        return note.time_ms, tuple(note.tags), note.text
    return item["time"], tuple(item["tags"]), item["text"]


def many_on_one_day() -> list[dict[str, Any]]:
    """Five projects that pay nothing: five low_execution alerts fire on 06-30 (plus others)."""
    events = []
    for n in range(5):
        events += [b.registered(f"P{n}", department_id="D01", department_name="教育局"),
                   b.approved(f"P{n}", "1000000.00")]
    events.append(b.payment("P0", "1.00", on="2025-07-02", event_id="P0-PAY-1"))
    return events


async def _load(service: Service, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async with TestClient(TestServer(build_app(service), host="127.0.0.1")) as client:
        await client.post("/events?wait=1", data=b.jsonl(events))
        return await (await client.get("/api/alerts?all=1")).json()


def test_a_poll_while_a_rebuild_replays_sends_nothing_again(tmp_path: Path) -> None:
    """Same log, same policy: a rebuild changes nothing Grafana has. But the worker's poll
    (every retry_seconds while Grafana is down, or any wake) between reset_derived and the
    replay's commit rebases the cursor on an empty transitions table."""
    grafana = FakeGrafana()

    async def scenario(service: Service, url: str) -> None:
        worker = GrafanaAnnotations(service, GrafanaAnnotator.from_url(url, "t"), retry_seconds=3600)
        before = await _load(service, county())
        assert await worker.flush() == len(before) >= 3
        last = to_day(parse_day(before[-1]["date"]))
        await service.db(service.engine.rebuild)          # `run --rebuild`: reset committed ...
        # ... the worker polls (its 30 s retry while Grafana is down, or any wake)
        assert await worker.flush() == 0
        await service.db(service.engine.run, last)        # ... the replay commits
        resent = await worker.flush()                     # Grafana back
        assert resent == 0, f"{resent} annotations sent twice (of {len(before)})"

    run(tmp_path, grafana, scenario)


def test_a_day_half_annotated_before_a_rebuild_gets_its_other_half(tmp_path: Path) -> None:
    grafana = FakeGrafana()

    async def scenario(service: Service, url: str) -> None:
        annotator = GrafanaAnnotator.from_url(url, "t")
        worker = GrafanaAnnotations(service, annotator, retry_seconds=3600)
        before = await _load(service, many_on_one_day())
        on_0630 = [t for t in before if t["date"] == "2025-06-30"]
        assert len(on_0630) >= 5
        # Grafana fails after the second annotation of 06-30
        first_0630 = before.index(on_0630[0])
        real = annotator.annotate
        calls = 0

        def flaky(data: dict[str, Any]) -> None:
            nonlocal calls
            calls += 1
            if calls > first_0630 + 2:
                raise AnnotationError("grafana down")
            real(data)

        annotator.annotate = flaky  # type: ignore[method-assign]
        with pytest.raises(AnnotationError):
            await worker.flush()
        assert len(grafana.received) == first_0630 + 2
        annotator.annotate = real  # type: ignore[method-assign]
        last = to_day(parse_day(before[-1]["date"]))
        await service.db(service.engine.rebuild)          # same policy, same log
        await service.db(service.engine.run, last)
        await worker.flush()
        assert len(grafana.received) == len(before), (
            f"{len(before) - len(grafana.received)} transitions never annotated")

    run(tmp_path, grafana, scenario)


def test_a_cursor_from_before_the_upgrade_then_a_rebuild_resends_nothing(tmp_path: Path) -> None:
    grafana = FakeGrafana()

    async def scenario(service: Service, url: str) -> None:
        worker = GrafanaAnnotations(service, GrafanaAnnotator.from_url(url, "t"), retry_seconds=3600)
        before = await _load(service, county())
        assert await worker.flush() == len(before)
        # the store as the previous release left it: the cursor only
        for key in (GRAFANA_GENERATION, GRAFANA_DAY):
            await service.db(service.store.db.execute, "DELETE FROM meta WHERE key = ?", (key,))
        await service.db(service.store.db.execute, "DELETE FROM grafana_day_sent")
        assert await worker.flush() == 0                  # upgraded serve starts: nothing new
        last = to_day(parse_day(before[-1]["date"]))
        await service.db(service.engine.rebuild)
        await service.db(service.engine.run, last)
        resent = await worker.flush()
        assert resent == 0, f"{resent} annotations sent twice"

    run(tmp_path, grafana, scenario)


def test_transitions_another_process_committed_are_annotated_within_a_poll(tmp_path: Path) -> None:
    """Review: the worker slept until serve's own run stored transitions; a CLI `run`
    beside serve committed them without waking it, and they waited for serve's next."""
    from streams.store import Store

    grafana = FakeGrafana()

    async def scenario(service: Service, url: str) -> None:
        worker = GrafanaAnnotations(service, GrafanaAnnotator.from_url(url, "t"), retry_seconds=3600,
                                    poll_seconds=0.2)
        async with TestServer(build_app(service, workers=[worker]), host="127.0.0.1"):
            await asyncio.sleep(0.3)
            with Store(service.store.path) as other:  # `budgetwatch ingest` + `run` beside serve
                ingest_events(other, county())
                Engine(other, load_profile("baseline")).run(to_day(parse_day("2025-07-01")))
                stored = len(other.transition_rows())
            grafana.expected = stored
            await asyncio.wait_for(grafana.arrived.wait(), timeout=30)  # a guard, not a timing
        assert stored >= 3 and len(grafana.received) == stored

    run(tmp_path, grafana, scenario)


def three_idle() -> list[dict[str, Any]]:
    events = []
    for n in range(3):
        events += [b.registered(f"P{n}", department_id="D01", department_name="教育局"),
                   b.approved(f"P{n}", "1000000.00")]
    return events


def test_a_half_sent_day_serve_closed_twice_is_matched_by_content_after_a_rebuild(tmp_path: Path) -> None:
    """serve closes its current day again after every batch; the replay closes it once.
    The cursor's "sent-th transition of the day" then names another transition."""
    grafana = FakeGrafana()

    async def scenario(service: Service, url: str) -> None:
        store = service.store
        annotator = GrafanaAnnotator.from_url(url, "t")
        worker = GrafanaAnnotations(service, annotator, retry_seconds=3600)
        await service.db(ingest_events, store, three_idle())
        await service.db(service.engine.run, to_day(parse_day("2025-06-30")))            # first close of 06-30
        rows = await service.db(store.transition_rows)
        on_0630 = [t for t in rows if t["date"] == "2025-06-30"]
        # Grafana accepts everything before 06-30 and the first of 06-30, then fails
        real, calls, limit = annotator.annotate, 0, rows.index(on_0630[0]) + 1

        def flaky(data: dict[str, Any]) -> None:
            nonlocal calls
            calls += 1
            if calls > limit:
                raise AnnotationError("grafana down")
            real(data)

        annotator.annotate = flaky  # type: ignore[method-assign]
        with contextlib.suppress(AnnotationError):
            await worker.flush()
        annotator.annotate = real  # type: ignore[method-assign]
        first_sent = on_0630[0]
        # later the same business day a payment for that subject arrives (serve: POST /events)
        await service.db(ingest_events, store,
                         [b.payment(first_sent["subject_id"], "500000.00", on="2025-06-30", event_id="LATE-1")])
        await service.db(service.engine.run, to_day(parse_day("2025-06-30")))            # 06-30 closed again
        # a rebuild (same log, same policy), then Grafana is back
        await service.db(service.engine.rebuild)
        await service.db(service.engine.run, to_day(parse_day("2025-06-30")))
        await worker.flush()
        rebuilt = await service.db(store.transition_rows)
        got = {annotated(x) for x in grafana.received}
        missing = [(t["rule"], t["subject_id"], t["transition"], t["date"]) for t in rebuilt
                   if annotated(t) not in got]
        assert not missing, f"never annotated: {missing}"

    run(tmp_path, grafana, scenario)
