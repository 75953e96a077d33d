"""Sniffed Modbus ADUs as `sniff` events (drivers/sniffing.py says their shape)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drivers.modbus_probe import adu
from drivers.sniffing import Sniffer, head

if TYPE_CHECKING:  # the bus itself is pymodbus's: describing frames does not need it
    from drivers.modbus_probe.driver import ModbusProbeBus


def sniffer(bus: ModbusProbeBus, address: int | None, no_polls: bool) -> Sniffer:
    """A probe line's ADUs, of one device id if given."""

    def keep(direction: str, wire: bytes, item: adu.Adu) -> bool:
        return address is None or item.device_id == address

    return Sniffer(bus.taps, keep, describe_modbus)


def describe_modbus(
    direction: str, wire: bytes, item: adu.Adu, at: float, previous: float | None
) -> dict[str, Any]:
    """One sniffed Modbus ADU: device id as the address, the RTU CRC verdict ("none" over
    Modbus TCP, which has none)."""
    event = head(direction, "controller" if direction == "tx" else "device", wire, at, previous)
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
