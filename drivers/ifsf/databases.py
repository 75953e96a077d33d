"""IFSF database addresses (DB_Ad) and the data ids of each database, with their encodings.

Everything here comes from /work/shared/protocols/ifsf-over-ip.md §4-§6 (open implementations,
not the members-only standard). An address or a data id this module does not know is not an
error: it is shown raw, as a dispenser of another make may well use it.

Decoders raise `FrameError` for bytes they cannot read; builders raise `ValueError` for values
the wire cannot carry.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, Protocol, TypeAlias

from drivers.base import FrameError
from drivers.ifsf import encodings as enc
from drivers.ifsf.encodings import Lna
from drivers.ifsf.heartbeat import HEARTBEAT_BYTES, Heartbeat, decode_heartbeat, encode_heartbeat

MAX_DB_AD_BYTES = 8


class Database(enum.Enum):
    """The kinds of database a DB_Ad selects."""

    COM_SV = "COM_SV"  # communication service
    C_DAT = "C_DAT"  # calculator
    FP = "FP"  # fuelling point
    LOGICAL_NOZZLE = "LN"
    TRANSACTION = "TR"  # transaction buffer entry
    ERROR = "ER"  # error code entry
    PRODUCT = "PR"
    PRODUCT_MODE = "PR_DAT"  # product price and limits per fuelling mode
    METER = "M"
    SW_DAT = "SW_DAT"  # software download
    UNKNOWN = "unknown"


_FP_BASE, _FP_MAX = 0x20, 4  # 21h-24h, 20h = every FP
_LN_BASE, _LN_MAX = 0x10, 8  # 11h-18h after the FP, 10h = every nozzle of it
_TR_ENTRY, _TR_EVERY = 0x21, 0x20
_ER_ENTRY = 0x41
_PR_BASE, _PR_MAX = 0x40, 8
_PR_DAT = 0x61
_FM_BASE, _FM_MAX = 0x10, 8
_M_BASE, _M_MAX = 0x80, 16
_SW_DAT = 0xA1


def _check(value: int, low: int, high: int, what: str) -> None:
    if not low <= value <= high:
        raise ValueError(f"{what} {value} is outside {low}-{high}")


def _fp_text(fp: int) -> str:
    return "every FP" if fp == 0 else f"FP {fp}"


# ---------------------------------------------------------------------------------------
# Addresses. A number 0 means the wildcard: every instance (20h, 10h, 40h, 80h ...).
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ComSv:
    database: ClassVar[Database] = Database.COM_SV

    @property
    def wire(self) -> bytes:
        return b"\x00"

    def __str__(self) -> str:
        return "COM_SV (communication service)"

    def fields(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, slots=True)
class CDat:
    database: ClassVar[Database] = Database.C_DAT

    @property
    def wire(self) -> bytes:
        return b"\x01"

    def __str__(self) -> str:
        return "C_DAT (calculator)"

    def fields(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, slots=True)
class SwDat:
    database: ClassVar[Database] = Database.SW_DAT

    @property
    def wire(self) -> bytes:
        return bytes((_SW_DAT,))

    def __str__(self) -> str:
        return "SW_DAT (software download)"

    def fields(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, slots=True)
class FuellingPoint:
    """FP_ID 21h-24h; fp 0 is 20h, every FP."""

    fp: int
    database: ClassVar[Database] = Database.FP

    def __post_init__(self) -> None:
        _check(self.fp, 0, _FP_MAX, "FP")

    @property
    def wire(self) -> bytes:
        return bytes((_FP_BASE + self.fp,))

    def __str__(self) -> str:
        return _fp_text(self.fp)

    def fields(self) -> dict[str, Any]:
        return {"fp": self.fp}


@dataclass(frozen=True, slots=True)
class LogicalNozzle:
    """FP + 11h-18h; nozzle 0 is 10h, every nozzle of the FP."""

    fp: int
    nozzle: int
    database: ClassVar[Database] = Database.LOGICAL_NOZZLE

    def __post_init__(self) -> None:
        _check(self.fp, 0, _FP_MAX, "FP")
        _check(self.nozzle, 0, _LN_MAX, "logical nozzle")

    @property
    def wire(self) -> bytes:
        return bytes((_FP_BASE + self.fp, _LN_BASE + self.nozzle))

    def __str__(self) -> str:
        nozzle = "every logical nozzle" if self.nozzle == 0 else f"logical nozzle {self.nozzle}"
        return f"{_fp_text(self.fp)}, {nozzle}"

    def fields(self) -> dict[str, Any]:
        return {"fp": self.fp, "nozzle": self.nozzle}


@dataclass(frozen=True, slots=True)
class TransactionBuffer:
    """FP + 21h + TR_Seq_Nb (bcd4). `every` is the wildcard form FP + 20h + seq (0000 in
    the sources: every Payable or Locked transaction of the FP)."""

    fp: int
    seq: int
    every: bool = False
    database: ClassVar[Database] = Database.TRANSACTION

    def __post_init__(self) -> None:
        _check(self.fp, 0, _FP_MAX, "FP")
        _check(self.seq, 0, 9999, "TR_Seq_Nb")

    @property
    def wire(self) -> bytes:
        kind = _TR_EVERY if self.every else _TR_ENTRY
        return bytes((_FP_BASE + self.fp, kind)) + enc.encode_bcd(self.seq, 4)

    def __str__(self) -> str:
        if self.every:
            return f"{_fp_text(self.fp)}, every unpaid transaction (seq {self.seq:04d})"
        return f"{_fp_text(self.fp)}, transaction {self.seq:04d}"

    def fields(self) -> dict[str, Any]:
        return {"fp": self.fp, "seq": self.seq, "every": self.every}


@dataclass(frozen=True, slots=True)
class ErrorEntry:
    """FP + 41h + ER_ID: the error code entry of one error."""

    fp: int
    error_id: int
    database: ClassVar[Database] = Database.ERROR

    def __post_init__(self) -> None:
        _check(self.fp, 0, _FP_MAX, "FP")
        _check(self.error_id, 0, 0xFF, "ER_ID")

    @property
    def wire(self) -> bytes:
        return bytes((_FP_BASE + self.fp, _ER_ENTRY, self.error_id))

    def __str__(self) -> str:
        name = ERROR_CODES.get(self.error_id)
        what = f"error {self.error_id:02X}h" + (f" ({name})" if name else "")
        return f"{_fp_text(self.fp)}, {what}"

    def fields(self) -> dict[str, Any]:
        return {"fp": self.fp, "error_id": self.error_id, "error": ERROR_CODES.get(self.error_id)}


@dataclass(frozen=True, slots=True)
class Product:
    """PR_ID 41h-48h; pr 0 is 40h, every product."""

    pr: int
    database: ClassVar[Database] = Database.PRODUCT

    def __post_init__(self) -> None:
        _check(self.pr, 0, _PR_MAX, "product")

    @property
    def wire(self) -> bytes:
        return bytes((_PR_BASE + self.pr,))

    def __str__(self) -> str:
        return "every product" if self.pr == 0 else f"product {self.pr}"

    def fields(self) -> dict[str, Any]:
        return {"product": self.pr}


@dataclass(frozen=True, slots=True)
class ProductPerMode:
    """61h + Prod_Nb (bcd8) + FM_ID 11h-18h; mode 0 is 10h, every fuelling mode."""

    prod_nb: int
    mode: int
    database: ClassVar[Database] = Database.PRODUCT_MODE

    def __post_init__(self) -> None:
        _check(self.prod_nb, 0, 99_999_999, "Prod_Nb")
        _check(self.mode, 0, _FM_MAX, "fuelling mode")

    @property
    def wire(self) -> bytes:
        return bytes((_PR_DAT,)) + enc.encode_bcd(self.prod_nb, 8) + bytes((_FM_BASE + self.mode,))

    def __str__(self) -> str:
        mode = "every fuelling mode" if self.mode == 0 else f"fuelling mode {self.mode}"
        return f"product number {self.prod_nb:08d}, {mode}"

    def fields(self) -> dict[str, Any]:
        return {"prod_nb": self.prod_nb, "mode": self.mode}


@dataclass(frozen=True, slots=True)
class Meter:
    """M_ID 81h-90h; meter 0 is 80h, every meter."""

    meter: int
    database: ClassVar[Database] = Database.METER

    def __post_init__(self) -> None:
        _check(self.meter, 0, _M_MAX, "meter")

    @property
    def wire(self) -> bytes:
        return bytes((_M_BASE + self.meter,))

    def __str__(self) -> str:
        return "every meter" if self.meter == 0 else f"meter {self.meter}"

    def fields(self) -> dict[str, Any]:
        return {"meter": self.meter}


@dataclass(frozen=True, slots=True)
class UnknownDatabase:
    """A DB_Ad this codec does not know; a dispenser would answer it MS_ACK 6."""

    raw: bytes
    reason: str = "unknown database address"
    database: ClassVar[Database] = Database.UNKNOWN

    def __post_init__(self) -> None:
        object.__setattr__(self, "raw", bytes(self.raw))
        if not 1 <= len(self.raw) <= MAX_DB_AD_BYTES:
            raise ValueError(f"a DB_Ad is 1-{MAX_DB_AD_BYTES} bytes, not {len(self.raw)}")

    @property
    def wire(self) -> bytes:
        return self.raw

    def __str__(self) -> str:
        return f"unknown database {self.raw.hex(' ').upper()}"

    def fields(self) -> dict[str, Any]:
        return {"reason": self.reason}


Address: TypeAlias = (
    ComSv
    | CDat
    | SwDat
    | FuellingPoint
    | LogicalNozzle
    | TransactionBuffer
    | ErrorEntry
    | Product
    | ProductPerMode
    | Meter
    | UnknownDatabase
)
COM_SV = ComSv()
C_DAT = CDat()
SW_DAT = SwDat()


def _fp_number(byte: int) -> int | None:
    return byte - _FP_BASE if _FP_BASE <= byte <= _FP_BASE + _FP_MAX else None


def _parse_fp_address(raw: bytes, fp: int) -> Address | str:
    if len(raw) == 1:
        return FuellingPoint(fp)
    sub = raw[1]
    if len(raw) == 2 and _LN_BASE <= sub <= _LN_BASE + _LN_MAX:
        return LogicalNozzle(fp, sub - _LN_BASE)
    if sub in (_TR_ENTRY, _TR_EVERY):
        if len(raw) != 4:
            return f"a transaction address is 4 bytes, not {len(raw)}"
        if not raw[2:].hex().isdigit():
            return f"TR_Seq_Nb {raw[2:].hex().upper()} is not BCD"
        return TransactionBuffer(fp, int(raw[2:].hex()), every=sub == _TR_EVERY)
    if sub == _ER_ENTRY:
        if len(raw) != 3:
            return f"an error entry address is 3 bytes, not {len(raw)}"
        return ErrorEntry(fp, raw[2])
    return f"no FP sub-database {sub:02X}h in {len(raw)} bytes"


def parse_address(raw: bytes | bytearray) -> Address:
    """The database a DB_Ad selects; one this codec does not know comes back as
    UnknownDatabase (never raises for 1-8 bytes)."""
    raw = bytes(raw)
    if not 1 <= len(raw) <= MAX_DB_AD_BYTES:
        raise FrameError(f"a DB_Ad is 1-{MAX_DB_AD_BYTES} bytes, not {len(raw)}")
    first = raw[0]
    found: Address | str
    fp = _fp_number(first)
    if fp is not None:
        found = _parse_fp_address(raw, fp)
    elif len(raw) == 1 and first in (0x00, 0x01, _SW_DAT):
        found = COM_SV if first == 0x00 else C_DAT if first == 0x01 else SW_DAT
    elif len(raw) == 1 and _PR_BASE <= first <= _PR_BASE + _PR_MAX:
        found = Product(first - _PR_BASE)
    elif len(raw) == 1 and _M_BASE <= first <= _M_BASE + _M_MAX:
        found = Meter(first - _M_BASE)
    elif first == _PR_DAT:
        if len(raw) != 6:
            found = f"a product-per-mode address is 6 bytes, not {len(raw)}"
        elif not raw[1:5].hex().isdigit():
            found = f"Prod_Nb {raw[1:5].hex().upper()} is not BCD"
        elif not _FM_BASE <= raw[5] <= _FM_BASE + _FM_MAX:
            found = f"fuelling mode {raw[5]:02X}h is outside 10h-18h"
        else:
            found = ProductPerMode(int(raw[1:5].hex()), raw[5] - _FM_BASE)
    else:
        found = f"no database {first:02X}h in {len(raw)} byte(s)"
    return UnknownDatabase(raw, found) if isinstance(found, str) else found


# ---------------------------------------------------------------------------------------
# Meanings of enumerated values.
# ---------------------------------------------------------------------------------------
FP_STATES: Mapping[int, str] = {
    1: "Inoperative",
    2: "Closed",
    3: "Idle",
    4: "Calling",
    5: "Authorised",
    6: "Started",
    7: "Suspended started",
    8: "Fuelling",
    9: "Suspended fuelling",
}
TRANS_STATES: Mapping[int, str] = {1: "Cleared", 2: "Payable", 3: "Locked"}
# ER_ID / FP_Error_Type, from one source (TAG); 35h-38h and 99h are Chinese additions.
ERROR_CODES: Mapping[int, str] = {
    **{code: "major fault" for code in range(0x01, 0x13)},
    0x20: "battery",
    0x21: "communication",
    0x22: "emergency stop",
    0x24: "authorisation timeout",
    0x25: "maximum fill time",
    0x26: "no fuel delivered",
    0x27: "limit reached",
    0x2D: "FP inoperative",
    0x2E: "FP closed",
    0x2F: "FP already open",
    0x30: "no transaction",
    0x31: "transaction running",
    0x32: "configuration change impossible",
    0x33: "wrong controller id",
    **{code: "price change fault" for code in range(0x35, 0x39)},
    0x99: "price change successful",
}


# ---------------------------------------------------------------------------------------
# Encodings of data elements.
# ---------------------------------------------------------------------------------------
class Encoding(Protocol):
    """How one data element is carried: decode the bytes, encode a value, show it."""

    @property
    def label(self) -> str: ...

    def decode(self, data: bytes) -> Any: ...

    def encode(self, value: Any) -> bytes: ...

    def show(self, value: Any) -> tuple[str, Any]:
        """Text for people and a JSON-able value."""
        ...


def _min_bytes(value: int) -> int:
    return max(1, (value.bit_length() + 7) // 8)


@dataclass(frozen=True, slots=True)
class Bin:
    size: int | None = 1

    @property
    def label(self) -> str:
        return f"bin{8 * self.size}" if self.size else "bin"

    def decode(self, data: bytes) -> int:
        return enc.decode_bin(data, self.size)

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{value!r} is not an integer")
        return enc.encode_bin(value, self.size or _min_bytes(max(value, 0)))

    def show(self, value: Any) -> tuple[str, Any]:
        return str(value), value


@dataclass(frozen=True, slots=True)
class Bcd:
    digits: int | None = None

    @property
    def label(self) -> str:
        return f"bcd{self.digits}" if self.digits else "bcd"

    def decode(self, data: bytes) -> int:
        return enc.decode_bcd(data, self.digits)

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{value!r} is not an integer")
        if not 0 <= value < 10**enc.MAX_BCD_DIGITS:
            raise ValueError(f"{value} does not fit in bcd{self.digits or enc.MAX_BCD_DIGITS}")
        width = len(str(value))
        digits = self.digits or max(2, width + width % 2)
        return enc.encode_bcd(value, digits)

    def show(self, value: Any) -> tuple[str, Any]:
        return str(value), value


@dataclass(frozen=True, slots=True)
class Ascii:
    size: int | None = None

    @property
    def label(self) -> str:
        return f"asc{self.size}" if self.size else "asc"

    def decode(self, data: bytes) -> str:
        return enc.decode_ascii(data, self.size)

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not text")
        return enc.encode_ascii(value, self.size)

    def show(self, value: Any) -> tuple[str, Any]:
        return repr(value.rstrip(" \x00")), value


@dataclass(frozen=True, slots=True)
class Signed:
    """bin8 + bcdN: amounts and volumes (8), prices (6), totals (12); None: any width."""

    digits: int | None

    @property
    def label(self) -> str:
        return f"bin8+bcd{self.digits}" if self.digits else "bin8+bcd"

    def decode(self, data: bytes) -> Decimal:
        return enc.decode_decimal(data, self.digits)

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, Decimal):
            raise ValueError(f"{value!r} is not a Decimal")
        if self.digits:
            return enc.encode_decimal(value, self.digits)
        if not value.is_finite():
            raise ValueError(f"{value} is not a finite number")
        # Enough digits for the places after the point too (0.0001: one digit, four
        # places), in whole bytes; a positive exponent is the point's position.
        _sign, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)
        width = max(len(digits), -exponent)
        return enc.encode_decimal(value, max(2, width + width % 2))

    def show(self, value: Any) -> tuple[str, Any]:
        text = format(value, "f")
        return text, text


@dataclass(frozen=True, slots=True)
class LnaCode:
    """bin16 controller id: an LNA."""

    @property
    def label(self) -> str:
        return "LNA"

    def decode(self, data: bytes) -> Lna:
        return enc.decode_lna(data)

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, Lna):
            raise ValueError(f"{value!r} is not an Lna")
        return value.wire

    def show(self, value: Any) -> tuple[str, Any]:
        role = value.role
        return (f"{value} ({role})" if role else str(value)), str(value)


@dataclass(frozen=True, slots=True)
class LnaTable:
    """Recipient_Addr_Table: LNAs back to back (up to 64)."""

    @property
    def label(self) -> str:
        return "LNA table"

    def decode(self, data: bytes) -> tuple[Lna, ...]:
        if len(data) % 2:
            raise FrameError(f"an LNA table has an even number of bytes, not {len(data)}")
        return tuple(Lna(data[i], data[i + 1]) for i in range(0, len(data), 2))

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, tuple) or not all(isinstance(lna, Lna) for lna in value):
            raise ValueError(f"{value!r} is not a tuple of Lna")
        return b"".join(lna.wire for lna in value)

    def show(self, value: Any) -> tuple[str, Any]:
        return (", ".join(map(str, value)) or "empty"), [str(lna) for lna in value]


@dataclass(frozen=True, slots=True)
class Recipient:
    """Add/Remove_Recipient_Addr: an LNA (ZSY, TAG, LON) or a whole heartbeat record
    (SINOPEC); both are read, and a value is written in the form it is given."""

    @property
    def label(self) -> str:
        return "LNA or heartbeat record"

    def decode(self, data: bytes) -> Lna | Heartbeat:
        if len(data) == HEARTBEAT_BYTES:
            return decode_heartbeat(data)
        if len(data) == 2:
            return enc.decode_lna(data)
        raise FrameError(f"a recipient is an LNA (2 bytes) or a heartbeat (10), not {len(data)}")

    def encode(self, value: Any) -> bytes:
        if isinstance(value, Lna):
            return value.wire
        if isinstance(value, Heartbeat):
            return encode_heartbeat(value)
        raise ValueError(f"{value!r} is neither an Lna nor a Heartbeat")

    def show(self, value: Any) -> tuple[str, Any]:
        if isinstance(value, Lna):
            return str(value), str(value)
        text = f"{value.lna} at {value.ip}:{value.port} (heartbeat record)"
        return text, {"lna": str(value.lna), "ip": str(value.ip), "port": value.port}


@dataclass(frozen=True, slots=True)
class State:
    """One byte naming a state or a code; unknown values are kept and shown as such."""

    names: Mapping[int, str]
    what: str = "state"
    hex: bool = False  # error codes are written in hex (99h), states in decimal

    @property
    def label(self) -> str:
        return "bin8"

    def decode(self, data: bytes) -> int:
        return enc.decode_bin(data, 1)

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{value!r} is not an integer")
        return enc.encode_bin(value, 1)

    def show(self, value: Any) -> tuple[str, Any]:
        name = self.names.get(value)
        code = f"{value:02X}h" if self.hex else str(value)
        text = f"{code} {name}" if name else f"{code} (unknown {self.what})"
        return text, {"code": value, "name": name}


@dataclass(frozen=True, slots=True)
class Nozzles:
    """A byte of logical nozzles: bit n-1 is nozzle n."""

    @property
    def label(self) -> str:
        return "bin8 nozzle bits"

    def decode(self, data: bytes) -> int:
        return enc.decode_bin(data, 1)

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{value!r} is not an integer")
        return enc.encode_bin(value, 1)

    def show(self, value: Any) -> tuple[str, Any]:
        nozzles = nozzles_of(value)
        text = "nozzle(s) " + ", ".join(map(str, nozzles)) if nozzles else "no nozzle"
        return text, {"mask": value, "nozzles": nozzles}


def nozzles_of(mask: int) -> list[int]:
    """The logical nozzles a Log_Noz_State or Log_Noz_Mask byte names."""
    return [bit + 1 for bit in range(8) if mask >> bit & 1]


def nozzle_mask(nozzles: tuple[int, ...] | list[int]) -> int:
    """The Log_Noz_Mask byte allowing `nozzles` (1-8)."""
    mask = 0
    for nozzle in nozzles:
        _check(nozzle, 1, _LN_MAX, "logical nozzle")
        mask |= 1 << (nozzle - 1)
    return mask


@dataclass(frozen=True, slots=True)
class Empty:
    """A command, or the container id of an unsolicited message: Data_Lg 0."""

    what: str

    @property
    def label(self) -> str:
        return self.what

    def decode(self, data: bytes) -> None:
        if data:
            raise FrameError(f"a {self.what} carries no data, not {len(data)} byte(s)")

    def encode(self, value: Any) -> bytes:
        if value is not None:
            raise ValueError(f"a {self.what} carries no value, not {value!r}")
        return b""

    def show(self, value: Any) -> tuple[str, Any]:
        return self.what, None


@dataclass(frozen=True, slots=True)
class Digits:
    """bcd digits read as a date (YYYYMMDD) or a time (HHMMSS), kept as the digit string."""

    digits: int
    layout: str  # "date" or "time"

    @property
    def label(self) -> str:
        return f"bcd{self.digits} {self.layout}"

    def decode(self, data: bytes) -> str:
        return f"{enc.decode_bcd(data, self.digits):0{self.digits}d}"

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, str) or len(value) != self.digits or not value.isascii():
            raise ValueError(f"{value!r} is not {self.digits} digits")
        if not value.isdigit():
            raise ValueError(f"{value!r} is not {self.digits} digits")
        return bytes.fromhex(value)

    def show(self, value: Any) -> tuple[str, Any]:
        if self.layout == "date":
            return f"{value[:4]}-{value[4:6]}-{value[6:]}", value
        return f"{value[:2]}:{value[2:4]}:{value[4:]}", value


@dataclass(frozen=True, slots=True)
class Raw:
    """Bytes whose layout no source gives: shown in hex."""

    size: int | None = None

    @property
    def label(self) -> str:
        return f"{self.size} bytes" if self.size else "bytes"

    def decode(self, data: bytes) -> bytes:
        if self.size is not None and len(data) != self.size:
            raise FrameError(f"{self.size} byte(s) expected, not {len(data)}")
        return data

    def encode(self, value: Any) -> bytes:
        if not isinstance(value, bytes):
            raise ValueError(f"{value!r} is not bytes")
        if self.size is not None and len(value) != self.size:
            raise ValueError(f"{self.size} byte(s) expected, not {len(value)}")
        return value

    def show(self, value: Any) -> tuple[str, Any]:
        text = value.hex(" ").upper()
        return (text or "empty"), text


@dataclass(frozen=True, slots=True)
class Field:
    """One data id of a database: its name and encoding."""

    name: str
    encoding: Encoding


COMMAND = Empty("command")
CONTAINER = Empty("container")
AMOUNT = VOLUME = Signed(8)
PRICE = Signed(6)
TOTAL = Signed(12)
FP_STATE = State(FP_STATES, "FP state")
ERROR_CODE = State(ERROR_CODES, "error code", hex=True)


def _table(entries: dict[int, tuple[str, Encoding]]) -> dict[int, Field]:
    return {data_id: Field(name, encoding) for data_id, (name, encoding) in entries.items()}


# Names and ids from the LON name table, SINOPEC's enums, ZSY and TAG (ifsf-over-ip.md §5);
# encodings where the facts give one, "bin"/"bcd" of any width where they only give the kind.
COM_SV_FIELDS = _table(
    {
        0x01: ("Communication_Protocol_Ver", Bcd(12)),
        0x02: ("Local_Node_Address", LnaCode()),
        0x03: ("Recipient_Addr_Table", LnaTable()),
        0x04: ("Heartbeat_Interval", Bin(1)),
        0x05: ("Max_Block_Length", Bin(None)),
        0x0B: ("Add_Recipient_Addr", Recipient()),
        0x0C: ("Remove_Recipient_Addr", Recipient()),
    }
)
C_DAT_FIELDS = _table(
    {
        0x02: ("Nb_Products", Bin(1)),
        0x03: ("Nb_Fuelling_Modes", Bin(1)),
        0x04: ("Nb_Meters", Bin(1)),
        0x05: ("Nb_FP", Bin(1)),
        0x06: ("Country_Code", Bcd(4)),
        0x07: ("Blend_Tolerance", Bcd()),
        0x08: ("Drive_Off_Lights_Mode", Bin(1)),
        0x09: ("OPT_Light_Mode", Bin(1)),
        0x0A: ("Clear_Display_Mode", Bin(1)),
        0x0B: ("Auth_State_Mode", Bin(1)),
        0x0C: ("Stand_Alone_Auth", Bin(1)),
        0x0D: ("Max_Auth_Time", Bin(None)),
        0x15: ("Max_Time_W/O_Prog", Bin(None)),
        0x16: ("Min_Fuelling_Vol", Bin(None)),
        0x17: ("Min_Display_Vol", Bin(None)),
        0x18: ("Min_Guard_Time", Bin(None)),
        0x1A: ("Pulser_Err_Tolerance", Bin(None)),
        0x1C: ("Time_Display_Product_Name", Bin(None)),
        0x28: ("Digits_Vol_Layout", Bcd()),
        0x29: ("Digits_Amount_Layout", Bcd()),
        0x2A: ("Digits_Unit_Price", Bcd()),
        0x2B: ("Unit_Price_Mult_Fact", Bin(None)),
        0x2C: ("Amount_Rounding_Type", Bcd()),
        0x2D: ("Preset_Rounding_Amount", Bcd()),
        0x2E: ("Price_Set_Nb", Bcd()),
        0x32: ("Manufacturer_Id", Ascii()),
        0x33: ("Dispenser_Model", Ascii()),
        0x34: ("Calculator_Type", Ascii()),
        0x35: ("Calculator_Serial_No", Ascii()),
        0x36: ("Appl_Software_Ver", Ascii()),
        0x37: ("W&M_Software_Ver", Bcd()),
        0x38: ("W&M_Software_Date", Bcd()),
        0x39: ("W&M_Security_Type", Bin(None)),
        0x3A: ("Protocol_Ver", Bcd()),
        0x3B: ("SW_Change_Date", Bcd()),
        0x3C: ("SW_Change_Personal_Nb", Bcd()),
        0x3D: ("SW_Checksum", Ascii()),
        0x46: ("Calc_Illumination", Bin(None)),
        0x47: ("LCD_Backlight_Switch", Bin(None)),
        0x48: ("Display_Intensity", Bin(None)),
        0x50: ("W&M_Polynomial", Bin(None)),
        0x51: ("W&M_Seed", Bin(None)),
    }
)
FP_FIELDS = _table(
    {
        0x01: ("FP_Name", Ascii(8)),
        0x02: ("Nb_Tran_Buffer_Not_Paid", Bin(1)),
        0x03: ("Nb_Of_Historic_Trans", Bin(1)),
        0x04: ("Nb_Logical_Nozzle", Bin(1)),
        0x06: ("Loudspeaker_Switch", Bin(1)),
        0x07: ("Default_Fuelling_Mode", Bin(1)),
        0x08: ("Leak_Log_Noz_Mask", Nozzles()),
        0x0A: ("Drive_Off_Light_Switch", Bin(1)),
        0x0B: ("OPT_Light_Switch", Bin(1)),
        0x14: ("FP_State", FP_STATE),
        0x15: ("Log_Noz_State", Nozzles()),
        0x16: ("Assign_Contr_Id", LnaCode()),
        0x17: ("Release_Mode", Bin(1)),
        0x18: ("ZeroTR_Mode", Bin(1)),
        0x19: ("Log_Noz_Mask", Nozzles()),
        0x1A: ("Config_Lock", Bin(None)),
        0x1B: ("Remote_Amount_Prepay", AMOUNT),
        0x1C: ("Remote_Volume_Preset", VOLUME),
        0x1D: ("Current_TR_Seq_Nb", Bcd(4)),
        0x1E: ("Release_Contr_Id", LnaCode()),
        0x1F: ("Suspend_Contr_Id", LnaCode()),
        0x20: ("Release_Token", Bin(1)),
        0x21: ("Fuelling_Mode", Bin(1)),
        0x22: ("Current_Amount", AMOUNT),
        0x23: ("Current_Volume", VOLUME),
        0x24: ("Current_Unit_Price", PRICE),
        0x25: ("Current_Log_Noz", Bin(1)),
        0x26: ("Current_Prod_Nb", Bcd(8)),
        0x27: ("Current_TR_Error_Code", ERROR_CODE),
        0x28: ("Current_Average_Temp", Signed(None)),
        0x29: ("Transaction_Sequence_Nb", Bcd(4)),
        0x2A: ("Current_Price_Set_Nb", Bcd()),
        0x2B: ("Multi_Nozzle_Type", Bin(None)),
        0x2C: ("Multi_Nozzle_State", Bin(None)),
        0x2D: ("Multi_Nozzle_Status_Message", Raw()),
        0x33: ("Local_Vol_Preset", VOLUME),
        0x34: ("Local_Amount_Prepay", AMOUNT),
        0x3B: ("Running_Transaction_Message_Frequency", Bcd(4)),
        0x3C: ("Open_FP", COMMAND),
        0x3D: ("Close_FP", COMMAND),
        0x3E: ("Release_FP", COMMAND),
        0x3F: ("Terminate_FP", COMMAND),
        0x40: ("Suspend_FP", COMMAND),
        0x41: ("Resume_FP", COMMAND),
        0x42: ("Clear_Display", COMMAND),
        0x43: ("Leak_Command", COMMAND),
        0x50: ("FP_Alarm", Raw(8)),
        0x64: ("FP_Status_Message", CONTAINER),
        0x65: ("FP_Multi_Nozzle_Status_Message", Raw()),
        0x66: ("FP_Running_Transaction_Message", CONTAINER),
    }
)
LOGICAL_NOZZLE_FIELDS = _table(
    {
        0x01: ("PR_Id", Bin(1)),
        0x03: ("Hose_Expansion_Vol", Bin(None)),
        0x04: ("Slow_Flow_Valve_Activ", Bin(None)),
        0x05: ("Physical_Noz_Id", Bin(1)),
        0x07: ("Meter_1_Id", Bin(1)),
        0x08: ("Meter_1_Blend_Ratio", Bcd()),
        0x09: ("Meter_2_Id", Bin(1)),
        0x0A: ("Logical_Nozzle_Type", Bin(1)),
        0x0B: ("Preset_Valve_Activation", Bin(None)),
        0x14: ("Log_Noz_Vol_Total", TOTAL),
        0x15: ("Log_Noz_Amount_Total", TOTAL),
        0x16: ("No_TR_Total", TOTAL),
        0x1E: ("Log_Noz_SA_Vol_Total", TOTAL),
        0x1F: ("Log_Noz_SA_Amount_Total", TOTAL),
        0x20: ("No_TR_SA_Total", TOTAL),
    }
)
TRANSACTION_FIELDS = _table(
    {
        0x01: ("TR_Seq_Nb", Bcd(4)),
        0x02: ("TR_Contr_Id", LnaCode()),
        0x03: ("TR_Release_Token", Bin(1)),
        0x04: ("TR_Fuelling_Mode", Bin(1)),
        0x05: ("TR_Amount", AMOUNT),
        0x06: ("TR_Volume", VOLUME),
        0x07: ("TR_Unit_Price", PRICE),
        0x08: ("TR_Log_Noz", Bin(1)),
        0x09: ("TR_Price_Set_Nb", Bcd()),
        0x0A: ("TR_Prod_Nb", Bcd(8)),
        0x0B: ("TR_Prod_Description", Ascii(16)),
        0x0C: ("TR_Error_Code", ERROR_CODE),
        0x0D: ("TR_Average_Temp", Signed(None)),
        0x0E: ("TR_Security_Chksum", Bin(3)),
        0x0F: ("M1_Sub_Volume", VOLUME),
        0x10: ("M2_Sub_Volume", VOLUME),
        0x11: ("TR_Tax_Amount", AMOUNT),
        0x14: ("TR_Buff_Contr_Id", LnaCode()),
        0x15: ("Trans_State", State(TRANS_STATES)),
        0x1E: ("Clear_Transaction", COMMAND),
        0x1F: ("Lock_Transaction", COMMAND),
        0x20: ("Unlock_Transaction", COMMAND),
        0x64: ("TR_Buff_Status_Message", CONTAINER),
        # PetroChina / Sinopec offline sales (oil-company ids, SINOPEC enum 200-205, ZSY).
        0xC8: ("Offline_TR_Read (oil-company C8h)", Raw()),
        0xC9: ("Offline_TR_Remove (oil-company C9h)", Raw()),
        0xCA: ("Offline_TR_Date (oil-company CAh)", Digits(8, "date")),
        0xCB: ("Offline_TR_Time (oil-company CBh)", Digits(6, "time")),
        0xCC: ("Offline_TR_Start_Total (oil-company CCh)", Signed(None)),
        0xCD: ("Offline_TR_End_Total (oil-company CDh)", Signed(None)),
    }
)
ERROR_FIELDS = _table(
    {
        0x01: ("FP_Error_Type", ERROR_CODE),
        0x02: ("FP_Err_Description", Ascii(20)),
        0x03: ("FP_Error_Total", Bin(None)),
        0x05: ("FP_Error_State", FP_STATE),
        0x64: ("FP_Error_Type_Mes", CONTAINER),
    }
)
PRODUCT_FIELDS = _table(
    {
        0x02: ("Prod_Nb", Bcd(8)),
        0x03: ("Prod_Description", Ascii(16)),
        0x0A: ("Vap_Recover_Const", Bin(None)),
    }
)
PRODUCT_MODE_FIELDS = _table(
    {
        0x01: ("Fuelling_Mode_Name", Ascii()),
        0x02: ("Prod_Price", PRICE),
        0x03: ("Max_Vol", VOLUME),
        0x04: ("Max_Fill_Time", Bin(None)),
        0x05: ("Max_Auth_Time", Bin(None)),
        0x06: ("User_Max_Volume", VOLUME),
    }
)
METER_FIELDS = _table(
    {
        0x01: ("Meter_Type", Bin(None)),
        0x02: ("Meter_Puls_Vol_Fact", Bin(None)),
        0x03: ("Meter_Calib_Fact", Bcd()),
        0x04: ("PR_Id", Bin(1)),
        0x14: ("Meter_Total", TOTAL),
    }
)
FIELDS: Mapping[Database, Mapping[int, Field]] = {
    Database.COM_SV: COM_SV_FIELDS,
    Database.C_DAT: C_DAT_FIELDS,
    Database.FP: FP_FIELDS,
    Database.LOGICAL_NOZZLE: LOGICAL_NOZZLE_FIELDS,
    Database.TRANSACTION: TRANSACTION_FIELDS,
    Database.ERROR: ERROR_FIELDS,
    Database.PRODUCT: PRODUCT_FIELDS,
    Database.PRODUCT_MODE: PRODUCT_MODE_FIELDS,
    Database.METER: METER_FIELDS,
}
MANUFACTURER_IDS = range(0xC8, 0x100)  # 200-255: the manufacturer's or the oil company's


def field_for(address: Address, data_id: int) -> Field | None:
    """The data id's name and encoding in the database `address` selects, if known."""
    return FIELDS.get(address.database, {}).get(data_id)


