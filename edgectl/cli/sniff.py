"""`edgectl sniff LINE`: every frame on a line (pump line or tank gauge), decoded live, from the
daemon that owns the port."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from edgectl.cli import output
from edgectl.cli.output import Subparsers

EXAMPLE = """\
examples:
  edgectl sniff north                      # until Ctrl-C
  edgectl sniff north --no-polls           # hide POLL, EOT and ACK chatter
  edgectl sniff north --address 0x51 --count 20
  edgectl sniff north --json > capture.jsonl
  edgectl sniff tls                        # a Veeder-Root console: commands and replies
  edgectl sniff probes --address 3         # a Modbus probe line: device id 3 only

Each line: local time, gap since the previous frame, direction (ctl> sent by edgectl; <pump,
<tls or <dev received from a pump, a TLS console or a Modbus device), address (DART address
or Modbus device id), frame type and sequence, CRC verdict (a TLS reply's checksum; Modbus
TCP has none), what it says, then the raw bytes (hex; for TLS the text, control characters
shown as <SOH> <ETX>). --no-polls only applies to pump lines. A TLS security code is shown
as ******. The daemon keeps the port: nothing else may open it while it runs, so sniff asks
the daemon for a copy of the traffic.
"""


def register(sub: Subparsers) -> None:
    parser = output.add_command(
        sub,
        "sniff",
        help="live decoded frames of a serial line",
        description="Stream the frames the daemon sends and receives on one line, decoded, "
        "with timing and CRC verdicts.",
        example=EXAMPLE,
        func=run_sniff,
    )
    parser.add_argument("line", help="pump line or gauge name, as in the config (e.g. north)")
    parser.add_argument(
        "--address",
        type=_address,
        help="only frames of this address (a pump's 0x50-0x6F, a Modbus device id 1-247)",
    )
    parser.add_argument(
        "--no-polls",
        action="store_true",
        help="hide the routine traffic of pump lines: DART's POLL, EOT and ACK frames, IFSF's "
        "heartbeats",
    )
    parser.add_argument(
        "--count", type=output.positive_int, metavar="N", help="stop after N frames"
    )


def _address(text: str) -> int:
    """A DART address or a Modbus device id; the daemon checks it against the line."""
    try:
        address = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an address like 0x50 or 3") from None
    if not 1 <= address <= 0xFF:
        raise argparse.ArgumentTypeError(f"{text} is outside 1-255")
    return address


def run_sniff(args: argparse.Namespace) -> int:
    station = output.target(args)
    op_args: dict[str, Any] = {"line": args.line, "no_polls": args.no_polls}
    if args.address is not None:
        op_args["address"] = args.address
    out = output.console()
    with station.client() as client:
        stream = client.stream("sniff", op_args)
        info = stream.result
        output.note(
            f"sniffing line {info['line']} ({info['protocol']} on {info['port']}); Ctrl-C to stop"
        )
        if info.get("note"):
            output.note(info["note"])
        sys.stderr.flush()
        seen = 0
        try:
            for frame in stream:
                seen += 1
                if args.json:
                    output.print_json_line(frame)
                else:
                    if frame.get("dropped"):
                        out.print(f"[yellow]… {frame['dropped']} frame(s) dropped (too fast)[/]")
                    out.print(render(frame), soft_wrap=True)
                if args.count is not None and seen >= args.count:
                    return output.EXIT_OK
        except KeyboardInterrupt:
            return output.EXIT_OK
    if stream.end_reason:
        return output.fail("sniff", f"the stream ended: {stream.end_reason}")
    return output.EXIT_OK


def render(frame: dict[str, Any]) -> str:
    """One frame as one line of markup."""
    when = output.local_clock(frame["at"]) + frame["at"][19:23]
    gap = f"+{frame['gap_ms']:.1f}ms" if frame["gap_ms"] is not None else ""
    if frame["direction"] == "tx":
        arrow = "[cyan]ctl> [/]"
    else:
        arrow = f"[green]{_SENDERS.get(frame['from'], '<    ')}[/]"
    kind = frame["type"]
    if frame.get("seq") is not None:
        kind += f" seq {frame['seq']}"
    tls = "text" in frame  # a TLS console: a checksum rather than a CRC, and readable bytes
    verdict, style = (_CHECKSUM if tls else _CRC).get(frame["crc"], ("", ""))
    crc = f"[{style}]{verdict:<7}[/]" if style else " " * 7
    address = frame["address"]
    head = output.esc(f"{'----' if address is None else address:<4} {kind:<13}")
    if not frame["valid"]:
        head = f"[red]{head}[/]"
    summary = output.esc(frame.get("summary") or "")
    raw = frame["text"] if tls else frame["hex"]
    return f"{when} {gap:>9} {arrow} {head} {crc} {summary}  [dim]{output.esc(raw)}[/]"


_SENDERS = {"pump": "<pump", "console": "<tls ", "device": "<dev "}
_CRC = {"ok": ("CRC ok", "green"), "bad": ("CRC BAD", "bold red")}
_CHECKSUM = {"ok": ("sum ok", "green"), "bad": ("sum BAD", "bold red")}
