"""Chinese notification text for one alert transition (pure: no I/O, no clock).

The engine stores each transition as ``Transition.to_json()`` (alert fields plus
``transition``, ``date`` and ``previous_severity``). This module turns such a
mapping into the title, a Markdown body (DingTalk, WeCom) and a plain-text body
(email, webhook) for a new alert, a severity change or a resolution, with the
figures and the recommended action.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from alerts.messages import RULE_NAMES, SEVERITY_NAMES, kind_name, pct, wan

SUBJECT_TYPE_NAMES: dict[str, str] = {"project": "项目", "department": "部门"}

AUDIENCE_PREFIX: dict[str, str] = {
    "department": "",
    # the fallback contact gets a department's notification: said, so it is passed on
    "default": "【代转：该单位未配置通知渠道】",
    "escalation": "【抄送财政局】",
}


def _days(value: Any) -> str:
    return "—" if value is None else f"{value}天"


# (figure key, label, formatter) in display order; a figure absent or None is left out.
FIGURES: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("budget", "预算金额", wan),
    ("paid", "已支付", wan),
    ("execution_rate", "预算执行率", pct),
    ("time_progress", "序时进度", pct),
    ("expected_progress", "计划进度", pct),
    ("floor", "执行进度要求", pct),
    ("performance_completion", "绩效目标完成率", pct),
    ("days_without_payment", "连续未支付天数", _days),
    ("projects", "项目个数", lambda v: f"{v}个"),
)


@dataclass(frozen=True, slots=True)
class NotificationText:
    title: str
    markdown: str
    plain: str


def figure_lines(transition: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, formatted value) for the figures that explain the alert."""
    figures: Mapping[str, Any] = transition.get("figures") or {}
    rule = transition.get("rule")
    lines: list[tuple[str, str]] = []
    for key, label, fmt in FIGURES:
        value = figures.get(key)
        if value is None:
            continue
        if key == "days_without_payment" and rule != "stalled":
            continue
        if key == "floor" and rule not in ("low_execution", "department_low_execution"):
            continue  # another rule's threshold: a resolved behind_schedule listed 执行进度要求 30%
        if key == "expected_progress" and value == figures.get("time_progress"):
            continue
        lines.append((label, fmt(value)))
    return lines


_LABEL = re.compile(r"^【[^】]*】[^：]{0,20}：")
# Names typed by people (道路*维修*_二期_) must not turn into italics or links in a robot's
# Markdown: the marks become their full-width twins, which read the same and format nothing.
_MARKDOWN_MARKS = str.maketrans({"*": "＊", "_": "＿", "`": "｀", "[": "［", "]": "］", "~": "～"})


def _md(text: str) -> str:
    return text.translate(_MARKDOWN_MARKS)


def severity_text(transition: Mapping[str, Any]) -> str:
    kind = transition.get("transition", "firing")
    severity = str(transition.get("severity", ""))
    name = SEVERITY_NAMES.get(severity, severity)
    previous = transition.get("previous_severity")
    if kind in ("escalated", "deescalated") and previous:
        return f"{SEVERITY_NAMES.get(previous, previous)} → {name}"
    return name


def headline(transition: Mapping[str, Any]) -> str:
    """e.g. 【新预警·严重预警】预算执行率偏低：教育局 校舍改造"""
    kind = str(transition.get("transition", "firing"))
    rule = str(transition.get("rule", ""))
    severity = str(transition.get("severity", ""))
    name = kind_name(kind, transition.get("reason"))
    tag = name if kind == "resolved" else f"{name}·{SEVERITY_NAMES.get(severity, severity)}"
    department = transition.get("department_name") or transition.get("department_id", "")
    subject = transition.get("subject_name") or transition.get("subject_id", "")
    who = (
        department if transition.get("subject_type") == "department" else f"{department} {subject}"
    )
    # One line: a name typed with Alt+Enter in Excel must not break a mail header or a
    # Markdown heading.
    return " ".join(f"【{tag}】{RULE_NAMES.get(rule, rule)}：{who}".split())


