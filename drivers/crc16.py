"""The reflected CRC-16 (polynomial 0x8005, 0xA001 reflected) that both serial protocols use:
Wayne DART starts it at 0 (CRC-16/ARC), Modbus RTU at 0xFFFF (CRC-16/MODBUS)."""

from __future__ import annotations

from typing import Final


def _table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE: Final = _table()


def crc16_reflected(data: bytes | bytearray, initial: int) -> int:
    """The CRC of `data` from `initial`, no final XOR."""
    crc = initial
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc
