"""Golden Veeder-Root TLS bytes: the manual example of veeder-root-tls.md and replies built to
cover the parsing rules.

Wire bytes are written out literally. Those not in veeder-root-tls.md had their CCCC worked out
with a plain byte sum (CCCC = -sum(SOH … &&) mod 65536) and their floats with struct, independently
of the codec.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from drivers.veeder_root.codec import (
    AlarmStatus,
    ClockReply,
    DeliveryRecord,
    DeliveryReport,
    Inventory,
    Reply,
    SystemStatus,
    TankAlarmCodes,
    TankDeliveries,
    TankInventory,
    UnknownReply,
    Unsupported,
)

D = Decimal
JAN_15 = datetime(2024, 1, 15, 12, 30)


@dataclass(frozen=True)
class Golden:
    """A valid reply: decoding `wire` gives `reply`, encoding `reply` gives `wire`."""

    name: str
    wire: bytes
    reply: Reply


# From veeder-root-tls.md, "Worked example": one line on the wire, checksum EF20.
MANUAL_INVENTORY = (
    b"\x01i201009601221506011000007"
    b"45A6880045A928004592D8004243E1480000000042158F5C00000000&&EF20\x03"
)
MANUAL_REPLY = Inventory(
    0,
    datetime(1996, 1, 22, 15, 6),
    (
        TankInventory(
            1,
            "1",
            0,
            volume=D("5329"),
            tc_volume=D("5413"),
            ullage=D("4699"),
            height=D("48.97"),
            water=D("0"),
            temperature=D("37.39"),
            water_volume=D("0"),
        ),
    ),
)
REFUSAL = b"\x019999FF1B\x03"  # SOH 9999 sums to 0x00E5 -> FF1B

# Tank 1 of i20101 with NN = 05: no temperature, no water volume.
NN_5 = b"\x01i201012401151230011000005447A00004477A00045DAC000422100003F000000&&F282\x03"
# All tanks: tank 1 delivering (bit 0) with NN = 07, tank 2 with every status bit and NN = 09.
NN_7_AND_9 = (
    b"\x01i20100240115123001100010744FA000044F7800045BB8000425C00000000000041920000"
    b"0000000002A000709447A00004477A00045DAC000422100003F00000041780000414000003F8"
    b"00000C2C7FAE1&&DEC4\x03"
)
DELIVERIES = (
    b"\x01i20200240115123001102240114080024011408300A447A00004477A0003F000000417800"
    b"0045DAC00045D930003F000000414800004221000042F00000240115060024011506450A44FA0"
    b"00044F78000000000004192000045BB800045B9F0000000000041780000425C00004316000002"
    b"200&&D177\x03"
)
ALARMS = b"\x01i205002401151230010205110200030199&&F8DE\x03"
SYSTEM_STATUS = b"\x01i1010024011512300000&&FBA5\x03"
CLOCK_READ = b"\x01i501002401151230&&FC61\x03"
CLOCK_SET = b"\x01s501002401151230&&FC57\x03"
# A product label with "&&" in it: the checksum's && is the last one.
LABEL_WITH_AMPERSANDS = b"\x01i60200240115123001PREM&&SUPER&&F8EF\x03"

GOLDEN = (
    Golden("manual example i20100", MANUAL_INVENTORY, MANUAL_REPLY),
    Golden("refusal 9999FF1B", REFUSAL, Unsupported()),
    Golden(
        "i20101 NN=5",
        NN_5,
        Inventory(
            1,
            JAN_15,
            (
                TankInventory(
                    1,
                    "1",
                    0,
                    volume=D("1000"),
                    tc_volume=D("990.5"),
                    ullage=D("7000"),
                    height=D("40.25"),
                    water=D("0.5"),
                    float_count=5,
                ),
            ),
        ),
    ),
    Golden(
        "i20100 NN=7 and NN=9",
        NN_7_AND_9,
        Inventory(
            0,
            JAN_15,
            (
                TankInventory(
                    1,
                    "1",
                    0x0001,
                    volume=D("2000"),
                    tc_volume=D("1980"),
                    ullage=D("6000"),
                    height=D("55"),
                    water=D("0"),
                    temperature=D("18.25"),
                    water_volume=D("0"),
                ),
                TankInventory(
                    2,
                    "A",
                    0x0007,
                    volume=D("1000"),
                    tc_volume=D("990.5"),
                    ullage=D("7000"),
                    height=D("40.25"),
                    water=D("0.5"),
                    temperature=D("15.5"),
                    water_volume=D("12"),
                    extra=(D("1"), D("-99.99")),
                    float_count=9,
                ),
            ),
        ),
    ),
    Golden(
        "i20200 deliveries",
        DELIVERIES,
        DeliveryReport(
            0,
            JAN_15,
            (
                TankDeliveries(
                    1,
                    "1",
                    (
                        DeliveryRecord(
                            datetime(2024, 1, 14, 8, 0),
                            datetime(2024, 1, 14, 8, 30),
                            start_volume=D("1000"),
                            start_tc_volume=D("990.5"),
                            start_water=D("0.5"),
                            start_temperature=D("15.5"),
                            end_volume=D("7000"),
                            end_tc_volume=D("6950"),
                            end_water=D("0.5"),
                            end_temperature=D("12.5"),
                            start_height=D("40.25"),
                            end_height=D("120"),
                        ),
                        DeliveryRecord(
                            datetime(2024, 1, 15, 6, 0),
                            datetime(2024, 1, 15, 6, 45),
                            start_volume=D("2000"),
                            start_tc_volume=D("1980"),
                            start_water=D("0"),
                            start_temperature=D("18.25"),
                            end_volume=D("6000"),
                            end_tc_volume=D("5950"),
                            end_water=D("0"),
                            end_temperature=D("15.5"),
                            start_height=D("55"),
                            end_height=D("150"),
                        ),
                    ),
                ),
                TankDeliveries(2, "2", ()),
            ),
        ),
    ),
    Golden(
        "i20500 alarms",
        ALARMS,
        AlarmStatus(
            0,
            JAN_15,
            (TankAlarmCodes(1, (5, 11)), TankAlarmCodes(2, ()), TankAlarmCodes(3, (99,))),
        ),
    ),
    Golden("i10100 system status", SYSTEM_STATUS, SystemStatus("i10100", JAN_15, "0000")),
    Golden("i50100 clock", CLOCK_READ, ClockReply("i50100", JAN_15)),
    Golden("s50100 clock set", CLOCK_SET, ClockReply("s50100", JAN_15)),
    Golden(
        "label with && inside",
        LABEL_WITH_AMPERSANDS,
        UnknownReply("i60200", "240115123001PREM&&SUPER"),
    ),
)

# Printed I201 reports as a TLS-350 prints them (written by hand, not by the codec).
DISPLAY_TLS350 = """
I20100
JAN 15, 2024 12:30 PM

