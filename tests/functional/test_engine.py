"""The embedded engine on a real SQLite file."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budget.calendar import iso
from connectors.profiles import load_profile
from streams.errors import ClockError, StoreError
from tests import builders as b
from tests.builders import day
from tests.functional.engine_helpers import engine, ingest_events, one_run, outcome, resumed
from tests.strategies import RUN_ENDS, deliveries, event_logs


def test_ingest_counts_and_idempotence(tmp_path: Path) -> None:
    e = engine(tmp_path / "bw.db")
    events = [b.registered("P"), b.approved("P", "1000"), b.payment("P", "10", on="2025-02-01")]
    first = ingest_events(e.store, [*events, events[2]])
    assert (first.read, first.applied, first.duplicates, first.rejected) == (4, 3, 1, 0)
    again = ingest_events(e.store, events)
    assert (again.read, again.applied, again.duplicates) == (3, 0, 3)
    assert e.store.event_count() == 3
    assert e.store.counters() == {"events_applied": 3, "events_duplicate": 4, "events_rejected": 0}


def test_bad_lines_are_kept_with_source_and_reason_and_nothing_else_is_lost(tmp_path: Path) -> None:
    e = engine(tmp_path / "bw.db")
    from connectors.jsonl import parse_lines
    from streams.ingest import ingest

    lines = [b'{"type":"payment"', b"", b'{"type":"payment","event_id":"x","occurred_on":"2025-01-02",'
             b'"project_id":"P","amount":"5"}', b'{"type":"refund","event_id":"y"}']
    counts = ingest(e.store, parse_lines(lines, "in.jsonl"))
    assert counts.read == counts.accepted + counts.rejected == 3
    rows = e.store.rejections()
    assert [r["source"] for r in rows] == ["in.jsonl:1", "in.jsonl:4"]
    assert "not valid JSON" in rows[0]["reason"] and rows[0]["raw"] == '{"type":"payment"'
    assert "unknown event type 'refund'" in rows[1]["reason"]


def test_a_stored_event_the_ledger_cannot_fold_is_dead_lettered_and_the_run_goes_on(tmp_path: Path) -> None:
    """An older release accepted "weight": 1e400 and stored it as null; every later run
    then died in the ledger. Now such a record is refused in context, once, with its
    reason, and the rest of the log is processed."""
    e = engine(tmp_path / "bw.db")
    ingest_events(e.store, [b.registered("P"), b.approved("P", "1000"), b.payment("P", "100", on="2025-02-01")])
    e.store.db.execute(
        "INSERT INTO events(event_id, type, day, project_id, amount, details, source) VALUES (?, ?, ?, ?, ?, ?, ?)",
        ("IND-1", "indicator_defined", day("2025-01-15"), "P", None,
         '{"indicator_id":"I1","name":"受益人数","target":100,"weight":null}', "old.jsonl:7"),
    )
    e.store.db.commit()
    e.run(day("2025-03-01"))
    p = e.status()["projects"][0]
    assert (p["paid"], p["performance_completion"]) == ("100.00", None)
    (refused,) = e.store.rejections()
    assert refused["source"] == "old.jsonl:7 (event_id IND-1)"
    assert "indicator_defined: cannot be applied" in refused["reason"] and '"weight":null' in refused["raw"]
    e.rebuild()
    e.run(day("2025-03-01"))
    assert len(e.store.rejections()) == 1  # a replay refuses it again but keeps one dead letter


def test_a_late_re_registration_judges_the_department_it_left_as_of_year_end(tmp_path: Path) -> None:
    """A re-registration dated in December, imported in January, moves P3 (no payment)
    from D01 to D02: D01's rate rises to 90% as of 12-31, yet only the department the
    project joined was judged again, so D01's alert stayed firing for good (audit; the
    Faust workers resolved it)."""
    e = engine(tmp_path / "bw.db")
    ingest_events(e.store, [
        b.registered("P1", department_id="D01"), b.approved("P1", "1000.00"),
        b.payment("P1", "900.00", on="2025-03-01"),
        b.registered("P3", department_id="D01"), b.approved("P3", "9000.00"),
        b.registered("P2", department_id="D02", department_name="卫健委"), b.approved("P2", "1000.00"),
        b.payment("P2", "900.00", on="2025-03-01"),
    ])
    e.run(day("2026-01-05"))
    department = "2025:department_low_execution:department:D01"
    assert e.store.alert_row(department)["status"] == "firing"  # type: ignore[index]
    ingest_events(e.store, [b.registered("P3", on="2025-12-20", department_id="D02", department_name="卫健委",
                                         event_id="P3-REG2")])
    e.run(day("2026-01-06"))
    row = e.store.alert_row(department)
    assert row is not None and row["status"] == "resolved" and row["updated_on"] == "2026-01-05"  # at the clock
    (resolved,) = [t for t in e.store.transition_rows()
                   if t["alert_id"] == department and t["transition"] == "resolved"]
    assert resolved["figures"]["execution_rate"] == 0.9  # D01 as of 12-31: 900 of 1,000


def test_a_late_december_payment_still_resolves_and_raises_alerts_after_the_year(tmp_path: Path) -> None:
    """December's treasury export arrives in January, after the clock left 2025: the
    alerts it changes are judged as of 12-31 and dated the day the events are applied."""
    e = engine(tmp_path / "bw.db")
    ingest_events(e.store, [
        b.registered("P1"), b.approved("P1", "1000.00"), b.payment("P1", "100.00", on="2025-03-01"),
        b.registered("P2"), b.approved("P2", "1000.00"), b.payment("P2", "900.00", on="2025-03-01"),
    ])
    e.run(day("2026-01-05"))
    firing = {(a["rule"], a["subject_id"]) for a in e.store.alert_rows() if a["status"] == "firing"}
    assert ("low_execution", "P1") in firing and ("department_low_execution", "D01") not in firing
    ingest_events(e.store, [b.payment("P1", "900.00", on="2025-12-28", event_id="late-P1"),
                            b.payment("P2", "300.00", on="2025-12-29", event_id="late-P2")], "late.jsonl")
    e.run(day("2026-01-06"))
    late = [t for t in e.store.transition_rows() if t["date"] == "2026-01-05"]
    kinds = {(t["rule"], t["subject_id"], t["transition"]) for t in late}
    assert ("low_execution", "P1", "resolved") in kinds
    assert ("overspend", "P2", "firing") in kinds
    overspend = next(t for t in late if t["rule"] == "overspend")
    assert overspend["figures"]["paid"] == "1200.00" and overspend["figures"]["time_progress"] == 1.0
    assert "截至2025-12-31" in overspend["message"]
    # no rule is due after the year: quiet months change no alert (deadlines still run),
    # and a payment dated in the next year, late or not, changes no year-end alert
    def rule_transitions() -> list[Any]:
        return [t for t in e.store.transition_rows() if not t["transition"].startswith("disposition")]

    before = rule_transitions()
    ingest_events(e.store, [b.registered("P3"), b.approved("P3", "1000.00"),
                            b.payment("P3", "100.00", on="2025-03-01")], "p3.jsonl")
    e.run(day("2026-01-10"))  # P3 (a late 2025 project) fires; nothing else changes
    before = rule_transitions()
    assert ("low_execution", "P3", "firing") in {(t["rule"], t["subject_id"], t["transition"]) for t in before}
    ingest_events(e.store, [b.payment("P3", "900.00", on="2026-01-08", event_id="next-year-late"),
                            b.payment("P3", "1.00", on="2026-01-20", event_id="next-year")], "2026.jsonl")
    e.run(day("2026-06-30"))
    after = rule_transitions()
    assert after[:len(before)] == before
    # the only later step is the year's close on 01-31 (profile.year_end): what still fired ends
    assert {(t["date"], t["transition"], t.get("reason")) for t in after[len(before):]} == {
        ("2026-01-31", "resolved", "year_closed")}
    assert {(t["rule"], t["subject_id"]) for t in after[len(before):]} >= {("low_execution", "P3")}


def test_a_project_code_registered_again_for_another_year_is_refused_not_merged(tmp_path: Path) -> None:
    """P1 registered for 2026 moved the 2025 project into 2026: its 2025 money counted in
    2026 (a false overspend) and left the 2025 sums. The second registration is refused."""
    e = engine(tmp_path / "bw.db")
    ingest_events(e.store, [
        b.registered("P1"), b.approved("P1", "1000.00"), b.payment("P1", "900.00", on="2025-03-01"),
        b.registered("P2"), b.approved("P2", "1200.00"),
        {**b.registered("P1", on="2026-01-02", event_id="P1@registered:2026"), "fiscal_year": 2026},
    ])
    e.run(day("2026-01-05"))
    status = e.status(2025)
    assert (status["region"]["budget"], status["region"]["paid"]) == ("2200.00", "900.00")
    assert [p["project_id"] for p in status["projects"]] == ["P1", "P2"]
    assert e.status(2026)["projects"] == []
    (refused,) = e.store.rejections()
    assert "registered for fiscal year 2025" in refused["reason"] and "P1-2026" in refused["reason"]
    assert not [a for a in e.store.alert_rows() if a["rule"] == "overspend"]


def test_a_new_year_sheet_reusing_codes_refuses_their_new_year_events_too(tmp_path: Path) -> None:
    """A 2026 projects sheet reusing 2025 codes: the registration was refused, but the
    approval on its row (and the 2026 payment beside it) went into the 2025 project — its
    budget replaced by the 2026 one (audit of the year rollover). They go with it, named;
    the 2025 project's late December payment in the same import still counts."""
    e = engine(tmp_path / "bw.db")
    ingest_events(e.store, [b.registered("P1"), b.approved("P1", "1000000.00"),
                            b.payment("P1", "100000.00", on="2025-03-01")])
    e.run(day("2025-12-31"))
    counts = ingest_events(e.store, [
        {**b.registered("P1", on="2026-01-05", event_id="P1@registered:2026"), "fiscal_year": 2026},
        b.approved("P1", "800000.00", on="2026-01-05", event_id="P1@approved:2026"),
        b.payment("P1", "80000.00", on="2026-02-01", event_id="PAY-2026"),
        b.payment("P1", "50000.00", on="2025-12-30", event_id="PAY-LATE"),  # 2025's, late
    ], "projects-2026.xlsx")
    assert (counts.read, counts.applied, counts.rejected) == (4, 1, 3)
    e.run(day("2026-01-10"))
    assert e.status(2025)["projects"][0]["budget"] == "1000000.00"
    assert e.status(2025)["projects"][0]["paid"] == "150000.00"
    reasons = {json.loads(r["raw"])["event_id"]: r["reason"] for r in e.store.rejections()}
    assert set(reasons) == {"P1@registered:2026", "P1@approved:2026", "PAY-2026"}
    assert reasons["P1@registered:2026"].startswith("project_registered: 项目编码 P1 已登记为 2025 年度项目")
    assert "的 2026 年度登记已被拒收" in reasons["P1@approved:2026"] and "P1-2026" in reasons["PAY-2026"]


