"""The project ledger: fold events into per-project state and department totals.

The ledger mutates its own plain-data state in place (a fold over millions of
events cannot afford a copy per event) but does no I/O and never reads the
clock. Money is int fen. Events for a project may arrive in any order: a
payment before the project's registration is kept and counted once the
registration arrives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from math import isfinite
from sys import intern
from typing import Any

from budget.calendar import year_end_of, year_of
from budget.events import Record
from budget.indicators import Indicator, performance_completion
from budget.versions import stored_version, version, version_pair


def names_anew(name: str | None, registered: str | None, held: str | None) -> bool:
    """Whether a department name from the registration versioned ``registered`` replaces
    one held from ``held`` (None or "": none yet): the latest registration names it."""
    return bool(name) and (not held or (registered or "") >= held)


# (fiscal_year, department_id, department_name, the version of the registration naming it)
DepartmentName = tuple[int, str, str, str]


@dataclass(slots=True)
class Totals:
    """Budget and paid summed over a department's projects in one fiscal year."""

    fiscal_year: int
    department_id: str
    department_name: str = ""
    budget: int = 0
    paid: int = 0
    projects: int = 0
    # The registration the name comes from: the latest one names the department, so a
    # renamed department shows its new name whatever order projects joined in (a
    # restart attaches them in key order).
    name_version: str | None = None
    # The parts of budget and paid dated after the fiscal year (ProjectState.after_*), and
    # whether every project counted kept them (states of earlier releases did not).
    after_budget: int = 0
    after_paid: int = 0
    dated: bool = True

    def take_name(self, name: str | None, registered: str | None) -> None:
        if names_anew(name, registered, self.name_version):
            self.department_name, self.name_version = name or "", registered or ""

    @property
    def execution_rate(self) -> float | None:
        return self.paid / self.budget if self.budget > 0 else None

    def at_year_end(self) -> Totals:
        """The totals as the fiscal year's Dec 31 left them (what is dated after, less)."""
        if not (self.after_budget or self.after_paid):
            return self
        return Totals(
            self.fiscal_year, self.department_id, self.department_name,
            self.budget - self.after_budget, self.paid - self.after_paid, self.projects, self.name_version,
        )


