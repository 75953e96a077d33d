"""Golden IFSF messages: every hex example of ifsf-over-ip.md §9, and messages composed from
§5-§7 for what it leaves out (a stored sale read, locked and cleared, totals, wildcards).

Wire bytes are written out literally; messages are built with the codec's constructors and
typed values, so a golden checks both directions: encoding `message` gives `wire`, decoding
`wire` gives `message`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from decimal import Decimal

from drivers.ifsf import databases as db
from drivers.ifsf.codec import Ack, Answer, DataAck, DataItem, Message, Read, Unsolicited, Write
from drivers.ifsf.codec import item as it
from drivers.ifsf.encodings import Lna
from drivers.ifsf.heartbeat import Heartbeat


def h(text: str) -> bytes:
    return bytes.fromhex(text)


CD = Lna(2, 1)
FP1 = db.FuellingPoint(1)
PRICE_8_MODE_1 = db.ProductPerMode(8, 1)


@dataclass(frozen=True)
class Golden:
    name: str
    wire: bytes
    message: Message
    source: str  # where the bytes come from


SPEC_EXAMPLES = (
    Golden(
        "E2 read FP_State",
        h("01 03 02 01 00 1E 00 03 01 21 14"),
        Message(Lna(1, 3), CD, 30, FP1, Read((0x14,))),
        "capture, ZSY uart.c Reply_FS_StaIsChanged",
    ),
    Golden(
        "E2 answer FP_State Closed",
        h("02 01 01 03 00 3E 00 05 01 21 14 01 02"),
        Message(CD, Lna(1, 3), 30, FP1, Answer((it(FP1, 0x14, 2),))),
        "capture, ZSY",
    ),
    Golden(
        "E2 answer FP_State Idle (ZHANG DecodeTest)",
        h("02 01 01 02 00 29 00 05 01 21 14 01 03"),
        Message(CD, Lna(1, 2), 9, FP1, Answer((it(FP1, 0x14, 3),))),
        "ZHANG DecodeTest",
    ),
    Golden(
        "E3 authorise with an amount preset",
        h("01 0B 02 01 00 59 00 12 01 21 1B 05 06 00 99 00 00 19 01 01 1E 02 02 01 3E 00"),
        Message(
            Lna(1, 11),
            CD,
            25,
            FP1,
            Write(
                (
                    it(FP1, 0x1B, Decimal("9900.00")),
                    it(FP1, 0x19, db.nozzle_mask([1])),
                    it(FP1, 0x1E, CD),
                    it(FP1, 0x3E),
                )
            ),
        ),
        "capture, ZSY DealAuthOPT",
    ),
    Golden(
        "E3 accepted",
        h("02 01 01 04 00 F1 00 03 01 21 00"),
        Message(CD, Lna(1, 4), 17, FP1, Ack(0)),
        "capture, ZSY Reply_FS_Auth_OPT",
    ),
    Golden(
        "E3 refused request (prepay 100.000)",
        h("01 03 02 01 00 4C 00 12 01 21 1B 05 05 00 10 00 00 1E 02 02 01 19 01 01 3E 00"),
        Message(
            Lna(1, 3),
            CD,
            12,
            FP1,
            Write(
                (
                    it(FP1, 0x1B, Decimal("100.000")),
                    it(FP1, 0x1E, CD),
                    it(FP1, 0x19, 0x01),
                    it(FP1, 0x3E),
                )
            ),
        ),
        "capture, ZSY Reply_FS_CantAuth_OPT",
    ),
    Golden(
        "E3 refused: MS_ACK 5, Release_FP refused in this state",
        h("02 01 01 03 00 EC 00 0B 01 21 05 1B 00 1E 00 19 00 3E 03"),
        Message(
            CD,
            Lna(1, 3),
            12,
            FP1,
            Ack(5, (DataAck(0x1B, 0), DataAck(0x1E, 0), DataAck(0x19, 0), DataAck(0x3E, 3))),
        ),
        "capture, ZSY Reply_FS_CantAuth_OPT",
    ),
    Golden(
        "E4 unsolicited FP status, Started, nozzle 1 lifted",
        h("02 01 01 03 00 80 00 18 01 21 64 00 14 01 06 15 01 01 16 02 00 00 50 08") + bytes(8),
        Message(
            CD,
            Lna(1, 3),
            0,
            FP1,
            Unsolicited(
                (
                    it(FP1, 0x64),
                    it(FP1, 0x14, 6),
                    it(FP1, 0x15, 0x01),
                    it(FP1, 0x16, Lna(0, 0)),
                    it(FP1, 0x50, bytes(8)),
                )
            ),
        ),
        "capture, ZSY",
    ),
    Golden(
        "E7 price change to 4.90",
        h("01 03 02 01 00 43 00 0D 06 61 00 00 00 08 11 02 04 04 00 04 90"),
        Message(
            Lna(1, 3), CD, 3, PRICE_8_MODE_1, Write((it(PRICE_8_MODE_1, 0x02, Decimal("4.90")),))
        ),
        "capture, ZSY and ZHY Reply_FS_DownLoad_Price",
    ),
    Golden(
        "E7 price change acked",
        h("02 01 01 03 00 E3 00 08 06 61 00 00 00 08 11 00"),
        Message(CD, Lna(1, 3), 3, PRICE_8_MODE_1, Ack(0)),
        "capture, ZSY",
    ),
    Golden(
        "E7 error 99h price change successful, FP Closed",
        h("02 01 01 01 00 80 00 0C 03 21 41 99 64 00 01 01 99 05 01 02"),
        Message(
            CD,
            Lna(1, 1),
            0,
            db.ErrorEntry(1, 0x99),
            Unsolicited(
                (
                    DataItem(0x64),
                    it(db.ErrorEntry(1, 0x99), 0x01, 0x99),
                    it(db.ErrorEntry(1, 0x99), 0x05, 2),
                )
            ),
        ),
        "capture, ZSY",
    ),
    Golden(
        "E9 Add_Recipient_Addr 2.1 (MC 2)",
        h("01 03 02 01 02 4B 00 06 01 00 0B 02 02 01"),
        Message(Lna(1, 3), CD, 11, db.COM_SV, Write((it(db.COM_SV, 0x0B, CD),)), mc=2),
        "capture, ZSY",
    ),
    Golden(
        "E9 Add_Recipient_Addr acked",
        h("02 01 01 03 00 EB 00 03 01 00 00"),
        Message(CD, Lna(1, 3), 11, db.COM_SV, Ack(0)),
        "capture, ZSY",
    ),
    Golden(
        "E9 read Heartbeat_Interval (MC 2)",
        h("01 03 02 01 02 01 00 03 01 00 04"),
        Message(Lna(1, 3), CD, 1, db.COM_SV, Read((0x04,)), mc=2),
        "capture, ZSY",
    ),
    Golden(
        "E9 Heartbeat_Interval 10 s",
        h("02 01 01 03 00 21 00 05 01 00 04 01 0A"),
        Message(CD, Lna(1, 3), 1, db.COM_SV, Answer((it(db.COM_SV, 0x04, 10),))),
        "capture, ZSY; ZHANG TcpSendTest",
    ),
)

TR_42 = db.TransactionBuffer(1, 42)
NOZZLE_1 = db.LogicalNozzle(1, 1)
# Composed from §5-§7: the codec's rules applied by hand, not captures.
COMPOSED = (
    Golden(
        "read every unpaid transaction of FP 1 (TR wildcard)",
        h("01 03 02 01 00 05 00 07 04 21 20 00 00 01 15"),
        Message(Lna(1, 3), CD, 5, db.TransactionBuffer(1, 0, every=True), Read((0x01, 0x15))),
        "§4 wildcards; LON prepare_zero_func_message has the same address and ids",
    ),
    Golden(
        "wildcard read ends with an Ack on the wildcard address",
        h("02 01 01 03 00 E5 00 06 04 21 20 00 00 00"),
        Message(CD, Lna(1, 3), 5, db.TransactionBuffer(1, 0, every=True), Ack(0)),
        "§4",
    ),
    Golden(
        "read stored sale 0042 of FP 1",
        h("01 03 02 01 00 06 00 0C 04 21 21 00 42 01 15 05 06 07 08 14"),
        Message(Lna(1, 3), CD, 6, TR_42, Read((0x01, 0x15, 0x05, 0x06, 0x07, 0x08, 0x14))),
        "§5 transaction buffer",
    ),
    Golden(
        "stored sale 0042: Payable, 123.45 for 20.58 l at 6.00, nozzle 1",
        h(
            "02 01 01 03 00 26 00 27 04 21 21 00 42 01 02 00 42 15 01 02"
            " 05 05 06 00 01 23 45 06 05 06 00 00 20 58 07 04 04 00 06 00 08 01 01 14 02 00 00"
        ),
        Message(
            CD,
            Lna(1, 3),
            6,
            TR_42,
            Answer(
                (
                    it(TR_42, 0x01, 42),
                    it(TR_42, 0x15, 2),
                    it(TR_42, 0x05, Decimal("123.45")),
                    it(TR_42, 0x06, Decimal("20.58")),
                    it(TR_42, 0x07, Decimal("6.00")),
                    it(TR_42, 0x08, 1),
                    it(TR_42, 0x14, Lna(0, 0)),
                )
            ),
        ),
        "§5 transaction buffer",
    ),
    Golden(
        "lock sale 0042",
        h("01 03 02 01 00 47 00 07 04 21 21 00 42 1F 00"),
        Message(Lna(1, 3), CD, 7, TR_42, Write((it(TR_42, 0x1F),))),
        "§5 Lock_Transaction",
    ),
    Golden(
        "clear sale 0042",
        h("01 03 02 01 00 48 00 07 04 21 21 00 42 1E 00"),
        Message(Lna(1, 3), CD, 8, TR_42, Write((it(TR_42, 0x1E),))),
        "§5 Clear_Transaction",
    ),
    Golden(
        "TR_Buff_Status_Message: sale 0042 cleared",
        h(
            "02 01 01 03 00 80 00 20 04 21 21 00 42 64 00 01 02 00 42 15 01 01 14 02 02 01"
            " 05 05 06 00 01 23 45 06 05 06 00 00 20 58"
        ),
        Message(
            CD,
            Lna(1, 3),
            0,
            TR_42,
            Unsolicited(
                (
                    it(TR_42, 0x64),
                    it(TR_42, 0x01, 42),
                    it(TR_42, 0x15, 1),
                    it(TR_42, 0x14, CD),
                    it(TR_42, 0x05, Decimal("123.45")),
                    it(TR_42, 0x06, Decimal("20.58")),
                )
            ),
        ),
        "§7 TR_Buff_Status_Message layout",
    ),
    Golden(
        "FP_Running_Transaction_Message with the nozzle first",
        h("02 01 01 03 00 80 00 15 01 21 66 00 25 01 01 22 05 06 00 00 12 34 23 05 06 00 00 02 05"),
        Message(
            CD,
            Lna(1, 3),
            0,
            FP1,
            Unsolicited(
                (
                    it(FP1, 0x66),
                    it(FP1, 0x25, 1),
                    it(FP1, 0x22, Decimal("12.34")),
                    it(FP1, 0x23, Decimal("2.05")),
                )
            ),
        ),
        "§7 (SINOPEC puts 25 first)",
    ),
    Golden(
        "read totals of FP 1 logical nozzle 1",
        h("01 03 02 01 00 09 00 06 02 21 11 14 15 16"),
        Message(Lna(1, 3), CD, 9, NOZZLE_1, Read((0x14, 0x15, 0x16))),
        "§5 logical nozzle totals",
    ),
    Golden(
        "totals: 123456.78 l, 987654.32, 4321 sales",
        h(
            "02 01 01 03 00 29 00 1E 02 21 11 14 07 0A 00 00 12 34 56 78"
            " 15 07 0A 00 00 98 76 54 32 16 07 0C 00 00 00 00 43 21"
        ),
        Message(
            CD,
            Lna(1, 3),
            9,
            NOZZLE_1,
            Answer(
                (
                    it(NOZZLE_1, 0x14, Decimal("123456.78")),
                    it(NOZZLE_1, 0x15, Decimal("987654.32")),
                    it(NOZZLE_1, 0x16, Decimal("4321")),
                )
            ),
        ),
        "§5 bin8+bcd12 totals",
    ),
    Golden(
        "Open_FP on every FP",
        h("01 03 02 01 00 4A 00 04 01 20 3C 00"),
        Message(Lna(1, 3), CD, 10, db.FuellingPoint(0), Write((DataItem(0x3C),))),
        "§4 FP wildcard, §5 Open_FP",
    ),
    Golden(
        "offline sales read (oil-company C8h, FP wildcard form)",
        h("01 03 02 01 00 0D 00 06 04 20 21 00 00 C8"),
        Message(Lna(1, 3), CD, 13, db.TransactionBuffer(0, 0), Read((0xC8,))),
        "§6 offline sales, SINOPEC form",
    ),
    Golden(
        "Prod_Nb 00000008 written to product 1",
        h("01 03 02 01 00 4E 00 08 01 41 02 04 00 00 00 08"),
        Message(Lna(1, 3), CD, 14, db.Product(1), Write((it(db.Product(1), 0x02, 8),))),
        "§5 product",
    ),
    Golden(
        "Meter_Total read of every meter",
        h("01 03 02 01 00 0F 00 03 01 80 14"),
        Message(Lna(1, 3), CD, 15, db.Meter(0), Read((0x14,))),
        "§4 meter wildcard",
    ),
    Golden(
        "C_DAT read of Nb_Products, Nb_Fuelling_Modes, Nb_FP",
        h("01 03 02 01 00 10 00 05 01 01 02 03 05"),
        Message(Lna(1, 3), CD, 16, db.C_DAT, Read((0x02, 0x03, 0x05))),
        "§8 start-up (LON prepare_config_message reads the same ids)",
    ),
)
GOLDEN = SPEC_EXAMPLES + COMPOSED

# E1: composed from the ZHANG TEST.heartBeatSend values.
HEARTBEAT_WIRE = h("C0 A8 00 68 11 10 02 01 01 00")
HEARTBEAT = Heartbeat(ipaddress.IPv4Address("192.168.0.104"), 4368, CD, 0)

# §5's encoding examples: (wire, value, BCD digits).
DECIMALS = (
    (h("06 12 34 56 78"), Decimal("123456.78"), 8),
    (h("0B 12 34 56 78"), Decimal("12345678000"), 8),
    (h("82 12 34"), Decimal("-12.34"), 4),
    (h("06 00 99 00 00"), Decimal("9900.00"), 8),
    (h("05 00 10 00 00"), Decimal("100.000"), 8),
    (h("04 00 04 90"), Decimal("4.90"), 6),
)
