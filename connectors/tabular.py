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
import re
from collections.abc import Iterable, Iterator, Sequence
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


def _decode_csv(data: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace")


def csv_rows(path: Path) -> Iterator[tuple[str, list[Any]]]:
    text = _decode_csv(path.read_bytes())
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        yield f"{path}:{number}", row


def xlsx_rows(path: Path) -> Iterator[tuple[str, list[Any]]]:
    from openpyxl import load_workbook

    workbook = load_workbook(path, read_only=True, data_only=True)
    try:
        sheet = workbook.worksheets[0]
        for number, row in enumerate(sheet.iter_rows(values_only=True), start=1):
            yield f"{path}:{sheet.title}:{number}", list(row)
    finally:
        workbook.close()


def _detect(
    rows: Iterator[tuple[str, list[Any]]], layout: Layout, origin: str
) -> tuple[str, list[tuple[str | None, str | None]], Iterator[tuple[str, list[Any]]]]:
    """Find the header row; return (layout, [(field, unit)] per column, remaining rows)."""
    seen: list[str] = []
    for _ in range(HEADER_SEARCH_ROWS):
        item = next(rows, None)
        if item is None:
            break
        _, cells = item
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
        return chosen, [(table.get(n), u) for n, u in headers], rows
    raise TabularError(
        f"{origin}: no header row of a projects or payments sheet in the first "
        f"{HEADER_SEARCH_ROWS} rows (saw: {'; '.join(s for s in seen if s) or 'nothing'}); "
        "see README 'File import' for the accepted column names"
    )


def _cell_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


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
        # Spreadsheet cells hold binary doubles (12345.670000000002 from a formula);
        # take the nearest fen when the cell is a fen amount up to float noise.
        scaled = value * per
        nearest = round(scaled)
        if abs(scaled - nearest) <= 1e-6 * max(1.0, abs(scaled)):
            return int(nearest)
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
    if not year_text or not year_text.isdigit():
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
    rows: Iterator[tuple[str, list[Any]]],
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
        for event in events:
            yield Accepted(event.to_record(), source)


def read_table(path: Path, *, layout: Layout = "auto", unit: Unit = "auto") -> Iterator[Parsed]:
    suffix = path.suffix.lower()
    rows: Iterable[tuple[str, list[Any]]] = xlsx_rows(path) if suffix in (".xlsx", ".xlsm") else csv_rows(path)
    yield from parse_table(iter(rows), str(path), layout=layout, unit=unit)


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
    for column in sheet.columns:
        width = max(len(str(c.value or "")) for c in column)
        sheet.column_dimensions[column[0].column_letter].width = min(max(width * 1.6, 10), 60)
    workbook.save(path)
