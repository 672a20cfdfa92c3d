"""The Kafka-side commands' checks before any broker is contacted (there is none here:
the live path is tests/integration/test_kafka_live.py)."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streams.cli import app as cli_app
from streams.cli_kafka import PublishError, SendFailures, publish_parsed, wait_for_broker
from streams.ingest import IngestCounts
from streams.settings import bootstrap_servers
from tests import builders as b


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("text", ["localhost:notaport", ",", ":9092", "kafka", "kafka:0", "kafka:70000"])
def test_a_bad_bootstrap_is_named_in_chinese(text: str) -> None:
    with pytest.raises(ValueError, match="Kafka 地址") as caught:
        bootstrap_servers(text)
    assert "\n" not in str(caught.value)


def test_good_bootstraps_are_listed() -> None:
    assert bootstrap_servers(" kafka:9092, k2:19092 ") == ["kafka:9092", "k2:19092"]


def test_publish_refuses_a_missing_file_before_connecting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = tmp_path / "good.jsonl"
    good.write_bytes(b.jsonl([b.registered("P")]))
    contacted: list[str] = []
    monkeypatch.setattr("streams.cli_kafka._producer", lambda server: contacted.append(server))
    result = CliRunner().invoke(cli_app, ["publish", str(good), str(tmp_path / "nosuch.jsonl"),
                                          "--bootstrap", "127.0.0.1:9092"])
    assert result.exit_code != 0
    assert "nosuch.jsonl" in str(result.exception) and "均未导入" in str(result.exception)
    assert contacted == []  # nothing was sent from good.jsonl either


def test_publish_refuses_a_tick_past_today_before_connecting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every partition's clock would jump to the typo's date, and a worker's clock never
    goes back."""
    good = tmp_path / "good.jsonl"
    good.write_bytes(b.jsonl([b.registered("P")]))
    contacted: list[str] = []
    monkeypatch.setattr("streams.cli_kafka._producer", lambda server: contacted.append(server))
    result = CliRunner().invoke(cli_app, ["publish", str(good), "--as-of", "2095-09-30",
                                          "--bootstrap", "127.0.0.1:9092"])
    assert result.exit_code == 2 and "晚于今天" in result.output and "--allow-future" in result.output
    assert contacted == []


def test_worker_flags_are_validated_like_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from streams.cli_kafka import _kafka_settings

    for port in (0, -5, 99999):
        with pytest.raises(ValidationError, match="web_port"):
            _kafka_settings(None, port)
    with pytest.raises(ValidationError, match="Kafka 地址"):
        _kafka_settings("localhost:abc", None)
    monkeypatch.setenv("BUDGETWATCH_WEB_PORT", "99999")
    with pytest.raises(ValidationError, match="web_port"):
        _kafka_settings(None, None)
    monkeypatch.setenv("BUDGETWATCH_WEB_PORT", "6070")
    assert _kafka_settings("k:1", 6071).web_port == 6071


def test_a_worker_with_no_broker_stops_with_one_line(tmp_path: Path) -> None:
    port = closed_port()
    started = time.monotonic()
    with pytest.raises(PublishError) as caught:
        wait_for_broker(f"127.0.0.1:{port}", seconds=1.5)
    assert time.monotonic() - started >= 1.5
    assert "无法连接 Kafka" in str(caught.value) and "\n" not in str(caught.value)


def test_a_worker_waits_for_a_broker_that_listens(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        wait_for_broker(f"127.0.0.1:{closed_port()},127.0.0.1:{server.getsockname()[1]}", seconds=0)


class RefusingProducer:
    """A producer whose sends fail on the broker's side, as kafka-python reports them:
    on each send's future, never by raising from send or flush."""

    class Future:
        def add_errback(self, callback: Any) -> None:
            callback(RuntimeError("NotEnoughReplicas"))

    def send(self, topic: str, **kwargs: Any) -> RefusingProducer.Future:
        return self.Future()


def test_sends_the_broker_refuses_are_counted() -> None:
    from connectors.jsonl import parse_lines

    failures = SendFailures()
    counts = IngestCounts()
    lines = b.jsonl([b.registered("P"), b.approved("P", "1000")]).splitlines()
    publish_parsed(RefusingProducer(), parse_lines(lines, "t.jsonl"), counts, failures=failures)
    assert counts.applied == 2 and failures.count == 2
    assert failures.first == "RuntimeError: NotEnoughReplicas"
