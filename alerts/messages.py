"""Chinese text for people: alert messages and recommended actions (DESIGN §6)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_DOWN, Decimal
from functools import lru_cache
from typing import Any

RULE_NAMES: dict[str, str] = {
    "low_execution": "预算执行率偏低",
    "behind_schedule": "执行进度滞后",
    "progress_gap": "执行进度与绩效目标偏离",
    "overspend": "超预算支付",
    "stalled": "长期未支付",
    "department_low_execution": "部门预算执行率偏低",
}
SEVERITY_NAMES: dict[str, str] = {"warning": "一般预警", "critical": "严重预警"}
KIND_NAMES: dict[str, str] = {
    "firing": "新预警",
    "escalated": "预警升级",
    "deescalated": "预警降级",
    "resolved": "预警解除",
    "disposed": "已处置",
    "disposition_approved": "处置已审批",
    "disposition_returned": "处置被退回",
    "disposition_overdue": "逾期未处置",
    "moved": "预警归属变更",
}
# A resolution's reason, where it is not that the condition cleared (lifecycle.YEAR_CLOSED).
REASON_NAMES: dict[str, str] = {"year_closed": "年度结束"}


def kind_name(kind: str, reason: Any = None, names: Mapping[str, str] = KIND_NAMES) -> str:
    """What people are shown for a transition: its kind in ``names`` (a notification's,
    the CLI's shorter ones, Grafana's), or the reason it resolved (年度结束)."""
    if kind == "resolved" and reason in REASON_NAMES:
        return REASON_NAMES[reason]
    return names.get(kind, kind)


FUND_SOURCE_NAMES: dict[str, str] = {
    "general": "一般公共预算",
    "government_fund": "政府性基金预算",
    "state_capital": "国有资本经营预算",
    "social_insurance": "社会保险基金预算",
}


def pct(value: float | None, places: int = 2) -> str:
    return "—" if value is None else f"{value * 100:.{places}f}%"


def pct_down(value: float | None, places: int = 2) -> str:
    """A ratio as a percent cut, not rounded, to ``places`` — for tables, which print no
    threshold beside a rate: 0.299999 read 30.00% there, while its alert said 29.9999%
    under 30% (messages print with :func:`apart` instead)."""
    if value is None:
        return "—"
    exact = Decimal(repr(value)) * 100  # the ratio as written (figures keep six decimals)
    return f"{exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN)}%"


def points(value: float) -> str:
    """A profile's threshold in points: 20个百分点, 12.5个百分点 (never rounded to whole points)."""
    return f"{_number(value * 100, 2)}个百分点"


def apart(value: float | None, limit: float | None) -> int:
    """Decimals (of a percent) at which ``value`` and the ``limit`` it breached print apart.

    A breach by a hair printed with two decimals read "29.99999% → 执行率30.00%，低于30.00%";
    ratios are kept to six decimals, so four decimals of a percent always tell them apart.
    Rounding is monotonic, so a value below its limit never prints above it."""
    if value is None or limit is None:
        return 2
    for places in (2, 3):
        if f"{value * 100:.{places}f}" != f"{limit * 100:.{places}f}":
            return places
    return 4


