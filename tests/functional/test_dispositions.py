"""The disposition loop through the embedded engine and its SQLite store: replay,
dead letters, the emitted budget_adjusted in the log, escalation to the bureau."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import orjson

from connectors.directory import ESCALATION, parse_directory
from streams.engine import DERIVED_SOURCE
from streams.outbox import DeliveryLog
from tests.functional.engine_helpers import engine, ingest_events, outcome
from tests.unit.test_dispositions import ALERT, approval, base, disposed


def d(text: str) -> int:
    return dt.date.fromisoformat(text).toordinal()


def overdue_rows(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["alert_id"], r["date"]) for r in rows if r["transition"] == "disposition_overdue"]


def test_escalation_fires_once_on_the_right_working_day_across_restarts(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    e = engine(db)
    ingest_events(e.store, base())
    e.run(d("2025-07-14"))
    assert overdue_rows(e.store.transition_rows()) == []
    e.store.close()
    for day in ("2025-07-15", "2025-07-16", "2025-08-29"):  # a new process each time, no events
        e = engine(db)
        e.run(d(day))
        e.store.close()
    e = engine(db)
    rows = e.store.transition_rows()
    assert [r for r in overdue_rows(rows) if r[0] == ALERT] == [(ALERT, "2025-07-15")]
    outbox = e.store.db.execute(
        "SELECT o.alert_id, o.department_id, t.data FROM outbox o JOIN transitions t ON t.id = o.transition_id"
        " WHERE o.kind = 'disposition_overdue'"
        " AND o.alert_id = ?", (ALERT,)
    ).fetchall()
    assert len(outbox) == 1
    payload = orjson.loads(outbox[0][2])
    assert payload["date"] == "2025-07-15" and payload["disposition"]["status"] == "overdue"
    (row,) = [a for a in e.store.alert_rows() if a["alert_id"] == ALERT]
    assert row["status"] == "firing" and row["disposition"]["overdue_on"] == "2025-07-15"


def test_the_overdue_outbox_row_reaches_the_bureau_escalation_contact(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    e = engine(db)
    ingest_events(e.store, base())
    e.run(d("2025-07-16"))
    e.store.close()
    directory = parse_directory({
        "departments": {"D01": {"name": "园区管理局", "webhook": "https://hooks.example/d01"}},
        # the bureau only follows critical alerts, yet an overdue disposition always reaches it
        "escalation": {"name": "财政局绩效科", "webhook": "https://hooks.example/bureau", "severities": ["critical"]},
    })
    log = DeliveryLog(db)
    log.fan_out(directory, 0.0)
    rows = log.db.execute(
        "SELECT recipient, kind, alert_id FROM deliveries WHERE kind = 'disposition_overdue' ORDER BY recipient"
    ).fetchall()
    log.close()
    assert (ESCALATION, "disposition_overdue", ALERT) in rows
    assert ("D01", "disposition_overdue", ALERT) in rows
    # warning alerts' escalations reach the bureau too (stalled is a warning here)
    assert all(r[0] in (ESCALATION, "D01") for r in rows)


def test_approved_reduction_lands_in_the_log_and_a_rebuild_gives_the_same_result(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    e = engine(db)
    counts = ingest_events(e.store, [*base(), disposed("DSP-1", "2025-07-02", "reduce", "700000.00"),
                                     approval("APR-1", "2025-07-03", "DSP-1")])
    assert counts.applied == 7
    e.run(d("2025-09-30"))
    logged = e.store.db.execute(
        "SELECT type, day, project_id, amount, source FROM events WHERE event_id = 'DSP-1@budget_adjusted'"
    ).fetchall()
    assert logged == [("budget_adjusted", d("2025-07-03"), "P1", -70_000_000, DERIVED_SOURCE)]
    assert e.store.counters()["events_applied"] == 7  # derived, not input: the counters do not move
    status, transitions, alerts = outcome(e)
    (project,) = status["projects"]
    assert (project["budget"], project["paid"]) == ("300000.00", "100000.00")
    assert [t["transition"] for t in transitions if t["alert_id"] == ALERT] == [
        "firing", "disposed", "disposition_approved", "resolved"]
    proposed = next(t for t in transitions if t["alert_id"] == ALERT and t["transition"] == "disposed")
    assert "已提出处置意见：调减 700,000.00元（待财政局审批）" in proposed["message"]  # not yet done
    # a new process resumes with the same figures; a rebuild replays the log (the approval
    # re-emits the adjustment, the logged copy is skipped): the same alerts, to the day
    e.store.close()
    e = engine(db)
    e.run(d("2025-10-31"))
    assert e.status()["projects"][0]["budget"] == "300000.00"
    e.rebuild()
    e.run(d("2025-09-30"))
    assert outcome(e) == (status, transitions, alerts)
    assert e.store.event_count() == 8


def test_a_run_over_a_disposition_alone_reports_it_processed(tmp_path: Path) -> None:
    """A disposition is taken by the desk, not the ledger: runs said "0 events" for it and
    the progress bar stopped short of the pending count."""
    e = engine(tmp_path / "bw.db")
    ingest_events(e.store, base())
    e.run(d("2025-07-01"))
    ingest_events(e.store, [disposed("DSP-1", "2025-07-02", "reduce", "700000.00")])
    seen: list[tuple[int, int | None]] = []
    summary = e.run(d("2025-07-02"), progress=lambda done, total: seen.append((done, total)))
    assert summary.events == 1 and seen[-1] == (1, 1)
    assert [t["transition"] for t in outcome(e)[1] if t["alert_id"] == ALERT][-1] == "disposed"


def test_a_refused_disposition_goes_to_the_dead_letters_once_and_nothing_else_is_lost(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    e = engine(db)
    ingest_events(e.store, [*base(), disposed("DSP-1", "2025-07-02", "reduce", "900000.01")], "in.jsonl")
    e.run(d("2025-07-10"))
    (dead,) = e.store.rejections()
    assert dead["source"] == "in.jsonl:6 (event_id DSP-1)"
    assert "调减金额 900,000.01元超过项目 P1 的预算结余（未支付余额）900,000.00元" in dead["reason"]
    assert dead["reason"].startswith("处置：")  # not the English event type
    assert orjson.loads(dead["raw"])["event_id"] == "DSP-1"
    assert e.status()["projects"][0]["paid"] == "100000.00"
    e.rebuild()
    e.run(d("2025-07-10"))
    assert len(e.store.rejections()) == 1
    e.store.close()

    # `run` says so: it processed no event of its own, yet one was refused
    from typer.testing import CliRunner

    from streams.cli import app

    said = CliRunner().invoke(app, ["run", "--rebuild", "--as-of", "2025-07-10", "--db", str(db)])
    assert said.exit_code == 0, said.output
    assert "1 条事件在处理时被拒收" in said.output
    again = CliRunner().invoke(app, ["run", "--as-of", "2025-07-11", "--db", str(db)])
    assert "被拒收" not in again.output  # told once, not at every run


def test_budgetwatch_dispose_appends_an_alert_disposed_event(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from streams.cli import app

    db = tmp_path / "bw.db"
    e = engine(db)
    ingest_events(e.store, base())
    e.run(d("2025-07-01"))
    e.store.close()
    runner = CliRunner()
    bad = runner.invoke(app, ["dispose", ALERT, "--action", "reduce", "--note", "缩减", "--db", str(db)])
    assert bad.exit_code != 0 and "needs an amount" in str(bad.exception)
    assert "调减（reduce）须填写金额 amount" in str(bad.exception)  # the Chinese says it too, not 取值无效
    assert "取值无效" not in str(bad.exception)
    blank = runner.invoke(app, ["dispose", ALERT, "--action", "continue", "--note", "  ", "--db", str(db)])
    assert blank.exit_code != 0 and "请填写处置说明" in str(blank.exception)
    # what processing will refuse is said at once (900,000 unspent of 1,000,000); on a
    # copy of the store, so this test's own log goes on without them
    trial = tmp_path / "trial.db"
    shutil.copy(db, trial)
    too_much = runner.invoke(app, ["dispose", ALERT, "--action", "reduce", "--amount", "900000.01",
                                   "--note", "缩减", "--db", str(trial)])
    assert too_much.exit_code == 0, too_much.output
    said = " ".join(too_much.output.split())  # the console wraps long lines
    assert "按当前台账" in said and "超过项目 P1 的预算结余（未支付余额）900,000.00元" in said
    fits = runner.invoke(app, ["dispose", ALERT, "--action", "reduce", "--amount", "900000",
                               "--note", "缩减", "--db", str(trial)])
    assert fits.exit_code == 0 and "注意" not in fits.output
    ok = runner.invoke(app, ["dispose", ALERT, "--action", "continue", "--note", "已招标", "--by", "jyj",
                             "--db", str(db), "--json"])
    assert ok.exit_code == 0, ok.output
    assert orjson.loads(ok.output)["applied"] == 1
    e = engine(db)
    e.run(d("2025-07-20"))
    (row,) = [a for a in e.store.alert_rows() if a["alert_id"] == ALERT]
    assert row["disposition"]["status"] == "disposed" and row["disposition"]["latest"]["by"] == "jyj"
    assert row["disposition"]["latest"]["on"] == "2025-07-01"


def test_a_deadline_set_before_national_day_waits_out_the_holiday_week(tmp_path: Path) -> None:
    # Low execution checked on Friday 09-26: ten working days on the national calendar end on
    # 10-16 (10-01..10-08 off, Sunday 09-28 and Saturday 10-11 worked), not Mon–Fri's 10-10.
    profile = tmp_path / "autumn.yaml"
    profile.write_text(
        "name: autumn\nlow_execution: {floors: [{checkpoint: '09-26', floor: 0.3}]}\n"
        "disposition: {deadline_working_days: 10, calendar: cn-mainland}\n", "utf-8")
    e = engine(tmp_path / "bw.db", profile=str(profile))
    ingest_events(e.store, base())
    e.run(d("2025-10-16"))
    (row,) = [a for a in e.store.alert_rows() if a["alert_id"] == ALERT]
    assert row["since"] == "2025-09-26"
    assert (row["disposition"]["deadline"], row["disposition"]["escalate_on"]) == ("2025-10-16", "2025-10-17")
    assert [r for r in overdue_rows(e.store.transition_rows()) if r[0] == ALERT] == []  # Mon–Fri: 10-13
    e.run(d("2025-10-20"))
    assert [r for r in overdue_rows(e.store.transition_rows()) if r[0] == ALERT] == [(ALERT, "2025-10-17")]
    e.store.close()


def _stepped_then_rebuilt(tmp_path: Path, steps: list[tuple[list[dict[str, Any]], str]]) -> tuple[Any, Any]:
    """The outcome of runs step by step — a new process each, events ingested between
    them as people record them — and of a rebuild replaying the same log to the end."""
    tmp_path.mkdir(exist_ok=True)
    db = tmp_path / "bw.db"
    for events, until in steps:
        e = engine(db)
        ingest_events(e.store, events)
        e.run(d(until))
        e.store.close()
    e = engine(db)
    live = outcome(e)
    e.rebuild()
    e.run(d(steps[-1][1]))
    replayed = outcome(e)
    e.store.close()
    return live, replayed


def test_an_answer_dated_the_day_its_alert_fired_counts_the_same_on_replay(tmp_path: Path) -> None:
    """`dispose` and the board date an answer on the clock's day, already closed: the
    live run took it after the alert fired, a replay before — so the replay refused it
    ("不存在") and escalated an answered alert (audit)."""
    live, replayed = _stepped_then_rebuilt(tmp_path, [
        (base(), "2025-06-30"),
        ([disposed("DSP-1", "2025-06-30", "reduce", "300000.00")], "2025-06-30"),
        ([approval("APR-1", "2025-06-30", "DSP-1")], "2025-07-20"),
    ])
    assert replayed == live
    status, transitions, _ = live
    assert [(t["transition"], t["date"]) for t in transitions if t["alert_id"] == ALERT] == [
        ("firing", "2025-06-30"), ("disposed", "2025-06-30"), ("disposition_approved", "2025-06-30")]
    assert status["projects"][0]["budget"] == "700000.00"


def test_an_answer_on_the_escalation_day_follows_the_escalation_on_replay(tmp_path: Path) -> None:
    live, replayed = _stepped_then_rebuilt(tmp_path, [
        (base(), "2025-07-15"),
        ([disposed("DSP-1", "2025-07-15", "continue")], "2025-07-16"),
    ])
    assert replayed == live
    _, transitions, _ = live
    assert [(t["transition"], t["date"]) for t in transitions if t["alert_id"] == ALERT] == [
        ("firing", "2025-06-30"), ("disposition_overdue", "2025-07-15"), ("disposed", "2025-07-15")]


def test_an_escalation_survives_a_restart_while_a_disposition_awaits_approval(tmp_path: Path) -> None:
    """Restored awaiting approval, the alert left the escalation schedule: returned before
    its escalation day, it never escalated — only when the runs happened to stop there."""
    events = [*base(), disposed("DSP-1", "2025-07-01", "reduce", "300000.00"),
              approval("APR-1", "2025-07-03", "DSP-1", approved_=False)]
    (one_run, _), (stepped, replayed) = (
        _stepped_then_rebuilt(tmp_path / "one", [(events, "2025-07-20")]),
        _stepped_then_rebuilt(tmp_path / "two", [(events, "2025-07-02"), ([], "2025-07-20")]),
    )
    assert stepped == one_run == replayed
    assert ("disposition_overdue", "2025-07-15") in [
        (t["transition"], t["date"]) for t in one_run[1] if t["alert_id"] == ALERT]


def test_the_board_lists_a_reduction_awaiting_approval_after_its_alert_resolved() -> None:
    """The count said 0 待财政审批 and the default list hid it; a resolved alert's old
    "overdue" made the overdue filter list it as 逾期未处置 (audit)."""
    from streams.board import filter_alerts

    def row(alert_id: str, status: str, disposition: str) -> dict[str, Any]:
        return {"alert_id": alert_id, "rule": "low_execution", "severity": "critical", "department_id": "D01",
                "status": status, "since": "2025-06-30", "disposition": {"status": disposition}}

    rows = [row("A", "resolved", "awaiting_approval"), row("B", "resolved", "overdue"), row("C", "firing", "overdue"),
            row("D", "resolved", "pending")]
    assert [r["alert_id"] for r in filter_alerts(rows, {})] == ["C", "A"]
    assert [r["alert_id"] for r in filter_alerts(rows, {"status": "all", "overdue": "1"})] == ["C"]
    assert [r["alert_id"] for r in filter_alerts(rows, {"status": "all", "overdue": "0"})] == ["A", "B", "D"]


def _kinds(out: Any) -> list[tuple[str, str, str]]:
    return [(t["alert_id"].split(":")[1], t["transition"], t["date"]) for t in out[1]]


def test_what_follows_an_answer_in_the_log_follows_it_on_replay(tmp_path: Path) -> None:
    """An answer on the clock's day, then a payment of that day that resolves the alert:
    the replay took every other record of the day first, so the answer met a resolved
    alert and was refused (review)."""
    from tests.builders import payment

    live, replayed = _stepped_then_rebuilt(tmp_path, [
        (base(), "2025-07-08"),
        ([disposed("DSP-1", "2025-07-08", "reduce", "800000.00")], "2025-07-08"),
        ([approval("APR-1", "2025-07-08", "DSP-1")], "2025-07-08"),
        ([payment("P1", "300000.00", on="2025-07-08", event_id="PAY-4")], "2025-07-10"),
    ])
    assert _kinds(replayed) == _kinds(live)
    assert [k for k in _kinds(live) if k[0] == "low_execution"] == [
        ("low_execution", "firing", "2025-06-30"), ("low_execution", "disposed", "2025-07-08"),
        ("low_execution", "disposition_approved", "2025-07-08"), ("low_execution", "resolved", "2025-07-08")]
    # the payment came after the approval: 400,000 paid of the 200,000 left is an overspend
    assert ("overspend", "firing", "2025-07-08") in _kinds(live)
    assert replayed[0] == live[0] and live[0]["projects"][0]["budget"] == "200000.00"


def test_an_answer_to_an_alert_an_earlier_answer_raised_that_day_counts_on_replay(tmp_path: Path) -> None:
    """An approved reduction lifts the rate to 50% against a performance of 0: progress_gap
    fires, and the department answers it the same day. The replay took both answers
    before one close, so the second answered an alert that did not exist yet (review)."""
    from tests.builders import indicator, report

    gap = "2025:progress_gap:project:P1"
    events = [*base(), indicator("P1", "I1", 100.0), report("P1", "I1", 0.0, on="2025-01-06")]
    live, replayed = _stepped_then_rebuilt(tmp_path, [
        (events, "2025-07-08"),
        ([disposed("DSP-1", "2025-07-08", "reduce", "800000.00")], "2025-07-08"),
        ([approval("APR-1", "2025-07-08", "DSP-1")], "2025-07-08"),
        ([disposed("DSP-2", "2025-07-08", "continue", alert_id=gap)], "2025-07-10"),
    ])
    assert _kinds(replayed) == _kinds(live)
    assert ("progress_gap", "disposed", "2025-07-08") in _kinds(live)


def test_a_recovery_approved_after_the_year_resolves_that_year_s_alerts(tmp_path: Path) -> None:
    """In January the bureau recovers 900,000 of a 2025 project that paid 100,000: its
    2025 figures became 100% executed, yet its alerts stayed firing on the old ones for
    good — nothing dated in 2026 changes a 2025 alert (audit of the year rollover)."""
    live, replayed = _stepped_then_rebuilt(tmp_path, [
        (base(), "2026-01-12"),
        ([disposed("DSP-1", "2026-01-12", "recover", "900000.00")], "2026-01-12"),
        ([approval("APR-1", "2026-01-13", "DSP-1")], "2026-01-14"),
    ])
    assert replayed == live
    status, transitions, alerts = live
    after = {(t["rule"], t["transition"]) for t in transitions if t["date"] == "2026-01-13"}
    assert ("low_execution", "resolved") in after and ("department_low_execution", "resolved") in after
    assert not [a for a in alerts if a["status"] == "firing" and a["fiscal_year"] == 2025]
    assert status["fiscal_year"] == 2026


def test_an_answer_and_what_follows_it_in_one_run_equal_their_replay(tmp_path: Path) -> None:
    """One run took an approval and a later adjustment of the same day (one file, or two
    POSTs serve coalesced); a replay closed between them and opened a new episode: the
    split must follow the log's order, whether the day is new or late (review)."""
    from tests.builders import adjusted

    live, replayed = _stepped_then_rebuilt(tmp_path, [
        (base(), "2025-07-08"),
        ([disposed("DSP-1", "2025-07-08", "reduce", "800000.00")], "2025-07-08"),
        ([approval("APR-1", "2025-07-08", "DSP-1"),
          adjusted("P1", "800000.00", on="2025-07-08", event_id="ADJ-USER")], "2025-07-08"),
    ])
    assert _kinds(replayed) == _kinds(live)


