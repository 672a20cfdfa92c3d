"""A seeded, realistic fiscal year of budget events (for the demo, tests and benchmarks).

Projects in departments across all four fund sources; approvals in January;
payments back-loaded toward year end; spending plans, performance indicators
with monthly reports; slow, stalled and overspending projects, reversals,
adjustments, re-sent duplicates and a few malformed lines. Events are emitted
project by project (memory stays flat for any size); the engines order by
business date themselves.
"""

from __future__ import annotations

import calendar
import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

AGENCIES = [
    "教育局", "卫生健康委员会", "交通运输局", "农业农村局", "住房和城乡建设局", "民政局",
    "人力资源和社会保障局", "自然资源局", "生态环境局", "水务局", "文化和旅游局", "科学技术局",
    "工业和信息化局", "商务局", "公安局", "司法局", "应急管理局", "市场监督管理局", "统计局",
    "审计局", "发展和改革委员会", "林业和草原局", "退役军人事务局", "医疗保障局", "体育局",
    "城市管理局", "乡村振兴局", "档案馆", "机关事务管理局", "信访局",
]
TOWNS = ["城关镇", "东城街道", "西城街道", "南山镇", "北河镇", "青石镇", "白沙乡", "红旗乡", "新民镇", "平安镇"]
TOPICS = [
    "基础设施建设", "设备购置", "信息化平台建设", "人员培训", "专项补助", "维修改造", "公共服务",
    "环境整治", "产业扶持", "课题研究", "宣传推广", "安全生产", "应急物资储备", "数据治理",
    "园区修缮", "展示厅运维", "道路养护", "农田水利", "校舍改造", "医疗设备更新", "社区服务",
]
INDICATORS = [
    ("output", "完成数量", "个", "higher_better"),
    ("output", "完成及时率", "%", "higher_better"),
    ("effect", "受益人数", "人", "higher_better"),
    ("effect", "成本节约率", "%", "higher_better"),
    ("satisfaction", "服务对象满意度", "%", "higher_better"),
    ("output", "故障率", "%", "lower_better"),
    ("effect", "是否按期投入使用", "", "boolean"),
]
FUND_SOURCES = [("general", 0.7), ("government_fund", 0.18), ("state_capital", 0.06), ("social_insurance", 0.06)]


@dataclass(frozen=True, slots=True)
class Spec:
    projects: int = 4000
    seed: int = 7
    fiscal_year: int = 2025
    payments_per_project: int = 50
    malformed: int = 12
    duplicates: int = 25


def _department_names(count: int, rng: random.Random) -> list[str]:
    names = list(AGENCIES) + [f"{t}人民政府" for t in TOWNS]
    schools = 1
    while len(names) < count:
        names.append(f"第{schools}中学" if schools % 2 else f"第{schools}人民医院")
        schools += 1
    rng.shuffle(names)
    return names[:count]


def _plan(rng: random.Random) -> list[float]:
    weights = [rng.uniform(0.3, 1.0) * (1 + month / 6) for month in range(12)]
    total = sum(weights)
    running, plan = 0.0, []
    for w in weights:
        running += w / total
        plan.append(round(min(running, 1.0), 4))
    plan[-1] = 1.0
    return plan


