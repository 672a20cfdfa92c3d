"""CSV and XLSX exports of budget systems: a projects sheet or a payments sheet.

The header row may sit under a title block; it is the first of the top rows in
which at least two cells name known columns. Amounts are in 元 unless the
column header says （万元） or the caller passes ``unit="wan"``. Every row
becomes contract events (validated exactly like JSON input) or a rejection
with ``file:line`` and the reason.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import orjson

from budget.events import EventRejected, parse_event_object
from budget.money import FEN_PER_WAN, FEN_PER_YUAN, MoneyError, fen_to_str, to_fen
from connectors.headers import FUND_SOURCES, KINDS, PAYMENT_HEADERS, PROJECT_HEADERS, split_header
from connectors.parsed import Accepted, Parsed, Rejected

Layout = Literal["auto", "projects", "payments"]
Unit = Literal["auto", "yuan", "wan"]

HEADER_SEARCH_ROWS = 10


class TabularError(ValueError):
    """A file whose layout cannot be recognised; nothing of it was imported."""


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A stretch of the file that is not a row (bad bytes, broken quoting)."""

    reason: str
    raw: str


Row = tuple[str, "list[Any] | Unreadable"]
RAW_LIMIT = 4_000  # characters of an unreadable stretch kept in the dead letter


def _encoding_of(data: bytes) -> str:
    """UTF-8 (with or without BOM) or GB18030 (GBK exports), by which decodes more lines."""
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            data.decode(encoding)
            return encoding
        except UnicodeDecodeError:
            continue
    lines = data.split(b"\n")

    def failures(encoding: str) -> int:
        bad = 0
        for line in lines:
            try:
                line.decode(encoding)
            except UnicodeDecodeError:
                bad += 1
        return bad

    return min(("utf-8-sig", "gb18030"), key=failures)


def _decode_lines(data: bytes, origin: str) -> tuple[str, dict[int, Unreadable]]:
    """The text, with each line that does not decode blanked out and kept as a dead
    letter (by line number): one bad byte must not spoil the file or slip in as U+FFFD."""
    encoding = _encoding_of(data)
    try:
        return data.decode(encoding), {}
    except UnicodeDecodeError:
        pass
    texts: list[str] = []
    bad: dict[int, Unreadable] = {}
    for number, line in enumerate(data.split(b"\n"), start=1):
        try:
            texts.append(line.decode(encoding if number == 1 else encoding.removesuffix("-sig")))
        except UnicodeDecodeError as err:
            texts.append("")
            shown = "utf-8" if encoding.startswith("utf-8") else encoding
            bad[number] = Unreadable(
                f"line is not valid {shown} text (byte {err.start + 1}); re-export the file in one encoding",
                line.decode(encoding.removesuffix("-sig"), errors="replace")[:RAW_LIMIT],
            )
    return "\n".join(texts), bad


def csv_rows(path: Path) -> Iterator[Row]:
    """(``file:line`` of the record's first line, cells) per CSV record; what cannot be
    read as a record comes as :class:`Unreadable` in its place."""
    text, bad = _decode_lines(path.read_bytes(), str(path))
    csv.field_size_limit(1 << 30)  # a huge cell is refused by validation, with its line
    # newline="": the csv module sees \r, \r\n and \n endings itself (old Mac files too).
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    pending_bad = sorted(bad)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            end = reader.line_num
            lines = text.splitlines()[start - 1:end]
            if "unexpected end of data" in str(err) or end > start + 1:
                reason = (
                    f"unclosed quote (\") from line {start} to line {end}: {end - start + 1} lines "
                    "could not be read as rows; fix the quoting and import the file again"
                )
            else:
                reason = f"not a CSV row ({err}); fix the quoting on this line"
            yield from _bad_before(path, pending_bad, bad, end + 1)
            yield f"{path}:{start}", Unreadable(reason, "\n".join(lines)[:RAW_LIMIT])
            start = end + 1
            continue
        yield from _bad_before(path, pending_bad, bad, start + 1)
        yield f"{path}:{start}", row
        start = reader.line_num + 1
    yield from _bad_before(path, pending_bad, bad, 1 << 62)


def _bad_before(path: Path, pending: list[int], bad: dict[int, Unreadable], line: int) -> Iterator[Row]:
    while pending and pending[0] < line:
        number = pending.pop(0)
        yield f"{path}:{number}", bad[number]


def xlsx_sheets(path: Path) -> Iterator[tuple[str, Iterator[Row]]]:
    """(sheet title, its rows) for every sheet of the workbook."""
    from openpyxl import load_workbook

    workbook = load_workbook(path, read_only=True, data_only=True)
    try:
        for sheet in workbook.worksheets:
            rows: Iterator[Row] = (
                (f"{path}:{sheet.title}:{number}", list(row))
                for number, row in enumerate(sheet.iter_rows(values_only=True), start=1)
            )
            yield sheet.title, rows
    finally:
        workbook.close()