def _open_alert_ids(e: Any) -> list[str]:
    return [a["alert_id"] for a in e.store.active_alerts()]


def test_the_open_alerts_index_holds_a_resolved_alert_while_its_reduction_awaits_the_bureau(tmp_path: Path) -> None:
    """The board's default list reads the firing alerts and those awaiting the bureau
    through a partial index (it read every alert's JSON), in a new and a migrated store."""
    from tests.builders import payment

    db = tmp_path / "bw.db"
    e = engine(db)
    ingest_events(e.store, [*base(), disposed("DSP-1", "2025-07-02", "reduce", "200000.00"),
                            payment("P1", "300000.00", on="2025-07-03", event_id="PAY-4")])  # 40%: resolves
    e.run(d("2025-07-04"))
    alerts = {a["alert_id"]: a for a in e.store.alert_rows()}
    alert = alerts[ALERT]
    assert (alert["status"], alert["disposition"]["status"]) == ("resolved", "awaiting_approval")
    others = sorted(a for a, row in alerts.items() if row["status"] == "firing")
    assert _open_alert_ids(e) == sorted([ALERT, *others])
    plan = " ".join(str(r) for r in e.store.db.execute(
        "EXPLAIN QUERY PLAN SELECT data FROM alerts WHERE (status = 'firing' OR awaiting = 1) ORDER BY alert_id"))
    assert "alerts_open" in plan

    # A store from before the flag: opened, it is migrated from each alert's JSON.
    e.store.db.executescript("DROP INDEX alerts_open; ALTER TABLE alerts DROP COLUMN awaiting;")
    e.store.close()
    e = engine(db)
    assert _open_alert_ids(e) == sorted([ALERT, *others])
    ingest_events(e.store, [approval("APR-1", "2025-07-07", "DSP-1")])
    e.run(d("2025-07-08"))
    assert {a["alert_id"]: a for a in e.store.alert_rows()}[ALERT]["disposition"]["status"] == "approved"
    assert ALERT not in _open_alert_ids(e)  # decided: out of the default list