def test_a_refused_registrations_own_row_goes_with_it_whatever_its_date(tmp_path: Path) -> None:
    """A 2026 projects sheet approved on 2025-12-20 reuses the 2025 code P5: its
    registration was refused, but its row's approval, dated before 2026, went into the
    2025 project and replaced its budget (a 20% rate, a low_execution alert and a
    reduction of last year's project). It goes with its registration now."""
    from connectors.files import read_events
    from streams.ingest import ingest

    e = engine(tmp_path / "bw.db")
    ingest_events(e.store, [b.registered("P5"), b.approved("P5", "300000.00"),
                            b.payment("P5", "100000.00", on="2025-03-01")])
    sheet = tmp_path / "projects-2026.csv"
    sheet.write_text("项目编码,项目名称,单位编码,单位名称,资金性质,年度,年初预算数,批复日期\n"
                     "P5,道路养护,D01,园区管理局,一般公共预算,2026,500000,2025-12-20\n"
                     "P6,新项目,D01,园区管理局,一般公共预算,2026,100000,2025-12-20\n", "utf-8")
    counts = ingest(e.store, read_events(sheet))
    assert (counts.read, counts.applied, counts.rejected) == (4, 2, 2)
    e.run(day("2025-12-31"))
    assert e.status(2025)["projects"][0]["budget"] == "300000.00"
    reasons = {json.loads(r["raw"])["event_id"]: r["reason"] for r in e.store.rejections()}
    assert set(reasons) == {"P5@registered:2026", "P5@approved:2026"}
    assert "的 2026 年度登记已被拒收" in reasons["P5@approved:2026"]
    # a row pasted twice: the refusal kept the last copy's row only, so the first copy's
    # approval went into 2025's project while ingest said it was refused (review)
    twice = tmp_path / "twice.csv"
    row = "P5,道路养护,D01,园区管理局,一般公共预算,2026,900000,2025-12-21"
    twice.write_text("项目编码,项目名称,单位编码,单位名称,资金性质,年度,年初预算数,批复日期\n"
                     f"{row}\nP7,新项目,D01,园区管理局,一般公共预算,2026,1,2025-12-21\n{row}\n", "utf-8")
    ingest(e.store, read_events(twice))
    e.run(day("2025-12-31"))
    assert e.status(2025)["projects"][0]["budget"] == "300000.00"


