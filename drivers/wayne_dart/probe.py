"""Is a DART pump there? A POLL to each address (no command, no sequence number)."""

from __future__ import annotations

from drivers.probing import Prober, Setting, exchange, wire_s
from drivers.transport import SerialTransport
from drivers.wayne_dart import codec as dart

_REPLIES = frozenset(
    {dart.FrameKind.EOT, dart.FrameKind.DATA, dart.FrameKind.ACK, dart.FrameKind.NAK}
)


async def ask(
    transport: SerialTransport, address: int | None, setting: Setting, timeout_s: float
) -> str | None:
    assert address is not None
    request = dart.encode(dart.poll(address))

    def answer(received: bytearray) -> str | None:
        while received:
            used, item = dart.decode(received)
            if used == 0:
                return None
            del received[:used]
            # Only what a pump sends counts: an adapter may echo our own POLL back.
            if isinstance(item, dart.Frame) and item.address == address and item.kind in _REPLIES:
                return _text(item)
        return None

    return await exchange(transport, request, wire_s(setting, len(request)) + timeout_s, answer)


def _text(frame: dart.Frame) -> str:
    if frame.kind is dart.FrameKind.EOT:
        return "EOT (idle, nothing to report)"
    if frame.kind is dart.FrameKind.DATA:
        described = dart.describe(frame, "pump")
        parts = [f"{tx['name']}: {tx['text']}" for tx in described["transactions"]]
        return "DATA " + "; ".join(parts)
    return str(frame.kind.name)


def prober() -> Prober:
    return Prober(
        name="dart",
        devices="DART pump(s)",
        settings=tuple(
            Setting(baud, parity) for baud in (9600, 19200) for parity in ("odd", "even", "none")
        ),
        addresses=tuple(range(dart.ADDRESS_MIN, dart.ADDRESS_MAX + 1)),
        valid=range(dart.ADDRESS_MIN, dart.ADDRESS_MAX + 1),
        timeout_ms=50,
        ask=ask,
        address_format="0x{:02X}",
    )
