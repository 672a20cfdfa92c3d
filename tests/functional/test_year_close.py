"""The year's close (年度结束) through the embedded engine: stored, resumable, shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from typer.testing import CliRunner

from streams.cli import app
from streams.service import Service
from tests import builders as b
from tests.board_helpers import ALERT_EDU, login, prepare, serve
from tests.builders import day
from tests.functional.engine_helpers import engine, ingest_events, outcome, resumed

# P never pays and R pays 10% (low_execution, stalled, behind_schedule and the like, still
# firing at the year's end); Q pays 95% in March (its stall resolves nothing: it has none).
EVENTS = [
    b.registered("P"), b.approved("P", "1000000", on="2025-01-05"),
    b.registered("Q"), b.approved("Q", "1000000", on="2025-01-05"), b.payment("Q", "950000", on="2025-03-01"),
    b.registered("R"), b.approved("R", "1000000", on="2025-01-05"), b.payment("R", "100000", on="2025-03-01"),
]
UNTIL = day("2026-02-10")


def _store(path: Path) -> None:
    e = engine(path)
    ingest_events(e.store, EVENTS)
    e.store.close()


def test_runs_resumed_anywhere_around_the_close_give_one_runs_alerts(tmp_path: Path) -> None:
    _store(one := tmp_path / "one.db")
    e = engine(one)
    e.run(UNTIL)
    whole = outcome(e)
    _, transitions, alerts = whole
    e.store.close()
    closing = [t for t in transitions if t.get("reason") == "year_closed"]
    assert closing and {t["date"] for t in closing} == {"2026-01-31"}
    assert all(a["status"] == "resolved" for a in alerts)
    for stops in ([day("2026-01-30")], [day("2026-01-31")], [day("2025-12-31"), day("2026-02-01")]):
        path = tmp_path / f"r{stops[0]}.db"
        _store(path)
        assert resumed(path, stops, 1, UNTIL) == whole, stops


def test_a_late_december_voucher_after_januarys_money_is_judged_on_december_31s_sums(tmp_path: Path) -> None:
    """X1 (20%) and X2 (30%) of one department. A 2026-dated payment of X1 was processed on
    01-10; a voucher dated 2025-12-30 arrived on 01-11. Judged again as of Dec 31 on sums
    holding January's money, X1's low_execution resolved at 41% and the department's at
    35.5%; a replay, meeting the voucher before January, kept both firing (21%, 25.5%)
    until the close — live and replay differed, and X1 left the year's final proposals."""
    year = [
        b.registered("X1"), b.approved("X1", "1000000", on="2025-01-05"), b.payment("X1", "200000", on="2025-03-01"),
        b.registered("X2"), b.approved("X2", "1000000", on="2025-01-05"), b.payment("X2", "300000", on="2025-03-01"),
    ]
    january = b.payment("X1", "200000", on="2026-01-10")
    voucher = b.payment("X1", "10000", on="2025-12-30")
    until = day("2026-02-10")
    live = engine(tmp_path / "live.db")
    ingest_events(live.store, [*year, january])
    live.run(day("2026-01-10"))
    ingest_events(live.store, [voucher])
    live.run(day("2026-01-11"))
    live.run(until)
    replay = engine(tmp_path / "replay.db")
    ingest_events(replay.store, [*year, january, voucher])
    replay.run(until)
    def steps(e: Any) -> list[tuple[str, str, str | None]]:
        # the voucher's own transition is dated by its arrival live (01-10), by its date in a replay
        return sorted((t["alert_id"], t["transition"], t.get("reason")) for t in e.store.transition_rows())

    def ends(e: Any) -> list[tuple[str, str, str | None, Any]]:
        return [(a["alert_id"], a["status"], a.get("reason"), a["figures"]["execution_rate"])
                for a in e.store.alert_rows()]

    assert steps(live) == steps(replay)
    assert ends(live) == ends(replay)
    ended = {t["alert_id"]: t for t in outcome(live)[1] if t["transition"] == "resolved"}
    low = ended["2025:low_execution:project:X1"]
    assert (low["date"], low["reason"]) == ("2026-01-31", "year_closed")
    assert low["figures"]["execution_rate"] == 0.21 and low["figures"]["as_of"] == "2025-12-31"
    department = ended["2025:department_low_execution:department:D01"]
    assert (department["date"], department["reason"]) == ("2026-01-31", "year_closed")
    assert department["figures"]["execution_rate"] == 0.255
    assert [p.project_id for p in live.reductions(fiscal_year=2025)] == ["X1"]


