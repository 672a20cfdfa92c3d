"""Exports as budget systems and Excel really write them: units stated in odd places,
budget columns under other names, vouchers with several detail lines, long numeric
codes, stale sheet dimensions, hidden sheets. Each of these once changed money silently."""

from __future__ import annotations

import datetime as dt
import logging
import re
import zipfile
from pathlib import Path

import orjson
import pytest
from openpyxl import Workbook

from connectors.files import read_events
from connectors.parsed import Accepted
from connectors.tabular import TabularError
from streams.ingest import ingest
from streams.store import Store
from tests.functional.test_import import split, write_book

PROJECT_HEAD = "项目编码,项目名称,单位编码,单位名称,资金性质,年度"


def amounts(path: Path, **kw: str) -> dict[tuple[str, str], int | None]:
    accepted, _ = split(path, **kw)
    return {(a.record.type, a.record.event_id): a.record.amount for a in accepted}


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


@pytest.mark.parametrize(
    ("title", "yuan"),
    [
        ("编制单位：元江县财政局    金额单位：万元", 1_500_000),  # 元江县 is a county, not a unit
        ("单位：千元", 150_000),
        ("单位：亿元", 15_000_000_000),
        ("金额单位：元", 150),
        ("单位：万元人民币", 1_500_000),
        # each once read as 元, silently
        ("单位：人民币万元", 1_500_000),
        ("单位（万元）", 1_500_000),
        ("单位(万元)", 1_500_000),
        ("金额单位为万元", 1_500_000),
        ("2025年项目预算表,万元", 1_500_000),
        ("单位：百万元", 150_000_000),
        ("单位：万 元", 1_500_000),
    ],
)
def test_the_unit_a_title_states_scales_the_amounts(tmp_path: Path, title: str, yuan: int) -> None:
    path = write(tmp_path / "p.csv", f"{title}\n{PROJECT_HEAD},年初预算数\nP1,道路,D1,交通局,一般公共预算,2025,150\n")
    assert amounts(path)[("budget_approved", "P1@approved:2025")] == yuan * 100


def test_a_unit_in_separate_title_cells_or_in_the_header_row_itself(tmp_path: Path) -> None:
    cells = write(tmp_path / "a.csv", f"编制单位：元江县财政局,金额单位：万元\n{PROJECT_HEAD},年初预算数\n"
                                      "P1,道路,D1,交通局,一般公共预算,2025,150\n")
    assert amounts(cells)[("budget_approved", "P1@approved:2025")] == 150 * 1_000_000
    spare = write(tmp_path / "b.csv",
                  f"{PROJECT_HEAD},年初预算数,单位：万元\nP1,道路,D1,交通局,一般公共预算,2025,150\n")
    assert amounts(spare)[("budget_approved", "P1@approved:2025")] == 150 * 1_000_000
    both = write(tmp_path / "c.csv",
                 f"单位：元\n单位：千元\n{PROJECT_HEAD},年初预算数\nP1,道路,D1,交通局,一般公共预算,2025,1\n")
    with pytest.raises(TabularError, match="两种金额单位（元与千元）"):
        split(both)


def test_a_title_that_mentions_a_unit_it_does_not_declare_refuses_the_file(tmp_path: Path) -> None:
    """"本表金额以万元计" was not read, and the amounts were taken as 元: 10,000 times too small."""
    body = "P1,道路,D1,交通局,一般公共预算,2025,150\n"
    path = write(tmp_path / "p.csv", f"2025年项目预算表,本表金额以万元计\n{PROJECT_HEAD},年初预算数\n{body}")
    with pytest.raises(TabularError, match=r"p\.csv:1：.*标题写有「本表金额以万元计」.*--unit"):
        split(path)
    assert amounts(path, unit="wan")[("budget_approved", "P1@approved:2025")] == 150 * 1_000_000
    named = write(tmp_path / "q.csv", f"本表金额以万元计\n{PROJECT_HEAD},年初预算数（元）\n{body}")
    assert amounts(named)[("budget_approved", "P1@approved:2025")] == 150 * 100
    declared = write(tmp_path / "r.csv", f"超过100万元的项目须公示,单位：元\n{PROJECT_HEAD},年初预算数\n{body}")
    assert amounts(declared)[("budget_approved", "P1@approved:2025")] == 150 * 100