def test_a_refused_registration_takes_only_its_own_years_new_events(tmp_path: Path, monkeypatch: Any) -> None:
    """Reviewed: the refusal had no upper bound (an older year's refused row took the
    owner's own events), stopped at the ingest batch (an approval one record past a
    50,000-record batch went into last year's project) and reported events already
    logged as refused."""
    import streams.ingest

    e = engine(tmp_path / "bw.db")
    ingest_events(e.store, [{**b.registered("P1", on="2026-01-05", event_id="REG-2026"), "fiscal_year": 2026},
                            b.approved("P1", "1000000.00", on="2026-01-06", event_id="APP-2026")])
    counts = ingest_events(e.store, [
        {**b.registered("P1", on="2025-01-05", event_id="REG-2025"), "fiscal_year": 2025},
        b.payment("P1", "5000.00", on="2026-03-02", event_id="PAY-2026-03"),  # the owner's year
    ])
    assert (counts.applied, counts.rejected) == (1, 1)
    monkeypatch.setattr(streams.ingest, "BATCH", 2)
    ingest_events(e.store, [b.registered("Q1", event_id="Q1-REG"), b.approved("Q1", "1000.00")])
    ingest_events(e.store, [b.payment("Q1", "10.00", on="2026-02-02", event_id="Q1-PAY-2026")])  # logged first
    counts = ingest_events(e.store, [
        b.registered("X1", event_id="X1-REG"),
        {**b.registered("Q1", on="2026-01-05", event_id="Q1-REG-2026"), "fiscal_year": 2026},  # ends batch 1
        b.approved("Q1", "9000.00", on="2026-01-06", event_id="Q1-APP-2026"),  # batch 2
        b.payment("Q1", "10.00", on="2026-02-02", event_id="Q1-PAY-2026"),  # logged: a duplicate
    ])
    assert (counts.applied, counts.duplicates, counts.rejected) == (1, 1, 2)
    assert {r["source"] for r in counts.reasons} == {"test.jsonl:2", "test.jsonl:3"}


def test_the_first_logged_year_owns_a_project_code_in_a_live_run_and_a_replay(tmp_path: Path) -> None:
    """The 2026 registration dated before the 2025 one, arriving after it: a live run
    refused the 2026 one; a rebuild, meeting them in business order, made P1 a 2026
    project and dropped its alerts. Refused at ingest, it never enters the log."""
    e = engine(tmp_path / "bw.db")
    ingest_events(e.store, [b.registered("P1", on="2025-01-10"), b.approved("P1", "1000.00", on="2025-01-10"),
                            b.payment("P1", "100.00", on="2025-02-01")])
    e.run(day("2025-07-01"))
    counts = ingest_events(e.store, [{**b.registered("P1", on="2025-01-05", event_id="r26"), "fiscal_year": 2026}],
                           "late.jsonl")
    assert (counts.read, counts.applied, counts.duplicates, counts.rejected) == (1, 0, 0, 1)
    e.run(day("2025-07-02"))
    live = (e.status(2025)["projects"], e.store.alert_rows(), e.store.rejections())
    e.rebuild()
    e.run(day("2025-07-02"))
    assert (e.status(2025)["projects"], e.store.alert_rows(), e.store.rejections()) == live
    (refused,) = live[2]
    assert refused["source"] == "late.jsonl:1" and "registered for fiscal year 2025" in refused["reason"]
    assert {a["rule"] for a in live[1] if a["status"] == "firing"} >= {"low_execution"}


def test_an_event_id_reused_for_other_content_is_a_dead_letter_not_a_duplicate(tmp_path: Path) -> None:
    """Voucher 0001 of unit B (P7, 90,000) was dropped as a duplicate of unit A's 0001
    (P1, 100): money in neither the log nor the dead letters."""
    e = engine(tmp_path / "bw.db")
    first = [b.registered("P1"), b.approved("P1", "1000"), b.payment("P1", "100.00", on="2025-03-01", event_id="0001")]
    counts = ingest_events(e.store, first, "unit-a.jsonl")
    assert (counts.applied, counts.duplicates, counts.rejected) == (3, 0, 0)
    again = ingest_events(e.store, first, "unit-a-again.jsonl")  # the same events: plain duplicates
    assert (again.applied, again.duplicates, again.rejected) == (0, 3, 0)
    other = [b.payment("P7", "90000.00", on="2025-03-02", event_id="0001"),
             b.payment("P7", "5.00", on="2025-03-02", event_id="0002"),
             b.payment("P7", "5.00", on="2025-03-02", event_id="0002")]  # twice in one batch: a duplicate
    counts = ingest_events(e.store, other, "unit-b.jsonl")
    assert (counts.read, counts.applied, counts.duplicates, counts.rejected) == (3, 1, 1, 1)
    assert counts.read == counts.accepted + counts.rejected
    (refused,) = e.store.rejections()
    assert refused["source"] == "unit-b.jsonl:1"
    assert "'0001' is already logged with other content (from unit-a.jsonl:3)" in refused["reason"]
    assert refused["reason"].startswith("事件编号 '0001' 已用于另一条内容不同的事件（见 unit-a.jsonl:3）")
    assert '"project_id":"P7"' in refused["raw"] and '"amount":"90000.00"' in refused["raw"]
    assert e.store.counters() == {"events_applied": 4, "events_duplicate": 4, "events_rejected": 1}
    # the same line of the same file, read differently by a newer release, is still a duplicate
    e.store.db.execute("UPDATE events SET day = day - 1 WHERE event_id = '0002'")
    again = ingest_events(e.store, other[:2], "unit-b.jsonl")  # 0001 still conflicts with unit A's
    assert (again.duplicates, again.rejected) == (1, 1)
    # but a file re-exported under the same name with another amount on that line is not the same
    changed = [{**other[0], "event_id": "0009"}, {**other[1], "amount": "6.00"}]
    again = ingest_events(e.store, changed, "unit-b.jsonl")
    assert (again.applied, again.duplicates, again.rejected) == (1, 0, 1)


