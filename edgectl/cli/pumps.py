"""`edgectl pumps`, `edgectl tanks`, `edgectl prices`: the forecourt as the daemon sees it now."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from edgectl.cli import output
from edgectl.cli.actions import user_name
from edgectl.cli.books import stored_tanks
from edgectl.cli.output import Markup, Subparsers
from edgectl.control.client import DaemonNotRunning
from edgectl.control.shapes import tank_rows

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
  edgectl tanks --json | jq '.tanks[] | select(.alarms | length > 0) | .tank'

level and water are heights in mm; gross is all liquid, "15 °C" the product corrected to
15 °C (table 54B), ullage the room left to capacity; all in litres. The figures are those of the
last plausible reading. Without the daemon: the last reading of each tank kept in the store
(read-only, with its age), or with no store the configured tanks, without readings.
"""

PRICES_EXAMPLE = """\
examples:
  edgectl prices
  edgectl prices --json

To change a price: edgectl price 95 7.99
"""

CLOSE_EXAMPLE = """\
examples:
  edgectl close 3
  edgectl close 3 --reason "nozzle 2 leaking, engineer called"

A closed pump takes no authorization from anyone: a cloud order for it is refused
pump_closed, auto mode leaves its lifts alone, `edgectl authorize` is refused. The cloud sees
it as closed; a fill under way goes on to its end (`edgectl stop` ends it now). It stays closed
across restarts until `edgectl open`. The action and your user name are recorded.
"""

