"""IFSF application messages over TCP as pure bytes: header, DB_Ad, data items, acks.

A message is `LNAR LNAO IFSF_MC M_St M_Lg(2)`, then `DB_Ad_Lg DB_Ad`, then the body of its
type (ifsf-over-ip.md §2): a Read lists data ids; an Answer, a Write and an unsolicited message
carry `Data_Id Data_Lg Data_El` items (Data_Lg 255: the length follows in 2 bytes, big-endian;
Data_Lg 0 with no element is a command or an unsolicited message's container id); an Ack
carries MS_ACK and, after MS_ACK 5, one `Data_Id Data_Ack` pair per refused-or-not item.

`decode_message` reads one whole message and `decode` the first message of a stream, framed by
M_Lg; both raise only `FrameError` (see framing.py for what a stream does with it). Encoders
and the dataclasses raise `ValueError` for what the wire cannot carry. Every message this codec
decodes encodes back to the same bytes.

Tolerances where sources disagree or are silent (docs/drivers.md, "IFSF"): any IFSF_MC is
kept as sent (the PetroChina FS sends 2 for COM_SV, others 0); data acks are read after any
MS_ACK, not only 5; the long-data form is read for any length and written for 255 bytes and
more (or when a decoded item came in that form).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from drivers.base import FrameError
from drivers.ifsf import databases as db
from drivers.ifsf.encodings import Lna
from drivers.ifsf.heartbeat import Heartbeat, describe_heartbeat

HEADER_BYTES = 8
MIN_M_LG = 2  # DB_Ad_Lg and one DB_Ad byte
# Not from any source: the longest message this codec frames by default. M_Lg can say 65535,
# but no dispenser message comes near this (a Recipient_Addr_Table of 64 LNAs is 130 bytes),
# and a desynchronised stream reads random M_Lg values, mostly above it. See framing.py.
MAX_M_LG = 4096
M_LG_LIMIT = 0xFFFF
LONG_DATA = 0xFF  # Data_Lg meaning "the length follows in 2 bytes"
MAX_TOKEN = 0x1F

MC_APPLICATION = 0x00
MC_HEARTBEAT = 0x01
MC_COMMUNICATION_SERVICE = 0x02
MC_NAMES = {
    MC_APPLICATION: "application",
    MC_HEARTBEAT: "heartbeat",
    MC_COMMUNICATION_SERVICE: "communication service",
}


class MessageType(enum.IntEnum):
    """M_St bits 8-6."""

    READ = 0
    ANSWER = 1
    WRITE = 2
    UNSOLICITED_ACK = 3  # unsolicited, acknowledgement wanted
    UNSOLICITED = 4  # unsolicited, no acknowledgement (every capture)
    ACK = 7


MS_ACK = {
    0: "ACK",
    1: "recipient node not reachable or unknown",
    2: "application out of order or absent",
    3: "inconsistent message (block missing)",
    5: "message refused: some data not acceptable (data acks follow)",
    6: "unknown database address",
    7: "device busy",
    8: "message unexpected",
    9: "device already locked",
}
MS_ACK_OK = 0
MS_ACK_DATA_REFUSED = 5
DATA_ACK = {
    0: "OK",
    1: "invalid value (range or length)",
    2: "not writable (read-only, or configuration outside Inoperative/Closed)",
    3: "command refused in this state",
    4: "data does not exist in this device",
    5: "command not understood",
    6: "command not accepted",
}


def _byte(value: int, what: str) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{what} {value} does not fit in a byte")


# ---------------------------------------------------------------------------------------
# Bodies
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DataItem:
    """`Data_Id Data_Lg Data_El`. `long_form` says the length goes in the 3-byte form
    (always so from 255 bytes on; kept from the wire for shorter data sent that way)."""

    data_id: int
    data: bytes = b""
    long_form: bool = False

    def __post_init__(self) -> None:
        _byte(self.data_id, "Data_Id")
        object.__setattr__(self, "data", bytes(self.data))
        if len(self.data) > M_LG_LIMIT:
            raise ValueError(f"{len(self.data)} data bytes do not fit a 2-byte length")
        if len(self.data) >= LONG_DATA:
            object.__setattr__(self, "long_form", True)

    @property
    def wire(self) -> bytes:
        if self.long_form:
            head = bytes((self.data_id, LONG_DATA)) + len(self.data).to_bytes(2, "big")
        else:
            head = bytes((self.data_id, len(self.data)))
        return head + self.data


@dataclass(frozen=True, slots=True)
class DataAck:
    """One `Data_Id Data_Ack` pair of an MS_ACK 5 acknowledgement."""

    data_id: int
    code: int

    def __post_init__(self) -> None:
        _byte(self.data_id, "Data_Id")
        _byte(self.code, "Data_Ack")

    @property
    def meaning(self) -> str | None:
        return DATA_ACK.get(self.code)


@dataclass(frozen=True, slots=True)
class Read:
    data_ids: tuple[int, ...] = ()
    type: MessageType = field(default=MessageType.READ, init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_ids", tuple(self.data_ids))
        for data_id in self.data_ids:
            _byte(data_id, "Data_Id")

    @property
    def wire(self) -> bytes:
        return bytes(self.data_ids)


def _items(items: Iterable[DataItem]) -> tuple[DataItem, ...]:
    items = tuple(items)
    for item in items:
        if not isinstance(item, DataItem):
            raise ValueError(f"{item!r} is not a DataItem")
    return items


@dataclass(frozen=True, slots=True)
class Answer:
    items: tuple[DataItem, ...] = ()
    type: MessageType = field(default=MessageType.ANSWER, init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", _items(self.items))

    @property
    def wire(self) -> bytes:
        return b"".join(item.wire for item in self.items)


@dataclass(frozen=True, slots=True)
class Write:
    items: tuple[DataItem, ...] = ()
    type: MessageType = field(default=MessageType.WRITE, init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", _items(self.items))

    @property
    def wire(self) -> bytes:
        return b"".join(item.wire for item in self.items)


@dataclass(frozen=True, slots=True)
class Unsolicited:
    """Items led by a container id (64h, 66h) with Data_Lg 0; `acknowledged` is type 011
    (an ack wanted), else 100 (every capture)."""

    items: tuple[DataItem, ...] = ()
    acknowledged: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", _items(self.items))

    @property
    def type(self) -> MessageType:
        return MessageType.UNSOLICITED_ACK if self.acknowledged else MessageType.UNSOLICITED

    @property
    def wire(self) -> bytes:
        return b"".join(item.wire for item in self.items)


@dataclass(frozen=True, slots=True)
class Ack:
    status: int = MS_ACK_OK
    data_acks: tuple[DataAck, ...] = ()
    type: MessageType = field(default=MessageType.ACK, init=False, repr=False)

    def __post_init__(self) -> None:
        _byte(self.status, "MS_ACK")
        object.__setattr__(self, "data_acks", tuple(self.data_acks))
        for pair in self.data_acks:
            if not isinstance(pair, DataAck):
                raise ValueError(f"{pair!r} is not a DataAck")

    @property
    def meaning(self) -> str | None:
        return MS_ACK.get(self.status)

    @property
    def wire(self) -> bytes:
        return bytes((self.status,)) + b"".join(bytes((p.data_id, p.code)) for p in self.data_acks)


Body: TypeAlias = Read | Answer | Write | Unsolicited | Ack


@dataclass(frozen=True, slots=True)
class Message:
    """One application message. `token` is M_St's 5-bit token: an Answer or Ack carries its
    request's, unsolicited messages carry 0."""

    recipient: Lna
    originator: Lna
    token: int
    database: db.Address
    body: Body
    mc: int = MC_APPLICATION

    def __post_init__(self) -> None:
        if not 0 <= self.token <= MAX_TOKEN:
            raise ValueError(f"token {self.token} does not fit in 5 bits")
        _byte(self.mc, "IFSF_MC")
        if not isinstance(self.recipient, Lna) or not isinstance(self.originator, Lna):
            raise ValueError("recipient and originator are Lna values")
        if len(self.body.wire) + len(self.database.wire) + 1 > M_LG_LIMIT:
            raise ValueError("the message is longer than M_Lg can say")

    @property
    def type(self) -> MessageType:
        return self.body.type

    @property
    def m_st(self) -> int:
        return self.type << 5 | self.token


