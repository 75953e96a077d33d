"""`edgectl deliveries|reconciliation|totals`: the wet-stock book and the meters the daemon keeps.

Like `sales`, these ask the running daemon and, when it is not running, read the database
themselves, read-only. Every table fits an 80-column terminal.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from rich import box
from rich.table import Table

from edgectl.cli import output
from edgectl.cli.output import Markup, Subparsers, Target
from edgectl.cli.records import fetch
from edgectl.control.shapes import open_tank_alarms, tank_rows
from edgectl.forecourt.tanks import RECONCILIATION_ALLOWANCE_L, litres
from edgectl.forecourt.wetstock import THROUGHPUT_SHARE
from edgectl.store.store import StoreReader, open_read_only

DELIVERIES_EXAMPLE = """\
examples:
  edgectl deliveries                 # the latest 50 deliveries
  edgectl deliveries --tank 2 --since 7d
  edgectl deliveries --json

Delivered litres are the tank's rise plus what its pumps sold meanwhile, at 15 °C and gross;
"reported by" is the gauge's own delivery report, or the station's detection from the level.
Works without the daemon too: the database is then read directly, read-only.
"""
RECONCILIATION_EXAMPLE = """\
examples:
  edgectl reconciliation             # every tank, the last 7 days
  edgectl reconciliation --tank 1 --days 31
  edgectl reconciliation --json

The daemon reconciles each tank's previous day after local midnight: book = opening +
deliveries - sales; variance = closing - book, all at 15 °C. Variances add up over the month;
the verdict holds that cumulative variance against 1 % of the month's throughput plus the
tank's allowance (reconciliation_limit_l). Works without the daemon too (read-only).
"""
TOTALS_EXAMPLE = """\
examples:
  edgectl totals
  edgectl totals --json

Each nozzle's electronic totals (the pump's meter) as the station last read them, and their
last check: a sale whose totals moved by exactly its volume and amount is "ok"; "MISMATCH"
is a sale they disagree with; "MOVED" totals that grew while no sale was recorded (both raise
a critical alarm). Works without the daemon too (read-only).
"""


def register(sub: Subparsers) -> None:
    deliveries = output.add_command(
        sub,
        "deliveries",
        help="deliveries into the tanks",
        description="List the deliveries the station recorded, oldest first: tank, when, "
        "litres at 15 °C and gross, sold meanwhile, and who reported it.",
        example=DELIVERIES_EXAMPLE,
        func=run_deliveries,
    )
    deliveries.add_argument("--tank", type=_tank, help="only this tank")
    deliveries.add_argument(
        "--since", type=output.since, metavar="WHEN", help="ended from this time on"
    )
    deliveries.add_argument(
        "--limit", type=output.positive_int, metavar="N", help="at most N rows (default 50)"
    )
    deliveries.add_argument("--all", action="store_true", help="every row, however many")

    reconciliation = output.add_command(
        sub,
        "reconciliation",
        help="the daily wet-stock book of each tank",
        description="Show each tank's daily reconciliation: opening, deliveries, sales, "
        "closing, variance, the month's cumulative variance and its verdict.",
        example=RECONCILIATION_EXAMPLE,
        func=run_reconciliation,
    )
    reconciliation.add_argument("--tank", type=_tank, help="only this tank")
    reconciliation.add_argument(
        "--days",
        type=output.positive_int,
        default=7,
        metavar="N",
        help="the last N days (default 7)",
    )

    output.add_command(
        sub,
        "totals",
        help="each nozzle's electronic totals and their last check against sales",
        description="Show each nozzle's electronic totals (volume and amount) as last read, "
        "and how they last compared with the sales.",
        example=TOTALS_EXAMPLE,
        func=run_totals,
    )


def _tank(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a tank number") from None
    if not 1 <= number <= 99:
        raise argparse.ArgumentTypeError(f"tank numbers are 1..99, not {number}")
    return number


def narrow(title: str | None, columns: Sequence[tuple[str, bool]]) -> Table:
    """A table laid out as the other commands' (output.table) whose cells never wrap: a long
    text ends in an ellipsis. `columns`: (header, right-aligned number)."""
    grid = Table(
        title=title,
        box=box.SIMPLE_HEAD,
        title_justify="left",
        pad_edge=False,
        collapse_padding=True,
    )
    for header, number in columns:
        grid.add_column(
            header, justify="right" if number else "left", no_wrap=True, overflow="ellipsis"
        )
    return grid


def short_time(stamp: str | datetime | None) -> str:
    """A stored time in the technician's local time, short: 11-24 14:05."""
    if stamp is None:
        return "-"
    moment = stamp if isinstance(stamp, datetime) else _parse(stamp)
    return moment.astimezone().strftime("%m-%d %H:%M")


