"""CSV and XLSX exports of budget systems: a projects sheet or a payments sheet.

The header row may sit under a title block; it is the first of the top rows in
which at least two cells name known columns, one of them 项目编码. Amounts are in
元 unless the column header, a grouped header above it or the title says otherwise
(（万元）, 单位：万元) or the caller passes ``unit="wan"``. Every row
becomes contract events (validated exactly like JSON input) or a rejection
with ``file:line`` and the reason.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import logging
import math
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import orjson

from budget.events import EventRejected, parse_event_object
from budget.money import FEN_PER_QIAN, FEN_PER_WAN, FEN_PER_YI, FEN_PER_YUAN, MoneyError, fen_to_str, to_fen
from connectors.headers import (
    FUND_SOURCES,
    KINDS,
    PAYMENT_HEADERS,
    PROJECT_HEADERS,
    UNIT_NAMES,
    UNITS,
    split_header,
)
from connectors.parsed import Accepted, Parsed, Rejected

Layout = Literal["auto", "projects", "payments"]
Unit = Literal["auto", "yuan", "qian", "wan", "yi"]
UNIT_CHOICES = ("auto", "yuan", "qian", "wan", "yi")
FEN_PER_UNIT = {"yuan": FEN_PER_YUAN, "qian": FEN_PER_QIAN, "wan": FEN_PER_WAN, "baiwan": 100 * FEN_PER_WAN,
                "yi": FEN_PER_YI}  # 百万元 only as a file states it, not a --unit choice

HEADER_SEARCH_ROWS = 10
log = logging.getLogger("budgetwatch.import")


class TabularError(ValueError):
    """A file whose layout cannot be recognised; nothing of it was imported."""


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A stretch of the file that is not a row (bad bytes, broken quoting)."""

    reason: str
    raw: str


Row = tuple[str, "list[Any] | Unreadable"]


def _encoding_of(data: bytes) -> str:
    """For a file that is not UTF-8 whole: UTF-8 or GB18030 (GBK exports), by its lines
    with non-ASCII bytes. GB18030 decodes almost any bytes, UTF-8 text too (garbled), so
    it is not asked: UTF-8 when at least as many of those lines are valid UTF-8 as are
    not (a UTF-8 file with an odd GBK line), else GB18030."""
    utf8 = other = 0
    for line in data.split(b"\n"):
        if line.isascii():
            continue
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            other += 1
        else:
            utf8 += 1
    return "utf-8-sig" if utf8 >= other else "gb18030"


_ENCODING_NAMES = {"utf-8": "UTF-8", "gb18030": "GB18030/GBK"}


def _undecodable(number: int, content: bytes, encoding: str, err: UnicodeDecodeError) -> str:
    """Why line ``number`` is a dead letter, naming the encoding it is not in (and the one
    it seems to be in)."""
    seems, seems_en = "", ""
    if encoding == "utf-8":
        try:
            content.decode("gb18030")
        except UnicodeDecodeError:
            pass
        else:
            seems, seems_en = "，看来是以 GB18030/GBK 编码保存的（文件的其余部分是 UTF-8）", ", it seems to be GBK"
    return (
        f"第 {number} 行不是有效的 {_ENCODING_NAMES.get(encoding, encoding)} 文本（第 {err.start + 1} 个字节）{seems}，"
        "本行未导入；请把整个文件用同一种编码（如 UTF-8）重新导出后再导入"
        f"（line {number} is not valid {encoding} text (byte {err.start + 1}){seems_en}; "
        "re-export the file in one encoding）"
    )


MAX_RECORD_LINES = 1_000  # lines one CSV record (a cell with line breaks) may span
_LINE_BREAK = re.compile(rb"(\r\n|\r|\n)")  # never inside a UTF-8 or GB18030 character


