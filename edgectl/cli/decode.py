"""`edgectl decode`: turn bytes captured on a forecourt bus into readable frames."""

from __future__ import annotations

import argparse
import json
import re
import string
import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal, TextIO, TypeAlias

from drivers.base import FrameError
from drivers.ifsf import codec as ifsf
from drivers.ifsf import heartbeat as ifsf_heartbeat
from drivers.veeder_root import codec as tls
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


_TLS_EPILOG = """\
examples:
  edgectl decode tls '<SOH>i201009601221506011000007...&&EF20<ETX>'
  edgectl decode tls '^Ai20100...&&EF20^C'
  edgectl decode tls '\x019999FF1B\x03'
  cat capture.txt | edgectl decode tls --json

input: control characters may be written <SOH> <ETX> <ESC> <CR> <LF>, ^A ^C ^[,
\x01 \x03, or be there raw; \r \n \t and \\ are read as escapes too. Text with no SOH
is read as one reply after an SOH; a last reply without ETX is closed at the end of the
input (both are noted). If a computer-format reply only checks out without the line breaks
and spaces a paste put into it, they are removed (and noted). Floats are shown rounded to
the 7 digits a single carries; volumes, heights and temperatures are in the console's units.

exit status: 0 all replies valid, 1 bad checksum / malformed / garbage, 2 usage error.
"""