def test_status_figures_and_a_region_rate_to_two_decimals(tmp_path: Path) -> None:
    e = engine(tmp_path / "bw.db")
    ingest_events(e.store, [
        b.registered("A"), b.approved("A", "1234567.89"), b.payment("A", "456789.12", on="2025-03-01"),
        b.registered("B", department_id="D02", department_name="教育局"), b.approved("B", "765432.11"),
        b.payment("B", "543210.88", on="2025-04-01"), b.reversal("B", "10.00", on="2025-04-02"),
    ])
    e.run(day("2025-09-30"))
    status = e.status()
    assert status["as_of"] == "2025-09-30"
    assert status["region"]["budget"] == "2000000.00"
    assert status["region"]["paid"] == "999990.00"
    assert round(status["region"]["execution_rate"], 2) == 0.50
    assert status["region"]["time_progress"] == round(273 / 365, 6)
    assert [d["department_id"] for d in status["departments"]] == ["D01", "D02"]
    project = next(p for p in status["projects"] if p["project_id"] == "B")
    assert project["paid"] == "543200.88" and project["fund_source"] == "general"


def test_the_clock_never_goes_back(tmp_path: Path) -> None:
    e = engine(tmp_path / "bw.db")
    ingest_events(e.store, [b.registered("P"), b.approved("P", "1000")])
    e.run(day("2025-07-01"))
    with pytest.raises(ClockError, match="already at 2025-07-01"):
        e.run(day("2025-06-01"))


def test_a_different_profile_is_refused_until_rebuild(tmp_path: Path) -> None:
    path = tmp_path / "bw.db"
    e = engine(path)
    ingest_events(e.store, [b.registered("P"), b.approved("P", "1000")])
    e.run(day("2025-07-01"))
    other = engine(path, "provincial")
    with pytest.raises(StoreError, match="--rebuild"):
        other.run(day("2025-08-01"))
    other.rebuild()
    other.run(day("2025-08-01"))
    assert {a["severity"] for a in other.store.alert_rows(status="firing") if a["rule"] == "low_execution"} == {
        "critical"}


def test_only_a_run_records_the_profile_so_reading_first_cannot_mix_two_policies(tmp_path: Path) -> None:
    path = tmp_path / "bw.db"
    reader = engine(path)  # baseline
    ingest_events(reader.store, [b.registered("P"), b.approved("P", "1000")])
    with pytest.raises(ClockError):
        reader.status()  # `budgetwatch status` before any run
    assert reader.store.meta("profile") is None
    provincial = engine(path, "provincial")
    provincial.run(day("2025-05-31"))
    assert (provincial.store.meta("profile") or "").startswith("provincial:")
    provincial.run(day("2025-06-30"))  # the same policy goes on
    with pytest.raises(StoreError, match="provincial"):
        engine(path).run(day("2025-09-30"))  # baseline now would judge provincial alerts


def test_a_rebuild_under_another_profile_is_not_replayed_by_serve_meanwhile(tmp_path: Path) -> None:
    """`run --rebuild --profile provincial` wiped the derived state; serve (baseline)
    woke first and replayed the whole log under baseline, and the rebuild then failed,
    telling the user to rebuild (audit of serve beside the CLI)."""
    path = tmp_path / "bw.db"
    served = engine(path)
    ingest_events(served.store, [b.registered("P"), b.approved("P", "1000")])
    served.run(day("2025-06-30"))
    rebuilding = engine(path, "provincial")
    rebuilding.rebuild()
    with pytest.raises(StoreError, match="正按策略 'provincial' 从日志重算"):
        served.run(day("2025-06-30"))  # serve's next wake-up, in between
    rebuilding.run(day("2025-06-30"))
    assert (rebuilding.store.meta("profile") or "").startswith("provincial:")
    with pytest.raises(StoreError, match="现有结果按策略 'provincial'"):
        served.run(day("2025-06-30"))


def test_a_rebuild_by_another_process_is_noticed_even_on_the_same_cursor(tmp_path: Path) -> None:
    """`serve` holds an engine; `run --rebuild --profile provincial` replays the same log
    to the same day, so the cursor is where serve left it."""
    path = tmp_path / "bw.db"
    served = engine(path)
    ingest_events(served.store, [b.registered("P"), b.approved("P", "1000")])
    served.run(day("2025-06-30"))
    before = served.store.position()
    rebuilt = engine(path, "provincial")
    rebuilt.rebuild()
    rebuilt.run(day("2025-06-30"))
    after = served.store.position()
    assert after[:2] == before[:2] and after[2] == before[2] + 1
    with pytest.raises(StoreError, match="--rebuild"):
        served.load()
    with pytest.raises(StoreError, match="--rebuild"):
        served.run(day("2025-07-31"))


def test_events_after_as_of_wait_for_a_later_run(tmp_path: Path) -> None:
    e = engine(tmp_path / "bw.db")
    ingest_events(e.store, [b.registered("P"), b.approved("P", "1000"), b.payment("P", "900", on="2025-08-01")])
    e.run(day("2025-07-01"))
    assert e.status()["region"]["paid"] == "0.00"
    e.run(day("2025-08-31"))
    assert e.status()["region"]["paid"] == "900.00"


