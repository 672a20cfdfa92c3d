"""Pacing for the group robots, which accept only so many messages a minute.

A DingTalk custom robot takes 20 messages a minute and, past that, refuses the robot
for ten minutes (errcode 130101); a WeCom group robot takes 20 a minute (errcode
45009). A checkpoint day raises hundreds of warnings in one department at once, so
the dispatcher paces each robot instead of finding the limit by being refused:
a :class:`Window` per robot address, shared by every recipient configured with it,
lets a message go only while fewer than ``count`` went in the last ``seconds``.

No I/O; time is a parameter (the dispatcher's clock, in unix seconds).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from connectors.directory import DEFAULT, ESCALATION, Contact, Directory


@dataclass(frozen=True, slots=True)
class RateLimit:
    count: int
    seconds: float
    refused_for: float  # how long the robot refuses after saying "too fast"


# The documented 20 a minute, counted over 62 seconds: the robot counts by arrival
# time, and network jitter can bring two arrivals closer together than their sends.
ROBOT_LIMITS: dict[str, RateLimit] = {
    "dingtalk": RateLimit(20, 62.0, refused_for=600.0),  # DingTalk: limited for ten minutes
    "wecom": RateLimit(20, 62.0, refused_for=62.0),
}


def robot_of(contact: Contact | None, channel: str) -> str | None:
    """The robot address a contact's ``channel`` posts to, or None if it is not a robot."""
    if contact is None or channel not in ROBOT_LIMITS:
        return None
    if channel == "dingtalk":
        return contact.dingtalk.url if contact.dingtalk is not None else None
    return contact.wecom


def recipients_of(directory: Directory, channel: str, robot: str) -> list[str]:
    """Every recipient whose ``channel`` posts to ``robot`` (one robot may serve several)."""
    found = [dept for dept, contact in directory.departments.items() if robot_of(contact, channel) == robot]
    for key, contact in ((DEFAULT, directory.default), (ESCALATION, directory.escalation)):
        if robot_of(contact, channel) == robot:
            found.append(key)
    return found


def robot_digest(channel: str, robot: str) -> str:
    """A robot's name for storage: its address carries the access token."""
    return hashlib.sha256(f"{channel}|{robot}".encode()).hexdigest()[:32]


@dataclass(slots=True)
class Window:
    """The sends of the last ``limit.seconds`` to one robot, oldest first."""

    limit: RateLimit
    sent: deque[float] = field(default_factory=deque)
    refused_until: float = 0.0  # the robot said "too fast" (someone else posts to it too)

    @classmethod
    def seeded(cls, limit: RateLimit, times: Iterable[float], refused_until: float = 0.0) -> Window:
        """A window that already holds earlier sends and a refusal still running (e.g.
        read back after a restart)."""
        return cls(limit, deque(sorted(times)), refused_until)

    def free_at(self, now: float) -> float:
        """The earliest time, ``now`` or later, at which one more message may go."""
        sent = self.sent
        while sent and sent[0] <= now - self.limit.seconds:
            sent.popleft()
        free = now if len(sent) < self.limit.count else sent[len(sent) - self.limit.count] + self.limit.seconds
        return max(free, self.refused_until)

    def refused(self, now: float) -> None:
        """The robot answered "too fast" at ``now``: send it nothing while it refuses."""
        self.refused_until = max(self.refused_until, now + self.limit.refused_for)

    def take(self, now: float) -> bool:
        """Count one send at ``now`` if the robot takes it; False means wait."""
        if self.free_at(now) > now:
            return False
        self.sent.append(now)
        return True