OPEN_EXAMPLE = """\
examples:
  edgectl open 3

Opens a pump closed with `edgectl close`: it is authorized again as the mode says. The action
and your user name are recorded.
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
        help="every tank: level, volume, water, temperature, ullage, alarms",
        description="Show every tank as the daemon last read it from its gauge: level, water, "
        "temperature, gross volume, volume at 15 °C, ullage, fill, active alarms.",
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
    close = output.add_command(
        sub,
        "close",
        help="close a pump: nobody authorizes it until it is opened (audited)",
        description="Close a pump for service: no source (cloud order, auto mode, attendant) "
        "authorizes it until `edgectl open`; kept across restarts.",
        example=CLOSE_EXAMPLE,
        func=run_close,
    )
    close.add_argument("pump", type=output.pump_number, help="pump number")
    close.add_argument("--reason", help="why, for the audit log (e.g. 'leak on nozzle 2')")
    reopen = output.add_command(
        sub,
        "open",
        help="open a pump closed with `close` (audited)",
        description="Open a pump closed with `edgectl close`: it serves again.",
        example=OPEN_EXAMPLE,
        func=run_open,
    )
    reopen.add_argument("pump", type=output.pump_number, help="pump number")


def run_pumps(args: argparse.Namespace) -> int:
    pumps = output.call(args, "pumps")
    if args.json:
        output.print_json(pumps)
    else:
        output.console().print(pumps_table(pumps))
    return output.EXIT_OK


def pumps_table(pumps: Sequence[dict[str, Any]], title: str | None = None) -> output.Fitted:
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
        rows.append([values[c] for c in columns])
    return output.table(
        title,
        columns,
        rows,
        right=("pump", "price", "volume", "amount", "sales"),
        optional=("auth", "status", "sales", "line", "online"),
    )


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
    station = output.target(args)
    try:
        with station.client() as client:
            tanks, source = client.call("tanks"), "daemon"
    except DaemonNotRunning as exc:
        if station.config is None:
            raise output.StationUnreachable(
                f"{exc}, and the config that lists its tanks cannot be read: {station.config_error}"
            ) from None
        kept = stored_tanks(station)
        if kept is not None:
            tanks, why = kept
            output.note(f"{exc}; {why}")
            source = "database"
        else:
            output.note(f"{exc}; the tanks of {station.config_path}, without readings")
            tanks, source = tank_rows(station.config), "config"
    if args.json:
        output.print_json({"source": source, "tanks": tanks})
        return output.EXIT_OK
    if not tanks:
        print(NO_TANKS)
        return output.EXIT_OK
    out = output.console()
    if source == "config":
        out.print(configured_tanks_table(tanks))
        return output.EXIT_OK
    out.print(tanks_table(tanks))
    if all(tank["reading_at"] is None for tank in tanks):
        out.print("no readings yet: the daemon has not read these tanks from their gauges")
    elif source == "database":
        out.print("the daemon is not running: each tank's last reading kept, with its age")
    for tank in tanks:
        if tank["implausible"]:
            out.print(
                f"tank {tank['tank']}: the gauge's latest reading was implausible and refused; "
                "the figures are from the last sound one (edgectl alarms says why)"
            )
    return output.EXIT_OK


def configured_tanks_table(tanks: Sequence[dict[str, Any]]) -> output.Fitted:
    return output.table(
        None,
        ("tank", "name", "product", "capacity L", "gauge"),
        [
            (t["tank"], t["name"], _product(t), t["capacity_l"], f"{t['gauge']}/{t['gauge_tank']}")
            for t in tanks
        ],
        right=("tank", "capacity L"),
    )


def tanks_table(tanks: Sequence[dict[str, Any]], title: str | None = None) -> output.Fitted:
    """The tanks as the daemon knows them; on a narrow terminal without the columns a
    technician needs least. Heights and volumes to one decimal, whatever the gauge sends."""
    columns = (
        "tank",
        "name",
        "product",
        "gauge",
        "link",
        "read",
        "level mm",
        "water mm",
        "temp °C",
        "gross L",
        "15 °C L",
        "ullage L",
        "fill",
        "",  # the fill as a bar
        "alarms",
    )
    rows = []
    for t in tanks:
        online = t["online"]
        values = {
            "tank": t["tank"],
            "name": t["name"],
            "product": _product(t),
            "gauge": f"{t['gauge']}/{t['gauge_tank']}",
            "link": None if online is None else output.yes_no(online, "online", "OFFLINE"),
            "read": _read_at(t["reading_at"], t["reading_age_s"]),
            "level mm": t["height_mm"],
            "water mm": t["water_mm"],
            "temp °C": t["temperature_c"],
            "gross L": t["gross_l"],
            "15 °C L": t["net_l"],
            "ullage L": t["ullage_l"],
            "fill": None if t["fill_pct"] is None else f"{t['fill_pct']} %",
            "": _fill_bar(t["fill_pct"]),
            "alarms": _alarms(t["alarms"]),
        }
        rows.append([values[c] for c in columns])
    figures = ("level mm", "water mm", "temp °C", "gross L", "15 °C L", "ullage L")
    return output.table(
        title,
        columns,
        rows,
        right=("tank", *figures, "fill"),
        optional=(
            *("name", "gauge", "water mm", "temp °C", "gross L", "read", "link"),
            *("", "ullage L"),
        ),
        decimals=dict.fromkeys(figures, 1),
    )


def _product(tank: dict[str, Any]) -> str:
    product, grade = tank["product"], tank["grade"]
    return str(product) if product == grade else f"{product} ({grade})"


def _read_at(stamp: str | None, age_s: float | None) -> str | None:
    if stamp is None:
        return None
    if age_s is None or age_s >= 86400:
        return output.local_time(stamp)
    return f"{output.local_clock(stamp)} ({output.duration(age_s)} ago)"


def _fill_bar(pct: str | None) -> str | None:
    """Fill as a ten-cell bar."""
    if pct is None:
        return None
    share = min(max(float(pct), 0.0), 100.0)
    cells = round(share / 10)
    return f"{'█' * cells}{'░' * (10 - cells)}"


def _alarms(alarms: Sequence[str] | None) -> Markup | None:
    if alarms is None:
        return None
    if not alarms:
        return Markup("[green]none[/]")
    return Markup(f"[bold red]{output.esc(', '.join(alarms))}[/]")


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


def run_close(args: argparse.Namespace) -> int:
    op_args: dict[str, Any] = {"pump": args.pump}
    if args.reason:
        op_args["reason"] = args.reason
    return _pump_action(args, "close", op_args)


def run_open(args: argparse.Namespace) -> int:
    return _pump_action(args, "open", {"pump": args.pump})


def _pump_action(args: argparse.Namespace, op: str, op_args: dict[str, Any]) -> int:
    result = output.call(args, op, {**op_args, "user": user_name()})
    if args.json:
        output.print_json(result)
    else:
        print(result["message"])
    return output.EXIT_OK