def _year_of_two_projects() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for pid in ("A", "B"):
        events += [b.registered(pid), b.approved(pid, "1000")]
        events += [b.payment(pid, "10", on=f"2025-{m:02d}-10") for m in (2, 5, 8, 11)]
    return events


def test_an_error_mid_run_commits_nothing_of_its_batch_and_the_next_run_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = engine(tmp_path / "one.db")
    ingest_events(reference.store, _year_of_two_projects())
    reference.run(day("2025-12-31"))

    path = tmp_path / "bw.db"
    e = engine(path, commit_every=4)
    ingest_events(e.store, _year_of_two_projects())
    real_pending = e.store.pending

    # The error comes from the log's reader, not the monitor: a compiled monitor's methods
    # cannot be patched (compiled_core), and the batch is open either way.
    def failing_pending(*args: Any) -> Iterator[Any]:
        for seen, record in enumerate(real_pending(*args), start=1):
            if seen == 9:  # the disk fails, a bug: any error inside a batch
                raise OSError("disk full")
            yield record

    monkeypatch.setattr(e.store, "pending", failing_pending)
    with pytest.raises(OSError, match="disk full"):
        e.run(day("2025-12-31"))
    assert not e.store.db.in_transaction
    clock, _ = e.store.cursor()
    assert clock is not None and clock < day("2025-12-31")
    committed = e.store.transition_rows()
    # Nothing after the last committed clock was written: the open batch was rolled back.
    assert all(t["date"] <= iso(clock) for t in committed)
    e.store.close()

    again = engine(path, commit_every=4)
    again.run(day("2025-12-31"))
    assert outcome(again) == outcome(reference)


def test_the_default_cadence_spaces_commits_with_the_number_of_projects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams import engine as engine_module
    from streams.engine import SNAPSHOT_SPACING, Engine

    monkeypatch.setattr(engine_module, "DEFAULT_COMMIT_EVERY", 3)
    auto = Engine(engine(tmp_path / "auto.db").store, load_profile("baseline"))
    ingest_events(auto.store, _year_of_two_projects())
    assert auto._commit_interval() == 3  # nothing tracked yet
    spaced = auto.run(day("2025-12-31"))
    assert auto._commit_interval() == SNAPSHOT_SPACING * 2
    fixed = engine(tmp_path / "fixed.db", commit_every=3)
    ingest_events(fixed.store, _year_of_two_projects())
    every_three = fixed.run(day("2025-12-31"))
    assert spaced.commits < every_three.commits
    assert outcome(auto) == outcome(fixed)


def test_a_department_renamed_by_a_project_that_moved_away_keeps_its_name_after_a_restart(
    tmp_path: Path,
) -> None:
    """P2's registration of 03-01 renamed D1 新名局, and P2 moved to D2 on 04-01. A run
    resumed after the move named D1 from P1 alone (旧名局), so its 06-30 department alert
    differed from the one run's; the names are now kept with the state."""
    events = [
        b.registered("P1", department_id="D1", department_name="旧名局", on="2025-01-02"),
        b.approved("P1", "1000000", on="2025-01-05"),
        b.registered("P2", department_id="D1", department_name="新名局", on="2025-03-01"),
        b.approved("P2", "1000000", on="2025-03-05"),
        b.registered("P2", department_id="D2", department_name="乙局", on="2025-04-01", event_id="P2-MOVE"),
        b.payment("P1", "100000", on="2025-05-01"),
    ]
    until = day("2025-08-01")
    reference = outcome(one_run(tmp_path / "one.db", events, until))
    names = {d["department_id"]: d["department_name"] for d in reference[0]["departments"]}
    assert names == {"D1": "新名局", "D2": "乙局"}
    (alert,) = [a for a in reference[2] if a["alert_id"] == "2025:department_low_execution:department:D1"]
    assert "新名局截至2025-06-30" in alert["message"]
    e = engine(tmp_path / "many.db")
    ingest_events(e.store, events)
    e.store.close()
    assert resumed(tmp_path / "many.db", [day("2025-04-15")], 100_000, until) == reference
    # A rebuild forgets the kept names with the rest of the derived state, and finds them again.
    e = engine(tmp_path / "many.db")
    e.rebuild()
    assert e.store.department_names() == []
    e.run(until)
    assert outcome(e) == reference


def test_a_superseded_registration_names_its_department_whatever_the_order(tmp_path: Path) -> None:
    """P1's registration of 02-01 (D1 教育体育局) arrived after its move of 02-10: it changed
    nothing of P1, so D1 stayed 教育局 live, while a rebuild, meeting it first, renamed D1
    — and the live name was kept across restarts (review)."""
    base = [b.registered("P1", department_id="D1", department_name="教育局"),
            b.registered("P2", department_id="D1", department_name="教育局"), b.approved("P2", "1000.00")]
    move = [b.registered("P1", on="2025-02-10", department_id="D2", department_name="水务局", event_id="MOVE")]
    rename = [b.registered("P1", on="2025-02-01", department_id="D1", department_name="教育体育局", event_id="RENAME")]
    live = engine(tmp_path / "live.db")
    for events in (base, move, rename):
        ingest_events(live.store, events)
        live.run(day("2025-03-01"))

    def names(e: Any) -> dict[str, str]:
        return {d["department_id"]: d["department_name"] for d in e.status()["departments"]}

    assert names(live)["D1"] == "教育体育局"
    before = names(live)
    live.rebuild()
    live.run(day("2025-03-01"))
    assert names(live) == before


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), events=event_logs(max_events=30))
def test_one_run_and_a_run_resumed_anywhere_agree(data: st.DataObject, events: list[dict[str, Any]]) -> None:
    delivered = data.draw(deliveries(events))
    until = data.draw(RUN_ENDS)
    stops = data.draw(st.lists(st.integers(day("2025-01-01"), until), max_size=3))
    commit_every = data.draw(st.integers(1, 50))
    batch = data.draw(st.integers(1, 10))
    with tempfile.TemporaryDirectory() as tmp:
        reference = outcome(one_run(Path(tmp) / "one.db", events, until))
        many = Path(tmp) / "many.db"
        store = engine(many).store
        for start in range(0, len(delivered), batch):
            ingest_events(store, delivered[start:start + batch])
        store.close()
        status, transitions, alerts = resumed(many, stops, commit_every, until)
        assert status == reference[0]
        assert [(t["alert_id"], t["transition"], t["date"]) for t in transitions] == [
            (t["alert_id"], t["transition"], t["date"]) for t in reference[1]]
        assert transitions == reference[1]
        assert alerts == reference[2]


