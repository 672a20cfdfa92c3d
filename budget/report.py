"""The status view (DESIGN §4 figures) as plain JSON-ready data."""

from __future__ import annotations

from typing import Any

from budget.calendar import expected_progress, iso, time_progress_for_year, year_of
from budget.ledger import Ledger, ProjectState, region_totals
from budget.money import fen_to_str, money_rate


def _rate(paid: int, budget: int) -> float | None:
    return money_rate(paid, budget)


def _opt(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def project_view(state: ProjectState, day: int) -> dict[str, Any]:
    year = state.fiscal_year or year_of(day)
    return {
        "project_id": state.project_id,
        "name": state.name,
        "department_id": state.department_id,
        "department_name": state.department_name,
        "fund_source": state.fund_source,
        "kind": state.kind,
        "fiscal_year": state.fiscal_year,
        "budget": fen_to_str(state.budget),
        "paid": fen_to_str(state.paid),
        "execution_rate": _rate(state.paid, state.budget),
        "expected_progress": _opt(expected_progress(day, year, state.plan)),
        "performance_completion": _opt(state.completion),
        "last_payment_on": iso(state.last_payment_on) if state.last_payment_on else None,
    }


def status(ledger: Ledger, day: int, fiscal_year: int | None = None) -> dict[str, Any]:
    """Region, department and project figures as of ordinal ``day``."""
    year = fiscal_year if fiscal_year is not None else year_of(day)
    budget, paid = region_totals(ledger, year)
    departments = [
        {
            "department_id": t.department_id,
            "department_name": t.department_name,
            "budget": fen_to_str(t.budget),
            "paid": fen_to_str(t.paid),
            "execution_rate": _rate(t.paid, t.budget),
            "projects": t.projects,
        }
        for (fy, _), t in sorted(ledger.departments.items())
        if fy == year and t.projects > 0
    ]
    projects = [
        project_view(s, day)
        for _, s in sorted(ledger.projects.items())
        if s.fiscal_year == year
    ]
    unregistered = sorted(pid for pid, s in ledger.projects.items() if not s.registered)
    return {
        "as_of": iso(day),
        "fiscal_year": year,
        "region": {
            "budget": fen_to_str(budget),
            "paid": fen_to_str(paid),
            "execution_rate": _rate(paid, budget),
            "time_progress": round(time_progress_for_year(day, year), 6),
        },
        "departments": departments,
        "projects": projects,
        "unregistered_projects": unregistered,
    }
