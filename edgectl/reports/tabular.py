"""A report as CSV, one figure per row (`section, key, field, value, unit`): every section in
one file a spreadsheet can filter and pivot, figures as the report's table writes them."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import IO

from edgectl.reports import fmt
from edgectl.reports.model import Report

HEADER = ("section", "key", "field", "value", "unit")
Row = tuple[str, str, str, str, str]


def rows(report: Report, tz: tzinfo | None = None) -> Iterator[Row]:
    period = report.period
    currency = report.currency
    places = fmt.money_places(report)

    def stamp(moment: datetime | None) -> str:
        return "" if moment is None else moment.astimezone(tz).isoformat(timespec="seconds")

    def dec(value: Decimal | None, unit: str = "L") -> tuple[str, str]:
        if value is None:
            return "", unit
        return (fmt.money(value, places) if unit == currency else fmt.litres(value)), unit

    yield ("report", period.kind, "title", period.title, "")
    yield ("report", period.kind, "station", report.station_id, "")
    yield ("report", period.kind, "start", stamp(period.start), "")
    yield ("report", period.kind, "end", stamp(period.end), "")
    yield ("report", period.kind, "timezone", report.timezone, "")
    yield ("report", period.kind, "generated_at", stamp(report.generated_at), "")
    if period.shift is not None:
        yield ("report", "shift", "id", str(period.shift), "")
        yield ("report", "shift", "running", "yes" if period.running else "no", "")
    for section, sums in (
        ("sales", (report.total,)),
        ("sales_by_grade", report.by_grade),
        ("sales_by_pump", report.by_pump),
        ("sales_by_source", report.by_source),
    ):
        for s in sums:
            yield (section, s.key, "sales", str(s.sales), "")
            yield (section, s.key, "litres", *dec(s.litres))
            yield (section, s.key, "amount", *dec(s.amount, currency))
    for hour in report.hours:
        key = hour.start.astimezone(tz).strftime("%Y-%m-%dT%H:00")
        for grade, value in hour.litres.items():
            yield ("sales_per_hour", key, grade, *dec(value))
    for c in report.nozzle_checks:
        key = f"pump {c.pump} nozzle {c.nozzle}"
        yield ("totals_check", key, "grade", c.grade, "")
        yield ("totals_check", key, "basis", c.basis, "")
        yield ("totals_check", key, "sales", str(c.sales), "")
        yield ("totals_check", key, "totals_start", *dec(c.start))
        yield ("totals_check", key, "totals_end", *dec(c.end))
        yield ("totals_check", key, "totals_moved", *dec(c.delta))
        yield ("totals_check", key, "sold", *dec(c.sold))
        yield ("totals_check", key, "difference", *dec(c.difference))
        yield ("totals_check", key, "amount_difference", *dec(c.amount_difference, currency))
        yield ("totals_check", key, "verdict", c.verdict, "")
    for d in report.deliveries:
        key = f"delivery {d.id}"
        yield ("deliveries", key, "tank", str(d.tank), "")
        yield ("deliveries", key, "start", stamp(d.start_at), "")
        yield ("deliveries", key, "end", stamp(d.end_at), "")
        yield ("deliveries", key, "delivered_15c", *dec(d.delivered_tc))
        yield ("deliveries", key, "delivered_gross", *dec(d.delivered))
        yield ("deliveries", key, "source", d.source, "")
    for b in report.tanks:
        key = f"tank {b.tank}"
        yield ("tanks", key, "basis", b.basis, "")
        figures: tuple[tuple[str, Decimal | None], ...] = (
            ("opening", b.opening),
            ("deliveries", b.deliveries),
            ("sales", b.sales),
            ("closing", b.closing),
            ("variance", b.variance),
            ("cumulative_variance", b.cumulative_variance),
            ("limit", b.limit),
        )
        for name, figure in figures:
            yield ("tanks", key, name, *dec(figure))
        yield (
            "tanks",
            key,
            "flagged",
            "" if b.flagged is None else "yes" if b.flagged else "no",
            "",
        )
    for a in report.alarms:
        key = f"alarm {a.id}" if a.id is not None else "alarm"
        yield ("alarms", key, "raised_at", stamp(a.raised_at), "")
        yield ("alarms", key, "cleared_at", stamp(a.cleared_at), "")
        yield ("alarms", key, "severity", a.severity, "")
        yield ("alarms", key, "kind", a.kind, "")
        yield ("alarms", key, "message", a.message, "")
    for finding in report.findings:
        yield ("findings", "", "finding", finding, "")


def write(handle: IO[str], report: Report, tz: tzinfo | None = None) -> int:
    """Write the CSV; the number of rows below the header."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(HEADER)
    count = 0
    for row in rows(report, tz):
        writer.writerow(row)
        count += 1
    return count
