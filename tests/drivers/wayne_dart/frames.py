"""Golden Wayne DART bytes: the verified examples of wayne-dart.md and frames built to cover edges.

Wire bytes are written out literally. Those not in wayne-dart.md had their CRC worked out with
a plain bitwise CRC-16/ARC, independently of the codec's table-driven one.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.wayne_dart.codec import (
    DCC,
    Alarm,
    AllowedNozzles,
    Command,
    FilledVolumeAmount,
    Frame,
    FrameKind,
    Malformed,
    NozzleStatus,
    PresetAmount,
    PresetVolume,
    Prices,
    PriceUpdate,
    PumpIdentity,
    PumpParameters,
    PumpStatus,
    RequestTotals,
    TotalCounters,
    Transaction,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def tx(trans: int, data: str = "") -> Transaction:
    return Transaction(trans, h(data))


def data_frame(address: int, seq: int, *transactions: Transaction) -> Frame:
    return Frame(address, FrameKind.DATA, seq, transactions)


@dataclass(frozen=True)
class Golden:
    """A valid frame: encoding `frame` gives `wire`, decoding `wire` gives `frame`."""

    name: str
    wire: bytes
    frame: Frame


# Byte-exact examples from /work/shared/protocols/wayne-dart.md ("Verified example frames").
SPEC_EXAMPLES = (
    Golden("POLL pump 0x50", h("50 20 FA"), Frame(0x50, FrameKind.POLL)),
    Golden("EOT from 0x50 TX#0", h("50 70 FA"), Frame(0x50, FrameKind.EOT, 0)),
    Golden("NAK TX#5 from 0x50", h("50 55 FA"), Frame(0x50, FrameKind.NAK, 5)),
    Golden("ACK TX#10 0x51", h("51 CA FA"), Frame(0x51, FrameKind.ACK, 10)),
    Golden(
        "CD1 AUTHORIZE to 0x50 TX#7",
        h("50 37 01 01 06 1E 2A 03 FA"),
        data_frame(0x50, 7, tx(0x01, "06")),
    ),
    Golden(
        "CD1 RETURN FILLING INFORMATION to 0x52 TX#0",
        h("52 30 01 01 04 E7 5F 03 FA"),
        data_frame(0x52, 0, tx(0x01, "04")),
    ),
    Golden(
        "CD5 price 001175 to 0x51 TX#4",
        h("51 34 05 03 00 11 75 45 42 03 FA"),
        data_frame(0x51, 4, tx(0x05, "00 11 75")),
    ),
    Golden(
        "CD101 request totals COUN 01 to 0x51 TX#0",
        h("51 30 65 01 01 22 83 03 FA"),
        data_frame(0x51, 0, tx(0x65, "01")),
    ),
)

CONSTRUCTED = (
    Golden("ACKPOLL TX#3 0x6F", h("6F E3 FA"), Frame(0x6F, FrameKind.ACKPOLL, 3)),
    Golden(
        # CD2 + CD4 + CD1: the authorization sequence in one frame.
        "several commands: allowed nozzles, preset amount, authorize",
        h("51 33 02 02 01 02 04 04 00 00 50 00 01 01 06 DA D1 03 FA"),
        data_frame(0x51, 3, tx(0x02, "01 02"), tx(0x04, "00 00 50 00"), tx(0x01, "06")),
    ),
    Golden(
        # DC1 FILLING + DC3 nozzle 1 out at 001175 + DC2: a pump's typical answer to a poll.
        "several replies: status, nozzle, volume and amount",
        h("50 32 01 01 04 03 04 00 11 75 11 02 08 00 00 12 34 00 00 14 50 50 AE 03 FA"),
        data_frame(
            0x50, 2, tx(0x01, "04"), tx(0x03, "00 11 75 11"), tx(0x02, "00 00 12 34 00 00 14 50")
        ),
    ),
    Golden(
        "CRC high byte is SF, sent escaped (CRC 0xFA9C)",
        h("50 38 01 01 08 9C 10 FA 03 FA"),
        data_frame(0x50, 8, tx(0x01, "08")),
    ),
    Golden(
        "CRC low byte is SF, sent escaped (CRC 0x9EFA)",
        h("5B 30 01 01 05 10 FA 9E 03 FA"),
        data_frame(0x5B, 0, tx(0x01, "05")),
    ),
    Golden(
        "CRC high byte is DLE, then ETX: a literal DLE (CRC 0x101E)",
        h("50 36 01 01 0E 1E 10 03 FA"),
        data_frame(0x50, 6, tx(0x01, "0E")),
    ),
    Golden(
        "CRC 0xFA10: a literal DLE then an escaped SF",
        h("61 3B 02 08 00 00 00 24 00 00 01 00 10 10 FA 03 FA"),
        data_frame(0x61, 11, tx(0x02, "00 00 00 24 00 00 01 00")),
    ),
    Golden(
        # DLE as data, SF as data, and DLE followed by SF as data (sent 10 10 FA).
        "data holding DLE, SF, and DLE then SF",
        h("52 31 02 08 00 00 00 10 00 00 00 10 05 01 10 FA 99 02 10 10 FA 1E 08 03 FA"),
        data_frame(0x52, 1, tx(0x02, "00 00 00 10 00 00 00 10"), tx(0x05, "FA"), tx(0x99, "10 FA")),
    ),
    Golden(
        "DATA frame without transactions, TX#15",
        h("50 3F 7C 10 03 FA"),
        data_frame(0x50, 15),
    ),
    Golden(
        "DC7 pump parameters (50 bytes)",
        h(
            "53 34 07 32"
            " 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
            " 02 02 03 00 00 00 00 00 01 00 00 00 00 01 02 03"
            " 00 00 00 00 00 00 00 00 00 00 00 00"
            " 6C E4 03 FA"
        ),
        data_frame(
            0x53,
            4,
            tx(0x07, "00" * 22 + "02 02 03 00 00 00 00 00 01 00 00 00 00 01 02 03" + "00" * 12),
        ),
    ),
)

GOLDEN = SPEC_EXAMPLES + CONSTRUCTED


@dataclass(frozen=True)
class Broken:
    """Bytes that are not (only) valid frames, and every item they must decode into."""

    name: str
    wire: bytes
    items: tuple[Frame | Malformed, ...]


BROKEN = (
    Broken(
        "bad CRC",
        h("50 37 01 01 06 1E 2B 03 FA"),
        (
            Malformed(
                h("50 37 01 01 06 1E 2B 03 FA"),
                "CRC mismatch: expected 0x2A1E, received 0x2B1E",
                "bad_crc",
                0x50,
                7,
            ),
        ),
    ),
    Broken(
        "truncated DATA then a POLL",
        h("50 37 01 01 06") + h("50 20 FA"),
        (
            Malformed(
                h("50 37 01 01 06"),
                "frame cut short: a new frame starts 5 byte(s) in",
                "malformed",
                0x50,
                7,
            ),
            Frame(0x50, FrameKind.POLL),
        ),
    ),
    Broken(
        "truncated DATA then a good DATA",
        h("52 30 01 01") + h("50 37 01 01 06 1E 2A 03 FA"),
        (
            Malformed(
                h("52 30 01 01"),
                "frame cut short: a new frame starts 4 byte(s) in",
                "malformed",
                0x52,
                0,
            ),
            data_frame(0x50, 7, tx(0x01, "06")),
        ),
    ),
    Broken(
        "POLL that lost its SF, then EOT",
        h("50 20") + h("51 70 FA"),
        (
            Malformed(
                h("50 20"), "frame cut short: a new frame starts 2 byte(s) in", "malformed", 0x50
            ),
            Frame(0x51, FrameKind.EOT, 0),
        ),
    ),
    Broken(
        # 0x55 is both a NAK control byte and an address: only 51 20 FA is a frame.
        "NAK control byte that looks like an address",
        h("50 55 51 20 FA"),
        (
            Malformed(
                h("50 55"), "frame cut short: a new frame starts 2 byte(s) in", "malformed", 0x50, 5
            ),
            Frame(0x51, FrameKind.POLL),
        ),
    ),
    Broken(
        "garbage before an ACK",
        h("00 FF 13") + h("51 CA FA"),
        (
            Malformed(h("00 FF 13"), "3 byte(s) before a frame start", "garbage"),
            Frame(0x51, FrameKind.ACK, 10),
        ),
    ),
    Broken(
        "stray SFs between frames",
        h("50 70 FA") + h("FA FA") + h("50 20 FA"),
        (
            Frame(0x50, FrameKind.EOT, 0),
            Malformed(h("FA FA"), "2 byte(s) before a frame start", "garbage"),
            Frame(0x50, FrameKind.POLL),
        ),
    ),
    Broken(
        "unknown control byte",
        h("50 21 FA"),
        (Malformed(h("50 21 FA"), "unknown control byte 0x21", "malformed", 0x50),),
    ),
    Broken(
        "short frame longer than 3 bytes",
        h("50 70 00 FA"),
        (Malformed(h("50 70 00 FA"), "EOT frame is 4 bytes long, not 3", "malformed", 0x50, 0),),
    ),
    Broken(
        "data frame without ETX",
        h("50 30 01 01 00 9F 5C FA"),
        (
            Malformed(
                h("50 30 01 01 00 9F 5C FA"),
                "data frame has no ETX before SF",
                "malformed",
                0x50,
                0,
            ),
        ),
    ),
    Broken(
        "data frame too short",
        h("50 30 03 FA"),
        (Malformed(h("50 30 03 FA"), "data frame too short", "malformed", 0x50, 0),),
    ),
    Broken(
        "address then SF",
        h("50 FA"),
        (Malformed(h("50 FA"), "frame ends before its control byte", "malformed", 0x50),),
    ),
    Broken(
        # The CRC is right, so the sender built it this way: structure, not noise.
        "good CRC but LNG runs past the data",
        h("50 30 01 05 06 1D 9E 03 FA"),
        (
            Malformed(
                h("50 30 01 05 06 1D 9E 03 FA"),
                "transaction 0x01 at byte 0 declares LNG 5 but only 1 bytes remain",
                "malformed",
                0x50,
                0,
            ),
        ),
    ),
    Broken(
        "capture ends inside a frame",
        h("50 20 FA") + h("51 37 01"),
        (
            Frame(0x50, FrameKind.POLL),
            Malformed(h("51 37 01"), "capture ends inside a frame (no SF)", "malformed", 0x51, 7),
        ),
    ),
)

# Bytes that are a valid start but not yet a whole frame: decode must ask for more.
INCOMPLETE = (
    h("50"),
    h("50 20"),
    h("50 37 01 01 06 1E 2A 03"),
    # The final SF is escaped, so it is data, not the end of the frame.
    h("50 38 01 01 08 9C 10 FA"),
)


@dataclass(frozen=True)
class TypedGolden:
    """A typed transaction and its exact bytes (TRANS, LNG, data)."""

    item: object
    direction: str  # "controller" for CD, "pump" for DC
    wire: bytes


TYPED = (
    TypedGolden(Command(DCC.RETURN_STATUS), "controller", h("01 01 00")),
    TypedGolden(Command(DCC.AUTHORIZE), "controller", h("01 01 06")),
    TypedGolden(Command(DCC.SUSPEND), "controller", h("01 01 0D")),
    TypedGolden(Command(DCC.RESUME), "controller", h("01 01 0E")),
    TypedGolden(Command(DCC.RETURN_PRICES), "controller", h("01 01 0F")),
    TypedGolden(AllowedNozzles((1, 3)), "controller", h("02 02 01 03")),
    TypedGolden(AllowedNozzles((15,)), "controller", h("02 01 0F")),
    TypedGolden(PresetVolume(2000), "controller", h("03 04 00 00 20 00")),
    TypedGolden(PresetAmount(12345678), "controller", h("04 04 12 34 56 78")),
    TypedGolden(PriceUpdate((1175, 1299)), "controller", h("05 06 00 11 75 00 12 99")),
    TypedGolden(RequestTotals(1), "controller", h("65 01 01")),
    TypedGolden(PumpStatus(4), "pump", h("01 01 04")),
    TypedGolden(PumpStatus(3), "pump", h("01 01 03")),  # no DartStatus 3, still readable
    TypedGolden(FilledVolumeAmount(1234, 1450), "pump", h("02 08 00 00 12 34 00 00 14 50")),
    TypedGolden(NozzleStatus(1175, 1, True), "pump", h("03 04 00 11 75 11")),
    TypedGolden(NozzleStatus(1299, 2, False), "pump", h("03 04 00 12 99 02")),
    TypedGolden(NozzleStatus(0, 0, False), "pump", h("03 04 00 00 00 00")),
    TypedGolden(Alarm(3), "pump", h("05 01 03")),
    TypedGolden(
        PumpParameters(2, 2, 3, max_amount=99999999, grades=(1, 2)),
        "pump",
        h("07 32" + " 00" * 22 + " 02 02 03 00 00 00 00 99 99 99 99 00 00 01 02" + " 00" * 13),
    ),
    TypedGolden(PumpIdentity("0123456789"), "pump", h("09 05 01 23 45 67 89")),
    TypedGolden(
        TotalCounters(1, 123456, 987654321, 0),
        "pump",
        h("65 10 01 00 00 12 34 56 09 87 65 43 21 00 00 00 00 00"),
    ),
    TypedGolden(Prices((1175,)), "pump", h("67 03 00 11 75")),
)

# Transactions a parser must refuse (as UnknownTransaction), with a word of the reason.
UNREADABLE = (
    ("controller", tx(0x07, "00"), "no CD transaction 0x07"),
    ("controller", tx(0x01, "01"), "unknown DCC 0x01"),
    ("controller", tx(0x01, "06 06"), "LNG 2, expected 1"),
    ("controller", tx(0x01, ""), "LNG 0, expected 1"),
    ("controller", tx(0x02, ""), "at least one nozzle"),
    ("controller", tx(0x02, "00"), "nozzle 0 is outside 1-15"),
    ("controller", tx(0x02, "10"), "nozzle 16 is outside 1-15"),
    ("controller", tx(0x03, "00 00 0A 00"), "not packed BCD"),
    ("controller", tx(0x04, "00 00 10"), "LNG 3, expected 4"),
    ("controller", tx(0x05, "00 11 75 00"), "not a positive multiple of 3"),
    ("controller", tx(0x05, "00 1F 75"), "not packed BCD"),
    ("pump", tx(0x04, "00 00 00 00"), "no DC transaction 0x04"),
    ("pump", tx(0x01, "04 04"), "LNG 2, expected 1"),
    ("pump", tx(0x02, "00 00 12 34 00 00 14"), "LNG 7, expected 8"),
    ("pump", tx(0x02, "00 00 12 34 00 00 14 5A"), "not packed BCD"),
    ("pump", tx(0x03, "00 A0 00 01"), "not packed BCD"),
    ("pump", tx(0x07, "00" * 49), "LNG 49, expected 50"),
    ("pump", tx(0x07, "00" * 22 + "0A" + "00" * 27), "volume_decimals 10 is outside 0-9"),
    ("pump", tx(0x09, "01 23 45 67 8F"), "not packed BCD"),
    ("pump", tx(0x65, "01" + "00" * 10), "LNG 11, expected 16"),
    ("pump", tx(0x67, ""), "not a positive multiple of 3"),
)