def _amount(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def generate(spec: Spec) -> Iterator[bytes]:
    """JSON lines (bytes, no newline) for one fiscal year."""
    rng = random.Random(spec.seed)
    year = spec.fiscal_year
    first = dt.date(year, 1, 1).toordinal()
    days = 366 if calendar.isleap(year) else 365
    departments = max(1, min(400, spec.projects // 66 or 1))
    names = _department_names(departments, rng)
    dumps = orjson.dumps
    duplicates_left = spec.duplicates

    def day(offset: int) -> str:
        return dt.date.fromordinal(first + max(0, min(days - 1, offset))).isoformat()

    for index in range(spec.projects):
        pid = f"P{year}{index:06d}"
        dept_index = rng.randrange(departments)
        dept_id = f"D{dept_index:03d}"
        fund = rng.choices([f for f, _ in FUND_SOURCES], [w for _, w in FUND_SOURCES])[0]
        has_plan = rng.random() < 0.25
        budget = int(rng.lognormvariate(13.2, 1.0)) * 100 // 10000 * 10000 + 100000  # fen, 100 yuan steps
        approved_offset = rng.randrange(0, 31)
        # One department is in trouble: most of its projects lag (部门整体执行偏慢).
        weights = [0.2, 0.4, 0.15, 0.15, 0.0, 0.1] if dept_index == 0 else [0.87, 0.04, 0.02, 0.01, 0.02, 0.04]
        behaviour = rng.choices(["normal", "slow", "stalled", "never", "overspend", "late"], weights)[0]
        lines: list[bytes] = []
        registered = {
            "type": "project_registered", "event_id": f"{pid}-REG", "occurred_on": day(approved_offset),
            "project_id": pid, "fiscal_year": year,
            "name": f"{year}年{names[dept_index]}{rng.choice(TOPICS)}项目",
            "department_id": dept_id, "department_name": names[dept_index], "fund_source": fund,
        }
        if has_plan:
            registered["spending_plan"] = _plan(rng)
        lines.append(dumps(registered))
        lines.append(dumps({
            "type": "budget_approved", "event_id": f"{pid}-APP", "occurred_on": day(approved_offset),
            "project_id": pid, "amount": _amount(budget),
        }))
        effective_budget = budget
        if rng.random() < 0.06:
            delta = rng.choice([1, -1]) * (budget // 10 // 10000 * 10000)
            if delta:
                effective_budget += delta
                lines.append(dumps({
                    "type": "budget_adjusted", "event_id": f"{pid}-ADJ", "occurred_on": day(rng.randrange(120, 240)),
                    "project_id": pid, "amount": ("-" if delta < 0 else "") + _amount(abs(delta)),
                    "reason": "年中追加" if delta > 0 else "年中调减",
                }))
        spend_share = {
            "normal": rng.uniform(0.9, 1.0), "slow": rng.uniform(0.15, 0.45),
            "stalled": rng.uniform(0.05, 0.25), "never": 0.0, "overspend": rng.uniform(1.03, 1.12),
            "late": rng.uniform(0.6, 0.95),
        }[behaviour]
        total = int(effective_budget * spend_share)
        count = 0 if total == 0 else max(1, int(rng.gauss(spec.payments_per_project, spec.payments_per_project / 4)))
        if count:
            cuts = sorted(rng.randrange(1, total) for _ in range(count - 1)) if total > count else []
            parts = [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]
            for k, fen in enumerate(parts):
                if fen <= 0:
                    continue
                if behaviour == "stalled":
                    offset = approved_offset + int(rng.uniform(5, 60))
                elif behaviour == "overspend":
                    offset = int(days * 0.66 * rng.random())
                elif behaviour == "late":
                    offset = int(days * (0.55 + 0.45 * rng.random() ** 0.6))
                else:
                    offset = int(days * rng.random() ** (1 / 1.25))  # back-loaded toward year end
                when = day(max(offset, approved_offset))
                payment_id = f"{pid}-PAY{k:04d}"
                line = dumps({
                    "type": "payment", "event_id": payment_id, "occurred_on": when, "project_id": pid,
                    "amount": _amount(fen), "payee": f"供应商{rng.randrange(1, 500):03d}", "method": "国库集中支付",
                })
                lines.append(line)
                if duplicates_left and rng.random() < 0.002:
                    lines.append(line)  # a re-sent message
                    duplicates_left -= 1
                if rng.random() < 0.01:
                    back = max(1, fen // rng.choice([2, 5, 10]))
                    lines.append(dumps({
                        "type": "payment_reversed", "event_id": f"{payment_id}-REV",
                        "occurred_on": day(min(days - 1, offset + rng.randrange(1, 20))), "project_id": pid,
                        "amount": _amount(back), "original_event_id": payment_id,
                    }))
        if rng.random() < 0.6:
            performance = {"normal": rng.uniform(0.85, 1.05), "slow": rng.uniform(0.3, 1.0)}.get(
                behaviour, rng.uniform(0.2, 1.1)
            )
            for n, (category, label, unit, direction) in enumerate(rng.sample(INDICATORS, rng.randint(2, 4))):
                iid = f"I{n}"
                target = 1.0 if direction == "boolean" else float(rng.choice([10, 50, 100, 500, 2000]))
                if unit == "%":
                    target = float(rng.choice([90, 95, 98])) if direction == "higher_better" else 5.0
                lines.append(dumps({
                    "type": "indicator_defined", "event_id": f"{pid}-{iid}-DEF", "occurred_on": day(approved_offset),
                    "project_id": pid, "indicator_id": iid, "name": label, "target": target, "unit": unit,
                    "direction": direction, "weight": rng.choice([1, 1, 2]), "category": category,
                }))
                for month in range(3, 13, 3):
                    month_end = dt.date(year, month, calendar.monthrange(year, month)[1])
                    share = month / 12
                    if direction == "boolean":
                        actual: object = month == 12 and performance > 0.7
                    elif direction == "lower_better":
                        actual = round(target * rng.uniform(0.5, 1.5) / max(performance, 0.1), 2)
                    else:
                        actual = round(target * min(1.2, share * performance * rng.uniform(0.9, 1.1)), 2)
                    lines.append(dumps({
                        "type": "indicator_reported", "event_id": f"{pid}-{iid}-R{month:02d}",
                        "occurred_on": month_end.isoformat(), "project_id": pid, "indicator_id": iid,
                        "actual": actual,
                    }))
        if rng.random() < 0.01 and len(lines) > 3:
            # A payment that arrives before the project's registration.
            lines.insert(0, lines.pop(2))
        yield from lines

    # Malformed input of the kinds budget systems really send, one per kind.
    pay = {"type": "payment", "occurred_on": f"{year}-03-01", "project_id": "X", "amount": "5.00"}
    bad = [
        b'{"type": "payment", "event_id": "BAD-1", "occurred_on": "2025-03-01"',
        dumps({"type": "grant", "event_id": "BAD-2", "occurred_on": f"{year}-03-01", "project_id": "X"}),
        dumps({**pay, "event_id": "BAD-3", "amount": "-5.00"}),
        dumps({**pay, "event_id": "BAD-4", "occurred_on": f"{year}-02-30"}),
        dumps({k: v for k, v in {**pay, "event_id": "BAD-5"}.items() if k != "project_id"}),
        dumps({**pay, "event_id": "BAD-6", "amount": "1.005"}),
        dumps({**pay, "type": "budget_approved", "event_id": "BAD-7", "amount": "abc"}),
        dumps({"type": "indicator_reported", "event_id": "BAD-8", "occurred_on": f"{year}-03-01", "project_id": "X"}),
        b'["not", "an", "object"]',
        dumps({
            "type": "project_registered", "event_id": "BAD-10", "occurred_on": f"{year}-01-01", "project_id": "X",
            "fiscal_year": year, "name": "n", "department_id": "D", "department_name": "d", "fund_source": "lottery",
        }),
        dumps({**pay, "event_id": "BAD-11", "amount": 0}),
        b"not json at all",
    ]
    yield from bad[: spec.malformed]
