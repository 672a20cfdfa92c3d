"""Exports for people: reduction proposals as XLSX, laid out as a finance office expects.

Amounts are numbers with thousands separators and two decimals, rates are percentages
(the cell holds the ratio, so sums and filters work), the header is frozen and
filterable, a 合计 row closes the table, and columns are as wide as their Chinese text.
Cells are values, never formulas: a text like ``=HYPERLINK(…)`` stays text, and another
program reading the file (or our own import) sees the numbers without recalculating.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from alerts.messages import FUND_SOURCE_NAMES

MONEY_FORMAT = "#,##0.00"
PERCENT_FORMAT = "0.00%"
TOTAL_LABEL = "合计"


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    kind: Literal["text", "money", "percent"] = "text"


REDUCTION_COLUMNS = (
    Column("项目编码"), Column("项目名称"), Column("单位编码"), Column("单位名称"), Column("资金性质"),
    Column("预算数（元）", "money"), Column("已支付（元）", "money"), Column("预计年末支出（元）", "money"),
    Column("建议调减金额（元）", "money"), Column("调减率", "percent"), Column("审批意见"),
)
REDUCTION_HEADERS = tuple(c.header for c in REDUCTION_COLUMNS)


def write_reductions_xlsx(
    path: Path, proposals: Sequence[Mapping[str, Any]], as_of: str, fiscal_year: int | None = None
) -> None:
    rows = [
        (
            p["project_id"], p["name"], p["department_id"], p.get("department_name", ""),
            FUND_SOURCE_NAMES.get(p.get("fund_source", ""), p.get("fund_source", "")),
            Decimal(p["budget"]), Decimal(p["paid"]), Decimal(p["projected_spend"]),
            Decimal(p["proposed_reduction"]), p["reduction_rate"], "",
        )
        for p in proposals
    ]
    title = f"{fiscal_year}年度调减建议（截至{as_of}）" if fiscal_year else f"调减建议{as_of}"
    write_xlsx(path, REDUCTION_COLUMNS, rows, title=title[:31])


def write_xlsx(
    path: Path, columns: Sequence[Column | str], rows: Iterable[Sequence[Any]], title: str
) -> None:
    """One sheet: a bold frozen header with filters, the rows, and a 合计 row summing the
    money columns when there are any (and rows to sum)."""
    from openpyxl import Workbook
    from openpyxl.styles import Font, PatternFill
    from openpyxl.utils import get_column_letter

    spec = [c if isinstance(c, Column) else Column(c) for c in columns]
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = title
    sheet.append([c.header for c in spec])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
        cell.fill = PatternFill("solid", fgColor="DDEBF7")
    widths = [_display_width(c.header) for c in spec]
    totals: list[Decimal] = [Decimal(0)] * len(spec)
    count = 0
    for row in rows:
        count += 1
        sheet.append(list(row))
        for index, cell in enumerate(sheet[sheet.max_row]):
            kind = spec[index].kind if index < len(spec) else "text"
            if isinstance(cell.value, str) and cell.value.startswith("="):
                cell.data_type = "s"  # a project name like "=HYPERLINK(…)" is text, never a live formula
            if kind == "money" and isinstance(cell.value, int | float | Decimal):
                cell.number_format = MONEY_FORMAT
                totals[index] += Decimal(str(cell.value))
            elif kind == "percent" and isinstance(cell.value, int | float | Decimal):
                cell.number_format = PERCENT_FORMAT
            if index < len(widths):
                widths[index] = max(widths[index], _display_width(_shown(cell.value, kind)))
    last_data_row = sheet.max_row
    if count and any(c.kind == "money" for c in spec):
        sheet.append([
            TOTAL_LABEL if i == 0 else (totals[i] if c.kind == "money" else None) for i, c in enumerate(spec)
        ])
        for index, cell in enumerate(sheet[sheet.max_row]):
            cell.font = Font(bold=True)
            if spec[index].kind == "money":
                cell.number_format = MONEY_FORMAT
                widths[index] = max(widths[index], _display_width(_shown(cell.value, "money")))
    sheet.freeze_panes = "A2"
    sheet.auto_filter.ref = f"A1:{get_column_letter(len(spec))}{last_data_row}"
    for index, width in enumerate(widths, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = min(max(width + 2, 8), 60)
    workbook.save(path)


def _shown(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "money" and isinstance(value, int | float | Decimal):
        return f"{Decimal(str(value)):,.2f}"
    if kind == "percent" and isinstance(value, int | float | Decimal):
        return f"{float(value) * 100:.2f}%"
    return str(value)


def _display_width(text: str) -> int:
    """Columns a text takes in Excel's default font: a Chinese character two, others one."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