def _physical_lines(data: bytes) -> tuple[list[str], dict[int, str]]:
    """The file's lines with their endings, and {line number: reason} for the lines that
    do not decode (kept with U+FFFD so their quotes still pair up; their rows are dead
    letters): one bad byte must not spoil the file, nor slip in as a name."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Excel's "Unicode 文本"
        try:
            return io.StringIO(data.decode("utf-16"), newline="").readlines(), {}
        except UnicodeDecodeError:
            pass
    encoding = "utf-8-sig"
    for whole in ("utf-8-sig", "gb18030"):  # the common case, in one piece; newline=""
        if whole == "gb18030" and (encoding := _encoding_of(data)) != "gb18030":
            break  # a UTF-8 file with an odd line: GB18030 would garble all its text
        try:  # splits on \r, \n and \r\n only, as the csv module does
            return io.StringIO(data.decode(whole), newline="").readlines(), {}
        except UnicodeDecodeError:
            continue
    if encoding == "utf-8-sig":
        data, encoding = data.removeprefix(codecs.BOM_UTF8), "utf-8"
    parts = _LINE_BREAK.split(data)
    lines: list[str] = []
    bad: dict[int, str] = {}
    for index in range(0, len(parts), 2):
        content, ending = parts[index], parts[index + 1] if index + 1 < len(parts) else b""
        if not content and not ending:
            continue
        try:
            text = content.decode(encoding)
        except UnicodeDecodeError as err:
            text = content.decode(encoding, errors="replace")
            bad[len(lines) + 1] = _undecodable(len(lines) + 1, content, encoding, err)
        lines.append(text + ending.decode("ascii"))
    return lines, bad


def csv_rows(path: Path) -> Iterator[Row]:
    """(``file:line`` of the record's first line, cells) per CSV record; what cannot be
    read as a record comes as :class:`Unreadable` in its place."""
    lines, bad = _physical_lines(path.read_bytes())
    csv.field_size_limit(1 << 30)  # a huge cell is refused by validation, with its line
    delimiter = _delimiter(lines)
    base = 0  # lines before the current reader's first
    record_start = [1]

    def feed(first: int) -> Iterator[str]:
        # A record may span at most MAX_RECORD_LINES lines: an unclosed quote then ends
        # where it starts, instead of each one reading on to the end of the file.
        started, count = record_start, len(lines)
        # (map over indices: a restart after an error starts at once, not by skipping)
        for i, line in zip(range(first + 1, count + 1), map(lines.__getitem__, range(first, count)), strict=True):
            if i - started[0] >= MAX_RECORD_LINES:
                return
            yield line

    while base < len(lines):
        # strict: an unclosed quote is an error here, not a cell that silently swallows
        # the rest of the file; the reader restarts after the offending line.
        reader = csv.reader(feed(base), strict=True, delimiter=delimiter)
        start = record_start[0] = base + 1
        try:
            for row in reader:
                end = base + reader.line_num
                yield _record(path, start, end, row, lines, bad)
                start = record_start[0] = end + 1
            if start <= len(lines):  # the feed stopped inside an unclosed quote
                raise csv.Error("unexpected end of data")
            return
        except csv.Error as err:
            end = base + reader.line_num
            if "unexpected end of data" not in str(err):
                # Broken quoting inside a record ("1"500.00, a stray quote in a cell that
                # spans lines): the record's lines are refused together, never guessed
                # at (a lenient reading would take "1"500.00 for 1500.00).
                span = f"line {start}" if end == start else f"lines {start}-{end}"
                yield f"{path}:{start}", Unreadable(
                    f"malformed quoting on {span} ({err}); fix the quotes and import the file again",
                    _span(lines, start, end),
                )
                base = end
                continue
            # A quote that opens on this line and never closes (within MAX_RECORD_LINES):
            # this line alone is refused, and the lines after it are read on.
            yield f"{path}:{start}", Unreadable(
                f"unclosed quote (\") on line {start}: not a row; the lines after it are read on",
                lines[start - 1].rstrip("\r\n"),
            )
            base = start


def _delimiter(lines: list[str]) -> str:
    """Tab for a tab-separated export (Excel's "Unicode 文本", some systems' .csv), else
    the comma: the one that splits a top line into the most known column names (the
    header row), so a title block without trailing tabs, a title row's stray tabs or
    thousands commas in tab-separated amounts do not decide it."""
    best, chosen = 1, ""
    for delimiter in (",", "\t"):
        for line in lines[:HEADER_SEARCH_ROWS]:
            if delimiter not in line:
                continue
            try:
                cells = next(csv.reader([line], delimiter=delimiter), [])
            except csv.Error:  # a quote that opens here: a cell spanning lines, not the header
                continue
            known = sum(1 for c in cells if (n := split_header(c)[0]) in PROJECT_HEADERS or n in PAYMENT_HEADERS)
            if known > best:
                best, chosen = known, delimiter
    if chosen:
        return chosen
    # No header row either way (the file is then refused): the sniffer weighs how evenly
    # each splits the lines; unsure, it is a comma.
    try:
        return csv.Sniffer().sniff("".join(lines[:HEADER_SEARCH_ROWS]), delimiters=",\t").delimiter
    except csv.Error:
        return ","


def _span(lines: list[str], start: int, end: int) -> str:
    """Lines ``start`` to ``end`` (1-based) as they were, for a dead letter's raw."""
    return "".join(lines[start - 1:end]).rstrip("\r\n")


def _record(path: Path, start: int, end: int, row: list[str], lines: list[str], bad: dict[int, str]) -> Row:
    damaged = next((bad[n] for n in range(start, end + 1) if n in bad), None) if bad else None
    if damaged is not None:
        return f"{path}:{start}", Unreadable(damaged, _span(lines, start, end))
    return f"{path}:{start}", row


def xlsx_sheets(path: Path) -> Iterator[tuple[str, Iterator[Row]]]:
    """(sheet title, its rows) for every sheet of the workbook."""
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except Exception as err:  # zipfile.BadZipFile, KeyError, InvalidFileException, …
        raise TabularError(
            f"{path}：不是可读取的 .xlsx 工作簿（{type(err).__name__}: {err}），未导入任何内容。"
            "可能是改了扩展名的旧 .xls、加了密码或已损坏：请用 Excel 或 WPS 打开，另存为无密码的 "
            ".xlsx（Excel 工作簿）后重新导入（not a readable .xlsx workbook; save it as .xlsx）"
        ) from None
    try:
        for sheet in workbook.worksheets:
            if sheet.sheet_state != "visible":
                # Old data or a template's dropdown lists, hidden on purpose: not imported.
                log.warning("%s：跳过隐藏的工作表「%s」（hidden sheet skipped）", path, sheet.title)
                continue
            # A workbook written by another program may state a stale <dimension>, and a
            # read-only sheet trusts it: rows past it were lost without a word.
            sheet.reset_dimensions()
            rows: Iterator[Row] = (
                (f"{path}:{sheet.title}:{number}", [_shown(cell) for cell in row])
                for number, row in enumerate(sheet.iter_rows(), start=1)
            )
            yield sheet.title, rows
    finally:
        workbook.close()


def _layout_of(names: list[str], layout: Layout) -> str | None:
    """The layout whose header these column names are (at least two known names), if any."""
    scores = {
        "payments": sum(1 for n in names if n in PAYMENT_HEADERS),
        "projects": sum(1 for n in names if n in PROJECT_HEADERS),
    }
    has_voucher = any(PAYMENT_HEADERS.get(n) == "event_id" for n in names)
    has_amount = any(PAYMENT_HEADERS.get(n) == "amount" for n in names)
    if layout != "auto":
        return layout if scores[layout] >= 2 else None
    if has_voucher and scores["payments"] >= 2:
        return "payments"
    if scores["projects"] >= 2 and scores["projects"] >= scores["payments"]:
        return "projects"  # a projects sheet with a 金额 column is still a projects sheet
    if has_amount and scores["payments"] >= 2:
        return "payments"
    return None


_ZERO_PADDED = re.compile(r"00+")  # a number format that shows 1 as 001: codes' leading zeros


def _shown(cell: Any) -> Any:
    """A cell's value, or for a whole number under a zero-padding number format (000,
    00000) the text Excel shows: 项目编码 001 is stored as 1 and only its format keeps the
    zeros; read as 1 it would not match 001 elsewhere. Any other value as it is (a number
    of 16 digits or more stays one, to be refused as a code that lost digits)."""
    value = cell.value
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and 0 <= value < _EXACT_DIGITS
        and float(value).is_integer()
        and (number_format := getattr(cell, "number_format", None))
        and _ZERO_PADDED.fullmatch(number_format)
    ):
        return str(int(value)).zfill(len(number_format))
    return value