def test_a_unit_in_a_grouped_header_row_applies_to_the_columns_under_it(tmp_path: Path) -> None:
    """预算数（万元） merged over 年初预算数 and 调整后预算数 was ignored: the budgets read as 元."""
    book = write_book(tmp_path / "g.xlsx", {"项目": [
        ["2025年项目预算表"],
        ["项目信息", None, None, None, None, None, "预算数（万元）", None],
        ["项目编码", "项目名称", "单位编码", "单位名称", "资金性质", "年度", "调整后预算数", "年初预算数"],
        ["P1", "道路", "D1", "交通局", "一般公共预算", 2025, 120, 100],
    ]})
    assert amounts(book)[("budget_approved", "P1@approved:2025")] == 100 * 1_000_000
    # a group that names no unit, or one over other columns, leaves the column as it was
    other = write(tmp_path / "o.csv", f"基本信息（千元）,,,,,,预算\n{PROJECT_HEAD},年初预算数\n"
                                      "P1,道路,D1,交通局,一般公共预算,2025,150\n")
    assert amounts(other)[("budget_approved", "P1@approved:2025")] == 150 * 100
    # a group and the title that disagree: which one is meant is a guess
    clash = write(tmp_path / "c.csv", f"单位：元\n项目信息,,,,,,预算数（万元）\n{PROJECT_HEAD},年初预算数\n"
                                      "P1,道路,D1,交通局,一般公共预算,2025,150\n")
    with pytest.raises(TabularError, match=r"c\.csv:3：.*第 7 列上方的分组表头写有不同的金额单位"):
        split(clash)


@pytest.mark.parametrize(
    ("header", "yuan"),
    [("年初预算数（单位：万元）", 1_500_000), ("预算数", 150), ("年初预算数(千元)", 150_000),
     ('"年初\n预算数"', 150), ("*年初预算数", 150),
     # each once registered every project with budget 0, silently
     ("批复预算", 150), ("预算批复金额", 150), ("年初预算数(万)", 1_500_000), ("年初预算数/万元", 1_500_000),
     ("年初预算数[万元]", 1_500_000), ("年初预算数【万元】", 1_500_000), ("年初预算数（人民币万元）", 1_500_000),
     ("年初预算数 万元", 1_500_000), ("年初预算数（万 元）", 1_500_000), ("年初预算数（百万元）", 150_000_000),
     ("budget/wan", 1_500_000)],
)
def test_budget_columns_under_the_names_exports_use(tmp_path: Path, header: str, yuan: int) -> None:
    path = write(tmp_path / "p.csv", f"*{PROJECT_HEAD},{header}\nP1,道路,D1,交通局,一般公共预算,2025,150\n")
    assert amounts(path)[("budget_approved", "P1@approved:2025")] == yuan * 100


def test_a_budget_column_that_is_not_recognised_refuses_the_file(tmp_path: Path) -> None:
    """It registered every project with no budget: no alert, a rate of —, not a word."""
    for column in ("调整后预算数", "预算金额合计", "追加额", "结转资金（万元）", "批复预算（调整后）",
                   "年初预算（含结转）", "2025年预算数"):
        path = write(tmp_path / "p.csv", f"{PROJECT_HEAD},{column}\nP1,道路,D1,交通局,一般公共预算,2025,150\n")
        with pytest.raises(TabularError, match=f"列「{re.escape(column)}」看来是金额列"):
            split(path)
    # columns that are about the budget but hold no amount are not refused
    for column in ("预算科目", "预算级次", "批复文号"):
        path = write(tmp_path / "p.csv", f"{PROJECT_HEAD},{column}\nP1,道路,D1,交通局,一般公共预算,2025,2120101\n")
        assert amounts(path) == {("project_registered", "P1@registered:2025"): None}, column
    # a registration-only sheet (no money column at all) is still one
    plain = write(tmp_path / "q.csv", f"{PROJECT_HEAD}\nP1,道路,D1,交通局,一般公共预算,2025\n")
    assert amounts(plain) == {("project_registered", "P1@registered:2025"): None}


def test_a_projects_sheet_with_a_money_column_is_not_taken_for_payments(tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv", "项目编码,项目名称,单位编码,年度,金额,资金性质,单位名称\n"
                                     "P1,道路,D1,2025,150,一般公共预算,交通局\n")
    with pytest.raises(TabularError, match="列「金额」看来是金额列"):
        split(path)


