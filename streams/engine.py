"""The embedded engine: the SQLite log processed by the monitor, in event time.

A run takes the pending events in business-date order, lets the monitor close
day after day up to ``as_of``, and commits state + alerts + transitions +
outbox + cursor in one SQLite transaction every ``commit_every`` events (at a
day boundary) and at the end. Transitions stream into the open transaction as
their days close; each commit rewrites the projects changed since the last, so
by default a commit covers at least ``SNAPSHOT_SPACING`` events per tracked
project — a province's replay would otherwise spend its time rewriting state.
The cursor (clock, seq) means: every event with seq <= seq and day <= clock is
in the committed state. A crash — even SIGKILL — resumes from there, so nothing
is lost or counted twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from alerts.dispositions import Desk
from alerts.lifecycle import FIRING, RESOLVED, Alert, Transition
from alerts.monitor import Monitor
from alerts.profile import Profile
from alerts.reductions import Proposal
from alerts.rules import LOW_EXECUTION
from budget.calendar import iso, to_day, year_of
from budget.ledger import DepartmentName, ProjectState
from budget.report import status
from streams.checkpointer import Checkpointer
from streams.errors import ClockError, StoreError
from streams.gc_tuning import fewer_collections
from streams.store import Batch, Store, TransitionRow

Progress = Callable[[int, int], None]  # (events processed so far, events pending)


@dataclass(frozen=True, slots=True)
class RunSummary:
    events: int
    transitions: int
    days: int
    as_of: int | None
    commits: int
    # money dated after its project's fiscal year closed, and some of those projects
    after_close: int = 0
    after_close_projects: tuple[str, ...] = ()


DERIVED_SOURCE = "budgetwatch:disposition_approved"
DEFAULT_COMMIT_EVERY = 100_000
# With the default cadence a commit covers at least this many events per tracked project,
# so state rows written stay under 1/SNAPSHOT_SPACING per event whatever the scale.
SNAPSHOT_SPACING = 10
TRANSITION_SLICE = 2_000
# A batch of more events than this waits for the checkpoint of the one before it to end
# before it begins, so that SQLite starts the WAL over (streams.checkpointer.settle)
# instead of growing it by every batch of the run. Each page the batch misses in its
# cache is looked up in the WAL's index, one hash table per 4,096 frames; a 100k-project
# year (~1 GB of WAL per batch) left a 2.1 GB WAL and spent ~2.8% of its CPU in that
# search alone, plus the kernel's zeroing of the new file blocks. Waiting costs the
# checkpoint's copy (~1 s per GB here) that the thread would have overlapped: at 10k
# projects (batches of 100k events, ~100 MB) the two were within noise, so smaller
# batches keep the overlap.
SETTLED_BATCHES = DEFAULT_COMMIT_EVERY
# A run at least this long — and longer than the transitions already stored, so that
# sorting them all is cheaper than inserting its own one by one — defers the secondary
# indexes (streams.store.DEFERRABLE_INDEXES) to its last batch.
BULK_EVENTS = DEFAULT_COMMIT_EVERY


HeldBy = Literal["today", "as-of", "clock"]  # what holds waiting events back (waiting_text)


def waiting_text(
    waiting: int, until: int, hint: str = "如日期有误请更正后重新发送", *, held_by: HeldBy = "clock"
) -> str:
    """What users are told of events a run left for a later day: those dated after
    ``until``, the day that holds them back (``held_by``): ``today`` when runs may not
    pass the wall clock, ``as-of`` the run's --as-of, ``clock`` the business clock."""
    named = {"today": f"今天（{iso(until)}，北京时间）", "as-of": f"本次处理截止日 {iso(until)}（--as-of）"}
    gloss = {"today": " (today)", "as-of": " (the run's --as-of)"}
    return (f"{waiting} 条事件的业务日期晚于{named.get(held_by, f' {iso(until)}')}，等待以后处理（{hint}）"
            f"（{waiting} event(s) dated after {iso(until)}{gloss.get(held_by, '')} wait for a later run）")