def test_money_dated_after_the_years_close_is_counted_and_said(tmp_path: Path) -> None:
    """A 2026 payment under a 2025 code, after 2025 closed, went into the closed year with no
    word: most likely the next year's money under last year's code (multi-year audit H2)."""
    events = [*EVENTS, b.payment("R", "1000", on="2026-01-20", event_id="JAN-R"),  # before the close
              b.payment("R", "5000", on="2026-03-01", event_id="MAR-R"),
              b.payment("R", "5000", on="2026-03-02", event_id="MAR-R2")]
    e = engine(tmp_path / "bw.db")
    ingest_events(e.store, events)
    summary = e.run(day("2026-03-05"))
    assert (summary.after_close, summary.after_close_projects) == (2, ("R",))
    assert e.run(day("2026-03-06")).after_close == 0  # said once, by the run that took them
    e.store.close()
    rerun = CliRunner().invoke(app, ["run", "--rebuild", "--as-of", "2026-03-06", "--db", str(tmp_path / "bw.db")])
    assert rerun.exit_code == 0, rerun.output
    said = rerun.output.replace("\n", "")  # the console wraps long lines
    assert "2 笔资金事件（支付、退回或调整）的日期在其项目所属年度结束（关闭）之后" in said and "（项目：R）" in said


def test_a_january_report_is_not_taken_for_dec_31s(tmp_path: Path) -> None:
    """A January 绩效自评 (10 of 100) fed the completion of a late December voucher's
    judgement as of Dec 31: progress_gap fired live, not in a replay (review)."""
    year = [b.registered("P1"), b.approved("P1", "1000000.00"), b.payment("P1", "900000.00", on="2025-03-01"),
            b.indicator("P1", "I1", 100), b.report("P1", "I1", 100, on="2025-06-01")]
    january = [b.report("P1", "I1", 10, on="2026-01-10")]
    voucher = [b.payment("P1", "10000.00", on="2025-12-28", event_id="voucher")]
    live = engine(tmp_path / "live.db")
    for events, until in [(year, "2025-12-31"), (january, "2026-01-10"), (voucher, "2026-01-12")]:
        ingest_events(live.store, events)
        live.run(day(until))
    live.run(day("2026-02-05"))
    replay = engine(tmp_path / "replay.db")
    ingest_events(replay.store, [*year, *january, *voucher])
    replay.run(day("2026-02-05"))
    rules = {(t["rule"], t["transition"], t.get("reason")) for t in live.store.transition_rows()}
    assert ("progress_gap", "firing", None) not in rules
    assert rules == {(t["rule"], t["transition"], t.get("reason")) for t in replay.store.transition_rows()}


def test_an_answer_still_owed_is_closed_with_the_year(tmp_path: Path) -> None:
    _store(path := tmp_path / "bw.db")
    e = engine(path)
    e.run(day("2026-01-30"))
    owed = {a["alert_id"]: a["disposition"]["status"] for a in e.store.alert_rows(status="firing")}
    assert owed["2025:low_execution:project:P"] == "overdue"  # 10 working days passed long ago
    e.run(UNTIL)
    after = {a["alert_id"]: a for a in e.store.alert_rows()}
    assert {after[a]["disposition"]["status"] for a in owed} == {"closed"}
    assert {after[a]["status"] for a in owed} == {"resolved"}
    assert e.store.alert_rows(status="firing") == []
    e.store.close()


