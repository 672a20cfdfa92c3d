"""The notifier agent (budget-alerts → its own SQLite store) through
``agent.test_context()``: the messages are those the real worker agents published
for a generated year; the store is a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust
import orjson
import pytest

from connectors.synthetic import Spec, generate
from streams.alert_sink import TRANSITION_ONLY, AlertSink, Received
from streams.errors import StoreError
from streams.faust_notifier import NotifierApp
from streams.faust_state import partition_for
from streams.settings import Settings
from streams.store import Store
from tests.functional.faust_harness import year_alert_messages
from tests.functional.test_cli import cli

PARTITIONS = 4


@pytest.fixture(scope="module")
def messages() -> list[bytes]:
    return year_alert_messages()


class Feed:
    """Puts budget-alerts messages into the notifier agent, keyed and partitioned as the
    workers send them, at each partition's next offset."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.offsets: dict[int, int] = {}

    async def put(
        self, value: bytes | None, *, partition: int | None = None, timestamp: float | None = None
    ) -> str:
        """``timestamp``: when the producer sent it (Kafka's message timestamp)."""
        key = _alert_id(value)
        p = partition_for(key, PARTITIONS) if partition is None else partition
        at = self.offsets.get(p, 0)
        self.offsets[p] = at + 1
        self.agent.sent_offset = at
        await self.agent.put(value=value, key=key.encode(), partition=p, timestamp=timestamp)
        return f"budget-alerts:{p}:{at}"