def _detect(
    rows: Iterator[Row], layout: Layout, origin: str, unit: Unit = "auto"
) -> tuple[str, list[tuple[str | None, str | None]], list[str], Iterator[Row]]:
    """Find the header row; return (layout, [(field, unit)] per column, the header's
    names as written, remaining rows).

    The header is the first top row with at least two known names and the 项目编码
    column every row needs; a form-style row above the table (预算年度 | 2025 | 单位名称 |
    交通局) has two known names but no 项目编码. Without such a row, the first with two
    known names (its rows are then refused for the missing 项目编码)."""
    top: list[Row] = []
    candidates: list[tuple[int, str, bool, list[Any]]] = []  # (index in top, layout, has 项目编码, cells)
    for _ in range(HEADER_SEARCH_ROWS):
        item = next(rows, None)
        if item is None:
            break
        top.append(item)
        where, cells = item
        if isinstance(cells, Unreadable):
            continue
        names = [split_header(c)[0] for c in cells]
        chosen = _layout_of(names, layout)
        if chosen is None:
            continue
        table = PAYMENT_HEADERS if chosen == "payments" else PROJECT_HEADERS
        keyed = any(table.get(n) == "project_id" for n in names)
        candidates.append((len(top) - 1, chosen, keyed, cells))
        if keyed:
            break
    if not candidates:
        seen = (" | ".join(n for n, _ in map(split_header, cells) if n)
                for _, cells in top if not isinstance(cells, Unreadable))
        raise TabularError(
            f"{origin}：前 {HEADER_SEARCH_ROWS} 行中找不到项目表或支付表的表头"
            f"（读到：{'; '.join(s for s in seen if s) or '无'}），可用的列名见 README「File import」"
            f"（no header row of a projects or payments sheet in the first {HEADER_SEARCH_ROWS} rows）"
        )
    at, chosen, _, cells = next((c for c in candidates if c[2]), candidates[0])
    where = top[at][0]
    skipped: list[Row] = []  # unreadable stretches above the header: still dead letters
    title_unit: str | None = None  # "单位：万元" in the title block, for columns naming none
    unclear: tuple[str, str] | None = None  # a title cell that mentions a unit not read
    groups: list[Group] = []  # "预算数（万元）" above (merged over) the columns it groups
    for above, title in top[:at]:
        if isinstance(title, Unreadable):
            skipped.append((above, title))
            continue
        title_unit = _declared_unit(title, origin, above, title_unit)
        unclear = _unclear_unit(title, above, unclear)
        groups.extend(_groups([split_header(c) for c in title], title, above))
    headers = [split_header(c) for c in cells]
    table = PAYMENT_HEADERS if chosen == "payments" else PROJECT_HEADERS
    # "单位：万元" in a spare cell of the header row itself
    spare = [c for c, (n, _) in zip(cells, headers, strict=True) if n not in table]
    title_unit = _declared_unit(spare, origin, where, title_unit)
    columns = [
        (field, u or (_group_unit(groups, index, title_unit, origin, where)
                      if field in AMOUNT_FIELDS else title_unit))
        for index, (field, u) in enumerate((table.get(n), u) for n, u in headers)
    ]
    _refuse_repeated_fields(columns, cells, origin, where)
    if unit == "auto" and title_unit is None:
        _refuse_unclear_unit(columns, unclear, origin)
    if chosen == "projects":
        _refuse_unknown_budget_column(columns, headers, cells, origin, where)
    names_as_written = [str(c).strip() if c is not None else "" for c in cells]
    return chosen, columns, names_as_written, chain(skipped, top[at + 1:], rows)


