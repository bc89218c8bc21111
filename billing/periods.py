"""Calendar arithmetic for billing periods and allowance resets.

Periods are counted from an anchor, so a month that starts on the 31st ends
on the 28th/29th/30th of short months and goes back to the 31st after, with
no drift: ``add_interval(anchor, "month", k)``.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta

INTERVALS = ("day", "week", "month", "year")


def add_interval(anchor: datetime, interval: str, count: int = 1) -> datetime:
    if interval == "day":
        return anchor + timedelta(days=count)
    if interval == "week":
        return anchor + timedelta(weeks=count)
    if interval in ("month", "year"):
        months = count * (12 if interval == "year" else 1)
        index = anchor.month - 1 + months
        year, month = anchor.year + index // 12, index % 12 + 1
        day = min(anchor.day, calendar.monthrange(year, month)[1])
        return anchor.replace(year=year, month=month, day=day)
    raise ValueError(f"unknown interval {interval!r}")


def period_containing(anchor: datetime, interval: str, now: datetime) -> tuple[datetime, datetime]:
    """(start, end) of the period anchor + k·interval that holds ``now`` (k ≥ 0)."""
    k = 0
    start, end = anchor, add_interval(anchor, interval, 1)
    while end <= now:
        k += 1
        start, end = end, add_interval(anchor, interval, k + 1)
    return start, end