def test_the_detail_lines_of_one_voucher_each_count(tmp_path: Path) -> None:
    path = write(tmp_path / "pay.csv", "支付凭证号,项目编码,支付日期,支付金额,收款人,经济分类\n"
                                       "V1,P1,2025-03-01,5000,某公司,30201\n"
                                       "V1,P1,2025-03-01,5000,某公司,30211\n"
                                       "V2,P1,2025-03-02,7000,某公司,30201\n"
                                       "V2,P1,2025-03-02,3000,某公司,30202\n"
                                       "V2,P1,2025-03-02,3000,某公司,30202\n"  # the same line again
                                       "V1,P1,2025-03-05,-5000,,30201\n")  # a refund on the voucher
    with Store(tmp_path / "bw.db") as store:
        counts = ingest(store, split(path)[0])
        again = ingest(store, split(path)[0])
        paid = store.db.execute(
            "SELECT SUM(CASE type WHEN 'payment' THEN amount ELSE -amount END) FROM events").fetchone()[0]
    assert (counts.applied, counts.duplicates, counts.rejected) == (5, 1, 0)
    assert paid == (5000 + 5000 + 7000 + 3000 - 5000) * 100
    assert (again.applied, again.duplicates) == (0, 6)  # importing the file again appends nothing
    ids = sorted(amounts(path))
    assert ids == [("payment", "V1"), ("payment", "V1#2"), ("payment", "V2"), ("payment", "V2#2"),
                   ("payment_reversed", "V1#3")]


def test_long_codes_stored_as_numbers_are_refused_not_merged(tmp_path: Path) -> None:
    path = write_book(tmp_path / "pay.xlsx", {"支付": [
        ["支付凭证号", "项目编码", "支付日期", "支付金额"],
        [202503010000012345, "P1", "2025-03-01", 5000],
        [202503010000012346.0, "P1", "2025-03-01", 5000],
        ["202503010000012347", "P1", "2025-03-01", 8000],  # text: kept as written
        [123456789012345, "P1", "2025-03-01", 1],  # 15 digits: exact in Excel
    ]})
    accepted, rejected = split(path)
    assert [r.source.rsplit(":", 1)[1] for r in rejected] == ["2", "3"]
    assert all("Excel 只保留 15 位有效数字" in r.reason for r in rejected)
    assert sorted(a.record.event_id for a in accepted) == ["123456789012345", "202503010000012347"]
    excel_csv = write(tmp_path / "excel.csv", "支付凭证号,项目编码,支付日期,支付金额\n1.23457E+18,P1,2025-03-01,1\n")
    (scientific,) = split(excel_csv)[1]
    assert "科学计数法（读到 1.23457E+18）" in scientific.reason
    # ="000123": the CSV way to keep leading zeros from Excel
    csv = write(tmp_path / "pay.csv", '支付凭证号,项目编码,支付日期,支付金额\n"=""000123""",="007",2025-03-01,2\n')
    assert [(a.record.event_id, a.record.project_id) for a in split(csv)[0]] == [("000123", "007")]