def test_the_cli_lists_the_close_as_such(tmp_path: Path) -> None:
    _store(path := tmp_path / "bw.db")
    runner = CliRunner()
    ran = runner.invoke(app, ["run", "--db", str(path), "--as-of", "2026-02-10"])
    assert ran.exit_code == 0, ran.output
    listed = runner.invoke(app, ["alerts", "--db", str(path), "--all"], env={"COLUMNS": "400"})
    assert listed.exit_code == 0, listed.output
    closing_rows = [line for line in listed.output.splitlines() if "2026-01-31" in line]
    assert closing_rows and all("年度结束" in line for line in closing_rows)
    active = runner.invoke(app, ["alerts", "--db", str(path), "--json"])
    assert active.exit_code == 0 and active.output.strip() == "[]"


def test_the_board_shows_the_close_in_an_alerts_history(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    prepare(db, as_of="2026-02-02")

    async def scenario(client: TestClient[Any, Any], service: Service) -> None:
        await login(client, "jxk")
        page = await (await client.get(f"/alerts/{ALERT_EDU}")).text()
        row = next(line for line in page.splitlines() if "2026-01-31" in line and "<td>" in line)
        assert "年度结束" in row and "预警至2025年度结束仍未解除" in row
        project = await (await client.get("/projects/P1")).text()
        assert "<td>年度结束</td>" in project
        listed = await (await client.get("/board/alerts.json")).json()
        assert listed["alerts"] == []  # nothing of 2025 is 预警中 any more

    serve(db, scenario)


def test_an_answer_to_an_alert_closed_with_its_year_is_refused_saying_so(tmp_path: Path) -> None:
    _store(path := tmp_path / "bw.db")
    e = engine(path)
    e.run(UNTIL)
    answer = {"type": "alert_disposed", "event_id": "late-answer", "occurred_on": "2026-02-10",
              "project_id": "P", "alert_id": "2025:low_execution:project:P", "action": "continue",
              "note": "已整改", "by": "jyj"}
    ingest_events(e.store, [answer], "answer.jsonl")
    e.run(UNTIL)
    (refused,) = [r for r in e.store.rejections() if "late-answer" in r["raw"]]
    assert "已于 2026-01-31 随 2025 年度结束而关闭，无需处置" in refused["reason"]
    assert "budget_adjusted" in refused["reason"]  # how a recovery of the final list is recorded
    e.store.close()


def test_the_board_warns_of_the_close_in_january_and_lists_last_years_proposals(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    prepare(db, as_of="2026-01-20")

    async def january(client: TestClient[Any, Any], service: Service) -> None:
        await login(client, "jxk")
        board = await (await client.get("/")).text()
        assert 'data-testid="year-closing"' in board
        firing = await service.db(lambda: service.store.alert_rows(status="firing"))
        assert firing and {a["fiscal_year"] for a in firing} == {2025}
        assert f"2025 年度尚有 {len(firing)} 条预警未解除，将于 2026-01-31 随年度结束关闭" in board
        assert 'href="/reductions?year=2025"' in board
        last_year = await (await client.get("/reductions?year=2025")).text()
        assert "2025年度调减建议（2个项目）" in last_year and 'href="/reductions.xlsx?year=2025"' in last_year
        this_year = await (await client.get("/reductions")).text()
        assert "2026年度调减建议（0个项目）" in this_year
        sheet = await client.get("/reductions.xlsx?year=2025")
        assert sheet.status == 200 and "2025%E5%B9%B4%E5%BA%A6" in sheet.headers["Content-Disposition"]

    serve(db, january)
    later = tmp_path / "later.db"
    prepare(later, as_of="2026-02-02")

    async def february(client: TestClient[Any, Any], service: Service) -> None:
        await login(client, "jxk")
        assert 'data-testid="year-closing"' not in await (await client.get("/")).text()
        # the closed year's final list, as of its Dec 31
        final = await (await client.get("/reductions?year=2025")).text()
        assert "2025年度调减建议（2个项目）" in final

    serve(later, february)