@dataclass(frozen=True, slots=True)
class Malformed:
    """Bytes that are not a valid message. `kind`: "malformed" (framed by its M_Lg but
    unreadable), "truncated" (a capture ends inside it), "unframeable" (its M_Lg cannot be
    right, so nothing after it can be framed)."""

    raw: bytes
    reason: str
    kind: Literal["malformed", "truncated", "unframeable"] = "malformed"


# ---------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------
def item(address: db.Address, data_id: int, value: Any = None) -> DataItem:
    """A data item holding `value` in the encoding its data id has in `address`'s database
    (None for a command or a container); ValueError if it cannot."""
    return DataItem(data_id, db.encode_value(address, data_id, value))


def encode(message: Message) -> bytes:
    address = message.database.wire
    body = bytes((len(address),)) + address + message.body.wire
    header = message.recipient.wire + message.originator.wire
    header += bytes((message.mc, message.m_st)) + len(body).to_bytes(2, "big")
    return header + body


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------
def _read_items(data: bytes) -> tuple[DataItem, ...]:
    items = []
    at = 0
    while at < len(data):
        data_id = data[at]
        if at + 1 >= len(data):
            raise FrameError(f"data id {data_id:02X}h at byte {at} has no Data_Lg")
        length, start, long_form = data[at + 1], at + 2, False
        if length == LONG_DATA:
            if at + 4 > len(data):
                raise FrameError(f"data id {data_id:02X}h at byte {at}: long length cut short")
            length, start, long_form = int.from_bytes(data[at + 2 : at + 4], "big"), at + 4, True
        if start + length > len(data):
            raise FrameError(
                f"data id {data_id:02X}h at byte {at} declares {length} byte(s), "
                f"{len(data) - start} remain"
            )
        items.append(DataItem(data_id, data[start : start + length], long_form))
        at = start + length
    return tuple(items)


