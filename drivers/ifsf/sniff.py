"""Sniffed IFSF messages and heartbeats as `sniff` events (drivers/sniffing.py says their
shape): what the line's controller node sends and receives, decoded as `edgectl decode ifsf`
decodes it (codec.describe)."""

from __future__ import annotations

from typing import Any

from drivers.ifsf import codec
from drivers.ifsf.driver import IfsfLine
from drivers.ifsf.heartbeat import Heartbeat
from drivers.sniffing import Sniffer, head

Item = codec.Message | codec.Malformed | Heartbeat | None


def sniffer(line: IfsfLine, address: int | None, no_polls: bool) -> Sniffer:
    """An IFSF line's messages; without the heartbeats (its routine traffic) if asked. The
    line has no addresses to filter on (`address` is always None: the registry says so)."""

    def keep(direction: str, wire: bytes, item: Item) -> bool:
        return not (no_polls and isinstance(item, Heartbeat))

    return Sniffer(line.node.taps, keep, describe_ifsf)


def describe_ifsf(
    direction: str, wire: bytes, item: Item, at: float, previous: float | None
) -> dict[str, Any]:
    """One IFSF message or heartbeat: when, which way, its bytes, what it says."""
    event = head(direction, _sender(direction, item), wire, at, previous)
    if item is None:  # bytes sent that are no message (the simulator's garbage)
        event.update(type="UNKNOWN", valid=False, address=None, seq=None, crc="none")
        event["summary"] = "not a message"
        return event
    described = codec.describe(item)
    event.update(
        type=described["type"],
        valid=described["valid"],
        address=_peer(direction, described),
        seq=described.get("token"),
        crc="none",  # TCP and UDP check their own bytes; IFSF/IP adds no CRC
        summary=summary(described),
        frame=described,
    )
    return event


def _sender(direction: str, item: Item) -> str:
    if direction == "tx":
        return "controller"
    if isinstance(item, codec.Message):
        return f"node {item.originator}"
    if isinstance(item, Heartbeat):
        return f"node {item.lna}"
    return "node"


def _peer(direction: str, described: dict[str, Any]) -> str | None:
    """The other node's LNA: the recipient of what we send, the originator of what we hear."""
    if described["type"] == "HEARTBEAT":
        return str(described["lna"])
    side = described.get("recipient" if direction == "tx" else "originator")
    return None if side is None else str(side["lna"])


def summary(described: dict[str, Any]) -> str:
    """One readable line: the database and what is read, written or acknowledged."""
    if not described["valid"]:
        return str(described["reason"])
    if described["type"] == "HEARTBEAT":
        flags = ", ".join(described["status_flags"])
        status = f"status {described['status']}" + (f" ({flags})" if flags else "")
        return f"{described['ip']}:{described['port']} LNA {described['lna']} {status}"
    where = described["database"]["name"]
    if "data_ids" in described:
        names = ", ".join(d["name"] for d in described["data_ids"]) or "nothing"
        return f"{where}: read {names}"
    if "ms_ack" in described:
        ack = described["ms_ack"]
        text = f"{where}: MS_ACK {ack['code']} {ack['meaning'] or 'unknown code'}"
        refused = [f"{p['name']} {p['meaning'] or p['code']}" for p in described["data_acks"]]
        return text + (f" ({'; '.join(refused)})" if refused else "")
    values = ", ".join(f"{d['name']}={d['text']}" for d in described["items"])
    return f"{where}: {values or 'no data'}"
