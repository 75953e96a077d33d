"""`edgectl decode dart`: Wayne DART frames pasted as hex, each DATA frame's sender inferred."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

from drivers.decoding import Decoded, Decoder, parse_hex, summary
from drivers.wayne_dart import codec

_DART_EPILOG = """\
examples:
  edgectl decode dart 50 37 01 01 06 1E 2A 03 FA
  edgectl decode dart 503701010 61E2A03FA 5020FA
  edgectl decode dart --from pump 50 38 01 01 08 9C 10 FA 03 FA
  cat capture.txt | edgectl decode dart --json

direction (--from auto): a pump only sends data when polled, so a DATA frame right
after a POLL (or ACKPOLL) to the same address is read as sent by the pump, a DATA
frame after any other frame as sent by the controller, and a DATA frame with nothing
before it is shown both ways. Volumes, amounts and prices are shown raw: their
decimal places come from the pump's parameters (DC7) or the site configuration.

exit status: 0 all frames valid, 1 bad CRC / malformed / garbage / non-hex input,
2 usage error.
"""


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from",
        dest="direction",
        choices=("controller", "pump", "auto"),
        default="auto",
        help="who sent the DATA frames (default: auto, see below)",
    )


def decode(text: str, args: argparse.Namespace) -> Decoded:
    items = codec.decode_all(parse_hex(text))
    described = [
        _describe(item, direction, note)
        for item, direction, note in _attribute(items, args.direction)
    ]
    lines = [line for number, entry in enumerate(described, 1) for line in _render(number, entry)]
    return Decoded(described, described, [*lines, summary(described, "valid frame(s)")])


Choice: TypeAlias = Literal["controller", "pump", "auto"]
Attributed: TypeAlias = tuple[codec.Frame | codec.Malformed, codec.Direction | None, str | None]


def _attribute(items: Sequence[codec.Frame | codec.Malformed], choice: Choice) -> list[Attributed]:
    """Who sent each DATA frame, and why we think so."""
    attributed: list[Attributed] = []
    previous: codec.Frame | codec.Malformed | None = None
    for item in items:
        direction: codec.Direction | None = None
        note: str | None = None
        if isinstance(item, codec.Frame) and item.kind is codec.FrameKind.DATA:
            direction, note = _infer(item, previous, choice)
        attributed.append((item, direction, note))
        # Noise between a POLL and its answer must not hide the POLL.
        if not (isinstance(item, codec.Malformed) and item.kind == "garbage"):
            previous = item
    return attributed


def _infer(
    frame: codec.Frame, previous: codec.Frame | codec.Malformed | None, choice: Choice
) -> tuple[codec.Direction | None, str]:
    if choice != "auto":
        return choice, "given with --from"
    polls = (codec.FrameKind.POLL, codec.FrameKind.ACKPOLL)
    if isinstance(previous, codec.Frame):
        if previous.kind in polls and previous.address == frame.address:
            return "pump", f"answers the {previous.kind.name} to 0x{frame.address:02X}"
        if previous.kind in polls:
            return "controller", f"the {previous.kind.name} before it went to another pump"
        before = previous.kind.name
        return "controller", f"a pump only sends when polled; the frame before is {before}"
    if previous is None:
        return None, "nothing before it tells who sent it"
    return None, "it follows bytes that are not a valid frame"


def _describe(
    item: codec.Frame | codec.Malformed, direction: codec.Direction | None, note: str | None
) -> dict[str, Any]:
    described = codec.describe(item, direction)
    if note is not None:
        described["from_note"] = note
    return described


def _render(number: int, entry: dict[str, Any]) -> list[str]:
    head = f"[{number}] {entry['type'].replace('_', ' ')}"
    if entry["address"] is not None:
        head += f"  address {entry['address']}"
    if entry["seq"] is not None:
        head += f"  seq {entry['seq']}"
    lines = []
    if not entry["valid"]:
        lines += [head, f"    {entry['reason']}"]
    else:
        if "crc" in entry:
            head += f"  CRC ok ({entry['crc_value']})"
        lines.append(head)
        if "transactions" in entry:
            lines.append(f"    from the {entry['from']} ({entry['from_note']})")
            lines += [f"    {_transaction_line(tx)}" for tx in entry["transactions"]]
        elif "readings" in entry:
            lines.append(f"    sender unknown ({entry['from_note']}); both readings:")
            for side in ("controller", "pump"):
                lines.append(f"    if sent by the {side}:")
                lines += [f"      {_transaction_line(tx)}" for tx in entry["readings"][side]]
    lines.append(f"    raw: {entry['raw']}")
    return lines


def _transaction_line(tx: dict[str, Any]) -> str:
    line = f"{tx['name']}: {tx['text']}"
    return line if tx["known"] else f"{line} [raw {tx['raw']}]"


def decoder() -> Decoder:
    return Decoder(
        name="dart",
        help="Wayne DART pump frames",
        description=(
            "Decode Wayne DART frames pasted as hex: spaces optional, one or several\n"
            "frames run together. With no HEX argument, or '-', read the hex from stdin."
        ),
        epilog=_DART_EPILOG,
        metavar="HEX",
        add_arguments=_arguments,
        decode=decode,
    )
