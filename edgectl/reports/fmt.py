"""How a report writes its figures and times, the same in its table, CSV and page: litres
to 0.01 L, money to the currency's places, times in the report's local zone."""

from __future__ import annotations

from datetime import datetime, tzinfo
from decimal import Decimal

from edgectl.reports.model import Period, Report

DASH = "-"


def litres(value: Decimal | None, places: int = 2) -> str:
    """`value` litres with `places` decimals ("-" for none); every figure of a column alike."""
    if value is None:
        return DASH
    return f"{value:.{places}f}"


def signed(value: Decimal | None, places: int = 2) -> str:
    if value is None:
        return DASH
    return f"{value:+.{places}f}" if value else f"{value:.{places}f}"


def money(value: Decimal | None, places: int = 2) -> str:
    return DASH if value is None else f"{value:.{places}f}"


def clock(moment: datetime | None, tz: tzinfo | None = None, *, date: bool = False) -> str:
    """A time in the report's zone: 14:05, or with `date` 2026-11-24 14:05."""
    if moment is None:
        return DASH
    local = moment.astimezone(tz)
    return local.strftime("%Y-%m-%d %H:%M" if date else "%H:%M")


def when(moment: datetime | None, period: Period, tz: tzinfo | None = None) -> str:
    """The time alone within a day report's day; with its date otherwise."""
    if moment is None:
        return DASH
    same_day = period.day is not None and moment.astimezone(tz).date() == period.day
    return clock(moment, tz, date=not same_day)


def span(report: Report, tz: tzinfo | None = None) -> str:
    period = report.period
    end = "now (the shift is open)" if period.running else clock(period.end, tz, date=True)
    return f"from {clock(period.start, tz, date=True)} to {end}"


def money_places(report: Report) -> int:
    exponent = report.total.amount.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 2
