"""CSV and XLSX exports of budget systems: both layouts, Chinese or English headers, 元 or 万元."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook

from connectors.files import InputError, read_events
from connectors.parsed import Accepted, Rejected
from connectors.tabular import TabularError
from streams.ingest import ingest
from streams.store import Store


def write_book(path: Path, sheets: dict[str, list[list[Any]]]) -> Path:
    """An XLSX workbook with these sheets (title -> rows), in order."""
    book = Workbook()
    first = book.active
    assert first is not None
    book.remove(first)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


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
    path = write_book(tmp_path / "payments.xlsx", {"支付明细": [
        ["国库集中支付明细"],
        ["支付凭证号", "项目编码", "支付日期", "支付金额", "收款人", "原支付凭证号"],
        ["V1", "XS", dt.datetime(2025, 3, 15), 12345.670000000002, "某建设公司", None],
        ["V2", "XS", "2025/4/1", "-345.67", None, "V1"],
        ["V3", "XS", 20250501, 100, None, None],
        ["V4", "XS", "2025-05-02", 1.005, None, None],
        ["V5", None, "2025-05-03", 10, None, None],
        ["V6", "XS", "2025年5月4日", 10, None, None],
    ]})
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


def test_a_unit_declared_above_the_table_scales_the_amounts_that_name_none(tmp_path: Path) -> None:
    """Budget systems print "单位：万元" above the table and bare headers below it: read as
    元, every amount was 10,000 times too small, with nothing rejected."""
    path = tmp_path / "projects.csv"
    path.write_text(
        "2025年项目预算表,,,,,,\n"
        ",,,,,单位：万元,\n"
        "项目编码,项目名称,单位编码,单位名称,资金性质,年度,年初预算数\n"
        "E1,设备购置,D1,教育局,一般公共预算,2025,120\n",
        "utf-8",
    )
    accepted, rejected = split(path)
    amounts = {a.record.type: a.record.amount for a in accepted}
    assert not rejected
    assert amounts["budget_approved"] == 120 * 1_000_000  # 120万元 in fen
    explicit = {a.record.type: a.record.amount for a in split(path, unit="yuan")[0]}
    assert explicit["budget_approved"] == 12_000  # an explicit --unit still wins

    payments = tmp_path / "payments.csv"  # a header that names its unit keeps it
    payments.write_text(
        "单位：万元\n支付凭证号,支付日期,项目编码,支付金额（元）\nV1,2025-03-01,E1,1500\n", "utf-8"
    )
    (payment,), _ = split(payments)
    assert payment.record.amount == 150_000

    both = tmp_path / "both.csv"
    both.write_text(
        "单位：万元\n金额单位：元\n项目编码,项目名称,单位编码,单位名称,资金性质,年度,年初预算数\n"
        "E1,设备购置,D1,教育局,一般公共预算,2025,120\n",
        "utf-8",
    )
    with pytest.raises(TabularError, match="declare two units"):
        split(both)


def test_a_blank_budget_cell_is_a_dead_letter_not_a_project_without_budget(tmp_path: Path) -> None:
    """Registered with no budget_approved, the project raised 无预算支出 overspend alerts on
    its first payment; a formula cell saved without its value reads the same way."""
    path = write_book(tmp_path / "projects.xlsx", {"项目": [
        ["项目编码", "项目名称", "单位编码", "单位名称", "资金性质", "年度", "年初预算数"],
        ["E1", "设备购置", "D1", "教育局", "一般公共预算", 2025, None],
        ["E2", "校舍维修", "D1", "教育局", "一般公共预算", 2025, "  "],
        ["E3", "课桌更新", "D1", "教育局", "一般公共预算", 2025, 0],
        ["E4", "图书购置", "D1", "教育局", "一般公共预算", 2025, "=100*3"],  # no cached value
    ]})
    accepted, rejected = split(path)
    assert [r.source for r in rejected] == [f"{path}:项目:2", f"{path}:项目:3", f"{path}:项目:5"]
    assert all("年初预算数为空" in r.reason for r in rejected)
    assert {(a.record.type, a.record.project_id, a.record.amount) for a in accepted} == {
        ("project_registered", "E3", None), ("budget_approved", "E3", 0),
    }


def test_a_file_that_is_not_really_a_workbook_is_refused_with_what_to_do(tmp_path: Path) -> None:
    renamed = tmp_path / "old.xlsx"
    renamed.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 512)  # an .xls (OLE2) renamed
    with pytest.raises(TabularError, match=r"不是可读取的 \.xlsx 工作簿.*另存为无密码的 \.xlsx"):
        split(renamed)


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
                    "P1,项目一,D1,教育局,一般公共预算,2025,1000\n"
                    "P2,项目二,D1,教育局,彩票,2025,1000\n", "utf-8")
    with Store(tmp_path / "bw.db") as store:
        first = ingest(store, read_events(path))
        second = ingest(store, read_events(path))
        dead_letters = store.rejections()
    assert (first.applied, first.duplicates, first.rejected) == (2, 0, 1)
    assert (second.applied, second.duplicates, second.rejected) == (0, 2, 1)  # read = accepted + rejected
    # the line refused again is the same dead letter, kept once
    assert [r["source"] for r in dead_letters] == [f"{path}:3"]


PAY_HEADER = "支付凭证号,支付日期,项目编码,支付金额\n"


def test_two_columns_for_one_field_refuse_the_file_instead_of_mixing_value_and_unit(tmp_path: Path) -> None:
    """支付金额（万元） and 金额 both mean the amount: the value came from one and the unit
    from the other, 12.5 万元 stored as 12.50 元."""
    path = tmp_path / "pay.csv"
    path.write_text("支付凭证号,支付日期,项目编码,支付金额（万元）,金额\nV1,2025-03-01,P1,12.5,125000\n",
                    encoding="utf-8")
    refusal = r"多列对应同一字段（amount: 支付金额（万元） / 金额）.*several columns mean the same field"
    with pytest.raises(TabularError, match=refusal):
        split(path)


def test_a_broken_csv_row_is_a_dead_letter_and_the_rest_of_the_file_is_read(tmp_path: Path) -> None:
    long_field = tmp_path / "long.csv"
    long_field.write_text(PAY_HEADER + f"V1,2025-03-01,P1,{'9' * 200_000}\nV2,2025-03-02,P1,10\n", encoding="utf-8")
    accepted, rejected = split(long_field)
    assert [a.record.event_id for a in accepted] == ["V2"]
    assert [r.source for r in rejected] == [f"{long_field}:2"]

    old_mac = tmp_path / "cr.csv"
    old_mac.write_bytes(PAY_HEADER.replace("\n", "\r").encode() + b"V1,2025-03-01,P1,10\rV2,2025-03-02,P1,20\r")
    accepted, rejected = split(old_mac)
    assert ([a.record.event_id for a in accepted], rejected) == (["V1", "V2"], [])

    stray = tmp_path / "stray.csv"
    stray.write_text(PAY_HEADER + 'V1,2025-03-01,P1,10\nV2,2025-03-02,"P1,20\nV3,2025-03-03,P1,30\n', encoding="utf-8")
    accepted, rejected = split(stray)
    assert [a.record.event_id for a in accepted] == ["V1", "V3"]  # the lines after it are read on
    assert len(rejected) == 1 and rejected[0].source == f"{stray}:3"
    assert "unclosed quote" in rejected[0].reason and rejected[0].raw == 'V2,2025-03-02,"P1,20'

    sloppy = tmp_path / "sloppy.csv"  # broken quoting is refused, never guessed at
    sloppy.write_text(PAY_HEADER.replace("\n", ",收款人\n") + 'V1,2025-03-01,P1,"1"500.00,x\n'
                      'V2,2025-03-02,P1,20,"北京"老字号"食品公司"\nV3,2025-03-03,P1,30,x\n', encoding="utf-8")
    accepted, rejected = split(sloppy)
    assert [a.record.event_id for a in accepted] == ["V3"]  # "1"500.00 was once read as 1500.00
    assert [(r.source.rsplit(":", 1)[1], "malformed quoting on line" in r.reason) for r in rejected] == [
        ("2", True), ("3", True)]


def test_a_long_multi_line_cell_is_one_row_and_a_broken_one_is_refused_whole(tmp_path: Path) -> None:
    header = PAY_HEADER.replace("\n", ",收款人\n")
    long_cell = tmp_path / "long.csv"  # a 150-line cell: one record, not 150 rows
    long_cell.write_text(header + 'V1,2025-03-01,P1,10,"' + "\n".join(f"l{n}" for n in range(150)) + '"\n'
                         "V2,2025-03-02,P1,20,x\n", encoding="utf-8")
    accepted, rejected = split(long_cell)
    assert ([a.record.event_id for a in accepted], rejected) == (["V1", "V2"], [])  # no line as a row
    assert accepted[0].record.details is not None and accepted[0].record.details["payee"].count("\n") == 149
    broken = tmp_path / "broken.csv"  # a stray quote in the middle of a multi-line cell
    broken.write_text(header + 'V1,2025-03-01,P1,10,"first\nV9,2025-03-09,P9,99,"x"y\nlast"\n'
                      "V2,2025-03-02,P1,20,x\n", encoding="utf-8")
    accepted, rejected = split(broken)
    assert [a.record.event_id for a in accepted] == ["V2"]  # V9, inside the cell, is never a row
    assert [r.source for r in rejected] == [f"{broken}:2", f"{broken}:4"] and "lines 2-3" in rejected[0].reason


def test_a_bad_byte_inside_a_cell_that_spans_lines_costs_that_row_only(tmp_path: Path) -> None:
    """Blanking the bad line dropped its closing quote: every later row was swallowed."""
    path = tmp_path / "pay.csv"
    rows = [f"V{n},2025-03-01,P1,{n},x\n".encode() for n in range(1, 1002)]
    rows[1] = b'V2,2025-03-01,P1,2,"\xe6\x9f\x90\xff\n\xe5\x85\xac\xe5\x8f\xb8"\n'
    path.write_bytes(PAY_HEADER.replace("\n", ",收款人\n").encode() + b"".join(rows))
    accepted, rejected = split(path)
    assert len(accepted) == 1000 and "V2" not in {a.record.event_id for a in accepted}
    assert [r.source for r in rejected] == [f"{path}:3"]
    assert "line 3 is not valid utf-8" in rejected[0].reason and rejected[0].raw.count("\n") == 1


def test_line_numbers_count_physical_lines_after_a_cell_that_spans_lines(tmp_path: Path) -> None:
    path = tmp_path / "pay.csv"
    header = PAY_HEADER.replace("\n", ",收款人\n")
    path.write_text(header + 'V1,2025-03-01,P1,10,"某建设\n公司"\nV2,2025-02-30,P1,10,x\n', encoding="utf-8")
    accepted, rejected = split(path)
    assert [a.record.event_id for a in accepted] == ["V1"]
    assert [r.source for r in rejected] == [f"{path}:4"]


def test_one_undecodable_line_is_a_dead_letter_not_a_spoiled_file(tmp_path: Path) -> None:
    gbk = tmp_path / "gbk.csv"
    good = "项目编码,项目名称,单位编码,单位名称,资金性质,年度,年初预算数\nA,校舍维修,D1,教育局,一般公共预算,2025,100\n"
    gbk.write_bytes(good.encode("gb18030") + b"B,\xff\xfe\xfd,D1,\xbd\xcc\xd3\xfd\xbe\xd6,general,2025,100\n")
    accepted, rejected = split(gbk)
    assert {a.record.project_id for a in accepted} == {"A"}
    assert [r.source for r in rejected] == [f"{gbk}:3"] and "not valid gb18030" in rejected[0].reason
    utf8 = tmp_path / "utf8.csv"
    bad_row = b"B,\xe6\xa0,D1,x,general,2025,100\n"
    utf8.write_bytes(good.encode() + bad_row + "C,路灯,D1,教育局,general,2025,5\n".encode())
    accepted, rejected = split(utf8)
    assert {a.record.project_id for a in accepted} == {"A", "C"}  # the bad row is not let in with U+FFFD
    assert [r.source for r in rejected] == [f"{utf8}:3"] and "not valid utf-8" in rejected[0].reason


def test_xlsx_amounts_are_never_rounded_but_formula_noise_is_absorbed(tmp_path: Path) -> None:
    path = write_book(tmp_path / "pay.xlsx", {"支付": [
        ["支付凭证号", "支付日期", "项目编码", "支付金额"],
        ["V1", "2025-03-01", "P1", 1234567.891],  # a third decimal: refused
        ["V2", "2025-03-01", "P1", 12345.670000000002],  # a formula's binary noise
        ["V3", "2025-03-01", "P1", 1e300],  # absurd: refused, not an OverflowError
        ["V4", "2025-03-01", "P1", 0.1 + 0.2],
        ["V5", "2025-03-01", "P1", 25729594.309999958],  # what Excel stores for a 500-term =SUM
    ]})
    accepted, rejected = split(path)
    assert {a.record.event_id: a.record.amount for a in accepted} == {"V2": 1234567, "V4": 30, "V5": 2572959431}
    assert [r.source.rsplit(":", 1)[1] for r in rejected] == ["2", "4"]
    assert "whole number of fen" in rejected[0].reason and "check the unit" in rejected[1].reason


def test_every_sheet_of_a_workbook_is_read_and_a_sheet_without_header_is_reported(tmp_path: Path) -> None:
    path = write_book(tmp_path / "book.xlsx", {
        "项目": [
            ["项目编码", "项目名称", "单位编码", "单位名称", "资金性质", "年度", "年初预算数"],
            ["P1", "校舍维修", "D1", "教育局", "一般公共预算", 2025, 1000],
            ["P2", "路灯", "D1", "教育局", "一般公共预算", "2025²", 1000],
        ],
        "支付": [["支付凭证号", "支付日期", "项目编码", "支付金额"], ["V1", dt.date(2025, 3, 1), "P1", 100]],
        "说明": [["本表由预算系统导出"]],
    })
    accepted, rejected = split(path)
    assert sorted((a.record.type, a.record.event_id) for a in accepted) == [
        ("budget_approved", "P1@approved:2025"), ("payment", "V1"), ("project_registered", "P1@registered:2025")]
    assert [r.source for r in rejected] == [f"{path}:项目:3", f"{path}:说明"]
    assert "is not a year" in rejected[0].reason and rejected[1].reason.startswith("sheet skipped")


def test_exported_text_that_starts_with_an_equals_sign_is_never_a_formula(tmp_path: Path) -> None:
    import zipfile

    from connectors.exports import write_xlsx

    path = tmp_path / "reductions.xlsx"
    name = '=HYPERLINK("http://evil.example","点击查看")'
    write_xlsx(path, ["项目名称", "建议调减额"], [[name, 1000], ["校舍维修", -5]], "调减建议")
    sheet = zipfile.ZipFile(path).read("xl/worksheets/sheet1.xml").decode()
    assert "<f>" not in sheet and "HYPERLINK" in sheet
    from openpyxl import load_workbook

    cell = load_workbook(path).active["A2"]  # type: ignore[index]
    assert (cell.value, cell.data_type) == (name, "s")


def test_a_project_listed_twice_with_other_figures_is_a_dead_letter(tmp_path: Path) -> None:
    """One row per fund source gave both rows the same ids: the second budget vanished."""
    path = tmp_path / "projects.csv"
    path.write_text(
        "项目编码,项目名称,单位编码,单位名称,资金性质,年度,年初预算数\n"
        "P1,校舍维修,D1,教育局,一般公共预算,2025,100000\n"
        "P1,校舍维修,D1,教育局,政府性基金预算,2025,500000\n",
        encoding="utf-8",
    )
    with Store(tmp_path / "bw.db") as store:
        counts = ingest(store, read_events(path))
        assert (counts.read, counts.applied, counts.rejected) == (4, 2, 2)
        reasons = [r["reason"] for r in store.rejections()]
        assert [r["source"] for r in store.rejections()] == [f"{path}:3", f"{path}:3"]
        assert all("already logged with other content" in r for r in reasons)


def test_a_refused_rows_reason_names_its_sheet_and_headers(tmp_path: Path) -> None:
    """'projects row: 缺少字段 'project_id'', 'fiscal_year (年度): … is not a year', 'amount：应不小于 0':
    field names of the contract a budget officer never sees (text audit M15)."""
    path = tmp_path / "projects.csv"
    path.write_text("项目编码,项目名称,单位编码,单位名称,资金性质,年度,年初预算数\n"
                    ",道路,D1,交通局,一般公共预算,2025,100\n"
                    "P3,道路,D1,交通局,一般公共预算,二〇二五,100\n"
                    "P4,道路,D1,交通局,一般公共预算,2025,-100\n", "utf-8")
    reasons = [p.reason for p in read_events(path) if isinstance(p, Rejected)]
    assert reasons[0].startswith("项目表：缺少字段 “项目编码”（missing field 'project_id'）")
    assert reasons[1].startswith("项目表：年度 '二〇二五' 无法识别：应写作 2025")
    assert reasons[2].startswith("项目表：年初预算数：应不小于 0")
