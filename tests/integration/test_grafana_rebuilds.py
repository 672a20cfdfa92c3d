"""The Grafana cursor across rebuilds, restarts and storage errors (a review's reproductions:
each failed on 38b7d4b)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import Counter
from typing import Any

import pytest

from budget.calendar import to_day
from budget.events import parse_day
from connectors.grafana import AnnotationError, GrafanaAnnotator
from streams.service import GrafanaAnnotations, Service
from tests import builders as b
from tests.functional.engine_helpers import ingest_events
from tests.integration.test_grafana_annotations import FakeGrafana, annotated, run

D = "2025-06-30"


def idle(*names: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for n in names:
        events += [b.registered(n, department_id="D01", department_name="教育局"), b.approved(n, "1000000.00")]
    return events


def _down(annotator: GrafanaAnnotator) -> Any:
    real = annotator.annotate

    def failing(data: dict[str, Any]) -> None:
        raise AnnotationError("grafana down")

    annotator.annotate = failing  # type: ignore[method-assign]
    return real


async def annotated_then_down(service: Service, url: str) -> tuple[GrafanaAnnotator, GrafanaAnnotations, Any, int]:
    """P1 and P2 idle to 06-30, every transition annotated, then Grafana down: the
    annotator, its worker, the real annotate (to bring Grafana back) and how many it sent."""
    annotator = GrafanaAnnotator.from_url(url, "t")
    worker = GrafanaAnnotations(service, annotator, retry_seconds=3600)
    await service.db(ingest_events, service.store, idle("P1", "P2"))
    await service.db(service.engine.run, to_day(parse_day(D)))
    sent = await worker.flush()
    return annotator, worker, _down(annotator), sent


def test_a_second_rebuild_before_the_first_is_matched_sends_nothing_twice(tmp_path) -> None:
    """After a first rebuild whose matching stopped early (Grafana down on an unmatched
    transition that sorts first, a crash), the skip list still holds what Grafana has
    and the day's sent list little: a second rebuild threw the skip list away, and the
    whole last day was annotated twice. The two lists add up now."""
    grafana = FakeGrafana()

    async def scenario(service: Service, url: str) -> None:
        store, day = service.store, to_day(parse_day(D))
        annotator, worker, real, sent = await annotated_then_down(service, url)
        assert sent > 0                                       # 06-30: P1, P2, D01 annotated; then down
        # a project registered in January arrives late: serve closes 06-30 again
        await service.db(ingest_events, store, idle("P0"))
        await service.db(service.engine.run, day)
        # `run --rebuild` (same log, same policy): P0's low_execution sorts first on 06-30
        await service.db(service.engine.rebuild)
        await service.db(service.engine.run, day)
        with pytest.raises(AnnotationError):
            await worker.flush()                              # fails on P0, nothing matched yet
        # a second `run --rebuild` (the operator tries again), then Grafana is back
        await service.db(service.engine.rebuild)
        await service.db(service.engine.run, day)
        annotator.annotate = real  # type: ignore[method-assign]
        await worker.flush()
        twice = [k for k, n in Counter(annotated(x) for x in grafana.received).items() if n > 1]
        assert not twice, f"{len(twice)} annotations sent twice: {[t[1] for t in twice]}"

    run(tmp_path, grafana, scenario)


def test_a_storage_error_is_retried_and_does_not_end_the_annotation_worker(tmp_path) -> None:
    """A write lock held past the busy timeout (a long `run --rebuild` batch beside
    serve) or a full disk raised sqlite3.OperationalError, which ended the worker
    silently (build_app gathers with return_exceptions): nothing was annotated until
    serve restarted. It is logged and tried again now."""
    grafana = FakeGrafana()

    async def scenario(service: Service, url: str) -> None:
        store = service.store
        await service.db(ingest_events, store, idle("P1"))
        await service.db(service.engine.run, to_day(parse_day(D)))
        stored = len(await service.db(store.transition_rows))
        await service.db(store.db.execute, "PRAGMA busy_timeout=50")  # stands in for 30 s
        worker = GrafanaAnnotations(service, GrafanaAnnotator.from_url(url, "t"), retry_seconds=0.1,
                                    poll_seconds=0.1)
        other = sqlite3.connect(store.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")                      # another process's long batch
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run_forever(stop))
        await asyncio.sleep(0.5)
        other.execute("COMMIT")
        other.close()
        grafana.expected = stored
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(grafana.arrived.wait(), timeout=3)
        alive = not task.done()
        stop.set()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 2)
        assert alive, f"the worker ended: {task.exception()!r}"
        assert len(grafana.received) == stored

    run(tmp_path, grafana, scenario)


def test_a_new_worker_instance_resumes_the_matching_where_the_last_stopped(tmp_path) -> None:
    """A restart mid-matching: the skip list is in the store."""
    grafana = FakeGrafana()

    async def scenario(service: Service, url: str) -> None:
        store, day = service.store, to_day(parse_day(D))
        annotator, worker, real, _ = await annotated_then_down(service, url)
        await service.db(ingest_events, store, [b.registered("P0", department_id="D01", department_name="教育局",
                                                             on=D), b.approved("P0", "1000000.00", on=D)])
        await service.db(service.engine.run, day)
        await service.db(service.engine.rebuild)
        await service.db(service.engine.run, day)
        with pytest.raises(AnnotationError):
            await worker.flush()
        annotator.annotate = real  # type: ignore[method-assign]
        fresh = GrafanaAnnotations(service, annotator, retry_seconds=3600)   # serve restarted
        await fresh.flush()
        counts = Counter(annotated(x) for x in grafana.received)
        rebuilt = await service.db(store.transition_rows)
        assert all(n == 1 for n in counts.values()), [k[1] for k, n in counts.items() if n > 1]
        keys = Counter((x["tags"][1], x["text"].rsplit("预警编号 ", 1)[-1]) for x in grafana.received)
        missing = [(t["date"], t["alert_id"], t["transition"]) for t in rebuilt
                   if (t["transition"], t["alert_id"]) not in keys]
        assert not missing, missing

    run(tmp_path, grafana, scenario)
