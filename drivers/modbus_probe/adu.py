"""Modbus ADUs as bytes on the wire, for showing a bus's traffic: framing, CRC, what they say.

Pure: no I/O, no clock. pymodbus does the real work of the bus; this reads the same bytes
independently (as a line analyser would), so a reply pymodbus drops, with a bad CRC or cut
short, can still be shown for what it is. RTU frames end in a CRC-16/Modbus sent low byte
first; Modbus TCP ("socket") frames start with the MBAP header and carry no CRC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from drivers.crc16 import crc16_reflected

Framing: TypeAlias = Literal["rtu", "socket"]
Verdict: TypeAlias = Literal["ok", "bad", "none"]

EXCEPTION_TEXT: Final[dict[int, str]] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}
# Function code -> (type as shown, what it does, what it reads or writes).
FUNCTIONS: Final[dict[int, tuple[str, str, str]]] = {
    1: ("READ_COILS", "read coils", "coils"),
    2: ("READ_DISCRETE", "read discrete inputs", "discrete inputs"),
    3: ("READ_HOLDING", "read holding registers", "holding registers"),
    4: ("READ_INPUT", "read input registers", "input registers"),
    5: ("WRITE_COIL", "write single coil", "coil"),
    6: ("WRITE_REGISTER", "write single register", "register"),
    15: ("WRITE_COILS", "write multiple coils", "coils"),
    16: ("WRITE_REGISTERS", "write multiple registers", "registers"),
    23: ("READ_WRITE", "read/write multiple registers", "registers"),
}
_READS: Final = frozenset({1, 2, 3, 4})
_BYTE_COUNTED_REPLIES: Final = frozenset({1, 2, 3, 4, 23})
_FIXED_EIGHT: Final = frozenset({5, 6})
_MBAP: Final = 6  # transaction id, protocol id, length
_RTU_MIN: Final = 4  # device id, function code, CRC


def crc16(data: bytes | bytearray) -> int:
    """CRC-16/Modbus (reflected 0x8005, initial 0xFFFF) of `data`."""
    return crc16_reflected(data, 0xFFFF)


def with_crc(frame: bytes) -> bytes:
    """An RTU frame: `frame` followed by its CRC, low byte first."""
    return frame + crc16(frame).to_bytes(2, "little")


def frame_length(buffer: bytes | bytearray, framing: Framing, *, request: bool) -> int | None:
    """Length of the first ADU in `buffer`, or None while more bytes are needed.

    A frame whose length cannot be told (an unknown function code) is taken as the whole
    buffer.
    """
    if framing == "socket":
        if len(buffer) < _MBAP:
            return None
        size = _MBAP + int.from_bytes(buffer[4:6], "big")
        return size if len(buffer) >= size else None
    if len(buffer) < 2:
        return None
    function = buffer[1]
    length: int | None
    if function & 0x80:
        length = 5
    elif function in _FIXED_EIGHT or (request and function in _READS):
        length = 8
    elif request and function in (15, 16):
        length = 9 + buffer[6] if len(buffer) > 6 else None
    elif request and function == 23:
        length = 13 + buffer[10] if len(buffer) > 10 else None
    elif not request and function in _BYTE_COUNTED_REPLIES:
        length = 5 + buffer[2] if len(buffer) > 2 else None
    elif not request and function in (15, 16):
        length = 8
    else:
        return len(buffer)
    return length if length is not None and len(buffer) >= length else None


@dataclass(frozen=True, slots=True)
class Adu:
    """One ADU as read off the wire. `data` is what follows the function code (without the
    CRC); `complete` is False for bytes that never became a whole frame."""

    framing: Framing
    raw: bytes
    request: bool
    device_id: int | None
    function_code: int | None
    data: bytes
    crc: Verdict
    crc_received: int | None = None
    crc_computed: int | None = None
    transaction_id: int | None = None
    complete: bool = True


def decode(raw: bytes, framing: Framing, *, request: bool, complete: bool = True) -> Adu:
    """Read one ADU (as cut by `frame_length`, or what was left of one). Never raises."""
    if framing == "socket":
        body = raw[_MBAP:]
        return Adu(
            framing,
            raw,
            request,
            device_id=body[0] if body else None,
            function_code=body[1] if len(body) > 1 else None,
            data=body[2:],
            crc="none",
            transaction_id=int.from_bytes(raw[0:2], "big") if len(raw) >= 2 else None,
            complete=complete and len(raw) >= _MBAP + 2,
        )
    if len(raw) < _RTU_MIN:
        return Adu(
            framing,
            raw,
            request,
            device_id=raw[0] if raw else None,
            function_code=raw[1] if len(raw) > 1 else None,
            data=b"",
            crc="none",
            complete=False,
        )
    received = int.from_bytes(raw[-2:], "little")
    computed = crc16(raw[:-2])
    return Adu(
        framing,
        raw,
        request,
        device_id=raw[0],
        function_code=raw[1],
        data=raw[2:-2],
        crc="ok" if received == computed else "bad",
        crc_received=received,
        crc_computed=computed,
        complete=complete,
    )


def exception_text(code: int) -> str:
    return f"Modbus exception {code} ({EXCEPTION_TEXT.get(code, 'unknown exception')})"


def describe(adu: Adu) -> dict[str, Any]:
    """A JSON-able description of an ADU, with a one-line `summary`."""
    function = adu.function_code
    base = None if function is None else function & 0x7F
    kind, name, things = FUNCTIONS.get(base or 0, (f"FC{base or 0:02d}", f"function {base}", ""))
    described: dict[str, Any] = {
        "type": kind,
        "valid": adu.complete and adu.crc != "bad" and function is not None,
        "framing": adu.framing,
        "device_id": adu.device_id,
        "function_code": base,
        "function": name,
        "exception_code": None,
        "crc": adu.crc,
        "data": adu.data.hex(" ").upper(),
    }
    if adu.transaction_id is not None:
        described["transaction_id"] = adu.transaction_id
    if adu.crc_received is not None:
        described["crc_value"] = _wire(adu.crc_received)  # as sent: low byte first
    device = "?" if adu.device_id is None else str(adu.device_id)
    if not adu.complete:
        described["summary"] = f"cut short: {len(adu.raw)} byte(s), never a whole frame"
        return described
    if adu.crc == "bad":
        assert adu.crc_computed is not None and adu.crc_received is not None
        described["summary"] = (
            f"CRC mismatch: computed {_wire(adu.crc_computed)}, received {_wire(adu.crc_received)}"
        )
        return described
    if function is None:
        described["summary"] = "no function code"
        return described
    if function & 0x80:
        code = adu.data[0] if adu.data else 0
        described.update(type="EXCEPTION", exception_code=code)
        described["summary"] = f"{device} refused {name}: {exception_text(code)}"
        return described
    described["summary"] = _summary(adu, base or 0, name, things, device)
    return described


def _summary(adu: Adu, function: int, name: str, things: str, device: str) -> str:
    data = adu.data
    if adu.request and function in _READS and len(data) >= 4:
        start, count = int.from_bytes(data[0:2], "big"), int.from_bytes(data[2:4], "big")
        span = f"{start}..{start + count - 1}" if count > 1 else f"{start}"
        return f"{name} {span} from {device}"
    if not adu.request and function in _READS and data:
        count = data[0] // 2 if function in (3, 4) else data[0] * 8
        unit = things if function in (3, 4) else f"{things} (bits)"
        return f"{count} {unit} from {device}"
    if function in _FIXED_EIGHT and len(data) >= 4:
        address, value = int.from_bytes(data[0:2], "big"), int.from_bytes(data[2:4], "big")
        return f"{name} {address} = {value} on {device}"
    return f"{name} on {device} ({len(data)} byte(s) of data)"


def _wire(crc: int) -> str:
    return crc.to_bytes(2, "little").hex(" ").upper()
