"""Sniffed DART frames as `sniff` events (drivers/sniffing.py says their shape)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from drivers.sniffing import Sniffer, head
from drivers.wayne_dart import codec
from drivers.wayne_dart.driver import DartLine

# Frames a line exchanges all the time: `--no-polls` leaves them out.
_ROUTINE: Final = frozenset({codec.FrameKind.POLL, codec.FrameKind.EOT, codec.FrameKind.ACK})


def sniffer(line: DartLine, address: int | None, no_polls: bool) -> Sniffer:
    """A DART line's frames, of one pump address if given, without polls if asked."""

    def keep(direction: str, wire: bytes, item: codec.Frame | codec.Malformed | None) -> bool:
        if address is not None and getattr(item, "address", None) != address:
            return False
        return not (no_polls and isinstance(item, codec.Frame) and item.kind in _ROUTINE)

    return Sniffer(line.taps, keep, describe_dart)


def describe_dart(
    direction: str,
    wire: bytes,
    item: codec.Frame | codec.Malformed | None,
    at: float,
    previous: float | None,
) -> dict[str, Any]:
    """One sniffed DART frame: when, which way, its bytes, what it says, CRC verdict."""
    sender: codec.Direction = "controller" if direction == "tx" else "pump"
    event = head(direction, sender, wire, at, previous)
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