def test_resolved_alerts_leave_memory_and_come_back_for_a_disposition_and_a_new_episode(
    tmp_path: Path,
) -> None:
    """Committed resolved alerts are dropped from the book and fetched from the store
    when needed; the transitions are exactly those of a pure monitor that keeps all."""
    from alerts.dispositions import Desk
    from alerts.monitor import Monitor
    from tests.unit.test_dispositions import ALERT, approval, base, disposed

    events = [
        *base(),  # low_execution fires on 06-30
        b.payment("P1", "300000.00", on="2025-07-10", event_id="PAY-4"),  # 40%: resolved
        disposed("DSP-1", "2025-07-08", action="reduce", amount="100000.00"),  # awaiting when it resolves
        approval("APR-1", "2025-07-25", "DSP-1"),  # on the resolved alert
        disposed("DSP-2", "2025-07-28", action="continue"),  # refused: nothing of it waits any more
        b.reversal("P1", "300000.00", on="2025-08-15", event_id="REV-1"),  # 11%: a new episode
    ]
    e = engine(tmp_path / "bw.db", commit_every=1)
    ingest_events(e.store, events)
    e.run(day("2025-07-15"))
    assert e.store.alert_row(ALERT)["status"] == "resolved"  # type: ignore[index]
    assert ALERT not in e.monitor.book.alerts  # forgotten once committed
    e.run(day("2025-07-31"))
    e.store.close()
    # A restart while the alert is resolved: its approved reduction (logged as a derived
    # budget_adjusted the next run reads) must still be known, or it would count twice.
    e = engine(tmp_path / "bw.db", commit_every=1)
    e.run(day("2025-12-31"))

    pure = Monitor(load_profile("baseline"))
    baseline = load_profile("baseline")
    pure.desk = Desk(baseline.disposition.deadline_working_days, baseline.work_calendar)
    expected = []
    from tests.builders import record
    for _, transitions in pure.process(sorted((record(x) for x in events), key=lambda r: r.day),
                                       day("2025-12-31")):
        expected.extend(t.to_json() for t in transitions)
    got = e.store.transition_rows()
    kinds = [(t["transition"], t["date"]) for t in got if t["alert_id"] == ALERT]
    assert kinds[:5] == [("firing", "2025-06-30"), ("disposed", "2025-07-08"), ("resolved", "2025-07-10"),
                         ("disposition_approved", "2025-07-25"), ("firing", "2025-08-15")]
    assert got == expected
    assert [(event_id, "已于 2025-07-10 解除" in reason) for event_id, reason in e.store.db.execute(
        "SELECT json_extract(raw, '$.event_id'), reason FROM rejected")] == [("DSP-2", True)]
    # The new episode starts its own disposition but carries the earlier adjustment, so
    # a restart that finds only this row still knows the logged copy is the desk's own.
    refired = [t for t in got if t["alert_id"] == ALERT and t["transition"] == "firing"][-1]
    assert refired["disposition"]["adjustments"] == ["DSP-1@budget_adjusted"]
    assert refired["disposition"]["status"] == "pending"
    # The approved reduction came through the resolved alert: 900,000 budget.
    assert e.status()["projects"][0]["budget"] == "900000.00"


def test_a_day_of_many_transitions_is_written_in_bounded_slices_with_nothing_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams import engine as engine_module
    from streams.store import Batch

    # Seven projects that never pay: on 06-30 (a checkpoint) each fires low_execution at once.
    events: list[dict[str, Any]] = []
    for n in range(7):
        events += [b.registered(f"P{n}"), b.approved(f"P{n}", "1000")]
    whole = engine(tmp_path / "whole.db")
    ingest_events(whole.store, events)
    whole.run(day("2025-07-01"))

    sizes: list[int] = []
    real_add = Batch.add_transitions

    def recording_add(self: Batch, rows: Any) -> None:
        sizes.append(len(rows))
        real_add(self, rows)

    monkeypatch.setattr(engine_module, "TRANSITION_SLICE", 2)
    monkeypatch.setattr(Batch, "add_transitions", recording_add)
    sliced = engine(tmp_path / "sliced.db")
    ingest_events(sliced.store, events)
    sliced.run(day("2025-07-01"))

    assert max(sizes) == 2 and len(sizes) > 3
    rows = sliced.store.transition_rows()
    assert sum(sizes) == len(rows)
    assert sum(1 for t in rows if t["date"] == "2025-06-30" and t["rule"] == "low_execution") == 7
    assert outcome(sliced) == outcome(whole)
    ids = [r[0] for r in sliced.store.db.execute("SELECT id FROM transitions ORDER BY id")]
    assert ids == list(range(1, len(ids) + 1))
    outbox = [r[0] for r in sliced.store.db.execute("SELECT transition_id FROM outbox ORDER BY transition_id")]
    assert outbox == ids


