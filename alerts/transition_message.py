"""The ``budget-alerts`` message contract: one alert transition as JSON.

The Faust workers produce it (``Transition.to_json``: the fields of
``budgetwatch alerts --json`` plus ``transition``, ``date``,
``previous_severity`` and ``origin``); the notifier consumes it. A consumer validates it here,
at the boundary, so one malformed or foreign message is refused with its reason
instead of stopping the notifications of everyone behind it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alerts.lifecycle import Alert, Transition
from alerts.messages import KIND_NAMES, RULE_NAMES
from alerts.profile import SEVERITY_RANK
from budget.calendar import to_day

Kind = Literal[
    "firing", "escalated", "deescalated", "resolved",
    "disposed", "disposition_approved", "disposition_returned", "disposition_overdue",
    "moved",  # no transition: a firing alert followed its project to another department, or a new name
]
assert set(Kind.__args__) == set(KIND_NAMES)  # type: ignore[attr-defined]


class TransitionMessage(BaseModel):
    """One ``budget-alerts`` value. Unknown extra fields are kept (a newer producer)."""

    model_config = ConfigDict(extra="allow", strict=True)

    alert_id: str = Field(min_length=1, max_length=512)
    rule: str
    severity: str
    status: Literal["firing", "resolved"]
    subject_type: Literal["project", "department"]
    subject_id: str = Field(min_length=1)
    subject_name: str = ""
    department_id: str = Field(min_length=1)
    department_name: str = ""
    fiscal_year: int = Field(ge=1900, le=2200)
    since: dt.date
    updated_on: dt.date
    figures: dict[str, Any] = Field(default_factory=dict)
    message: str = ""
    action: str = ""
    disposition: dict[str, Any] | None = None
    transition: Kind
    date: dt.date
    previous_severity: str | None = None
    reason: Literal["year_closed"] | None = None  # an episode ended by the year's close
    # The worker's message that produced this transition (topic:partition:offset):
    # a same-day re-fire, otherwise identical to the first firing, comes from another.
    origin: str | None = Field(default=None, min_length=1, max_length=300)

    def model_post_init(self, __context: Any) -> None:
        if self.rule not in RULE_NAMES:
            raise ValueError(f"unknown rule {self.rule!r}; known: {', '.join(RULE_NAMES)}")
        # The date moves the notifier's business clock, which decides what is too old to
        # notify: one mistyped year must not make every later warning look like history.
        if not self.fiscal_year <= self.date.year <= self.fiscal_year + 1:
            raise ValueError(
                f"date {self.date} is outside fiscal year {self.fiscal_year} (or the year after, "
                "for late dispositions); check the producer's clock"
            )
        if self.since > self.date:
            raise ValueError(f"since {self.since} is after the transition's date {self.date}")
        # The stored alert keeps the latest updated_on and refuses anything older: one dated
        # ahead of its own transition would hold the alert against every later one.
        if self.updated_on > self.date:
            raise ValueError(f"updated_on {self.updated_on} is after the transition's date {self.date}")
        if self.reason is not None and self.status != "resolved":
            raise ValueError(f"reason {self.reason!r} belongs to a resolved alert, not a {self.status!r} one")
        for name, value in (("severity", self.severity), ("previous_severity", self.previous_severity)):
            if value is not None and value not in SEVERITY_RANK:
                raise ValueError(f"unknown {name} {value!r}; known: {', '.join(SEVERITY_RANK)}")


class MessageRefused(ValueError):
    """A budget-alerts value that is not a transition; the message says why."""


def parse_transition(value: bytes | str) -> tuple[Transition, dict[str, Any]]:
    """The transition a ``budget-alerts`` value carries, and the value as a JSON object.

    Raises :class:`MessageRefused` naming the first problems (not JSON, a missing or
    mistyped field, an unknown rule/severity/kind)."""
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        raise MessageRefused(f"not JSON: {err}") from None
    if not isinstance(data, dict):
        raise MessageRefused(f"not a JSON object but {type(data).__name__}")
    try:
        # Dates come as ISO strings in JSON: strict mode takes them in JSON mode only.
        message = TransitionMessage.model_validate_json(orjson.dumps(data))
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in err.errors()[:5]
        )
        raise MessageRefused(f"not an alert transition: {problems}") from None
    alert = Alert(
        message.alert_id, message.rule, message.severity, message.status, message.subject_type,
        message.subject_id, message.subject_name, message.department_id, message.department_name,
        message.fiscal_year, to_day(message.since), to_day(message.updated_on), message.figures,
        message.message, message.action, message.disposition, message.reason,
    )
    return Transition(alert, message.transition, to_day(message.date), message.previous_severity), data


def message_digest(data: dict[str, Any]) -> str:
    """Identity of a transition message for deduplication: the same transition sent
    again (a worker re-sending after a restart) has the same content, ``origin``
    included, while a re-fire on the same day comes from another message (origin)."""
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()
