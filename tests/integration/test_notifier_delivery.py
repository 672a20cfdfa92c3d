"""The notifier end to end, broker aside: budget-alerts messages the worker agents
published go through the notifier agent (``agent.test_context()``) into a real
SQLite store, and its dispatcher — woken by each stored transition — delivers them
to a real webhook receiver on 127.0.0.1, once each, in Chinese."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import faust
import orjson
from aiohttp import web

from alerts.messages import KIND_NAMES, RULE_NAMES
from connectors.directory import load_directory
from streams.faust_notifier import NotifierApp
from streams.outbox import Dispatcher
from streams.settings import Settings
from streams.store import Store
from tests.functional.faust_harness import year_alert_messages
from tests.functional.test_notifier import PARTITIONS, Feed
from tests.notify_helpers import write_yaml


def test_the_notifier_delivers_every_worker_transition_once(tmp_path: Path) -> None:
    messages = year_alert_messages(projects=30, seed=3)
    acked: Counter[str] = Counter()
    bodies: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        acked[body["dedup_key"]] += 1
        bodies.append(body)
        if len(acked) >= len(messages):
            arrived.set()
        return web.json_response({"ok": True})

    async def scenario() -> None:
        server = web.Application()
        server.router.add_post("/hook", hook)
        runner = web.AppRunner(server)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        directory = load_directory(
            write_yaml(tmp_path / "departments.yaml", {"default": {"name": "财政局绩效科", "webhook": url}})
        )
        db = tmp_path / "notifier.db"
        store = Store(db)
        dispatcher = Dispatcher(db, directory, poll_interval=0.5)
        napp = NotifierApp(
            Settings(partitions=PARTITIONS, db=str(db), clock="off"), store,
            dispatcher=dispatcher, app_id="budgetwatch-notifier-delivery",
        )
        stop = asyncio.Event()
        delivering = asyncio.create_task(dispatcher.run_forever(stop))
        try:
            raw = faust.Schema(key_serializer="raw", value_serializer="raw")
            async with napp.agent.test_context(channel=napp.app.channel(schema=raw)) as agent:
                feed = Feed(agent)
                for value in messages:
                    await feed.put(value)
                for value in messages[:10]:  # redelivered after a consumer restart
                    await feed.put(value)
            await asyncio.wait_for(arrived.wait(), timeout=60)
            await asyncio.sleep(0.5)  # anything more would arrive now
        finally:
            stop.set()
            await delivering
            napp.close()
            store.close()
            await runner.cleanup()

    asyncio.run(scenario())
    assert len(acked) == len(messages)
    assert set(acked.values()) == {1}
    sent = [orjson.loads(m) for m in messages]
    assert sorted((b["transition"]["alert_id"], b["transition"]["date"], b["transition"]["transition"])
                  for b in bodies) == sorted((t["alert_id"], t["date"], t["transition"]) for t in sent)
    for body in bodies:
        transition = body["transition"]
        assert RULE_NAMES[transition["rule"]] in body["title"]
        assert KIND_NAMES[transition["transition"]] in body["title"]
