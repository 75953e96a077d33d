"""A report as ONE self-contained HTML page a manager prints or mails: inline CSS (with a print
style for A4), inline SVG charts (`charts`), no script, no font, no image or link to fetch: the
page opens from a file, offline, and asks nothing of any server."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import tzinfo
from decimal import Decimal
from html import escape
from typing import Final

import edgectl
from edgectl.reports import charts, fmt
from edgectl.reports.model import Report, Sum, TankBook, grades_in

STYLE: Final = """
:root { --ink: #1d2733; --muted: #5b6b7a; --line: #d8dde3; --bad: #c0392b; --good: #2e8b3e;
  --soft: #f3f5f7; }
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { margin: 0 auto; max-width: 780px; padding: 24px 20px 40px; color: var(--ink);
  font: 13px/1.45 "DejaVu Sans", "Liberation Sans", Arial, Helvetica, sans-serif; }
header { border-bottom: 2px solid var(--ink); padding-bottom: 8px; margin-bottom: 14px; }
h1 { font-size: 22px; margin: 0 0 2px; }
h2 { font-size: 15px; margin: 22px 0 6px; padding-bottom: 2px;
  border-bottom: 1px solid var(--line); break-after: avoid; page-break-after: avoid; }
h3 { font-size: 13px; margin: 12px 0 4px; color: var(--muted); break-after: avoid; }
p { margin: 2px 0; }
.meta { color: var(--muted); font-size: 12px; }
.kpis { display: flex; flex-wrap: wrap; gap: 8px; margin: 10px 0; }
.kpi { flex: 1 1 120px; background: var(--soft); border: 1px solid var(--line);
  border-radius: 4px; padding: 6px 10px; }
.kpi .value { font-size: 18px; font-weight: bold; font-variant-numeric: tabular-nums; }
.kpi .label { color: var(--muted); font-size: 11px; text-transform: uppercase; }
.findings { border-left: 4px solid var(--bad); background: #fbeeec; padding: 6px 10px;
  margin: 10px 0; }
.findings.clear { border-left-color: var(--good); background: #edf6ee; }
.findings ul { margin: 2px 0; padding-left: 18px; }
.columns { display: flex; flex-wrap: wrap; gap: 16px; }
.columns > div { flex: 0 1 calc(50% - 8px); min-width: 240px; }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; }
th, td { padding: 3px 6px; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
th { font-size: 11px; color: var(--muted); text-transform: uppercase; font-weight: normal;
  border-bottom: 1px solid var(--ink); }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.nowrap { white-space: nowrap; }
.tag { color: var(--muted); font-size: 11px; }
tr.total td { font-weight: bold; border-top: 1px solid var(--ink); }
.bad { color: var(--bad); font-weight: bold; }
.good { color: var(--good); }
.muted { color: var(--muted); }
figure { margin: 6px 0 12px; break-inside: avoid; page-break-inside: avoid; }
figcaption { color: var(--muted); font-size: 11px; margin-top: 2px; }
svg.chart { display: block; width: 100%; height: auto; font-size: 11px; }
svg.chart text { fill: var(--ink); font-family: inherit; }
svg.chart text.tick, svg.chart text.unit { fill: var(--muted); }
svg.chart text.empty { fill: var(--muted); font-style: italic; font-size: 13px; }
.tank { break-inside: avoid; page-break-inside: avoid; }
footer { margin-top: 24px; color: var(--muted); font-size: 11px;
  border-top: 1px solid var(--line); padding-top: 6px; }
@page { size: A4; margin: 12mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  h2 { margin-top: 14px; }
  .kpi { border-color: #bbb; }
  section { break-inside: auto; }
  table { page-break-inside: auto; }
  tr { break-inside: avoid; page-break-inside: avoid; }
}
"""


def page(report: Report, tz: tzinfo | None = None) -> str:
    """The whole page for `report`, times in `tz` (None: local)."""
    period = report.period
    station = report.station_id + (f" · {report.station_name}" if report.station_name else "")
    title = f"{period.title} — {report.station_id}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f'<header><h1>{escape(period.title)}</h1><p class="station">Station {escape(station)}</p>',
        f'<p class="meta">{escape(fmt.span(report, tz))}; times are local'
        f" ({escape(report.timezone)})" + _shift_people(report) + "</p>",
        f'<p class="meta">made {escape(fmt.clock(report.generated_at, tz, date=True))}'
        + (f" from {escape(report.source)}" if report.source else "")
        + "</p></header>",
        _kpis(report),
        _findings(report),
        *_sales(report, tz),
        *_checks(report),
        *_tanks(report, tz),
        *_deliveries(report, tz),
        *_alarms(report, tz),
        f"<footer>edgectl {escape(edgectl.__version__)} · litres at 15 °C for stock, "
        "as metered for sales · money in "
        f"{escape(report.currency)}</footer>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _shift_people(report: Report) -> str:
    period = report.period
    if period.kind != "shift":
        return ""
    who = []
    if period.opened_by:
        who.append(f"opened by {escape(period.opened_by)}")
    if period.closed_by:
        who.append(f"closed by {escape(period.closed_by)}")
    return "; " + ", ".join(who) if who else ""


def _kpis(report: Report) -> str:
    places = fmt.money_places(report)
    delivered = sum((d.delivered_tc for d in report.deliveries), Decimal(0))
    boxes = [
        ("sales", str(report.total.sales)),
        ("litres sold", fmt.litres(report.total.litres)),
        (f"amount {report.currency}", fmt.money(report.total.amount, places)),
        ("deliveries", f"{len(report.deliveries)} · {fmt.litres(delivered, 0)} L"),
        ("alarms", str(len(report.alarms))),
    ]
    cells = "".join(
        f'<div class="kpi" data-kpi="{escape(label)}"><div class="value">{escape(value)}</div>'
        f'<div class="label">{escape(label)}</div></div>'
        for label, value in boxes
    )
    return f'<section class="kpis">{cells}</section>'


def _findings(report: Report) -> str:
    if not report.findings:
        return (
            '<section class="findings clear"><strong>Nothing to look at:</strong> every'
            " nozzle's totals match its sales, every tank is within its variance limit, and"
            " no critical alarm was raised.</section>"
        )
    items = "".join(f"<li>{escape(f)}</li>" for f in report.findings)
    return f'<section class="findings"><strong>To look at</strong><ul>{items}</ul></section>'


def _table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: Iterable[int] = (),
    cls: str = "",
    total: Sequence[str] | None = None,
    nowrap: Iterable[int] = (),
) -> str:
    right, whole = set(numeric), set(nowrap)

    def cell(tag: str, index: int, value: str) -> str:
        klass = ' class="n"' if index in right else ' class="nowrap"' if index in whole else ""
        return f"<{tag}{klass}>{value}</{tag}>"

    head = "".join(cell("th", i, escape(h)) for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows
    )
    if total is not None:
        body += (
            '<tr class="total">' + "".join(cell("td", i, v) for i, v in enumerate(total)) + "</tr>"
        )
    klass = f' class="{cls}"' if cls else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _sum_rows(sums: Sequence[Sum], places: int) -> list[list[str]]:
    return [
        [escape(s.name), str(s.sales), fmt.litres(s.litres), fmt.money(s.amount, places)]
        for s in sums
    ]


def _sales(report: Report, tz: tzinfo | None) -> list[str]:
    places = fmt.money_places(report)
    total = [
        "all",
        str(report.total.sales),
        fmt.litres(report.total.litres),
        fmt.money(report.total.amount, places),
    ]
    blocks = []
    for heading, sums, cls in (
        ("by grade", report.by_grade, "by-grade"),
        ("by pump", report.by_pump, "by-pump"),
        ("by payment source", report.by_source, "by-source"),
    ):
        blocks.append(
            f"<div><h3>{heading}</h3>"
            + _table(
                ("", "sales", "litres", report.currency),
                _sum_rows(sums, places),
                numeric=(1, 2, 3),
                cls=cls,
                total=total,
            )
            + "</div>"
        )
    grades = [g.id for g in report.grades if g.id in grades_in(report.hours)]
    chart = charts.hourly_chart(report.hours, grades, report.grade_names, tz)
    return [
        '<section class="sales"><h2>Sales</h2>',
        f'<div class="columns">{"".join(blocks)}</div>',
        f'<figure class="hourly">{chart}<figcaption>Litres sold per hour (local time),'
        " by grade.</figcaption></figure></section>",
    ]


def _checks(report: Report) -> list[str]:
    rows = []
    for c in report.nozzle_checks:
        verdict = c.verdict
        klass = "bad" if verdict == "mismatch" else "good" if verdict == "ok" else "muted"
        rows.append(
            [
                str(c.pump),
                str(c.nozzle),
                escape(report.grade_names.get(c.grade, c.grade)),
                fmt.litres(c.start),
                fmt.litres(c.end),
                fmt.litres(c.delta),
                fmt.litres(c.sold),
                fmt.signed(c.difference),
                f'<span class="{klass}">{escape(verdict)}</span>',
            ]
        )
    basis = sorted({c.basis for c in report.nozzle_checks})
    note = (
        "Each nozzle's electronic totals at both ends of the period, held against the sum of"
        f" its sales ({escape('; '.join(basis)) or 'no totals'})."
    )
    return [
        '<section class="checks"><h2>Totals check</h2>',
        f'<p class="meta">{note}</p>',
        _table(
            (
                "pump",
                "nozzle",
                "grade",
                "totals at start",
                "at end",
                "moved L",
                "sold L",
                "difference",
                "",
            ),
            rows,
            numeric=(0, 1, 3, 4, 5, 6, 7),
            cls="nozzle-checks",
        ),
        "</section>",
    ]


def _book_verdict(book: TankBook) -> str:
    if book.basis == "none":
        return '<span class="muted">no readings</span>'
    if book.flagged:
        return '<span class="bad">over limit</span>'
    return '<span class="good">within</span>'


def _tanks(report: Report, tz: tzinfo | None) -> list[str]:
    if not report.tanks:
        return []
    day = report.period.kind == "day"
    rows = [
        [
            escape(f"{b.tank} · {b.name or b.product}"),
            fmt.litres(b.opening),
            fmt.litres(b.deliveries),
            fmt.litres(b.sales),
            fmt.litres(b.closing),
            fmt.signed(b.variance),
            *([fmt.signed(b.cumulative_variance)] if day else []),
            fmt.litres(b.limit),
            _book_verdict(b)
            + ('<br><span class="tag">provisional</span>' if b.basis == "provisional" else ""),
        ]
        for b in report.tanks
    ]
    headers = [
        "tank",
        "opening",
        "delivered",
        "sold",
        "closing",
        "variance",
        *(["cumulative"] if day else []),
        "limit",
        "",
    ]
    limit_note = (
        "the month's cumulative variance is held against 1 % of its throughput plus the"
        " tank's allowance"
        if day
        else "the shift's variance is held against 1 % of its sales plus the tank's allowance"
    )
    parts = [
        '<section class="tanks"><h2>Tanks</h2>',
        f'<p class="meta">Stock at 15 °C, litres; {limit_note}. Provisional: worked out'
        " from the readings, the daemon keeps the day's reconciliation after midnight.</p>",
        _table(headers, rows, numeric=range(1, len(headers) - 1), cls="tank-books", nowrap=(0,)),
    ]
    levels = {lv.tank: lv for lv in report.levels}
    variance = {v.tank: v for v in report.variance}
    for book in report.tanks:
        name = escape(book.name or book.product)
        parts.append(
            f'<div class="tank" data-tank="{book.tank}"><h3>Tank {book.tank} · {name}</h3>'
        )
        if book.tank in levels:
            marks = len(levels[book.tank].deliveries)
            chart = charts.levels_chart(levels[book.tank], report.period, tz)
            parts.append(
                f'<figure class="levels">{chart}'
                f"<figcaption>Stock at 15 °C over the period"
                + (f"; {marks} delivery(ies) shaded and marked" if marks else "")
                + ".</figcaption></figure>"
            )
        if book.tank in variance:
            series = variance[book.tank]
            parts.append(
                f'<figure class="variance">{charts.variance_chart(series)}<figcaption>'
                f"Cumulative variance through {escape(series.month.strftime('%B %Y'))}"
                " against its limit (dashed); a red point is beyond it, a hollow one not"
                " reconciled by the daemon yet.</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append("</section>")
    return parts


def _deliveries(report: Report, tz: tzinfo | None) -> list[str]:
    rows = [
        [
            str(d.tank),
            escape(fmt.when(d.start_at, report.period, tz)),
            escape(fmt.when(d.end_at, report.period, tz)),
            fmt.litres(d.delivered_tc),
            fmt.litres(d.delivered),
            escape(d.source),
        ]
        for d in report.deliveries
    ]
    body = (
        _table(
            ("tank", "started", "ended", "at 15 °C L", "gross L", "reported by"),
            rows,
            numeric=(0, 3, 4),
            cls="deliveries",
        )
        if rows
        else '<p class="muted">No delivery in this period.</p>'
    )
    return ['<section class="deliveries"><h2>Deliveries</h2>', body, "</section>"]


def _alarms(report: Report, tz: tzinfo | None) -> list[str]:
    rows = []
    for a in report.alarms:
        severity = (
            f'<span class="{"bad" if a.severity == "critical" else ""}">'
            + escape(a.severity)
            + "</span>"
        )
        rows.append(
            [
                escape(fmt.when(a.raised_at, report.period, tz)),
                escape(fmt.when(a.cleared_at, report.period, tz))
                if a.cleared_at
                else '<span class="bad">active</span>',
                severity,
                escape(a.kind),
                escape(a.message),
            ]
        )
    body = (
        _table(("raised", "cleared", "severity", "kind", "message"), rows, cls="alarms")
        if rows
        else '<p class="muted">No alarm in this period.</p>'
    )
    return ['<section class="alarms"><h2>Alarms</h2>', body, "</section>"]
