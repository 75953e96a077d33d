"""Sniffed TLS commands and replies as `sniff` events (drivers/sniffing.py says their shape).

A TLS event also has `text`: the bytes as ASCII with control characters named (<SOH>, <ETX>).
"""

from __future__ import annotations

from typing import Any

from drivers.sniffing import Sniffer, head, keep_all
from drivers.veeder_root import codec as tls
from drivers.veeder_root.driver import TlsGauge

_MASK = b"*" * tls.SECURITY_CODE_LENGTH


def sniffer(gauge: TlsGauge, address: int | None, no_polls: bool) -> Sniffer:
    """All of a console's traffic (its line has no addresses; every frame counts)."""
    etx = gauge.settings.etx

    def describe(
        direction: str, wire: bytes, item: Any, at: float, previous: float | None
    ) -> dict[str, Any]:
        return describe_tls(direction, wire, item, at, previous, etx=etx)

    return Sniffer(gauge.taps, keep_all, describe)


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
    event = head(direction, "controller" if direction == "tx" else "console", wire, at, previous)
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