def data_id_name(address: Address, data_id: int) -> str:
    found = field_for(address, data_id)
    if found is not None:
        return found.name
    if data_id in MANUFACTURER_IDS:
        return f"manufacturer data {data_id:02X}h"
    return f"unknown data id {data_id:02X}h"


def encode_value(address: Address, data_id: int, value: Any) -> bytes:
    """Data_El bytes of `value` for a known data id; ValueError if unknown or unfit."""
    found = field_for(address, data_id)
    if found is None:
        raise ValueError(f"no data id {data_id:02X}h in {address}")
    return found.encoding.encode(value)


def decode_value(address: Address, data_id: int, data: bytes) -> Any:
    """The value of a known data id; FrameError if unknown or unreadable."""
    found = field_for(address, data_id)
    if found is None:
        raise FrameError(f"no data id {data_id:02X}h in {address}")
    return found.encoding.decode(data)


def describe_value(address: Address, data_id: int, data: bytes) -> dict[str, Any]:
    """Name, encoding, text and JSON value of one data element; never raises."""
    found = field_for(address, data_id)
    described: dict[str, Any] = {"id": f"0x{data_id:02X}", "name": data_id_name(address, data_id)}
    if found is None:
        hexed = data.hex(" ").upper()
        described.update(encoding=None, text=hexed or "empty", value=hexed, known=False)
        return described
    described["encoding"] = found.encoding.label
    try:
        text, value = found.encoding.show(found.encoding.decode(data))
    except FrameError as exc:
        hexed = data.hex(" ").upper()
        described.update(text=hexed or "empty", value=hexed, known=False, reason=str(exc))
    else:
        described.update(text=text, value=value, known=True)
    return described