def test_rows_past_a_stale_sheet_dimension_are_read(tmp_path: Path) -> None:
    book = tmp_path / "pay.xlsx"
    write_book(book, {"支付": [["支付凭证号", "项目编码", "支付日期", "支付金额", "收款人"],
                               *[[f"V{i}", "P1", "2025-03-01", 100 + i, "某公司"] for i in range(10)]]})
    stale = tmp_path / "stale.xlsx"
    with zipfile.ZipFile(book) as source, zipfile.ZipFile(stale, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename.startswith("xl/worksheets/sheet"):
                data = re.sub(rb'<dimension ref="[^"]*"/>', b'<dimension ref="A1:D6"/>', data)
            target.writestr(item, data)
    accepted, rejected = split(stale)
    assert rejected == [] and len(accepted) == 10
    assert {a.record.details["payee"] for a in accepted if a.record.details} == {"某公司"}


def test_hidden_sheets_are_not_imported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    book = Workbook()
    visible = book.active
    assert visible is not None
    visible.title = "支付"
    visible.append(["支付凭证号", "项目编码", "支付日期", "支付金额"])
    visible.append(["V1", "P1", "2025-03-01", 100])
    for title, state in (("旧数据", "hidden"), ("下拉选项", "veryHidden")):
        sheet = book.create_sheet(title)
        sheet.append(["支付凭证号", "项目编码", "支付日期", "支付金额"])
        sheet.append(["OLD", "P1", "2024-03-01", 999_999])
        sheet.sheet_state = state
    book.save(tmp_path / "b.xlsx")
    with caplog.at_level(logging.WARNING, logger="budgetwatch.import"):
        accepted, rejected = split(tmp_path / "b.xlsx")
    assert [a.record.event_id for a in accepted] == ["V1"] and rejected == []
    assert "跳过隐藏的工作表「旧数据」" in caplog.text and "下拉选项" in caplog.text


def test_a_row_shorter_than_the_header_has_empty_cells_not_missing_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv", f"{PROJECT_HEAD},年初预算数\nP1,道路,D1,交通局,一般公共预算,2025\n")
    accepted, rejected = split(path)
    assert accepted == [] and len(rejected) == 1 and "年初预算数为空" in rejected[0].reason
    assert isinstance(rejected[0].source, str) and rejected[0].source.endswith("p.csv:2")
    _ = Accepted  # (the accepted type is what split separates on)


def test_dates_as_excel_writes_them(tmp_path: Path) -> None:
    path = write(tmp_path / "pay.csv", "支付凭证号,项目编码,支付日期,支付金额\n"
                                       "V1,P1,2025/3/1 0:00:00,1\nV2,P1,2025/03/02 10:15,1\n"
                                       "V3,P1,2025-3-3T08:00:00,1\nV4,P1,45720,1\n")
    accepted, rejected = split(path)
    assert rejected == []
    assert [a.record.day for a in accepted] == [dt.date(2025, 3, d).toordinal() for d in (1, 2, 3, 4)]
    book = write_book(tmp_path / "pay.xlsx", {"支付": [["支付凭证号", "项目编码", "支付日期", "支付金额"],
                                                       ["W1", "P1", 45717, 1], ["W2", "P1", 45717.75, 1]]})
    assert {a.record.day for a in split(book)[0]} == {dt.date(2025, 3, 1).toordinal()}


def test_amounts_as_exports_write_them(tmp_path: Path) -> None:
    path = write(tmp_path / "pay.csv", "支付凭证号,项目编码,支付日期,支付金额\n"
                                       'V1,P1,2025-03-01,¥100.00\nV2,P1,2025-03-01,"￥1,000.00"\n'
                                       "V3,P1,2025-03-01,250元\nV4,P1,2025-03-01,(500.00)\n"
                                       'V5,P1,2025-03-01,"(1,000.00)"\nV6,P1,2025-03-01,－20\n'
                                       "V7,P1,2025-03-01,一百元\n")
    accepted, rejected = split(path)
    assert [(a.record.type, a.record.amount) for a in accepted] == [
        ("payment", 10_000), ("payment", 100_000), ("payment", 25_000), ("payment_reversed", 50_000),
        ("payment_reversed", 100_000), ("payment_reversed", 2_000)]
    (bad,) = rejected
    assert bad.reason.startswith("支付表：金额无法读取，应为数字如 1,234,567.89")


def test_an_amount_in_scientific_notation_is_refused_not_read_short(tmp_path: Path) -> None:
    """A CSV saved by Excel writes 123,456,789,012.34 as 1.23457E+11: it was imported as
    123,457,000,000.00, the lost digits made up with zeros."""
    path = write(tmp_path / "pay.csv", "支付凭证号,项目编码,支付日期,支付金额\n"
                                       "V1,P1,2025-03-01,1.23457E+11\nV2,P1,2025-03-01,-1.5e3\nV3,P1,2025-03-01,100\n")
    accepted, rejected = split(path)
    assert [a.record.event_id for a in accepted] == ["V3"]
    assert [r.source for r in rejected] == [f"{path}:2", f"{path}:3"]
    assert rejected[0].reason.startswith("支付表：金额是科学计数法（读到 1.23457E+11）")


def test_years_written_with_their_unit(tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv", f"{PROJECT_HEAD},年初预算数\nP1,道路,D1,交通局,一般公共预算,2025年,1\n"
                                     "P2,桥梁,D1,交通局,一般公共预算,2025年度,1\n")
    assert sorted(e for _, e in amounts(path)) == [
        "P1@approved:2025", "P1@registered:2025", "P2@approved:2025", "P2@registered:2025"]


def test_tab_separated_and_utf16_unicode_text_files(tmp_path: Path) -> None:
    text = "支付凭证号\t项目编码\t支付日期\t支付金额\nV1\tP1\t2025-03-01\t1,500.00\n"
    for name, data in (("tab.csv", text.encode("utf-8")), ("u16.txt.csv", text.encode("utf-16"))):
        (tmp_path / name).write_bytes(data)
        accepted, rejected = split(tmp_path / name)
        assert rejected == [] and [(a.record.event_id, a.record.amount) for a in accepted] == [("V1", 150_000)]


def test_a_dead_letter_keeps_the_whole_row_under_its_own_headers(tmp_path: Path) -> None:
    path = write(tmp_path / "pay.csv", "支付凭证号,项目编码,支付日期,支付金额,经济分类,备注\n"
                                       "V1,P1,2025-02-30,100,30201,第一笔\n")
    (rejected,) = split(path)[1]
    assert orjson.loads(rejected.raw) == {"支付凭证号": "V1", "项目编码": "P1", "支付日期": "2025-02-30",
                                          "支付金额": "100", "经济分类": "30201", "备注": "第一笔"}


def test_an_empty_required_cell_is_reported_missing(tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv", f"{PROJECT_HEAD},年初预算数\nP1,,D1,交通局,一般公共预算,2025,1\n")
    (rejected,) = split(path)[1]
    assert "缺少字段 “项目名称”" in rejected.reason


def test_a_refused_detail_line_fixed_and_the_file_imported_again_counts_each_line_once(tmp_path: Path) -> None:
    """The lines were numbered after validation: a refused first line let the second
    take the voucher's own number, and once the first was fixed both counted as… the
    second (review). Numbering now comes first, from the rows as written."""
    head = "支付凭证号,项目编码,支付日期,支付金额,经济分类\n"
    broken = write(tmp_path / "pay.csv", head + 'V1,P1,2025-03-01,"300,0",30201\nV1,P1,2025-03-01,200.00,30202\n')
    with Store(tmp_path / "bw.db") as store:
        first = ingest(store, read_events(broken))
        (refusal,) = store.rejections()
        fixed = write(tmp_path / "pay.csv", head + "V1,P1,2025-03-01,300.00,30201\nV1,P1,2025-03-01,200.00,30202\n")
        again = ingest(store, read_events(fixed))
        rows = store.db.execute("SELECT event_id, amount FROM events ORDER BY event_id").fetchall()
    assert (first.applied, first.rejected, again.applied, again.duplicates) == (1, 1, 1, 1)
    assert rows == [("V1", 30_000), ("V1#2", 20_000)]
    assert "金额无法读取" in refusal["reason"]
    line_two = write(tmp_path / "two.csv", head + "V2,P1,2025-03-01,1,30201\nV2,P1,2025-02-30,2,30202\n")
    (bad,) = split(line_two)[1]
    assert "本行是凭证 V2 的第 2 条明细（编号 V2#2），请在原文件中修正后重新导入整个文件" in bad.reason


def test_stray_tabs_or_thousands_commas_do_not_decide_the_delimiter(tmp_path: Path) -> None:
    titled = write(tmp_path / "a.csv", "编制单位\t\t\t\t\t\t\t\t\t单位：元\n支付凭证号,项目编码,支付日期,支付金额\n"
                                       "V1,P1,2025-03-01,100\n")
    assert [a.record.amount for a in split(titled)[0]] == [10_000]
    tabbed = write(tmp_path / "b.csv", "支付凭证号\t项目编码\t支付日期\t支付金额\nV1\tP1\t2025-03-01\t1,500,000.00\n"
                                       "V2\tP1\t2025-03-02\t2,500,000.00\n")
    assert [a.record.amount for a in split(tabbed)[0]] == [150_000_000, 250_000_000]


def test_an_amount_past_the_fen_or_too_large_is_named_as_such(tmp_path: Path) -> None:
    """1.005 could be read; its third decimal is what is wrong ("金额无法读取" said otherwise)."""
    path = write(tmp_path / "pay.csv", "支付凭证号,项目编码,支付日期,支付金额\n"
                                       "V1,P1,2025-03-01,1.005\nV2,P1,2025-03-01,100000000000000\n")
    _, rejected = split(path)
    fen, huge = (r.reason for r in rejected)
    assert fen.startswith("支付表：金额超过两位小数：金额应精确到分")
    assert huge.startswith("支付表：金额达到或超过10万亿元：请检查金额单位")


def test_a_row_with_more_cells_than_the_header_is_a_dead_letter_not_cut(tmp_path: Path) -> None:
    """An unquoted 1,200,000.00 split into three cells: the row was cut to the header's
    width and a budget of 1.00 (and a payee "234.50") imported, silently."""
    projects = write(tmp_path / "p.csv", f"{PROJECT_HEAD},年初预算数\n"
                                         "P1,道路,D1,交通局,一般公共预算,2025,1,200,000.00\n"
                                         "P2,桥梁,D1,交通局,一般公共预算,2025,300,,\n")
    accepted, rejected = split(projects)
    assert {a.record.event_id: a.record.amount for a in accepted} == {
        "P2@registered:2025": None, "P2@approved:2025": 30_000}  # empty extra cells are harmless
    (cut,) = rejected
    assert cut.source == f"{projects}:2"
    assert cut.reason.startswith("项目表：本行有 9 个单元格，比表头的 7 列多")
    assert "千位分隔逗号没有加引号" in cut.reason and "unquoted thousands separator" in cut.reason
    assert orjson.loads(cut.raw)["第9列"] == "000.00"
    payments = write(tmp_path / "pay.csv", "支付凭证号,支付日期,项目编码,支付金额,收款人名称\n"
                                           "V1,2025-03-01,P1,1,234.50,甲公司\nV2,2025-03-01,P1,500.00,乙公司\n")
    with Store(tmp_path / "bw.db") as store:
        counts = ingest(store, read_events(payments))
    assert (counts.read, counts.applied, counts.rejected) == (2, 1, 1)


def test_a_utf8_file_with_one_gbk_line_keeps_its_text_and_refuses_that_line(tmp_path: Path) -> None:
    """The file was decoded whole as GB18030, which reads UTF-8 bytes too: every name in
    it was garbled (供电公司 as 渚涚數鍏徃), silently."""
    path = tmp_path / "pay.csv"
    path.write_bytes("支付凭证号,支付日期,项目编码,支付金额,收款人名称\nV1,2025-03-01,P1,100,供电公司\n"
                     "V2,2025-03-02,P1,200,中国移动\n".encode() + "V3,2025-03-03,P1,300,人民医院\n".encode("gbk"))
    accepted, rejected = split(path)
    assert [(a.record.event_id, a.record.details) for a in accepted] == [
        ("V1", {"payee": "供电公司"}), ("V2", {"payee": "中国移动"})]
    (odd,) = rejected
    assert odd.source == f"{path}:4"
    assert odd.reason.startswith("第 4 行不是有效的 UTF-8 文本") and "GB18030/GBK" in odd.reason


def test_a_tab_separated_file_under_a_title_block_without_tabs(tmp_path: Path) -> None:
    """The title lines have no tabs, the delimiter sniffer gave up, and the whole file was
    refused for want of a header: the separator is now the header row's."""
    rows = "".join(f"V{n}\t2025-03-01\tP{n}\t1,234.5{n}\t甲公司\n" for n in range(1, 8))
    header = "支付凭证号\t支付日期\t项目编码\t支付金额\t收款人名称\n"
    path = write(tmp_path / "pay.csv", f"国库集中支付明细\n单位：元\n{header}{rows}")
    accepted, rejected = split(path)
    assert rejected == [] and [a.record.amount for a in accepted] == [123_450 + n for n in range(1, 8)]


def test_a_form_style_info_row_above_the_table_is_not_the_header(tmp_path: Path) -> None:
    """预算年度 | 2025 | 单位名称 | 交通局 names two known columns: it was taken for the
    header and every row of the table was refused."""
    book = write_book(tmp_path / "form.xlsx", {"项目": [
        ["2025年项目支出预算批复表"],
        ["预算年度", 2025, "单位名称", "交通局", None, "单位：万元"],
        ["项目编码", "项目名称", "单位编码", "单位名称", "资金性质", "年度", "年初预算数"],
        ["P1", "道路", "D1", "交通局", "一般公共预算", 2025, 100],
    ]})
    accepted, rejected = split(book)
    assert rejected == []
    assert {a.record.event_id: a.record.amount for a in accepted} == {
        "P1@registered:2025": None, "P1@approved:2025": 100 * 1_000_000}


def test_leading_zeros_kept_by_a_number_format_are_kept(tmp_path: Path) -> None:
    """项目编码 001 stored as 1 under the format 000 was read as "1": it did not match the
    payments' 001, and its budget and payments were two projects."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["项目编码", "项目名称", "单位编码", "单位名称", "资金性质", "年度", "年初预算数"])
    sheet.append([1, "道路", 101, "交通局", "一般公共预算", 2025, 100])
    sheet.append([2, "桥梁", 1234567890123456, "交通局", "一般公共预算", 2025, 100])
    sheet["A2"].number_format = sheet["A3"].number_format = "000"
    sheet["C2"].number_format = "0000"
    sheet["C3"].number_format = "0000000000000000"  # past 15 digits: still refused, not padded
    sheet["G2"].number_format = "0"
    book.save(tmp_path / "p.xlsx")
    accepted, rejected = split(tmp_path / "p.xlsx")
    (registered, approved) = accepted
    assert registered.record.project_id == "001" and approved.record.event_id == "001@approved:2025"
    assert registered.record.details is not None and registered.record.details["department_id"] == "0101"
    assert approved.record.amount == 10_000
    (long_code,) = rejected
    assert "单位编码以数字形式保存且有 16 位以上" in long_code.reason


@pytest.mark.parametrize(
    ("written", "fund"),
    [("一般公共预算资金", "general"), ("政府性基金预算资金", "government_fund"),
     ("国有资本经营预算资金", "state_capital"), ("社会保险基金预算资金", "social_insurance")],
)
def test_fund_sources_written_with_zijin(tmp_path: Path, written: str, fund: str) -> None:
    """一般公共预算资金 was accepted and the other three refused."""
    path = write(tmp_path / "p.csv", f"{PROJECT_HEAD},年初预算数\nP1,道路,D1,交通局,{written},2025,1\n")
    accepted, rejected = split(path)
    assert rejected == [] and accepted[0].record.details is not None
    assert accepted[0].record.details["fund_source"] == fund


def test_totals_rows_are_dead_letters_that_say_so(tmp_path: Path) -> None:
    """A 合计 or 小计 row was refused as "年度 None 无法识别": a reason that sent the user
    looking for a wrong year."""
    book = write_book(tmp_path / "p.xlsx", {"项目": [
        ["项目编码", "项目名称", "单位编码", "单位名称", "资金性质", "年度", "年初预算数"],
        ["P1", "道路", "D1", "交通局", "一般公共预算", 2025, 100],
        [None, "交通局小计", None, None, None, None, 100],
        ["合计", None, None, None, None, None, 100],
    ], "支付": [
        ["支付凭证号", "支付日期", "项目编码", "支付金额"],
        ["V1", "2025-03-01", "P1", 10],
        [None, None, "合计", 10],
    ]})
    accepted, rejected = split(book)
    assert len(accepted) == 3  # registered, approved, paid: read = accepted + rejected
    assert [(r.source.rsplit(":", 2)[1:], r.reason.split("，")[0]) for r in rejected] == [
        (["项目", "3"], "项目表：本行是合计/小计行（「交通局小计」）"),
        (["项目", "4"], "项目表：本行是合计/小计行（「合计」）"),
        (["支付", "3"], "支付表：本行是合计/小计行（「合计」）"),
    ]
    assert "a totals row" in rejected[0].reason


def test_full_width_amounts_and_a_sign_before_the_currency_mark_are_read(tmp_path: Path) -> None:
    """Excel's en-US negative currency (-¥1,000.00) and full-width digits were dead
    letters saying "commas may only separate thousands" (import audit)."""
    path = write(tmp_path / "pay.csv", "支付凭证号,项目编码,支付日期,支付金额\n"
                                       'V1,P1,2025-03-01,"１,２３４.５０"\n'
                                       'V2,P1,2025-03-02,"-¥1,000.00"\n'
                                       "V3,P1,2025-03-03,-￥ 12.50\n")
    accepted, rejected = split(path)
    assert rejected == []
    assert [(a.record.type, a.record.amount) for a in accepted] == [
        ("payment", 123_450), ("payment_reversed", 100_000), ("payment_reversed", 1_250)]


def test_full_width_dates_are_read(tmp_path: Path) -> None:
    path = write(tmp_path / "pay.csv", "支付凭证号,项目编码,支付日期,支付金额\n"
                                       "V1,P1,２０２５年６月３０日,1\nV2,P1,２０２５０７０１,1\nV3,P1,2025年7月2日,1\n")
    accepted, rejected = split(path)
    assert rejected == []
    assert [a.record.day for a in accepted] == [dt.date(2025, 6, 30).toordinal(), dt.date(2025, 7, 1).toordinal(),
                                                dt.date(2025, 7, 2).toordinal()]
