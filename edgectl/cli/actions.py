"""`edgectl authorize|stop|price`: manual actions, carried out by the daemon and audited.

The CLI sends the name of the user who runs it; the daemon also reads the caller's uid from the
socket (SO_PEERCRED) and records both, with the outcome, in the audit table.
"""

from __future__ import annotations

import argparse
import getpass
import os
import pwd
from decimal import Decimal, InvalidOperation
from typing import Any

from edgectl.cli import output
from edgectl.cli.output import Subparsers

AUTHORIZE_EXAMPLE = """\
examples:
  edgectl authorize 3 --amount 200        # pump 3, up to 200.00 in the station currency
  edgectl authorize 3 --volume 40         # pump 3, up to 40 litres
  edgectl authorize 3 --amount 100 --nozzle 2
  edgectl authorize 3                     # up to the station's maximum preset

The pump must be idle (or calling) and online. The action and your user name are recorded.
"""
STOP_EXAMPLE = """\
examples:
  edgectl stop 3
  edgectl stop all

Stops pump 3 (or every pump) at once, whatever it is doing (an emergency stop); a fill in
progress ends and its sale is still recorded. `stop all` says which pumps stopped and why any
other could not. The action and your user name are recorded.
"""
STOP_EXITS = "exit status: 0 stopped, 1 a pump could not be stopped (stderr says which), 2 usage."
PRICE_EXAMPLE = """\
examples:
  edgectl price 95 7.99
  edgectl price 95 9.99 --force      # a change beyond [limits] max_price_change_pct

Sets the unit price of grade 95 now and shows the old price and the new; each pump takes it
when it is next idle and the cloud is told. A change of more than [limits]
max_price_change_pct (default 20 %) of the price in force is refused unless given --force.
The action (a refused one too) and your user name are recorded.
"""


def register(sub: Subparsers) -> None:
    authorize = output.add_command(
        sub,
        "authorize",
        help="release a pump for one fill (audited)",
        description="Authorize a pump for one fill, with an amount or a volume preset.",
        example=AUTHORIZE_EXAMPLE,
        func=run_authorize,
    )
    authorize.add_argument("pump", type=output.pump_number, help="pump number")
    preset = authorize.add_mutually_exclusive_group()
    preset.add_argument("--amount", type=_decimal, help="preset amount, in the station currency")
    preset.add_argument("--volume", type=_decimal, help="preset volume, in litres")
    authorize.add_argument(
        "--nozzle",
        type=int,
        action="append",
        dest="nozzles",
        metavar="N",
        help="allow only this nozzle (repeat for several; default: all)",
    )

    stop = output.add_command(
        sub,
        "stop",
        help="stop a pump, or every pump, at once (audited)",
        description="Stop a pump, or all of them, at once: an emergency stop.",
        example=STOP_EXAMPLE,
        exits=STOP_EXITS,
        func=run_stop,
    )
    stop.add_argument("pump", type=_pump_or_all, help="pump number, or all")

    price = output.add_command(
        sub,
        "price",
        help="change the unit price of a grade (audited)",
        description="Change the unit price of one grade, now.",
        example=PRICE_EXAMPLE,
        func=run_price,
    )
    price.add_argument("grade", help="grade id, as in the config (e.g. 95)")
    price.add_argument("value", type=_decimal, help="new unit price (e.g. 7.99)")
    price.add_argument(
        "--force",
        action="store_true",
        help="allow a change beyond [limits] max_price_change_pct of the price in force",
    )


def _pump_or_all(text: str) -> int | str:
    return "all" if text.strip().lower() == "all" else output.pump_number(text)


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number like 7.99") from None
    if not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number above 0")
    return value


def user_name() -> str:
    """Who runs the CLI; behind sudo, the person who called sudo."""
    try:
        name = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        name = getpass.getuser()
    invoker = os.environ.get("SUDO_USER")
    return f"{invoker} (via sudo as {name})" if invoker and invoker != name else name


def _act(args: argparse.Namespace, op: str, op_args: dict[str, Any]) -> int:
    result = output.call(args, op, {**op_args, "user": user_name()})
    if args.json:
        output.print_json(result)
    else:
        print(result["message"])
    return output.EXIT_OK


def run_authorize(args: argparse.Namespace) -> int:
    op_args: dict[str, Any] = {"pump": args.pump, "nozzles": args.nozzles or []}
    if args.amount is not None:
        op_args["amount"] = str(args.amount)
    if args.volume is not None:
        op_args["volume"] = str(args.volume)
    result = output.call(args, "authorize", {**op_args, "user": user_name()})
    if args.json:
        output.print_json(result)
        return output.EXIT_OK
    if result["preset_volume"] is not None:
        limit = f"up to {result['preset_volume']} litres"
    elif result["preset_amount"] is not None:
        limit = f"up to {result['preset_amount']} {result['currency']}"
    else:
        limit = "without a preset"
    nozzles = result["nozzles"]
    which = f", nozzle(s) {', '.join(map(str, nozzles))}" if nozzles else ""
    auth = result["authorization_id"]
    print(f"pump {result['pump']} authorized {limit}{which} (authorization {auth})")
    return output.EXIT_OK


def run_stop(args: argparse.Namespace) -> int:
    if args.pump != "all":
        return _act(args, "stop", {"pump": args.pump})
    result = output.call(args, "stop", {"all": True, "user": user_name()})
    if args.json:
        output.print_json(result)
    else:
        if result["stopped"]:
            print(f"stopped pump(s) {', '.join(map(str, result['stopped']))}")
        for failure in result["failed"]:
            output.note(f"edgectl stop: {failure['reason']}")
    return output.EXIT_FAILED if result["failed"] else output.EXIT_OK


def run_price(args: argparse.Namespace) -> int:
    op_args: dict[str, Any] = {"grade": args.grade, "price": str(args.value)}
    if args.force:
        op_args["force"] = True
    return _act(args, "price", op_args)
