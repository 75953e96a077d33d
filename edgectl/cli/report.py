"""`edgectl report day|shift`: a day's or a shift's sales, totals check, deliveries, tank stock
and variance, and alarms; as a table, `--json`, `--csv FILE` or one self-contained HTML page
with charts (`--html FILE`) to print or mail.

The database is read directly, read-only (safe while the daemon runs, and without it): a
report reads a whole period's rows, more than the control socket is for. The figures are
made by edgectl/reports (pure, tested without a CLI); this module only reads and prints.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console

from edgectl.cli import output
from edgectl.cli.books import narrow
from edgectl.cli.output import Markup, Subparsers
from edgectl.errors import EdgectlError
from edgectl.reports import fmt, gather, html, tabular
from edgectl.reports.model import Records, Report, Sum, build
from edgectl.store.store import StoreReader, open_read_only

DAY_EXAMPLE = """\
examples:
  edgectl report day                          # today so far
  edgectl report day yesterday --html /tmp/day.html
  edgectl report day 2026-11-24 --csv day.csv
  edgectl report day 2026-11-24 --json | jq .report.by_grade

A day is local midnight to midnight, as the daily reconciliation cuts it. --html writes one
page (inline CSS and SVG charts, nothing fetched from anywhere) to open, print or mail; '-' as
FILE writes to stdout. The database is read directly, read-only.
"""
WIDTH = 80  # every line of the table fits an 80-column terminal

SHIFT_EXAMPLE = """\
examples:
  edgectl report shift                        # the open shift so far, else the last one
  edgectl report shift 12 --html shift-12.html

