"""The alert lifecycle (DESIGN §6).

An alert is identified by (fiscal_year, rule, subject). Reconciling a subject's
findings with its active alerts yields transitions — ``firing`` (new),
``escalated``/``deescalated`` (severity change), ``resolved`` — and nothing
when the findings are unchanged, so evaluating the same state twice is a no-op.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from alerts.profile import SEVERITY_RANK
from budget.calendar import iso

FIRING = "firing"
RESOLVED = "resolved"
ESCALATED = "escalated"
DEESCALATED = "deescalated"
# The reason of a ``resolved`` transition that closed a fiscal year (年度结束) rather than
# a condition that cleared: the alert ends (status resolved) and nobody is notified.
YEAR_CLOSED = "year_closed"


def alert_id_for(fiscal_year: int, rule: str, subject_type: str, subject_id: str) -> str:
    return f"{fiscal_year}:{rule}:{subject_type}:{subject_id}"


# The hot dataclasses below write their own __init__ (init=False): the compiled core
# compiles it, where the one the dataclasses module generates runs interpreted — ~5k
# instructions for each alert snapshot, transition and subject (~3% of a replay).


@dataclass(slots=True, init=False)
class Subject:
    subject_type: str  # "project" | "department"
    subject_id: str
    fiscal_year: int
    department_id: str
    name: str
    department_name: str

    def __init__(self, subject_type: str, subject_id: str, fiscal_year: int, department_id: str, name: str,
                 department_name: str) -> None:
        self.subject_type = subject_type
        self.subject_id = subject_id
        self.fiscal_year = fiscal_year
        self.department_id = department_id
        self.name = name
        self.department_name = department_name


@dataclass(slots=True, init=False)
class Alert:
    alert_id: str
    rule: str
    severity: str
    status: str
    subject_type: str
    subject_id: str
    subject_name: str
    department_id: str
    department_name: str
    fiscal_year: int
    since: int  # day the current episode started firing
    updated_on: int  # day of the latest transition
    figures: dict[str, Any]
    message: str
    action: str
    # The disposition loop's state of the current episode (alerts.dispositions), kept
    # by the embedded engine; None where no disposition desk runs (Faust).
    disposition: dict[str, Any] | None = None
    # Why a resolved episode ended, when not because its condition cleared: YEAR_CLOSED.
    reason: str | None = None

    def __init__(
        self, alert_id: str, rule: str, severity: str, status: str, subject_type: str, subject_id: str,
        subject_name: str, department_id: str, department_name: str, fiscal_year: int, since: int,
        updated_on: int, figures: dict[str, Any], message: str, action: str,
        disposition: dict[str, Any] | None = None, reason: str | None = None,
    ) -> None:
        self.alert_id = alert_id
        self.rule = rule
        self.severity = severity
        self.status = status
        self.subject_type = subject_type
        self.subject_id = subject_id
        self.subject_name = subject_name
        self.department_id = department_id
        self.department_name = department_name
        self.fiscal_year = fiscal_year
        self.since = since
        self.updated_on = updated_on
        self.figures = figures
        self.message = message
        self.action = action
        self.disposition = disposition
        self.reason = reason

    def snapshot(self, message: str | None = None, action: str | None = None) -> Alert:
        """A copy as the alert stands now (what a transition records), optionally with
        another message and action. Positional: this runs once per transition."""
        return Alert(
            self.alert_id, self.rule, self.severity, self.status, self.subject_type, self.subject_id,
            self.subject_name, self.department_id, self.department_name, self.fiscal_year, self.since,
            self.updated_on, self.figures, self.message if message is None else message,
            self.action if action is None else action, self.disposition, self.reason,
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "alert_id": self.alert_id,
            "rule": self.rule,
            "severity": self.severity,
            "status": self.status,
            "subject_type": self.subject_type,
            "subject_id": self.subject_id,
            "subject_name": self.subject_name,
            "department_id": self.department_id,
            "department_name": self.department_name,
            "fiscal_year": self.fiscal_year,
            "since": iso(self.since),
            "updated_on": iso(self.updated_on),
            "figures": self.figures,
            "message": self.message,
            "action": self.action,
        }
        if self.disposition is not None:
            data["disposition"] = self.disposition
        if self.reason is not None:
            data["reason"] = self.reason
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Alert:
        from budget.calendar import to_day
        from budget.events import parse_day

        return cls(
            alert_id=data["alert_id"],
            rule=data["rule"],
            severity=data["severity"],
            status=data["status"],
            subject_type=data["subject_type"],
            subject_id=data["subject_id"],
            subject_name=data.get("subject_name", ""),
            department_id=data["department_id"],
            department_name=data.get("department_name", ""),
            fiscal_year=int(data["fiscal_year"]),
            since=to_day(parse_day(data["since"])),
            updated_on=to_day(parse_day(data["updated_on"])),
            figures=dict(data.get("figures") or {}),
            message=data.get("message", ""),
            action=data.get("action", ""),
            disposition=data.get("disposition"),
            reason=data.get("reason"),
        )


@dataclass(slots=True, init=False)
class Transition:
    """One change of one alert, with the figures that caused it."""

    alert: Alert  # the alert as it stands after this transition (a snapshot)
    kind: str  # firing | escalated | deescalated | resolved
    on: int
    previous_severity: str | None = None

    def __init__(self, alert: Alert, kind: str, on: int, previous_severity: str | None = None) -> None:
        self.alert = alert
        self.kind = kind
        self.on = on
        self.previous_severity = previous_severity

    @property
    def reason(self) -> str | None:
        """Why this resolution ended its episode, when not because the condition cleared
        (YEAR_CLOSED); None for any other transition."""
        return self.alert.reason if self.kind == RESOLVED else None

    def to_json(self) -> dict[str, Any]:
        data = self.alert.to_json()  # with the alert's ``reason``, once its episode ended so
        data["transition"] = self.kind
        data["date"] = iso(self.on)
        data["previous_severity"] = self.previous_severity
        return data


# (rule, kind, severity, figures) -> (message, action)
Describe = Callable[[str, str, str, Mapping[str, Any]], tuple[str, str]]


# alert_id -> the alert as last persisted, or None if it was never raised.
Archive = Callable[[str], Alert | None]


@dataclass(slots=True)
class AlertBook:
    """All alerts ever raised (firing or resolved), indexed by subject for reconciliation.

    With an ``archive`` (a lookup the runtime passes in, e.g. its store), resolved alerts
    may be forgotten once persisted (:meth:`forget_resolved`) and are fetched back by
    :meth:`get` when a disposition needs them: most alerts of a year
    are resolved, and each holds its figures and Chinese message."""

    alerts: dict[str, Alert] = field(default_factory=dict)
    # (subject_type, subject_id, fiscal_year) -> rule -> alert: an alert's identity has its
    # year, so a department's alert of last year is not judged by this year's totals.
    firing: dict[tuple[str, str, int], dict[str, Alert]] = field(default_factory=dict)
    archive: Archive | None = None
    # Firing alerts whose subject moved or was renamed (a project re-registered under
    # another department, 机构改革) without any transition: a persisting runtime writes
    # them out and clears this, so access and listings follow the current department.
    moved: set[str] = field(default_factory=set)

    def add(self, alert: Alert) -> None:
        """Adopt an alert restored from storage."""
        self.alerts[alert.alert_id] = alert
        if alert.status == FIRING:
            key = (alert.subject_type, alert.subject_id, alert.fiscal_year)
            self.firing.setdefault(key, {})[alert.rule] = alert

    def get(self, alert_id: str) -> Alert | None:
        alert = self.alerts.get(alert_id)
        if alert is None and self.archive is not None:
            alert = self.archive(alert_id)
            if alert is not None:
                self.alerts[alert_id] = alert
        return alert

    def forget_resolved(self) -> int:
        """Drop resolved alerts from memory; the caller guarantees the archive holds each
        as it stands now. Returns how many were dropped."""
        if self.archive is None:
            raise ValueError("forget_resolved needs an archive to fetch the alerts back from")
        resolved = [a for a, alert in self.alerts.items() if alert.status == RESOLVED]
        for alert_id in resolved:
            del self.alerts[alert_id]
        return len(resolved)

    def active(self) -> Iterator[Alert]:
        for by_rule in self.firing.values():
            yield from by_rule.values()

    def follow(self, current: Mapping[str, Alert], department_id: str, department_name: str, name: str) -> None:
        """Firing alerts take their subject's current department and names (a project
        re-registered elsewhere, a renamed department) without a transition; see ``moved``."""
        for alert in current.values():
            if (alert.department_id != department_id or alert.department_name != department_name
                    or alert.subject_name != name):
                alert.department_id, alert.department_name, alert.subject_name = department_id, department_name, name
                self.moved.add(alert.alert_id)

    def firing_rules(self, subject_type: str, subject_id: str, fiscal_year: int) -> Mapping[str, Alert]:
        return self.firing.get((subject_type, subject_id, fiscal_year)) or {}

    def reconcile(
        self,
        subject: Subject,
        findings: Mapping[str, str],
        day: int,
        figures: Callable[[], dict[str, Any]],
        describe: Describe,
    ) -> list[Transition]:
        key = (subject.subject_type, subject.subject_id, subject.fiscal_year)
        current = self.firing.get(key)
        if not findings and not current:
            return []
        current = current or {}
        self.follow(current, subject.department_id, subject.department_name, subject.name)
        if len(findings) == len(current) and all(
            (a := current.get(rule)) is not None and a.severity == sev
            for rule, sev in findings.items()
        ):
            return []
        evidence = figures()
        transitions: list[Transition] = []
        still_firing: dict[str, Alert] = {}
        for rule, severity in findings.items():
            alert = current.get(rule)
            if alert is None:
                alert = self._fire(subject, rule, severity, day, evidence, describe)
                transitions.append(Transition(alert.snapshot(), FIRING, day))
            elif alert.severity != severity:
                up = SEVERITY_RANK[severity] > SEVERITY_RANK[alert.severity]
                kind = ESCALATED if up else DEESCALATED
                previous = alert.severity
                alert.severity = severity
                self._update(alert, kind, day, evidence, describe)
                transitions.append(Transition(alert.snapshot(), kind, day, previous))
            still_firing[rule] = alert
        for rule, alert in sorted(current.items()):
            if rule in findings:
                continue
            alert.status = RESOLVED
            self._update(alert, RESOLVED, day, evidence, describe)
            transitions.append(Transition(alert.snapshot(), RESOLVED, day, alert.severity))
        if still_firing:
            self.firing[key] = still_firing
        else:
            self.firing.pop(key, None)
        return transitions

    def close_year(
        self,
        fiscal_year: int,
        day: int,
        closing: Callable[[Alert], tuple[dict[str, Any], str, str]],
    ) -> list[Transition]:
        """End every alert of ``fiscal_year`` (or earlier) still firing: ``resolved`` on
        ``day`` with the reason YEAR_CLOSED and the (figures, message, action) ``closing``
        gives. In alert-id order, so a resumed run lists them as one run did."""
        ending = sorted(
            (alert for key, by_rule in self.firing.items() if key[2] <= fiscal_year
             for alert in by_rule.values()),
            key=lambda a: a.alert_id,
        )
        transitions: list[Transition] = []
        for alert in ending:
            alert.figures, alert.message, alert.action = closing(alert)
            alert.status = RESOLVED
            alert.updated_on = day
            alert.reason = YEAR_CLOSED
            transitions.append(Transition(alert.snapshot(), RESOLVED, day, alert.severity))
        for key in [k for k in self.firing if k[2] <= fiscal_year]:
            del self.firing[key]
        return transitions

    def _fire(
        self,
        subject: Subject,
        rule: str,
        severity: str,
        day: int,
        evidence: dict[str, Any],
        describe: Describe,
    ) -> Alert:
        alert_id = alert_id_for(subject.fiscal_year, rule, subject.subject_type, subject.subject_id)
        message, action = describe(rule, FIRING, severity, evidence)
        # A new episode sets every field, so one resolved earlier and forgotten is not
        # fetched back from the archive; the episode starts with no disposition state
        # (a desk gives it its own, with the adjustments of earlier episodes).
        alert = self.alerts.get(alert_id)
        if alert is None:
            alert = Alert(
                alert_id, rule, severity, FIRING, subject.subject_type, subject.subject_id,
                subject.name, subject.department_id, subject.department_name,
                subject.fiscal_year, day, day, evidence, message, action,
            )
            self.alerts[alert_id] = alert
        else:  # a new episode of an alert resolved earlier
            alert.severity = severity
            alert.status = FIRING
            alert.since = day
            alert.updated_on = day
            alert.figures = evidence
            alert.message = message
            alert.action = action
            alert.subject_name = subject.name
            alert.department_id = subject.department_id
            alert.department_name = subject.department_name
            alert.disposition = None
            alert.reason = None
        return alert

    @staticmethod
    def _update(alert: Alert, kind: str, day: int, evidence: dict[str, Any], describe: Describe) -> None:
        alert.updated_on = day
        alert.figures = evidence
        alert.message, alert.action = describe(alert.rule, kind, alert.severity, evidence)
