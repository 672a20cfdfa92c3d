"""Column headers of the budget systems' exports, Chinese or English.

Two layouts: a *projects* sheet (registration + approved budget) and a
*payments* sheet. The README lists every accepted header.
"""

from __future__ import annotations

import re

PROJECT_HEADERS: dict[str, str] = {
    "项目编码": "project_id", "项目代码": "project_id", "项目编号": "project_id", "project_id": "project_id",
    "项目名称": "name", "name": "name", "project_name": "name",
    "单位编码": "department_id", "部门编码": "department_id", "预算单位编码": "department_id",
    "单位代码": "department_id", "department_id": "department_id",
    "单位名称": "department_name", "部门名称": "department_name", "预算单位名称": "department_name",
    "预算单位": "department_name", "department_name": "department_name",
    "资金性质": "fund_source", "资金来源": "fund_source", "预算类别": "fund_source",
    "fund_source": "fund_source",
    "年度": "fiscal_year", "预算年度": "fiscal_year", "fiscal_year": "fiscal_year",
    "年初预算数": "approved_amount", "年初预算": "approved_amount", "批复金额": "approved_amount",
    "预算批复数": "approved_amount", "预算数": "approved_amount", "年初预算金额": "approved_amount",
    "预算金额": "approved_amount", "年初批复数": "approved_amount", "批复预算": "approved_amount",
    "批复预算数": "approved_amount", "预算批复金额": "approved_amount",
    "approved_amount": "approved_amount", "budget": "approved_amount",
    "批复日期": "approved_on", "approved_on": "approved_on",
    "项目类型": "kind", "支出类型": "kind", "kind": "kind",
}

PAYMENT_HEADERS: dict[str, str] = {
    "支付凭证号": "event_id", "凭证号": "event_id", "支付凭证编号": "event_id", "event_id": "event_id",
    "项目编码": "project_id", "项目代码": "project_id", "项目编号": "project_id", "project_id": "project_id",
    "支付日期": "occurred_on", "日期": "occurred_on", "occurred_on": "occurred_on",
    "支付金额": "amount", "金额": "amount", "amount": "amount",
    "收款人": "payee", "收款人名称": "payee", "收款单位": "payee", "payee": "payee",
    "支付方式": "method", "method": "method",
    "原支付凭证号": "original_event_id", "原凭证号": "original_event_id",
    "original_event_id": "original_event_id",
}

FUND_SOURCES: dict[str, str] = {
    "一般公共预算": "general", "一般公共预算资金": "general", "general": "general",
    "政府性基金预算": "government_fund", "政府性基金预算资金": "government_fund", "政府性基金": "government_fund",
    "government_fund": "government_fund",
    "国有资本经营预算": "state_capital", "国有资本经营预算资金": "state_capital", "国有资本经营": "state_capital",
    "state_capital": "state_capital",
    "社会保险基金预算": "social_insurance", "社会保险基金预算资金": "social_insurance",
    "社会保险基金": "social_insurance", "social_insurance": "social_insurance",
}

KINDS: dict[str, str] = {
    "项目支出": "project", "项目": "project", "project": "project",
    "部门整体支出": "department_overall", "部门整体": "department_overall",
    "department_overall": "department_overall",
}

# The units an export writes its amounts in, and what one of each is in fen.
UNITS: dict[str, str] = {"元": "yuan", "千元": "qian", "万元": "wan", "百万元": "baiwan", "亿元": "yi",
                         "yuan": "yuan", "wan": "wan", "10k yuan": "wan"}
UNIT_NAMES: dict[str, str] = {"yuan": "元", "qian": "千元", "wan": "万元", "baiwan": "百万元", "yi": "亿元"}
# A unit as headers write it: 万元, 万 (年初预算数(万)), 人民币万元, 万元人民币, 万 元.
UNIT_WORD = r"(?:人民币)?\s*(?:亿|百\s*万|万|千)?\s*元(?:\s*人民币)?|(?:人民币)?\s*(?:亿|百\s*万|万|千)"
_UNIT = re.compile(
    # in brackets of any style: （万元） (万) [万元] 【万元】 （单位：万元） （人民币万元）
    rf"(?:[（(\[［【〔]\s*(?:(?:金额)?单位\s*[:：]?\s*)?(?P<bracketed>{UNIT_WORD}|yuan|wan|10k yuan)\s*[)）\]］】〕]"
    # or after a slash or a space: 年初预算数/万元, 年初预算数 万元, budget/wan
    rf"|(?:\s*[/／]\s*|(?<![\s亿百万千])\s+)(?P<after>{UNIT_WORD}|yuan|wan|10k yuan))\s*$",
    re.IGNORECASE,
)
_SPACES = re.compile(r"\s+")


def unit_of(word: str) -> str:
    """The unit a matched unit word names: 万 and 人民币万元 are 万元 ("wan")."""
    text = "".join(word.lower().split()).replace("人民币", "")
    if text == "10kyuan":
        return "wan"
    return UNITS[text if text.isascii() or text.endswith("元") else text + "元"]


def split_header(header: object) -> tuple[str, str | None]:
    """'年初预算数（万元）' -> ('年初预算数', 'wan'); unit None when the header names none.

    Spaces and line breaks inside a Chinese header (a wrapped 年初\\n预算数) and the
    required-field mark of a template (*项目编码) are not part of its name."""
    text = str(header or "").replace("\ufeff", "").strip().lstrip("*＊").strip()
    match = _UNIT.search(text)
    unit = unit_of(match.group("bracketed") or match.group("after")) if match else None
    base = text[: match.start()].strip() if match else text
    if base.isascii():
        return base.lower(), unit
    return _SPACES.sub("", base), unit