# A budget system's export states its unit above the table: "单位：万元", "金额单位：元",
# "单位：人民币万元", "单位（万元）", "金额单位为万元", "单位：万 元", or a cell that is only
# the unit ("万元"). Not "编制单位：元江县财政局": a unit is not followed by more Chinese.
_UNIT_NAME = r"(?:人民币)?\s*((?:亿|百\s*万|万|千)?\s*元)"
_DECLARED_UNIT = re.compile(
    rf"(?:金额)?单位\s*(?:[:：]|为|是|[（(])\s*{_UNIT_NAME}(?=\s*人民币|[^\u4e00-\u9fff]|$)"
    rf"|^\s*[（(]?\s*{_UNIT_NAME}\s*(?:人民币)?\s*[)）]?\s*$"
)
# A title that speaks of a unit (…万元…) but declares none the above reads: the amounts'
# scale would be a guess off by 10,000 times.
_UNIT_MENTION = re.compile(r"(?:亿|百\s*万|万|千)\s*元")
AMOUNT_FIELDS = frozenset({"approved_amount", "amount"})
# An unmapped header that names an amount: one holding 金额, 预算 or 批复 (批复预算调整,
# 年初预算（含结转）), …数 / …额 (调整后预算数, 追加额), or one with a unit (…（万元）).
# Not a header about the budget that holds no amount: 预算科目, 预算级次, 批复文号.
_MONEY_HEADER = re.compile(r"金额|预算|批复|[数额]$|budget|amount", re.IGNORECASE)
_NOT_MONEY = re.compile(r"(?:科目|级次|文号|日期|时间|编码|代码|编号|名称|单位|类别|类型|年度|说明|备注|依据|状态)$")


def _declared_unit(cells: list[Any], origin: str, where: str, found: str | None) -> str | None:
    """The unit a title row declares for the amounts (else ``found``). Two title rows
    that disagree leave the amounts' scale a guess off by 10,000 times: refused."""
    for cell in cells:
        for match in _DECLARED_UNIT.finditer(str(cell or "")):
            unit = UNITS["".join((match.group(1) or match.group(2)).split())]
            if found is not None and unit != found:
                raise TabularError(
                    f"{where}：{origin} 的标题行声明了两种金额单位（{UNIT_NAMES[found]}与{UNIT_NAMES[unit]}），"
                    "未导入任何内容；请只保留一处「单位：…」，或在每个金额列名中写明单位"
                    "（如 年初预算数（万元））后重新导入（the title rows declare two units for the amounts）"
                )
            found = unit
    return found


@dataclass(frozen=True, slots=True)
class Group:
    """A cell of a grouped header row above the header that names a unit, and the
    columns it spans: its own and the empty ones to its right (a merged cell's value
    sits in its first cell), to the next cell of the row or the row's end (None)."""

    start: int
    end: int | None
    unit: str
    text: str
    where: str


def _groups(headers: list[tuple[str, str | None]], cells: list[Any], where: str) -> list[Group]:
    """The unit-naming cells of a row above the header (预算数（万元） merged over
    年初预算数 and 调整后预算数)."""
    filled = [i for i, c in enumerate(cells) if _cell_text(c) is not None]
    found: list[Group] = []
    for position, index in enumerate(filled):
        base, unit = headers[index]
        # a bare "（万元）" or "单位（万元）" declares the unit of all: read as such
        if unit is not None and base and not _DECLARED_UNIT.search(str(cells[index])):
            end = filled[position + 1] if position + 1 < len(filled) else None
            found.append(Group(index, end, unit, str(cells[index]).strip(), where))
    return found


def _group_unit(groups: list[Group], index: int, title_unit: str | None, origin: str, where: str) -> str | None:
    """The unit of the amount column at ``index`` whose header names none: the grouped
    header's above it, else the title's. Two that disagree leave the scale a guess:
    refused."""
    over = [g for g in groups if g.start <= index and (g.end is None or index < g.end)]
    units = {g.unit for g in over} | ({title_unit} if title_unit is not None else set())
    if len(units) > 1:
        said = "、".join(f"{g.where}「{g.text}」" for g in over)
        title = f"，标题行声明的单位是{UNIT_NAMES[title_unit]}" if title_unit is not None else ""
        raise TabularError(
            f"{where}：{origin} 第 {index + 1} 列上方的分组表头写有不同的金额单位（{said}{title}），"
            "未导入任何内容；请只保留一种单位，或在该金额列名中写明单位（如 年初预算数（万元））后重新导入"
            f"（the grouped headers above column {index + 1} give different units）"
        )
    return over[0].unit if over else title_unit


def _unclear_unit(cells: list[Any], where: str, found: tuple[str, str] | None) -> tuple[str, str] | None:
    """(where, text) of the first title cell that mentions a unit (万元, 千元, …) without
    declaring one that :data:`_DECLARED_UNIT` reads (else ``found``)."""
    if found is not None:
        return found
    for cell in cells:
        text = str(cell or "").strip()
        if _UNIT_MENTION.search(text) and not _DECLARED_UNIT.search(text) and split_header(text)[1] is None:
            return where, text
    return None


