"""Notification channels: generic webhook, DingTalk robot, WeCom robot, email (SMTP).

Every channel has the same shape — ``await channel.send(note)`` — and raises
``DeliveryError`` (``transient`` when retrying soon may help: a 5xx, a timeout,
a refused connection, a rate limit). Dependencies come in: the HTTP client
(``httpx.AsyncClient``), the SMTP settings and the sending function. The outbox
dispatcher (streams/outbox.py) decides when to retry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from alerts.notification_text import NotificationText

DEDUP_HEADER = "X-Budgetwatch-Dedup-Key"

# Printable ASCII but "%": what a header value may carry as it is.
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_value(dedup_key: str) -> str:
    """The dedup key as an HTTP header value: percent-encoded UTF-8 (RFC 3986) for
    every character outside printable ASCII, and ``%`` itself, so that
    ``urllib.parse.unquote(value) == dedup_key``. A key of plain ASCII goes as it is,
    byte for byte (receivers' dedup across the upgrade keeps working). httpx sends
    header values as ASCII: a project or department code such as ``自然资源-2026-01``
    raised UnicodeEncodeError and the notification never went out."""
    return quote(dedup_key, safe=_HEADER_SAFE, encoding="utf-8")


class DeliveryError(Exception):
    """A notification did not reach its channel; ``transient`` errors are retried soon.

    ``rate_limited``: the receiver refused for sending too fast (a robot's minute was
    full); retrying at once would only prolong it, so it waits for the next attempt.
    ``final``: part of it went out (a mail some addresses took): another attempt would
    send those again, so it is set aside as failed until someone re-queues it.
    ``retry_now`` / ``retry_after``: whether to try again within the attempt, and how long
    the receiver asked to be left alone."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        rate_limited: bool = False,
        final: bool = False,
        retry_now: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.rate_limited = rate_limited
        self.final = final
        # Tried again at once (a refused connection, a 5xx)? Not after a timeout (the post
        # has often arrived: each try would be another copy) nor when told to slow down.
        self.retry_now = transient and not rate_limited if retry_now is None else retry_now
        self.retry_after = retry_after  # seconds the receiver asked to wait (Retry-After)


@dataclass(frozen=True, slots=True)
class Note:
    """One notification to one channel: the transition, its text and its dedup key."""

    dedup_key: str
    transition: Mapping[str, Any]
    text: NotificationText
    now: dt.datetime  # wall clock at sending (DingTalk signs it; email dates it)
    recipient: str  # department id, "default" or "escalation"


class Channel(Protocol):
    name: str

    async def send(self, note: Note) -> None: ...