EDGECTL TEST STATION
1 FORECOURT ROAD

IN-TANK INVENTORY

TANK PRODUCT             VOLUME TC VOLUME   ULLAGE   HEIGHT    WATER     TEMP
  1  UNLEADED 95           5329      5413     4699    48.97     0.00    37.39
  2  DIESEL & BIO          3893      3880     6107    39.40     0.54    64.98
  3  PREMIUM              12,450    12,391    1,550    88.10     0.00    61.02
  4  KEROSENE           PROBE OUT

"""
# Another common layout: gallons / inches / deg F, with a blank water column on tank 2.
DISPLAY_GALLONS = """
I20100
01/15/2024 12:30

TANK  PRODUCT        GALLONS   INCHES   WATER   DEG F   ULLAGE
 1    REGULAR           8123    62.44    1.20   58.30     3877
 2    SUPER             2716    31.80            60.01     5284
"""


# ======================================================================================
# A stand-in for the tank physics (drivers/tank_sim.py): fixed values a test can change.
# ======================================================================================
@dataclass(frozen=True)
class FakeView:
    number: int
    height_mm: float = 1200.0
    volume_l: float = 20000.0
    tc_volume_l: float = 19850.5
    ullage_l: float = 9000.0
    water_mm: float = 12.5
    water_l: float = 40.0
    temperature_c: float = 18.25
    delivery_in_progress: bool = False
    alarms: frozenset[str] = frozenset()


@dataclass(frozen=True)
class FakeDelivery:
    tank: int
    start: datetime
    end: datetime
    start_volume_l: float = 5000.0
    end_volume_l: float = 15000.0
    start_tc_volume_l: float = 4990.0
    end_tc_volume_l: float = 14950.0
    start_water_l: float = 40.0
    end_water_l: float = 40.0
    start_height_mm: float = 500.0
    end_height_mm: float = 1100.0
    start_temperature_c: float = 17.5
    end_temperature_c: float = 16.0


@dataclass
class FakeTank:
    number: int
    view: FakeView
    deliveries: list[FakeDelivery] = field(default_factory=list)

    def snapshot(self) -> FakeView:
        return self.view

    def change(self, **values: object) -> None:
        self.view = replace(self.view, **values)  # type: ignore[arg-type]


@dataclass
class FakeTanks:
    tanks: list[FakeTank]

    @classmethod
    def two(cls) -> FakeTanks:
        return cls(
            [
                FakeTank(1, FakeView(1)),
                FakeTank(
                    2,
                    FakeView(
                        2, volume_l=7500.0, height_mm=640.0, alarms=frozenset({"low_product"})
                    ),
                ),
            ]
        )

    def tank(self, number: int) -> FakeTank:
        return next(t for t in self.tanks if t.number == number)


# The manual's worked example (veeder-root-tls.md) is a console in US units: 5329 gal,
# 48.97 in, 37.39 °F. In litres, mm and °C (1 US gal = 3.785411784 L, 1 in = 25.4 mm):
MANUAL_US = FakeView(
    1,
    volume_l=5329.0,
    tc_volume_l=5413.0,
    ullage_l=4699.0,
    height_mm=48.97,
    water_mm=0.0,
    temperature_c=37.39,
    water_l=0.0,
)
MANUAL_METRIC = {
    "volume": Decimal("20172.4594"),  # 20172.459397 L
    "tc_volume": Decimal("20490.4340"),  # 20490.433987 L
    "ullage": Decimal("17787.6500"),  # 17787.649973 L
    "height": Decimal("1243.8380"),
    "water": Decimal("0.0000"),
    "temperature": Decimal("2.9944"),  # 2.99444… °C
    "water_volume": Decimal("0.0000"),
}