def _read_body(kind: MessageType, data: bytes) -> Body:
    match kind:
        case MessageType.READ:
            return Read(tuple(data))
        case MessageType.ANSWER:
            return Answer(_read_items(data))
        case MessageType.WRITE:
            return Write(_read_items(data))
        case MessageType.UNSOLICITED | MessageType.UNSOLICITED_ACK:
            return Unsolicited(_read_items(data), kind is MessageType.UNSOLICITED_ACK)
        case MessageType.ACK:
            if not data:
                raise FrameError("an Ack without MS_ACK")
            if len(data) % 2 == 0:
                raise FrameError(f"MS_ACK followed by {len(data) - 1} byte(s): not pairs")
            pairs = tuple(DataAck(data[i], data[i + 1]) for i in range(1, len(data), 2))
            return Ack(data[0], pairs)
    raise AssertionError(kind)  # every MessageType is matched


def decode_message(wire: bytes | bytearray) -> Message:
    """One whole message; FrameError with the reason if it is not a valid one."""
    wire = bytes(wire)
    if len(wire) < HEADER_BYTES:
        raise FrameError(f"{len(wire)} byte(s): shorter than the 8-byte header")
    m_lg = int.from_bytes(wire[6:8], "big")
    if m_lg != len(wire) - HEADER_BYTES:
        raise FrameError(f"M_Lg {m_lg}, but {len(wire) - HEADER_BYTES} byte(s) follow it")
    if m_lg < MIN_M_LG:
        raise FrameError(f"M_Lg {m_lg}: no room for DB_Ad_Lg and DB_Ad")
    m_st = wire[5]
    try:
        kind = MessageType(m_st >> 5)
    except ValueError:
        reason = f"M_St 0x{m_st:02X}: message type {m_st >> 5:03b} is not defined"
        raise FrameError(reason) from None
    ad_lg = wire[8]
    if not 1 <= ad_lg <= db.MAX_DB_AD_BYTES:
        raise FrameError(f"DB_Ad_Lg {ad_lg} is outside 1-{db.MAX_DB_AD_BYTES}")
    if HEADER_BYTES + 1 + ad_lg > len(wire):
        raise FrameError(f"DB_Ad_Lg {ad_lg} runs past the message's end")
    address = db.parse_address(wire[9 : 9 + ad_lg])
    body = _read_body(kind, wire[9 + ad_lg :])
    return Message(
        Lna(wire[0], wire[1]), Lna(wire[2], wire[3]), m_st & MAX_TOKEN, address, body, wire[4]
    )


class FramingLost(FrameError):
    """A header whose M_Lg cannot be right: the stream's message boundaries are lost, and
    TCP gives no mark to find them again. The link must be dropped and opened afresh."""

    code = "framing_lost"

    def __init__(
        self,
        message: str,
        *,
        device: str | None = None,
        code: str | None = None,
        decoded: Iterable[Message | Malformed] = (),
    ) -> None:
        super().__init__(message, device=device, code=code)
        self.decoded: list[Message | Malformed] = list(decoded)


