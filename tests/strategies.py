"""Hypothesis strategies: unique contract events for a handful of projects in one year."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import strategies as st

YEAR = 2025
FIRST = dt.date(YEAR, 1, 1).toordinal()
PROJECTS = ["P1", "P2", "P3", "P4"]
DEPARTMENTS = [("D1", "教育局"), ("D2", "水务局")]
# A later registration may move a project or rename its department (机构改革).
REGISTRATIONS = [*DEPARTMENTS, ("D1", "教育体育局"), ("D2", "水利局")]


# Where a run ends: the year's end, or past the year's close (01-31, profile.year_end) too.
RUN_ENDS = st.sampled_from([dt.date(YEAR, 12, 31).toordinal(), dt.date(YEAR + 1, 2, 28).toordinal()])


def _date(offset: int) -> str:
    return dt.date.fromordinal(FIRST + offset).isoformat()


def _money(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


@st.composite
def event_logs(draw: st.DrawFn, max_events: int = 40) -> list[dict[str, Any]]:
    """A list of unique events (distinct event_ids) of several types and projects."""
    events: list[dict[str, Any]] = []
    for index, pid in enumerate(PROJECTS):
        dept, name = DEPARTMENTS[draw(st.integers(0, 1))]
        if draw(st.booleans()) or index == 0:
            events.append({
                "type": "project_registered", "event_id": f"{pid}-REG", "occurred_on": _date(draw(st.integers(0, 20))),
                "project_id": pid, "fiscal_year": YEAR, "name": f"{pid}项目", "department_id": dept,
                "department_name": name, "fund_source": draw(st.sampled_from(["general", "government_fund"])),
                "kind": draw(st.sampled_from(["project", "project", "department_overall"])),
            })
        if draw(st.booleans()):
            events.append({"type": "budget_approved", "event_id": f"{pid}-APP",
                           "occurred_on": _date(draw(st.integers(0, 30))), "project_id": pid,
                           "amount": _money(draw(st.integers(0, 10_000_000)))})
    count = draw(st.integers(0, max_events))
    for n in range(count):
        pid = draw(st.sampled_from(PROJECTS))
        # to Jan 30 next: money dated after the year is kept apart from its Dec 31 sums
        on = _date(draw(st.integers(0, 394)))
        kind = draw(st.sampled_from(["payment", "payment", "payment", "payment_reversed", "budget_adjusted",
                                     "budget_approved", "indicator_defined", "indicator_reported",
                                     "project_registered"]))
        base = {"type": kind, "event_id": f"E{n}", "occurred_on": on, "project_id": pid}
        if kind == "project_registered":
            dept, name = draw(st.sampled_from(REGISTRATIONS))
            base.update(fiscal_year=YEAR, name=f"{pid}项目", department_id=dept, department_name=name,
                        fund_source="general", kind="project")
        elif kind in ("payment", "payment_reversed"):
            base["amount"] = _money(draw(st.integers(1, 3_000_000)))
        elif kind == "budget_adjusted":
            base["amount"] = _money(draw(st.integers(-2_000_000, 2_000_000))).replace("--", "-")
            fen = draw(st.integers(-2_000_000, 2_000_000))
            base["amount"] = ("-" if fen < 0 else "") + _money(abs(fen))
        elif kind == "budget_approved":
            base["amount"] = _money(draw(st.integers(0, 10_000_000)))
        elif kind == "indicator_defined":
            base.update(indicator_id=draw(st.sampled_from(["I1", "I2"])), name="指标",
                        target=float(draw(st.integers(1, 100))),
                        direction=draw(st.sampled_from(["higher_better", "lower_better", "boolean"])))
        else:
            base.update(indicator_id=draw(st.sampled_from(["I1", "I2"])),
                        actual=draw(st.one_of(st.booleans(), st.integers(0, 150).map(float))))
        events.append(base)
    return events


@st.composite
def deliveries(draw: st.DrawFn, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same events as a transport delivers them: duplicated and reordered."""
    stream = list(events)
    for _ in range(draw(st.integers(0, len(events)))):
        stream.append(draw(st.sampled_from(events)) if events else {})
    stream = [e for e in stream if e]
    return draw(st.permutations(stream))