def test_an_alert_leaves_memory_the_day_it_resolves_and_a_disposition_reads_it_from_the_open_batch(
    tmp_path: Path,
) -> None:
    """Disposed on 07-08, resolved on 07-10 and approved on 07-25 in one open batch: the
    resolved alert is written into the transaction and dropped at once, the approval
    reads it back from there, and the year's transitions are those of a monitor that
    keeps all."""
    from alerts.dispositions import Desk
    from alerts.monitor import Monitor
    from tests.builders import record
    from tests.unit.test_dispositions import ALERT, approval, base, disposed

    events = [
        *base(),
        disposed("DSP-1", "2025-07-08", action="reduce", amount="100000.00"),
        b.payment("P1", "300000.00", on="2025-07-10", event_id="PAY-4"),  # resolves low_execution
        approval("APR-1", "2025-07-25", "DSP-1"),
        b.reversal("P1", "300000.00", on="2025-08-15", event_id="REV-1"),
    ]
    e = engine(tmp_path / "bw.db", commit_every=10**9)
    ingest_events(e.store, events)
    e.run(day("2025-07-05"))  # firing since 06-30, committed
    fetched: list[tuple[str, int | None, str | None]] = []
    book = e.monitor.book
    real_archive = book.archive
    assert real_archive is not None

    def recording_archive(alert_id: str) -> Any:
        alert = real_archive(alert_id)
        fetched.append((alert_id, e.monitor.clock, alert.status if alert is not None else None))
        return alert

    book.archive = recording_archive
    summary = e.run(day("2025-07-31"))
    assert summary.commits == 1
    # Dropped on 07-10, so the approval of 07-25 (taken after that day's close) had to
    # read it — resolved, from the batch that was still open (one commit, at its end).
    assert fetched == [(ALERT, day("2025-07-25"), "resolved")]
    e.run(day("2025-12-31"))

    baseline = load_profile("baseline")
    pure = Monitor(baseline)
    pure.desk = Desk(baseline.disposition.deadline_working_days, baseline.work_calendar)
    expected = []
    for _, transitions in pure.process(sorted((record(x) for x in events), key=lambda r: r.day),
                                       day("2025-12-31")):
        expected.extend(t.to_json() for t in transitions)
    assert e.store.transition_rows() == expected
    assert e.store.alert_rows() == [pure.book.alerts[a].to_json() for a in sorted(pure.book.alerts)]
    assert e.status()["projects"][0]["budget"] == "900000.00"


def test_an_engine_held_open_sees_what_another_process_committed(tmp_path: Path) -> None:
    """`serve` holds its engine while the CLI runs the same store: its next commit wrote
    its own older state over the CLI's and the 100,000 paid in between was lost."""
    path = tmp_path / "bw.db"
    held = engine(path)  # the service's engine
    ingest_events(held.store, [b.registered("P1"), b.approved("P1", "1000000"),
                               b.payment("P1", "10000", on="2025-02-01")])
    held.run(day("2025-03-01"))
    other = engine(path)  # the CLI, in another process
    ingest_events(other.store, [b.payment("P1", "100000", on="2025-03-02", event_id="CLI-1")])
    other.run(day("2025-03-02"))
    ingest_events(held.store, [b.payment("P1", "1000", on="2025-03-03", event_id="HTTP-1")])
    held.run(day("2025-03-03"))
    assert held.status()["projects"][0]["paid"] == "111000.00"
    fresh = engine(path)
    assert fresh.status()["projects"][0]["paid"] == "111000.00"


def test_a_commit_by_another_process_just_before_ours_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "bw.db"
    held = engine(path)
    ingest_events(held.store, [b.registered("P1"), b.approved("P1", "100000"),
                               b.payment("P1", "10000", on="2025-02-01")])
    held.run(day("2025-03-01"))
    other = engine(path)
    ingest_events(other.store, [b.payment("P1", "100000", on="2025-03-02", event_id="CLI-1"),
                                b.payment("P1", "1000", on="2025-03-03", event_id="HTTP-1")])
    begin = held.store.begin
    raced: list[bool] = []

    def racing_begin() -> Any:
        if not raced:  # the other process commits after our cursor read, before our lock
            raced.append(True)
            other.run(day("2025-03-02"))
        return begin()

    held.store.begin = racing_begin  # type: ignore[method-assign]
    held.run(day("2025-03-03"))
    assert raced and engine(path).status()["projects"][0]["paid"] == "111000.00"
    # the other process's overspend of 03-02 is stored, and notified, once
    fired = [(t["rule"], t["date"]) for t in held.store.transition_rows() if t["transition"] == "firing"]
    assert fired.count(("overspend", "2025-03-02")) == 1
    assert held.store.db.execute("SELECT COUNT(*) FROM outbox WHERE kind = 'firing'").fetchone()[0] == len(fired)


def test_a_store_from_before_the_registrations_table_learns_each_codes_year(tmp_path: Path) -> None:
    path = tmp_path / "bw.db"
    e = engine(path)
    ingest_events(e.store, [b.registered("P1"), b.approved("P1", "1000")])
    e.store.db.execute("DROP TABLE registrations")  # as a store of the previous release
    e.store.close()
    again = engine(path)
    assert again.store.db.execute("SELECT project_id, fiscal_year FROM registrations").fetchall() == [("P1", 2025)]
    counts = ingest_events(again.store, [{**b.registered("P1", event_id="r26"), "fiscal_year": 2026}])
    assert counts.rejected == 1


def test_a_commit_right_after_our_load_is_not_overwritten(tmp_path: Path) -> None:
    """The lock-time check compared the store with a cursor read after load(), not with
    the one the loaded monitor reflects: a commit in between was overwritten."""
    path = tmp_path / "bw.db"
    first = engine(path)
    ingest_events(first.store, [b.registered("P1"), b.approved("P1", "1000000"),
                                b.payment("P1", "10000", on="2025-02-01")])
    first.run(day("2025-03-01"))
    first.store.close()
    held, other = engine(path), engine(path)
    ingest_events(other.store, [b.payment("P1", "100000", on="2025-03-02", event_id="CLI-1")])
    ingest_events(held.store, [b.payment("P1", "1000", on="2025-03-03", event_id="HTTP-1")])
    load = held.load
    raced: list[bool] = []

    def racing_load() -> Any:
        monitor = load()
        if not raced:  # the other process commits once our monitor is loaded
            raced.append(True)
            other.run(day("2025-03-02"))
        return monitor

    held.load = racing_load  # type: ignore[method-assign]
    held.run(day("2025-03-05"))
    assert raced and engine(path).status()["projects"][0]["paid"] == "111000.00"


