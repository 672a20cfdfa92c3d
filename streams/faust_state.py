"""The partition state machines behind the Faust agents (DESIGN §7, distributed runtime).

No Faust here and no I/O: the agents in :mod:`streams.faust_app` hand each Kafka
message (partition, offset, key, raw value) to these classes and write back what
they return — table values, alert transitions, dead letters, department deltas.
Every rule and rate is the pure core's: a :class:`ProjectPartition` drives one
:class:`alerts.monitor.Monitor` per partition of ``budget-events`` exactly as the
embedded :class:`streams.engine.Engine` drives one for the SQLite log.

The clock is a stream. ``budget-events`` carries, next to the contract events,
clock ticks ``{"type": "clock_tick", "as_of": "YYYY-MM-DD"}`` (key ``__clock__``)
sent to *every* partition. Events are buffered (in the changelog-backed table)
until a tick; a tick is one ``Engine.run(as_of)`` on that partition: pending events
in business-date order, days closed up to ``as_of`` — checkpoints and due dates
fire with no event at all. Ticks live in the partition log next to the events, so
replaying a partition replays its clock: the same alerts, to the day.

Crash consistency under ``at_least_once``. Each partition keeps a meta value
(``__partition__:<n>``: committed epoch, clock, last applied offset) in the same
table — the same changelog partition — as its other values, written after them.
A changelog partition is a prefix of what was written, so after a crash:

* a message at or below the meta's offset is a redelivery and is skipped;
* each accepted event has its own small entry (``__event__:<project>:<event_id>``:
  the record, its arrival seq and the epoch it arrived in) and no meta of its own:
  the entry is both the buffer and the dedup memory, so a redelivered event whose
  entry was written is skipped (restore takes the last entry's offset as handled:
  messages are handled in offset order), and restore recounts the arrival seq from
  the entries. Ticks, rejections and the department agent's messages write the meta.
  Whether an entry is still pending follows from
  the committed meta alone: it was applied iff a committed tick came after its
  arrival (epoch) and reached its day (clock). Nothing rewrites entries at a tick;
* a tick writes the touched projects' values (state, alerts, department share)
  with ``epoch = committed + 1`` and keeps the pre-tick value as ``prev``; a value
  from an uncommitted epoch is read back as its ``prev``, so a redelivered tick
  recomputes from exactly the pre-tick state.

So an event costs one small changelog record when it arrives, not a rewrite of its
project's whole record (state, alerts, every id) as it did when all of it was one
value — that grew with the square of a project's events.

Dedup memory is bounded by time: per project, the ids of events whose business
date is within ``dedup_days`` of the partition clock (default 400, more than a
fiscal year, so re-sending a whole year is harmless); older entries get a tombstone
once a committed tick has applied them. An event older than that horizon cannot be
checked and goes to the dead-letter topic instead of risking a double count.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import groupby
from typing import Any

import orjson

from alerts.dispositions import DISPOSITION_EVENT_TYPES
from alerts.lifecycle import RESOLVED, Alert, AlertBook, Transition
from alerts.monitor import Monitor
from alerts.profile import Profile
from budget.calendar import iso, year_bounds, year_of
from budget.events import EventRejected, Record, parse_day, parse_event
from budget.fast_events import fast_record
from budget.ledger import (
    ProjectState,
    Totals,
    counts_in_rollup,
    names_anew,
    other_year_reason,
    registered_year,
)

CLOCK_KEY = "__clock__"
CLOCK_TYPE = "clock_tick"
META_PREFIX = "__partition__:"
EVENT_PREFIX = "__event__:"
DEPARTMENT_META_PREFIX = "__departments__:"

# budget-departments message kinds. A tick sends each department partition its deltas in
# `deltas` chunks (only when they would not fit one message) and a `tick_closed` marker
# with the rest. `delta` and `closed` (one message per delta, a bare marker) are what
# workers before that sent; they are still taken. A worker that predates the new kinds
# dead-letters them instead of closing rounds without their deltas.
DELTA, CLOSED, DELTAS, TICK_CLOSED = "delta", "closed", "deltas", "tick_closed"

# budget-alerts message kind for a firing alert that followed its subject to another
# department or name (a project re-registered elsewhere, 机构改革) with no transition: the
# alert as it stands now, for the notifier to store in place of its old row — nobody is
# notified and no history row is added, as the embedded store does (Engine._commit).
MOVED = "moved"

# Topic names (contract): here rather than in faust_app so that `publish` can name
# them without importing Faust.
EVENTS_TOPIC = "budget-events"
DEPARTMENTS_TOPIC = "budget-departments"
ALERTS_TOPIC = "budget-alerts"
DLQ_TOPIC = "budget-events-dlq"

Value = dict[str, Any]


def meta_key(partition: int) -> str:
    return f"{META_PREFIX}{partition}"


def event_key(project_id: str, event_id: str) -> str:
    return f"{EVENT_PREFIX}{project_id}:{event_id}"


def is_meta_key(key: str) -> bool:
    """The partition records whose write commits a message (project or department side)."""
    return key.startswith((META_PREFIX, DEPARTMENT_META_PREFIX))


def department_meta_key(partition: int) -> str:
    return f"{DEPARTMENT_META_PREFIX}{partition}"


def _delta_entry(deltas: dict[tuple[str, int], list[Any]], dept: str, day: int) -> list[Any]:
    """A tick's delta of department ``dept`` (department_key) on ``day``, started at zero:
    [budget, paid, projects, fiscal_year, department_id, name, late, name's version,
    after-year budget, after-year paid]."""
    entry = deltas.get((dept, day))
    if entry is None:
        year, _, department_id = dept.partition(":")
        entry = deltas[(dept, day)] = [0, 0, 0, int(year), department_id, "", False, "", 0, 0]
    return entry


def _name_entry(entry: list[Any], name: str | None, version: str | None) -> None:
    """Let the registration versioned ``version`` name the entry's department, if latest."""
    if names_anew(name, version, entry[7]):
        entry[5], entry[7] = name, version or ""


