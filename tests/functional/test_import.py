"""CSV and XLSX exports of budget systems: both layouts, Chinese or English headers, 元 or 万元."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from openpyxl import Workbook

from connectors.files import InputError, read_events
from connectors.parsed import Accepted, Rejected
from connectors.tabular import TabularError
from streams.ingest import ingest
from streams.store import Store


def split(path: Path, **kw: str) -> tuple[list[Accepted], list[Rejected]]:
    items = list(read_events(path, **kw))  # type: ignore[arg-type]
    return [i for i in items if isinstance(i, Accepted)], [i for i in items if isinstance(i, Rejected)]


def test_projects_csv_in_gb18030_with_a_title_block_and_wan_amounts(tmp_path: Path) -> None:
    path = tmp_path / "projects.csv"
    path.write_bytes((
        "2025年项目预算批复表,,,,,,\n"
        "编制单位：某县财政局,,,,,,\n"
        "项目编码,项目名称,单位编码,单位名称,资金性质,年度,年初预算数（万元）\n"
        "XS,园区修缮经费项目,KC,高新区科创中心,一般公共预算,2025,150\n"
        "ZS,展示厅经费项目,KC,高新区科创中心,政府性基金预算,2025,10.5\n"
        "BAD,坏行,KC,高新区科创中心,彩票,2025,1\n"
        ",,,,,,\n"
        "YR,年度错误,KC,高新区科创中心,一般公共预算,二〇二五,1\n"
    ).encode("gb18030"))
    accepted, rejected = split(path)
    records = {(a.record.type, a.record.project_id): a.record for a in accepted}
    assert records[("budget_approved", "XS")].amount == 150 * 1_000_000  # 150万元 in fen
    assert records[("budget_approved", "ZS")].amount == 10_500_000
    registered = records[("project_registered", "ZS")]
    assert registered.details is not None and registered.details["fund_source"] == "government_fund"
    assert registered.day == dt.date(2025, 1, 1).toordinal()
    assert registered.event_id == "ZS@registered:2025"
    assert [a.source for a in accepted][:2] == [f"{path}:4", f"{path}:4"]
    assert [r.source for r in rejected] == [f"{path}:6", f"{path}:8"]
    assert "fund_source" in rejected[0].reason and "彩票" in rejected[0].raw
    assert "not a year" in rejected[1].reason


def test_payments_xlsx_with_date_cells_float_noise_and_refunds(tmp_path: Path) -> None:
    path = tmp_path / "payments.xlsx"
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "支付明细"
    sheet.append(["国库集中支付明细"])
    sheet.append(["支付凭证号", "项目编码", "支付日期", "支付金额", "收款人", "原支付凭证号"])
    sheet.append(["V1", "XS", dt.datetime(2025, 3, 15), 12345.670000000002, "某建设公司", None])
    sheet.append(["V2", "XS", "2025/4/1", "-345.67", None, "V1"])
    sheet.append(["V3", "XS", 20250501, 100, None, None])
    sheet.append(["V4", "XS", "2025-05-02", 1.005, None, None])
    sheet.append(["V5", None, "2025-05-03", 10, None, None])
    sheet.append(["V6", "XS", "2025年5月4日", 10, None, None])
    book.save(path)
    accepted, rejected = split(path)
    by_id = {a.record.event_id: a.record for a in accepted}
    assert by_id["V1"].type == "payment" and by_id["V1"].amount == 1234567
    assert by_id["V1"].details == {"payee": "某建设公司"}
    assert by_id["V2"].type == "payment_reversed" and by_id["V2"].amount == 34567
    assert by_id["V2"].details == {"original_event_id": "V1"}
    assert by_id["V3"].day == dt.date(2025, 5, 1).toordinal()
    assert by_id["V6"].day == dt.date(2025, 5, 4).toordinal()
    assert by_id["V2"].day == dt.date(2025, 4, 1).toordinal()
    assert [r.source for r in rejected] == [f"{path}:支付明细:6", f"{path}:支付明细:7"]
    assert "whole number of fen" in rejected[0].reason
    assert "project_id" in rejected[1].reason


def test_english_headers_and_unit_option(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("project_id,name,department_id,department_name,fund_source,fiscal_year,approved_amount\n"
                    "P1,Roads,D1,Transport,state_capital,2025,2.5\n", "utf-8-sig")
    accepted, _ = split(path, unit="wan")
    assert {a.record.type: a.record.amount for a in accepted}["budget_approved"] == 2_500_000


def test_unrecognised_files_are_refused_whole(tmp_path: Path) -> None:
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b,c\n1,2,3\n", "utf-8")
    with pytest.raises(TabularError, match="no header row"):
        split(odd)
    parquet = tmp_path / "x.parquet"
    parquet.write_bytes(b"PAR1")
    with pytest.raises(InputError, match="unknown file type"):
        read_events(parquet)
    with pytest.raises(InputError, match="no such file"):
        read_events(tmp_path / "missing.csv")


def test_importing_the_same_sheet_twice_appends_nothing(tmp_path: Path) -> None:
    path = tmp_path / "projects.csv"
    path.write_text("项目编码,项目名称,单位编码,单位名称,资金性质,年度,年初预算数\n"
                    "P1,项目一,D1,教育局,一般公共预算,2025,1000\n", "utf-8")
    with Store(tmp_path / "bw.db") as store:
        first = ingest(store, read_events(path))
        second = ingest(store, read_events(path))
    assert (first.applied, first.duplicates) == (2, 0)
    assert (second.applied, second.duplicates) == (0, 2)
