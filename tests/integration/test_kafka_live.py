"""Against a real Kafka broker: publish the demo year, run a worker, read
budget-alerts and compare with the embedded engine.

Runs only when BUDGETWATCH_TEST_KAFKA=host:port is set, e.g. against the compose
stack: ``docker compose up -d kafka`` then
``BUDGETWATCH_TEST_KAFKA=localhost:9094 .venv/bin/pytest tests/integration/test_kafka_live.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.serve_process import free_port, stop

BOOTSTRAP = os.environ.get("BUDGETWATCH_TEST_KAFKA")
pytestmark = pytest.mark.skipif(
    not BOOTSTRAP, reason="set BUDGETWATCH_TEST_KAFKA=host:port to run against a real Kafka broker"
)

AS_OF = "2025-09-30"
ROOT = Path(__file__).resolve().parents[2]


def without_origin(value: str) -> dict[str, Any]:
    row: dict[str, Any] = orjson.loads(value)
    row.pop("origin")
    return row


def canonical(rows: list[dict[str, Any]]) -> list[bytes]:
    return sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rows)


def test_the_worker_on_kafka_raises_the_embedded_alerts(tmp_path: Path) -> None:
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient, NewTopic

    from budget.calendar import to_day
    from budget.events import parse_day
    from connectors.files import read_events
    from connectors.profiles import load_profile
    from connectors.synthetic import Spec, generate
    from streams.engine import Engine
    from streams.ingest import ingest
    from streams.store import Store

    assert BOOTSTRAP
    year = tmp_path / "year.jsonl"
    year.write_bytes(b"\n".join(generate(Spec(projects=150, seed=13))) + b"\n")
    with Store(str(tmp_path / "bw.db")) as store:
        ingest(store, read_events(year))
        Engine(store, load_profile("baseline")).run(to_day(parse_day(AS_OF)))
        expected = [
            {k: v for k, v in r.items() if not k.startswith("_")} for r in store.transition_rows()
        ]

    # A fresh namespace per run: Faust prefixes nothing, so use a throwaway cluster
    # (the compose broker) — we delete and recreate the four topics.
    partitions = 3
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    topics = ["budget-events", "budget-departments", "budget-alerts", "budget-events-dlq"]
    existing = set(admin.list_topics())
    stale = [t for t in existing if t in topics or t.startswith("budgetwatch-live")]
    if stale:
        admin.delete_topics(stale)
        time.sleep(3)
    admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    admin.close()

    port = free_port()
    env = {
        **os.environ,
        "BUDGETWATCH_KAFKA_BOOTSTRAP": BOOTSTRAP,
        "BUDGETWATCH_PARTITIONS": str(partitions),
        "BUDGETWATCH_STORE": "memory://",
        "BUDGETWATCH_CLOCK": "off",
        "BUDGETWATCH_WEB_PORT": str(port),
        "BUDGETWATCH_WEB_BIND": "127.0.0.1",
    }
    budgetwatch = str(Path(sys.executable).parent / "budgetwatch")
    app_id = f"budgetwatch-live-{uuid.uuid4().hex[:8]}"
    def faust_process(setup: str) -> subprocess.Popen[bytes]:
        """A Faust worker of the app ``setup`` binds to ``app``, in its own process."""
        code = (
            f"import sys; from faust.worker import Worker; {setup}; sys.argv = sys.argv[:1];"
            "Worker(app, loglevel='warning').execute_from_commandline()"
        )
        return subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    worker = faust_process(f"from streams.faust_app import BudgetApp; app = BudgetApp(app_id={app_id!r}).app")
    notifier_db = tmp_path / "notifier.db"
    notifier = faust_process(
        "from streams.faust_notifier import NotifierApp; from streams.settings import Settings;"
        f"from streams.store import Store; app = NotifierApp(Settings(web_port={free_port()}),"
        f" Store({str(notifier_db)!r}), app_id={app_id + '-notifier'!r}).app"
    )
    try:
        published = subprocess.run(
            [
                budgetwatch,
                "publish",
                str(year),
                "--bootstrap",
                BOOTSTRAP,
                "--as-of",
                AS_OF,
                "--json",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert published.returncode == 0, published.stderr
        counts = orjson.loads(published.stdout)
        assert counts["ticks"] == partitions and counts["rejected"] > 0

        consumer = KafkaConsumer(
            "budget-alerts",
            bootstrap_servers=BOOTSTRAP,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=5000,
        )
        got: dict[bytes, dict[str, Any]] = {}
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(got) < len(expected):
            for message in consumer:
                row = orjson.loads(message.value)
                assert row.pop("origin").startswith(("budget-events:", "budget-departments:")), row
                got[orjson.dumps(row, option=orjson.OPT_SORT_KEYS)] = row  # at-least-once: dedupe
            assert worker.poll() is None, worker.stdout.read().decode() if worker.stdout else ""
        consumer.close()
        assert canonical(list(got.values())) == canonical(expected)

        # caught up, the worker's own consumer reports every partition read to its end
        # (the end offsets behind budget_processing_lag_* on the stack)
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
            scraped = page.read().decode()
        lags = {
            sample.labels["partition"]: sample.value
            for family in text_string_to_metric_families(scraped)
            for sample in family.samples
            if sample.name == "budget_stream_consumer_lag_messages"
            and sample.labels["topic"] == "budget-events"
        }
        assert lags == {str(p): 0.0 for p in range(partitions)}, scraped

        # the notifier kept every transition once, in its own store
        stored: list[dict[str, Any]] = []
        while time.monotonic() < deadline and len(stored) < len(expected):
            assert notifier.poll() is None, notifier.stdout.read().decode() if notifier.stdout else ""
            time.sleep(1)
            if notifier_db.exists():
                with Store(notifier_db) as notes:
                    stored = [without_origin(d) for (d,) in notes.db.execute("SELECT data FROM transitions")]
        assert canonical(stored) == canonical(expected)
    finally:
        stop(notifier, timeout=30)
        stop(worker, timeout=30)