A shift runs from `edgectl shift open` to `edgectl shift close`; its totals check holds each
nozzle's totals recorded then against its sales. The database is read directly, read-only.
"""


def register(sub: Subparsers) -> None:
    report = sub.add_parser(
        "report",
        help="a day's or a shift's report: table, JSON, CSV or an HTML page with charts",
        description="Report a day or a shift: sales by grade, pump and payment source, the "
        "totals check per nozzle, deliveries, tank stock and variance, alarms.",
        epilog=DAY_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = report.add_subparsers(dest="report_kind", metavar="day|shift", required=True)
    day = output.add_command(
        kinds,
        "day",
        help="one local day (default today)",
        description="Report one local day, midnight to midnight.",
        example=DAY_EXAMPLE,
        func=run_day,
        daemon=False,
        label="report day",
    )
    day.add_argument(
        "date", nargs="?", default="today", type=_day, help="today, yesterday or YYYY-MM-DD"
    )
    _formats(day)
    shift = output.add_command(
        kinds,
        "shift",
        help="one shift (default the open one, else the last)",
        description="Report one shift, from its opening to its closing (or to now).",
        example=SHIFT_EXAMPLE,
        func=run_shift,
        daemon=False,
        label="report shift",
    )
    shift.add_argument("id", nargs="?", type=output.positive_int, help="the shift's number")
    _formats(shift)


def _formats(parser: argparse.ArgumentParser) -> None:
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--csv", metavar="FILE", help="write CSV ('-': stdout)")
    formats.add_argument("--html", metavar="FILE", help="write one HTML page ('-': stdout)")
    # A fixed "now" for the report (reprints, tests): an ISO time.
    parser.add_argument("--now", type=_now, default=None, help=argparse.SUPPRESS)


def _day(text: str) -> date:
    value = text.strip().lower()
    today = datetime.now().astimezone().date()
    if value == "today":
        return today
    if value == "yesterday":
        return today - timedelta(days=1)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a day: use today, yesterday or YYYY-MM-DD"
        ) from None


def _now(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO time") from None
    return moment if moment.tzinfo is not None else moment.astimezone()


# --------------------------------------------------------------------------- commands


def run_day(args: argparse.Namespace) -> int:
    def records(reader: StoreReader, now: datetime, source: str) -> Records:
        return gather.day_records(reader, config, args.date, now=now, source=source)

    config = output.target(args).require_config()
    return _report(args, config.store.path, records)


def run_shift(args: argparse.Namespace) -> int:
    def records(reader: StoreReader, now: datetime, source: str) -> Records:
        return gather.shift_records(reader, config, args.id, now=now, source=source)

    config = output.target(args).require_config()
    return _report(args, config.store.path, records)


def _report(
    args: argparse.Namespace,
    path: Path,
    records: Callable[[StoreReader, datetime, str], Records],
) -> int:
    now = args.now or datetime.now(UTC)
    db = open_read_only(path)
    try:
        report = build(records(StoreReader(db), now, str(path)))
    finally:
        db.close()
    if args.html is not None:
        return _write(args, args.html, html.page(report), "page")
    if args.csv is not None:
        buffer = io.StringIO()
        tabular.write(buffer, report)
        return _write(args, args.csv, buffer.getvalue(), "CSV")
    if args.json:
        output.print_json({"source": "database", "report": report})
        return output.EXIT_OK
    render(report, output.console())
    return output.EXIT_OK


def _write(args: argparse.Namespace, target: str, text: str, what: str) -> int:
    """Write the whole file, then move it into place: a half-written report is never left."""
    if target == "-":
        sys.stdout.write(text)
        return output.EXIT_OK
    destination = Path(target)
    partial = destination.with_name(f".{destination.name}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, destination)
    except OSError as exc:
        raise EdgectlError(
            f"cannot write {target}: {exc.strerror or exc}"
            + (" (no such directory)" if not destination.parent.is_dir() else "")
        ) from None
    finally:
        partial.unlink(missing_ok=True)
    if args.json:
        output.print_json({"file": str(destination), "format": what.lower()})
    else:
        print(f"wrote the {what} to {destination}")
    return output.EXIT_OK


# --------------------------------------------------------------------------- the table


def render(report: Report, out: Console) -> None:
    """The report for people, every line within 80 columns."""
    period = report.period
    places = fmt.money_places(report)
    station = report.station_id + (f" ({report.station_name})" if report.station_name else "")
    out.print(f"[bold]{output.esc(period.title)}[/], station {output.esc(station)}")
    out.print(f"{output.esc(fmt.span(report))}, local time ({output.esc(report.timezone)})")
    if period.kind == "shift":
        who = [
            f"opened by {period.opened_by}" if period.opened_by else "",
            f"closed by {period.closed_by}" if period.closed_by else "",
        ]
        if any(who):
            out.print(output.esc(", ".join(w for w in who if w)))
    out.print(
        f"made {fmt.clock(report.generated_at, date=True)} from {output.esc(report.source)}"
        " (read-only)"
    )
    out.print()
    if report.findings:
        out.print("[bold red]to look at:[/]")
        for finding in report.findings:
            said = textwrap.fill(finding, WIDTH, initial_indent="  - ", subsequent_indent="    ")
            out.print(output.esc(said))
    else:
        out.print("[green]nothing to look at[/]: totals match, tanks within their limits")
    out.print()
    total = report.total
    out.print(
        f"[bold]{total.sales} sale(s), {fmt.litres(total.litres)} L,"
        f" {fmt.money(total.amount, places)} {output.esc(report.currency)}[/]"
    )
    for title, sums in (
        ("by grade", report.by_grade),
        ("by pump", report.by_pump),
        ("by payment source", report.by_source),
    ):
        out.print(_sums(title, sums, report.currency, places))
    out.print(_checks(report))
    if report.tanks:
        out.print(_stock(report))
        out.print(_variance(report))
        out.print(
            "the month's cumulative variance against 1 % of its throughput + allowance"
            if period.kind == "day"
            else "the shift's variance against 1 % of its sales + the tank's allowance"
        )
        out.print()
    out.print(_deliveries(report))
    out.print(_alarms(report))


def _sums(title: str, sums: tuple[Sum, ...], currency: str, places: int) -> Any:
    grid = narrow(
        f"sales {title}",
        (("", False), ("sales", True), ("litres", True), (currency, True)),
    )
    for s in sums:
        grid.add_row(
            output.esc(s.name), str(s.sales), fmt.litres(s.litres), fmt.money(s.amount, places)
        )
    if not sums:
        grid.add_row("none", "0", fmt.litres(Decimal(0)), fmt.money(Decimal(0), places))
    return grid


def _checks(report: Report) -> Any:
    grid = narrow(
        "totals check (litres)",
        (
            ("pump", True),
            ("noz", True),
            ("grade", False),
            ("moved", True),
            ("sold", True),
            ("diff", True),
            ("verdict", False),
        ),
    )
    for c in report.nozzle_checks:
        style = {"ok": "green", "mismatch": "bold red"}.get(c.verdict)
        text = output.esc(c.verdict.upper() if c.verdict == "mismatch" else c.verdict)
        grid.add_row(
            str(c.pump),
            str(c.nozzle),
            output.esc(report.grade_names.get(c.grade, c.grade)),
            fmt.litres(c.delta),
            fmt.litres(c.sold),
            fmt.signed(c.difference),
            Markup(f"[{style}]{text}[/]" if style else text),
        )
    bases = sorted({c.basis for c in report.nozzle_checks})
    grid.caption = output.esc(f"totals from: {'; '.join(bases)}") if bases else None
    grid.caption_justify = "left"
    return grid


def _stock(report: Report) -> Any:
    grid = narrow(
        "tank stock (litres at 15 °C)",
        (
            ("tank", True),
            ("product", False),
            ("opening", True),
            ("delivered", True),
            ("sold", True),
            ("closing", True),
        ),
    )
    for b in report.tanks:
        grid.add_row(
            str(b.tank),
            output.esc(b.name or b.product),
            fmt.litres(b.opening),
            fmt.litres(b.deliveries),
            fmt.litres(b.sales),
            fmt.litres(b.closing),
        )
    return grid


def _variance(report: Report) -> Any:
    month = report.period.kind == "day"
    columns: list[tuple[str, bool]] = [("tank", True), ("variance", True)]
    if month:
        columns.append(("month cum.", True))
    columns += [("limit", True), ("verdict", False), ("book", False)]
    grid = narrow("variance (litres at 15 °C: measured - book)", columns)
    for b in report.tanks:
        if b.basis == "none":
            verdict = Markup("no readings")
        elif b.flagged:
            verdict = Markup("[bold red]OVER LIMIT[/]")
        else:
            verdict = Markup("[green]ok[/]")
        row = [str(b.tank), fmt.signed(b.variance)]
        if month:
            row.append(fmt.signed(b.cumulative_variance))
        row += [fmt.litres(b.limit), verdict, b.basis]
        grid.add_row(*row)
    return grid


def _deliveries(report: Report) -> Any:
    if not report.deliveries:
        return "no delivery in this period"
    grid = narrow(
        "deliveries",
        (
            ("tank", True),
            ("started", False),
            ("ended", False),
            ("15 °C L", True),
            ("gross L", True),
            ("by", False),
        ),
    )
    for d in report.deliveries:
        grid.add_row(
            str(d.tank),
            fmt.when(d.start_at, report.period),
            fmt.when(d.end_at, report.period),
            fmt.litres(d.delivered_tc),
            fmt.litres(d.delivered),
            output.esc(d.source),
        )
    return grid


def _alarms(report: Report) -> Any:
    if not report.alarms:
        return "no alarm in this period"
    grid = narrow(
        "alarms",
        (("raised", False), ("cleared", False), ("severity", False), ("message", False)),
    )
    rows = [
        (
            fmt.when(a.raised_at, report.period),
            fmt.when(a.cleared_at, report.period) if a.cleared_at else "active",
            a.severity,
            a.message,
        )
        for a in report.alarms
    ]
    for raised, cleared, severity, message in rows:
        grid.add_row(
            raised,
            Markup("[red]active[/]") if cleared == "active" else cleared,
            Markup(f"[bold red]{severity}[/]") if severity == "critical" else output.esc(severity),
            output.esc(message),
        )
    # The message takes what the other columns leave of 80 (each column pads by 2).
    used = sum(
        max(len(row[i]) for row in [*rows, ("raised", "cleared", "severity", "")]) for i in range(3)
    )
    grid.columns[-1].max_width = max(20, WIDTH - used - 2 * 4 - 2)
    return grid