def _add_tls(protocols: Subparsers) -> None:
    parser = protocols.add_parser(
        "tls",
        help="Veeder-Root TLS tank gauge replies",
        description=(
            "Decode Veeder-Root TLS replies pasted as text: computer format (i201…, checked\n"
            "against its checksum), the 9999FF1B refusal, or a display-format report.\n"
            "With no TEXT argument, or '-', read the text from stdin."
        ),
        epilog=_TLS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("text", nargs="*", metavar="TEXT", help="captured reply text")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.add_argument(
        "--etx",
        type=_byte,
        default=tls.ETX,
        metavar="HEX",
        help="the console's end-of-reply character in hex (default 03)",
    )
    parser.set_defaults(func=run_tls)


_IFSF_EPILOG = """\
examples:
  edgectl decode ifsf 01 03 02 01 00 1E 00 03 01 21 14
  edgectl decode ifsf 020101030021000501000401 0A
  edgectl decode ifsf C0A8006811100201 0100
  cat capture.txt | edgectl decode ifsf --json

input: application messages as they travel on TCP (spaces optional, several run together,
framed by M_Lg), or UDP heartbeat records (10 bytes). With --as auto, an input of exactly
10 bytes whose ninth byte is IFSF_MC 01 is read as a heartbeat, anything else as messages.
Every data id is named and decoded in the encoding its database gives it; one this decoder
does not know, or whose bytes do not fit its encoding, is shown raw with the reason.

exit status: 0 every message valid, 1 malformed / truncated / unframeable / non-hex input,
2 usage error.
"""


def _positive_length(text: str) -> int:
    value = int(text)
    if not ifsf.MIN_M_LG <= value <= ifsf.M_LG_LIMIT:
        raise argparse.ArgumentTypeError(f"{text} is outside {ifsf.MIN_M_LG}-{ifsf.M_LG_LIMIT}")
    return value


def _add_ifsf(protocols: Subparsers) -> None:
    parser = protocols.add_parser(
        "ifsf",
        help="IFSF over TCP/IP dispenser messages and heartbeats",
        description=(
            "Decode IFSF messages pasted as hex: spaces optional, one or several messages\n"
            "run together. With no HEX argument, or '-', read the hex from stdin."
        ),
        epilog=_IFSF_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("hex", nargs="*", metavar="HEX", help="captured bytes in hex")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.add_argument(
        "--as",
        dest="kind",
        choices=("auto", "message", "heartbeat"),
        default="auto",
        help="read the bytes as TCP messages or UDP heartbeats (default: auto, see below)",
    )
    parser.add_argument(
        "--max-length",
        type=_positive_length,
        default=ifsf.MAX_M_LG,
        metavar="N",
        help=f"the longest M_Lg taken as a message (default {ifsf.MAX_M_LG})",
    )
    parser.set_defaults(func=run_ifsf)


# Each protocol adds its own subcommand under `decode`; new protocols append here.
_PROTOCOLS: tuple[Callable[[Subparsers], None], ...] = (_add_dart, _add_tls, _add_ifsf)


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


# --------------------------------------------------------------------------- decode tls
_CONTROL_NAMES = {
    "NUL": 0x00,
    "SOH": 0x01,
    "STX": 0x02,
    "ETX": 0x03,
    "EOT": 0x04,
    "LF": 0x0A,
    "CR": 0x0D,
    "ESC": 0x1B,
}
_ESCAPES = {"r": 0x0D, "n": 0x0A, "t": 0x09, "\\": 0x5C}
_TLS_TOKEN = re.compile(
    r"<(?P<name>" + "|".join(_CONTROL_NAMES) + r")>"
    r"|\\x(?P<hex>[0-9A-Fa-f]{2})"
    r"|\\(?P<escape>[rnt\\])"
    r"|\^(?P<caret>[@A-Za-z\[\\\]^_])",
    re.IGNORECASE,
)
_BLANKS = b" \t\r\n"


def _byte(text: str) -> int:
    value = int(text, 16)
    if not 0 <= value <= 0xFF:
        raise argparse.ArgumentTypeError(f"{text!r} is not one byte")
    return value


def parse_tls_text(text: str) -> bytes:
    """Bytes from pasted TLS text: <SOH>, ^A and \\x01 forms become control characters."""

    def replace(match: re.Match[str]) -> str:
        if match["name"]:
            return chr(_CONTROL_NAMES[match["name"].upper()])
        if match["hex"]:
            return chr(int(match["hex"], 16))
        if match["escape"]:
            return chr(_ESCAPES[match["escape"]])
        return chr(ord(match["caret"].upper()) - 0x40)

    return _TLS_TOKEN.sub(replace, text).encode("latin-1")


TlsItems: TypeAlias = list[tuple[bytes, "tls.Reply | tls.Malformed"]]


def _tls_items(wire: bytes, etx: int) -> tuple[TlsItems, list[str]]:
    """Decode pasted bytes, forgiving what a paste loses or adds (see the epilog)."""
    notes = []
    wire = wire.strip(_BLANKS)
    if tls.SOH not in wire:
        wire = bytes((tls.SOH,)) + wire
        notes.append("no SOH in the input: read as one reply")
    items = tls.decode_all(wire, etx=etx)
    last = items[-1][1] if items else None
    if (
        isinstance(last, tls.Malformed)
        and last.kind == "truncated"
        and not wire.endswith(bytes((etx,)))
    ):
        wire += bytes((etx,))
        items = tls.decode_all(wire, etx=etx)
        notes.append("no ETX at the end of the input: the last reply is closed there")
    if not all(_valid(item) for _, item in items):
        squeezed = _squeeze(wire, etx)
        if squeezed != wire:
            retry = tls.decode_all(squeezed, etx=etx)
            if all(_valid(item) for _, item in retry):
                items = retry
                notes.append("line breaks and spaces inside computer-format replies removed")
    return items, notes


def _squeeze(wire: bytes, etx: int) -> bytes:
    """The input with blanks removed from replies that look computer-format."""
    parts = wire.split(bytes((tls.SOH,)))
    out = [parts[0]]
    for part in parts[1:]:
        body = part.split(bytes((etx,)), 1)
        head = body[0].lstrip(_BLANKS)
        if head[:1].islower() or head.startswith(b"9999"):
            body[0] = bytes(b for b in body[0] if b not in _BLANKS)
        out.append(bytes((etx,)).join(body))
    return bytes((tls.SOH,)).join(out)


def _valid(item: tls.Reply | tls.Malformed) -> bool:
    return not isinstance(item, tls.Malformed)


def run_tls(args: argparse.Namespace) -> int:
    """Handler of `edgectl decode tls`."""
    try:
        text = _read_text(args.text, sys.stdin)
    except (UnicodeDecodeError, OSError) as exc:
        print(f"edgectl decode tls: cannot read the input: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        wire = parse_tls_text(text)
    except UnicodeEncodeError as exc:
        print(f"edgectl decode tls: not a TLS reply: {exc.reason}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not wire.strip(_BLANKS):
        print("edgectl decode tls: nothing to decode", file=sys.stderr)
        return EXIT_BAD_INPUT
    items, notes = _tls_items(wire, args.etx)
    described = [tls.describe(item, raw) for raw, item in items]
    if args.json:
        print(json.dumps({"notes": notes, "replies": described}, indent=2))
    else:
        for note in notes:
            print(f"note: {note}")
        for number, entry in enumerate(described, 1):
            print("\n".join(_render_tls(number, entry)))
        bad = sum(1 for entry in described if not entry["valid"])
        summary = f"{len(described)} item(s), {len(described) - bad} valid"
        print(summary + (f", {bad} not valid" if bad else ""))
    return EXIT_OK if all(entry["valid"] for entry in described) else EXIT_BAD_INPUT


_TANK_FIELDS = ("volume", "tc_volume", "ullage", "height", "water", "temperature", "water_volume")


def _render_tls(number: int, entry: dict[str, Any]) -> list[str]:
    head = f"[{number}] {entry['type'].replace('_', ' ')}"
    if entry.get("code"):
        head += f"  {entry['code']}"
    if "checksum" in entry:
        state = "ok" if entry["checksum_ok"] else "BAD"
        head += f"  checksum {state} ({entry['checksum']})"
    lines = [head]
    if not entry["valid"]:
        lines.append(f"    {entry['reason']}")
    if entry.get("at"):
        lines.append(f"    console time {entry['at'].replace('T', ' ')}")
    if entry["type"] == "UNSUPPORTED":
        lines.append("    the console does not support (or refused) the command")
    for tank in entry.get("tanks", ()):
        lines += _render_tank(entry["type"], tank)
    if entry["type"] == "DISPLAY":
        if "tanks" in entry:
            columns = ", ".join(entry["columns"])
            lines.insert(1, f"    in-tank inventory report; columns: {columns}")
            lines += [f"    not read: {line}" for line in entry["unparsed"]]
        elif "inventory_error" in entry:
            lines.append(f"    not an inventory report: {entry['inventory_error']}")
        lines += [f"    | {line}" for line in entry["text"].splitlines() if line.strip()]
    if entry.get("data"):
        lines.append(f"    data: {entry['data']}")
    lines.append(f"    raw: {entry['raw']}")
    return lines


def _render_tank(kind: str, tank: dict[str, Any]) -> list[str]:
    if kind == "ALARMS":
        alarms = ", ".join(f"{a['code']:02d} {a['name']}" for a in tank["alarms"]) or "none"
        return [f"    tank {tank['tank']}: {alarms}"]
    if kind == "DELIVERIES":
        lines = [f"    tank {tank['tank']}  product {tank['product']}"]
        for record in tank["deliveries"]:
            lines.append(f"      {record['start']} -> {record['end']}")
            values = "  ".join(
                f"{name} {value}"
                for name, value in record.items()
                if name not in ("start", "end", "float_count", "extra") and value is not None
            )
            lines.append(f"        {values}")
        return lines
    flags = [
        name.replace("_", " ")
        for name in ("delivery_in_progress", "leak_test_in_progress", "invalid_height")
        if tank[name]
    ]
    head = f"    tank {tank['tank']}  product {tank['product']}  status {tank['status']}"
    if flags:
        head += f" ({', '.join(flags)})"
    values = "  ".join(f"{name} {tank[name]}" for name in _TANK_FIELDS if tank[name] is not None)
    lines = [head, f"      {values}"]
    if tank["extra"]:
        lines.append(f"      further floats: {', '.join(map(str, tank['extra']))}")
    return lines


# --------------------------------------------------------------------------- decode ifsf
def _looks_like_heartbeat(wire: bytes) -> bool:
    # A 10-byte TCP message would carry M_Lg 2 where a heartbeat has its LNA: 0.2 is no node.
    return (
        len(wire) == ifsf_heartbeat.HEARTBEAT_BYTES
        and wire[8] == ifsf_heartbeat.HEARTBEAT_MC
        and wire[6:8] != b"\x00\x02"
    )


def _heartbeats(wire: bytes) -> list[dict[str, Any]]:
    described = []
    size = ifsf_heartbeat.HEARTBEAT_BYTES
    for start in range(0, len(wire), size):
        record = wire[start : start + size]
        try:
            beat = ifsf_heartbeat.decode_heartbeat(record)
        except FrameError as exc:
            described.append(ifsf.describe(ifsf.Malformed(record, str(exc))))
        else:
            described.append(ifsf.describe(beat))
    return described


def run_ifsf(args: argparse.Namespace) -> int:
    """Handler of `edgectl decode ifsf`."""
    try:
        text = _read_text(args.hex, sys.stdin)
    except (UnicodeDecodeError, OSError) as exc:
        print(f"edgectl decode ifsf: cannot read the input: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        wire = parse_hex(text)
    except ValueError as exc:
        print(f"edgectl decode ifsf: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not wire:
        print("edgectl decode ifsf: nothing to decode", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.kind == "heartbeat" or (args.kind == "auto" and _looks_like_heartbeat(wire)):
        described = _heartbeats(wire)
    else:
        items = ifsf.decode_all(wire, max_length=args.max_length)
        described = [ifsf.describe(item) for item in items]
    if args.json:
        print(json.dumps(described, indent=2))
    else:
        for number, entry in enumerate(described, 1):
            print("\n".join(_render_ifsf(number, entry)))
        bad = sum(1 for entry in described if not entry["valid"])
        summary = f"{len(described)} item(s), {len(described) - bad} valid"
        print(summary + (f", {bad} not valid" if bad else ""))
    return EXIT_OK if all(entry["valid"] for entry in described) else EXIT_BAD_INPUT


def _node(node: dict[str, Any]) -> str:
    return f"{node['lna']} ({node['role']})" if node["role"] else str(node["lna"])


def _render_ifsf(number: int, entry: dict[str, Any]) -> list[str]:
    head = f"[{number}] {entry['type'].replace('_', ' ')}"
    if not entry["valid"]:
        return [head, f"    {entry['reason']}", f"    raw: {entry['raw']}"]
    if entry["type"] == "HEARTBEAT":
        role = f" ({entry['role']})" if entry["role"] else ""
        flags = ", ".join(entry["status_flags"]) or ("normal" if not entry["status"] else "")
        status = f"status {entry['status']}" + (f" ({flags})" if flags else "")
        head += f"  {entry['ip']}:{entry['port']}  LNA {entry['lna']}{role}  {status}"
        return [head, f"    raw: {entry['raw']}"]
    mc = f"MC {entry['mc']}" + (f" ({entry['mc_name']})" if entry["mc_name"] else "")
    head += (
        f"  to {_node(entry['recipient'])} from {_node(entry['originator'])}"
        f"  token {entry['token']}  M_St {entry['m_st']}  {mc}  M_Lg {entry['m_lg']}"
    )
    database = entry["database"]
    lines = [head, f"    database: {database['name']} (DB_Ad {database['db_ad']})"]
    if "data_ids" in entry:
        lines += [f"    read {d['id'][2:]} {d['name']}" for d in entry["data_ids"]] or [
            "    read nothing"
        ]
    elif "ms_ack" in entry:
        ack = entry["ms_ack"]
        lines.append(f"    MS_ACK {ack['code']}: {ack['meaning'] or 'unknown code'}")
        for pair in entry["data_acks"]:
            meaning = pair["meaning"] or "unknown code"
            lines.append(f"    data ack {pair['id'][2:]} {pair['name']}: {pair['code']} {meaning}")
    else:
        for data in entry["items"]:
            line = f"    {data['id'][2:]} {data['name']}: {data['text']}"
            if not data["known"]:
                line += f" [not read: {data.get('reason', 'unknown data id')}]"
            lines.append(line)
    lines.append(f"    raw: {entry['raw']}")
    return lines