def _alert_id(value: bytes | None) -> str:
    if value is None:
        return "unkeyed"
    try:
        data = orjson.loads(value)
        return str(data["alert_id"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "unkeyed"


def notifier(db: Path, **kwargs: Any) -> NotifierApp:
    settings = Settings(partitions=PARTITIONS, db=str(db), clock="off")
    return NotifierApp(settings, Store(db), app_id="budgetwatch-notifier-test", **kwargs)


def feed(napp: NotifierApp, scenario: Callable[[Feed], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        raw = faust.Schema(key_serializer="raw", value_serializer="raw")
        async with napp.agent.test_context(channel=napp.app.channel(schema=raw)) as agent:
            return await scenario(Feed(agent))

    try:
        return asyncio.run(go())
    finally:
        napp.close()
        napp.store.close()


def latest_by_alert(messages: list[bytes]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for m in messages:
        data = orjson.loads(m)
        latest[data["alert_id"]] = {k: v for k, v in data.items() if k not in TRANSITION_ONLY}
    return latest


def stored(db: Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], int]:
    with sqlite3.connect(db) as c:
        alerts = {a: orjson.loads(d) for a, d in c.execute("SELECT alert_id, data FROM alerts")}
        transitions = [orjson.loads(d) for (d,) in c.execute("SELECT data FROM transitions ORDER BY id")]
        outbox = c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    return alerts, transitions, outbox


def put_all(values: list[bytes]) -> Callable[[Feed], Awaitable[list[str]]]:
    async def scenario(f: Feed) -> list[str]:
        return [await f.put(v) for v in values]
    return scenario


def test_every_transition_is_stored_with_its_alert_and_an_outbox_row(
    tmp_path: Path, messages: list[bytes]
) -> None:
    db = tmp_path / "notifier.db"
    napp = notifier(db)
    feed(napp, put_all(messages))
    alerts, transitions, outbox = stored(db)
    assert transitions == [orjson.loads(m) for m in messages]
    assert outbox == len(messages)
    assert alerts == latest_by_alert(messages)
    assert napp.registry.get_sample_value("budget_notifier_messages_total", {"outcome": "stored"}) == len(messages)
    # the business day the notification horizon judges by: the latest transition's date
    with Store(db) as store:
        from budget.calendar import iso
        assert iso(store.cursor()[0]) == max(orjson.loads(m)["date"] for m in messages)


def test_redelivery_and_a_restart_store_nothing_twice(tmp_path: Path, messages: list[bytes]) -> None:
    db = tmp_path / "notifier.db"
    half = len(messages) // 2
    first = notifier(db)
    feed(first, put_all(messages[: half + 5]))
    # a new consumer starts from the last committed offset: the tail of what was stored
    # is delivered again, then the rest
    second = notifier(db)
    feed(second, put_all(messages[half:]))
    alerts, transitions, outbox = stored(db)
    assert transitions == [orjson.loads(m) for m in messages]
    assert outbox == len(messages)
    assert alerts == latest_by_alert(messages)
    sample = second.registry.get_sample_value
    assert sample("budget_notifier_messages_total", {"outcome": "duplicate"}) == 5
    assert sample("budget_notifier_messages_total", {"outcome": "stored"}) == len(messages) - half - 5


def test_malformed_messages_are_kept_with_their_offset_and_the_rest_go_on(
    tmp_path: Path, messages: list[bytes]
) -> None:
    db = tmp_path / "notifier.db"
    good = messages[:8]
    wrong_rule = orjson.dumps({**orjson.loads(good[0]), "rule": "low_spending", "date": "2025-12-01"})
    far_future = orjson.dumps({**orjson.loads(good[0]), "date": "2205-01-01"})
    first_date = orjson.loads(good[0])["date"]
    ahead = orjson.dumps({**orjson.loads(good[0]), "updated_on": "2026-12-31"})  # would hold the alert
    assert first_date < "2026-12-31"
    bad: list[bytes | None] = [
        b"{not json", b"[1, 2]", wrong_rule, orjson.dumps({"alert_id": "x"}), far_future, ahead, None,
    ]

    async def scenario(f: Feed) -> list[str]:
        sources = []
        assert len(good) >= len(bad)
        for n, value in enumerate(good):
            await f.put(value)
            if n < len(bad):
                sources.append(await f.put(bad[n], partition=1))
        sources.append(await f.put(b"{not json", partition=1))  # the same bad message again, later
        return sources

    napp = notifier(db)
    sources = feed(napp, scenario)
    alerts, transitions, _ = stored(db)
    assert transitions == [orjson.loads(m) for m in good]
    assert alerts == latest_by_alert(good)
    with Store(db) as store:
        rejected = store.rejections()
    assert [r["source"] for r in rejected] == sources
    reasons = [r["reason"] for r in rejected]
    assert reasons[0].startswith("not JSON")
    assert "not a JSON object but list" in reasons[1]
    assert "unknown rule 'low_spending'" in reasons[2]
    assert "rule: Field required" in reasons[3]
    assert "outside fiscal year" in reasons[4]
    assert f"updated_on 2026-12-31 is after the transition's date {first_date}" in reasons[5]
    assert reasons[6].startswith("a null value (a tombstone)")
    assert [r["raw"] for r in rejected[:7]] == [(b or b"").decode() for b in bad]
    assert napp.registry.get_sample_value("budget_notifier_messages_total", {"outcome": "rejected"}) == 8
    with Store(db) as store:  # the business clock (notification horizon) is the good ones'
        from budget.calendar import iso
        assert iso(store.cursor()[0]) == max(orjson.loads(m)["date"] for m in good)


def test_an_old_transition_sent_again_out_of_order_does_not_roll_the_alert_back(tmp_path: Path) -> None:
    base = {
        "alert_id": "2025:low_execution:project:P1", "rule": "low_execution", "severity": "warning",
        "subject_type": "project", "subject_id": "P1", "subject_name": "项目", "department_id": "D01",
        "department_name": "教育局", "fiscal_year": 2025, "since": "2025-06-30", "figures": {},
        "message": "", "action": "",
    }
    fired = {**base, "status": "firing", "updated_on": "2025-06-30", "transition": "firing",
             "date": "2025-06-30", "previous_severity": None}
    resolved = {**base, "status": "resolved", "updated_on": "2025-08-01", "transition": "resolved",
                "date": "2025-08-01", "previous_severity": None}
    fired_again = {**fired, "figures": {"execution_rate": 0.1}}  # differs: not a duplicate
    db = tmp_path / "notifier.db"
    feed(notifier(db), put_all([orjson.dumps(m) for m in (fired, resolved, fired_again)]))
    alerts, transitions, outbox = stored(db)
    assert [t["transition"] for t in transitions] == ["firing", "resolved", "firing"]
    assert alerts[base["alert_id"]]["status"] == "resolved"
    assert outbox == 2  # the stale "firing" is history: no department is told of it


def test_a_store_that_cannot_be_written_holds_the_line(tmp_path: Path, messages: list[bytes]) -> None:
    """A failed write is retried (with backoff) until it succeeds: the message is not
    acknowledged unstored, and the ones behind it wait."""
    db = tmp_path / "notifier.db"
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    napp = notifier(db, sleep=sleep)
    real = napp.sink.receive
    failures = iter([sqlite3.OperationalError("disk I/O error"), StoreError("locked")])

    def flaky(value: bytes, *, source: str) -> Received:
        error = next(failures, None)
        if error is not None:
            raise error
        return real(value, source=source)

    napp.sink.receive = flaky  # type: ignore[method-assign]
    feed(napp, put_all(messages[:3]))
    _, transitions, _ = stored(db)
    assert transitions == [orjson.loads(m) for m in messages[:3]]
    assert slept == [1.0, 2.0]
    assert napp.registry.get_sample_value("budget_notifier_store_retries_total") == 2


def test_firing_alerts_are_exported_by_rule_severity_and_department(
    tmp_path: Path, messages: list[bytes]
) -> None:
    db = tmp_path / "notifier.db"
    napp = notifier(db)
    feed(napp, put_all(messages))
    expected: dict[tuple[str, str, str], int] = {}
    for alert in latest_by_alert(messages).values():
        if alert["status"] == "firing":
            key = (alert["rule"], alert["severity"], alert["department_id"])
            expected[key] = expected.get(key, 0) + 1
    assert expected
    for (rule, severity, department), count in expected.items():
        labels = {"rule": rule, "severity": severity, "department": department}
        assert napp.registry.get_sample_value("budget_alerts_firing", labels) == count
    # no directory routes this notifier's outbox: a backlog would only grow, so none is exported
    assert napp.registry.get_sample_value("budget_notification_outbox_backlog") is None


def test_a_notifier_with_a_directory_exports_its_outbox_backlog(tmp_path: Path, messages: list[bytes]) -> None:
    from connectors.directory import parse_directory
    from streams.outbox import Dispatcher

    db = tmp_path / "notifier.db"
    directory = parse_directory({"default": {"name": "财政局", "webhook": "http://127.0.0.1:9/hook"}})
    napp = notifier(db, dispatcher=Dispatcher(db, directory))
    feed(napp, put_all(messages))
    assert napp.registry.get_sample_value("budget_notification_outbox_backlog") == len(messages)  # none routed yet


def test_notifier_and_engine_stores_are_kept_apart(tmp_path: Path, messages: list[bytes]) -> None:
    engine_db = tmp_path / "bw.db"
    year = tmp_path / "year.jsonl"
    year.write_bytes(b"\n".join(generate(Spec(projects=5, seed=1))) + b"\n")
    cli(engine_db, "ingest", str(year))
    with Store(engine_db) as store, pytest.raises(StoreError, match="embedded engine's store"):
        AlertSink(store)

    notifier_db = tmp_path / "notifier.db"
    feed(notifier(notifier_db), put_all(messages[:4]))
    for args in (["run"], ["run", "--rebuild"], ["serve", "--port", "0"]):
        result = cli(notifier_db, *args, check=False)
        assert result.returncode != 0
        assert "notifier's store" in result.stderr + result.stdout
    _, transitions, outbox = stored(notifier_db)
    assert len(transitions) == outbox == 4  # nothing resolved or wiped by a run
    listed = orjson.loads(cli(notifier_db, "alerts", "--json", "--all").stdout)
    assert sorted(a["alert_id"] for a in listed) == sorted(_alert_id(m) for m in messages[:4])


def test_a_stored_transition_wakes_the_dispatcher_and_a_refused_one_does_not(
    tmp_path: Path, messages: list[bytes]
) -> None:
    from streams.outbox import Dispatcher

    db = tmp_path / "notifier.db"
    dispatcher = Dispatcher(db, None)
    napp = notifier(db, dispatcher=dispatcher)
    assert napp.workers == [dispatcher]

    async def scenario(f: Feed) -> list[bool]:
        assert dispatcher.wake is not None
        woken = []
        for value in (b"{broken", messages[0], messages[0]):
            dispatcher.wake.clear()
            await f.put(value)
            woken.append(dispatcher.wake.is_set())
        await dispatcher.aclose()
        return woken

    assert feed(napp, scenario) == [False, True, False]


def test_a_same_day_refire_reaches_the_store_and_a_resent_transition_does_not(tmp_path: Path) -> None:
    """Three ticks on 07-01: overspend fires, a budget increase resolves it, a correction
    fires it again — the third message has the first one's content but another origin."""
    from connectors.profiles import load_profile
    from tests import builders as b
    from tests.functional.faust_harness import make_app, running

    events = [b.registered("P1"), b.approved("P1", "1000.00"), b.payment("P1", "1500.00", on="2025-07-01")]
    bapp, outlet = make_app(load_profile("baseline"), partitions=PARTITIONS)

    async def worker() -> list[bytes]:
        async with running(bapp, outlet) as h:
            await h.publish(b.jsonl(events).splitlines())
            await h.tick("2025-07-01")
            await h.publish(b.jsonl([b.adjusted("P1", "1000.00", on="2025-07-01")]).splitlines())
            await h.tick("2025-07-01")
            await h.publish(b.jsonl([b.adjusted("P1", "-1000.00", on="2025-07-01")]).splitlines())
            await h.tick("2025-07-01")
            overspend = [a for a in h.alerts if a["rule"] == "overspend"]
            assert [a["transition"] for a in overspend] == ["firing", "resolved", "firing"]
            assert overspend[0] == overspend[2], "the re-fire's content is the first firing's"
            return [m for m in h.alert_messages if orjson.loads(m)["rule"] == "overspend"]

    sent = asyncio.run(worker())
    db = tmp_path / "notifier.db"
    napp = notifier(db)
    outcomes = feed(napp, put_all([*sent, sent[0], sent[2]]))  # and two sent again
    assert len(outcomes) == 5
    alerts, transitions, outbox = stored(db)
    assert [t["transition"] for t in transitions] == ["firing", "resolved", "firing"]
    assert alerts["2025:overspend:project:P1"]["status"] == "firing"
    assert outbox == 3
    assert napp.registry.get_sample_value("budget_notifier_messages_total", {"outcome": "duplicate"}) == 2


def test_a_message_the_notifier_fails_on_is_kept_with_its_offset(tmp_path: Path, messages: list[bytes]) -> None:
    db = tmp_path / "notifier.db"
    napp = notifier(db)
    receive = napp.sink.receive

    def failing_on_the_first(value: bytes | None, *, source: str) -> Received:
        if value == messages[0]:
            raise RuntimeError("an unforeseen bug")
        return receive(value, source=source)

    napp.sink.receive = failing_on_the_first  # type: ignore[method-assign]
    sources = feed(napp, put_all(messages[:3]))
    _, transitions, _ = stored(db)
    assert transitions == [orjson.loads(m) for m in messages[1:3]]
    with Store(db) as store:
        (letter,) = store.rejections()
    assert letter["source"] == sources[0]
    assert letter["reason"].startswith("RuntimeError: an unforeseen bug")
    assert letter["raw"] == messages[0].decode()


def test_the_notifier_commits_with_full_durability(tmp_path: Path, messages: list[bytes]) -> None:
    """Kafka forgets a message once its offset is committed: the notifier's commit must
    survive a power cut, unlike the engine's (which recomputes from its log)."""
    from streams.store import Batch

    seen: list[int] = []
    commit = Batch.commit

    def recording(self: Batch, **kwargs: Any) -> None:
        seen.append(self.db.execute("PRAGMA synchronous").fetchone()[0])
        commit(self, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Batch, "commit", recording)
        feed(notifier(tmp_path / "notifier.db"), put_all(messages[:2]))
        with Store(tmp_path / "engine.db") as store:
            store.begin().commit(projects=(), alerts=(), clock=1, seq=0)
    assert seen == [2, 2, 1]  # FULL for the notifier's two messages, NORMAL for an engine batch


def test_notifications_wait_until_the_backlog_is_read(tmp_path: Path, messages: list[bytes]) -> None:
    """A backlog read message by message moves the business clock as it goes: fanned out
    on the way, every transition of the year would look current to the 30-day horizon."""
    import datetime as dt

    from connectors.directory import load_directory
    from streams.outbox import Dispatcher
    from tests.functional.test_outbox import write_yaml

    db = tmp_path / "notifier.db"
    directory = load_directory(
        write_yaml(tmp_path / "departments.yaml", {"default": {"name": "财政局", "webhook": "http://127.0.0.1:9/x"}})
    )
    dispatcher = Dispatcher(db, directory, horizon_days=30)
    now = [1000.0]
    year_ago = 1.7e9  # the messages were produced long before they are read
    napp = notifier(db, dispatcher=dispatcher, monotonic=lambda: now[0], wall=lambda: year_ago + 3e7)

    async def scenario(f: Feed) -> list[tuple[bool, int, int]]:
        rounds = []
        for n, value in enumerate(messages):
            await f.put(value, timestamp=year_ago + n)
            now[0] += 0.01  # read far faster than the settle time
            if n in (5, len(messages) // 2):
                stats = await dispatcher.run_once()
                rounds.append((stats.held, stats.fanned_out, stats.skipped_historical))
        now[0] += 1.5
        stats = await dispatcher.run_once()
        rounds.append((stats.held, stats.fanned_out, stats.skipped_historical))
        now[0] += 0.6  # two seconds of quiet
        stats = await dispatcher.run_once()
        rounds.append((stats.held, stats.fanned_out, stats.skipped_historical))
        await dispatcher.aclose()
        return rounds

    rounds = feed(napp, scenario)
    transitions = [orjson.loads(m) for m in messages]
    horizon = (dt.date.fromisoformat(max(t["date"] for t in transitions)) - dt.timedelta(days=30)).isoformat()
    # History: old and not of the episode still firing (resolved since, or an earlier
    # episode of an alert that fired again), or a later step of an alert never announced.
    final = {t["alert_id"]: (t["status"], t["since"]) for t in transitions}
    told: set[str] = set()
    history = 0
    for t in transitions:
        old = t["date"] < horizon
        status, since = final[t["alert_id"]]
        if (old and not (status == "firing" and t["date"] >= since)) or (
                not old and t["transition"] != "firing" and t["alert_id"] not in told):
            history += 1
            continue
        told.add(t["alert_id"])
    assert 0 < history < len(messages) - 5
    assert rounds == [(True, 0, 0), (True, 0, 0), (True, 0, 0), (False, len(messages), history)]


def test_a_live_trickle_is_held_at_most_a_minute(tmp_path: Path, messages: list[bytes]) -> None:
    from streams.outbox import Dispatcher

    db = tmp_path / "notifier.db"
    now = [0.0]
    napp = notifier(db, dispatcher=Dispatcher(db, None), monotonic=lambda: now[0], wall=lambda: 5e9 + now[0])

    async def scenario(f: Feed) -> list[float]:
        released = []
        for value in messages[:130]:
            await f.put(value, timestamp=5e9 + now[0])  # produced just now: live
            napp.registry.get_sample_value("budget_notifier_holding")  # a scrape takes no release
            if not napp.catching_up():
                released.append(now[0])
            now[0] += 1.0  # one a second: never two seconds of quiet
        return released

    assert feed(napp, scenario) == [60.0, 120.0]


def test_a_bad_department_directory_stops_the_notifier_with_a_clear_error(tmp_path: Path) -> None:
    import os
    import subprocess

    from tests.functional.test_cli import BIN

    directory = tmp_path / "departments.yaml"
    directory.write_text("D01: {name: 教育局, webhook: not-a-url}\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUDGETWATCH_")}
    env.update(BUDGETWATCH_DB=str(tmp_path / "notifier.db"), BUDGETWATCH_DEPARTMENTS=str(directory),
               BUDGETWATCH_KAFKA_BOOTSTRAP="127.0.0.1:9")
    done = subprocess.run([str(BIN), "notifier"], env=env, capture_output=True, text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output, output
    assert str(directory) in output and "D01" in output, output


def test_a_burst_read_slower_than_it_came_is_held_until_the_consumer_reaches_its_end(
    tmp_path: Path, messages: list[bytes]
) -> None:
    """One closing tick publishes a year in a second; read at one message a second, each
    message still looks live after a minute: only the consumer's lag tells a backlog."""
    from collections import Counter

    from faust.types import TP

    from streams.faust_state import ALERTS_TOPIC
    from streams.outbox import Dispatcher

    burst = messages[:130]
    ends = Counter(partition_for(_alert_id(m), PARTITIONS) for m in burst)  # each partition's next offset
    ends[0] += 1  # and one more on partition 0 that this notifier will not read: revoked
    db = tmp_path / "notifier.db"
    now = [0.0]
    napp = notifier(db, dispatcher=Dispatcher(db, None), monotonic=lambda: now[0], wall=lambda: 5e9 + now[0],
                    highwater=lambda tp: ends[tp.partition])

    async def scenario(f: Feed) -> tuple[list[float], bool, bool]:
        released = []
        for value in burst:
            await f.put(value, timestamp=5e9)  # all produced at the start
            if not napp.catching_up():
                released.append(now[0])
            now[0] += 1.0
        now[0] += 5.0
        behind = napp.catching_up()  # partition 0 still has a message to read
        assert napp.registry.get_sample_value("budget_notifier_holding") == 1
        await napp.app.on_partitions_revoked.send({TP(ALERTS_TOPIC, 0)})  # handed to another consumer
        assert napp.registry.get_sample_value("budget_notifier_holding") == 0
        return released, behind, napp.catching_up()

    assert feed(napp, scenario) == ([], True, False)


def test_an_alert_that_moved_is_stored_anew_without_a_transition_or_a_notification(
    tmp_path: Path, messages: list[bytes]
) -> None:
    """The workers send "moved" when a firing alert follows its project to another
    department (or a department's new name) with no transition: the notifier's store,
    its metrics and Alertmanager kept the old department, and a later "resolved" went
    to a department that never heard of the firing."""
    first = orjson.loads(next(m for m in messages if orjson.loads(m)["transition"] == "firing"))
    moved = {**first, "transition": "moved", "department_id": "D99", "department_name": "新设部门",
             "date": "2025-12-30"}
    db = tmp_path / "notifier.db"
    napp = notifier(db)
    feed(napp, put_all([orjson.dumps(first), orjson.dumps(moved)]))
    alerts, transitions, outbox = stored(db)
    row = alerts[first["alert_id"]]
    assert (row["department_id"], row["department_name"]) == ("D99", "新设部门")
    assert [t["transition"] for t in transitions] == ["firing"] and outbox == 1
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM rejected").fetchone()[0] == 0


def test_a_years_close_is_stored_as_the_alerts_end_with_its_reason_kept_in_history(
    tmp_path: Path, messages: list[bytes]
) -> None:
    """The workers end a closed year's alerts with ``"reason": "year_closed"``: the
    notifier stores the alert resolved with its reason, as the embedded store does, and
    keeps it in its history, where fan-out reads it (tests/functional/test_outbox.py)."""
    first = orjson.loads(next(m for m in messages if orjson.loads(m)["transition"] == "firing"))
    closed = {**first, "transition": "resolved", "status": "resolved", "reason": "year_closed",
              "date": f"{first['fiscal_year'] + 1}-01-31", "updated_on": f"{first['fiscal_year'] + 1}-01-31",
              "previous_severity": first["severity"], "origin": "budget-events:0:99"}
    db = tmp_path / "notifier.db"
    napp = notifier(db)
    feed(napp, put_all([orjson.dumps(first), orjson.dumps(closed)]))
    alerts, transitions, outbox = stored(db)
    row = alerts[first["alert_id"]]
    assert row["status"] == "resolved" and row["reason"] == "year_closed"
    assert [(t["transition"], t.get("reason")) for t in transitions] == [("firing", None), ("resolved", "year_closed")]
    assert outbox == 2
