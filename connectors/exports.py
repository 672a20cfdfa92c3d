"""Exports for people: reduction proposals as XLSX (Chinese headers)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from alerts.messages import FUND_SOURCE_NAMES
from connectors.tabular import write_xlsx

REDUCTION_HEADERS = (
    "项目编码", "项目名称", "单位编码", "单位名称", "资金性质", "预算数（元）", "已支付（元）",
    "预计年末支出（元）", "建议调减金额（元）", "调减率", "审批意见",
)


def write_reductions_xlsx(path: Path, proposals: Sequence[Mapping[str, Any]], as_of: str) -> None:
    rows = [
        (
            p["project_id"], p["name"], p["department_id"], p.get("department_name", ""),
            FUND_SOURCE_NAMES.get(p.get("fund_source", ""), p.get("fund_source", "")),
            Decimal(p["budget"]), Decimal(p["paid"]), Decimal(p["projected_spend"]),
            Decimal(p["proposed_reduction"]), round(p["reduction_rate"], 4), "",
        )
        for p in proposals
    ]
    write_xlsx(path, REDUCTION_HEADERS, rows, title=f"调减建议{as_of}"[:31])
