"""Sniffed frames as the events `sniff` streams: one shape for pump lines and tank gauges.

Every event has `at`, `gap_ms`, `direction` ("tx" sent by edgectl, "rx" received), `from`,
`hex`, `type`, `valid`, `address`, `seq`, `crc` ("ok" / "bad" / "none"), `summary` (one
readable line) and `frame` (the protocol's own description); the control server adds
`dropped`. Each protocol's describer lives in its folder (`<protocol>/sniff.py`) and is found
through its registry entry, so the server knows no protocol by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Keep = Callable[[str, bytes, Any], bool]
Describe = Callable[[str, bytes, Any, float, "float | None"], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Sniffer:
    """How to watch one driver: the tap list it calls for every frame, which frames the
    request wants (`keep`, run in the driver's task: cheap, never raising), and how a kept
    frame becomes a sniff event (`describe`, run in the client's stream)."""

    taps: list[Any]
    keep: Keep
    describe: Describe


def keep_all(direction: str, wire: bytes, item: object) -> bool:
    return True


def iso_ts(ts: float) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def head(
    direction: str, sender: str, wire: bytes, at: float, previous: float | None
) -> dict[str, Any]:
    """The fields every sniff event starts with."""
    return {
        "at": iso_ts(at),
        "gap_ms": None if previous is None else round((at - previous) * 1000, 1),
        "direction": direction,
        "from": sender,
        "hex": wire.hex(" ").upper(),
    }
