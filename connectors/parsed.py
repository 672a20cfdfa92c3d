"""What a reader yields for each input item: an accepted record or a rejection."""

from __future__ import annotations

from dataclasses import dataclass

from budget.events import Record


@dataclass(frozen=True, slots=True)
class Accepted:
    record: Record
    source: str  # file:line, or topic:partition:offset


@dataclass(frozen=True, slots=True)
class Rejected:
    source: str
    reason: str
    raw: str


Parsed = Accepted | Rejected
