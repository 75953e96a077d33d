"""`edgectl decode tls`: Veeder-Root TLS replies pasted as text, forgiving what a paste does."""

from __future__ import annotations

import argparse
import re
from typing import Any, TypeAlias

from drivers.decoding import Decoded, Decoder, Unreadable, summary
from drivers.veeder_root import codec as tls

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


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--etx",
        type=_byte,
        default=tls.ETX,
        metavar="HEX",
        help="the console's end-of-reply character in hex (default 03)",
    )


def decode(text: str, args: argparse.Namespace) -> Decoded:
    try:
        wire = parse_tls_text(text)
    except UnicodeEncodeError as exc:
        raise Unreadable(f"not a TLS reply: {exc.reason}") from None
    if not wire.strip(_BLANKS):
        raise Unreadable("nothing to decode")
    items, notes = _tls_items(wire, args.etx)
    described = [tls.describe(item, raw) for raw, item in items]
    lines = [f"note: {note}" for note in notes]
    for number, entry in enumerate(described, 1):
        lines += _render_tls(number, entry)
    lines.append(summary(described))
    return Decoded(described, {"notes": notes, "replies": described}, lines)


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


def decoder() -> Decoder:
    return Decoder(
        name="tls",
        help="Veeder-Root TLS tank gauge replies",
        description=(
            "Decode Veeder-Root TLS replies pasted as text: computer format (i201…, checked\n"
            "against its checksum), the 9999FF1B refusal, or a display-format report.\n"
            "With no TEXT argument, or '-', read the text from stdin."
        ),
        epilog=_TLS_EPILOG,
        metavar="TEXT",
        add_arguments=_arguments,
        decode=decode,
    )
