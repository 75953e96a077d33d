"""The report's charts as inline SVG, drawn here from the figures (no library, no script):
each tank's stock over the period with its deliveries marked, sales per hour by grade, and
each tank's cumulative variance through the month against its limit.

Every element that carries a figure says it in `data-*` attributes (a bar's grade and litres,
a delivery's litres, a limit's value), so the page can be checked as it renders.
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal
from html import escape
from typing import Final

from edgectl.reports.model import HourSales, Period, TankLevels, TankVariance

WIDTH: Final = 720
# Grade colours, in the report's grade order; dark enough to print on white.
PALETTE: Final = ("#1f5fa8", "#d9731a", "#2e8b3e", "#8a3fa0", "#a33a3a", "#5b6b7a", "#b08a00")
LEVEL_COLOUR: Final = "#1f5fa8"
DELIVERY_COLOUR: Final = "#2e8b3e"
VARIANCE_COLOUR: Final = "#1f5fa8"
LIMIT_COLOUR: Final = "#c0392b"
GRID: Final = "#d8dde3"
AXIS: Final = "#5b6b7a"


def grade_colours(grades: Sequence[str]) -> dict[str, str]:
    return {grade: PALETTE[i % len(PALETTE)] for i, grade in enumerate(grades)}


class _Frame:
    """A plot area inside an SVG of `width` × `height`, with its margins."""

    def __init__(
        self,
        width: int,
        height: int,
        *,
        left: int = 64,
        right: int = 16,
        top: int = 26,
        bottom: int = 30,
    ) -> None:
        self.width, self.height = width, height
        self.x0, self.x1 = left, width - right
        self.y0, self.y1 = top, height - bottom

    def x(self, share: float) -> float:
        return round(self.x0 + (self.x1 - self.x0) * share, 1)

    def y(self, value: float, lo: float, hi: float) -> float:
        share = 0.0 if hi == lo else (value - lo) / (hi - lo)
        return round(self.y1 - (self.y1 - self.y0) * share, 1)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering lo..hi (about `count` of them)."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _number(value: float, thousands: bool = False) -> str:
    if thousands and value:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _open(frame: _Frame, cls: str, label: str) -> list[str]:
    return [
        f'<svg class="chart {cls}" role="img"'
        f' viewBox="0 0 {frame.width} {frame.height}" width="{frame.width}"'
        f' height="{frame.height}" aria-label="{escape(label)}">',
        f"<title>{escape(label)}</title>",
    ]


def _y_axis(
    frame: _Frame, ticks: Sequence[float], unit: str, span: tuple[float, float] | None = None
) -> list[str]:
    """Ticks and grid lines over the plot; `span` the values the plot spans (default the
    ticks' own)."""
    lo, hi = span or (ticks[0], ticks[-1])
    thousands = max(abs(lo), abs(hi)) >= 10000
    parts = []
    for tick in ticks:
        y = frame.y(tick, lo, hi)
        parts.append(
            f'<line class="grid" x1="{frame.x0}" x2="{frame.x1}" y1="{y}" y2="{y}"'
            f' stroke="{GRID}" stroke-width="1"/>'
        )
        parts.append(
            f'<text class="tick" x="{frame.x0 - 6}" y="{y + 4}" text-anchor="end">'
            f"{escape(_number(tick, thousands))}</text>"
        )
    parts.append(
        f'<text class="unit" x="{frame.x0}" y="{frame.y0 - 9}" text-anchor="start">'
        f"{escape(unit)}</text>"
    )
    return parts


def _time_axis(frame: _Frame, period: Period, tz: tzinfo | None) -> list[str]:
    """Hour ticks along the bottom: every 3 hours over a day, fewer or more for a shift."""
    span = (period.end - period.start).total_seconds()
    hours = span / 3600
    every = next((h for h in (1, 2, 3, 4, 6, 12, 24) if hours / h <= 9), 24)
    label = "%H:%M" if hours <= 24 else "%m-%d %H:%M"  # a shift longer than a day: its dates
    first = period.start.astimezone(tz).replace(minute=0, second=0, microsecond=0)
    parts = []
    moment = first
    while moment <= period.end:
        if moment >= period.start and moment.astimezone(tz).hour % every == 0:
            share = (moment - period.start).total_seconds() / span if span else 0
            x = frame.x(share)
            parts.append(
                f'<line class="grid" x1="{x}" x2="{x}" y1="{frame.y0}" y2="{frame.y1}"'
                f' stroke="{GRID}" stroke-width="1"/>'
            )
            parts.append(
                f'<text class="tick" x="{x}" y="{frame.y1 + 16}" text-anchor="middle">'
                f"{moment.astimezone(tz).strftime(label)}</text>"
            )
        moment = (moment + timedelta(hours=1)).astimezone(tz)
    return parts


def _frame_box(frame: _Frame) -> str:
    return (
        f'<rect class="plot" x="{frame.x0}" y="{frame.y0}" width="{frame.x1 - frame.x0}"'
        f' height="{frame.y1 - frame.y0}" fill="none" stroke="{AXIS}" stroke-width="1"/>'
    )


def _message(frame: _Frame, text: str) -> str:
    x = (frame.x0 + frame.x1) / 2
    y = (frame.y0 + frame.y1) / 2
    return f'<text class="empty" x="{x}" y="{y}" text-anchor="middle">{escape(text)}</text>'


# --------------------------------------------------------------------------- tank levels


def levels_chart(levels: TankLevels, period: Period, tz: tzinfo | None = None) -> str:
    """One tank's stock at 15 °C over the period, its capacity, its deliveries marked (the
    time it took shaded, a marker where it ended with the litres delivered)."""
    frame = _Frame(WIDTH, 210)
    label = f"tank {levels.tank} stock over the period"
    capacity = float(levels.capacity_l)
    ticks = nice_ticks(0, capacity)
    # Room above the capacity line for its label and a delivery's.
    lo, hi = ticks[0], max(ticks[-1], capacity * 1.08)
    span = (period.end - period.start).total_seconds() or 1.0

    def x_of(moment: datetime) -> float:
        share = (moment - period.start).total_seconds() / span
        return frame.x(min(max(share, 0.0), 1.0))

    parts = _open(frame, "levels", label)
    parts += _y_axis(frame, ticks, "L at 15 °C", (lo, hi))
    parts += _time_axis(frame, period, tz)
    cap_y = frame.y(capacity, lo, hi)
    parts.append(
        f'<line class="capacity" data-litres="{levels.capacity_l}" x1="{frame.x0}"'
        f' x2="{frame.x1}" y1="{cap_y}" y2="{cap_y}" stroke="{AXIS}" stroke-width="1"'
        ' stroke-dasharray="6 4"/>'
    )
    parts.append(
        f'<text class="note" x="{frame.x1 - 4}" y="{cap_y + 13}" text-anchor="end">'
        f"capacity {escape(_litres(levels.capacity_l))} L</text>"
    )
    for mark in levels.deliveries:
        x_start, x_end = x_of(mark.start_at), x_of(mark.end_at)
        level = float(mark.level) if mark.level is not None else capacity / 2
        y = frame.y(level, lo, hi)
        anchor = "end" if x_end > frame.x1 - 90 else "start"
        dx = -8 if anchor == "end" else 8
        parts.append(
            f'<g class="delivery" data-delivery="{mark.delivery}"'
            f' data-litres="{mark.delivered_tc}" data-end="{mark.end_at.isoformat()}">'
            f'<rect x="{x_start}" y="{frame.y0}" width="{max(x_end - x_start, 2):.1f}"'
            f' height="{frame.y1 - frame.y0}" fill="{DELIVERY_COLOUR}" fill-opacity="0.12"/>'
            f'<path class="marker" d="M{x_end} {y - 2} l-6 -11 h12 z" fill="{DELIVERY_COLOUR}"/>'
            f'<text class="label" x="{x_end + dx}" y="{y - 16}" text-anchor="{anchor}"'
            f' fill="{DELIVERY_COLOUR}">delivery +{escape(_litres(mark.delivered_tc))} L</text>'
            "</g>"
        )
    if levels.points:
        points = " ".join(f"{x_of(p.at)},{frame.y(float(p.net_l), lo, hi)}" for p in levels.points)
        parts.append(
            f'<polyline class="level" data-tank="{levels.tank}"'
            f' data-points="{len(levels.points)}" points="{points}" fill="none"'
            f' stroke="{LEVEL_COLOUR}" stroke-width="2" stroke-linejoin="round"/>'
        )
    else:
        parts.append(_message(frame, "no readings in this period"))
    parts.append(_frame_box(frame))
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- hourly sales


def hourly_chart(
    hours: Sequence[HourSales],
    grades: Sequence[str],
    names: Mapping[str, str],
    tz: tzinfo | None = None,
) -> str:
    """Litres sold in each hour, one bar per hour stacked by grade, with a legend."""
    frame = _Frame(WIDTH, 240, bottom=46)
    colours = grade_colours(grades)
    top = max((float(h.total) for h in hours), default=0.0)
    ticks = nice_ticks(0, top if top > 0 else 10)
    lo, hi = ticks[0], ticks[-1]
    parts = _open(frame, "hourly", "litres sold per hour, by grade")
    parts += _y_axis(frame, ticks, "L")
    slot = (frame.x1 - frame.x0) / max(len(hours), 1)
    width = max(slot * 0.72, 1.0)
    label_every = 1 if len(hours) <= 12 else 2 if len(hours) <= 24 else 3
    for index, hour in enumerate(hours):
        x = round(frame.x0 + slot * index + (slot - width) / 2, 1)
        local = hour.start.astimezone(tz)
        parts.append(
            f'<g class="hour" data-hour="{local.strftime("%H")}"'
            f' data-start="{hour.start.isoformat()}" data-litres="{hour.total}">'
        )
        base = 0.0
        for grade in grades:
            value = hour.litres.get(grade)
            if not value:
                continue
            y_top = frame.y(base + float(value), lo, hi)
            y_base = frame.y(base, lo, hi)
            parts.append(
                f'<rect class="bar" data-grade="{escape(grade)}" data-litres="{value}"'
                f' x="{x}" y="{y_top}" width="{width:.1f}" height="{max(y_base - y_top, 0.5):.1f}"'
                f' fill="{colours[grade]}"><title>{escape(local.strftime("%H:00"))}'
                f" {escape(names.get(grade, grade))}: {value} L</title></rect>"
            )
            base += float(value)
        parts.append("</g>")
        if index % label_every == 0:
            parts.append(
                f'<text class="tick" x="{round(x + width / 2, 1)}" y="{frame.y1 + 14}"'
                f' text-anchor="middle">{local.strftime("%H")}</text>'
            )
    parts.append(
        f'<text class="unit" x="{frame.x1}" y="{frame.y1 + 14}" text-anchor="end">h</text>'
    )
    if top == 0:
        parts.append(_message(frame, "no sales in this period"))
    x = frame.x0
    for grade in grades:
        name = names.get(grade, grade)
        parts.append(
            f'<g class="legend" data-grade="{escape(grade)}">'
            f'<rect x="{x}" y="{frame.height - 16}" width="12" height="12"'
            f' fill="{colours[grade]}"/>'
            f'<text x="{x + 16}" y="{frame.height - 6}">{escape(name)}</text></g>'
        )
        x += 28 + 7 * len(name)
    parts.append(_frame_box(frame))
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- variance


def variance_chart(series: TankVariance) -> str:
    """A tank's cumulative variance day by day through the month, between its limits
    (+limit and −limit: 1 % of the month's throughput so far plus the allowance)."""
    frame = _Frame(WIDTH, 200)
    days = calendar.monthrange(series.month.year, series.month.month)[1]
    label = f"tank {series.tank} cumulative variance against its limit"
    points = series.points
    reach = max(
        [float(p.limit) for p in points] + [abs(float(p.cumulative_variance)) for p in points],
        default=100.0,
    )
    ticks = nice_ticks(-reach * 1.2, reach * 1.2, 6)
    lo, hi = ticks[0], ticks[-1]

    def x_of(day: int) -> float:
        return frame.x((day - 0.5) / days)

    parts = _open(frame, "variance", label)
    parts += _y_axis(frame, ticks, "L")
    for day in range(1, days + 1):
        if day == 1 or day % 5 == 0:
            parts.append(
                f'<text class="tick" x="{x_of(day)}" y="{frame.y1 + 16}"'
                f' text-anchor="middle">{day}</text>'
            )
    zero = frame.y(0, lo, hi)
    parts.append(
        f'<line class="zero" x1="{frame.x0}" x2="{frame.x1}" y1="{zero}" y2="{zero}"'
        f' stroke="{AXIS}" stroke-width="1"/>'
    )
    if points:
        last = points[-1]
        for sign, cls in ((1, "upper"), (-1, "lower")):
            line = _steps(
                [(x_of(p.day.day), frame.y(sign * float(p.limit), lo, hi)) for p in points],
                x_of(last.day.day) + (frame.x1 - frame.x0) / days / 2,
            )
            parts.append(
                f'<polyline class="limit {cls}" data-limit="{last.limit}"'
                f' points="{line}" fill="none" stroke="{LIMIT_COLOUR}" stroke-width="1.5"'
                ' stroke-dasharray="5 3"/>'
            )
        top_y = frame.y(float(last.limit), lo, hi)
        end_x = x_of(last.day.day)
        anchor = "end" if end_x > frame.x0 + 160 else "start"
        parts.append(
            f'<text class="note" x="{end_x}" y="{top_y - 6}" text-anchor="{anchor}"'
            f' fill="{LIMIT_COLOUR}">limit ±{escape(_litres(last.limit))} L</text>'
        )
        line = " ".join(
            f"{x_of(p.day.day)},{frame.y(float(p.cumulative_variance), lo, hi)}" for p in points
        )
        parts.append(
            f'<polyline class="cumulative" data-tank="{series.tank}" points="{line}"'
            f' fill="none" stroke="{VARIANCE_COLOUR}" stroke-width="2"/>'
        )
        for p in points:
            colour = LIMIT_COLOUR if p.flagged else VARIANCE_COLOUR
            fill = colour if p.kept else "#ffffff"
            parts.append(
                f'<circle class="point" data-day="{p.day.isoformat()}"'
                f' data-value="{p.cumulative_variance}" data-limit="{p.limit}"'
                f' data-flagged="{str(p.flagged).lower()}" data-kept="{str(p.kept).lower()}"'
                f' cx="{x_of(p.day.day)}" cy="{frame.y(float(p.cumulative_variance), lo, hi)}"'
                f' r="3.5" fill="{fill}" stroke="{colour}" stroke-width="1.5"/>'
            )
    else:
        parts.append(_message(frame, "no day reconciled this month yet"))
    parts.append(_frame_box(frame))
    parts.append("</svg>")
    return "".join(parts)


def _steps(points: Sequence[tuple[float, float]], end_x: float) -> str:
    """A step line through `points`: each value held until the next day's."""
    out: list[str] = []
    for (x, y), nxt in zip(points, [*points[1:], None], strict=True):
        out.append(f"{x},{y}")
        out.append(f"{nxt[0] if nxt else end_x},{y}")
    return " ".join(out)


def _litres(value: Decimal) -> str:
    return f"{value:,.0f}".replace(",", "\u2009")
