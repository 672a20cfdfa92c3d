"""The wall clock, for the shell only (connectors and streams): the core takes dates as arguments."""

from __future__ import annotations

import datetime as dt

from budget.calendar import CHINA_TIME, to_day


def today_in_china() -> dt.date:
    """The wall-clock business date (China has one time zone, UTC+8)."""
    return dt.datetime.now(CHINA_TIME).date()


def today_day() -> int:
    """Today's business date (UTC+8) as a date ordinal, the form days take in the core."""
    return to_day(today_in_china())