def _refuse_unclear_unit(
    columns: list[tuple[str | None, str | None]], unclear: tuple[str, str] | None, origin: str
) -> None:
    """Amount columns that name no unit under a title that mentions one in words not
    understood ("本表以万元计"): read as 元 they would be off by 10,000 times; refused."""
    if unclear is None or not any(field in AMOUNT_FIELDS and unit is None for field, unit in columns):
        return
    where, text = unclear
    raise TabularError(
        f"{where}：{origin} 的标题写有「{text}」，提到了金额单位，但读不出金额列的单位，未导入任何内容；"
        "请在标题行写明「单位：万元」（或 元、千元、百万元、亿元），或在金额列名中写明单位（如 年初预算数（万元）），"
        "或导入时用 --unit 指定单位（a title mentions a unit that cannot be read; nothing was imported）"
    )


def _refuse_unknown_budget_column(
    columns: list[tuple[str | None, str | None]],
    headers: list[tuple[str, str | None]],
    cells: list[Any],
    origin: str,
    where: str,
) -> None:
    """A projects sheet whose budget column is not recognised would register every
    project with no budget, silently: refused, naming the column. ``headers``: each
    cell's (name, own unit) as :func:`split_header` read it."""
    if any(field == "approved_amount" for field, _ in columns):
        return
    for (field, _), (base, own_unit), cell in zip(columns, headers, cells, strict=False):
        name = str(cell or "").strip()
        if field is None and name and (
            own_unit is not None or (_MONEY_HEADER.search(base) and not _NOT_MONEY.search(base))
        ):
            raise TabularError(
                f"{where}：{origin} 的列「{name}」看来是金额列，但不是可识别的年初预算数列名，未导入任何内容"
                "（否则每个项目都会被当作没有预算）；请把列名改为 年初预算数（或 年初预算数（万元）），"
                "可用的列名见 README「File import」（a budget column that is not recognised）"
            )


def _refuse_repeated_fields(
    columns: list[tuple[str | None, str | None]], cells: list[Any], origin: str, where: str
) -> None:
    """Two columns for one field (支付金额（万元） and 金额): which one holds the amount, and in
    which unit, is a guess that can be off by 10,000 times — the file is refused."""
    by_field: dict[str, list[str]] = {}
    for (field, _), cell in zip(columns, cells, strict=False):
        if field is not None:
            by_field.setdefault(field, []).append(str(cell).strip())
    repeated = {field: names for field, names in by_field.items() if len(names) > 1}
    if repeated:
        listed = "; ".join(f"{field}: {' / '.join(names)}" for field, names in repeated.items())
        raise TabularError(
            f"{where}：多列对应同一字段（{listed}），金额单位和取值无法确定，{origin} 未导入任何内容；"
            "请每个字段只保留一列（删除或改名其余列）后重新导入"
            f"（several columns mean the same field; nothing of {origin} was imported）"
        )


def _cell_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


# Excel keeps 15 significant digits of a number: a voucher number or code of 16 digits
# or more typed or stored as a number has lost its last digits, and distinct ones
# become one (the rest of them then silently "duplicates").
_EXACT_DIGITS = 10**15
_TEXT_FORMULA = re.compile(r'^="(.*)"$')  # ="001": the CSV trick that keeps leading zeros
_SCIENTIFIC = re.compile(r"[0-9](?:\.[0-9]+)?[eE]\+[0-9]+")


def _id_text(value: Any, label: str) -> str | None:
    """A code or voucher number: text as written, refused when a number cannot hold it."""
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) >= _EXACT_DIGITS:
        raise EventRejected(
            f"{label}以数字形式保存且有 16 位以上（读到 {value!r}）：Excel 只保留 15 位有效数字，末尾几位"
            "可能已丢失，不同编号会变成同一个；请把该列设为“文本”格式后重新导出"
            f"（{label}: a number of 16 digits or more has lost digits in Excel; export the column as text）"
        )
    text = _cell_text(value)
    if text is None or ("+" not in text and not text.startswith("=")):
        return text  # the common case: a code as written
    if _SCIENTIFIC.fullmatch(text):  # a CSV saved by Excel: 1.23457E+18
        raise EventRejected(
            f"{label}是科学计数法（读到 {text}）：Excel 把长编号显示成这样并丢掉了后面的数字；"
            f"请把该列设为“文本”格式后重新导出（{label}: an id in scientific notation has lost its digits）"
        )
    if wrapped := _TEXT_FORMULA.match(text):
        return wrapped.group(1).strip() or None
    return text


