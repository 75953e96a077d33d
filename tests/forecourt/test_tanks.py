"""The tank model: charts, table 54B temperature compensation, readings to inventory, alarms."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from edgectl.errors import EdgectlError
from edgectl.forecourt.tanks import (
    AlarmChange,
    AlarmLimits,
    AlarmTracker,
    ChartVolume,
    ImplausibleReading,
    InvalidChart,
    Tank,
    TankAlarm,
    TankChart,
    TankInventory,
    TankModelError,
    TankReading,
    alpha_15,
    vcf_54b,
)

D = Decimal
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def chart(*points: tuple[int | str, int | str]) -> TankChart:
    return TankChart(tuple((D(h), D(v)) for h, v in points))


# A straight-sided tank, 10 L per mm, so expected volumes are easy to work out by hand.
LINEAR = chart((0, 0), (1000, 10000), (2000, 20000))


def tank(**changes: object) -> Tank:
    fields: dict[str, object] = {
        "number": 1,
        "grade": "92",
        "capacity_l": D(20000),
        "height_mm": D(2000),
        "density_15": D(745),
        "chart": LINEAR,
    }
    fields.update(changes)
    return Tank(**fields)  # type: ignore[arg-type]


def reading(
    height: str | int, temp: str | int = 15, water: str | int = 0, **more: object
) -> TankReading:
    return TankReading(
        tank=1,
        at=more.pop("at", T0),  # type: ignore[arg-type]
        height_mm=D(height),
        temperature_c=D(temp),
        water_mm=D(water),
        **more,  # type: ignore[arg-type]
    )


# ------------------------------------------------------------------ the chart


@pytest.mark.parametrize(
    ("height", "volume", "clamped"),
    [
        ("0", "0", False),
        ("1000", "10000", False),
        ("2000", "20000", False),  # the top point itself is inside the chart
        ("12.5", "125", False),
        ("1500", "15000", False),
        ("2000.1", "20000", True),
        ("-1", "0", True),
    ],
)
def test_chart_interpolates_and_clamps(height: str, volume: str, clamped: bool) -> None:
    assert LINEAR.volume_at(D(height)) == ChartVolume(D(volume), clamped)


def test_chart_interpolates_each_segment_on_its_own() -> None:
    bent = chart((100, 50), (200, 1050), (400, 1250))
    assert bent.volume_at(D(150)).volume_l == 550  # 50 + 1000 * 50/100
    assert bent.volume_at(D(300)).volume_l == 1150  # 1050 + 200 * 100/200
    # Below a chart that starts above the bottom: its first volume, flagged.
    assert bent.volume_at(D(20)) == ChartVolume(D(50), clamped=True)
    assert (bent.min_height, bent.max_height, bent.max_volume) == (D(100), D(400), D(1250))


def test_chart_height_at_is_the_inverse() -> None:
    assert LINEAR.height_at(D(15000)) == 1500
    assert LINEAR.height_at(D(0)) == 0
    assert LINEAR.height_at(D(25000)) == 2000
    # A flat stretch (rounded volumes near the bottom): the lowest height holding the volume.
    flat = chart((0, 0), (10, 0), (20, 100), (30, 100))
    assert flat.height_at(D(0)) == 0
    assert flat.height_at(D(50)) == 15
    assert flat.height_at(D(100)) == 20


def test_chart_allows_flat_volumes_between_points() -> None:
    assert chart((0, 0), (10, 0), (20, 5)).volume_at(D(5)).volume_l == 0


@pytest.mark.parametrize(
    ("points", "index", "message"),
    [
        (((0, 0),), None, "at least 2 points"),
        (((0, 0), (0, 10)), 1, "height 0 mm is not above the previous point's 0 mm"),
        (((0, 0), (100, 10), (90, 20)), 2, "height 90 mm is not above"),
        (((0, 0), (100, 1000), (200, 900)), 2, "volume 900 L at 200 mm is less than 1000 L"),
        (((0, 0), (-5, 10)), 1, "must not be negative"),
        (((0, -1), (5, 10)), 0, "must not be negative"),
        (((0, 0), ("NaN", 10)), 1, "is not a number"),
    ],
)
def test_invalid_chart_names_its_point(
    points: tuple[tuple[int | str, int | str], ...], index: int | None, message: str
) -> None:
    with pytest.raises(InvalidChart, match=message) as info:
        chart(*points)
    assert info.value.index == index
    assert isinstance(info.value, EdgectlError)


def test_chart_is_a_frozen_value() -> None:
    assert chart((0, 0), (10, 5)) == chart((0, "0"), ("10.0", 5))
    assert hash(chart((0, 0), (10, 5))) == hash(chart((0, 0), (10, 5)))


def test_chart_from_csv_text() -> None:
    text = "\ufeffheight_mm;volume_l\n# dipped 2025-11-02\n0;0\n\n1000\t10000\n 2000 , 20000 ,\n"
    assert TankChart.parse_csv(text) == LINEAR


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0,0\n100,1000\n200,900\n", "line 3: volume 900 L at 200 mm is less than 1000 L"),
        ("# c\n0,0\n\n100,100\n100,200\n", "line 5: height 100 mm is not above"),
        ("0,0\n100\n", "line 2: expected height_mm,volume_l"),
        ("0,0\n100,1,2\n", "line 2: expected height_mm,volume_l"),
        ("0,0\nheight,volume\n100,10\n", "line 2: not two numbers"),  # a header only comes first
        ("0,0\n100,abc\n", "line 2: not two numbers"),
        ("h,v\n", "at least 2 points, got 0"),
        ("12,abc\n1,2\n", "line 1: not two numbers"),  # a number first is data, not a header
    ],
)
def test_csv_chart_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(InvalidChart, match=message):
        TankChart.parse_csv(text)


# ------------------------------------------------------------------ table 54B


def hand_alpha(rho: float) -> float:
    """α15 written out from the protocol facts, independently of the module."""
    if rho < 770:
        return 346.4228 / rho**2 + 0.4388 / rho
    if rho < 788:
        return -0.00336312 + 2680.3206 / rho**2
    if rho < 839:
        return 594.5418 / rho**2
    return 186.9696 / rho**2 + 0.4862 / rho


def hand_vcf(rho: float, t: float) -> float:
    alpha = hand_alpha(rho)
    dt = t - 15
    return math.exp(-alpha * dt * (1 + 0.8 * alpha * dt))


# density, temperature, VCF worked out by hand (5 places), band
VCF_CASES = [
    # gasoline: α = 346.4228/745² + 0.4388/745 = 0.00062417 + 0.00058899 = 0.0012131504
    (745, 25, "0.98783", "gasoline"),
    (737, -10, "1.03053", "gasoline, cold: the volume at 15 °C is larger"),
    (653, 40, "0.96251", "gasoline, lower edge"),
    # 770..788: α = −0.00336312 + 2680.3206/780² = 0.0010424037
    (780, 30, "0.98429", "transition band"),
    (770, 20, "0.99420", "transition band includes 770"),
    # jet / kerosene: α = 594.5418/800² = 0.0009289716
    (800, 5, "1.00926", "jet"),
    (788, 20, "0.99521", "jet band includes 788"),
    # diesel / fuel oil: α = 186.9696/840² + 0.4862/840 = 0.0008437891
    (840, 25, "0.99154", "diesel"),
    (839, 20, "0.99577", "fuel-oil band includes 839"),
    (1075, 0, "1.00919", "fuel oil, upper edge"),
]


@pytest.mark.parametrize(("rho", "t", "expected", "band"), VCF_CASES)
def test_vcf_54b_matches_worked_values(rho: int, t: int, expected: str, band: str) -> None:
    assert abs(float(alpha_15(D(rho))) - hand_alpha(rho)) < 1e-12, band
    assert round(hand_vcf(rho, t), 5) == float(expected), band  # the worked value itself
    assert vcf_54b(D(rho), D(t)) == D(expected), band


def test_alpha_takes_the_band_of_the_density() -> None:
    # Just below 770 gasoline's constants, at 770 the transition formula (they differ by 3e-6).
    below, at = alpha_15(D("769.9")), alpha_15(D(770))
    assert abs(float(below) - (346.4228 / 769.9**2 + 0.4388 / 769.9)) < 1e-12
    assert abs(float(at) - (-0.00336312 + 2680.3206 / 770**2)) < 1e-12
    assert abs(float(alpha_15(D("838.9"))) - 594.5418 / 838.9**2) < 1e-12


def test_vcf_is_one_at_15_degrees() -> None:
    assert vcf_54b(D(745), D(15)) == 1
    assert vcf_54b(D(840), D("15.0")) == 1


@pytest.mark.parametrize("rho", ["652.9", "1075.1", "0.745", "NaN"])
def test_density_outside_table_54b_is_refused(rho: str) -> None:
    with pytest.raises(TankModelError, match="outside table 54B"):
        alpha_15(D(rho))
    with pytest.raises(TankModelError):
        tank(density_15=D(rho))


# ------------------------------------------------------------------ readings to inventory


def test_measure_a_reading_by_hand() -> None:
    result = tank().measure(reading("1234.5", temp=25, water=50))
    assert result == TankInventory(
        tank=1,
        at=T0,
        height_mm=D("1234.5"),
        water_mm=D(50),
        temperature_c=D(25),
        gross_l=D("12345.00"),  # 10 L per mm
        water_l=D("500.00"),
        product_l=D("11845.00"),
        vcf=D("0.98783"),
        net_l=D("11700.85"),  # 11845 × 0.98783 = 11700.84635
        ullage_l=D("7655.00"),  # 20000 − 12345
        safe_ullage_l=D("6655.00"),  # 95 % of 20000 = 19000, − 12345
        fill_pct=D("61.7"),
    )


def test_measure_flags_a_level_beyond_the_chart() -> None:
    short = tank(chart=chart((0, 0), (1900, 19000)))
    inventory = short.measure(reading(1950))
    assert isinstance(inventory, TankInventory)
    assert inventory.beyond_chart and inventory.gross_l == 19000
    assert not short.measure(reading(1900)).beyond_chart  # type: ignore[union-attr]


def test_measure_without_a_chart_uses_the_gauge_volumes() -> None:
    gauged = tank(chart=None)
    inventory = gauged.measure(
        reading(800, water=10, volume_l=D("7990.4"), water_volume_l=D(20), gauge_delivery=True)
    )
    assert isinstance(inventory, TankInventory)
    assert (inventory.gross_l, inventory.water_l, inventory.product_l) == (
        D("8010.40"),
        D("20.00"),
        D("7990.40"),
    )
    assert inventory.net_l == D("7990.40") and inventory.gauge_delivery


@pytest.mark.parametrize(
    ("r", "reasons"),
    [
        (reading(2001), ["level 2001 mm is above the tank height 2000 mm"]),
        (reading(100, water=101), ["water 101 mm is above the product level 100 mm"]),
        (reading(100, temp="-40.1"), ["temperature -40.1 °C is outside -40..70 °C"]),
        (reading(100, temp="70.5"), ["temperature 70.5 °C is outside -40..70 °C"]),
        (reading(-3), ["level -3 mm is negative"]),
        (reading(100, water=-1), ["water -1 mm is negative"]),
        (reading(100, volume_l=D(-5)), ["gauge volume -5 L is negative"]),
        (reading("NaN"), ["level is not a number (NaN)"]),
        (
            reading(100, volume_l=D("3.4e38")),
            ["gauge volume 3.4E+38 L is above the tank capacity 20000 L"],
        ),
        (
            reading(100, tc_volume_l=D(21001)),
            ["gauge TC volume 21001 L is above the tank capacity 20000 L"],
        ),
        (
            reading(2500, temp=99, water=2600),
            [
                "level 2500 mm is above the tank height 2000 mm",
                "water 2600 mm is above the product level 2500 mm",
                "temperature 99 °C is outside -40..70 °C",
            ],
        ),
    ],
)
def test_implausible_readings_are_flagged_with_reasons(r: TankReading, reasons: list[str]) -> None:
    result = tank().measure(r)
    assert result == ImplausibleReading(1, T0, r, tuple(reasons))


def test_edges_of_plausible_are_plausible() -> None:
    for r in (reading(2000), reading(100, temp=-40), reading(100, temp=70), reading(0, water=0)):
        assert isinstance(tank().measure(r), TankInventory), r
    assert isinstance(tank().measure(reading(100, water=100)), TankInventory)
    assert isinstance(tank().measure(reading(100, volume_l=D(21000))), TankInventory)


def test_a_tank_without_chart_needs_a_gauge_volume() -> None:
    result = tank(chart=None).measure(reading(100))
    assert isinstance(result, ImplausibleReading)
    assert result.reasons == ("no volume: the tank has no chart and the gauge reported none",)


def test_reading_of_another_tank_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="reading of tank 2 given to tank 1"):
        tank().measure(TankReading(tank=2, at=T0, height_mm=D(1), temperature_c=D(15)))


@pytest.mark.parametrize(
    "changes",
    [
        {"capacity_l": D(0)},
        {"height_mm": D(-1)},
        {"safe_fill_pct": D(0)},
        {"safe_fill_pct": D(101)},
    ],
)
def test_tank_refuses_impossible_figures(changes: dict[str, object]) -> None:
    with pytest.raises(TankModelError):
        tank(**changes)


def test_tank_derived_volumes() -> None:
    t = tank(safe_fill_pct=D("92.5"), alarms=AlarmLimits(overfill_pct=D(90)))
    assert (t.safe_fill_l, t.overfill_l) == (D("18500.00"), D("18000.00"))


# ------------------------------------------------------------------ alarms


class Feed:
    """Feeds a tracker readings one minute apart; product volumes as a gauge reports them."""

    def __init__(self, limits: AlarmLimits, active: tuple[TankAlarm, ...] = ()) -> None:
        """Falls in product are taken as sold unless the test says what was dispensed."""
        self.tank = tank(chart=None, alarms=limits)
        self.tracker = AlarmTracker(self.tank, active)
        self.at = T0
        self.last: Decimal | None = None

    def inventory(self, product: str | int, water: str | int = 0) -> TankInventory:
        self.at += timedelta(minutes=1)
        result = self.tank.measure(reading(1000, water=water, volume_l=D(product), at=self.at))
        assert isinstance(result, TankInventory)
        return result

    def __call__(
        self, product: str | int, water: str | int = 0, dispensed: str | int | None = None
    ) -> list[tuple[str, TankAlarm]]:
        inventory = self.inventory(product, water)
        if dispensed is None:
            sold = self.last - inventory.product_l if self.last is not None else D(0)
            out = max(sold, D(0))
        else:
            out = D(dispensed)
        self.last = inventory.product_l
        changes = self.tracker.observe(inventory, out)
        return [("raise" if c.raised else "clear", c.alarm) for c in changes]


LOW = TankAlarm.LOW_PRODUCT


def test_low_product_hysteresis() -> None:
    feed = Feed(AlarmLimits(low_product_l=D(2000), hysteresis_pct=D(5)))
    assert feed(2500) == []
    assert feed(2000) == []  # at the threshold is not below it
    assert feed("1999.99") == [("raise", LOW)]
    assert feed(1500) == []  # raised once, not once per reading
    assert feed(2050) == []  # inside the band: still low
    assert feed("2099.99") == []
    assert feed(2100) == [("clear", LOW)]  # 2000 + 5 %
    assert feed(2500) == []
    assert feed(1990) == [("raise", LOW)]
    assert feed.tracker.active == {LOW}


def test_alarm_change_carries_value_and_limit() -> None:
    feed = Feed(AlarmLimits(low_product_l=D(2000)))
    raised = feed.tracker.observe(feed.inventory(1800), D(0))
    cleared = feed.tracker.observe(feed.inventory(2200), D(0))
    assert raised == (
        AlarmChange(1, LOW, True, feed.at - timedelta(minutes=1), D("1800.00"), D("2000.00")),
    )
    assert cleared[0].cleared and cleared[0].limit == D("2100.00")


def test_high_water_hysteresis() -> None:
    water = TankAlarm.HIGH_WATER
    feed = Feed(AlarmLimits(high_water_mm=D(50), hysteresis_pct=D(5)))
    assert feed(5000, water=10) == []
    assert feed(5000, water=50) == []
    assert feed(5000, water="50.1") == [("raise", water)]
    assert feed(5000, water=48) == []
    assert feed(5000, water="47.6") == []
    assert feed(5000, water="47.5") == [("clear", water)]  # 50 − 5 %


def test_overfill_hysteresis() -> None:
    over = TankAlarm.OVERFILL
    feed = Feed(AlarmLimits(overfill_pct=D(90), hysteresis_pct=D(5)))  # capacity 20000
    assert feed(18000) == []
    assert feed(18001) == [("raise", over)]
    assert feed(19500) == []
    assert feed(17500) == []
    assert feed(17100) == [("clear", over)]  # 18000 − 5 %


def test_sudden_loss_is_loss_that_dispensing_does_not_explain() -> None:
    loss = TankAlarm.SUDDEN_LOSS
    feed = Feed(AlarmLimits(sudden_loss_l=D(200), loss_window=timedelta(minutes=10)))
    assert feed(10000) == []  # t1
    assert feed(9700, dispensed=300) == []  # t2: sold, no loss
    assert feed(9550, dispensed=0) == []  # t3: 150 L unexplained, under the threshold
    assert feed(9450, dispensed=0) == [("raise", loss)]  # t4: 250 L unexplained
    assert feed(9450, dispensed=0) == []  # t5: raised once
    for _ in range(7):
        assert feed(9450, dispensed=0) == []  # t6..t12: t2's level is within 10 minutes
    # t13: the window starts at t3 (loss 100 L), inside the band's clear point (190 L).
    assert feed(9450, dispensed=0) == [("clear", loss)]
    assert feed.tracker.active == frozenset()


def test_probe_offline_and_invalid_readings() -> None:
    offline, invalid = TankAlarm.PROBE_OFFLINE, TankAlarm.INVALID_READING
    feed = Feed(AlarmLimits())
    changes = feed.tracker.offline(T0, "no reply to i20101")
    assert [(c.alarm, c.raised, c.detail) for c in changes] == [
        (offline, True, "no reply to i20101")
    ]
    assert feed.tracker.offline(T0) == ()  # once
    bad = feed.tank.measure(reading(2500, volume_l=D(1)))
    assert isinstance(bad, ImplausibleReading)
    changes = feed.tracker.reject(bad)
    # The probe answers again (not offline), but with a level that cannot be.
    assert [(c.alarm, c.raised) for c in changes] == [(offline, False), (invalid, True)]
    assert changes[1].detail == "level 2500 mm is above the tank height 2000 mm"
    assert feed.tracker.reject(bad) == ()
    assert feed(5000) == [("clear", invalid)]
    feed.tracker.offline(T0)
    assert feed(5000) == [("clear", offline)]


def test_a_probe_fault_is_raised_once_and_cleared_by_any_reading() -> None:
    fault, invalid = TankAlarm.PROBE_FAULT, TankAlarm.INVALID_READING
    feed = Feed(AlarmLimits())
    (raised,) = feed.tracker.fault(T0, "device 3: Modbus exception 2 (illegal data address)")
    assert (raised.alarm, raised.raised, raised.detail) == (
        fault,
        True,
        "device 3: Modbus exception 2 (illegal data address)",
    )
    assert feed.tracker.fault(T0, "device 3: again") == ()  # once
    assert feed(5000) == [("clear", fault)]
    # A reading that cannot be true still shows the probe gives figures again.
    feed.tracker.fault(T0)
    bad = feed.tank.measure(reading(2500, volume_l=D(1)))
    assert isinstance(bad, ImplausibleReading)
    assert [(c.alarm, c.raised) for c in feed.tracker.reject(bad)] == [
        (fault, False),
        (invalid, True),
    ]
    assert feed.tracker.active == {invalid}


def test_alarms_restored_after_a_restart_are_not_raised_again() -> None:
    feed = Feed(AlarmLimits(low_product_l=D(2000)), active=(LOW,))
    assert feed(1500) == []
    assert feed(3000) == [("clear", LOW)]


def test_zero_low_product_never_raises() -> None:
    feed = Feed(AlarmLimits(low_product_l=D(0)))
    assert feed(0) == []


def test_tracker_refuses_negative_dispensing() -> None:
    feed = Feed(AlarmLimits())
    with pytest.raises(ValueError, match="negative"):
        feed(100, dispensed=-1)