def held_until(reachable: int | None, clock: int) -> tuple[int, HeldBy]:
    """The day events left for later wait past, and what it is: the last day a run may
    reach (today), or the business clock when it has gone further."""
    if reachable is not None and reachable >= clock:
        return reachable, "today"
    return clock, "clock"


def defers_indexes(pending: int, stored_transitions: int) -> bool:
    return pending >= BULK_EVENTS and pending >= stored_transitions


def new_monitor(profile: Profile, dispositions: bool = True) -> Monitor:
    """The embedded runtime's monitor: rules plus the disposition loop (alerts.dispositions)."""
    monitor = Monitor(profile)
    if dispositions:
        monitor.desk = Desk(profile.disposition.deadline_working_days, profile.work_calendar)
    return monitor


def encode_transition(transition: Transition) -> TransitionRow:
    alert = transition.alert
    data = orjson.dumps(transition.to_json())
    return alert.alert_id, transition.on, transition.kind, alert.department_id, data


def profile_fingerprint(profile: Profile) -> str:
    return hashlib.sha256(orjson.dumps(profile.model_dump(mode="json"))).hexdigest()[:16]


class Engine:
    def __init__(
        self,
        store: Store,
        profile: Profile,
        *,
        commit_every: int | None = None,
        dispositions: bool = True,
        today: Callable[[], dt.date] | None = None,
    ) -> None:
        self.store = store
        # With no --as-of a run goes to the latest event date, but never past today when
        # a wall clock is given: one mistyped year must not push business time forward
        # for good (the clock never goes back). Such events wait for their day.
        self.today = today
        self.profile = profile
        # None: every DEFAULT_COMMIT_EVERY events, spaced out with the project count.
        self.commit_every = commit_every
        # The disposition loop (deadlines, escalation, approvals); off only to compare the
        # rule transitions alone (e.g. with the Faust runtime, which has no loop).
        self.dispositions = dispositions
        self.monitor = new_monitor(profile, dispositions)
        self._loaded = False
        # The store's position as this engine left it: cursor and derived-state generation.
        self._cursor: tuple[int | None, int, int] | None = None
        self._names: list[DepartmentName] = []  # the department names as last committed

    def load(self) -> Monitor:
        """Restore the monitor from the last commit (once, and again if another process
        committed since: a `run` from the CLI while `serve` holds its engine)."""
        if self._loaded and self.store.position() != self._cursor:
            self.monitor = new_monitor(self.profile, self.dispositions)
            self._loaded = False
        if not self._loaded:
            self.store.refuse_if_notifier()  # its alerts came from Kafka; no log to judge them by
            self._check_profile()
            # One read snapshot: a commit by another process in the middle of a reload
            # must not leave states of one commit beside alerts or a cursor of another.
            snapshot = not self.store.db.in_transaction
            if snapshot:
                self.store.db.execute("BEGIN")
            try:
                self._restore()
            finally:
                if snapshot:
                    self.store.db.execute("COMMIT")
        return self.monitor

    def _restore(self) -> None:
        """The monitor from the last commit (in load's read snapshot)."""
        clock, seq, generation = self.store.position()
        states = [ProjectState.from_dict(d) for d in self.store.project_states()]
        # Resolved alerts stay in the store until a disposition needs one
        # (AlertBook.archive); the desk still reads their adjustments, so every
        # row passes by once, and only the unresolved ones are kept.
        unresolved: list[Alert] = []

        def each_alert() -> Iterator[Alert]:
            for data in self.store.each_alert():
                alert = Alert.from_json(data)
                if alert.status != RESOLVED:
                    unresolved.append(alert)
                yield alert

        desk = self.monitor.desk
        if desk is not None:
            desk.restore(each_alert(), clock)
        else:
            unresolved.extend(Alert.from_json(d) for d in self.store.each_alert(status=FIRING))
        self.monitor.book.archive = self._archived
        names = self.store.department_names()
        self.monitor.restore(states, unresolved, clock, names)
        self._names = names
        self._loaded = True
        self._cursor = (clock, seq, generation)

    def _archived(self, alert_id: str) -> Alert | None:
        data = self.store.alert_row(alert_id)
        return Alert.from_json(data) if data is not None else None

    def _fingerprint(self) -> str:
        return f"{self.profile.name}:{profile_fingerprint(self.profile)}"

    def _check_profile(self) -> None:
        """Refuse a profile other than the one the stored state was computed with, or the
        one a rebuild claimed. Only a run or a rebuild records the profile (:meth:`run`, in
        its first batch): a reading command or a service start on a store with nothing
        computed yet must not claim it for a policy the first run does not use."""
        fingerprint = self._fingerprint()
        stored = self.store.meta("profile")
        if stored is None or stored == fingerprint:
            return
        if self.store.cursor()[0] is None:
            # Nothing computed yet, but a rebuild claimed the store for its policy (see
            # Store.reset_derived): a `serve` on another one must not replay it meanwhile.
            raise StoreError(
                f"{self.store.path}：数据库正按策略 {stored.split(':')[0]!r} 从日志重算（`run --rebuild`），"
                f"本进程使用另一策略（{fingerprint}）。请待重算完成后用同一 --profile 重启，或用 "
                "`budgetwatch run --rebuild` 按本策略重算"
                f"（a rebuild under profile {stored.split(':')[0]!r} claimed this store）"
            )
        raise StoreError(
            f"{self.store.path}：现有结果按策略 {stored.split(':')[0]!r} 计算（指纹 {stored}），"
            f"本次使用 {fingerprint}，两种策略的预警不能混在一起。请用 "
            "`budgetwatch run --rebuild` 按新策略从日志重算，或改回原来的 --profile"
            f"（state was computed with profile {stored.split(':')[0]!r}; this run uses another）"
        )

    def run(self, as_of: int | None = None, *, progress: Progress | None = None) -> RunSummary:
        store = self.store
        store.build_log_index()  # a bulk import killed before its end dropped it; read along it
        monitor = self.load()
        clock, seq = store.cursor()
        max_seq = store.max_seq()
        if as_of is None:
            latest = store.max_day(not_after=self.last_reachable_day())
            as_of = max(latest, clock) if latest is not None and clock is not None else (latest or clock)
            if as_of is None:
                return RunSummary(0, 0, 0, None, 0)
        if clock is None and ((first := store.min_day()) is None or first > as_of):
            # Nothing logged up to as_of: no clock to start. Set to today (`serve --live`
            # before the year so far was imported), it applied all that history at today's
            # date; events dated later wait for their day either way.
            return RunSummary(0, 0, 0, None, 0)
        if clock is not None and as_of < clock:
            raise ClockError(
                f"业务时钟已到 {iso(clock)}，不能退回到 {iso(as_of)}：业务时间只向前走。"
                f"请给出不早于 {iso(clock)} 的 --as-of，或用 `--rebuild` 从头重放日志"
                f"（the store's clock is already at {iso(clock)}; cannot run back to {iso(as_of)}）"
            )
        store.mark_run_until(as_of)
        monitor.after_close, monitor.after_close_projects = 0, []
        start_taken = since_commit = monitor.taken
        total_transitions = days = commits = 0
        batch = store.begin()
        if store.position() != self._cursor:
            # Another process committed (or rebuilt) between our read and our write lock:
            # start over from its state rather than overwrite it with ours (that lost its events).
            batch.rollback()
            return self.run(as_of, progress=progress)
        if store.meta("profile") != (fingerprint := self._fingerprint()):
            store.set_meta("profile", fingerprint)  # nothing computed yet (load checked): committed with it
        touched: set[str] = set()  # alerts with a transition in the open batch
        try:
            # The whole count for a progress bar; enough of it to decide on the indexes otherwise.
            stored = batch.stored_transitions
            pending = self._count_pending(clock, seq, as_of, max_seq,
                                          limit=None if progress else max(BULK_EVENTS, stored))
            if defers_indexes(pending, stored):
                batch.defer_indexes()
            records = store.pending(clock, seq, as_of, max_seq)
            with fewer_collections(), Checkpointer(store.db, store.path) as checkpointer:
                for day, closed in monitor.process(records, as_of):
                    days += 1
                    if closed:
                        touched.update(t.alert.alert_id for t in closed)
                        # A checkpoint day closes tens of thousands of alerts at once; its
                        # encoded rows (~1 KB each) go in slices so the peak stays flat, and
                        # its list is let go before the monitor builds the next day's.
                        for start in range(0, len(closed), TRANSITION_SLICE):
                            batch.add_transitions(
                                [encode_transition(t) for t in closed[start:start + TRANSITION_SLICE]]
                            )
                        self._store_resolved(batch, closed, touched)
                        del closed
                    if monitor.taken - since_commit >= self._commit_interval():
                        checkpointer.take_over()  # more commits follow: checkpoint off this thread
                        self._commit(batch, touched, day, max_seq)
                        checkpointer.poke()
                        touched = set()
                        total_transitions += batch.transitions
                        commits += 1
                        since_commit = monitor.taken
                        if progress:
                            progress(monitor.taken - start_taken, pending)
                        if self._commit_interval() > SETTLED_BATCHES:
                            checkpointer.settle()  # so the next batch starts the WAL over
                        batch = store.begin()
                final = monitor.clock if monitor.clock is not None else as_of
                batch.build_indexes()  # deferred by this run, or by one killed before its end
                self._commit(batch, touched, final, max_seq)  # leaving the block checkpoints it
        finally:
            batch.rollback()  # only if still open: an error left the batch uncommitted
        total_transitions += batch.transitions
        commits += 1
        if progress:
            progress(monitor.taken - start_taken, pending)
        return RunSummary(monitor.taken - start_taken, total_transitions, days, final, commits,
                          monitor.after_close, tuple(monitor.after_close_projects))

    def _store_resolved(self, batch: Batch, closed: list[Transition], touched: set[str]) -> None:
        """Write the alerts resolved today into the open batch and let them go.

        A resolved alert is needed again only by a disposition (read back from the
        store, AlertBook.archive; this connection sees the open batch) — a new episode
        starts afresh. Held until the commit instead, a province's batch kept ~100k of
        them (figures, Chinese message) alive at once: most of the replay's peak."""
        alerts = self.monitor.book.alerts
        done: list[Alert] = []
        for t in closed:
            if t.kind == RESOLVED:
                alert = alerts.get(t.alert.alert_id)
                if alert is not None and alert.status == RESOLVED:
                    done.append(alert)
        if not done:
            return
        batch.add_alerts(a.to_json() for a in done)
        for alert in done:
            alerts.pop(alert.alert_id, None)
            touched.discard(alert.alert_id)

    def _commit_interval(self) -> int:
        if self.commit_every is not None:
            return self.commit_every
        return max(DEFAULT_COMMIT_EVERY, SNAPSHOT_SPACING * len(self.monitor.ledger.projects))

    def uncovered_calendar_years(self, as_of: int) -> list[int]:
        """Years the log's deadlines (first event .. ``as_of``, and the days they reach)
        count in that the profile's holiday calendar does not list."""
        first = self.store.min_day()
        return self.profile.uncovered_calendar_years(min(first, as_of) if first is not None else as_of, as_of)

    def last_reachable_day(self) -> int | None:
        """The last business day a run with no --as-of may reach: today, when the engine
        has a wall clock (None: the latest event's date, whatever it is)."""
        return to_day(self.today()) if self.today is not None else None

    def waiting_after(self, day: int) -> int:
        """Events in the log dated after ``day`` (they wait for a later run)."""
        row = self.store.db.execute("SELECT COUNT(*) FROM events WHERE day > ?", (day,)).fetchone()
        return int(row[0])

    def _count_pending(
        self, clock: int | None, seq: int, as_of: int, max_seq: int, *, limit: int | None = None
    ) -> int:
        """Events the run will process; with ``limit``, counting stops there."""
        db = self.store.db
        floor = clock if clock is not None else -1
        cap = -1 if limit is None else limit  # LIMIT -1: no limit
        late = db.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE seq > ? AND seq <= ? AND day <= ? LIMIT ?)",
            (seq, max_seq, floor, cap),
        ).fetchone()[0]
        later = db.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE day > ? AND day <= ? AND seq <= ? LIMIT ?)",
            (floor, as_of, max_seq, cap),
        ).fetchone()[0]
        return int(late) + int(later)

    def _commit(self, batch: Batch, touched: set[str], clock: int, max_seq: int) -> None:
        monitor = self.monitor
        projects = monitor.ledger.projects
        changed = monitor.changed
        monitor.changed = set()
        refused: list[Any] = []
        emitted: list[Any] = []
        if monitor.desk is not None:  # the disposition loop's output, committed with the state that follows from it
            refused, emitted = monitor.desk.drain()
        if monitor.refused:
            refused = [*refused, *monitor.refused]
            monitor.refused = []
        names: list[DepartmentName] | None = monitor.ledger.department_names()
        if names == self._names:
            names = None  # unchanged: most commits rename nothing
        alerts = monitor.book.alerts
        touched = touched | {a for a in monitor.book.moved if a in alerts}
        monitor.book.moved.clear()
        # In key order: a province's rows fill tables far larger than the page cache, and
        # rows written in the order of their keys (which, on the first commit, becomes the
        # order of their rowids) touch each page once instead of once per row.
        batch.commit(
            projects=(projects[pid].to_dict() for pid in sorted(changed)),
            alerts=(alerts[a].to_json() for a in sorted(touched)),
            clock=clock,
            seq=max_seq,
            derived=emitted,
            derived_source=DERIVED_SOURCE,
            refused=[(r.event_id, r.reason, r.raw) for r in refused],
            department_names=names,
        )
        if names is not None:
            self._names = names
        self._cursor = (clock, max_seq, self._cursor[2] if self._cursor is not None else 0)
        monitor.book.forget_resolved()  # each is in the store as of this commit

    # -- reading ---------------------------------------------------------
    def status(self, fiscal_year: int | None = None) -> dict[str, Any]:
        monitor = self.load()
        if monitor.clock is None:
            raise ClockError(
                "尚未处理任何事件：请先运行 `budgetwatch run`（nothing has been processed yet）"
            )
        return status(monitor.ledger, monitor.clock, fiscal_year)

    def reductions(self, fiscal_year: int | None = None) -> list[Proposal]:
        """The proposals of ``fiscal_year`` (default: the clock's year); of a closed year,
        those its close left (Monitor.closed_year_reductions)."""
        monitor = self.load()
        if fiscal_year is not None and self.is_closed(fiscal_year):
            ended = self.store.ended_with_year(fiscal_year, LOW_EXECUTION)
            return monitor.closed_year_reductions(fiscal_year, ended)
        return monitor.reductions(fiscal_year=fiscal_year)

    def is_closed(self, fiscal_year: int) -> bool:
        """Whether the loaded clock has passed ``fiscal_year``'s close (profile.year_end)."""
        clock = self.monitor.clock
        return clock is not None and self.monitor.year_closed(fiscal_year, clock)

    def shown_year(self, fiscal_year: int | None = None) -> int | None:
        """The fiscal year a listing shows: the one asked for, else the clock's."""
        clock = self.monitor.clock
        return fiscal_year if fiscal_year is not None else (year_of(clock) if clock is not None else None)

    def rebuild(self) -> None:
        self.store.reset_derived(self._fingerprint())
        self.monitor = new_monitor(self.profile, self.dispositions)
        self._loaded = False
