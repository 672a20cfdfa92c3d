"""The wall clock, for the shell only: the core takes dates as arguments."""

from __future__ import annotations

import datetime as dt

CHINA = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")


def today_in_china() -> dt.date:
    """The wall-clock business date (China has one time zone, UTC+8)."""
    return dt.datetime.now(CHINA).date()
