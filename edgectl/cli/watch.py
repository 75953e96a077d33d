"""`edgectl watch`: a live view of the pumps and tanks, updated in place until Ctrl-C."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.text import Text

from edgectl.cli import output
from edgectl.cli.output import Subparsers
from edgectl.cli.pumps import pumps_table, tanks_table

EXAMPLE = """\
examples:
  edgectl watch                      # until Ctrl-C
  edgectl watch --interval 0.5
  edgectl watch --json --count 10    # ten JSON lines, one per update

On a terminal the tables update in place; in a pipe each update is printed in turn.
"""


def register(sub: Subparsers) -> None:
    parser = output.add_command(
        sub,
        "watch",
        help="live view of pumps and tanks",
        description="Follow every pump live (state, nozzle, running volume and amount) and "
        "every tank (level, volume at 15 °C, ullage, fill, alarms), when the station has them.",
        example=EXAMPLE,
        func=run_watch,
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between updates, 0.1..60 (default 1)",
    )
    parser.add_argument(
        "--count", type=output.positive_int, metavar="N", help="stop after N updates"
    )


def run_watch(args: argparse.Namespace) -> int:
    if not 0.1 <= args.interval <= 60:
        return output.fail("watch", "--interval must be between 0.1 and 60 seconds")
    station = output.target(args)
    with station.client() as client:
        stream = client.stream("watch", {"interval": args.interval})
        out = output.console()
        seen = 0
        live = Live(console=out, auto_refresh=False) if out.is_terminal and not args.json else None
        try:
            if live is not None:
                live.start()
            for update in stream:
                seen += 1
                if args.json:
                    output.print_json_line(update)
                elif live is not None:
                    live.update(view(update, stream.result["station"]), refresh=True)
                else:
                    out.print(view(update, stream.result["station"]))
                if args.count is not None and seen >= args.count:
                    return output.EXIT_OK
        except KeyboardInterrupt:
            return output.EXIT_OK
        finally:
            if live is not None:
                live.stop()
    if stream.end_reason:
        return output.fail("watch", f"the stream ended: {stream.end_reason}")
    return output.EXIT_OK


def view(update: dict[str, Any], station: str) -> Group:
    """One update as the technician sees it; the tables fit the terminal's width."""
    tanks = update["tanks"]
    parts: list[Any] = [
        Text(f"{station} at {output.local_time(update['at'])} (Ctrl-C to stop)", style="bold"),
        pumps_table(update["pumps"], "pumps" if tanks else None),
    ]
    if tanks:
        parts.append(tanks_table(tanks, "tanks"))
    return Group(*parts)