def subject_text(transition: Mapping[str, Any]) -> str:
    kind = SUBJECT_TYPE_NAMES.get(str(transition.get("subject_type")), "对象")
    name = transition.get("subject_name") or ""
    return f"{kind} {name}（{transition.get('subject_id', '')}）".replace("  ", " ")


def disposition_deadline(transition: Mapping[str, Any]) -> str | None:
    """When the answer is due, as a date: "在10个工作日内" alone said nothing of it in a
    notification delivered late (an outbox that waited, a digest), long after the date."""
    disposition = transition.get("disposition") or {}
    deadline = disposition.get("deadline")
    if not deadline or transition.get("transition") == "resolved" or disposition.get("status") not in (
        "pending", "overdue", "returned"
    ):
        return None
    if disposition.get("status") == "overdue":
        return f"{deadline}（已逾期，已升级报财政局）"
    escalate = disposition.get("escalate_on")
    return f"{deadline}（逾期未处置的，{escalate}起升级报财政局）" if escalate else str(deadline)


def compose_notification(
    transition: Mapping[str, Any], *, audience: str = "department", reference: str | None = None
) -> NotificationText:
    """Title, Markdown and plain text for one transition.

    ``audience`` is ``department`` (the department's own channels), ``default``
    (the fallback contact) or ``escalation`` (the bureau copy); ``reference``
    is the delivery's dedup key, printed so a person can quote it.
    """
    title = AUDIENCE_PREFIX.get(audience, "") + headline(transition)
    kind = str(transition.get("transition", "firing"))
    department = transition.get("department_name") or ""
    department_id = transition.get("department_id", "")
    fields: list[tuple[str, str]] = [
        ("预算单位", f"{department}（{department_id}）" if department else str(department_id)),
        ("预警对象", subject_text(transition)),
        ("预警规则", RULE_NAMES.get(str(transition.get("rule")), str(transition.get("rule")))),
        ("预警级别", severity_text(transition)),
        ("变动类型", kind_name(kind, transition.get("reason"))),
        ("业务日期", str(transition.get("date", ""))),
    ]
    since = transition.get("since")
    if since and kind != "firing":
        fields.append(("预警起始", str(since)))
    if (deadline := disposition_deadline(transition)) is not None:
        fields.append(("处置期限", deadline))
    figures = figure_lines(transition)
    # A disposition step (answered, approved, returned, overdue) carries the figures of the
    # alert's latest evaluation, not of its own date: say whose they are.
    # the date of its figures: its last evaluation, or the Dec 31 its year's close reports
    evaluated = (transition.get("figures") or {}).get("as_of") or transition.get("updated_on")
    figures_title = "关键数据"
    if evaluated and evaluated != transition.get("date"):
        figures_title = f"关键数据（{evaluated} 预警评估时）"
    # The stored message starts with the headline's own 【新预警·严重预警】规则： tag; said once.
    message = _LABEL.sub("", str(transition.get("message", "")), count=1)
    action = str(transition.get("action", ""))
    footer = f"预警编号：{transition.get('alert_id', '')}"
    if reference:
        footer += f"；通知编号：{reference}"

    md: list[str] = [f"### {_md(title)}", ""]
    md += [f"- **{label}**：{_md(value)}" for label, value in fields]
    md += ["", f"**情况说明**：{_md(message)}", ""]
    if figures:
        md += [f"**{figures_title}**：", ""]
        md += [f"- {label}：{value}" for label, value in figures]
        md.append("")
    md += [f"**{'处理建议' if kind == 'resolved' else '建议措施'}**：{_md(action)}", "", f"> {footer}"]

    plain: list[str] = [title, ""]
    plain += [f"{label}：{value}" for label, value in fields]
    plain += ["", f"情况说明：{message}", ""]
    if figures:
        plain.append(f"{figures_title}：")
        plain += [f"  {label}：{value}" for label, value in figures]
        plain.append("")
    plain += [f"{'处理建议' if kind == 'resolved' else '建议措施'}：{action}", "", footer, ""]
    plain.append("（本通知由预算执行监控系统 budgetwatch 自动发送，请勿直接回复。）")  # mail, webhooks and robots alike
    return NotificationText(title=title, markdown="\n".join(md), plain="\n".join(plain))