def department_key(fiscal_year: int, department_id: str) -> str:
    return f"{fiscal_year}:{department_id}"


def tick_value(as_of: dt.date) -> bytes:
    return orjson.dumps({"type": CLOCK_TYPE, "as_of": as_of.isoformat()})


def _text(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    return raw


@dataclass(slots=True)
class Output:
    """What one message produced; the agent writes/sends it in this order."""

    writes: list[tuple[str, Value | None]] = field(default_factory=list)  # table key -> value (None: delete)
    transitions: list[Transition] = field(default_factory=list)
    dead_letters: list[Value] = field(default_factory=list)
    departments: list[tuple[str, Value]] = field(default_factory=list)  # dept key -> delta
    markers: list[Value] = field(default_factory=list)  # broadcast to every department partition
    outcome: str = "applied"  # applied | buffered | duplicate | redelivered | rejected | tick


DEAD_LETTER_RAW_CHARS = 64 * 1024
DIGEST_MASK = 0xFFFFFFFF


def _digest(record: Record) -> int:
    """crc32 of the event as folded: equal for a redelivery, different for other content."""
    return zlib.crc32(orjson.dumps(list(record)))


def seen_day(value: int) -> int:
    return value >> 32


def dead_letter(
    *,
    reason: str,
    raw: bytes | str | None,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | str | None,
) -> Value:
    text = _text(raw)
    if len(text) > DEAD_LETTER_RAW_CHARS:
        # A dead letter must itself fit in a Kafka message (~1 MB): a huge or binary value
        # (each bad byte becomes an escaped U+FFFD) would be refused and block the agent.
        reason = f"{reason} (raw value cut to its first {DEAD_LETTER_RAW_CHARS} of {len(text)} characters)"
        text = text[:DEAD_LETTER_RAW_CHARS]
    return {
        "reason": reason,
        "raw": text,
        "key": _text(key) if key is not None else None,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "source": f"{topic}:{partition}:{offset}",
    }


def _versioned(
    epoch: int, committed_epoch: int, current: Value | None, previous: Value | None
) -> Value:
    """Wrap ``current`` so a reader can fall back to the last committed value."""
    return {"epoch": epoch, "cur": current, "prev": previous if epoch > committed_epoch else None}


def _committed(value: Mapping[str, Any], committed_epoch: int) -> Value | None:
    if int(value.get("epoch", 0)) > committed_epoch:
        prev = value.get("prev")
        return dict(prev) if prev is not None else None
    cur = value.get("cur")
    return dict(cur) if cur is not None else None


# ---------------------------------------------------------------------------
# budget-events partitions: projects
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Meta:
    epoch: int = 0
    clock: int | None = None
    offset: int = -1
    seq: int = 0

    def to_value(self, partition: int) -> Value:
        return {
            "p": partition,
            "epoch": self.epoch,
            "clock": self.clock,
            "offset": self.offset,
            "seq": self.seq,
        }


class _VersionedPartition:
    """A partition whose table values are versioned by tick epoch (see ``_versioned``)."""

    partition: int
    topic: str
    meta: Any  # _Meta or _DepartmentMeta: both carry epoch and clock
    committed: dict[str, Value | None]

    def _dead_letter(self, reason: str, raw: bytes | str | None, offset: int, key: bytes | str | None) -> Value:
        return dead_letter(
            reason=reason, raw=raw, topic=self.topic, partition=self.partition, offset=offset, key=key
        )

    def _body(self, key: str) -> Value:
        raise NotImplementedError

    def _value(self, key: str, epoch: int, body: Value | None = None) -> Value:
        if body is None:
            body = self._body(key)
        value = _versioned(epoch, self.meta.epoch, body, self.committed.get(key))
        value["p"] = self.partition
        if epoch == self.meta.epoch:
            self.committed[key] = body
        return value

    def _write_next_epoch(self, keys: Iterable[str], out: Output) -> dict[str, Value]:
        """Write each key's value for the next epoch; returns their bodies, which become
        the committed values once the meta of that epoch is written."""
        epoch = self.meta.epoch + 1
        bodies: dict[str, Value] = {}
        for key in keys:
            body = bodies[key] = self._body(key)
            out.writes.append((key, self._value(key, epoch, body)))
        return bodies

    @property
    def clock(self) -> int | None:
        clock: int | None = self.meta.clock
        return clock


class ProjectPartition(_VersionedPartition):
    """One partition of ``budget-events``: its projects, alerts, buffer and clock."""

    def __init__(
        self,
        partition: int,
        profile: Profile,
        *,
        topic: str = "budget-events",
        dedup_days: int = 400,
    ) -> None:
        self.partition = partition
        self.topic = topic
        self.profile = profile
        self.dedup_days = dedup_days
        self.monitor = Monitor(profile)
        self.monitor.ledger.offered = []  # department names go out with the tick's deltas
        self.meta = _Meta()
        # project -> event_id -> day << 32 | crc32 of the event: one int per id, the day
        # for the dedup horizon and a digest to tell a redelivery from an id reused for
        # other content (seen_day() reads the day)
        self.seen: dict[str, dict[str, int]] = {}
        # project -> the earliest day in its seen ids: a tick looks through a project's
        # ids for ones past the dedup horizon only when there are some.
        self.oldest_seen: dict[str, int] = {}
        self._seen_count = 0  # ids in ``seen``, kept as they come and go (a gauge after each tick)
        self.latest_day: int | None = None  # the latest business day accepted (lag = it - clock)
        self.pending: dict[str, list[tuple[int, Record]]] = {}  # project -> [(seq, record)]
        # project -> (dept key, budget, paid, the parts of both dated after the fiscal year)
        self.contributed: dict[str, tuple[str, int, int, int, int]] = {}
        self.committed: dict[str, Value | None] = {}  # project -> value as of the committed epoch

    # -- restoring -------------------------------------------------------
    @classmethod
    def restore(
        cls,
        partition: int,
        profile: Profile,
        items: Iterable[tuple[str, Mapping[str, Any]]],
        *,
        topic: str = "budget-events",
        dedup_days: int = 400,
    ) -> ProjectPartition:
        """Rebuild from table items (any partitions mixed in are ignored)."""
        self = cls(partition, profile, topic=topic, dedup_days=dedup_days)
        values: list[tuple[str, Mapping[str, Any]]] = []
        entries: list[Mapping[str, Any]] = []
        for key, value in items:
            if not isinstance(value, Mapping) or value.get("p") != partition:
                continue
            if key == meta_key(partition):
                self.meta = _Meta(
                    int(value["epoch"]), value.get("clock"), int(value["offset"]), int(value["seq"])
                )
            elif key.startswith(EVENT_PREFIX):
                entries.append(value)
            elif not key.startswith(META_PREFIX):
                values.append((key, value))
        states: list[ProjectState] = []
        alerts: list[Alert] = []
        for project_id, value in values:
            body = _committed(value, self.meta.epoch)
            self.committed[project_id] = body
            if body is None:
                continue
            if body.get("state") is not None:
                states.append(ProjectState.from_dict(body["state"]))
            for item in body.get("alerts", ()):
                alert = Alert.from_json(item)
                if alert.status != RESOLVED:  # records written before they kept open alerts only
                    alerts.append(alert)
            if body.get("contributed"):
                # (department, budget, paid, the parts of both dated after the year): the
                # last two are absent from records of earlier releases
                dept, budget, paid, *after = body["contributed"]
                after_budget, after_paid = (int(after[0]), int(after[1])) if after else (0, 0)
                self.contributed[project_id] = (str(dept), int(budget), int(paid), after_budget, after_paid)
        clock = self.meta.clock
        for entry in sorted(entries, key=lambda e: int(e["seq"])):
            record = Record(*entry["record"])
            self._remember(record)
            applied = int(entry["epoch"]) < self.meta.epoch and clock is not None and record.day <= clock
            if not applied:
                self.pending.setdefault(record.project_id, []).append((int(entry["seq"]), record))
            self.meta.seq = max(self.meta.seq, int(entry["seq"]) + 1)
            # Messages are handled in offset order, so every offset up to the last entry's
            # was handled before the crash: redelivered, not sent twice by a producer.
            self.meta.offset = max(self.meta.offset, int(entry.get("offset", -1)))
        self.monitor.restore(states, alerts, self.meta.clock)
        return self

    # -- one message -----------------------------------------------------
    def handle(self, offset: int, key: bytes | str | None, raw: bytes | str | None) -> Output:
        """Process one message of this partition (an event or a clock tick)."""
        if offset <= self.meta.offset:
            return Output(outcome="redelivered")
        key_text = _text(key) if key is not None else None
        where = f"{self.topic}:{self.partition}:{offset}"
        if key_text == CLOCK_KEY:
            try:
                as_of = _parse_tick(raw)
            except ValueError as err:
                return self._reject(offset, key, raw, f"clock tick at {where}: {err}")
            return self.tick(offset, as_of)
        if raw is None:
            return self._reject(
                offset, key, raw, "empty message (a tombstone?); expected one JSON event"
            )
        try:
            # The common shapes without pydantic (an identical Record), else the models.
            record = fast_record(raw) or parse_event(raw).to_record()
        except EventRejected as err:
            return self._reject(offset, key, raw, err.reason)
        if key_text != record.project_id:
            return self._reject(
                offset,
                key,
                raw,
                f"message key {key_text!r} is not the event's project_id {record.project_id!r}: "
                "publish with key = project_id so a project's events stay on one partition "
                "(`budgetwatch publish` does)",
            )
        return self.receive(offset, record, key, raw)

    def _reject(
        self, offset: int, key: bytes | str | None, raw: bytes | str | None, reason: str
    ) -> Output:
        self.meta.offset = offset
        out = Output(outcome="rejected")
        out.dead_letters.append(self._dead_letter(reason, raw, offset, key))
        out.writes.append((meta_key(self.partition), self.meta.to_value(self.partition)))
        return out

    def receive(
        self,
        offset: int,
        record: Record,
        key: bytes | str | None = None,
        raw: bytes | str | None = None,
    ) -> Output:
        """Buffer a valid event until the next tick, unless it is a duplicate."""
        if record.type in DISPOSITION_EVENT_TYPES:
            return self._reject(
                offset,
                key,
                raw,
                f"{record.type} events are handled by the embedded runtime (budgetwatch serve / "
                "dispose), which runs the disposition loop; the Kafka workers have none",
            )
        clock = self.meta.clock
        if clock is not None and record.day < clock - self.dedup_days:
            return self._reject(
                offset,
                key,
                raw,
                f"event {record.event_id!r} is dated {iso(record.day)}, "
                f"more than {self.dedup_days} days before the partition clock {iso(clock)}: "
                "too old to check for duplicates; "
                "correct it with a budget_adjusted event dated within the fiscal year",
            )
        project_id = record.project_id
        seen = self.seen.setdefault(project_id, {})
        self.meta.offset = offset
        # No meta record here: the event's own entry commits it (a redelivery after a
        # crash finds the entry and is a duplicate; restore recounts seq from entries),
        # and the next tick's meta covers its offset. A meta per event was a third of
        # the changelog traffic.
        known = seen.get(record.event_id)
        if known is not None:
            if known & DIGEST_MASK != _digest(record):
                return self._reject(
                    offset, key, raw,
                    f"event_id {record.event_id!r} was already received with other content: "
                    "an event_id names one event; give this one its own id",
                )
            return Output(outcome="duplicate")
        if record.type == "project_registered":
            owner = self._registered_year(project_id)
            year = registered_year(record)
            if owner is not None and owner != year:  # as ingest does in the embedded store
                reason = other_year_reason(project_id, owner, year)
                return self._reject(offset, key, raw, f"project_registered: {reason}")
        self._remember(record)
        self.pending.setdefault(project_id, []).append((self.meta.seq, record))
        out = Output(outcome="buffered")
        out.writes.append((
            event_key(project_id, record.event_id),
            {
                "p": self.partition, "epoch": self.meta.epoch, "seq": self.meta.seq, "offset": offset,
                "record": list(record),
            },
        ))
        self.meta.seq += 1
        return out

    def _registered_year(self, project_id: str) -> int | None:
        """The fiscal year the code was first received for: folded, or waiting for a tick."""
        state = self.monitor.ledger.projects.get(project_id)
        if state is not None and state.fiscal_year is not None:
            return state.fiscal_year
        for _, waiting in self.pending.get(project_id, ()):
            if waiting.type == "project_registered":
                return registered_year(waiting)
        return None

    def _remember(self, record: Record) -> None:
        """Add an accepted event's id to the dedup memory (and its counts)."""
        project_id, day = record.project_id, record.day
        ids = self.seen.setdefault(project_id, {})
        if record.event_id not in ids:
            self._seen_count += 1
        ids[record.event_id] = day << 32 | _digest(record)
        if self.latest_day is None or day > self.latest_day:
            self.latest_day = day
        oldest = self.oldest_seen.get(project_id)
        if oldest is None or day < oldest:
            self.oldest_seen[project_id] = day

    def tick(self, offset: int, as_of: int) -> Output:
        """Close days up to ``as_of`` (never backwards): ``Engine.run(as_of)`` on this partition."""
        monitor = self.monitor
        clock = self.meta.clock
        until = as_of if clock is None else max(as_of, clock)
        epoch = self.meta.epoch + 1
        out = Output(outcome="tick")
        due: list[tuple[int, Record]] = []
        touched: set[str] = set()
        for project_id, items in list(self.pending.items()):  # only projects with events waiting
            keep = [item for item in items if item[1].day > until]
            if len(keep) != len(items):
                due.extend(item for item in items if item[1].day <= until)
                touched.add(project_id)
                if keep:
                    self.pending[project_id] = keep
                else:
                    del self.pending[project_id]
        due.sort(key=lambda item: (item[1].day, item[0]))
        deltas: dict[tuple[str, int], list[Any]] = {}
        resolved: list[str] = []  # alert ids
        # A re-registration that changes no sum may still rename the department (机构改革):
        # its project sends a delta anyway, carrying the name.
        registered = {record.project_id for _, record in due if record.type == "project_registered"}
        monitor.changed = set()
        for day, transitions in monitor.process((record for _, record in due), until):
            # This monitor sees only its partition's share of a department: department
            # alerts are judged by the department agent from the deltas sent below.
            out.transitions.extend(t for t in transitions if t.alert.subject_type == "project")
            moved = _moved(monitor.book, day, transitions, "project")
            out.transitions.extend(moved)
            touched.update(t.alert.subject_id for t in moved)
            changed = monitor.changed
            if changed:
                monitor.changed = set()
                touched |= changed
                self._contribute(changed, day, deltas, monitor.judged_at_year_end, registered)
            offered = monitor.ledger.offered
            if offered:  # names of superseded registrations, for the department partitions
                monitor.ledger.offered = []
                for fiscal_year, department_id, name, named in offered:
                    _name_entry(_delta_entry(deltas, department_key(fiscal_year, department_id), day), name, named)
            for t in transitions:
                if t.alert.subject_type == "project":
                    touched.add(t.alert.subject_id)
                    if t.kind == RESOLVED:
                        resolved.append(t.alert.alert_id)
        if monitor.refused:  # records the ledger cannot fold in context: dead letters
            # (their offsets are in the changelog entries, not here: the event id says which)
            projects = {record.event_id: record.project_id for _, record in due}
            for refusal in monitor.refused:
                out.dead_letters.append(self._dead_letter(
                    f"{refusal.reason} (event_id {refusal.event_id})", refusal.raw, -1, projects.get(refusal.event_id)
                ))
            monitor.refused = []
        self._forget_resolved(resolved)
        bodies = self._write_next_epoch(sorted(touched), out)
        self.meta.epoch = epoch
        self.meta.clock = monitor.clock if monitor.clock is not None else until
        self.meta.offset = offset
        out.writes.append((meta_key(self.partition), self.meta.to_value(self.partition)))
        # Forget ids past the dedup horizon, after the meta: an entry is deleted only once
        # the tick is committed (a redone tick must find its events again), and from then
        # on the meta's clock refuses such old events before any id is looked up.
        cutoff = self.meta.clock - self.dedup_days
        for project_id in sorted(touched):
            oldest = self.oldest_seen.get(project_id)
            if oldest is None or oldest >= cutoff:
                continue
            seen = self.seen[project_id]
            for eid in sorted(eid for eid, value in seen.items() if seen_day(value) < cutoff):
                del seen[eid]
                self._seen_count -= 1
                out.writes.append((event_key(project_id, eid), None))
            if seen:
                self.oldest_seen[project_id] = seen_day(min(seen.values()))
            else:
                del self.oldest_seen[project_id]
        # The tick is committed once the meta is written; from now on the values
        # just written are the committed ones.
        self.committed.update(bodies)
        for (dept, day), (budget, paid, projects, fiscal_year, department_id, name, late, named,
                          after_budget, after_paid) in sorted(deltas.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            delta = {
                "kind": "delta",
                "source": self.partition,
                "epoch": epoch,
                "day": day,
                "fiscal_year": fiscal_year,
                "department_id": department_id,
                "department_name": name,
                "department_name_version": named,
                "budget": budget,
                "paid": paid,
                "projects": projects,
            }
            if after_budget or after_paid:  # what of them is dated after the year
                delta["after_budget"], delta["after_paid"] = after_budget, after_paid
            if late:  # a late event of a closed year: the department is judged as of Dec 31
                delta["late"] = True
            out.departments.append((dept, delta))
        out.markers.append(
            {"kind": "closed", "source": self.partition, "epoch": epoch, "day": self.meta.clock}
        )
        return out

    def _forget_resolved(self, resolved: Iterable[str]) -> None:
        """Let the alerts resolved by a tick leave memory (a project's value holds its
        firing alerts only, see ``_body``).

        Nothing here reads a resolved alert again (there is no disposition loop in this
        runtime, and a new episode sets every field of its alert afresh), yet each was
        kept in its project's value: a year's resolved alerts, most of them, were
        rewritten in full with every tick that touched the project."""
        book = self.monitor.book.alerts
        for alert_id in resolved:
            alert = book.get(alert_id)
            if alert is not None and alert.status == RESOLVED:  # not fired again later in the tick
                del book[alert_id]

    def _contribute(
        self,
        changed: Iterable[str],
        day: int,
        deltas: dict[tuple[str, int], list[Any]],
        late: set[str],
        registered: set[str],
    ) -> None:
        projects = self.monitor.ledger.projects
        for project_id in changed:
            state = projects[project_id]
            before = self.contributed.get(project_id)
            after: tuple[str, int, int, int, int] | None = None
            if counts_in_rollup(state):
                assert state.fiscal_year is not None and state.department_id is not None
                after = (
                    department_key(state.fiscal_year, state.department_id),
                    state.budget,
                    state.paid,
                    state.after_adjusted,
                    state.after_paid,
                )
            if before == after and (after is None or project_id not in registered):
                continue
            if before is not None:
                entry = _delta_entry(deltas, before[0], day)
                entry[0] -= before[1]
                entry[1] -= before[2]
                entry[2] -= 1
                entry[8] -= before[3]
                entry[9] -= before[4]
                entry[6] = entry[6] or project_id in late
            if after is not None:
                entry = _delta_entry(deltas, after[0], day)
                entry[0] += after[1]
                entry[1] += after[2]
                entry[2] += 1
                entry[8] += after[3]
                entry[9] += after[4]
                _name_entry(entry, state.department_name, state.registered_version)
                entry[6] = entry[6] or project_id in late
                self.contributed[project_id] = after
            else:
                self.contributed.pop(project_id, None)

    def _body(self, project_id: str) -> Value:
        state = self.monitor.ledger.projects.get(project_id)
        firing = (
            self.monitor.book.firing_rules("project", project_id, state.fiscal_year or 0).values()
            if state is not None else ()
        )
        contributed = self.contributed.get(project_id)
        return {
            "state": state.to_dict() if state is not None else None,
            "alerts": [a.to_json() for a in sorted(firing, key=lambda a: a.alert_id)],
            "contributed": list(contributed) if contributed is not None else None,
        }

    # -- reading ---------------------------------------------------------

    def pending_count(self) -> int:
        return sum(len(items) for items in self.pending.values())

    def dedup_memory(self) -> int:
        return self._seen_count


def _parse_tick(raw: bytes | str | None) -> int:
    if raw is None:
        raise ValueError('empty clock tick; expected {"type": "clock_tick", "as_of": "YYYY-MM-DD"}')
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise ValueError(f"not valid JSON: {err}") from None
    if not isinstance(data, dict) or data.get("type") != CLOCK_TYPE or "as_of" not in data:
        raise ValueError('expected {"type": "clock_tick", "as_of": "YYYY-MM-DD"}')
    return parse_day(data["as_of"]).toordinal()


# ---------------------------------------------------------------------------
# budget-departments partitions: department roll-ups and their alerts
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class _DepartmentMeta:
    epoch: int = 0
    clock: int | None = None
    offset: int = -1
    reached: dict[int, int] = field(default_factory=dict)  # source -> the latest day it closed
    heard: set[int] = field(default_factory=set)  # sources with a marker since the last round
    last_epoch: dict[int, int] = field(default_factory=dict)  # source -> last epoch seen (dedup)
    # [department, source, epoch, delta]: the deltas taken since their departments'
    # values were last written (see DepartmentPartition.handle); absent from the metas of
    # earlier releases, which wrote each department's value as its deltas came.
    journal: list[list[Any]] = field(default_factory=list)

    def to_value(self, partition: int) -> Value:
        value: Value = {
            "p": partition,
            "epoch": self.epoch,
            "clock": self.clock,
            "offset": self.offset,
            "reached": {str(k): v for k, v in self.reached.items()},
            "heard": sorted(self.heard),
            "last_epoch": {str(k): v for k, v in self.last_epoch.items()},
        }
        if self.journal:
            value["journal"] = self.journal
        return value

    @classmethod
    def from_value(cls, value: Mapping[str, Any], sources: int) -> _DepartmentMeta:
        meta = cls(
            int(value["epoch"]),
            value.get("clock"),
            int(value["offset"]),
            {int(k): int(v) for k, v in value.get("reached", {}).items()},
            {int(s) for s in value.get("heard", ())},
            {int(k): int(v) for k, v in value.get("last_epoch", {}).items()},
            [list(entry) for entry in value.get("journal", ())],
        )
        if "reached" not in value:  # a meta of an earlier release: queues of unmatched markers
            meta.reached, meta.heard = _from_markers(value.get("markers", {}), meta.clock, sources)
        return meta


def _from_markers(
    markers: Mapping[str, Iterable[Iterable[int]]], clock: int | None, sources: int
) -> tuple[dict[int, int], set[int]]:
    """(reached, heard) from the queues of unmatched markers earlier releases kept. A
    source reached its latest queued day, else the clock (the markers that closed a round
    were at least that far): a lower bound, which the source's next marker lifts."""
    reached: dict[int, int] = {}
    heard: set[int] = set()
    for source in range(sources):
        days = [int(day) for _, day in markers.get(str(source), ())]
        if days:
            heard.add(source)
        if clock is not None:
            days.append(int(clock))
        if days:
            reached[source] = max(days)
    return reached, heard


# Deltas a department partition keeps in its meta's journal before it writes their
# departments' values anyway (rounds held up by a partition that does not tick): a bound on
# the meta, rewritten with every message. A round writes them all: ~17 on the bench year.
JOURNAL_MAX = 256

# A department's deltas of one day: [budget, paid, projects, late, after-year budget,
# after-year paid, department name, its version] (earlier releases kept the first 3-6).
Bucket = list[Any]


class DepartmentPartition(_VersionedPartition):
    """One partition of ``budget-departments``: department totals (sums of budget and
    paid, never means of rates) and ``department_low_execution``.

    After each tick a project partition sends a ``tick_closed`` marker to every
    department partition, carrying its per-(department, day) deltas for the departments
    held there (``deltas`` chunks ahead of it when they are many; the ``delta`` and
    ``closed`` messages of earlier workers are still taken). Each source's marker says
    how far it has closed its days; a *round* here closes up to the latest day every
    source has reached: the deltas dated up to it are applied in day order and the
    days closed — the same department evaluations, on the same days, as the embedded
    engine's monitor. Rounds follow days, not counts of ticks: a tick one partition got
    twice (a publish run again) or never (its send failed) holds nothing back.
    """

    def __init__(
        self, partition: int, profile: Profile, sources: int, *, topic: str = "budget-departments"
    ) -> None:
        self.partition = partition
        self.sources = sources
        self.topic = topic
        self.judge = Monitor(profile)  # its department evaluation and alert book, nothing else
        self.meta = _DepartmentMeta()
        self.totals: dict[str, Totals] = {}
        self.pending: dict[
            str, dict[int, Bucket]
        ] = {}  # dept key -> day -> Bucket
        self.received: dict[
            str, dict[int, tuple[int, set[int]]]
        ] = {}  # dept -> source -> (epoch, days)
        # source -> epoch of deltas taken ahead of that tick's marker (its chunks): no round
        # closes until the marker, so a tick's deltas are never applied in part.
        self.unmarked: dict[int, int] = {}
        self.committed: dict[str, Value | None] = {}
        # Departments whose table value lacks deltas of the meta's journal: written at the
        # next round (or when the journal grows past JOURNAL_MAX).
        self.unwritten: set[str] = set()

    @classmethod
    def restore(
        cls,
        partition: int,
        profile: Profile,
        sources: int,
        items: Iterable[tuple[str, Mapping[str, Any]]],
        *,
        topic: str = "budget-departments",
    ) -> DepartmentPartition:
        self = cls(partition, profile, sources, topic=topic)
        values: list[tuple[str, Mapping[str, Any]]] = []
        for key, value in items:
            if not isinstance(value, Mapping) or value.get("p") != partition:
                continue
            if key == department_meta_key(partition):
                self.meta = _DepartmentMeta.from_value(value, sources)
            elif not key.startswith(DEPARTMENT_META_PREFIX):
                values.append((key, value))
        alerts: list[Alert] = []
        for key, value in values:
            body = _committed(value, self.meta.epoch)
            self.committed[key] = body
            if body is None:
                continue
            t = body["totals"]
            self._adopt(key, Totals(
                int(t["fiscal_year"]),
                t["department_id"],
                t["department_name"],
                int(t["budget"]),
                int(t["paid"]),
                int(t["projects"]),
                t.get("department_name_version"),  # absent in records of earlier releases
                int(t.get("after_budget", 0)),
                int(t.get("after_paid", 0)),
                bool(t.get("dated", False)),  # earlier releases did not keep the parts after the year
            ))
            self.pending[key] = {int(d): list(v) for d, v in body.get("pending", {}).items()}
            self.received[key] = {
                int(src): (int(ep), {int(d) for d in days})
                for src, (ep, days) in body.get("received", {}).items()
            }
            alerts.extend(Alert.from_json(a) for a in body.get("alerts", ()))
        # The deltas taken since their departments' values were written: taken again (a
        # delta a value already holds is known by its `received` and skipped), the marker
        # that came with them being counted in the meta already.
        for dept, source, epoch, delta in self.meta.journal:
            self._take_delta(str(dept), int(source), int(epoch), delta, replay=True)
            self.unwritten.add(str(dept))
        for by_source in self.received.values():
            for source, (epoch, _) in by_source.items():
                self._note_unmarked(source, epoch)
        self.judge.restore((), alerts, self.meta.clock)
        return self

    def handle(self, offset: int, key: bytes | str | None, message: Mapping[str, Any]) -> Output:
        if offset <= self.meta.offset:
            return Output(outcome="redelivered")
        self.meta.offset = offset
        kind = message.get("kind")
        source = int(message["source"])
        epoch = int(message["epoch"])
        out = Output(outcome="applied")
        if kind == DELTA:  # one department's delta (what workers before batching sent)
            dept = _text(key)
            if self._take_delta(dept, source, epoch, message):
                out.writes.append((dept, self._value(dept, self.meta.epoch)))
            else:
                out.outcome = "duplicate"
        elif kind in (CLOSED, DELTAS, TICK_CLOSED):
            # A tick's deltas for this partition's departments come in one message with
            # its marker (tick_closed), after as many `deltas` chunks as kept each message
            # small; a bad one is dead-lettered alone, the rest and the marker still count.
            # Taken deltas go into the meta's journal, written with this message's meta,
            # not into their departments' values: those are written once per round (a
            # department's value was written by every source's marker, then by the round:
            # 25k of the 42k department records on the bench year).
            touched: set[str] = set()
            journal = self.meta.journal
            for item in message.get("deltas", ()):
                try:
                    dept, delta = item
                    if self._take_delta(str(dept), source, epoch, delta):
                        touched.add(str(dept))
                        journal.append([str(dept), source, epoch, delta])
                except (KeyError, TypeError, ValueError) as err:
                    out.dead_letters.append(self._dead_letter(
                        f"a department delta of source {source} epoch {epoch} cannot be read "
                        f"({type(err).__name__}: {err}); the other deltas were taken — "
                        "department messages come from the budget-events agent only",
                        orjson.dumps(item, default=str), offset, key,
                    ))
            self.unwritten |= touched
            if kind == DELTAS:
                if message.get("deltas") and not touched:
                    out.outcome = "duplicate"
            elif epoch <= self.meta.last_epoch.get(source, 0):
                out.outcome = "duplicate"
            else:
                self.meta.last_epoch[source] = epoch
                if self.unmarked.get(source, 0) <= epoch:
                    self.unmarked.pop(source, None)
                reached = self.meta.reached
                reached[source] = max(int(message["day"]), reached.get(source, int(message["day"])))
                self.meta.heard.add(source)
                self._rounds(out)
        else:
            out.outcome = "rejected"
            out.dead_letters.append(
                self._dead_letter(
                    f"unknown department message kind {kind!r}; expected "
                    f"{DELTA}, {DELTAS}, {TICK_CLOSED} or {CLOSED}",
                    orjson.dumps(dict(message)), offset, key,
                )
            )
        if len(self.meta.journal) > JOURNAL_MAX:  # rounds held up: bound the meta's size
            for dept in sorted(self.unwritten):
                out.writes.append((dept, self._value(dept, self.meta.epoch)))
            self.unwritten.clear()
            self.meta.journal = []
        out.writes.append((department_meta_key(self.partition), self.meta.to_value(self.partition)))
        return out

    def _take_delta(
        self, dept: str, source: int, epoch: int, delta: Mapping[str, Any], *, replay: bool = False
    ) -> bool:
        """Add one (department, day) delta of a source's tick to the pending days; False
        if it was taken before. A tick redone after a crash re-sends the same deltas:
        each is unique by (source, epoch, department, day), remembered with the
        department's totals (so in the same changelog write as the sums it changed) or in
        the meta's journal until that is written. ``replay``: a journal entry at restore,
        whose source's marker may be counted already."""
        # Every field is read before anything changes: a bad delta changes nothing.
        day, fiscal_year, department_id = int(delta["day"]), int(delta["fiscal_year"]), str(delta["department_id"])
        sums = (int(delta["budget"]), int(delta["paid"]), int(delta["projects"]))
        after_sums = (int(delta.get("after_budget", 0)), int(delta.get("after_paid", 0)))
        late = 1 if delta.get("late") else 0
        name = delta.get("department_name")
        received = self.received.setdefault(dept, {})
        last = received.get(source)
        if (not replay and epoch <= self.meta.last_epoch.get(source, 0)) or (
            last is not None and (last[0] > epoch or (last[0] == epoch and day in last[1]))
        ):
            return False
        if last is None or last[0] < epoch:
            received[source] = (epoch, {day})
        else:
            last[1].add(day)
        self._note_unmarked(source, epoch)
        if dept not in self.totals:
            self._adopt(dept, Totals(fiscal_year, department_id))
        # [budget, paid, projects, late, after-year budget, after-year paid, name, its version]
        bucket = self.pending.setdefault(dept, {}).setdefault(day, [0, 0, 0, 0, 0, 0, "", ""])
        if len(bucket) < 8:  # kept by an earlier release: three, four or six fields
            bucket[len(bucket):] = [0, 0, 0, 0, 0, 0, "", ""][len(bucket):]
        bucket[0] += sums[0]
        bucket[1] += sums[1]
        bucket[2] += sums[2]
        if late:
            bucket[3] = 1
        bucket[4] += after_sums[0]
        bucket[5] += after_sums[1]
        # The name is taken on the delta's day, with its sums: taken on receipt, a tick
        # covering a rename dated 07-01 named the department's 06-30 alert by it.
        version = str(delta.get("department_name_version") or "")
        if name and names_anew(str(name), version, str(bucket[7])):
            bucket[6], bucket[7] = str(name), version
        return True

    def _adopt(self, dept: str, totals: Totals) -> Totals:
        """Hold ``totals`` for ``dept``, where the judge's close_year finds them too."""
        self.totals[dept] = totals
        self.judge.ledger.departments[(totals.fiscal_year, totals.department_id)] = totals
        return totals

    def _note_unmarked(self, source: int, epoch: int) -> None:
        if epoch > self.meta.last_epoch.get(source, 0):
            self.unmarked[source] = max(epoch, self.unmarked.get(source, epoch))

    def _rounds(self, out: Output) -> None:
        """Close up to the latest day every source has reached, once it is later than the
        clock — or, when it is not, once every source has sent a marker since the last
        round: ticks repeated on every partition bring late deltas dated at the clock, and
        the embedded engine applies a run's late events together, not source by source."""
        meta, sources = self.meta, range(self.sources)
        if self.unmarked or any(s not in meta.reached for s in sources):
            return
        until = min(meta.reached[s] for s in sources)
        if meta.clock is None or until > meta.clock or meta.heard.issuperset(sources):
            meta.heard.clear()
            self._close_round(until, out)

    def _close_round(self, until: int, out: Output) -> None:
        epoch = self.meta.epoch + 1
        due: list[tuple[int, str, Bucket]] = []
        for dept, days in self.pending.items():
            for day in [d for d in days if d <= until]:
                due.append((day, dept, days.pop(day)))
        due.sort()
        touched = {dept for _, dept, _ in due} | self.unwritten
        for _day, transitions in self._process(due, until):
            out.transitions.extend(transitions)
            touched.update(_department_key_of(t.alert) for t in transitions)
        bodies = self._write_next_epoch(sorted(d for d in touched if d in self.totals), out)
        self.meta.epoch = epoch
        self.committed.update(bodies)
        # Every journaled delta is in a value of this round now, committed by the meta
        # written after them: the journal starts again.
        self.unwritten.clear()
        self.meta.journal = []

    def _process(
        self, due: list[tuple[int, str, Bucket]], until: int
    ) -> Iterator[tuple[int, list[Transition]]]:
        """Monitor.process for department deltas: same grouping, same late-day rule."""
        if self.meta.clock is None:
            if not due:
                self.meta.clock = until
                return
            self.meta.clock = min(due[0][0], until + 1) - 1
        start = self.meta.clock
        for day, group in groupby(due, key=lambda item: max(item[0], start)):
            yield from self._close_empty_days_before(day)
            dirty: set[str] = set()
            late: set[str] = set()
            for _, dept, bucket in group:
                totals = self.totals[dept]
                totals.budget += bucket[0]
                totals.paid += bucket[1]
                totals.projects += bucket[2]
                if len(bucket) > 5:
                    totals.after_budget += bucket[4]
                    totals.after_paid += bucket[5]
                if len(bucket) > 7 and bucket[6]:
                    totals.take_name(str(bucket[6]), str(bucket[7]))
                dirty.add(dept)
                if len(bucket) > 3 and bucket[3]:
                    late.add(dept)
            fresh = day > self.meta.clock
            self.meta.clock = day
            yield day, self._close(day, fresh, dirty, late)
        yield from self._close_empty_days_before(until + 1)

    def _close_empty_days_before(self, day: int) -> Iterator[tuple[int, list[Transition]]]:
        assert self.meta.clock is not None
        while self.meta.clock + 1 < day:
            self.meta.clock += 1
            yield self.meta.clock, self._close(self.meta.clock, True, set(), set())

    def _close(self, day: int, fresh: bool, dirty: set[str], late: set[str]) -> list[Transition]:
        judge = self.judge
        # Sorted either way: a round redone after a restore (table order, not arrival
        # order) must send the same transitions in the same order.
        keys: Iterable[str] = sorted(self.totals) if fresh and judge.is_checkpoint(day) else sorted(dirty)
        year = year_of(day)
        transitions: list[Transition] = []
        for dept in keys:
            totals = self.totals[dept]
            if totals.fiscal_year == year:
                transitions.extend(judge.assess_department(totals, day))
            elif totals.fiscal_year < year and dept in late and not judge.year_closed(totals.fiscal_year, day):
                # a late event of its year, before the year's close: judged as of its Dec 31
                transitions.extend(judge.assess_department(totals.at_year_end(), day,
                                                           as_of=year_bounds(totals.fiscal_year)[1]))
        if fresh:  # the year's close (profile.year_end), as the embedded monitor does it
            transitions.extend(judge.close_year(day))
        # A renamed department's alerts: sent, and their values written this round.
        transitions.extend(_moved(judge.book, day, transitions, "department"))
        return transitions

    def _body(self, dept: str) -> Value:
        t = self.totals[dept]
        alerts = self.judge.book.alerts
        prefix = f"{t.fiscal_year}:"
        suffix = f":department:{t.department_id}"
        return {
            "totals": {
                "fiscal_year": t.fiscal_year,
                "department_id": t.department_id,
                "department_name": t.department_name,
                "department_name_version": t.name_version,
                "budget": t.budget,
                "paid": t.paid,
                "projects": t.projects,
                "after_budget": t.after_budget,
                "after_paid": t.after_paid,
                "dated": t.dated,
            },
            # copies: the body becomes the committed value, and _take_delta adds to the
            # live buckets in place (a journaled delta inside it was counted twice on restore)
            "pending": {str(d): list(v) for d, v in self.pending.get(dept, {}).items()},
            "received": {
                str(s): [ep, sorted(days)] for s, (ep, days) in self.received.get(dept, {}).items()
            },
            "alerts": [
                a.to_json()
                for aid, a in sorted(alerts.items())
                if aid.startswith(prefix) and aid.endswith(suffix)
            ],
        }



def _moved(book: AlertBook, day: int, transitions: Iterable[Transition], subject_type: str) -> list[Transition]:
    """The alerts of ``subject_type`` that moved on ``day`` (``book.moved``, then cleared)
    as ``moved`` messages. One with a transition that day already carries its new names."""
    changed = {t.alert.alert_id for t in transitions}
    found = [
        Transition(alert.snapshot(), MOVED, day)
        for alert_id in sorted(book.moved)
        if alert_id not in changed
        and (alert := book.alerts.get(alert_id)) is not None
        and alert.subject_type == subject_type
    ]
    book.moved.clear()
    return found


def _department_key_of(alert: Alert) -> str:
    return department_key(alert.fiscal_year, alert.subject_id)


@lru_cache(maxsize=1 << 16)  # murmur2 in Python; an agent asks again for the same keys
def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as kafka-python and the Java
    client) gives a string key — how ``budgetwatch publish`` and the agents agree."""
    from kafka.partitioner.default import murmur2

    return int(murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions


def status_of(partitions: Iterable[ProjectPartition], fiscal_year: int | None = None) -> Value:
    """``budgetwatch status --json`` over project partitions (all of them for the region):
    the same :func:`budget.report.status` the embedded engine answers with."""
    from budget.ledger import Ledger
    from budget.report import status

    parts = list(partitions)
    ledger = Ledger()
    for part in parts:
        for state in part.monitor.ledger.projects.values():
            ledger.attach(ProjectState.from_dict(state.to_dict()))
    for part in parts:  # names of departments the project naming them left, as they run
        ledger.adopt_names(part.monitor.ledger.department_names())
    clocks = [part.clock for part in parts if part.clock is not None]
    if not clocks:
        raise ValueError("no partition has closed a day yet: publish a clock tick first")
    return status(ledger, min(clocks), fiscal_year)
