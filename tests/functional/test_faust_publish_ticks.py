"""`budgetwatch publish --as-of`: a clock tick the broker refuses fails the command,
naming the partition whose clock did not move (as refused events do)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streams import cli_kafka
from streams.cli import app
from streams.cli_kafka import PublishError, TickFailures, publish_ticks
from streams.faust_state import CLOCK_KEY, EVENTS_TOPIC
from tests import builders as b


class Sent:
    """A kafka-python send future: a broker refusal is reported to the errback only."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    def add_errback(self, callback: Any) -> Sent:
        if self.error is not None:
            callback(self.error)
        return self


class Producer:
    """Four partitions; the tick for ``refuse`` is refused (NotLeaderForPartition)."""

    def __init__(self, refuse: int | None) -> None:
        self.refuse = refuse
        self.sent: list[tuple[str, str, int | None]] = []

    def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    def send(self, topic: str, key: str, value: bytes, partition: int | None = None) -> Sent:
        self.sent.append((topic, key, partition))
        refused = key == CLOCK_KEY and partition == self.refuse
        return Sent(RuntimeError("NotLeaderForPartitionError") if refused else None)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_refused_tick_is_collected_with_its_partition() -> None:
    failures = TickFailures()
    assert publish_ticks(Producer(refuse=2), dt.date(2025, 6, 30), failures) == 4
    assert failures.partitions == {2: "RuntimeError: NotLeaderForPartitionError"}


def publish(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, producer: Producer) -> Any:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b.jsonl([b.registered("P1"), b.approved("P1", "1000.00")]))
    monkeypatch.setattr(cli_kafka, "_producer", lambda bootstrap: producer)
    return CliRunner().invoke(app, ["publish", str(events), "--bootstrap", "localhost:9",
                                    "--as-of", "2025-06-30", "--allow-future", "--json"])


def test_publish_fails_when_the_broker_refuses_a_tick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    producer = Producer(refuse=1)
    result = publish(tmp_path, monkeypatch, producer)
    assert [p for _, key, p in producer.sent if key == CLOCK_KEY] == [0, 1, 2, 3]
    assert result.exit_code != 0
    assert isinstance(result.exception, PublishError)
    message = str(result.exception)
    assert message.startswith("时钟推进到 2025-06-30 未被 Kafka 确认")
    assert f"{EVENTS_TOPIC} 分区 1（" in message and "NotLeaderForPartitionError" in message
    assert message.endswith(f"（clock tick refused for {EVENTS_TOPIC} partitions 1）")
    assert '"ticks"' not in result.output  # no success report


def test_publish_reports_every_tick_when_the_broker_takes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = publish(tmp_path, monkeypatch, Producer(refuse=None))
    assert result.exit_code == 0, result.output
    assert '"ticks": 4' in result.output
