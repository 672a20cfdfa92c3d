"""Human output: rich tables in Chinese."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from rich.console import Console, RenderableType
from rich.table import Table as RichTable
from rich.text import Text

from alerts.messages import FUND_SOURCE_NAMES, REASON_NAMES, RULE_NAMES, SEVERITY_NAMES, kind_name, pct_down, wan
from streams.ingest import IngestCounts

AlertRow = TypeVar("AlertRow", bound=Mapping[str, Any])

KIND_LABELS = {
    "firing": "新预警", "escalated": "升级", "deescalated": "降级", "resolved": "解除",
    "disposed": "已处置", "disposition_approved": "处置已审批", "disposition_returned": "处置被退回",
    "disposition_overdue": "逾期未处置",
}


def kind_label(transition: Mapping[str, Any]) -> str:
    """The short name of a transition row: its kind, or why it resolved (年度结束)."""
    return kind_name(str(transition["transition"]), transition.get("reason"), KIND_LABELS)


def status_label(alert: Mapping[str, Any]) -> str:
    """预警中, 已解除, or 已结束（年度结束） for an episode ended by its year's close."""
    if alert["status"] == "firing":
        return "预警中"
    reason = alert.get("reason")
    return f"已结束（{REASON_NAMES[reason]}）" if reason in REASON_NAMES else "已解除"


class Table(RichTable):
    """Cells are data: a name like 老旧小区改造[/二期] or a raw line like [bold]x is text,
    never rich markup (which would raise, or swallow part of it)."""

    def add_row(self, *renderables: RenderableType | None, **options: Any) -> None:
        super().add_row(*(Text(r) if isinstance(r, str) else r for r in renderables), **options)


def ingest_table(counts: IngestCounts, title: str = "导入结果") -> Table:
    table = Table(title=title)
    for label in ("读取 read", "接受 accepted", "新增 applied", "重复 duplicate", "拒收 rejected"):
        table.add_column(label, justify="right")
    table.add_row(*(str(v) for v in (counts.read, counts.accepted, counts.applied, counts.duplicates, counts.rejected)))
    return table


def region_table(status: Mapping[str, Any]) -> Table:
    region = status["region"]
    table = Table(title=f"{status['fiscal_year']}年度全区预算执行情况（截至 {status['as_of']}）")
    for label in ("预算总额", "已支付", "执行率", "序时进度", "部门数", "项目数"):
        table.add_column(label, justify="right")
    table.add_row(
        wan(region["budget"]), wan(region["paid"]), pct_down(region["execution_rate"]),
        pct_down(region["time_progress"]), str(len(status["departments"])),
        # the department_overall lines (部门整体支出) are not projects and not in the sums
        str(sum(1 for p in status["projects"] if p.get("kind") != "department_overall")),
    )
    return table


def departments_table(departments: Sequence[Mapping[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for label, justify in (("部门编码", "left"), ("部门名称", "left"), ("项目数", "right"),
                           ("预算", "right"), ("已支付", "right"), ("执行率", "right")):
        table.add_column(label, justify=justify)  # type: ignore[arg-type]
    for d in departments:
        table.add_row(d["department_id"], d["department_name"], str(d.get("projects", "")),
                      wan(d["budget"]), wan(d["paid"]), pct_down(d["execution_rate"]))
    return table


def projects_table(projects: Sequence[Mapping[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for label in ("项目编码", "项目名称", "部门", "资金性质", "预算", "已支付", "执行率", "应达进度", "绩效目标完成率"):
        table.add_column(label)
    for p in projects:
        table.add_row(
            p["project_id"], p["name"] or "", p.get("department_name") or p["department_id"] or "",
            FUND_SOURCE_NAMES.get(p["fund_source"] or "", p["fund_source"] or ""),
            wan(p["budget"]), wan(p["paid"]), pct_down(p["execution_rate"]),
            pct_down(p["expected_progress"]), pct_down(p["performance_completion"]),
        )
    return table


def most_urgent_first(alerts: Iterable[AlertRow]) -> list[AlertRow]:
    """Firing before resolved, critical before warning, then the longest firing first."""
    return sorted(alerts, key=lambda a: (a["status"] != "firing", a["severity"] != "critical", a["since"],
                                         a["alert_id"]))


def alerts_table(alerts: Iterable[Mapping[str, Any]], title: str, *, transitions: bool = False) -> Table:
    table = Table(title=title, show_lines=False)
    # The rate in the alert's figures is the one it was judged on (at its last change), not
    # today's: `status` has today's.
    columns = ["年度", "日期" if transitions else "起始日期", "规则", "级别", "状态", "对象", "部门",
               "预警时执行率", "说明"]
    if transitions:
        columns.insert(2, "变化")
    for label in columns:
        table.add_column(label, overflow="fold")
    for a in alerts:
        row = [
            str(a["fiscal_year"]),
            a["date"] if transitions else a["since"],
            RULE_NAMES.get(a["rule"], a["rule"]),
            SEVERITY_NAMES.get(a["severity"], a["severity"]),
            status_label(a),
            f"{a.get('subject_name') or ''}（{a['subject_id']}）",
            a.get("department_name") or a["department_id"],
            pct_down(a["figures"].get("execution_rate")),
            a["message"],
        ]
        if transitions:
            row.insert(2, kind_label(a))
        table.add_row(*row)
    return table


def alert_counts_table(alerts: Iterable[Mapping[str, Any]]) -> Table:
    counts = Counter((a["rule"], a["severity"]) for a in alerts)
    table = Table(title="预警数量（按规则和级别）")
    table.add_column("规则")
    table.add_column("规则名称")
    table.add_column("级别")
    table.add_column("数量", justify="right")
    for (rule, severity), n in sorted(counts.items()):
        table.add_row(rule, RULE_NAMES.get(rule, rule), SEVERITY_NAMES.get(severity, severity), str(n))
    return table


def reductions_table(proposals: Sequence[Mapping[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for label in ("项目编码", "项目名称", "部门", "预算", "已支付", "预计年末支出", "建议调减", "调减率"):
        table.add_column(label)
    for p in proposals:
        table.add_row(p["project_id"], p["name"], p.get("department_name") or p["department_id"],
                      wan(p["budget"]), wan(p["paid"]), wan(p["projected_spend"]),
                      wan(p["proposed_reduction"]), pct_down(p["reduction_rate"]))
    return table


def rejected_table(rows: Sequence[Mapping[str, Any]], total: int | None = None) -> Table:
    total = len(rows) if total is None else total
    shown = f"，显示最近{len(rows):,}条" if len(rows) < total else ""
    table = Table(title=f"拒收记录（{total:,}条{shown}）")
    table.add_column("来源")
    table.add_column("原因", overflow="fold")
    table.add_column("原始内容", overflow="fold")
    for r in rows:
        raw = r["raw"]
        table.add_row(r["source"], r["reason"], raw if len(raw) <= 120 else raw[:117] + "...")
    return table


def listed(ids: Sequence[str], most: int = 10) -> str:
    """The first ``most`` ids for a sentence, 、-separated, with 等 when there are more."""
    return "、".join(ids[:most]) + ("等" if len(ids) > most else "")


def console(*, stderr: bool = False) -> Console:
    """Tables go to stdout; progress bars to stderr, so `--json` output stays clean."""
    probe = Console(stderr=stderr)
    # Piped output (CI logs, `| less`) gets room for the Chinese columns.
    return probe if probe.is_terminal else Console(width=160, stderr=stderr)
