"""Run `budgetwatch serve`'s application in-process on 127.0.0.1 for one scenario."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from connectors.profiles import load_profile
from streams.engine import Engine
from streams.service import Service, build_app
from streams.store import Store

Scenario = Callable[[TestClient[Any, Any], Service], Awaitable[None]]
Registrar = Callable[[web.Application, Service], Any]


def run_service(
    db: Path,
    scenario: Scenario,
    *,
    routes: list[Registrar] | None = None,
    workers: list[Any] | None = None,
    **options: Any,
) -> None:
    app_options = {k: options.pop(k) for k in ("max_body_bytes",) if k in options}

    async def main() -> None:
        engine = Engine(Store(db), load_profile("baseline"))
        service = Service(engine, **options)
        service.prepare()
        application = build_app(service, routes=routes or [], workers=workers or [], **app_options)
        try:
            async with TestClient(TestServer(application, host="127.0.0.1")) as client:
                await scenario(client, service)
        finally:
            service.close()
            engine.store.close()

    asyncio.run(main())
