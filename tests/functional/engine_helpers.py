from __future__ import annotations

from pathlib import Path
from typing import Any

from connectors.jsonl import parse_lines
from connectors.profiles import load_profile
from streams.engine import Engine
from streams.ingest import IngestCounts, ingest
from streams.store import Store
from tests.builders import jsonl


def ingest_events(store: Store, events: list[dict[str, Any]], origin: str = "test.jsonl") -> IngestCounts:
    return ingest(store, parse_lines(jsonl(events).splitlines(), origin))


def engine(path: Path | str, profile: str = "baseline", commit_every: int = 100_000) -> Engine:
    return Engine(Store(path), load_profile(profile), commit_every=commit_every)


def outcome(e: Engine) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(status, every transition, alerts) — what two runs must agree on."""
    return e.status(), e.store.transition_rows(), e.store.alert_rows()


def one_run(path: Path, events: list[dict[str, Any]], until: int) -> Engine:
    """An engine that took ``events`` at once and ran to ``until`` in one run: the
    reference runs resumed anywhere are held to."""
    e = engine(path)
    ingest_events(e.store, events)
    e.run(until)
    return e


def resumed(path: Path, stops: list[int], commit_every: int, until: int) -> tuple[Any, Any, Any]:
    """The outcome of runs stopped at ``stops`` — each in a new engine, as after a
    restart — then run on to ``until``."""
    for stop in sorted(stops):
        e = engine(path, commit_every=commit_every)
        e.run(stop)
        e.store.close()
    e = engine(path, commit_every=commit_every)
    e.run(until)
    return outcome(e)