def _detect(
    rows: Iterator[Row], layout: Layout, origin: str
) -> tuple[str, list[tuple[str | None, str | None]], Iterator[Row]]:
    """Find the header row; return (layout, [(field, unit)] per column, remaining rows)."""
    seen: list[str] = []
    skipped: list[Row] = []  # unreadable stretches above the header: still dead letters
    for _ in range(HEADER_SEARCH_ROWS):
        item = next(rows, None)
        if item is None:
            break
        _, cells = item
        if isinstance(cells, Unreadable):
            skipped.append(item)
            continue
        headers = [split_header(c) for c in cells]
        names = [h for h, _ in headers]
        seen.append(" | ".join(n for n in names if n))
        scores = {
            "payments": sum(1 for n in names if n in PAYMENT_HEADERS),
            "projects": sum(1 for n in names if n in PROJECT_HEADERS),
        }
        has_voucher = any(PAYMENT_HEADERS.get(n) in ("event_id", "amount") for n in names)
        chosen: str | None
        if layout != "auto":
            chosen = layout if scores[layout] >= 2 else None
        elif has_voucher and scores["payments"] >= 2:
            chosen = "payments"
        elif scores["projects"] >= 2:
            chosen = "projects"
        else:
            chosen = None
        if chosen is None:
            continue
        table = PAYMENT_HEADERS if chosen == "payments" else PROJECT_HEADERS
        columns = [(table.get(n), u) for n, u in headers]
        _refuse_repeated_fields(columns, cells, origin, item[0])
        return chosen, columns, chain(skipped, rows)
    raise TabularError(
        f"{origin}: no header row of a projects or payments sheet in the first "
        f"{HEADER_SEARCH_ROWS} rows (saw: {'; '.join(s for s in seen if s) or 'nothing'}); "
        "see README 'File import' for the accepted column names"
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
            f"{where}: several columns mean the same field ({listed}); nothing of {origin} was "
            "imported: keep one column per field (delete or rename the others) and import again"
        )


def _cell_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


_YEAR = re.compile(r"[0-9]{4}")
_LOOSE_DATE = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?$")


def _cell_date(value: Any) -> Any:
    """Date cells, 20250315, 2025/3/15, 2025.3.15 and 2025年3月15日 become ISO dates."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    text = _cell_text(value)
    if text and len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    match = _LOOSE_DATE.match(text or "")
    if match:
        year, month, day = match.groups()
        return f"{year}-{int(month):02d}-{int(day):02d}"
    return text


def _cell_fen(value: Any, unit: str) -> int:
    per = FEN_PER_WAN if unit == "wan" else FEN_PER_YUAN
    if isinstance(value, float):
        try:
            return to_fen(value, per_unit=per)  # what the cell shows: 1234567.89
        except MoneyError:
            if not math.isfinite(value):
                raise
        # A formula's binary noise (12345.670000000002) is a few units in the last place
        # of a fen amount; anything more (1234567.891) is a third decimal, refused.
        scaled = value * per
        nearest = round(scaled)
        if abs(scaled - nearest) <= 8 * math.ulp(scaled):
            return to_fen(int(nearest), per_unit=1)
        raise MoneyError(f"amount {value!r} ({'万元' if unit == 'wan' else '元'}) is not a whole number of fen")
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
            "event_id": _cell_text(values.get("event_id")),
            "occurred_on": _cell_date(values.get("occurred_on")),
            "project_id": _cell_text(values.get("project_id")),
            "amount": fen_to_str(abs(amount)),
        }
        for key in ("payee", "method", "original_event_id"):
            if (text := _cell_text(values.get(key))) is not None:
                event[key] = text
        if amount < 0:
            event.pop("payee", None)
            event.pop("method", None)
        return [event]
    project_id = _cell_text(values.get("project_id"))
    year_text = _cell_text(values.get("fiscal_year"))
    if not year_text or not _YEAR.fullmatch(year_text):
        raise EventRejected(f"fiscal_year (年度): {year_text!r} is not a year")
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
            "department_id": _cell_text(values.get("department_id")),
            "department_name": _cell_text(values.get("department_name")),
            "fund_source": fund,
            "kind": kind,
        }
    ]
    if values.get("approved_amount") not in (None, ""):
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
    chosen, columns, rest = _detect(rows, layout, origin)
    units = {
        name: (unit if unit != "auto" else (col_unit or "yuan"))
        for name, col_unit in columns
        if name is not None
    }
    for source, cells in rest:
        if isinstance(cells, Unreadable):
            yield Rejected(source, cells.reason, cells.raw)
            continue
        if not any(_cell_text(c) for c in cells):
            continue
        values: dict[str, Any] = {}
        for (name, _), cell in zip(columns, cells, strict=False):
            if name is not None and name not in values:
                values[name] = cell
        raw = orjson.dumps(
            {str(k): (v.isoformat() if isinstance(v, dt.date) else v) for k, v in values.items()},
            default=str,
        ).decode()
        try:
            events = [parse_event_object(e) for e in _row_events(chosen, values, units)]
        except (EventRejected, MoneyError) as err:
            reason = err.reason if isinstance(err, EventRejected) else str(err)
            yield Rejected(source, f"{chosen} row: {reason}", raw)
            continue
        except (ValueError, TypeError, ArithmeticError) as err:  # one odd cell loses its row only
            yield Rejected(source, f"{chosen} row: cannot read it ({type(err).__name__}: {err})", raw)
            continue
        for event in events:
            yield Accepted(event.to_record(), source)


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


def write_xlsx(path: Path, headers: Sequence[str], rows: Iterable[Sequence[Any]], title: str) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = title
    sheet.append(list(headers))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in rows:
        sheet.append(list(row))
        for cell in sheet[sheet.max_row]:
            # A project name like "=HYPERLINK(…)" is text, never a live formula.
            if isinstance(cell.value, str) and cell.value.startswith("="):
                cell.data_type = "s"
    for column in sheet.columns:
        width = max(len(str(c.value or "")) for c in column)
        sheet.column_dimensions[column[0].column_letter].width = min(max(width * 1.6, 10), 60)
    workbook.save(path)
