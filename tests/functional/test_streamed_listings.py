"""Streamed listings (?all=1, /api/rejected) against a rebuild beside them, a client that
hangs up and a failure midway (a review's reproductions of 37ea85e)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from budget.calendar import to_day
from budget.events import parse_day
from connectors.profiles import load_profile
from streams.engine import Engine
from streams.service import Service
from streams.store import Store
from tests import builders as b
from tests.functional.test_service import lagging_county, post, serve


def test_a_rebuild_between_the_first_pages_rows_and_its_generation_is_seen_next_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """page() reads the rows, then store.position() in a second autocommit statement: a
    rebuild committed between the two is recorded as the stream's generation, so the
    old first page is followed by the new history's later pages and the list parses."""
    import streams.service

    monkeypatch.setattr(streams.service, "STREAM_PAGE_ROWS", 2)
    outcome: dict[str, Any] = {}

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        await post(client, b.jsonl(lagging_county()))
        outcome["old"] = service.store.transition_rows()
        real, calls = service.store.transition_page, [0]

        def page(**kw: Any) -> Any:
            calls[0] += 1
            found = real(**kw)
            if calls[0] == 1:  # `run --rebuild --profile provincial` commits right after the read
                other = Engine(Store(service.store.path), load_profile("provincial"))
                other.rebuild()
                other.run(to_day(parse_day("2025-07-01")))
                other.store.close()
            return found

        service.store.transition_page = page  # type: ignore[method-assign]
        response = await client.get("/api/alerts?all=1", timeout=aiohttp.ClientTimeout(total=20))
        try:
            outcome["listed"] = await response.json()
        except aiohttp.ClientPayloadError:
            outcome["listed"] = "cut"
        service.store.transition_page = real  # type: ignore[method-assign]
        outcome["new"] = service.store.transition_rows()

    serve(tmp_path, scenario)
    listed = outcome["listed"]
    assert outcome["old"] != outcome["new"]
    assert listed in ("cut", outcome["old"], outcome["new"]), (
        f"a list of {len(listed)} that parses, mixing two histories: "
        f"{[(t['date'], t['subject_id'], t['rule'], t['transition']) for t in listed]}")


@asynccontextmanager
async def served_as_run_app(tmp_path: Path) -> AsyncIterator[tuple[Service, int]]:
    """A county's year processed, then the service on 127.0.0.1 as `serve` runs it
    (web.run_app's settings: no handler cancellation, which TestServer turns on)."""
    from aiohttp import web

    from streams.service import build_app
    from tests.functional.engine_helpers import ingest_events

    engine = Engine(Store(tmp_path / "bw.db"), load_profile("baseline"))
    ingest_events(engine.store, lagging_county())
    engine.run(to_day(parse_day("2025-07-01")))
    service = Service(engine)
    service.prepare()
    runner = web.AppRunner(build_app(service))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield service, runner.addresses[0][1]
    finally:
        await runner.cleanup()
        service.close()
        engine.store.close()


def test_a_client_that_hangs_up_mid_listing_is_not_logged_as_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """_streamed re-raises ConnectionResetError; under `serve` (web.run_app, no handler
    cancellation) aiohttp's _handle_request then logs 'Error handling request' at ERROR,
    with a traceback, for an ordinary hang-up (curl | head, a closed browser tab)."""
    import streams.service

    monkeypatch.setattr(streams.service, "STREAM_PAGE_ROWS", 1)

    async def main() -> None:
        async with served_as_run_app(tmp_path) as (service, port):
            gate = asyncio.Event()
            real_db = service.db

            async def slow_db(fn: Any, *args: Any) -> Any:  # the second page is read after the hang-up
                if getattr(fn, "__name__", "") == "page" and args and args[0]:
                    await gate.wait()
                return await real_db(fn, *args)

            service.db = slow_db  # type: ignore[method-assign]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /api/alerts?all=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            await reader.read(300)
            writer.transport.abort()  # the client hangs up
            await asyncio.sleep(0.3)
            gate.set()
            await asyncio.sleep(0.5)

    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [(r.name, r.getMessage(), r.exc_info and repr(r.exc_info[1])) for r in errors]


def test_the_abort_path_logs_once_and_the_client_sees_a_broken_transfer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """A storage error on a later page, under run_app's settings: logged once, and the
    client sees a broken transfer."""
    import sqlite3

    import streams.service

    monkeypatch.setattr(streams.service, "STREAM_PAGE_ROWS", 1)
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with served_as_run_app(tmp_path) as (service, port):
            real, calls = service.store.transition_page, [0]

            def page(**kw: Any) -> Any:
                calls[0] += 1
                if calls[0] == 3:
                    raise sqlite3.OperationalError("database is locked")
                return real(**kw)

            service.store.transition_page = page  # type: ignore[method-assign]
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/api/alerts?all=1") as response:
                    try:
                        await response.read()
                    except aiohttp.ClientPayloadError as err:
                        seen["cut"] = repr(err)
                service.store.transition_page = real  # type: ignore[method-assign]
                async with session.get(f"http://127.0.0.1:{port}/api/alerts?all=1") as response:
                    seen["again"] = len(await response.json())

    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "cut" in seen and seen["again"] > 3
    assert len(errors) == 1 and errors[0].name == "budgetwatch.service", [(r.name, r.getMessage()) for r in errors]