_YEAR = re.compile(r"[0-9]{4}")
# The date part of a date-time as Excel for China prints it (2025/3/1 0:00:00) is the day.
_LOOSE_DATE = re.compile(
    r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?(?:[T\s]+\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$"
)
# An Excel date serial (days since 1899-12-30) in a cell formatted General, or in a CSV
# saved from one: 45717 is 2025-03-01. Five digits cover 1927-2173.
_SERIAL_DATE = re.compile(r"^[1-9][0-9]{4}$")
_EXCEL_EPOCH = dt.date(1899, 12, 30)


def _cell_date(value: Any) -> Any:
    """Date cells, 20250315, 2025/3/15, 2025.3.15, 2025年3月15日, a date-time's day and
    Excel date serials become ISO dates."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and 10_000 <= value < 100_000:  # a date-time serial: its day
        value = int(value)
    text = _cell_text(value)
    if text is not None and len(text) == 5 and _SERIAL_DATE.fullmatch(text):
        return (_EXCEL_EPOCH + dt.timedelta(days=int(text))).isoformat()
    return iso_date_text(text)


def iso_date_text(text: str | None) -> Any:
    """20250315, 2025/3/15, 2025.3.15 and 2025年3月15日 as ISO text; anything else as it is
    (the contract's own parser then says what is wrong with it). Full-width digits
    (２０２５年６月３０日) as their ASCII forms."""
    if text and not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    if text and len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    match = _LOOSE_DATE.match(text or "")
    if match:
        year, month, day = match.groups()
        return f"{year}-{int(month):02d}-{int(day):02d}"
    return text


# How amounts are written in exports: ¥1,000.00, 1000.00元, (500.00) for a negative.
_NEGATIVE = re.compile(r"^[（(]\s*(.+?)\s*[)）]$")
_PLAIN_START = frozenset("-0123456789")


_SIGNED_CURRENCY = re.compile(r"^([-+]?)\s*¥\s*")


def _amount_text(text: str) -> str:
    text = text.strip()
    if text[:1] in _PLAIN_START and text[-1:].isdigit() and text.isascii():
        return text  # the common case: 1234.56, -500, 1,500.00
    # Full-width digits and marks (１,０００.００, ￥, －) as their ASCII forms; a sign
    # before the currency mark (-¥1,000.00, Excel's en-US negative currency).
    text = _SIGNED_CURRENCY.sub(r"\1", unicodedata.normalize("NFKC", text).replace("−", "-")).strip()
    if text.endswith("元") and not text.endswith(("万元", "千元", "亿元")):
        text = text[:-1].strip()
    if negative := _NEGATIVE.match(text):
        text = "-" + negative.group(1).lstrip("¥￥").strip()
    return text


# An amount as Excel shows a number too wide for its column (General format): six
# significant digits, the rest lost — 123,456,789,012.34 becomes 1.23457E+11.
_SCIENTIFIC_AMOUNT = re.compile(r"[-+]?[0-9][0-9.,]*[eE][-+]?[0-9]+")


def _cell_fen(value: Any, unit: str) -> int:
    per = FEN_PER_UNIT[unit]
    if isinstance(value, str):
        value = _amount_text(value)
        if _SCIENTIFIC_AMOUNT.fullmatch(value):
            raise EventRejected(
                f"金额是科学计数法（读到 {value}）：Excel 把列宽放不下的数字显示成这样，只留 6 位有效数字，"
                "后面的数字已丢失；请把金额列设为“数值”格式（两位小数）后重新导出"
                f"（an amount in scientific notation has lost its digits: {value}）"
            )
    if isinstance(value, float):
        try:
            return to_fen(value, per_unit=per)  # what the cell shows: 1234567.89
        except MoneyError:
            if not math.isfinite(value):
                raise
        # A formula's binary noise (12345.670000000002, or a 500-term SUM off by ~1e-5
        # fen) is far below a thousandth of a fen; a real third decimal (1234567.891) is
        # a tenth of a fen or more, and is refused.
        scaled = value * per
        nearest = round(scaled)
        if abs(scaled - nearest) < 1e-3:
            return to_fen(int(nearest), per_unit=1)
        raise MoneyError(f"amount {value!r} ({UNIT_NAMES[unit]}) is not a whole number of fen")
    return to_fen(value, per_unit=per)


def _row_events(
    layout: str, values: dict[str, Any], units: dict[str, str]
) -> list[dict[str, Any]]:
    if layout == "payments":
        amount = _cell_fen(values.get("amount"), units.get("amount", "yuan")) if values.get(
            "amount"
        ) not in (None, "") else None
        if amount is None:
            raise EventRejected("missing field 'amount' (支付金额)")
        event: dict[str, Any] = {
            # A negative line in a payments export is a 退回 (reversal).
            "type": "payment_reversed" if amount < 0 else "payment",
            "event_id": _id_text(values.get("event_id"), "支付凭证号"),
            "occurred_on": _cell_date(values.get("occurred_on")),
            "project_id": _id_text(values.get("project_id"), "项目编码"),
            "amount": fen_to_str(abs(amount)),
        }
        for key in ("payee", "method"):
            if (text := _cell_text(values.get(key))) is not None:
                event[key] = text
        if values.get("original_event_id") is not None and (
            original := _id_text(values["original_event_id"], "原支付凭证号")
        ) is not None:
            event["original_event_id"] = original
        if amount < 0:
            event.pop("payee", None)
            event.pop("method", None)
        return [event]
    project_id = _id_text(values.get("project_id"), "项目编码")
    year_text = _cell_text(values.get("fiscal_year"))
    if year_text:
        year_text = year_text.removesuffix("年度").removesuffix("年").strip()  # 2025年度
    if not year_text or not _YEAR.fullmatch(year_text):
        raise EventRejected(f"年度 {year_text!r} 无法识别：应写作 2025、2025年 或 2025年度"
                            f"（fiscal_year {year_text!r} is not a year）")
    year = int(year_text)
    fund_text = _cell_text(values.get("fund_source"))
    fund = FUND_SOURCES.get(fund_text or "", FUND_SOURCES.get((fund_text or "").lower(), fund_text))
    kind_text = _cell_text(values.get("kind"))
    kind = KINDS.get(kind_text or "", KINDS.get((kind_text or "").lower(), kind_text)) or "project"
    approved_on = _cell_date(values.get("approved_on")) or f"{year}-01-01"
    events: list[dict[str, Any]] = [
        {
            "type": "project_registered",
            # Deterministic ids: importing the same sheet twice appends nothing.
            "event_id": f"{project_id}@registered:{year}",
            "occurred_on": approved_on,
            "project_id": project_id,
            "fiscal_year": year,
            "name": _cell_text(values.get("name")),
            "department_id": _id_text(values.get("department_id"), "单位编码"),
            "department_name": _cell_text(values.get("department_name")),
            "fund_source": fund,
            "kind": kind,
        }
    ]
    if "approved_amount" in values:  # the sheet has the column: every row needs its budget
        if _cell_text(values["approved_amount"]) is None:
            raise EventRejected(
                "年初预算数为空：请填写批复预算（尚无预算填 0）；未保存计算结果的公式单元格也读作空，"
                "请用 Excel 或 WPS 打开并保存后重新导入（approved_amount is empty）"
            )
        fen = _cell_fen(values["approved_amount"], units.get("approved_amount", "yuan"))
        events.append(
            {
                "type": "budget_approved",
                "event_id": f"{project_id}@approved:{year}",
                "occurred_on": approved_on,
                "project_id": project_id,
                "amount": fen_to_str(fen),
            }
        )
    return events


def parse_table(
    rows: Iterator[Row],
    origin: str,
    *,
    layout: Layout = "auto",
    unit: Unit = "auto",
) -> Iterator[Parsed]:
    chosen, columns, header, rest = _detect(rows, layout, origin, unit)
    units = {
        name: (unit if unit != "auto" else (col_unit or "yuan"))
        for name, col_unit in columns
        if name is not None
    }
    detail_lines: dict[str, int | list[int]] = {}  # voucher -> its distinct lines in this file
    for source, cells in rest:
        if isinstance(cells, Unreadable):
            yield Rejected(source, cells.reason, cells.raw)
            continue
        if not any(_cell_text(c) for c in cells):
            continue
        values: dict[str, Any] = {}
        # A row may end early (a sheet read without its stated dimension omits trailing
        # empty cells): its missing cells are empty, so a blank budget is still refused.
        if len(cells) < len(columns):
            cells = [*cells, *([None] * (len(columns) - len(cells)))]
        for (name, _), cell in zip(columns, cells, strict=False):
            if name is not None and name not in values:
                values[name] = cell
        # Numbered before the row is read: a refused line keeps its number, so the line
        # after it is the same event whether or not that one is fixed and imported again.
        line = _detail_line(values.get("event_id"), cells, detail_lines) if chosen == "payments" else 1
        try:
            if len(cells) > len(columns) and any(_cell_text(c) for c in cells[len(columns):]):
                # Its cells are shifted under the wrong headers: 1,200,000.00 unquoted
                # read as a budget of 1.00 and the payee as "200".
                raise EventRejected(_extra_cells_reason(len(cells), len(columns)))
            if (total := _totals_label(chosen, values, cells)) is not None:
                raise EventRejected(_totals_reason(chosen, total))
            found = _row_events(chosen, values, units)
            if line > 1:
                found[0]["event_id"] = f"{found[0]['event_id']}#{line}"
            # An empty cell is a missing field ("缺少字段 'name'"), not "应为文本".
            events = [parse_event_object({k: v for k, v in e.items() if v is not None}) for e in found]
        except (EventRejected, MoneyError) as err:
            reason = err.reason if isinstance(err, EventRejected) else _money_reason(err)
            if line > 1:
                voucher = _cell_text(values.get("event_id"))
                reason += (f"；本行是凭证 {voucher} 的第 {line} 条明细（编号 {voucher}#{line}），请在原文件中"
                           "修正后重新导入整个文件（再次导入不会重复记账），不要单独导入这一行")
            yield Rejected(source, _sheet_reason(chosen, reason), _raw_row(header, cells))
            continue
        except (ValueError, TypeError, ArithmeticError) as err:  # one odd cell loses its row only
            unreadable = f"无法读取本行（cannot read it: {type(err).__name__}: {err}）"
            yield Rejected(source, _sheet_reason(chosen, unreadable), _raw_row(header, cells))
            continue
        for event in events:
            yield Accepted(event.to_record(), source)


SHEET_NAMES = {"projects": "项目表", "payments": "支付表"}
# The contract's field names as the sheets' headers say them (README lists them all).
FIELD_LABELS = {
    "projects": {"project_id": "项目编码", "name": "项目名称", "department_id": "单位编码",
                 "department_name": "单位名称", "fund_source": "资金性质", "fiscal_year": "年度",
                 "amount": "年初预算数", "occurred_on": "批复日期", "kind": "项目类型"},
    "payments": {"event_id": "支付凭证号", "project_id": "项目编码", "occurred_on": "支付日期",
                 "amount": "支付金额", "payee": "收款人", "method": "支付方式"},
}


def _sheet_reason(chosen: str, reason: str) -> str:
    """A row's reason as a sheet's user reads it: the sheet and its headers named, not the
    contract's fields ("projects row: 缺少字段 'project_id'"); the English part kept as is."""
    head, bracket, tail = reason.partition("（")
    for field, label in FIELD_LABELS.get(chosen, {}).items():
        head = head.replace(f"'{field}'", f"“{label}”").replace(f"{field}：", f"{label}：")
    return f"{SHEET_NAMES.get(chosen, chosen)}：{head}{bracket}{tail}"


# 合计, 总计：, 本页合计, 交通局小计: the totals rows of a printed report.
_TOTALS = re.compile(r"^(?:合\s*计|总\s*计|小\s*计)|(?:合计|总计|小计)\s*[:：]?$")


def _totals_label(chosen: str, values: dict[str, Any], cells: list[Any]) -> str | None:
    """The 合计/小计 a totals row is labelled with: in its key column (项目编码, or for a
    payment 支付凭证号), or anywhere in a row whose key columns are empty."""
    keys = ("project_id",) if chosen == "projects" else ("event_id", "project_id")
    texts = [_cell_text(values.get(k)) for k in keys]
    for text in texts:
        if text is not None and _TOTALS.search(text):
            return text
    if any(texts):
        return None
    for cell in cells:
        text = _cell_text(cell)
        if isinstance(cell, str) and text is not None and _TOTALS.search(text):
            return text
    return None


def _totals_reason(chosen: str, total: str) -> str:
    what, what_en = ("项目", "project") if chosen == "projects" else ("支付明细", "payment")
    return (
        f"本行是合计/小计行（「{total}」），不是{what}，未导入；它不影响其他行的导入，可忽略本条，"
        f"或导出时不带合计行（a totals row ({total}), not a {what_en}: not imported）"
    )


def _extra_cells_reason(cells: int, columns: int) -> str:
    return (
        f"本行有 {cells} 个单元格，比表头的 {columns} 列多，各列已错位，未导入：多半是金额中的千位分隔逗号没有加引号"
        "（如 1,200,000.00 被拆成了几列）；请导出时给金额加上引号或去掉千位分隔符（或另存为 .xlsx），"
        "修正后重新导入整个文件（再次导入不会重复记账）"
        f"（the row has {cells} cells, more than the header's {columns} — likely an unquoted thousands separator）"
    )


def _money_reason(err: MoneyError) -> str:
    """What is wrong with an amount cell, in words that say how to fix it."""
    text = str(err)
    if "whole number of fen" in text:
        return f"金额超过两位小数：金额应精确到分（元的最多两位小数，万元的最多六位），请更正后重新导入（{err}）"
    if "10 万亿元" in text:
        return f"金额达到或超过10万亿元：请检查金额单位（元或万元）和数位（{err}）"
    return f"金额无法读取，应为数字如 1,234,567.89（{err}）"


def _raw_row(header: list[str], cells: list[Any]) -> str:
    """A refused row as written, every column under its own header (unmapped ones too:
    a dead letter keeps the whole row)."""
    row: dict[str, Any] = {}
    for index, cell in enumerate(cells):
        if cell is None or (isinstance(cell, str) and not cell.strip()):
            continue
        name = (header[index] if index < len(header) else "") or f"第{index + 1}列"
        while name in row:
            name += "'"
        row[name] = cell.isoformat() if isinstance(cell, dt.date) else cell
    return orjson.dumps(row, default=str).decode()


def _detail_line(voucher: Any, cells: list[Any], seen: dict[str, int | list[int]]) -> int:
    """Which distinct line of its voucher (支付凭证) this row is in the file: 1, 2, ….

    A voucher may have several detail lines — one per economic class or payee — each
    with the voucher's number. They were one event and a "duplicate": the money of every
    line after the first was lost. In one file each distinct line is its own event (the
    first keeps the number, the next are ``V1#2``, …), numbered in file order so that
    importing the file again appends nothing; a line repeated exactly, every column
    alike, is the same line."""
    key = _cell_text(voucher)
    if key is None:
        return 1
    try:
        fingerprint = hash(tuple(cells))
    except TypeError:  # a cell type without a hash
        fingerprint = hash(tuple(map(repr, cells)))
    known = seen.get(key)
    if known is None:
        seen[key] = fingerprint
        return 1
    variants = known if isinstance(known, list) else [known]
    if fingerprint in variants:
        return variants.index(fingerprint) + 1
    variants.append(fingerprint)
    seen[key] = variants
    return len(variants)


def read_table(path: Path, *, layout: Layout = "auto", unit: Unit = "auto") -> Iterator[Parsed]:
    if path.suffix.lower() not in (".xlsx", ".xlsm"):
        yield from parse_table(csv_rows(path), str(path), layout=layout, unit=unit)
        return
    # Every sheet (项目 and 支付 in one workbook); a sheet with no header row (说明, 封面)
    # is reported, not silently passed over; a workbook with none is refused.
    skipped: list[tuple[str, TabularError]] = []
    read_any = False
    for title, rows in xlsx_sheets(path):
        try:
            parsed = parse_table(rows, f"{path}:{title}", layout=layout, unit=unit)
            first = next(parsed, None)
        except TabularError as err:
            skipped.append((title, err))
            continue
        read_any = True
        if first is not None:
            yield first
            yield from parsed
    if not read_any:
        raise TabularError("; ".join(str(refusal) for _, refusal in skipped))
    for title, refusal in skipped:
        yield Rejected(f"{path}:{title}", f"sheet skipped: {refusal}", "")
