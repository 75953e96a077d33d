"""Is a TLS console there? An inventory request (i20100), with and without a terminator."""

from __future__ import annotations

from drivers.probing import Prober, Setting, exchange, wire_s
from drivers.transport import SerialTransport
from drivers.veeder_root import codec as tls


async def ask(
    transport: SerialTransport, address: int | None, setting: Setting, timeout_s: float
) -> str | None:
    def answer(received: bytearray) -> str | None:
        while received:
            used, item = tls.decode(received)
            if used == 0:
                return None
            del received[:used]
            if not isinstance(item, tls.Malformed) and item is not None:
                return _text(item)
        return None

    # Some consoles act on a command only once a newline follows it; most need none.
    for terminator, shown in ((b"", ""), (b"\r\n", " (needs a CR LF terminator)")):
        request = tls.encode_command("i20100", terminator=terminator)
        wait = wire_s(setting, len(request)) + timeout_s
        reply = await exchange(transport, request, wait, answer)
        if reply is not None:
            return reply + shown
    return None


def _text(item: object) -> str:
    if isinstance(item, tls.Inventory):
        tanks = getattr(item, "tanks", ())
        return f"i201 inventory of {len(tanks)} tank(s)"
    if isinstance(item, tls.Unsupported):
        return "9999FF1B: the console answers but refuses i201"
    if isinstance(item, tls.DisplayReport):
        return "a display-format report"
    return f"{type(item).__name__} reply"


def prober() -> Prober:
    return Prober(
        name="tls",
        devices="TLS console(s)",
        settings=tuple(
            Setting(baud, parity, bytesize)
            for baud in (9600, 2400, 1200)
            for parity, bytesize in (("none", 8), ("even", 7), ("odd", 7))
        ),
        addresses=(None,),
        valid=range(0),
        timeout_ms=1000,
        ask=ask,
    )