def decode(
    buffer: bytes | bytearray, *, max_length: int = MAX_M_LG
) -> tuple[int, Message | Malformed | None]:
    """The first message of a stream: (bytes consumed, item), or (0, None) for more bytes.

    A message framed by its M_Lg but unreadable is a Malformed item (the next one starts
    right after it); an M_Lg above `max_length` raises FramingLost.
    """
    if len(buffer) < HEADER_BYTES:
        return 0, None
    m_lg = int.from_bytes(buffer[6:8], "big")
    if m_lg > max_length:
        raise FramingLost(f"M_Lg {m_lg} is above the longest message accepted ({max_length})")
    end = HEADER_BYTES + m_lg
    if len(buffer) < end:
        return 0, None
    wire = bytes(buffer[:end])
    try:
        return end, decode_message(wire)
    except FrameError as exc:
        return end, Malformed(wire, str(exc))


def decode_all(wire: bytes | bytearray, *, max_length: int = MAX_M_LG) -> list[Message | Malformed]:
    """Every message of a finished capture; what cannot be framed ends it as one item."""
    wire = bytes(wire)
    items: list[Message | Malformed] = []
    at = 0
    while at < len(wire):
        try:
            used, found = decode(wire[at:], max_length=max_length)
        except FramingLost as exc:
            reason = f"{exc}: the rest of the capture cannot be framed"
            items.append(Malformed(wire[at:], reason, "unframeable"))
            break
        if found is None:
            tail = wire[at:]
            if len(tail) < HEADER_BYTES:
                reason = f"{len(tail)} byte(s) left: shorter than the 8-byte header"
            else:
                m_lg = int.from_bytes(tail[6:8], "big")
                reason = f"M_Lg {m_lg}, but the capture ends {len(tail) - HEADER_BYTES} byte(s) in"
            items.append(Malformed(tail, reason, "truncated"))
            break
        items.append(found)
        at += used
    return items


# ---------------------------------------------------------------------------------------
# Description (used by `edgectl decode ifsf`)
# ---------------------------------------------------------------------------------------
def _hex(raw: bytes) -> str:
    return raw.hex(" ").upper()


def _lna(lna: Lna) -> dict[str, Any]:
    return {"lna": str(lna), "role": lna.role}


def _describe_address(address: db.Address) -> dict[str, Any]:
    return {
        "db_ad": _hex(address.wire),
        "database": address.database.value,
        "name": str(address),
        **address.fields(),
    }


def describe_item(address: db.Address, data: DataItem) -> dict[str, Any]:
    described = db.describe_value(address, data.data_id, data.data)
    described["length"] = len(data.data)
    if data.long_form:
        described["long_form"] = True
    described["raw"] = _hex(data.wire)
    return described


def describe(found: Message | Malformed | Heartbeat) -> dict[str, Any]:
    """A JSON-able description: every field named and valued."""
    if isinstance(found, Heartbeat):
        return describe_heartbeat(found)
    if isinstance(found, Malformed):
        return {
            "type": found.kind.upper(),
            "valid": False,
            "reason": found.reason,
            "raw": _hex(found.raw),
        }
    wire = encode(found)
    described: dict[str, Any] = {
        "type": found.type.name,
        "valid": True,
        "recipient": _lna(found.recipient),
        "originator": _lna(found.originator),
        "mc": found.mc,
        "mc_name": MC_NAMES.get(found.mc),
        "m_st": f"0x{found.m_st:02X}",
        "token": found.token,
        "m_lg": len(wire) - HEADER_BYTES,
        "database": _describe_address(found.database),
    }
    address, body = found.database, found.body
    if isinstance(body, Read):
        described["data_ids"] = [
            {"id": f"0x{data_id:02X}", "name": db.data_id_name(address, data_id)}
            for data_id in body.data_ids
        ]
    elif isinstance(body, Ack):
        described["ms_ack"] = {"code": body.status, "meaning": body.meaning}
        described["data_acks"] = [
            {
                "id": f"0x{pair.data_id:02X}",
                "name": db.data_id_name(address, pair.data_id),
                "code": pair.code,
                "meaning": pair.meaning,
            }
            for pair in body.data_acks
        ]
    else:
        described["items"] = [describe_item(address, data) for data in body.items]
    described["raw"] = _hex(wire)
    return described