def zone_note() -> str:
    now = datetime.now().astimezone()
    offset = now.strftime("%z")
    return f"times local ({now.tzname()}, UTC{offset[:3]}:{offset[3:]})"


def _parse(stamp: str) -> datetime:
    moment = datetime.fromisoformat(stamp)
    return moment if moment.tzinfo is not None else moment.astimezone()


def fixed(value: Any, places: int = 2) -> str:
    """A figure with `places` decimals, halves rounded away from zero as people do."""
    if value is None or value == "":
        return "-"
    exact = Decimal(str(value)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return f"{exact:.{places}f}"


# --------------------------------------------------------------------------- deliveries


def run_deliveries(args: argparse.Namespace) -> int:
    limit = None if args.all else (args.limit or 50)
    rows, source = fetch(
        args,
        "deliveries",
        {"since": args.since, "tank": args.tank, "limit": args.limit, "all": args.all},
        lambda reader: reader.deliveries(since=args.since, tank=args.tank, limit=limit),
    )
    if args.json:
        output.print_json({"source": source, "deliveries": rows})
        return output.EXIT_OK
    out = output.console()
    if not rows:
        out.print("no deliveries recorded" + (f" into tank {args.tank}" if args.tank else ""))
        return output.EXIT_OK
    grid = narrow(
        None,
        (
            ("id", True),
            ("tank", True),
            ("ended", False),
            ("took", True),
            ("15 °C L", True),
            ("gross L", True),
            ("sold meanwhile", True),
            ("reported by", False),
        ),
    )
    for d in rows:
        took = (_parse(d["end_at"]) - _parse(d["start_at"])).total_seconds()
        grid.add_row(
            str(d["id"]),
            str(d["tank"]),
            short_time(d["end_at"]),
            output.duration(took),
            fixed(d["delivered_tc"]),
            fixed(d["delivered"]),
            fixed(d["dispensed_during"]),
            "gauge" if d["source"] == "gauge" else "detected",
        )
    out.print(grid)
    total = sum((Decimal(d["delivered_tc"]) for d in rows), Decimal(0))
    out.print(f"{len(rows)} delivery(ies), {total:.2f} L at 15 °C; {zone_note()}")
    return output.EXIT_OK


# --------------------------------------------------------------------------- reconciliation


def run_reconciliation(args: argparse.Namespace) -> int:
    since = (date.today() - timedelta(days=args.days)).isoformat()
    rows, source = fetch(
        args,
        "reconciliations",
        {"tank": args.tank, "since_day": since},
        lambda reader: reader.reconciliations(tank=args.tank, since_day=since),
    )
    station = output.target(args)
    allowances = _allowances(station)
    for row in rows:
        allowance = allowances.get(int(row["tank"]), RECONCILIATION_ALLOWANCE_L)
        row["limit"] = str(litres(Decimal(row["period_throughput"]) * THROUGHPUT_SHARE) + allowance)
        row["flagged"] = bool(row["flagged"])
        row["verdict"] = "flagged" if row["flagged"] else "ok"
    if args.json:
        output.print_json({"source": source, "reconciliations": rows})
        return output.EXIT_OK
    out = output.console()
    if not rows:
        which = f"tank {args.tank}" if args.tank else "any tank"
        out.print(f"no reconciliation kept for {which} in the last {args.days} day(s)")
        return output.EXIT_OK
    names = _tank_names(station)
    for tank in sorted({int(r["tank"]) for r in rows}):
        name = names.get(tank)
        grid = narrow(
            f"tank {tank}" + (f" ({name})" if name else ""),
            (
                ("day", False),
                ("open", True),
                ("in", True),
                ("sold", True),
                ("close", True),
                ("var", True),
                ("cum var", True),
                ("limit", True),
                ("verdict", False),
            ),
        )
        for r in (r for r in rows if int(r["tank"]) == tank):
            grid.add_row(
                r["day"],
                fixed(r["opening"], 0),
                fixed(r["deliveries"], 0),
                fixed(r["sales"], 0),
                fixed(r["closing"], 0),
                fixed(r["variance"], 0),
                fixed(r["cumulative_variance"], 0),
                fixed(r["limit"], 0),
                Markup("[bold red]FLAGGED[/]") if r["flagged"] else Markup("[green]ok[/]"),
            )
        out.print(grid)
    out.print("litres at 15 °C, to the litre (--json: to 0.01 L); the verdict holds the")
    out.print("month's cumulative variance against its limit (1 % of throughput + allowance)")
    return output.EXIT_OK


def _allowances(station: Target) -> dict[int, Decimal]:
    if station.config is None:
        return {}
    return {t.number: t.reconciliation_limit_l for t in station.config.tanks}


def _tank_names(station: Target) -> dict[int, str]:
    if station.config is None:
        return {}
    return {t.number: t.name for t in station.config.tanks if t.name}


# --------------------------------------------------------------------------- totals


def last_check(row: dict[str, Any]) -> dict[str, Any]:
    """How a nozzle's totals last compared with the sales: the newer of its last sale that
    carried totals and its last totals alarm; `verdict` ok, mismatch, moved or none."""
    sale, alarm = row.get("last_sale"), row.get("last_alarm")
    check: dict[str, Any] = {"verdict": "none", "at": None, "sale_id": None, "detail": None}
    if sale is not None:
        before = sale["total_volume_before"]
        check.update(at=sale["recorded_at"], sale_id=sale["id"])
        if before is None:
            check.update(verdict="first", detail="first sale read with totals: nothing before")
        else:
            moved = Decimal(sale["total_volume_after"]) - Decimal(before)
            moved_amount = Decimal(sale["total_amount_after"]) - Decimal(
                sale["total_amount_before"]
            )
            same = moved == Decimal(sale["volume"]) and moved_amount == Decimal(sale["amount"])
            check.update(
                verdict="ok" if same else "mismatch",
                detail=f"totals moved {moved} L / {moved_amount}, the sale is "
                f"{sale['volume']} L / {sale['amount']}",
            )
    if alarm is not None and (check["at"] is None or str(alarm["raised_at"]) >= check["at"]):
        moved = alarm["kind"] == "missed_sale"
        if moved or check["verdict"] != "mismatch":
            check.update(
                verdict="moved" if moved else "mismatch",
                at=alarm["raised_at"],
                detail=alarm["message"],
            )
    return check


def run_totals(args: argparse.Namespace) -> int:
    rows, source = fetch(args, "totals", {}, lambda reader: reader.nozzle_totals())
    station = output.target(args)
    grades = {}
    if station.config is not None:
        grades = {(p.number, n): g for p in station.config.pumps for n, g in p.nozzles.items()}
    for row in rows:
        row["grade"] = grades.get((int(row["pump"]), int(row["nozzle"])))
        row["last_check"] = last_check(row)
    if args.json:
        output.print_json({"source": source, "totals": rows})
        return output.EXIT_OK
    out = output.console()
    if not rows:
        out.print("no nozzle totals read yet (the daemon reads them from each idle pump)")
        return output.EXIT_OK
    grid = narrow(
        None,
        (
            ("pump", True),
            ("noz", True),
            ("grade", False),
            ("volume L", True),
            ("amount", True),
            ("read", False),
            ("last check", False),
        ),
    )
    for row in rows:
        check = row["last_check"]
        grid.add_row(
            str(row["pump"]),
            str(row["nozzle"]),
            output.esc(row["grade"] or "-"),
            fixed(row["volume"]),
            fixed(row["amount"]),
            short_time(row["updated_at"]),
            _verdict(check),
        )
    out.print(grid)
    bad = [r for r in rows if r["last_check"]["verdict"] in ("mismatch", "moved")]
    for row in bad:
        said = f"pump {row['pump']} nozzle {row['nozzle']}: {row['last_check']['detail']}"
        out.print(output.esc(textwrap.fill(said, 80, subsequent_indent="  ")))
    out.print(zone_note())
    return output.EXIT_OK


def _verdict(check: dict[str, Any]) -> Markup:
    verdict, sale = check["verdict"], check["sale_id"]
    if verdict == "ok":
        return Markup(f"[green]ok[/], sale {sale}")
    if verdict == "mismatch":
        return Markup("[bold red]MISMATCH[/]" + (f", sale {sale}" if sale else ""))
    if verdict == "moved":
        return Markup("[bold red]MOVED[/], no sale")
    if verdict == "first":
        return Markup(f"first, sale {sale}")
    return Markup("no sale yet")


# --------------------------------------------------------------------------- tanks


def stored_tanks(station: Target) -> tuple[list[dict[str, Any]], str] | None:
    """With the daemon down: every configured tank with its last reading kept in the store
    (read-only) and the store's open tank alarms, and a note saying how old the newest
    reading is; None when there is no store to read."""
    config = station.config
    if config is None or not config.store.path.is_file():
        return None
    db = open_read_only(config.store.path)
    try:
        reader = StoreReader(db)
        latest = reader.tank_latest()
        alarms = open_tank_alarms(reader.alarms(active_only=True))
    finally:
        db.close()
    rows = tank_rows(config, stored_alarms=alarms, stored_readings=latest)
    ages = [r["reading_age_s"] for r in rows if r["reading_age_s"] is not None]
    if not ages:
        return rows, f"no reading kept in {config.store.path}"
    newest = min(ages)
    return rows, (
        f"the last readings kept in {config.store.path}, read-only; the newest is "
        f"{output.duration(newest)} old"
    )
