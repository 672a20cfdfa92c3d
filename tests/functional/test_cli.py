"""CLI end to end on scenarios from the source practice (the real console script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from connectors.wall_clock import today_in_china
from streams.store import Store
from tests import builders as b

BIN = Path(sys.executable).parent / "budgetwatch"


def cli(db: Path, *args: str, check: bool = True, profile: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUDGETWATCH_")}
    env["BUDGETWATCH_DB"] = str(db)
    if profile:
        env["BUDGETWATCH_PROFILE"] = profile
    return subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, check=check, timeout=120)


def as_json(db: Path, *args: str) -> Any:
    return json.loads(cli(db, *args, "--json").stdout)


def science_park() -> list[dict[str, Any]]:
    """高新区科创中心 (seed report 000): of three projects, two are under 30% at 09-30 —
    园区修缮 pays a little every month, 展示厅 never pays — while 启迪运营 is on course."""
    dept = {"department_id": "KC", "department_name": "高新区科创中心"}
    events = []
    for pid, name, budget in (("QD", "启迪运营管理项目", "2000000"), ("XS", "园区修缮经费项目", "1500000"),
                              ("ZS", "展示厅经费项目", "100000")):
        events += [b.registered(pid, name=name, on="2025-01-10", **dept), b.approved(pid, budget, on="2025-01-10")]
    for month in range(2, 10):
        events.append(b.payment("XS", "50000", on=f"2025-{month:02d}-15", event_id=f"XS-{month}"))
        events.append(b.payment("QD", "175000", on=f"2025-{month:02d}-20", event_id=f"QD-{month}"))
    return events


@pytest.fixture
def park(tmp_path: Path) -> Path:
    db = tmp_path / "park.db"
    source = tmp_path / "park.jsonl"
    source.write_bytes(b.jsonl(science_park()))
    ingest = cli(db, "ingest", str(source))
    assert "read=22 accepted=22 duplicate=0 rejected=0" in ingest.stdout
    cli(db, "run", "--as-of", "2025-09-30")
    return db


def test_two_of_three_projects_under_30_percent(park: Path) -> None:
    alerts = as_json(park, "alerts")
    fired = {(a["rule"], a["subject_id"]): a for a in alerts}
    assert {s for r, s in fired if r == "low_execution"} == {"XS", "ZS"}
    assert {s for r, s in fired if r == "stalled"} == {"ZS"}  # only the project that never paid
    assert fired[("low_execution", "XS")]["since"] == "2025-06-30"
    assert fired[("stalled", "ZS")]["since"] == "2025-04-10"  # 90 days after the approval
    xs = fired[("low_execution", "XS")]
    assert xs["severity"] == "critical" and xs["department_id"] == "KC" and xs["status"] == "firing"
    # The figures that caused it: on 06-30, five payments of 50,000 had been made.
    assert xs["figures"]["execution_rate"] == 0.166666  # 1/6 cut, not rounded, at six decimals
    assert "园区修缮经费项目" in xs["message"] and "16.67%" in xs["message"]
    for key in ("alert_id", "rule", "severity", "status", "subject_type", "subject_id", "department_id",
                "fiscal_year", "since", "figures", "message"):
        assert key in xs
    assert ("department_low_execution", "KC") not in fired  # 1.8M of 3.6M = 50%


def test_reduction_proposals_100_percent_and_partial(park: Path, tmp_path: Path) -> None:
    xlsx = tmp_path / "调减建议.xlsx"
    proposals = json.loads(cli(park, "reductions", "--json", "--xlsx", str(xlsx)).stdout)
    by_id = {p["project_id"]: p for p in proposals}
    assert set(by_id) == {"XS", "ZS"}
    assert by_id["ZS"]["proposed_reduction"] == "100000.00" and by_id["ZS"]["reduction_rate"] == 1.0
    # 400,000 paid by 09-30 (day 273): projected 534,798.53, so 965,201.47 → 965,200 (down to 100 元).
    assert by_id["XS"]["proposed_reduction"] == "965200.00"
    assert by_id["XS"]["reduction_rate"] == round(965200 / 1500000, 6)
    for key in ("project_id", "name", "department_id", "budget", "paid", "proposed_reduction", "reduction_rate"):
        assert key in by_id["XS"]
    sheet = load_workbook(xlsx).active
    rows = list(sheet.iter_rows(values_only=True))
    head = rows[0]
    assert head[0] == "项目编码" and "建议调减金额（元）" in head
    assert {r[0] for r in rows[1:-1]} == {"XS", "ZS"}
    # Laid out for a finance office: money as numbers with separators, the rate as a
    # percentage of the full ratio, a 合计 row of values, frozen header with filters.
    cut, rate = head.index("建议调减金额（元）") + 1, head.index("调减率") + 1
    xs_row = next(r for r in range(2, sheet.max_row) if sheet.cell(r, 1).value == "XS")
    assert sheet.cell(xs_row, cut).number_format == "#,##0.00" and sheet.cell(xs_row, cut).value == 965200
    assert sheet.cell(xs_row, rate).number_format == "0.00%"
    assert sheet.cell(xs_row, rate).value == by_id["XS"]["reduction_rate"]
    total = rows[-1]
    assert total[0] == "合计" and total[cut - 1] == 965200 + 100000 and total[rate - 1] is None
    assert sheet.freeze_panes == "A2" and sheet.auto_filter.ref == f"A1:K{sheet.max_row - 1}"
    assert sheet.column_dimensions["B"].width >= 2 * len("园区修缮经费项目")  # Chinese is two columns wide


def test_status_json_shape_and_region_rate(park: Path) -> None:
    status = as_json(park, "status")
    assert status["as_of"] == "2025-09-30"
    assert status["region"] == {"budget": "3600000.00", "paid": "1800000.00", "execution_rate": 0.5,
                                "time_progress": round(273 / 365, 6)}
    assert status["departments"][0]["execution_rate"] == 0.5
    project = next(p for p in status["projects"] if p["project_id"] == "QD")
    for key in ("project_id", "name", "department_id", "fund_source", "budget", "paid", "execution_rate",
                "expected_progress", "performance_completion"):
        assert key in project
    assert project["paid"] == "1400000.00" and project["execution_rate"] == 0.7


def test_human_output_is_chinese(park: Path) -> None:
    assert "全区预算执行情况" in cli(park, "status").stdout
    assert "当前预警" in cli(park, "alerts").stdout
    assert "调减建议" in cli(park, "reductions").stdout
    transitions = cli(park, "alerts", "--all").stdout
    assert "预警变化记录" in transitions and "新预警" in transitions


def test_all_lists_every_transition_including_resolutions(park: Path, tmp_path: Path) -> None:
    late = tmp_path / "late.jsonl"
    late.write_bytes(b.jsonl([b.payment("XS", "600000", on="2025-10-09", event_id="XS-big")]))
    cli(park, "ingest", str(late))
    cli(park, "run")  # default: up to the latest event date
    transitions = as_json(park, "alerts", "--all")
    xs_low = [(t["transition"], t["date"]) for t in transitions
              if t["subject_id"] == "XS" and t["rule"] == "low_execution"]
    # undisposed, the alert escalated to the bureau on the 11th working day (the disposition loop)
    assert xs_low == [("firing", "2025-06-30"), ("disposition_overdue", "2025-07-15"), ("resolved", "2025-10-09")]
    assert as_json(park, "status")["as_of"] == "2025-10-09"


def test_region_totals_give_a_known_rate_to_two_decimals(tmp_path: Path) -> None:
    db = tmp_path / "region.db"
    events = []
    for n, (budget, paid) in enumerate([("1000000.00", "123456.78"), ("2500000.50", "1700000.00"),
                                        ("333333.33", "0.01")]):
        pid = f"R{n}"
        events += [b.registered(pid, department_id=f"D{n}", department_name=f"部门{n}"), b.approved(pid, budget),
                   b.payment(pid, paid, on="2025-05-05")]
    source = tmp_path / "region.jsonl"
    source.write_bytes(b.jsonl(events))
    cli(db, "ingest", str(source))
    cli(db, "run", "--as-of", "2025-06-30")
    region = as_json(db, "status")["region"]
    assert region["budget"] == "3833333.83" and region["paid"] == "1823456.79"
    assert f"{region['execution_rate']:.2f}" == "0.48"  # 1,823,456.79 / 3,833,333.83 = 47.57%


def test_bad_input_of_every_kind_is_kept_with_its_reason(tmp_path: Path) -> None:
    db = tmp_path / "bad.db"
    source = tmp_path / "mixed.jsonl"
    cli(db, "generate", "--projects", "3", "--out", str(source))
    result = json.loads(cli(db, "ingest", "--json", str(source)).stdout)
    assert result["rejected"] == 12
    assert result["read"] == result["accepted"] + result["rejected"]
    assert result["accepted"] == result["applied"] + result["duplicate"]
    rejected = as_json(db, "rejected")
    assert len(rejected) == 12
    reasons = " | ".join(r["reason"] for r in rejected)
    for expected in ("not valid JSON", "unknown event type 'grant'", "greater than 0", "is not a date",
                     "missing field 'project_id'", "whole number of fen", "not a decimal number",
                     "must be a JSON object", "fund_source"):
        assert expected in reasons
    assert all(r["source"].startswith(str(source) + ":") and r["raw"] for r in rejected)
    # The table holds the latest (a wrong file imported is a dead letter per line).
    latest = cli(db, "rejected", "--limit", "3").stdout
    assert "拒收记录（12条，显示最近3条）" in latest and "另有 9 条较早的未显示" in latest
    with Store(db, existing=True) as store:
        assert store.latest_rejections(3) == (rejected[-3:], 12)
    assert "拒收记录（12条）" in cli(db, "rejected").stdout
    # Nothing else was lost: the valid lines are all in the log.
    status_run = cli(db, "run")
    assert "events=" in status_run.stdout


def test_errors_are_clear_and_exit_non_zero(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    missing = cli(db, "ingest", str(tmp_path / "nope.jsonl"), check=False)
    assert missing.returncode == 2 and "no such file" in missing.stdout
    wrong = cli(db, "run", check=False, profile="nationwide")
    assert wrong.returncode == 2 and "not a shipped profile" in wrong.stdout
    source = tmp_path / "x.jsonl"
    source.write_bytes(b.jsonl([b.registered("P"), b.approved("P", "10")]))
    cli(db, "ingest", str(source))
    cli(db, "run", "--as-of", "2025-08-01")
    back = cli(db, "run", "--as-of", "2025-07-01", check=False)
    assert back.returncode == 2 and "already at 2025-08-01" in back.stdout


def test_the_stricter_provincial_profile(tmp_path: Path) -> None:
    db = tmp_path / "prov.db"
    source = tmp_path / "park.jsonl"
    source.write_bytes(b.jsonl(science_park()))
    cli(db, "ingest", str(source))
    cli(db, "run", "--as-of", "2025-09-30", profile="provincial")
    alerts = as_json(db, "alerts")
    low = {a["subject_id"] for a in alerts if a["rule"] == "low_execution"}
    # QD at 70% is above the 08-31 floor of 60%; the department at 50% is below it.
    assert low == {"XS", "ZS"}
    assert any(a["rule"] == "department_low_execution" and a["severity"] == "critical" for a in alerts)


def test_a_mistyped_future_date_does_not_push_business_time_forward(tmp_path: Path) -> None:
    db = tmp_path / "typo.db"
    source = tmp_path / "typo.jsonl"
    source.write_bytes(b.jsonl([
        b.registered("P"), b.approved("P", "1000"), b.payment("P", "10", on="2025-03-01"),
        b.payment("P", "20", on="2095-03-01", event_id="TYPO"),  # 2095 for 2025
    ]))
    cli(db, "ingest", str(source))
    early = cli(db, "run", "--as-of", "2025-02-01").stdout.replace("\n", "")  # before every event
    assert "2 条事件的业务日期晚于本次处理截止日 2025-02-01（--as-of）" in early
    assert "不晚于今天的，不带 --as-of 再运行 run 即可处理" in early
    before = today_in_china().isoformat()
    run = cli(db, "run")  # no --as-of: up to the latest event date, but never past today
    said = run.stdout.replace("\n", "")  # rich wraps long lines
    # It waits because it is after today — not after 2025-03-01, the business clock it reached —
    # and a plain --as-of cannot reach it: what works is named.
    assert any(f"1 条事件的业务日期晚于今天（{day}，北京时间）" in said
               for day in {before, today_in_china().isoformat()})
    assert "晚于 2025-03-01" not in said and "确需处理请用 --as-of" not in said
    assert "确需现在处理请用 --as-of 2095-03-01 --allow-future" in said
    status = as_json(db, "status")
    assert status["as_of"] == "2025-03-01"  # the latest event date that is not in the future
    assert status["region"]["paid"] == "10.00"
    # An explicit date past today is refused: the clock could never come back from it.
    refused = cli(db, "run", "--as-of", "2095-03-01", check=False)
    assert refused.returncode == 2 and "晚于今天" in refused.stdout + refused.stderr
    assert "--allow-future" in refused.stdout + refused.stderr
    assert as_json(db, "status")["as_of"] == "2025-03-01"
    cli(db, "run", "--as-of", "2095-03-01", "--allow-future")  # a simulation, asked for
    assert as_json(db, "status")["as_of"] == "2095-03-01"
    assert as_json(db, "status", "--year", "2025")["region"]["paid"] == "30.00"


def test_a_year_missing_from_the_holiday_calendar_is_warned_about(park: Path) -> None:
    covered = cli(park, "run", "--as-of", "2026-03-31")
    assert "节假日安排未包含" not in covered.stdout
    december = cli(park, "run", "--as-of", "2026-12-24", "--allow-future")  # its deadlines reach into 2027
    assert "节假日安排未包含 2027 年" in december.stdout
    uncovered = cli(park, "run", "--as-of", "2027-01-15", "--allow-future")
    assert "节假日安排未包含 2027 年" in uncovered.stdout


def test_human_status_says_what_its_figures_leave_out(tmp_path: Path) -> None:
    """Payments to a project never registered are in no figure (JSON lists them in
    unregistered_projects); a year with no project shows zeros. The table alone said
    neither."""
    db = tmp_path / "bw.db"
    events = tmp_path / "e.jsonl"
    events.write_bytes(b.jsonl([
        b.registered("P1", on="2025-01-02"), b.approved("P1", "1000000", on="2025-01-02"),
        b.payment("P9", "5000", on="2025-03-01"),
    ]))
    cli(db, "ingest", str(events))
    cli(db, "run", "--as-of", "2025-03-31")
    said = cli(db, "status").stdout
    assert "1 个项目有支付等事件但尚未登记（P9）" in said and "没有已登记的项目" not in said
    other_year = cli(db, "status", "--year", "2024").stdout
    assert "2024 年度没有已登记的项目" in other_year


def test_the_status_table_says_which_projects_have_no_rate_and_counts_no_overall_line(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    events = [
        b.registered("P1", on="2025-01-10"), b.approved("P1", "100000", on="2025-01-10"),
        b.payment("P1", "29999.99", on="2025-03-01"),
        b.registered("CUT", on="2025-01-10"), b.approved("CUT", "500000", on="2025-01-10"),
        b.adjusted("CUT", "-500000", on="2025-02-01"), b.payment("CUT", "10000", on="2025-01-20"),
        b.registered("REFUND", on="2025-01-10"), b.approved("REFUND", "1000", on="2025-01-10"),
        b.payment("REFUND", "100", on="2025-02-01"), b.reversal("REFUND", "150", on="2025-02-05"),
        b.registered("OVERALL", on="2025-01-10", kind="department_overall"),
        b.approved("OVERALL", "900000", on="2025-01-10"),
    ]
    (tmp_path / "e.jsonl").write_bytes(b.jsonl(events))
    cli(db, "ingest", str(tmp_path / "e.jsonl"))
    cli(db, "run", "--as-of", "2025-06-30")
    env = {"COLUMNS": "250"}
    out = subprocess.run([str(BIN), "status", "--db", str(db)], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout
    region_row = next(line for line in out.splitlines() if "万元" in line)
    assert region_row.split("│")[-2].strip() == "3"  # P1, CUT, REFUND; the overall line is no project
    assert "另有 1 个项目预算为 0 或为负、没有执行率，未列入上表（CUT）" in out
    assert "1 个项目的已支付或预算为负数（REFUND）：退回多于支付" in out
    status = as_json(db, "status")
    assert [p["execution_rate"] for p in status["projects"] if p["project_id"] == "P1"] == [0.299999]
    (low,) = [a for a in as_json(db, "alerts") if a["rule"] == "low_execution" and a["subject_id"] == "P1"]
    assert "预算执行率为29.9999%，低于30.0000%" in low["message"] and low["figures"]["execution_rate"] == 0.299999


def test_reductions_are_one_fiscal_year_s(tmp_path: Path) -> None:
    """In July 2026 a 2025 project still under its floor was proposed beside this year's,
    with no year on either, and the XLSX 合计 added two years' budgets (audit). A closed
    year's are its final list, as of its Dec 31."""
    from openpyxl import load_workbook

    db = tmp_path / "bw.db"
    events = tmp_path / "e.jsonl"
    events.write_bytes(b.jsonl([
        b.registered("P1", on="2025-01-02"), b.approved("P1", "1000000.00", on="2025-01-02"),
        b.payment("P1", "100000.00", on="2025-02-01"),
        b.registered("Q1", year=2026, on="2026-01-05"), b.approved("Q1", "3000000.00", on="2026-01-05"),
        b.payment("Q1", "300000.00", on="2026-02-01"),
    ]))
    cli(db, "ingest", str(events))
    cli(db, "run", "--as-of", "2026-01-20")
    closing = as_json(db, "reductions", "--year", "2025")
    assert [(p["project_id"], p["fiscal_year"]) for p in closing] == [("P1", 2025)]
    # each year's alerts can be asked for (in January last year's fire until its close)
    assert {a["fiscal_year"] for a in as_json(db, "alerts")} == {2025}
    assert as_json(db, "alerts", "--year", "2026") == []
    assert "2025年度当前预警" in cli(db, "alerts", "--year", "2025").stdout
    assert as_json(db, "reductions") == []  # 2026: nothing under a floor in January
    assert "2026年度暂无调减建议；上一年度的请用 --year 2025" in cli(db, "reductions").stdout
    cli(db, "run", "--as-of", "2026-07-15")
    this_year = as_json(db, "reductions")
    assert [(p["project_id"], p["fiscal_year"]) for p in this_year] == [("Q1", 2026)]
    assert {a["fiscal_year"] for a in as_json(db, "alerts", "--year", "2026")} == {2026}
    history = as_json(db, "alerts", "--all", "--year", "2025")
    assert history and {t["fiscal_year"] for t in history} == {2025}
    assert len(history) < len(as_json(db, "alerts", "--all"))
    # closed on 2026-01-31 (year_end): its final list, as of its Dec 31 — what was left unspent
    (final,) = as_json(db, "reductions", "--year", "2025")
    assert (final["project_id"], final["fiscal_year"], final["projected_spend"], final["proposed_reduction"]) == (
        "P1", 2025, "100000.00", "900000.00")
    assert "2025年度的预警已于 2026-01-31 停止跟踪（年度结束）" in cli(db, "reductions", "--year", "2025").stdout
    final_xlsx = tmp_path / "final.xlsx"
    cli(db, "reductions", "--year", "2025", "--xlsx", str(final_xlsx))
    final_sheet = load_workbook(final_xlsx).active
    # dated the day of its sums: anything adjusted or paid since the year is counted in
    assert final_sheet is not None and final_sheet.title == "2025年度调减建议（截至2026-07-15）"
    xlsx = tmp_path / "r.xlsx"
    human = cli(db, "reductions", "--xlsx", str(xlsx))
    assert "2026年度调减建议（1个项目）" in human.stdout
    sheet = load_workbook(xlsx).active
    assert sheet is not None and sheet.title == "2026年度调减建议（截至2026-07-15）"


