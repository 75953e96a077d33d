"""Sniffed frames as the events `sniff` streams: one shape for pump lines and tank gauges.

Every event has `at`, `gap_ms`, `direction` ("tx" sent by edgectl, "rx" received), `from`,
`hex`, `type`, `valid`, `address`, `seq`, `crc` ("ok" / "bad" / "none"), `summary` (one
readable line) and `frame` (the protocol's own description); the server adds `dropped`.
A TLS event also has `text`: the bytes as ASCII with control characters named (<SOH>, <ETX>).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from drivers.modbus_probe import adu
from drivers.veeder_root import codec as tls
from drivers.wayne_dart import codec

_MASK = b"*" * tls.SECURITY_CODE_LENGTH


def iso_ts(ts: float) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _head(
    direction: str, sender: str, wire: bytes, at: float, previous: float | None
) -> dict[str, Any]:
    return {
        "at": iso_ts(at),
        "gap_ms": None if previous is None else round((at - previous) * 1000, 1),
        "direction": direction,
        "from": sender,
        "hex": wire.hex(" ").upper(),
    }


# --------------------------------------------------------------------------- Wayne DART
def describe_dart(
    direction: str,
    wire: bytes,
    item: codec.Frame | codec.Malformed | None,
    at: float,
    previous: float | None,
) -> dict[str, Any]:
    """One sniffed DART frame: when, which way, its bytes, what it says, CRC verdict."""
    sender: codec.Direction = "controller" if direction == "tx" else "pump"
    event = _head(direction, sender, wire, at, previous)
    if item is None:
        event.update(type="UNKNOWN", valid=False, address=None, crc="none", summary="?")
        return event
    described = codec.describe(item, sender)
    event.update(
        type=described["type"],
        valid=described["valid"],
        address=described["address"],
        seq=described["seq"],
        crc=described.get("crc", "none"),
        summary=_frame_summary(described),
        frame=described,
    )
    return event


def _frame_summary(described: Mapping[str, Any]) -> str:
    if not described["valid"]:
        return str(described["reason"])
    parts = [f"{tx['name']}: {tx['text']}" for tx in described.get("transactions", ())]
    return "; ".join(parts)


# --------------------------------------------------------------------------- Veeder-Root TLS
def describe_tls(
    direction: str,
    wire: bytes,
    item: tls.Command | tls.Reply | tls.Malformed | None,
    at: float,
    previous: float | None,
    *,
    etx: int = tls.ETX,
) -> dict[str, Any]:
    """One sniffed TLS command or reply; `crc` is the verdict of a computer-format reply's
    checksum. A command's security code is shown as asterisks, in `hex` as in `text`."""
    if isinstance(item, tls.Command) and item.security_code is not None:
        wire = wire[:1] + _MASK + wire[1 + len(_MASK) :]
    event = _head(direction, "controller" if direction == "tx" else "console", wire, at, previous)
    event.update(text=tls.printable(wire, etx=etx), address=None, seq=None)
    if item is None:
        event.update(
            type="ESC",
            valid=True,
            crc="none",
            summary="abort: no reply in time, the console drops what it still sends",
            frame=None,
        )
        return event
    if isinstance(item, tls.Command):
        described = tls.describe_command(item)
        event.update(
            type=described["type"],
            valid=True,
            crc="none",
            summary=described["summary"],
            frame=described,
        )
        return event
    described = tls.describe(item, wire)
    described.pop("raw", None)  # the same as `text`
    ok = described.get("checksum_ok")
    event.update(
        type=described["type"],
        valid=described["valid"],
        crc="none" if ok is None else ("ok" if ok else "bad"),
        summary=tls.summarize(described),
        frame=described,
    )
    return event


# --------------------------------------------------------------------------- Modbus
def describe_modbus(
    direction: str, wire: bytes, item: adu.Adu, at: float, previous: float | None
) -> dict[str, Any]:
    """One sniffed Modbus ADU: device id as the address, the RTU CRC verdict ("none" over
    Modbus TCP, which has none)."""
    event = _head(direction, "controller" if direction == "tx" else "device", wire, at, previous)
    described = adu.describe(item)
    event.update(
        type=described["type"],
        valid=described["valid"],
        address=item.device_id,
        seq=described.get("transaction_id"),
        crc=item.crc,
        summary=described["summary"],
        frame=described,
    )
    return event
