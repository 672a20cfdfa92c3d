"""Reduction proposals (调减建议, DESIGN §6): advice for people to approve."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from budget.calendar import year_bounds
from budget.ledger import ProjectState, counts_in_rollup
from budget.money import FEN_PER_YUAN, fen_to_str


@dataclass(frozen=True, slots=True)
class Proposal:
    project_id: str
    name: str
    department_id: str
    department_name: str
    fund_source: str
    budget: int  # fen
    paid: int
    projected: int  # projected year-end spend, fen (rounded down)
    proposed_reduction: int
    fiscal_year: int = 0

    @property
    def reduction_rate(self) -> float:
        return self.proposed_reduction / self.budget if self.budget > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "project_id": self.project_id,
            "fiscal_year": self.fiscal_year,
            "name": self.name,
            "department_id": self.department_id,
            "department_name": self.department_name,
            "fund_source": self.fund_source,
            "budget": fen_to_str(self.budget),
            "paid": fen_to_str(self.paid),
            "projected_spend": fen_to_str(self.projected),
            "proposed_reduction": fen_to_str(self.proposed_reduction),
            "reduction_rate": round(self.reduction_rate, 6),
        }


def propose(state: ProjectState, day: int, round_down_to_yuan: int = 100) -> Proposal | None:
    """Projected year-end spend = paid / time_progress (capped at budget); the proposal
    is budget - max(projected, paid), rounded down to ``round_down_to_yuan``. A project
    that has paid nothing gets a 100% proposal.

    None for a ``department_overall`` line (部门整体支出): it contains the department's
    projects, which are proposed on their own — proposed too, its money was counted
    twice in the proposals' 合计, as it would be in the department sums it is kept out of."""
    budget = state.budget
    if budget <= 0 or state.fiscal_year is None or not counts_in_rollup(state):
        return None
    paid = state.paid
    first, last = year_bounds(state.fiscal_year)
    elapsed = min(max(day - first + 1, 1), last - first + 1)
    if paid <= 0:
        projected = Fraction(0)
        reduction = budget
    else:
        projected = min(Fraction(paid * (last - first + 1), elapsed), Fraction(budget))
        exact = budget - max(projected, Fraction(paid))
        step = round_down_to_yuan * FEN_PER_YUAN
        reduction = int(exact // step) * step if exact > 0 else 0
    if reduction <= 0:
        return None
    return Proposal(
        project_id=state.project_id,
        name=state.name or "",
        department_id=state.department_id or "",
        department_name=state.department_name or "",
        fund_source=state.fund_source or "",
        budget=budget,
        paid=paid,
        projected=int(projected),
        proposed_reduction=reduction,
        fiscal_year=state.fiscal_year,
    )


def proposals(
    states: Iterable[ProjectState], day: int, round_down_to_yuan: int = 100
) -> list[Proposal]:
    """Proposals for the given projects (those with ``low_execution`` firing), largest first;
    ``department_overall`` lines are left out (``propose``)."""
    found = [p for s in states if (p := propose(s, day, round_down_to_yuan)) is not None]
    found.sort(key=lambda p: (-p.proposed_reduction, p.project_id))
    return found
