"""Asking a free serial line which devices answer, and how: the shape each protocol's prober
has (`<protocol>/probe.py`), and the loop `edgectl probe` and `edgectl scan` run over it.

A prober only asks questions that change nothing on a device (a DART POLL, a TLS inventory
request, a read of one Modbus input register). Each is found through its registry entry, so
the CLI knows no protocol by name; it owns the port checks, progress and the report.
"""

from __future__ import annotations

import termios
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from drivers.base import TransportError
from drivers.transport import SerialTransport


@dataclass(frozen=True, slots=True)
class Setting:
    """One way a line may be set: baud, parity, data bits (one stop bit)."""

    baud: int
    parity: str
    bytesize: int = 8

    def __str__(self) -> str:
        return f"{self.baud} {self.bytesize}{self.parity[0].upper()}1"

    def as_json(self) -> dict[str, Any]:
        return {"baud": self.baud, "parity": self.parity, "bytesize": self.bytesize}


Ask = Callable[[SerialTransport, "int | None", Setting, float], Awaitable["str | None"]]


@dataclass(frozen=True, slots=True)
class Prober:
    """How to ask one kind of device whether it is there."""

    name: str  # as `--protocol` takes it: "dart"
    devices: str  # "DART pump(s)"
    settings: tuple[Setting, ...]
    addresses: tuple[int | None, ...]  # asked by default
    valid: range  # every address the protocol has (empty: none, one device per port)
    timeout_ms: int
    ask: Ask
    address_format: str = "{}"

    def show_address(self, address: int | None) -> str:
        return "console" if address is None else self.address_format.format(address)

    async def probe(
        self,
        port: str,
        settings: Sequence[Setting],
        addresses: Sequence[int | None],
        *,
        timeout_s: float,
        progress: Callable[[], None] = lambda: None,
        stop_at_first: bool = False,
    ) -> list[Found]:
        """Ask each address at each setting; the devices that answered, in address order.
        A port that cannot be opened raises TransportError (PortBusy when it is locked)."""
        found: dict[int | None, Found] = {}
        for setting in settings:
            transport = SerialTransport(
                port,
                baud=setting.baud,
                parity=setting.parity,
                bytesize=setting.bytesize,
                name=port,
            )
            try:
                await transport.open()
            except TransportError as exc:
                if "lock" in str(exc):
                    raise PortBusy(f"{port} is in use by another process") from None
                raise
            except termios.error:
                # The port cannot take this setting (a pty refuses 7 data bits): none to ask.
                for _ in addresses:
                    progress()
                continue
            try:
                for address in addresses:
                    reply = await self.ask(transport, address, setting, timeout_s)
                    if reply is not None:
                        device = found.setdefault(address, Found(self, address, reply))
                        device.settings.append(setting)
                    progress()
            finally:
                transport.close()
            if stop_at_first and found:
                break
        return [found[a] for a in sorted(found, key=lambda a: -1 if a is None else a)]


@dataclass(slots=True)
class Found:
    """A device that answered, at which settings, and what it said first."""

    prober: Prober
    address: int | None  # None: the protocol has no addresses (one TLS console per port)
    reply: str
    settings: list[Setting] = field(default_factory=list)

    @property
    def protocol(self) -> str:
        return self.prober.name

    @property
    def where(self) -> str:
        return self.prober.show_address(self.address)


class PortBusy(TransportError):
    """Another process holds the port."""


def wire_s(setting: Setting, size: int) -> float:
    """Time `size` characters take on the line at this setting."""
    return size * (1 + setting.bytesize + (setting.parity != "none") + 1) / setting.baud


async def exchange(
    transport: SerialTransport,
    request: bytes,
    timeout_s: float,
    answer: Callable[[bytearray], str | None],
) -> str | None:
    """Send `request`, then read until `answer` finds a reply in what came back, or time out."""
    transport.discard_input()
    await transport.write(request)
    received = bytearray()
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        received += await transport.read_some(remaining)
        reply = answer(received)
        if reply is not None:
            return reply