def test_reductions_leave_out_department_overall_lines(tmp_path: Path) -> None:
    """A 部门整体支出 line under its floor was proposed beside the department's projects, and
    the 合计 of the JSON, the XLSX and the board counted the same money twice (audit)."""
    db = tmp_path / "bw.db"
    events = tmp_path / "e.jsonl"
    events.write_bytes(b.jsonl([
        b.registered("P1", on="2025-01-02"), b.approved("P1", "1000000.00", on="2025-01-02"),
        b.payment("P1", "100000.00", on="2025-02-01"),
        b.registered("ALL", on="2025-01-02", kind="department_overall"),
        b.approved("ALL", "5000000.00", on="2025-01-02"), b.payment("ALL", "100000.00", on="2025-02-01"),
    ]))
    cli(db, "ingest", str(events))
    cli(db, "run", "--as-of", "2025-07-15")
    # the line is monitored like a project: its own low_execution alert fires
    assert {a["subject_id"] for a in as_json(db, "alerts") if a["rule"] == "low_execution"} == {"P1", "ALL"}
    assert [p["project_id"] for p in as_json(db, "reductions")] == ["P1"]
    human = cli(db, "reductions").stdout
    assert "2025年度调减建议（1个项目）" in human and "ALL" not in human
    xlsx = tmp_path / "r.xlsx"
    cli(db, "reductions", "--xlsx", str(xlsx))
    sheet = load_workbook(xlsx).active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    assert [r[0] for r in rows[1:]] == ["P1", "合计"]
    assert rows[-1][rows[0].index("建议调减金额（元）")] == rows[1][rows[0].index("建议调减金额（元）")]


def test_the_human_alerts_table_shows_the_most_urgent_or_the_latest_and_says_what_it_left_out(park: Path) -> None:
    """`alerts --all` printed every transition: 714k lines, 152 s and 2 GB at 10k projects."""
    active = as_json(park, "alerts")
    history = as_json(park, "alerts", "--all")
    assert len(active) >= 2 and len(history) >= 3
    one = cli(park, "alerts", "--limit", "1").stdout
    assert f"当前预警（{len(active):,}条，显示最紧要的1条）" in one
    assert f"另有 {len(active) - 1:,} 条未显示" in one
    urgent = min(active, key=lambda a: (a["severity"] != "critical", a["since"], a["alert_id"]))
    assert urgent["subject_id"] in one
    every = cli(park, "alerts", "--limit", "0").stdout
    assert f"当前预警（{len(active):,}条）" in every and "未显示" not in every
    latest = cli(park, "alerts", "--all", "--limit", "2").stdout
    assert f"预警变化记录（{len(history):,}条，显示最近2条）" in latest
    assert f"另有 {len(history) - 2:,} 条未显示" in latest
    assert history[0]["date"] < history[-2]["date"] and all(t["date"] in latest for t in history[-2:])
