"""The event contract (DESIGN §3): pydantic models, one per event type.

Events are validated once, at the boundary. Inside, an event travels as a
:class:`Record` — a plain tuple the ledger folds — so the hot path never
builds a model.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from budget.calendar import CHINA_TIME
from budget.money import MoneyError, fen_to_str, to_fen

EARLIEST_YEAR = 1990
LATEST_YEAR = 2100


class FundSource(StrEnum):
    general = "general"  # 一般公共预算
    government_fund = "government_fund"  # 政府性基金预算
    state_capital = "state_capital"  # 国有资本经营预算
    social_insurance = "social_insurance"  # 社会保险基金预算


class ProjectKind(StrEnum):
    project = "project"
    department_overall = "department_overall"


class Direction(StrEnum):
    higher_better = "higher_better"
    lower_better = "lower_better"
    boolean = "boolean"


class Category(StrEnum):
    output = "output"  # 产出
    effect = "effect"  # 效益
    satisfaction = "satisfaction"  # 满意度


def _business_date(moment: dt.datetime) -> dt.date:
    # A payment at 2025-12-31T17:30:00Z was made on 2026-01-01 in China: a different
    # fiscal year. A time without an offset is taken as China time already.
    return moment.astimezone(CHINA_TIME).date() if moment.tzinfo is not None else moment.date()


def parse_day(value: object) -> dt.date:
    """`YYYY-MM-DD`, or a full ISO datetime: its date in China (UTC+8) when it carries an
    offset, else its date part."""
    if isinstance(value, dt.datetime):
        day = _business_date(value)
    elif isinstance(value, dt.date):
        day = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            day = (
                dt.date.fromisoformat(text)
                if len(text) == 10
                else _business_date(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
            )
        except (ValueError, OverflowError):
            raise ValueError(f"{value!r} is not a date (YYYY-MM-DD or ISO datetime)") from None
    else:
        raise ValueError(f"expected a date string, got {type(value).__name__}")
    if not EARLIEST_YEAR <= day.year <= LATEST_YEAR:
        raise ValueError(f"date {day.isoformat()} is outside {EARLIEST_YEAR}-{LATEST_YEAR}")
    return day


def _money(value: object) -> int:
    try:
        return to_fen(value)
    except MoneyError as err:
        raise ValueError(str(err)) from None


Day = Annotated[dt.date, BeforeValidator(parse_day)]
# Money is held as int fen inside; it serialises back to a yuan decimal string.
Fen = Annotated[int, BeforeValidator(_money), PlainSerializer(fen_to_str, return_type=str)]
Text = Annotated[str, Field(min_length=1, max_length=200)]


class Record(NamedTuple):
    """An event as the ledger folds it: validated, plain data."""

    type: str
    event_id: str
    day: int  # date.toordinal() of occurred_on
    project_id: str
    amount: int | None  # fen
    details: Mapping[str, Any] | None


class EventBase(BaseModel):
    # No float field may be NaN or infinite (1e400 in JSON is infinity): stored as null,
    # one such value stopped every later run.
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True, allow_inf_nan=False)

    event_id: Text
    occurred_on: Day
    project_id: Text

    def details(self) -> dict[str, Any] | None:
        common = {"type", "event_id", "occurred_on", "project_id", "amount"}
        data = self.model_dump(mode="json", exclude=common, exclude_none=True)
        return data or None

    def to_record(self) -> Record:
        amount: int | None = getattr(self, "amount", None)
        return Record(
            self.type,  # type: ignore[attr-defined]
            self.event_id,
            self.occurred_on.toordinal(),
            self.project_id,
            amount,
            self.details(),
        )


class ProjectRegistered(EventBase):
    type: Literal["project_registered"]
    fiscal_year: Annotated[int, Field(ge=EARLIEST_YEAR, le=LATEST_YEAR)]
    name: Text
    department_id: Text
    department_name: Text
    fund_source: FundSource
    kind: ProjectKind = ProjectKind.project
    spending_plan: list[float] | None = None

    @field_validator("spending_plan")
    @classmethod
    def _plan_is_cumulative(cls, plan: list[float] | None) -> list[float] | None:
        if plan is None:
            return None
        if len(plan) != 12:
            raise ValueError(f"spending_plan needs 12 monthly cumulative fractions, got {len(plan)}")
        previous = 0.0
        for month, fraction in enumerate(plan, start=1):
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(f"spending_plan month {month} is {fraction}, outside 0-1")
            if fraction < previous:
                raise ValueError(
                    f"spending_plan must be cumulative: month {month} ({fraction}) "
                    f"is below month {month - 1} ({previous})"
                )
            previous = fraction
        return plan


class BudgetApproved(EventBase):
    type: Literal["budget_approved"]
    amount: Annotated[Fen, Field(ge=0)]


class BudgetAdjusted(EventBase):
    type: Literal["budget_adjusted"]
    amount: Fen  # signed: 追加 (+), 调减/收回 (-)
    reason: str | None = None


class Payment(EventBase):
    type: Literal["payment"]
    amount: Annotated[Fen, Field(gt=0)]
    payee: str | None = None
    method: str | None = None


class PaymentReversed(EventBase):
    type: Literal["payment_reversed"]
    amount: Annotated[Fen, Field(gt=0)]
    original_event_id: str | None = None


MAX_WEIGHT = 10_000.0


class IndicatorDefined(EventBase):
    type: Literal["indicator_defined"]
    indicator_id: Text
    name: Text
    target: float
    unit: str | None = None
    direction: Direction = Direction.higher_better
    # Relative weights (often points out of 100); a bound keeps their sum finite.
    weight: Annotated[float, Field(gt=0, le=MAX_WEIGHT)] = 1.0
    category: Category | None = None

    @field_validator("target")
    @classmethod
    def _finite_target(cls, target: float) -> float:
        if target != target or target in (float("inf"), float("-inf")):
            raise ValueError("target must be a finite number")
        return target


class IndicatorReported(EventBase):
    type: Literal["indicator_reported"]
    indicator_id: Text
    actual: bool | float

    @field_validator("actual")
    @classmethod
    def _finite_actual(cls, actual: bool | float) -> bool | float:
        if isinstance(actual, float) and (actual != actual or abs(actual) == float("inf")):
            raise ValueError("actual must be a finite number or a boolean")
        return actual


class DispositionAction(StrEnum):
    continue_ = "continue"  # 继续执行并说明原因
    reallocate = "reallocate"  # 调剂
    reduce = "reduce"  # 调减 (needs the bureau's approval; emits budget_adjusted)
    recover = "recover"  # 收回 (needs the bureau's approval; emits budget_adjusted)
    cancel = "cancel"  # 取消


# `{fiscal_year}:{rule}:{project|department}:{subject_id}` (alerts.lifecycle.alert_id_for)
_ALERT_ID = r"^\d{4}:[a-z_]+:(project|department):\S.*$"
Note = Annotated[str, Field(max_length=2000)]


class _AlertEvent(EventBase):
    """An event about an alert (the disposition loop); ``project_id`` defaults from ``alert_id``:
    the project of a project alert, the alert id itself for a department alert."""

    alert_id: Annotated[str, Field(min_length=1, max_length=200, pattern=_ALERT_ID)]
    note: Note | None = None
    by: Annotated[str, Field(max_length=200)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _project_from_alert(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("project_id") and isinstance(data.get("alert_id"), str):
            parts = data["alert_id"].strip().split(":", 3)
            if len(parts) == 4:
                data = {**data, "project_id": parts[3] if parts[2] == "project" else data["alert_id"].strip()}
        return data

    @model_validator(mode="after")
    def _project_matches(self) -> _AlertEvent:
        _, _, subject_type, subject_id = self.alert_id.split(":", 3)
        if subject_type == "project" and self.project_id != subject_id:
            raise ValueError(f"project_id {self.project_id!r} is not the project of alert {self.alert_id!r}")
        return self


class AlertDisposed(_AlertEvent):
    """处置: a department's answer to an alert (DESIGN §3, the disposition loop)."""

    type: Literal["alert_disposed"]
    action: DispositionAction
    amount: Annotated[Fen, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _amount_for_adjustments(self) -> AlertDisposed:
        if self.action in (DispositionAction.reduce, DispositionAction.recover) and self.amount is None:
            raise ValueError(f"action {self.action.value!r} needs an amount (yuan > 0)")
        return self


class DispositionApproved(_AlertEvent):
    """The bureau's decision on a `reduce`/`recover` disposition: approved (emits the
    budget_adjusted) or returned to the department (``approved: false``)."""

    type: Literal["disposition_approved"]
    disposition_event_id: Text
    approved: bool = True


BudgetEvent = Annotated[
    ProjectRegistered
    | BudgetApproved
    | BudgetAdjusted
    | Payment
    | PaymentReversed
    | IndicatorDefined
    | IndicatorReported
    | AlertDisposed
    | DispositionApproved,
    Field(discriminator="type"),
]

EVENT_TYPES: tuple[str, ...] = (
    "project_registered",
    "budget_approved",
    "budget_adjusted",
    "payment",
    "payment_reversed",
    "indicator_defined",
    "indicator_reported",
    "alert_disposed",
    "disposition_approved",
)

_ADAPTER: TypeAdapter[BudgetEvent] = TypeAdapter(BudgetEvent)


class EventRejected(ValueError):
    """Input that is not a valid event; ``reason`` says what is wrong and how to fix it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Problems in the words of a finance office (user-facing text is Chinese), by pydantic's
# error type; the English follows in brackets for logs, searches and support.
_PROBLEM_ZH = {
    "greater_than": "应大于 {gt}",
    "greater_than_equal": "应不小于 {ge}",
    "less_than": "应小于 {lt}",
    "less_than_equal": "应不大于 {le}",
    "literal_error": "取值应为 {expected} 之一",
    "enum": "取值应为 {expected} 之一",
    "string_type": "应为文本",
    "string_too_short": "不能为空",
    "string_too_long": "过长",
    "int_type": "应为整数",
    "int_parsing": "应为整数",
    "int_from_float": "应为整数",
    "float_type": "应为数字",
    "float_parsing": "应为数字",
    "finite_number": "应为有限的数字",
    "bool_type": "应为 true 或 false",
    "bool_parsing": "应为 true 或 false",
    "decimal_type": "应为金额数字",
    "decimal_parsing": "应为金额数字",
    "extra_forbidden": "不是此类事件的字段",
    "date_type": "不是有效日期",
    "date_parsing": "不是有效日期",
    "list_type": "应为列表",
    "dict_type": "应为 JSON 对象",
    "model_type": "应为 JSON 对象",
}
_FUND_NAMES_ZH = "表格中也可写 一般公共预算、政府性基金预算、国有资本经营预算、社会保险基金预算"


# This module's own value errors, recognised by their words.
_VALUE_PROBLEM_ZH = (
    ("is not a date", "不是有效日期（应为 YYYY-MM-DD）"),
    ("whole number of fen", "金额最多保留两位小数（到分）"),
    ("not a decimal number", "不是金额数字"),
    ("is outside", "超出可处理的年份范围"),
)
# A reduce/recover without an amount (AlertDisposed): the words name the action.
_NEEDS_AMOUNT_ZH = {
    "reduce": "调减（reduce）须填写金额 amount（元，大于 0）",
    "recover": "收回（recover）须填写金额 amount（元，大于 0）",
}


def problem_zh(kind: str, ctx: Mapping[str, Any] | None, message: str = "") -> str:
    if kind == "value_error":
        if "needs an amount" in message:
            return next((zh for action, zh in _NEEDS_AMOUNT_ZH.items() if f"'{action}'" in message),
                        "调减/收回须填写金额 amount（元，大于 0）")
        for words, zh in _VALUE_PROBLEM_ZH:
            if words in message:
                return zh
    template = _PROBLEM_ZH.get(kind, "取值无效")
    found = dict(ctx or {})
    if isinstance(found.get("expected"), str):  # pydantic lists choices as "'a', 'b' or 'c'"
        found["expected"] = found["expected"].replace("' or '", "', '").replace("', '", "'、'")
    try:
        return template.format(**found)
    except (KeyError, IndexError, ValueError):
        return "取值无效"


def describe(err: ValidationError) -> str:
    """One line per problem, `field：问题（field: message）`, the way an operator reads it."""
    parts: list[str] = []
    for problem in err.errors(include_url=False):
        kind = problem["type"]
        if kind == "union_tag_invalid":
            tag = problem.get("ctx", {}).get("tag")
            return (
                f"未知的事件类型 {tag!r}（unknown event type {tag!r}）；"
                f"应为：{', '.join(EVENT_TYPES)}"
            )
        if kind == "union_tag_not_found":
            return "缺少字段 'type'（missing field 'type'）"
        if kind == "json_invalid":
            return f"不是有效的 JSON（not valid JSON: {problem['msg']}）"
        if not problem["loc"]:
            return "事件应为 JSON 对象（an event must be a JSON object）"
        # loc starts with the union tag; drop it so the field name leads.
        loc = [str(p) for p in problem["loc"][1:]] or [str(p) for p in problem["loc"]]
        where = ".".join(loc)
        message = problem["msg"]
        if kind == "missing":
            parts.append(f"缺少字段 {where!r}（missing field {where!r}）")
            continue
        message = message.removeprefix("Value error, ")
        hint = f"；{_FUND_NAMES_ZH}" if where == "fund_source" else ""
        parts.append(f"{where}：{problem_zh(kind, problem.get('ctx'), message)}（{where}: {message}）{hint}")
    return "; ".join(parts) or str(err)


def parse_event(raw: str | bytes) -> BudgetEvent:
    """Validate one JSON event; raise :class:`EventRejected` with a clear reason."""
    try:
        return _ADAPTER.validate_json(raw)
    except ValidationError as err:
        raise EventRejected(describe(err)) from None


def parse_event_object(data: Mapping[str, Any]) -> BudgetEvent:
    """Validate an already-decoded event (a row mapped from CSV/XLSX, a Faust value)."""
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as err:
        raise EventRejected(describe(err)) from None


def record_to_json_dict(record: Record) -> dict[str, Any]:
    """Rebuild the contract JSON of a stored record."""
    data: dict[str, Any] = {
        "type": record.type,
        "event_id": record.event_id,
        "occurred_on": dt.date.fromordinal(record.day).isoformat(),
        "project_id": record.project_id,
    }
    if record.amount is not None:
        data["amount"] = fen_to_str(record.amount)
    if record.details:
        data.update(record.details)
    return data
