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
    expected, got = both_runtimes(tmp_path / "bw.db", [
        (before, ["2026-01-05"]), (late, ["2026-01-06"]), (next_year, ["2026-01-07"])])
    on_late_day = {(t["rule"], t["subject_id"], t["transition"]) for t in expected if t["date"] == "2026-01-05"}
    assert on_late_day >= {("low_execution", "P1", "resolved"), ("overspend", "P2", "firing"),
                           ("department_low_execution", "D01", "resolved")}
    assert not [t for t in expected if t["date"] > "2026-01-05"]
    assert canonical(got) == canonical(expected)


def both_runtimes(
    db: Path, steps: list[tuple[list[dict[str, Any]], list[str]]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The transitions of the embedded engine (store ``db``) and of the Faust agents (two
    partitions), each fed ``steps`` of (events, days to run to). Events arriving after the
    clock are applied at it before the next day closes: the agents get a tick of the
    clock's day again, as the engine's next run applies them there."""
    from tests import builders as b

    profile = load_profile("baseline")
    with Store(str(db)) as store:
        engine = Engine(store, profile, dispositions=False)  # Faust has no disposition loop
        for events, days in steps:
            ingest(store, read_lines(events))
            for when in days:
                engine.run(to_day(parse_day(when)))
        expected = [{k: v for k, v in r.items() if not k.startswith("_")} for r in store.transition_rows()]
    bapp, outlet = make_app(profile, partitions=2)

    async def scenario() -> list[dict[str, Any]]:
        clock: str | None = None
        async with running(bapp, outlet) as h:
            for events, days in steps:
                await h.publish(b.jsonl(events).splitlines())
                for when in ([clock] if clock else []) + days:
                    await h.tick(when)
                clock = days[-1]
            return list(h.alerts)

    return expected, asyncio.run(scenario())


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
    expected, got = both_runtimes(tmp_path / "bw.db", [
        (before, ["2026-01-20"]), (late, ["2026-01-21", "2026-02-05"]), (after_close, ["2026-02-06"])])
    with Store(str(tmp_path / "bw.db")) as store:
        assert store.alert_rows(status="firing") == []
        status = Engine(store, load_profile("baseline"), dispositions=False).status(2025)
        assert status["projects"][1]["paid"] == "900.00"  # the payment after the close counts
    assert ("stalled", "P1", "resolved") in {
        (t["rule"], t["subject_id"], t["transition"]) for t in expected if t["date"] == "2026-01-20"}
    closing = [t for t in expected if t["date"] == "2026-01-31"]
    assert {t.get("reason") for t in closing} == {YEAR_CLOSED}
    assert {(t["rule"], t["subject_id"]) for t in closing} >= {
        ("low_execution", "P1"), ("low_execution", "P2"), ("stalled", "P2"), ("department_low_execution", "D01")}
    p1 = next(t for t in closing if (t["rule"], t["subject_id"]) == ("low_execution", "P1"))
    assert p1["figures"]["execution_rate"] == 0.25  # the late December payment counts
    assert not [t for t in expected if t["date"] > "2026-01-31"]
    assert canonical(got) == canonical(expected)


def test_workers_upgraded_after_the_close_day_end_the_year_on_their_next_tick() -> None:
    """Workers check no profile fingerprint: project partitions that passed 01-31 under a
    policy without the close (the previous release) and restored with it end the year's
    alerts on their next tick (review; department partitions: test_faust_departments)."""
    from alerts.lifecycle import YEAR_CLOSED
    from alerts.profile import profile_from_mapping
    from tests import builders as b

    never = profile_from_mapping({**load_profile("baseline").model_dump(), "year_end": {"closes_on": None}})
    bapp, outlet = make_app(never, partitions=2)
    events = [b.registered("P1"), b.approved("P1", "1000000"), b.registered("P2"), b.approved("P2", "1000000")]

    async def scenario() -> None:
        async with running(bapp, outlet) as h:
            await h.publish(b.jsonl(events).splitlines())
            await h.tick("2026-02-10")

    asyncio.run(scenario())
    profile = load_profile("baseline")
    projects = [ProjectPartition.restore(p, profile, list(table_items(bapp.projects_table))) for p in range(2)]
    firing = {a.alert_id for p in projects for a in p.monitor.book.active()}
    assert firing
    closed = [t for p in projects for t in p.tick(10_000, to_day(parse_day("2026-03-01"))).transitions]
    assert {t.alert.alert_id for t in closed} == firing
    assert {(t.on, t.reason) for t in closed} == {(to_day(parse_day("2026-02-11")), YEAR_CLOSED)}
    assert not [a for p in projects for a in p.monitor.book.active()]


def test_januarys_money_is_kept_apart_from_dec_31s_sums_in_both_runtimes(tmp_path: Path) -> None:
    """A January payment of a 2025 project is processed, then a December voucher arrives:
    judged again as of Dec 31, and closed on Jan 31, on Dec 31's sums (21%, and 25.5% for
    the department), by the project partitions and the department partitions alike."""
    from tests import builders as b

    year = [
        b.registered("X1"), b.approved("X1", "1000000"), b.payment("X1", "200000", on="2025-03-01"),
        b.registered("X2"), b.approved("X2", "1000000"), b.payment("X2", "300000", on="2025-03-01"),
    ]
    january = [b.payment("X1", "200000", on="2026-01-10", event_id="jan-X1")]
    voucher = [b.payment("X1", "10000", on="2025-12-30", event_id="voucher-X1")]
    expected, got = both_runtimes(tmp_path / "bw.db", [
        (year, ["2025-12-31"]), (january, ["2026-01-10"]), (voucher, ["2026-01-11", "2026-02-05"])])
    closing = {(t["rule"], t["subject_id"]): t for t in expected if t.get("reason") == "year_closed"}
    assert closing[("low_execution", "X1")]["figures"]["execution_rate"] == 0.21
    department = closing[("department_low_execution", "D01")]
    assert (department["figures"]["execution_rate"], department["figures"]["as_of"]) == (0.255, "2025-12-31")
    assert canonical(got) == canonical(expected)


def test_a_department_renamed_later_keeps_its_name_on_earlier_alerts_in_both_runtimes(tmp_path: Path) -> None:
    """A tick covering a rename dated 07-01 named the department's 06-30 alert by it on
    the Faust side: the name was taken when the delta came, not on its day (review)."""
    from tests import builders as b

    events = [b.registered("P1", department_id="D2", department_name="水务局"), b.approved("P1", "1000.00"),
              b.payment("P1", "100.00", on="2025-02-01"),
              b.registered("P1", on="2025-07-01", department_id="D2", department_name="水利局", event_id="REG-2")]
    expected, got = both_runtimes(tmp_path / "bw.db", [(events, ["2025-12-20"])])

    def names(rows: list[dict[str, Any]]) -> set[str]:
        return {t["department_name"] for t in rows
                if t["rule"] == "department_low_execution" and t["transition"] == "firing"}

    assert names(got) == names(expected) == {"水务局"}


def test_a_superseded_registration_names_its_department_in_both_runtimes(tmp_path: Path) -> None:
    from tests import builders as b

    base = [b.registered("P1", department_id="D1", department_name="教育局"), b.approved("P1", "1000.00"),
            b.registered("P2", department_id="D1", department_name="教育局"), b.approved("P2", "1000.00")]
    move = [b.registered("P1", on="2025-02-10", department_id="D2", department_name="水务局", event_id="MOVE")]
    rename = [b.registered("P1", on="2025-02-01", department_id="D1", department_name="教育体育局", event_id="RENAME")]
    expected, got = both_runtimes(tmp_path / "bw.db", [(base, ["2025-03-01"]), (move, ["2025-03-02"]),
                                                       (rename, ["2025-03-03", "2025-07-01"])])

    def names(rows: list[dict[str, Any]]) -> set[str]:
        return {t["department_name"] for t in rows if t["subject_id"] == "D1" and t["transition"] == "firing"}

    assert names(got) == names(expected) == {"教育体育局"}


def test_the_stall_clock_starts_at_the_first_budget_in_both_runtimes(tmp_path: Path) -> None:
    """Funded by 追加 alone, A never stalled; B's corrected approval (03-15) restarted its
    clock. Both count from the first day they had a budget, in both runtimes."""
    from tests import builders as b

    events = [
        b.registered("A"), b.adjusted("A", "1000.00", on="2025-01-05"),
        b.registered("B"), b.approved("B", "1000.00", on="2025-03-15", event_id="B-APPR-2"),
        b.approved("B", "1000.00", on="2025-01-01", event_id="B-APPR-1"),  # arrives after its correction
    ]
    expected, got = both_runtimes(tmp_path / "bw.db", [(events, ["2025-07-10"])])
    stalled = {t["subject_id"]: t for t in expected if t["rule"] == "stalled" and t["transition"] == "firing"}
    assert (stalled["A"]["date"], stalled["B"]["date"]) == ("2025-04-05", "2025-04-01")
    assert stalled["B"]["figures"]["days_without_payment"] == 90
    assert canonical(got) == canonical(expected)
