"""`edgectl decode`: turn bytes captured on a forecourt bus into readable frames."""

from __future__ import annotations

import argparse
import json
import string
import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal, TextIO, TypeAlias

from drivers.wayne_dart import codec

EXIT_OK = 0
EXIT_BAD_INPUT = 1  # bad CRC, malformed, garbage, truncated or non-hex input

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

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


def register(subparsers: Subparsers) -> None:
    """Add `decode` and its per-protocol subcommands to the `edgectl` parser."""
    parser = subparsers.add_parser(
        "decode",
        help="decode bytes captured on a device bus",
        description="Decode bytes captured on a device bus into readable frames.",
    )
    protocols = parser.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    for add_protocol in _PROTOCOLS:
        add_protocol(protocols)


def _add_dart(protocols: Subparsers) -> None:
    parser = protocols.add_parser(
        "dart",
        help="Wayne DART pump frames",
        description=(
            "Decode Wayne DART frames pasted as hex: spaces optional, one or several\n"
            "frames run together. With no HEX argument, or '-', read the hex from stdin."
        ),
        epilog=_DART_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("hex", nargs="*", metavar="HEX", help="captured bytes in hex")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.add_argument(
        "--from",
        dest="direction",
        choices=("controller", "pump", "auto"),
        default="auto",
        help="who sent the DATA frames (default: auto, see below)",
    )
    parser.set_defaults(func=run_dart)


# Each protocol adds its own subcommand under `decode`; new protocols append here.
_PROTOCOLS: tuple[Callable[[Subparsers], None], ...] = (_add_dart,)


_HEX_DIGITS = frozenset(string.hexdigits)


def parse_hex(text: str) -> bytes:
    """Bytes from hex text; whitespace may fall anywhere, even inside a byte, and a word
    may carry a 0x prefix."""
    words = []
    for word in text.split():
        body = word[2:] if word[:2] in ("0x", "0X") else word
        bad = next((char for char in body if char not in _HEX_DIGITS), None)
        if bad is not None:
            raise ValueError(f"not hex: {word!r} (bad character {bad!r})")
        words.append(body)
    digits = "".join(words)
    if len(digits) % 2:
        raise ValueError(f"{len(digits)} hex digits: the last byte is missing a digit")
    return bytes.fromhex(digits)


def _read_text(words: Sequence[str], stdin: TextIO) -> str:
    if words and list(words) != ["-"]:
        return " ".join(words)
    if stdin.isatty():
        print("reading hex from stdin; end with Ctrl-D", file=sys.stderr)
    return stdin.read()


def run_dart(args: argparse.Namespace) -> int:
    """Handler of `edgectl decode dart`."""
    try:
        text = _read_text(args.hex, sys.stdin)
    except (UnicodeDecodeError, OSError) as exc:
        print(f"edgectl decode dart: cannot read the input: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        wire = parse_hex(text)
    except ValueError as exc:
        print(f"edgectl decode dart: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not wire:
        print("edgectl decode dart: nothing to decode", file=sys.stderr)
        return EXIT_BAD_INPUT
    items = codec.decode_all(wire)
    described = [
        _describe(item, direction, note)
        for item, direction, note in _attribute(items, args.direction)
    ]
    if args.json:
        print(json.dumps(described, indent=2))
    else:
        _print_text(described)
    return EXIT_OK if all(entry["valid"] for entry in described) else EXIT_BAD_INPUT


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


def _print_text(described: Sequence[dict[str, Any]]) -> None:
    for number, entry in enumerate(described, 1):
        print("\n".join(_render(number, entry)))
    bad = sum(1 for entry in described if not entry["valid"])
    summary = f"{len(described)} item(s), {len(described) - bad} valid frame(s)"
    print(summary + (f", {bad} not valid" if bad else ""))


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
