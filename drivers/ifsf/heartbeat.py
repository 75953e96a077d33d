"""The IFSF heartbeat record (10 bytes on UDP): who a node is and where its TCP server listens.

Layout, agreed by every source: IPv4 address (4 bytes, network order), TCP port (2, big-endian),
LNA (subnet, node), IFSF_MC = 1, status (1). Status 0 is normal; one source names bit 1
"configuration needed" and bit 8 "software refresh required", another puts the FP state in the
byte, so the status is kept as sent and its bits are only named, never acted on here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from drivers.base import FrameError
from drivers.ifsf.encodings import Lna

HEARTBEAT_BYTES = 10
HEARTBEAT_MC = 0x01
STATUS_CONFIGURATION_NEEDED = 0x01
STATUS_SOFTWARE_REFRESH = 0x80
STATUS_BITS = {
    STATUS_CONFIGURATION_NEEDED: "configuration needed",
    STATUS_SOFTWARE_REFRESH: "software refresh required",
}


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One heartbeat: the sender's IP, its TCP server port, its LNA and status byte."""

    ip: ipaddress.IPv4Address
    port: int
    lna: Lna
    status: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"TCP port {self.port} does not fit in 2 bytes")
        if not 0 <= self.status <= 0xFF:
            raise ValueError(f"heartbeat status {self.status} does not fit in a byte")

    @property
    def flags(self) -> list[str]:
        return [name for bit, name in STATUS_BITS.items() if self.status & bit]


def encode_heartbeat(heartbeat: Heartbeat) -> bytes:
    return (
        heartbeat.ip.packed
        + heartbeat.port.to_bytes(2, "big")
        + heartbeat.lna.wire
        + bytes((HEARTBEAT_MC, heartbeat.status))
    )


def decode_heartbeat(data: bytes | bytearray) -> Heartbeat:
    """The heartbeat in one datagram; FrameError if it is not exactly one."""
    data = bytes(data)
    if len(data) != HEARTBEAT_BYTES:
        raise FrameError(f"a heartbeat is {HEARTBEAT_BYTES} bytes, not {len(data)}")
    if data[8] != HEARTBEAT_MC:
        raise FrameError(f"IFSF_MC 0x{data[8]:02X} is not 0x01 (heartbeat)")
    return Heartbeat(
        ipaddress.IPv4Address(data[:4]),
        int.from_bytes(data[4:6], "big"),
        Lna(data[6], data[7]),
        data[9],
    )


def describe_heartbeat(heartbeat: Heartbeat) -> dict[str, Any]:
    """A JSON-able description (used by `edgectl decode ifsf`)."""
    return {
        "type": "HEARTBEAT",
        "valid": True,
        "ip": str(heartbeat.ip),
        "port": heartbeat.port,
        "lna": str(heartbeat.lna),
        "role": heartbeat.lna.role,
        "mc": HEARTBEAT_MC,
        "status": heartbeat.status,
        "status_flags": heartbeat.flags,
        "raw": encode_heartbeat(heartbeat).hex(" ").upper(),
    }