def test_a_migration_killed_midway_leaves_the_awaiting_flags_to_the_next_open(tmp_path: Path) -> None:
    """The column was added in a statement of its own: killed before the flags were
    copied from the JSON, the next open saw the column and never copied them (review)."""
    import subprocess
    import sys
    import textwrap

    from tests.builders import payment

    db = tmp_path / "bw.db"
    e = engine(db)
    ingest_events(e.store, [*base(), disposed("DSP-1", "2025-07-02", "reduce", "200000.00"),
                            payment("P1", "300000.00", on="2025-07-03", event_id="PAY-4")])
    e.run(d("2025-07-04"))
    assert ALERT in _open_alert_ids(e)
    e.store.db.executescript("DROP INDEX alerts_open; ALTER TABLE alerts DROP COLUMN awaiting;")
    e.store.close()
    killer = textwrap.dedent(f"""
        import os, sqlite3
        connect = sqlite3.connect
        def dying(*args, **kwargs):
            db = connect(*args, **kwargs)
            db.set_trace_callback(lambda sql: os._exit(9) if sql.startswith("UPDATE alerts SET awaiting") else None)
            return db
        sqlite3.connect = dying
        from streams.store import Store
        Store({str(db)!r})
    """)
    died = subprocess.run([sys.executable, "-c", killer], cwd=Path(__file__).parents[2], check=False)
    assert died.returncode == 9  # killed inside the migration
    e = engine(db)
    assert ALERT in _open_alert_ids(e)