def number_text(value: Any) -> str:
    """An indicator's target or actual as people write it: 2000, 95.5, 是/否 (not 2000.0)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, int | float):
        return _number(float(value), 4)
    return str(value)


def amount_text(yuan: Decimal | str | None) -> str:
    """An amount in 元 with separators, under a heading that names the unit: 12,053.46."""
    return "—" if yuan is None else f"{Decimal(yuan):,.2f}"


def _number(value: float, places: int) -> str:
    text = f"{value:.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def wan(yuan: str | None) -> str:
    if yuan is None:
        return "—"
    return f"{Decimal(yuan) / 10000:,.2f}万元"


def yuan_text(amount: Decimal | str | None) -> str:
    """An amount in 元 to the fen: where the exact figure matters (an overspend, an
    approved reduction), 49 元 must not read as 0.00万元."""
    if amount is None:
        return "—"
    return f"{Decimal(amount):,.2f}元"


def _situation(rule: str, subject: str, f: Mapping[str, Any], as_of: str) -> str:
    rate = pct(f.get("execution_rate"))
    money = f"预算{wan(f.get('budget'))}，已支付{wan(f.get('paid'))}"
    if rule in ("low_execution", "department_low_execution"):
        places = apart(f.get("execution_rate"), f.get("floor"))
        rate, floor = pct(f.get("execution_rate"), places), pct(f.get("floor"), places)
    if rule == "low_execution":
        return f"{subject}截至{as_of}预算执行率为{rate}，低于{floor}的执行进度要求（{money}）。"
    if rule == "behind_schedule":
        # The lag itself, not the progress it lags: "落后于计划进度25.75%" read as 25.75%
        # behind. Named 序时进度 when the project has no spending plan of its own.
        expected = f["expected_progress"]
        threshold = expected - f["behind_threshold"]
        lag = expected - (f.get("execution_rate") or 0.0)
        progress = "序时进度" if expected == f.get("time_progress") else "用款计划进度"
        return (
            f"{subject}截至{as_of}预算执行率为{rate}，{progress}为{pct(expected)}，"
            f"落后{lag * 100:.{apart(lag, threshold)}f}个百分点，超过{points(threshold)}的预警线（{money}）。"
        )
    if rule == "progress_gap":
        completion = f.get("performance_completion")
        gap = f.get("progress_gap")
        if gap is None:  # figures stored before the gap was one of them
            gap = abs((f.get("execution_rate") or 0.0) - (completion or 0.0))
        places = apart(gap, f["gap_threshold"])
        ahead = (f.get("execution_rate") or 0.0) > (completion or 0.0)
        direction = "资金支付快于绩效目标完成" if ahead else "绩效目标完成快于资金支付"
        return (
            f"{subject}截至{as_of}预算执行率{rate}与绩效目标完成率{pct(completion)}"
            f"相差{gap * 100:.{places}f}个百分点，超过{points(f['gap_threshold'])}（{direction}）。"
        )
    if rule == "overspend":
        budget = f.get("budget")
        paid = f.get("paid")
        if budget is None or Decimal(budget) == 0:  # "超过预算0.00万元" says less than this
            return f"{subject}截至{as_of}预算为0，已支付{yuan_text(paid or '0')}（无预算支出）。"
        if Decimal(budget) < 0:  # cut below zero: nothing need have been paid at all
            return (
                f"{subject}截至{as_of}经调减（收回）后预算为{wan(budget)}（负数），已支付{yuan_text(paid or '0')}；"
                "请核对追加、调减和收回的金额。"
            )
        excess = Decimal(paid or 0) - Decimal(budget)
        # Budget first: "已支付X，超过预算Y" read as "over the budget by Y". In 元 as well:
        # an excess of 49 元 vanishes in 万元 with two decimals.
        return f"{subject}截至{as_of}预算{wan(budget)}，已支付{wan(paid)}，超支{yuan_text(excess)}。"
    if rule == "stalled":
        return f"{subject}截至{as_of}已连续{f.get('days_without_payment')}天无支付（{money}）。"
    if rule == "department_low_execution":
        return (
            f"{subject}截至{as_of}部门整体预算执行率为{rate}，低于{floor}的"
            f"执行进度要求（{f.get('projects')}个项目，{money}）。"
        )
    return f"{subject}触发规则{rule}。"


ACTIONS: dict[str, str] = {
    "low_execution": (
        "请预算单位在{days}个工作日内说明执行缓慢原因并提出整改措施；"
        "确实无法执行的，财政部门将按程序调减或收回预算。"
    ),
    "behind_schedule": "请加快项目实施和资金支付进度，在{days}个工作日内报送纠偏措施和后续用款计划。",
    "progress_gap": (
        "请核实资金支付与绩效目标完成情况是否匹配，在{days}个工作日内说明偏离原因并纠偏，"
        "必要时按程序调整绩效目标。"
    ),
    "overspend": "请立即核查超预算支付，暂停超额支付，并在{days}个工作日内办理预算调整手续或退回资金。",
    "stalled": "请在{days}个工作日内说明项目长期未支付的原因；无法实施的项目，财政部门将按规定收回统筹使用。",
    "department_low_execution": (
        "请部门统筹督促所属项目加快执行，在{days}个工作日内对执行缓慢的项目提出调剂或调减建议。"
    ),
}


def compose(
    *,
    rule: str,
    kind: str,
    severity: str,
    subject: str,
    figures: Mapping[str, Any],
    as_of: str,
    deadline_days: int,
) -> tuple[str, str]:
    """(message, recommended action) for one alert transition."""
    label = f"【{KIND_NAMES.get(kind, kind)}·{SEVERITY_NAMES.get(severity, severity)}】{RULE_NAMES.get(rule, rule)}："
    if kind == "resolved":
        message = (
            f"【预警解除】{RULE_NAMES.get(rule, rule)}：{subject}的预警已于{as_of}解除，"
            + (f"当前预算执行率{pct(figures.get('execution_rate'))}。"
               if figures.get("execution_rate") is not None
               else f"当前预算为{wan(figures.get('budget'))}，无法计算预算执行率。")
        )
        return message, "预警条件已消除，无需进一步处理；请继续按计划执行。"
    return label + _situation(rule, subject, figures, as_of), _action(rule, deadline_days)


YEAR_CLOSED_ACTION = "年度已结束，本预警不再跟踪，无需再报送处置；结余资金请按年终结转和决算规定处理。"
# Where "结余资金" is not what is left: an overspend is not ended by the year's end.
YEAR_CLOSED_ACTIONS: dict[str, str] = {
    "overspend": (
        "年度已结束，本预警不再跟踪；超预算支付问题不因年度结束而消除，请按规定补办预算调整手续或追回超支资金，"
        "并在决算中如实反映。"
    ),
    "progress_gap": "年度已结束，本预警不再跟踪，无需再报送处置；请在绩效自评中如实说明资金支付与绩效目标完成的偏离。",
}


def year_closed_text(
    *, rule: str, subject: str, fiscal_year: int, figures: Mapping[str, Any], as_of: str
) -> tuple[str, str]:
    """(message, action) of an alert still firing when its fiscal year closed (年度结束):
    the situation as of ``as_of`` (Dec 31, or the alert's last evaluation) worded as a
    firing alert's, so a rate a hair under its floor still prints under it."""
    message = (
        f"【年度结束】{RULE_NAMES.get(rule, rule)}：{subject}的预警至{fiscal_year}年度结束仍未解除，"
        f"随年度关闭。" + _situation(rule, "", figures, as_of)
    )
    return message, YEAR_CLOSED_ACTIONS.get(rule, YEAR_CLOSED_ACTION)


@lru_cache(maxsize=256)
def _action(rule: str, deadline_days: int) -> str:
    # One string per (rule, deadline): every firing alert holds its action, ~10k at once
    # in a county's checkpoint, each a copy of the same sentence when formatted anew.
    return ACTIONS.get(rule, "请核实处理。").format(days=deadline_days)