@dataclass(slots=True)
class ProjectState:
    project_id: str
    fiscal_year: int | None = None
    name: str | None = None
    department_id: str | None = None
    department_name: str | None = None
    fund_source: str | None = None
    kind: str = "project"
    plan: tuple[float, ...] | None = None
    approved: int | None = None
    approved_on: int | None = None  # of the approval in force (a corrected one replaces it)
    # The first day the project had a budget: its earliest approval, or an earlier 追加
    # (positive adjustment) — a project funded by 追加 alone has no approval. The stall
    # clock starts here when nothing is paid yet; a corrected approval does not restart it.
    # None in a state stored before the field: the rules fall back to approved_on.
    budget_on: int | None = None
    # Last-writer-wins versions of (business day, event_id) (budget.versions): the
    # fold gives the same state whatever order a project's events arrive in.
    approved_version: str | None = None
    registered_version: str | None = None
    adjusted: int = 0
    payments: int = 0
    reversals: int = 0
    last_payment_on: int | None = None
    # The latest business date among the project's events: after its fiscal year, whether
    # the sums still are the year's own (the year's close reports them only then).
    last_event_on: int | None = None
    indicators: dict[str, Indicator] = field(default_factory=dict)
    completion: float | None = None
    rollup: Totals | None = None  # the department totals this project counts in
    # What of the sums is dated after the fiscal year — adjustments; payments less
    # reversals — and the latest payment within it once one after it came: the Dec 31
    # figures (at_year_end) whatever order the events arrived in. A bureau's approval
    # after the year is the year's own (alerts.monitor dates it Dec 31); so is a
    # corrected 年初批复, which replaces the approval rather than adding to it.
    after_adjusted: int = 0
    after_paid: int = 0
    year_last_payment_on: int | None = None
    # Before registration the year is unknown: the money by calendar year, placed when
    # the registration comes ({year: [adjusted, paid, latest payment or 0]}).
    unplaced: dict[int, list[int]] | None = None
    # False for a state stored before the parts above were kept: its Dec 31 sums unknown.
    dated: bool = True

    @property
    def registered(self) -> bool:
        return self.fiscal_year is not None

    @property
    def budget(self) -> int:
        return (self.approved or 0) + self.adjusted

    @property
    def has_budget(self) -> bool:
        return self.approved is not None or self.adjusted != 0

    @property
    def paid(self) -> int:
        return self.payments - self.reversals

    @property
    def execution_rate(self) -> float | None:
        budget = self.budget
        return (self.payments - self.reversals) / budget if budget > 0 else None

    def at_year_end(self) -> ProjectState:
        """The state as its fiscal year's Dec 31 left it: the sums less what is dated after
        it, the last payment within it (itself when nothing is dated after the year)."""
        if self.fiscal_year is None:
            return self
        year_end = year_end_of(self.fiscal_year)
        last = self.last_payment_on
        after = last is not None and last > year_end
        reports = any(i.reported_on is not None and i.reported_on > year_end for i in self.indicators.values())
        if not (self.after_adjusted or self.after_paid or after or reports):
            return self
        view = ProjectState.from_dict(self.to_dict())
        view.adjusted -= self.after_adjusted
        view.payments -= self.after_paid
        view.after_adjusted = view.after_paid = 0
        if after:
            view.last_payment_on, view.year_last_payment_on = self.year_last_payment_on, None
        if reports:  # a January 绩效自评: the year's own report stands in for it
            for ind in view.indicators.values():
                if ind.reported_on is not None and ind.reported_on > year_end:
                    ind.actual, ind.reported_on, ind.reported_version = ind.in_year or (None, None, None)
                    ind.in_year = None
            view.completion = performance_completion(view.indicators)
        return view

    def to_dict(self) -> dict[str, Any]:
        return {
            "project_id": self.project_id,
            "fiscal_year": self.fiscal_year,
            "name": self.name,
            "department_id": self.department_id,
            "department_name": self.department_name,
            "fund_source": self.fund_source,
            "kind": self.kind,
            "plan": list(self.plan) if self.plan is not None else None,
            "approved": self.approved,
            "approved_on": self.approved_on,
            "budget_on": self.budget_on,
            "approved_version": version_pair(self.approved_version),
            "registered_version": version_pair(self.registered_version),
            "adjusted": self.adjusted,
            "payments": self.payments,
            "reversals": self.reversals,
            "last_payment_on": self.last_payment_on,
            "last_event_on": self.last_event_on,
            "indicators": [self.indicators[k].to_dict() for k in sorted(self.indicators)],
            "after_adjusted": self.after_adjusted,
            "after_paid": self.after_paid,
            "year_last_payment_on": self.year_last_payment_on,
            "unplaced": (
                {str(y): list(v) for y, v in sorted(self.unplaced.items())} if self.unplaced is not None else None
            ),
            "dated": self.dated,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProjectState:
        plan = data.get("plan")
        state = cls(
            project_id=data["project_id"],
            fiscal_year=data.get("fiscal_year"),
            name=data.get("name"),
            department_id=_interned(data.get("department_id")),
            department_name=_interned(data.get("department_name")),
            fund_source=_interned(data.get("fund_source")),
            kind=intern(data.get("kind") or "project"),
            plan=tuple(plan) if plan is not None else None,
            approved=data.get("approved"),
            approved_on=data.get("approved_on"),
            budget_on=data.get("budget_on"),  # absent from states of earlier releases
            approved_version=stored_version(data.get("approved_version")),
            registered_version=stored_version(data.get("registered_version")),
            adjusted=data.get("adjusted", 0),
            payments=data.get("payments", 0),
            reversals=data.get("reversals", 0),
            last_payment_on=data.get("last_payment_on"),
            last_event_on=data.get("last_event_on"),
            after_adjusted=data.get("after_adjusted", 0),
            after_paid=data.get("after_paid", 0),
            year_last_payment_on=data.get("year_last_payment_on"),
            # absent from states of earlier releases: their Dec 31 sums are not known
            dated=bool(data.get("dated", "after_paid" in data)),
        )
        unplaced = data.get("unplaced")
        if unplaced is not None:
            state.unplaced = {int(y): [int(x) for x in v] for y, v in unplaced.items()}
        for item in data.get("indicators", ()):
            # Stored versions are [day, event_id] pairs (budget.versions), held as strings.
            in_year = item.get("in_year")
            ind = Indicator(**{
                **item,
                "defined_version": stored_version(item.get("defined_version")),
                "reported_version": stored_version(item.get("reported_version")),
                "in_year": (in_year[0], int(in_year[1]), stored_version(in_year[2]) or "")
                if in_year is not None else None,
                "unplaced": [(a, int(d), stored_version(v) or "") for a, d, v in item["unplaced"]]
                if item.get("unplaced") is not None else None,
            })
            ind.indicator_id = intern(ind.indicator_id)
            ind.name, ind.unit, ind.category = _interned(ind.name), _interned(ind.unit), _interned(ind.category)
            ind.direction = intern(ind.direction)
            state.indicators[ind.indicator_id] = ind
        state.completion = performance_completion(state.indicators)
        if "last_event_on" not in data and not state.adjusted and not state.reversals:
            # Stored before the field (a Faust changelog value: workers check no profile
            # fingerprint): the latest dated fact kept — all of them, unless the project
            # has adjustments or reversals, whose dates are not kept: then it stays
            # unknown (None), and the year's close reports the alert's own figures.
            known = (state.approved_on, state.last_payment_on, *(i.reported_on for i in state.indicators.values()))
            state.last_event_on = max((d for d in known if d is not None), default=None)
        return state


def registered_year(record: Record) -> int:
    """The fiscal year a project_registered record registers its code for."""
    return int((record.details or {}).get("fiscal_year") or 0)


def other_year_reason(project_id: str, owner_year: int, year: int) -> str:
    return (
        f"项目编码 {project_id} 已登记为 {owner_year} 年度项目：一个编码只对应一个年度的项目，"
        f"请为 {year} 年度的项目使用新编码（如 {project_id}-{year}）"
        f"（project {project_id} is registered for fiscal year {owner_year}; a project code is one "
        f"year's project: register {year}'s under a new code (e.g. {project_id}-{year})）"
    )


def refused_year_reason(project_id: str, owner_year: int, year: int) -> str:
    """Why an event goes with its refused registration (same import, dated in its year)."""
    return (
        f"项目 {project_id} 的 {year} 年度登记已被拒收（编码已属 {owner_year} 年度项目），同批导入的该项目 "
        f"{year} 年度事件一并拒收，以免计入 {owner_year} 年度：请用新编码（如 {project_id}-{year}）重新导入"
        f"（the {year} registration of {project_id} was refused; its {year} events in the same import go with it）"
    )


class OtherFiscalYear(ValueError):
    """A registration that would move a project into another fiscal year: its money and
    alerts would mix two years' budgets, and leave the first year's sums."""


def _interned(value: str | None) -> str | None:
    # Indicator names, units and categories come from a small vocabulary (受益人数, 人次).
    return intern(value) if value is not None else None


def counts_in_rollup(state: ProjectState) -> bool:
    # A department_overall line already contains the department's projects;
    # adding it to the sums would count the same money twice.
    return state.registered and state.kind == "project"


class Ledger:
    """All project states plus department totals, kept consistent on every event."""

    __slots__ = ("departments", "offered", "projects", "seen")

    def __init__(self, *, track_event_ids: bool = False) -> None:
        self.projects: dict[str, ProjectState] = {}
        self.departments: dict[tuple[int, str], Totals] = {}
        # The embedded engine deduplicates in its log; other callers (Faust,
        # tests) ask the ledger to remember event ids instead.
        self.seen: set[str] | None = set() if track_event_ids else None
        # Names offered by registrations superseded on arrival (see _offer_name), for a
        # runtime whose departments live elsewhere (the Faust department partitions).
        self.offered: list[DepartmentName] | None = None

    def project(self, project_id: str) -> ProjectState:
        state = self.projects.get(project_id)
        if state is None:
            state = self.projects[project_id] = ProjectState(project_id)
        return state

    def apply_once(self, record: Record) -> ProjectState | None:
        """Apply unless this event_id was applied before; None for a duplicate."""
        if self.seen is None:
            raise RuntimeError("apply_once needs Ledger(track_event_ids=True)")
        if record.event_id in self.seen:
            return None
        self.seen.add(record.event_id)
        return self.apply(record)

    def apply(self, record: Record) -> ProjectState:
        kind, event_id, day, project_id, amount, details = record
        state = self.projects.get(project_id)
        if state is None:
            state = self.projects[project_id] = ProjectState(project_id)
        totals = state.rollup
        if kind == "payment":
            state.payments += amount  # type: ignore[operator]
            if totals is not None:
                totals.paid += amount  # type: ignore[operator]
            last = state.last_payment_on
            if state.fiscal_year is None:
                _unplace(state, day, 0, amount, day)  # type: ignore[arg-type]
            else:
                year_end = year_end_of(state.fiscal_year)
                if day > year_end:
                    state.after_paid += amount  # type: ignore[operator]
                    if totals is not None:
                        totals.after_paid += amount  # type: ignore[operator]
                    if last is not None and last <= year_end:
                        state.year_last_payment_on = last
                elif last is not None and last > year_end:
                    held = state.year_last_payment_on
                    if held is None or day > held:
                        state.year_last_payment_on = day
            if last is None or day > last:
                state.last_payment_on = day
        elif kind == "payment_reversed":
            state.reversals += amount  # type: ignore[operator]
            if totals is not None:
                totals.paid -= amount  # type: ignore[operator]
            if state.fiscal_year is None:
                _unplace(state, day, 0, -amount, 0)  # type: ignore[operator]
            elif day > year_end_of(state.fiscal_year):
                state.after_paid -= amount  # type: ignore[operator]
                if totals is not None:
                    totals.after_paid -= amount  # type: ignore[operator]
        elif kind == "budget_adjusted":
            state.adjusted += amount  # type: ignore[operator]
            if amount > 0 and (state.budget_on is None or day < state.budget_on):  # type: ignore[operator]
                state.budget_on = day  # 追加: the project has a budget from this day at the latest
            if totals is not None:
                totals.budget += amount  # type: ignore[operator]
            if state.fiscal_year is None:
                _unplace(state, day, amount, 0, 0)  # type: ignore[arg-type]
            elif day > year_end_of(state.fiscal_year):
                state.after_adjusted += amount  # type: ignore[operator]
                if totals is not None:
                    totals.after_budget += amount  # type: ignore[operator]
        elif kind == "budget_approved":
            # 年初批复 happens once; a corrected approval (later date) replaces it — but the
            # budget dates from the first (budget_on), whatever order they arrive in.
            if state.budget_on is None or day < state.budget_on:
                state.budget_on = day
            stamp = version(day, event_id)
            if state.approved_version is None or stamp > state.approved_version:
                before = state.approved or 0
                state.approved = amount
                state.approved_on = day
                state.approved_version = stamp
                if totals is not None:
                    totals.budget += amount - before  # type: ignore[operator]
        elif kind == "project_registered":
            stamp = version(day, event_id)
            year = registered_year(record)
            if state.fiscal_year is not None and year != state.fiscal_year:
                # A code is one year's project. Ingest refuses a second year for a code
                # (the log keeps one, so a replay decides as the live run did); this
                # guards logs written before that check.
                raise OtherFiscalYear(other_year_reason(project_id, state.fiscal_year, year))
            if state.registered_version is None or stamp > state.registered_version:
                state.registered_version = stamp
                self._register(state, details or {})
            else:
                self._offer_name(year, details or {}, stamp)
        elif kind == "indicator_defined":
            self._define_indicator(state, version(day, event_id), details or {})
        elif kind == "indicator_reported":
            self._report_indicator(state, day, version(day, event_id), details or {})
        else:
            raise ValueError(f"the ledger does not fold events of type {kind!r}")
        if state.last_event_on is None or day > state.last_event_on:  # only once folded
            state.last_event_on = day
        return state

    def _register(self, state: ProjectState, details: Mapping[str, Any]) -> None:
        # Everything is read before anything changes: a record that cannot be folded
        # raises with the state as it was (the monitor refuses it).
        fiscal_year = int(details["fiscal_year"])
        name = str(details["name"])
        # Interned: a province has 100k projects but a few hundred departments and four
        # fund sources; one copy of each string instead of one per project.
        department_id = intern(details["department_id"])
        department_name = intern(details["department_name"])
        fund_source = intern(details["fund_source"])
        kind = intern(details.get("kind") or "project")
        plan = details.get("spending_plan")
        plan_values = tuple(float(f) for f in plan) if plan is not None else None
        self._leave_rollup(state)
        state.fiscal_year, state.name = fiscal_year, name
        state.department_id, state.department_name = department_id, department_name
        state.fund_source, state.kind, state.plan = fund_source, kind, plan_values
        if state.unplaced is not None:
            _place(state, fiscal_year)
        if state.indicators:
            _place_reports(state, fiscal_year)
        self._join_rollup(state)

    def attach(self, state: ProjectState) -> None:
        """Adopt a state restored from storage, counting it in its department."""
        self.projects[state.project_id] = state
        state.rollup = None
        self._join_rollup(state)

    def _offer_name(self, fiscal_year: int, details: Mapping[str, Any], stamp: str) -> None:
        """A registration older than its project's current one changes nothing of the
        project, but still says what its department was called on its date: met in
        business order (a replay) it named the department, so it does on arrival too,
        if it is the department's latest — department names, like the sums, whatever
        the order."""
        if (details.get("kind") or "project") != "project":
            return
        department_id = intern(details["department_id"])
        name = intern(details["department_name"])
        # created if need be, as in the replay, where the project passed through it
        self._totals(fiscal_year, department_id).take_name(name, stamp)
        if self.offered is not None:
            self.offered.append((fiscal_year, department_id, name, stamp))

    def department_names(self) -> list[DepartmentName]:
        """Each department's name with the registration it comes from, in key order: what
        a restart cannot derive from the projects now in it, since the project whose
        registration named it may have moved to another department since."""
        return [
            (fiscal_year, department_id, t.department_name, t.name_version)
            for (fiscal_year, department_id), t in sorted(self.departments.items())
            if t.name_version is not None
        ]

    def adopt_names(self, names: Iterable[DepartmentName]) -> None:
        """Take department names kept by :meth:`department_names` (after :meth:`attach`):
        the latest registration names a department, as in the run that kept them."""
        for fiscal_year, department_id, name, registered in names:
            # created if every project left it: the live run keeps it, empty
            self._totals(fiscal_year, intern(department_id)).take_name(intern(name), registered)

    def _totals(self, fiscal_year: int, department_id: str) -> Totals:
        """The department's totals of ``fiscal_year``, created empty when there are none."""
        key = (fiscal_year, department_id)
        totals = self.departments.get(key)
        if totals is None:
            totals = self.departments[key] = Totals(fiscal_year, department_id)
        return totals

    def _join_rollup(self, state: ProjectState) -> None:
        if not counts_in_rollup(state):
            return
        assert state.fiscal_year is not None and state.department_id is not None
        totals = self._totals(state.fiscal_year, state.department_id)
        totals.take_name(state.department_name, state.registered_version)
        totals.budget += state.budget
        totals.paid += state.paid
        totals.after_budget += state.after_adjusted
        totals.after_paid += state.after_paid
        totals.projects += 1
        if not state.dated:
            totals.dated = False  # until a rebuild: which project's money it was is not kept
        state.rollup = totals

    def _leave_rollup(self, state: ProjectState) -> None:
        totals = state.rollup
        if totals is None:
            return
        totals.budget -= state.budget
        totals.paid -= state.paid
        totals.after_budget -= state.after_adjusted
        totals.after_paid -= state.after_paid
        totals.projects -= 1
        state.rollup = None

    def _define_indicator(self, state: ProjectState, stamp: str, details: Mapping[str, Any]) -> None:
        indicator_id = intern(details["indicator_id"])
        target, weight = float(details["target"]), float(details.get("weight", 1.0))
        if not (isfinite(target) and isfinite(weight) and weight > 0):
            raise ValueError(f"indicator {indicator_id}: target {target} and weight {weight} must be finite")
        ind = state.indicators.get(indicator_id)
        if ind is None:
            ind = state.indicators[indicator_id] = Indicator(indicator_id)
        if ind.defined_version is not None and stamp < ind.defined_version:
            return
        ind.defined_version = stamp
        ind.name = _interned(details.get("name"))
        ind.target = target
        ind.unit = _interned(details.get("unit"))
        ind.direction = intern(details.get("direction") or "higher_better")
        ind.weight = weight
        ind.category = _interned(details.get("category"))
        state.completion = performance_completion(state.indicators)

    def _report_indicator(self, state: ProjectState, day: int, stamp: str, details: Mapping[str, Any]) -> None:
        indicator_id = intern(details["indicator_id"])
        ind = state.indicators.get(indicator_id)
        if ind is None:
            ind = state.indicators[indicator_id] = Indicator(indicator_id)
        # The latest report by business date wins, whatever the arrival order; the latest
        # within the fiscal year is kept too while a later one is current (Indicator.in_year).
        actual = details["actual"]
        year_end = year_end_of(state.fiscal_year) if state.fiscal_year is not None else None
        if year_end is None:  # which year is its own is not known yet: kept for _place
            if ind.unplaced is None:
                ind.unplaced = []
            ind.unplaced.append((actual, day, stamp))
        if ind.reported_version is None or stamp > ind.reported_version:
            if year_end is not None:
                if day <= year_end:
                    ind.in_year = None
                elif ind.reported_on is not None and ind.reported_on <= year_end and ind.reported_version:
                    ind.in_year = (ind.actual, ind.reported_on, ind.reported_version)  # type: ignore[assignment]
            ind.actual = actual
            ind.reported_on = day
            ind.reported_version = stamp
            state.completion = performance_completion(state.indicators)
        elif (year_end is not None and day <= year_end and ind.reported_on is not None
              and ind.reported_on > year_end and (ind.in_year is None or stamp > ind.in_year[2])):
            ind.in_year = (actual, day, stamp)


def _unplace(state: ProjectState, day: int, adjusted: int, paid: int, payment_on: int) -> None:
    """Money of a project not registered yet, kept by calendar year (see ``_place``)."""
    if state.unplaced is None:
        state.unplaced = {}
    year = year_of(day)
    held = state.unplaced.get(year)
    if held is None:
        state.unplaced[year] = [adjusted, paid, payment_on]
    else:
        held[0] += adjusted
        held[1] += paid
        held[2] = max(held[2], payment_on)


def _place(state: ProjectState, fiscal_year: int) -> None:
    """At registration: the money logged before it, after the fiscal year or within it."""
    assert state.unplaced is not None
    within = 0
    for year, (adjusted, paid, payment_on) in state.unplaced.items():
        if year > fiscal_year:
            state.after_adjusted += adjusted
            state.after_paid += paid
        else:
            within = max(within, payment_on)
    last = state.last_payment_on
    if last is not None and last > year_end_of(fiscal_year):
        state.year_last_payment_on = within or None
    state.unplaced = None


def _place_reports(state: ProjectState, fiscal_year: int) -> None:
    """At registration: each indicator's latest report within the year, kept beside a
    current one dated after it (Indicator.in_year)."""
    year_end = year_end_of(fiscal_year)
    for ind in state.indicators.values():
        if ind.unplaced is None:
            continue
        own = [r for r in ind.unplaced if r[1] <= year_end]
        if ind.reported_on is not None and ind.reported_on > year_end and own:
            ind.in_year = max(own, key=lambda r: r[2])
        ind.unplaced = None


def fold(records: Iterable[Record]) -> Ledger:
    """The reference fold: unique events (first occurrence of each event_id) applied in order."""
    ledger = Ledger(track_event_ids=True)
    for record in records:
        try:
            ledger.apply_once(record)
        except OtherFiscalYear:
            continue  # refused, as the runtimes refuse it
    return ledger


def region_totals(ledger: Ledger, fiscal_year: int) -> tuple[int, int]:
    budget = paid = 0
    for (year, _), totals in ledger.departments.items():
        if year == fiscal_year:
            budget += totals.budget
            paid += totals.paid
    return budget, paid
