"""The monitor: ledger + alert book + event-time clock, driven the same way by the
embedded engine and by Faust agents (DESIGN §7).

Events are applied in business-date order; the clock closes day after day. On
closing a day the monitor evaluates only what may have changed: projects
touched that day, projects whose time-driven rules fall due that day (see
``rules.assess``) and, on a checkpoint day of the profile, everything. So
a year of 100k projects costs (touched project-days + due project-days +
checkpoints x projects) evaluations, not 365 x projects.

Pure: no I/O, no wall clock. Days are ``date.toordinal()`` ints.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain, groupby
from typing import Any

from alerts.dispositions import DESK_TYPES, DISPOSITION_EVENT_TYPES, Desk, Refusal, orjson_free_dumps
from alerts.lifecycle import Alert, AlertBook, Subject, Transition
from alerts.messages import compose, year_closed_text
from alerts.profile import Profile
from alerts.reductions import Proposal, proposals
from alerts.rules import (
    LOW_EXECUTION,
    DayContext,
    assess,
    day_context,
    department_figures,
    evaluate_department,
    project_figures,
)
from budget.calendar import iso, year_bounds, year_end_of
from budget.events import Record, record_to_json_dict
from budget.ledger import DepartmentName, Ledger, ProjectState, Totals


class Monitor:
    def __init__(self, profile: Profile, *, ledger: Ledger | None = None) -> None:
        self.profile = profile
        self.ledger = ledger if ledger is not None else Ledger()
        self.book = AlertBook()
        self.clock: int | None = None  # the last day closed
        self._dirty: set[str] = set()
        self._dirty_departments: set[tuple[int, str]] = set()
        self._due: dict[int, set[str]] = {}
        self._due_of: dict[str, int] = {}
        self._checkpoints: dict[int, frozenset[int]] = {}
        # What a persisting runtime must write out; it drains these after a commit.
        self.changed: set[str] = set()
        # Records taken from the input: applied, handed to the disposition desk, or refused
        # (what a run reports as processed, and what its progress bar counts against).
        self.taken = 0
        # The disposition loop (alerts.dispositions), attached by runtimes that run it.
        self.desk: Desk | None = None
        # Records the ledger could not fold; a persisting runtime dead-letters and drains them.
        self.refused: list[Refusal] = []
        self._late: dict[str, int] = {}  # project -> earliest date of its events applied late today
        self._left: dict[str, tuple[int, str]] = {}  # project -> the department a re-registration today moved it from
        # Projects judged again as of their Dec 31 on the last closed day (a late event of
        # their year); the Faust runtime flags their department deltas with it.
        self.judged_at_year_end: set[str] = set()
        self._close_days: dict[int, int | None] = {}  # fiscal year -> its close day (profile.year_end)
        # Money dated after its project's year closed: how many, and a few of the projects
        # (a persisting runtime reports and resets them per run).
        self.after_close = 0
        self.after_close_projects: list[str] = []
        self._swept: int | None = None  # the latest fiscal year close_year has ended

    # -- restoring -------------------------------------------------------
    def restore(
        self, states: Iterable[ProjectState], alerts: Iterable[Alert], clock: int | None,
        department_names: Iterable[DepartmentName] = (),
    ) -> None:
        """Adopt persisted state and rebuild what derives from it (totals, due dates);
        ``department_names`` as :meth:`Ledger.department_names` kept them."""
        for state in states:
            self.ledger.attach(state)
        self.ledger.adopt_names(department_names)
        for alert in alerts:
            self.book.add(alert)
        self.clock = clock
        if clock is not None:
            contexts: dict[int, DayContext] = {}
            for state in self.ledger.projects.values():
                if state.fiscal_year is None:
                    continue
                first, last = year_bounds(state.fiscal_year)
                if clock < first:
                    self._schedule_on(state.project_id, first)
                elif clock <= last:
                    ctx = contexts.get(state.fiscal_year)
                    if ctx is None:
                        ctx = contexts[state.fiscal_year] = day_context(self.profile, clock, state.fiscal_year)
                    _, due = assess(state, ctx)
                    if due is not None:
                        self._schedule_on(state.project_id, due, last)

    # -- feeding ---------------------------------------------------------
    def apply(self, record: Record) -> None:
        self.taken += 1
        approved = False  # an adjustment the desk emitted for an approval
        if record.type in DESK_TYPES:
            if self.desk is not None:
                routed = self.desk.take(record, self)
                if routed is None:
                    return
                approved = routed is not record
                record = routed
            elif record.type in DISPOSITION_EVENT_TYPES:
                return  # no disposition loop here: such events change no figure
        if record.type == "project_registered":
            # A re-registration may move the project: the department it leaves changes too.
            before = self.ledger.projects.get(record.project_id)
            if before is not None and before.rollup is not None:
                left = (before.rollup.fiscal_year, before.rollup.department_id)
                self._dirty_departments.add(left)
                self._left[record.project_id] = left
        if approved:
            held = self.ledger.projects.get(record.project_id)
            if held is not None and held.fiscal_year is not None:
                year_end = year_end_of(held.fiscal_year)
                if record.day > year_end:
                    # A reduction or recovery approved after its fiscal year answers that
                    # year's alert: the year's own money, in its Dec 31 sums and judged
                    # again as of that day (dated in the new year, it would change no
                    # year-end alert and leave the alert firing, for good, on figures that
                    # are no longer true).
                    record = record._replace(day=year_end)
        # The hot path: changed projects and departments are derived once per closed day.
        try:
            state = self.ledger.apply(record)
        except (TypeError, ValueError, KeyError) as err:
            # Validated at the boundary, so only a record stored by an older release can
            # get here: refused with its reason rather than stopping every later run.
            self.refused.append(Refusal(record.event_id, f"{record.type}: cannot be applied: {err!r}",
                                        orjson_free_dumps(record_to_json_dict(record))))
            return
        self._dirty.add(state.project_id)
        day = record.day
        if self.clock is not None and day <= self.clock:  # late: rare, so kept apart
            earliest = self._late.get(state.project_id)
            if earliest is None or day < earliest:
                self._late[state.project_id] = day
        fiscal_year = state.fiscal_year
        if fiscal_year is not None and record.type in MONEY_TYPES and day > year_end_of(fiscal_year) \
                and self.year_closed(fiscal_year, day):
            # Money dated after its year's close: counted in the closed year (a code is one
            # year's project), most likely the next year's payment under last year's code.
            self.after_close += 1
            sample = self.after_close_projects
            if len(sample) < AFTER_CLOSE_SAMPLE and state.project_id not in sample:
                sample.append(state.project_id)

    def process(self, records: Iterable[Record], until: int) -> Iterator[tuple[int, list[Transition]]]:
        """Apply ``records`` (sorted by business day, none after ``until``) and close every
        day up to ``until``; yields (day, transitions) as each day closes.

        Records dated on or before the clock arrived late: they are applied at the
        clock and the clock's day is closed again for them.
        """
        iterator = iter(records)
        if self.clock is None:
            first = next(iterator, None)
            if first is None:
                self.clock = until
                return
            self.clock = min(first.day, until + 1) - 1
            iterator = chain((first,), iterator)
        start = self.clock
        desk = self.desk
        for day, group in groupby(iterator, key=lambda r: max(r.day, start)):
            if day > until:
                raise ValueError(f"record dated {iso(day)} is after the run's end {iso(until)}")
            yield from self._close_empty_days_before(day)
            fresh = day > self.clock
            group_iter = iter(group)
            first_answer: Record | None = None
            for record in group_iter:
                if desk is not None and record.type in DISPOSITION_EVENT_TYPES:
                    first_answer = record
                    break
                self.apply(record)
            self.clock = day
            closed = self._close(day, fresh)
            if first_answer is not None:
                # An answer is recorded on a day that has closed (the board, `dispose`):
                # what follows it in the log came after that close too, and each answer
                # is taken as by a run of its own — after the close of what preceded it,
                # and closed before what followed — whether the day is new or late, so
                # the split depends on the log's order alone, never on how runs fell.
                # One yield for the day: a commit in between would mark the day done
                # without its answers.
                unclosed = False  # records applied since the day's last close
                for record in chain((first_answer,), group_iter):
                    answer = record.type in DISPOSITION_EVENT_TYPES
                    if answer and unclosed:
                        closed.extend(self._close(day, False))
                    self.apply(record)
                    unclosed = not answer
                    if answer:
                        closed.extend(self._close(day, False))
                if unclosed:
                    closed.extend(self._close(day, False))
            yield day, closed
        yield from self._close_empty_days_before(until + 1)

    def _close_empty_days_before(self, day: int) -> Iterator[tuple[int, list[Transition]]]:
        assert self.clock is not None
        while self.clock + 1 < day:
            self.clock += 1
            yield self.clock, self._close(self.clock, fresh=True)

    # -- evaluating ------------------------------------------------------
    def is_checkpoint(self, day: int) -> bool:
        year = _year(day)
        days = self._checkpoints.get(year)
        if days is None:
            days = self._checkpoints[year] = self.profile.checkpoint_days(year)
        return day in days

    def _close(self, day: int, fresh: bool) -> list[Transition]:
        transitions: list[Transition] = []
        projects = self.ledger.projects
        departments = self.ledger.departments
        year = _year(day)
        dirty = self._dirty
        if dirty:
            self.changed |= dirty
            dirty_departments = self._dirty_departments
            for project_id in dirty:
                totals = projects[project_id].rollup
                if totals is not None:
                    dirty_departments.add((totals.fiscal_year, totals.department_id))
        # After its fiscal year a project (and its department) is judged again, as of its
        # Dec 31, only for a late event dated within that year: December's payments
        # arriving in January. An event dated after the year changes no year-end alert.
        late = self._late
        self._late = {}
        self.judged_at_year_end = set()
        checkpoint = fresh and self.is_checkpoint(day)
        if checkpoint:
            touched: Iterable[str] = list(projects)
            touched_departments: Iterable[tuple[int, str]] = list(departments)
            self._dirty = set()
            self._dirty_departments = set()
            self._due.pop(day, None)
        else:
            touched = self._dirty
            if fresh:
                due_today = self._due.pop(day, None)
                if due_today:
                    touched = touched | due_today
            self._dirty = set()
            touched_departments = self._dirty_departments
            self._dirty_departments = set()
        contexts: dict[int, DayContext] = {}
        book = self.book
        firing = book.firing
        # Sorted, so a run resumed after a restart lists a day's transitions in the same order.
        for project_id in sorted(touched):
            state = projects[project_id]
            fiscal_year = state.fiscal_year
            if fiscal_year is None:
                continue
            ctx = contexts.get(fiscal_year)
            if ctx is None:
                ctx = contexts[fiscal_year] = day_context(self.profile, day, fiscal_year)
            if day < ctx.first:
                self._schedule_on(project_id, ctx.first)
                continue
            as_of: int | None = None
            if day > ctx.last:
                # After its fiscal year nothing is due any more; only a late event of that
                # year changes it, judged as of its Dec 31.
                if late.get(project_id, ctx.last + 1) > ctx.last:
                    continue
                if self.year_closed(fiscal_year, day):
                    continue  # its alerts are over (close_year): the late event changes figures only
                self.judged_at_year_end.add(project_id)
                as_of = ctx.last
                ctx = contexts.get(-fiscal_year)
                if ctx is None:
                    ctx = contexts[-fiscal_year] = day_context(self.profile, as_of, fiscal_year)
            judged = state if as_of is None else state.at_year_end()  # Dec 31's sums, not January's
            findings, due = assess(judged, ctx)
            current = firing.get(("project", project_id, fiscal_year))
            if current is None:
                if findings:
                    transitions.extend(self._reconcile_project(judged, findings, day, as_of=as_of, ctx=ctx))
            elif not _same(current, findings):
                transitions.extend(self._reconcile_project(judged, findings, day, as_of=as_of, ctx=ctx))
            else:  # no transition, but a re-registration may have moved or renamed it
                book.follow(current, state.department_id or "", state.department_name or "",
                            state.name or state.project_id)
            if due is not None and as_of is None:
                self._schedule_on(project_id, due, ctx.last)
        # Judged as of its Dec 31: the department of each project judged so, and the one
        # it left if a late re-registration of its year moved it (that one changed too).
        left = self._left
        self._left = {}
        year_end_departments = {
            (rollup.fiscal_year, rollup.department_id)
            for rollup in (projects[p].rollup for p in self.judged_at_year_end)
            if rollup is not None
        } | {left[p] for p in self.judged_at_year_end if p in left}
        for key in sorted(touched_departments):
            totals = departments[key]
            if key[0] == year:
                transitions.extend(self.assess_department(totals, day))
            elif key[0] < year and key in year_end_departments:
                transitions.extend(self.assess_department(totals.at_year_end(), day, as_of=year_bounds(key[0])[1]))
        if fresh:
            transitions.extend(self.close_year(day))
        if self.desk is not None:
            return self.desk.close(day, fresh, transitions, self.book)
        return transitions

    def year_closed(self, fiscal_year: int, day: int) -> bool:
        """Whether ``fiscal_year`` is closed on ``day`` (profile.year_end): from its close
        day on, nothing of that year is judged again."""
        close = self._close_day(fiscal_year)
        return close is not None and day >= close

    def _close_day(self, fiscal_year: int) -> int | None:
        days = self._close_days
        if fiscal_year not in days:
            days[fiscal_year] = self.profile.year_close_day(fiscal_year)
        return days[fiscal_year]

    def close_year(self, day: int) -> list[Transition]:
        """From a fiscal year's close day on (年度结束), end the alerts of that year (and
        any earlier) still firing — a closed year's verdict, not a cleared condition.
        Normally on the close day itself; a monitor whose clock passed close days under a
        policy without the close (Faust workers upgraded later) ends every closed year's
        on its next day. An alert ends with its subject's Dec 31 figures (the sums less
        what is dated after the year); only where a state of an earlier release cannot tell
        them apart, with those of its last evaluation — dated so in the message and in
        ``figures["as_of"]``."""
        fiscal_year = _year(day) - 1
        close = self._close_day(fiscal_year)
        if close is None:
            return []
        if day < close:
            fiscal_year -= 1  # last year's close is ahead: the year before closed a year ago
        if self._swept is not None and self._swept >= fiscal_year:
            return []
        self._swept = fiscal_year
        projects, departments = self.ledger.projects, self.ledger.departments
        profile = self.profile

        def closing(alert: Alert) -> tuple[dict[str, Any], str, str]:
            year_end = year_bounds(alert.fiscal_year)[1]
            figures: dict[str, Any] | None = None
            if alert.subject_type == "project":
                label = _label(alert.department_name or alert.department_id, alert.subject_name, alert.subject_id)
                state = projects.get(alert.subject_id)
                # Its Dec 31 sums: what is dated after the year is kept apart (a state of
                # an earlier release did not: its sums are the year's own only while no
                # event of it is dated after the year).
                if state is not None and state.fiscal_year == alert.fiscal_year and (
                    state.dated or (state.last_event_on is not None and state.last_event_on <= year_end)
                ):
                    figures = project_figures(state.at_year_end(), year_end, profile)
            else:
                label = alert.department_name or alert.department_id
                totals = departments.get((alert.fiscal_year, alert.subject_id))
                if totals is not None and totals.dated:
                    figures = department_figures(totals.at_year_end(), year_end, profile)
            # After its year a project or department is judged as of its Dec 31.
            as_of = year_end if figures is not None else min(alert.updated_on, year_end)
            figures = {**(figures if figures is not None else alert.figures), "as_of": iso(as_of)}
            message, action = year_closed_text(rule=alert.rule, subject=label, fiscal_year=alert.fiscal_year,
                                               figures=figures, as_of=iso(as_of))
            return figures, message, action

        return self.book.close_year(fiscal_year, day, closing)

    def _reconcile_project(
        self, state: ProjectState, findings: dict[str, str], day: int, *, as_of: int | None = None,
        ctx: DayContext | None = None,
    ) -> list[Transition]:
        """Transitions dated ``day``, with the figures as of ``as_of`` (default ``day``);
        ``ctx``: the context the findings were judged in, if the caller has it."""
        profile = self.profile
        when = day if as_of is None else as_of
        return self.book.reconcile(
            _project_subject(state),
            findings,
            day,
            lambda: project_figures(state, when, profile, ctx),
            self._describer(_project_label(state), when),
        )

    def assess_department(self, totals: Totals, day: int, *, as_of: int | None = None) -> list[Transition]:
        """The department's alert on ``day``, judged as of ``as_of`` (default ``day``; a
        past fiscal year's Dec 31 when a late event changed its totals)."""
        profile = self.profile
        when = day if as_of is None else as_of
        findings = evaluate_department(totals, when, profile)
        if not findings and not self.book.firing.get(("department", totals.department_id, totals.fiscal_year)):
            return []
        subject = Subject(
            "department", totals.department_id, totals.fiscal_year, totals.department_id,
            totals.department_name, totals.department_name,
        )
        return self.book.reconcile(
            subject,
            findings,
            day,
            lambda: department_figures(totals, when, profile),
            self._describer(totals.department_name or totals.department_id, when),
        )

    def _describer(self, label: str, day: int) -> Any:
        deadline = self.profile.disposition.deadline_working_days
        as_of = iso(day)

        def describe(rule: str, kind: str, severity: str, figures: Any) -> tuple[str, str]:
            return compose(
                rule=rule, kind=kind, severity=severity, subject=label,
                figures=figures, as_of=as_of, deadline_days=deadline,
            )

        return describe

    def _schedule_on(self, project_id: str, day: int, last: int | None = None) -> None:
        """Evaluate the project again on ``day``. A day after ``last`` (its fiscal year's
        Dec 31: after it nothing is due, e.g. a stall 90 days after a December payment)
        only cancels the project's earlier schedule: a province's year ends with ~100k
        such days, each a set kept until a day no one evaluates."""
        due_of = self._due_of
        previous = due_of.get(project_id)
        if previous == day:
            return
        if previous is not None:
            bucket = self._due.get(previous)
            if bucket is not None:
                bucket.discard(project_id)
                if not bucket:
                    del self._due[previous]
        if last is not None and day > last:
            if previous is not None:
                del due_of[project_id]
            return
        due_of[project_id] = day
        bucket = self._due.get(day)
        if bucket is None:  # (setdefault would build a set on every call)
            bucket = self._due[day] = set()
        bucket.add(project_id)

    # -- reading ---------------------------------------------------------
    def reductions(self, day: int | None = None, fiscal_year: int | None = None) -> list[Proposal]:
        """Proposals of one fiscal year (default: the year of ``day``, the clock): in
        January last year's low_execution alerts still fire (until close_year), and its
        budget is no longer there to reduce — listed beside this year's, with one total,
        they mixed years."""
        when = self.clock if day is None else day
        if when is None:
            return []
        year = _year(when) if fiscal_year is None else fiscal_year
        projects = self.ledger.projects
        flagged = [
            projects[a.subject_id]
            for a in self.book.active()
            if a.rule == LOW_EXECUTION and a.subject_type == "project" and a.fiscal_year == year
            and a.subject_id in projects
        ]
        return proposals(flagged, when, self.profile.reduction.round_down_to_yuan)

    def closed_year_reductions(self, fiscal_year: int, project_ids: Iterable[str]) -> list[Proposal]:
        """The proposals of a closed year, as of its Dec 31: the projects whose
        low_execution alert ended with the year (ids a persisting runtime reads back from
        its store; resolved alerts leave memory) — what they left unspent, less anything
        adjusted or paid since."""
        projects = self.ledger.projects
        flagged = [projects[p] for p in project_ids if p in projects]
        return proposals(flagged, year_bounds(fiscal_year)[1], self.profile.reduction.round_down_to_yuan)


MONEY_TYPES = frozenset({"payment", "payment_reversed", "budget_adjusted"})
AFTER_CLOSE_SAMPLE = 10


def _same(current: dict[str, Alert], findings: dict[str, str]) -> bool:
    if len(current) != len(findings):
        return False
    for rule, severity in findings.items():
        alert = current.get(rule)
        if alert is None or alert.severity != severity:
            return False
    return True


def _year(day: int) -> int:
    from budget.calendar import year_of

    return year_of(day)


def _project_subject(state: ProjectState) -> Subject:
    return Subject(
        "project", state.project_id, state.fiscal_year or 0, state.department_id or "",
        state.name or state.project_id, state.department_name or "",
    )


def _project_label(state: ProjectState) -> str:
    return _label(state.department_name or state.department_id, state.name, state.project_id)


def _label(department: str | None, name: str | None, project_id: str) -> str:
    """How a project is named in a message: 教育局「校舍改造」（P1）."""
    return f"{department}「{name}」（{project_id}）"
