"""`edgectl pumps`, `edgectl tanks`, `edgectl prices`: the forecourt as the daemon sees it now."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from edgectl.cli import output
from edgectl.cli.output import Markup, Subparsers

PUMPS_EXAMPLE = """\
examples:
  edgectl pumps
  edgectl pumps --json | jq '.[] | select(.online == false) | .pump'

state is the fuelling point's (IDLE, CALLING, AUTHORISED, STARTED, FUELLING…); status is what
the dispenser itself last reported.
"""

TANKS_EXAMPLE = """\
examples:
  edgectl tanks
  edgectl tanks --json
"""

PRICES_EXAMPLE = """\
examples:
  edgectl prices
  edgectl prices --json

To change a price: edgectl price 95 7.99
"""

NO_TANKS = "no tanks configured"


def register(sub: Subparsers) -> None:
    output.add_command(
        sub,
        "pumps",
        help="every pump: online, state, nozzle, running volume and amount",
        description="Show every configured pump as the daemon sees it now.",
        example=PUMPS_EXAMPLE,
        func=run_pumps,
    )
    output.add_command(
        sub,
        "tanks",
        help="every tank: level, volume, water, temperature",
        description="Show every tank the daemon reads from its tank gauges.",
        example=TANKS_EXAMPLE,
        func=run_tanks,
    )
    output.add_command(
        sub,
        "prices",
        help="the unit price of each grade in force, and pending price changes",
        description="Show the prices in force (and which price set each pump has taken), and "
        "price changes waiting for their time.",
        example=PRICES_EXAMPLE,
        func=run_prices,
    )


def run_pumps(args: argparse.Namespace) -> int:
    pumps = output.call(args, "pumps")
    if args.json:
        output.print_json(pumps)
    else:
        out = output.console()
        out.print(pumps_table(pumps, width=out.width))
    return output.EXIT_OK


def pumps_table(
    pumps: Sequence[dict[str, Any]], title: str | None = None, *, width: int = 200
) -> Table:
    """The pumps; on a narrow terminal without the columns a technician needs least."""
    columns = (
        "pump",
        "line",
        "online",
        "state",
        "status",
        "nozzle",
        "grade",
        "price",
        "volume",
        "amount",
        "auth",
        "sales",
    )
    shown = [c for c in columns if width >= 100 or c not in ("status", "auth", "sales")]
    rows = []
    for p in pumps:
        nozzle = p["nozzle"]
        if nozzle is not None and p["nozzle_out"]:
            nozzle = f"{nozzle} out"
        values = {
            "pump": p["pump"],
            "line": f"{p['line']}/{p['address']}",
            "online": output.yes_no(p["online"]),
            "state": _state(p["state"]),
            "status": p["status"],
            "nozzle": nozzle,
            "grade": p["grade"],
            "price": p["unit_price"],
            "volume": p["volume"],
            "amount": p["amount"],
            "auth": p["authorization_id"],
            "sales": p["sales"],
        }
        rows.append([values[c] for c in shown])
    return output.table(title, shown, rows, right=("pump", "price", "volume", "amount", "sales"))


_STATE_STYLE = {
    "FUELLING": "bold green",
    "SUSPENDED_FUELLING": "yellow",
    "AUTHORISED": "cyan",
    "STARTED": "cyan",
    "CALLING": "yellow",
    "INOPERATIVE": "red",
    "CLOSED": "red",
}


def _state(state: str) -> Markup:
    style = _STATE_STYLE.get(state)
    return Markup(f"[{style}]{output.esc(state)}[/]" if style else output.esc(state))


def run_tanks(args: argparse.Namespace) -> int:
    tanks = output.call(args, "tanks")
    if args.json:
        output.print_json(tanks)
    elif not tanks:
        print(NO_TANKS)
    else:
        output.console().print(tanks_table(tanks))
        if all("reading" in tank and tank["reading"] is None for tank in tanks):
            print("configured tanks; the daemon has no readings of them yet")
    return output.EXIT_OK


def tanks_table(tanks: Sequence[dict[str, Any]], title: str | None = None) -> Table:
    """Tanks shown with whatever fields the station gives for them, in its order."""
    columns: list[str] = []
    for tank in tanks:
        for key, value in tank.items():
            if key not in columns and not isinstance(value, dict | list):
                columns.append(key)
    rows = [[tank.get(column) for column in columns] for tank in tanks]
    return output.table(title, columns, rows)


def run_prices(args: argparse.Namespace) -> int:
    prices = output.call(args, "prices")
    if args.json:
        output.print_json(prices)
        return output.EXIT_OK
    out = output.console()
    source = prices["price_set_id"] or "the configuration file"
    out.print(f"prices in force ({output.esc(prices['currency'])}), from {output.esc(source)}")
    out.print(
        output.table(
            None,
            ("grade", "name", "unit price", "configured"),
            [(g["grade"], g["name"], g["unit_price"], g["configured"]) for g in prices["grades"]],
            right=("unit price", "configured"),
        )
    )
    behind = [p for p in prices["pumps"] if p["price_set_id"] != prices["price_set_id"]]
    if behind:
        pumps = ", ".join(str(p["pump"]) for p in behind)
        out.print(f"not yet taken by pump(s) {pumps} (a pump takes new prices when idle)")
    for pending in prices["pending"]:
        when = output.local_time(pending["effective_at"]) if pending["effective_at"] else "now"
        changes = ", ".join(f"{g} {p}" for g, p in sorted(pending["prices"].items()))
        out.print(f"pending {output.esc(pending['price_set_id'])} at {when}: {output.esc(changes)}")
    return output.EXIT_OK
