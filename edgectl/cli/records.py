"""`edgectl sales|orders|outbox|alarms|audit|export`: what the store holds.

These ask the running daemon; when it is not running they read the database itself, read-only,
so a technician can still see and export the day's sales.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from edgectl.cli import output
from edgectl.cli.output import Subparsers
from edgectl.control.client import DaemonNotRunning
from edgectl.store.store import StoreReader, open_read_only

T = TypeVar("T")

SALES_EXAMPLE = """\
examples:
  edgectl sales                      # the latest 50 sales
  edgectl sales --since today --pump 3
  edgectl sales --since 2h --json
  edgectl sales --since 2026-11-24 --all

--since takes 30m, 2h, 7d, today, yesterday, a date or a date and time (local time).
Works without the daemon too: the database is then read directly, read-only.
"""
ORDERS_EXAMPLE = """\
examples:
  edgectl orders
  edgectl orders --status authorized
  edgectl orders --since today --json
"""
OUTBOX_EXAMPLE = """\
examples:
  edgectl outbox                     # depth, oldest age, and the oldest 50 messages
  edgectl outbox --json | jq .depth
"""
ALARMS_EXAMPLE = """\
examples:
  edgectl alarms                     # alarms not cleared
  edgectl alarms --cleared --limit 200
"""
AUDIT_EXAMPLE = """\
examples:
  edgectl audit                      # manual actions (authorize, stop, price) and who did them
  edgectl audit --json
"""
EXPORT_EXAMPLE = """\
examples:
  edgectl export sales --csv /tmp/sales.csv --since yesterday
  edgectl export sales --csv - --pump 2 | head

