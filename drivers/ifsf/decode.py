"""`edgectl decode ifsf`: IFSF over TCP/IP messages and UDP heartbeats pasted as hex."""

from __future__ import annotations

import argparse
from typing import Any

from drivers.base import FrameError
from drivers.decoding import Decoded, Decoder, parse_hex, summary
from drivers.ifsf import codec as ifsf
from drivers.ifsf import heartbeat as ifsf_heartbeat

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


def _arguments(parser: argparse.ArgumentParser) -> None:
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


def decode(text: str, args: argparse.Namespace) -> Decoded:
    wire = parse_hex(text)
    if args.kind == "heartbeat" or (args.kind == "auto" and _looks_like_heartbeat(wire)):
        described = _heartbeats(wire)
    else:
        items = ifsf.decode_all(wire, max_length=args.max_length)
        described = [ifsf.describe(item) for item in items]
    lines = [
        line for number, entry in enumerate(described, 1) for line in _render_ifsf(number, entry)
    ]
    return Decoded(described, described, [*lines, summary(described)])


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


def decoder() -> Decoder:
    return Decoder(
        name="ifsf",
        help="IFSF over TCP/IP dispenser messages and heartbeats",
        description=(
            "Decode IFSF messages pasted as hex: spaces optional, one or several messages\n"
            "run together. With no HEX argument, or '-', read the hex from stdin."
        ),
        epilog=_IFSF_EPILOG,
        metavar="HEX",
        add_arguments=_arguments,
        decode=decode,
    )
