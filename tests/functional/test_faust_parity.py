"""The same generated year through the Faust agents and through the embedded engine
gives exactly the same alerts (every transition, to the day) and the same status."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from budget.calendar import to_day
from budget.events import parse_day
from connectors.files import read_events
from connectors.profiles import load_profile
from connectors.synthetic import Spec, generate
from streams.alert_sink import TRANSITION_ONLY
from streams.engine import Engine
from streams.faust_app import table_items
from streams.faust_state import DepartmentPartition, ProjectPartition, status_of
from streams.ingest import ingest
from streams.store import Store
from tests.functional.faust_harness import make_app, running

AS_OF = "2025-09-30"


def canonical(rows: list[dict[str, Any]]) -> list[bytes]:
    return sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rows)


def final_alerts(transitions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The alert as it stands after its last transition: what `alerts --json` lists."""
    last: dict[str, dict[str, Any]] = {}
    for t in transitions:
        last[t["alert_id"]] = {k: v for k, v in t.items() if k not in TRANSITION_ONLY}
    return list(last.values())


@pytest.fixture(scope="module")
def year(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("year") / "year.jsonl"
    path.write_bytes(b"\n".join(generate(Spec(projects=200, seed=11))) + b"\n")
    return path


@pytest.fixture(scope="module")
def embedded(year: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    profile = load_profile("baseline")
    with Store(str(tmp_path_factory.mktemp("db") / "bw.db")) as store:
        counts = ingest(store, read_events(year))
        engine = Engine(store, profile, dispositions=False)  # Faust has no disposition loop
        engine.run(to_day(parse_day(AS_OF)))
        return {
            "transitions": [
                {k: v for k, v in r.items() if not k.startswith("_")}
                for r in store.transition_rows()
            ],
            "alerts": store.alert_rows(),
            "status": engine.status(),
            "rejected": counts.rejected,
        }


@pytest.fixture(scope="module")
def distributed(year: Path) -> dict[str, Any]:
    profile = load_profile("baseline")
    bapp, outlet = make_app(profile, partitions=4)

    async def scenario() -> dict[str, Any]:
        async with running(bapp, outlet) as h:
            await h.publish(year.read_bytes().splitlines())
            await h.tick(AS_OF)
            return {"alerts": list(h.alerts), "dead_letters": list(h.dead_letters)}

    result = asyncio.run(scenario())
    # Rebuild every partition from the changelog-backed tables alone, as a new
    # worker would after a restart or a rebalance.
    projects = list(table_items(bapp.projects_table))
    departments = list(table_items(bapp.departments_table))
    result["projects"] = [ProjectPartition.restore(p, profile, projects) for p in range(4)]
    result["departments"] = [
        DepartmentPartition.restore(p, profile, 4, departments) for p in range(4)
    ]
    return result


def test_every_transition_is_the_same_to_the_day(
    embedded: dict[str, Any], distributed: dict[str, Any]
) -> None:
    assert len(embedded["transitions"]) > 100, "the year should raise plenty of alerts"
    rules = {t["rule"] for t in embedded["transitions"]}
    assert {"low_execution", "department_low_execution", "stalled"} <= rules
    assert canonical(distributed["alerts"]) == canonical(embedded["transitions"])


def test_alerts_json_is_the_same(embedded: dict[str, Any], distributed: dict[str, Any]) -> None:
    assert canonical(final_alerts(distributed["alerts"])) == canonical(embedded["alerts"])


def test_tables_hold_the_same_alerts(embedded: dict[str, Any], distributed: dict[str, Any]) -> None:
    """Project values keep the alerts still open (a resolved one is never read again
    here: a new episode sets every field), exactly as the embedded store has them."""
    projects = [a.to_json() for p in distributed["projects"] for a in p.monitor.book.alerts.values()]
    open_in_store = [a for a in embedded["alerts"] if a["subject_type"] == "project" and a["status"] != "resolved"]
    assert any(a["status"] == "resolved" for a in embedded["alerts"]), "the year should resolve some alerts"
    assert canonical(projects) == canonical(open_in_store)
    kept_ids = {a.alert_id for p in distributed["projects"] for a in p.monitor.book.active()}
    assert kept_ids == {a["alert_id"] for a in open_in_store}
    departments = [a.to_json() for d in distributed["departments"] for a in d.judge.book.alerts.values()]
    assert canonical(departments) == canonical(
        [a for a in embedded["alerts"] if a["subject_type"] == "department"]
    )


def test_status_is_the_same(embedded: dict[str, Any], distributed: dict[str, Any]) -> None:
    status = status_of(distributed["projects"])
    assert status == embedded["status"]
    by_id = {d["department_id"]: d for d in embedded["status"]["departments"]}
    rolled = {
        t.department_id: t
        for part in distributed["departments"]
        for t in part.totals.values()
        if t.projects
    }
    assert set(rolled) == set(by_id)
    for dept_id, totals in rolled.items():
        assert (totals.budget, totals.paid, totals.projects) == (
            round(float(by_id[dept_id]["budget"]) * 100),
            round(float(by_id[dept_id]["paid"]) * 100),
            by_id[dept_id]["projects"],
        ), dept_id


def test_rejected_input_is_accounted_the_same(
    embedded: dict[str, Any], distributed: dict[str, Any]
) -> None:
    assert embedded["rejected"] > 0
    assert len(distributed["dead_letters"]) == embedded["rejected"]
    assert all(
        d["reason"] and d["source"].startswith("budget-events:")
        for d in distributed["dead_letters"]
    )


def test_late_events_after_the_year_end_give_the_same_transitions(tmp_path: Path) -> None:
    """December's payments arriving in January: both runtimes judge them as of 12-31,
    projects and departments alike, and date the transitions the day they are applied."""
    from tests import builders as b

    before = [
        b.registered("P1"), b.approved("P1", "1000.00"), b.payment("P1", "100.00", on="2025-03-01"),
        b.registered("P2"), b.approved("P2", "1000.00"), b.payment("P2", "200.00", on="2025-03-01"),
    ]
    late = [b.payment("P1", "900.00", on="2025-12-28", event_id="late-P1"),
            b.payment("P2", "900.00", on="2025-12-29", event_id="late-P2")]
    # late too, but dated in the next year: it changes no 2025 alert, project or department
    next_year = [b.reversal("P1", "900.00", on="2026-01-02", event_id="next-year-P1"),
                 b.reversal("P2", "1000.00", on="2026-01-02", event_id="next-year-P2")]
    profile = load_profile("baseline")
    with Store(str(tmp_path / "bw.db")) as store:
        engine = Engine(store, profile, dispositions=False)
        ingest(store, read_lines(before))
        engine.run(to_day(parse_day("2026-01-05")))
        ingest(store, read_lines(late))
        engine.run(to_day(parse_day("2026-01-06")))
        ingest(store, read_lines(next_year))
        engine.run(to_day(parse_day("2026-01-07")))
        expected = [{k: v for k, v in r.items() if not k.startswith("_")} for r in store.transition_rows()]
    on_late_day = {(t["rule"], t["subject_id"], t["transition"]) for t in expected if t["date"] == "2026-01-05"}
    assert on_late_day >= {("low_execution", "P1", "resolved"), ("overspend", "P2", "firing"),
                           ("department_low_execution", "D01", "resolved")}
    assert not [t for t in expected if t["date"] > "2026-01-05"]
    bapp, outlet = make_app(profile, partitions=2)

    async def scenario() -> list[dict[str, Any]]:
        async with running(bapp, outlet) as h:
            await h.publish(b.jsonl(before).splitlines())
            await h.tick("2026-01-05")
            await h.publish(b.jsonl(late).splitlines())
            await h.tick("2026-01-05")
            await h.tick("2026-01-06")
            await h.publish(b.jsonl(next_year).splitlines())
            await h.tick("2026-01-06")
            await h.tick("2026-01-07")
            return list(h.alerts)

    assert canonical(asyncio.run(scenario())) == canonical(expected)


def read_lines(events: list[dict[str, Any]]) -> Any:
    from connectors.jsonl import parse_lines
    from tests import builders as b

    return parse_lines(b.jsonl(events).splitlines(), "test.jsonl")


def test_the_years_close_ends_the_same_alerts_in_both_runtimes(tmp_path: Path) -> None:
    """On Jan 31 (profile.year_end) both runtimes end what of the closed year still fires,
    projects (project partitions) and departments (department partitions) alike, with the
    year-end figures a late December payment changed; a late payment after the close
    changes figures only."""
    from alerts.lifecycle import YEAR_CLOSED
    from tests import builders as b

    before = [
        b.registered("P1"), b.approved("P1", "1000.00"), b.payment("P1", "100.00", on="2025-03-01"),
        b.registered("P2"), b.approved("P2", "1000.00"),
    ]
    late = [b.payment("P1", "150.00", on="2025-12-28", event_id="late-P1")]
    after_close = [b.payment("P2", "900.00", on="2025-12-29", event_id="after-close-P2")]
    profile = load_profile("baseline")
    with Store(str(tmp_path / "bw.db")) as store:
        engine = Engine(store, profile, dispositions=False)
        ingest(store, read_lines(before))
        engine.run(to_day(parse_day("2026-01-20")))
        ingest(store, read_lines(late))
        engine.run(to_day(parse_day("2026-01-21")))
        engine.run(to_day(parse_day("2026-02-05")))
        ingest(store, read_lines(after_close))
        engine.run(to_day(parse_day("2026-02-06")))
        expected = [{k: v for k, v in r.items() if not k.startswith("_")} for r in store.transition_rows()]
        assert store.alert_rows(status="firing") == []
        assert engine.status(2025)["projects"][1]["paid"] == "900.00"
    assert ("stalled", "P1", "resolved") in {
        (t["rule"], t["subject_id"], t["transition"]) for t in expected if t["date"] == "2026-01-20"}
    closing = [t for t in expected if t["date"] == "2026-01-31"]
    assert {t.get("reason") for t in closing} == {YEAR_CLOSED}
    assert {(t["rule"], t["subject_id"]) for t in closing} >= {
        ("low_execution", "P1"), ("low_execution", "P2"), ("stalled", "P2"), ("department_low_execution", "D01")}
    p1 = next(t for t in closing if (t["rule"], t["subject_id"]) == ("low_execution", "P1"))
    assert p1["figures"]["execution_rate"] == 0.25  # the late December payment counts
    assert not [t for t in expected if t["date"] > "2026-01-31"]
    bapp, outlet = make_app(profile, partitions=2)

    async def scenario() -> list[dict[str, Any]]:
        async with running(bapp, outlet) as h:
            await h.publish(b.jsonl(before).splitlines())
            await h.tick("2026-01-20")
            await h.publish(b.jsonl(late).splitlines())
            await h.tick("2026-01-20")
            await h.tick("2026-01-21")
            await h.tick("2026-02-05")
            await h.publish(b.jsonl(after_close).splitlines())
            await h.tick("2026-02-05")
            await h.tick("2026-02-06")
            return list(h.alerts)

    assert canonical(asyncio.run(scenario())) == canonical(expected)