def test_only_a_logged_registration_claims_a_codes_year(tmp_path: Path) -> None:
    """A registration refused as an id conflict still claimed its code's year, so the
    code's real registration was refused for good."""
    e = engine(tmp_path / "bw.db")
    ingest_events(e.store, [{**b.registered("P1", event_id="E1"), "fiscal_year": 2024}], "a.jsonl")
    conflict = ingest_events(e.store, [{**b.registered("P2", event_id="E1"), "fiscal_year": 2024}], "b.jsonl")
    assert conflict.rejected == 1
    real = ingest_events(e.store, [{**b.registered("P2", event_id="E2"), "fiscal_year": 2025}], "c.jsonl")
    assert (real.applied, real.rejected) == (1, 0)
    assert sorted(e.store.db.execute("SELECT project_id, fiscal_year FROM registrations")) == [
        ("P1", 2024), ("P2", 2025)]
    again = ingest_events(e.store, [{**b.registered("P2", event_id="E2"), "fiscal_year": 2025}], "c.jsonl")
    assert (again.duplicates, again.rejected) == (1, 0)


def test_every_stored_json_column_is_text_that_sqlite_json_reads(tmp_path: Path) -> None:
    """The store binds orjson's UTF-8 bytes cast to TEXT (no str round trip). Bytes bound
    as they are would be BLOBs: json_extract refuses those, and the outbox, the notifier
    and the conflict check all read these columns in SQL."""
    e = engine(tmp_path / "bw.db")
    events = [b.registered("P"), b.approved("P", "1000"), b.indicator("P", "I1", 10),
              b.payment("P", "10", on="2025-02-01"), b.payment("P", "10", on="2025-07-15")]
    ingest_events(e.store, events)
    e.run(day("2025-07-31"))
    db = e.store.db
    for table, column in (("events", "details"), ("transitions", "data"), ("alerts", "data"),
                          ("projects", "state")):
        kinds = {k for (k,) in db.execute(f"SELECT DISTINCT typeof({column}) FROM {table} WHERE {column} IS NOT NULL")}
        assert kinds == {"text"}, (table, kinds)
    names = {n for (n,) in db.execute("SELECT json_extract(state, '$.name') FROM projects")}
    assert names == {events[0]["name"]} and any("\u4e00" <= ch <= "\u9fff" for ch in events[0]["name"])
    messages = [m for (m,) in db.execute("SELECT json_extract(data, '$.message') FROM transitions")]
    assert messages and all("预警" in m for m in messages)
    # the same Chinese details ingested again are duplicates, not other content
    again = ingest_events(e.store, events[:1], "again.jsonl")
    assert (again.duplicates, again.rejected) == (1, 0)


def test_a_commit_writes_project_and_alert_rows_in_key_order(tmp_path: Path) -> None:
    """A province's tables dwarf the page cache: rows written in key order lay out (on the
    first commit) and rewrite (later) each page once, instead of one random page a row."""
    e = engine(tmp_path / "bw.db")
    codes = ["P7", "P3", "P9", "P1", "P5", "P2", "P8"]  # registered in no particular order
    events: list[dict[str, Any]] = []
    for code in codes:
        events += [b.registered(code), b.approved(code, "1000")]
    ingest_events(e.store, events)
    e.run(day("2025-07-01"))  # never paid: low_execution and more for each on 06-30
    db = e.store.db
    projects = [p for (p,) in db.execute("SELECT project_id FROM projects ORDER BY rowid")]
    assert projects == sorted(codes)
    alerts = [a for (a,) in db.execute("SELECT alert_id FROM alerts ORDER BY rowid")]
    assert len(alerts) >= len(codes) and alerts == sorted(alerts)


def test_a_project_moved_to_another_department_takes_its_firing_alerts_along(tmp_path: Path) -> None:
    """Re-registered under D02 (机构改革), P1's low_execution alert kept D01: D01's users
    could still dispose of it and D02's could not see it (web audit)."""
    db = tmp_path / "bw.db"
    e = engine(db)
    ingest_events(e.store, [
        b.registered("P1", department_id="D01", department_name="教育局"), b.approved("P1", "1000000"),
        b.payment("P1", "10000", on="2025-03-01"),
    ])
    e.run(day("2025-07-01"))
    (alert,) = [a for a in e.store.alert_rows() if a["rule"] == "low_execution"]
    assert (alert["department_id"], alert["status"]) == ("D01", "firing")
    ingest_events(e.store, [b.registered("P1", on="2025-07-02", department_id="D02", department_name="卫健委",
                                         event_id="P1-REG-2")])
    e.run(day("2025-07-02"))
    (moved,) = [a for a in e.store.alert_rows() if a["rule"] == "low_execution"]
    assert (moved["department_id"], moved["department_name"], moved["status"]) == ("D02", "卫健委", "firing")
    assert moved["since"] == alert["since"]  # the same episode: no new firing, no notification
    assert [t["transition"] for t in e.store.transition_rows() if t["alert_id"] == alert["alert_id"]] == ["firing"]
    e.store.close()
    again = engine(db)
    again.load()
    assert {a.department_id for a in again.monitor.book.active() if a.subject_id == "P1"} == {"D02"}
    assert not again.monitor.book.moved


def test_a_run_on_an_empty_log_starts_no_clock(tmp_path: Path) -> None:
    """`serve --live` started before the year so far was imported: its first run, with
    nothing logged, set the clock to today, and the history imported next was applied
    at today's date — every alert dated 10-15 (live-operations audit)."""
    e = engine(tmp_path / "live.db")
    e.run(day("2025-10-15"))
    assert e.store.cursor() == (None, 0)
    ingest_events(e.store, [b.registered("P1"), b.approved("P1", "1000000.00")])
    e.run(day("2025-10-15"))
    low = next(a for a in e.store.alert_rows() if a["rule"] == "low_execution")
    assert low["since"] == "2025-06-30"
    # nor does a log holding only events dated after the run's end (review)
    later = engine(tmp_path / "later.db")
    ingest_events(later.store, [b.registered("P9", on="2026-01-02", year=2026)])
    later.run(day("2025-10-15"))
    assert later.store.cursor() == (None, 0)
    ingest_events(later.store, [b.registered("P1"), b.approved("P1", "1000000.00")])
    later.run(day("2025-10-15"))
    assert next(a for a in later.store.alert_rows() if a["rule"] == "low_execution")["since"] == "2025-06-30"
