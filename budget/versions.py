"""Last-writer-wins versions: (business day, event_id) as one sortable string.

A project's state keeps the version of the registration, the approval and each
indicator's definition and report, so a fold gives the same state whatever order
its events arrive in. Kept as a tuple, each version was three objects (a tuple, a
day int, the id); a province holds ~500k of them. As ``"DDDDDDD:event_id"`` — the
ordinal day zero-padded to seven digits, so string order is (day, event_id) order —
it is one in memory. Stored state keeps the ``[day, event_id]`` pair: code of an
earlier release reads a version as that pair (a Faust worker not yet upgraded, a
rolled-back binary), and it would silently misread a string.
"""

from __future__ import annotations

from typing import Any

DAY_DIGITS = 7  # date.max.toordinal() == 3652059


def version(day: int, event_id: str) -> str:
    return str(day).zfill(DAY_DIGITS) + ":" + event_id  # a nested format spec is slower


def version_pair(value: str | None) -> list[Any] | None:
    """The stored form: ``[day, event_id]`` (or None)."""
    if value is None:
        return None
    return [int(value[:DAY_DIGITS]), value[DAY_DIGITS + 1:]]


def stored_version(value: Any) -> str | None:
    """A version from its stored ``[day, event_id]`` pair (or a string, or None)."""
    if not value:
        return None
    if isinstance(value, str):
        return value
    return version(int(value[0]), str(value[1]))