The database is read directly (read-only, safe while the daemon runs); the file is written
whole and then moved into place, so a half-written export is never left behind.
"""

SALE_COLUMNS = (
    "id",
    "uid",
    "recorded_at",
    "ended_at",
    "pump",
    "nozzle",
    "grade",
    "volume",
    "amount",
    "unit_price",
    "currency",
    "state",
    "authorization_id",
    "order_id",
    "price_set_id",
    "total_volume_before",
    "total_volume_after",
    "total_amount_before",
    "total_amount_after",
    "cleared_at",
)


def register(sub: Subparsers) -> None:
    sales = output.add_command(
        sub,
        "sales",
        help="sales recorded by the station",
        description="List recorded sales, oldest first (the latest --limit of them).",
        example=SALES_EXAMPLE,
        func=run_sales,
    )
    _since(sales)
    sales.add_argument("--pump", type=output.pump_number, help="only this pump")
    _limits(sales)

    orders = output.add_command(
        sub,
        "orders",
        help="pay-at-pump orders received from the cloud",
        description="List cloud orders with their status, oldest first.",
        example=ORDERS_EXAMPLE,
        func=run_orders,
    )
    orders.add_argument("--status", help="only orders in this status (e.g. authorized)")
    _since(orders)
    _limits(orders)

    outbox = output.add_command(
        sub,
        "outbox",
        help="messages waiting for the cloud broker",
        description="Show how many messages wait in the outbox for the broker's PUBACK, how old "
        "the oldest is, and the oldest of them.",
        example=OUTBOX_EXAMPLE,
        func=run_outbox,
    )
    _limits(outbox)

    alarms = output.add_command(
        sub,
        "alarms",
        help="alarms raised by the station",
        description="List alarms that are not cleared (with --cleared: all of them).",
        example=ALARMS_EXAMPLE,
        func=run_alarms,
    )
    alarms.add_argument("--cleared", action="store_true", help="include cleared alarms")
    _limits(alarms)

    audit = output.add_command(
        sub,
        "audit",
        help="manual actions taken from the CLI, and who took them",
        description="List manual actions (authorize, stop, price) with the user who asked, "
        "as the CLI gave it and as the kernel vouches for it, and how each went.",
        example=AUDIT_EXAMPLE,
        func=run_audit,
    )
    _limits(audit)

    export = sub.add_parser(
        "export",
        help="export records to a file",
        description="Export records from the store to a file.",
        epilog=EXPORT_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = export.add_subparsers(dest="export_kind", metavar="WHAT", required=True)
    export_sales = output.add_command(
        kinds,
        "sales",
        help="sales as CSV",
        description="Write sales as CSV, one row per sale, oldest first.",
        example=EXPORT_EXAMPLE,
        func=run_export_sales,
        daemon=False,
        label="export sales",
    )
    export_sales.add_argument(
        "--csv", required=True, metavar="FILE", help="the CSV file to write ('-': stdout)"
    )
    _since(export_sales)
    export_sales.add_argument("--pump", type=output.pump_number, help="only this pump")


def _since(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=output.since, metavar="WHEN", help="from this time on")


def _limits(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit", type=output.positive_int, metavar="N", help="at most N rows (default 50)"
    )
    parser.add_argument("--all", action="store_true", help="every row, however many")


def _window(args: argparse.Namespace) -> dict[str, Any]:
    return {"limit": args.limit, "all": args.all}


def _limit(args: argparse.Namespace) -> int | None:
    return None if args.all else (args.limit or 50)


def fetch(
    args: argparse.Namespace,
    op: str,
    op_args: dict[str, Any],
    from_database: Callable[[StoreReader], T],
) -> tuple[T, str]:
    """Ask the daemon; when it is not running, read the database read-only instead."""
    station = output.target(args)
    try:
        with station.client() as client:
            return client.call(op, {k: v for k, v in op_args.items() if v is not None}), "daemon"
    except DaemonNotRunning as exc:
        if station.config is None:
            raise output.StationUnreachable(
                f"{exc}, and its database cannot be found: {station.config_error}"
            ) from None
        path = station.config.store.path
        output.note(f"{exc}; reading {path} read-only")
        db = open_read_only(path)
        try:
            return from_database(StoreReader(db)), "database"
        finally:
            db.close()


def run_sales(args: argparse.Namespace) -> int:
    sales, source = fetch(
        args,
        "sales",
        {"since": args.since, "pump": args.pump, **_window(args)},
        lambda reader: reader.sales(since=args.since, pump=args.pump, limit=_limit(args)),
    )
    if args.json:
        output.print_json({"source": source, "sales": sales})
        return output.EXIT_OK
    out = output.console()
    out.print(
        output.table(
            None,
            ("id", "recorded", "pump", "nozzle", "grade", "volume", "amount", "price", "auth"),
            [
                (
                    s["id"],
                    output.local_time(s["recorded_at"]),
                    s["pump"],
                    s["nozzle"],
                    s["grade"],
                    s["volume"],
                    s["amount"],
                    s["unit_price"],
                    s["order_id"] or s["authorization_id"],
                )
                for s in sales
            ],
            right=("id", "pump", "nozzle", "volume", "amount", "price"),
            optional=("auth", "nozzle", "id"),
        )
    )
    out.print(_sales_total(sales))
    return output.EXIT_OK


def _sales_total(sales: Sequence[dict[str, Any]]) -> str:
    volume = sum((Decimal(s["volume"]) for s in sales), Decimal(0))
    amount = sum((Decimal(s["amount"]) for s in sales), Decimal(0))
    currencies = sorted({s["currency"] for s in sales})
    return f"{len(sales)} sale(s), volume {volume}, amount {amount} {'/'.join(currencies)}".rstrip()


def run_orders(args: argparse.Namespace) -> int:
    orders, source = fetch(
        args,
        "orders",
        {"status": args.status, "since": args.since, **_window(args)},
        lambda reader: reader.orders(status=args.status, since=args.since, limit=_limit(args)),
    )
    if args.json:
        output.print_json({"source": source, "orders": orders})
        return output.EXIT_OK
    output.console().print(
        output.table(
            None,
            ("order", "created", "pump", "status", "preset", "reason", "sale"),
            [
                (
                    o["order_id"],
                    output.local_time(o["created_at"]),
                    o["pump"],
                    o["status"],
                    f"{o['preset_type']} {o['preset_value']} {o['currency']}",
                    o["reason"],
                    o["sale_id"],
                )
                for o in orders
            ],
            right=("pump",),
            optional=("sale", "reason", "created"),
        )
    )
    print(f"{len(orders)} order(s)")
    return output.EXIT_OK


def run_outbox(args: argparse.Namespace) -> int:
    def from_database(reader: StoreReader) -> dict[str, Any]:
        summary = reader.outbox_summary()
        return {**summary, "rows": reader.outbox(limit=_limit(args))}

    outbox, source = fetch(args, "outbox", _window(args), from_database)
    if args.json:
        output.print_json({"source": source, **outbox})
        return output.EXIT_OK
    out = output.console()
    streams = ", ".join(f"{name} {count}" for name, count in outbox["streams"].items())
    oldest = output.local_time(outbox["oldest_at"]) if outbox["depth"] else "-"
    waiting = outbox.get("waiting", outbox["depth"])
    sent = outbox["depth"] - waiting
    out.print(
        f"outbox: {waiting} message(s) waiting"
        + (f", {sent} sent and held for the backend's ack" if sent else "")
        + (f" ({output.esc(streams)}), oldest from {oldest}" if outbox["depth"] else "")
    )
    table = sequence_table(outbox.get("sequences") or {})
    if table is not None:
        out.print(table)
    if outbox["rows"]:
        out.print(
            output.table(
                None,
                ("n", "stream", "seq", "version", "created", "sent", "priority", "key", "bytes"),
                [
                    (
                        r["seq"],
                        r["stream"],
                        r.get("stream_seq"),
                        r.get("version"),
                        output.local_time(r["created_at"]),
                        output.local_time(r["sent_at"]) if r.get("sent_at") else "-",
                        r["priority"],
                        r["key"],
                        r["bytes"],
                    )
                    for r in outbox["rows"]
                ],
                right=("n", "seq", "version", "priority", "bytes"),
                optional=("version", "priority", "sent", "key", "n"),
            )
        )
    return output.EXIT_OK


def sequence_table(sequences: dict[str, dict[str, Any]], now: datetime | None = None) -> Any:
    """Per guaranteed stream: its last seq, the backend's watermark, how many messages are not
    acknowledged and how old the oldest is (contract 1.1); None when no stream has begun."""
    if not sequences:
        return None
    moment = now or datetime.now(UTC)
    rows = []
    for stream, s in sequences.items():
        age = None
        if s.get("oldest_unacked_at"):
            then = datetime.fromisoformat(str(s["oldest_unacked_at"]))
            age = max(0.0, (moment - then).total_seconds())
        rows.append(
            (
                stream,
                s["last_seq"],
                s["acked_seq"],
                s["unacked"],
                s["sent"],
                output.duration(age) if age is not None else "-",
                s["dropped"],
            )
        )
    return output.table(
        "streams (unacknowledged: held until the backend's ack)",
        ("stream", "last seq", "acked", "unacked", "sent", "oldest unacked", "dropped"),
        rows,
        right=("last seq", "acked", "unacked", "sent", "dropped"),
        optional=("dropped", "sent"),
    )


def run_alarms(args: argparse.Namespace) -> int:
    alarms, source = fetch(
        args,
        "alarms",
        {"cleared": args.cleared, **_window(args)},
        lambda reader: reader.alarms(active_only=not args.cleared, limit=_limit(args)),
    )
    if args.json:
        output.print_json({"source": source, "alarms": alarms})
        return output.EXIT_OK
    if not alarms:
        print("no alarms" if args.cleared else "no active alarms")
        return output.EXIT_OK
    output.console().print(
        output.table(
            None,
            ("id", "raised", "severity", "kind", "pump", "message", "cleared"),
            [
                (
                    a["id"],
                    output.local_time(a["raised_at"]),
                    _severity(a["severity"]),
                    a["kind"],
                    a["pump"],
                    a["message"],
                    output.local_time(a["cleared_at"]) if a["cleared_at"] else None,
                )
                for a in alarms
            ],
            right=("id", "pump"),
            optional=("cleared", "id", "pump", "severity"),
        )
    )
    return output.EXIT_OK


def _severity(severity: str) -> output.Markup:
    style = {"critical": "bold red", "warning": "yellow"}.get(severity)
    text = output.esc(severity)
    return output.Markup(f"[{style}]{text}[/]" if style else text)


def run_audit(args: argparse.Namespace) -> int:
    rows, source = fetch(
        args, "audit", _window(args), lambda reader: reader.audit(limit=_limit(args))
    )
    if args.json:
        output.print_json({"source": source, "audit": rows})
        return output.EXIT_OK
    output.console().print(
        output.table(
            None,
            ("id", "when", "action", "args", "user", "uid", "outcome", "message"),
            [
                (
                    r["id"],
                    output.local_time(r["requested_at"]),
                    r["action"],
                    r["args"],
                    r["client_user"] or r["peer_user"],
                    r["peer_uid"],
                    r["outcome"],
                    r["message"],
                )
                for r in rows
            ],
            right=("id", "uid"),
            optional=("uid", "args", "id", "user"),
        )
    )
    return output.EXIT_OK


# --------------------------------------------------------------------------- export


def run_export_sales(args: argparse.Namespace) -> int:
    station = output.target(args)
    config = station.require_config()
    if args.csv != "-":
        output.check_writable(Path(args.csv))  # before reading the database for nothing
    db = open_read_only(config.store.path)
    try:
        sales = StoreReader(db).sales(since=args.since, pump=args.pump)
    finally:
        db.close()
    if args.csv == "-":
        _write_csv(sys.stdout, sales)
        return output.EXIT_OK
    destination = Path(args.csv)
    with (
        output.replacing(destination) as partial,
        partial.open("w", newline="", encoding="utf-8") as handle,
    ):
        _write_csv(handle, sales)
    if args.json:
        output.print_json({"file": str(destination), "sales": len(sales)})
    else:
        print(f"wrote {len(sales)} sale(s) to {destination}")
    return output.EXIT_OK


def _write_csv(handle: Any, sales: Sequence[dict[str, Any]]) -> None:
    writer = csv.DictWriter(handle, fieldnames=SALE_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for sale in sales:
        writer.writerow({column: sale.get(column) for column in SALE_COLUMNS})
