"""Hypothesis strategies for IFSF values and messages, shared by the codec tests and the fuzzer."""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from drivers.ifsf import codec
from drivers.ifsf import databases as db
from drivers.ifsf.encodings import Lna
from drivers.ifsf.heartbeat import Heartbeat

_byte = st.integers(0, 0xFF)
lnas = st.builds(Lna, _byte, _byte)
heartbeats = st.builds(
    Heartbeat,
    st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
    st.integers(0, 0xFFFF),
    lnas,
    _byte,
)
_fp = st.integers(0, 4)
addresses: st.SearchStrategy[db.Address] = st.one_of(
    st.sampled_from([db.COM_SV, db.C_DAT, db.SW_DAT]),
    st.builds(db.FuellingPoint, _fp),
    st.builds(db.LogicalNozzle, _fp, st.integers(0, 8)),
    st.builds(db.TransactionBuffer, _fp, st.integers(0, 9999), st.booleans()),
    st.builds(db.ErrorEntry, _fp, _byte),
    st.builds(db.Product, st.integers(0, 8)),
    st.builds(db.ProductPerMode, st.integers(0, 99_999_999), st.integers(0, 8)),
    st.builds(db.Meter, st.integers(0, 16)),
    # Whatever 1-8 bytes say, unknown databases included.
    st.binary(min_size=1, max_size=8).map(db.parse_address),
)


@st.composite
def signed_decimals(draw: st.DrawFn, digits: int) -> Decimal:
    """Any value bin8 + bcd`digits` can carry, with the exponent the wire gives it."""
    sign = draw(st.integers(0, 1))
    body = draw(st.lists(st.integers(0, 9), min_size=digits, max_size=digits))
    point = draw(st.integers(0, 0x7F))
    return Decimal((sign, tuple(body), point - digits))


def values_for(encoding: db.Encoding) -> st.SearchStrategy[Any]:
    """Values an encoding can write (and reads back equal)."""
    match encoding:
        case db.Bin(size=size):
            return st.integers(0, 2 ** (8 * (size or 8)) - 1)
        case db.Bcd(digits=digits):
            return st.integers(0, 10 ** (digits or 12) - 1)
        case db.Ascii(size=size):
            printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
            if size is None:
                return st.text(printable, max_size=40)
            return st.text(printable, min_size=size, max_size=size)
        case db.Signed(digits=digits):
            if digits:
                return signed_decimals(digits)
            return st.sampled_from([2, 4, 6, 8, 12]).flatmap(signed_decimals)
        case db.LnaCode():
            return lnas
        case db.LnaTable():
            return st.lists(lnas, max_size=64).map(tuple)
        case db.Recipient():
            return st.one_of(lnas, heartbeats)
        case db.State() | db.Nozzles():
            return _byte
        case db.Empty():
            return st.none()
        case db.Digits(digits=digits):
            return st.text("0123456789", min_size=digits, max_size=digits)
        case db.Raw(size=size):
            return st.binary(min_size=size or 0, max_size=size or 40)
    raise AssertionError(f"no strategy for {encoding!r}")


# One of each encoding the tables use (State holds a dict, so dedupe by repr, not hash).
ENCODINGS = list(
    {
        repr(field.encoding): field.encoding
        for table in db.FIELDS.values()
        for field in table.values()
    }.values()
)
FIELDS = [
    (database, data_id, field)
    for database, table in db.FIELDS.items()
    for data_id, field in table.items()
]


@st.composite
def typed_items(draw: st.DrawFn, address: db.Address) -> codec.DataItem:
    """An item of a data id the address's database has, holding a value of its encoding."""
    table = db.FIELDS.get(address.database)
    if not table:
        return draw(raw_items)
    data_id = draw(st.sampled_from(sorted(table)))
    value = draw(values_for(table[data_id].encoding))
    return codec.item(address, data_id, value)


raw_items = st.builds(codec.DataItem, _byte, st.binary(max_size=300), st.booleans())
data_acks = st.builds(codec.DataAck, _byte, st.integers(0, 8))


@st.composite
def bodies(draw: st.DrawFn, address: db.Address) -> codec.Body:
    items = st.lists(st.one_of(typed_items(address), raw_items), max_size=6).map(tuple)
    match draw(st.sampled_from(codec.MessageType)):
        case codec.MessageType.READ:
            return codec.Read(tuple(draw(st.lists(_byte, max_size=12))))
        case codec.MessageType.ANSWER:
            return codec.Answer(draw(items))
        case codec.MessageType.WRITE:
            return codec.Write(draw(items))
        case codec.MessageType.UNSOLICITED | codec.MessageType.UNSOLICITED_ACK as kind:
            acked = kind is codec.MessageType.UNSOLICITED_ACK
            return codec.Unsolicited(draw(items), acked)
        case codec.MessageType.ACK:
            status = draw(st.one_of(st.integers(0, 9), _byte))
            pairs = (
                draw(st.lists(data_acks, max_size=6)) if status == 5 or draw(st.booleans()) else []
            )
            return codec.Ack(status, tuple(pairs))
    raise AssertionError("every message type is drawn")


@st.composite
def messages(draw: st.DrawFn) -> codec.Message:
    address = draw(addresses)
    return codec.Message(
        draw(lnas),
        draw(lnas),
        draw(st.integers(0, codec.MAX_TOKEN)),
        address,
        draw(bodies(address)),
        draw(st.one_of(st.sampled_from([0, 2]), _byte)),
    )
