"""Is a Modbus RTU device there? A read of input register 0 (an exception reply counts)."""

from __future__ import annotations

import asyncio

from drivers.modbus_probe.adu import crc16, with_crc
from drivers.probing import Prober, Setting, exchange, wire_s
from drivers.transport import SerialTransport

_EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    6: "device busy",
}
_READ_INPUT_REGISTERS = 0x04


def request(unit: int, function: int, start: int, count: int) -> bytes:
    return with_crc(bytes((unit, function)) + start.to_bytes(2, "big") + count.to_bytes(2, "big"))


def reply(received: bytes | bytearray, unit: int, function: int) -> str | None:
    """A CRC-valid reply of `unit` to `function` anywhere in `received` (an echo of our own
    request, or noise, may come first), described; None if there is none yet."""
    for start in range(len(received) - 4):
        if received[start] != unit:
            continue
        code = received[start + 1]
        if code == function:
            size = 3 + received[start + 2] + 2
        elif code == function | 0x80:
            size = 5
        else:
            continue
        frame = received[start : start + size]
        if len(frame) < size or crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
            continue
        if code == function:
            data = frame[3:-2]
            return f"FC{function:02d} reply: {len(data) // 2} register(s) = {data.hex(' ').upper()}"
        reason = _EXCEPTIONS.get(frame[2], "unknown")
        return f"exception {frame[2]:02d} ({reason}): the device is there"
    return None


async def ask(
    transport: SerialTransport, address: int | None, setting: Setting, timeout_s: float
) -> str | None:
    assert address is not None
    # Modbus RTU frames are told apart by 3.5 characters of silence.
    await asyncio.sleep(wire_s(setting, 4))
    question = request(address, _READ_INPUT_REGISTERS, 0, 1)
    wait = wire_s(setting, len(question)) + timeout_s
    return await exchange(
        transport,
        question,
        wait,
        lambda received: reply(received, address, _READ_INPUT_REGISTERS),
    )


def prober() -> Prober:
    return Prober(
        name="modbus",
        devices="Modbus device(s)",
        settings=tuple(
            Setting(baud, parity) for baud in (9600, 19200) for parity in ("none", "even", "odd")
        ),
        addresses=tuple(range(1, 17)),
        valid=range(1, 248),
        timeout_ms=500,
        ask=ask,
    )
