"""The shared tank physics: charts, draws, deliveries over time, leaks, temperature, alarms."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from drivers.tank_sim import (
    SimTank,
    TankAlarm,
    TankChart,
    TankFarm,
    TankSpec,
    vcf_54b,
)

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


class FakeTime:
    """A monotonic clock and a wall clock that move together, only when told to."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def clock(self) -> float:
        return self.seconds

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.seconds)

    def advance(self, seconds: float) -> None:
        self.seconds += seconds


SQUARE = TankChart.from_points([(0, 0), (1000, 10_000), (2000, 30_000)])


def make_tank(
    fake: FakeTime, chart: TankChart = SQUARE, *, product_l: float = 10_000, **spec: object
) -> SimTank:
    return SimTank(
        TankSpec(1, chart, **spec),  # type: ignore[arg-type]
        product_l=product_l,
        clock=fake.clock,
        wall=fake.wall,
    )


# ---------------------------------------------------------------------- charts
def test_chart_interpolates_both_ways_and_clamps() -> None:
    assert SQUARE.volume_at(500) == 5_000
    assert SQUARE.volume_at(1500) == 20_000
    assert SQUARE.height_at(20_000) == 1500
    assert SQUARE.height_at(5_000) == 500
    assert SQUARE.volume_at(-5) == 0 and SQUARE.volume_at(9999) == 30_000
    assert SQUARE.height_at(40_000) == 2000
    assert (SQUARE.height_mm, SQUARE.capacity_l) == (2000, 30_000)


def test_horizontal_cylinder_chart() -> None:
    chart = TankChart.horizontal_cylinder(2000, 5000)
    full = math.pi * 1000**2 * 5000 / 1e6  # πr²L in litres
    assert chart.capacity_l == pytest.approx(full)
    assert chart.volume_at(1000) == pytest.approx(full / 2)  # half height, half volume
    # The curve is steepest in the middle: the first 10 % of height holds far less.
    assert chart.volume_at(200) < 0.06 * full
    for height in (37.0, 480.0, 1333.0, 1999.0):
        assert chart.height_at(chart.volume_at(height)) == pytest.approx(height)


@pytest.mark.parametrize(
    "points",
    [[(0, 0)], [(1, 0), (2, 5)], [(0, 0), (10, 5), (10, 7)], [(0, 0), (10, 5), (20, 5)]],
)
def test_bad_charts_are_refused(points: list[tuple[float, float]]) -> None:
    with pytest.raises(ValueError):
        TankChart.from_points(points)


# ---------------------------------------------------------------------- volumes
def test_water_lies_under_the_product() -> None:
    fake = FakeTime()
    tank = make_tank(fake, product_l=15_000)
    tank.add_water(2_000)
    snap = tank.snapshot()
    assert snap.volume_l == 15_000 and snap.water_l == 2_000 and snap.gross_l == 17_000
    assert snap.water_mm == 200  # the chart at 2 000 L
    assert snap.height_mm == 1350  # the chart at 17 000 L
    assert snap.ullage_l == 13_000
    assert tank.water_mm == 200 and tank.water_l == 2_000 and tank.gross_l == 17_000


def test_ullage_against_a_safe_fill_fraction() -> None:
    tank = make_tank(FakeTime(), product_l=15_000, ullage_fraction=0.9)
    assert tank.ullage_l == 12_000


def test_draw_takes_product_and_stops_at_empty() -> None:
    tank = make_tank(FakeTime(), product_l=100)
    assert tank.draw(Decimal("40.5")) == 40.5
    assert tank.volume_l == 59.5
    assert tank.draw(100) == 59.5
    assert tank.volume_l == 0
    with pytest.raises(ValueError):
        tank.draw(-1)


def test_farm_draw_is_the_pump_sales_hook() -> None:
    fake = FakeTime()
    farm = TankFarm([make_tank(fake), SimTank(TankSpec(2, SQUARE), product_l=500)])
    hook = farm.draw
    hook(2, Decimal("20.00"))
    assert farm.tank(2).volume_l == 480
    assert len(farm) == 2 and [t.number for t in farm] == [1, 2]
    with pytest.raises(KeyError, match="no simulated tank 7"):
        hook(7, 1)
    with pytest.raises(ValueError, match="numbered 1"):
        TankFarm([make_tank(fake), make_tank(fake)])


def test_set_state_refuses_more_than_capacity() -> None:
    tank = make_tank(FakeTime())
    with pytest.raises(ValueError, match="exceeds capacity"):
        tank.set_state(product_l=29_000, water_l=2_000)
    tank.set_state(product_l=1_000, water_l=0, temperature_c=9.0)
    assert (tank.volume_l, tank.temperature_c) == (1_000, 9.0)


# ---------------------------------------------------------------------- deliveries
def test_delivery_raises_the_level_over_time_and_is_recorded() -> None:
    fake = FakeTime()
    tank = make_tank(fake, product_l=10_000)
    tank.deliver(6_000, duration_s=600)
    assert tank.delivery_in_progress
    fake.advance(300)
    assert tank.volume_l == pytest.approx(13_000)
    tank.draw(200)  # a pump keeps selling during the drop
    fake.advance(400)  # the drop ended 100 s ago
    assert not tank.snapshot().delivery_in_progress
    assert tank.volume_l == pytest.approx(15_800)
    (record,) = tank.deliveries
    assert record.tank == 1
    assert record.start == T0
    assert record.end == T0 + timedelta(seconds=600)
    assert record.delivered_l == pytest.approx(6_000)
    assert record.start_volume_l == 10_000
    assert record.end_volume_l == pytest.approx(15_800)  # 200 L sold must be added back
    assert record.end_height_mm > record.start_height_mm
    assert record.end_tc_volume_l > record.start_tc_volume_l


def test_only_one_delivery_at_a_time() -> None:
    tank = make_tank(FakeTime())
    tank.deliver(1_000, duration_s=60)
    with pytest.raises(RuntimeError, match="already in progress"):
        tank.deliver(1_000, duration_s=60)
    with pytest.raises(ValueError):
        make_tank(FakeTime()).deliver(0, duration_s=60)


def test_an_instant_delivery_and_an_overfill_that_spills() -> None:
    fake = FakeTime()
    tank = make_tank(fake, product_l=25_000)
    tank.deliver(8_000, duration_s=0)
    assert not tank.delivery_in_progress
    assert tank.volume_l == 30_000  # full; 3 000 L spilled
    (record,) = tank.deliveries
    assert record.delivered_l == 5_000
    assert record.start == record.end == T0


def test_delivered_product_mixes_temperatures() -> None:
    fake = FakeTime()
    tank = make_tank(fake, product_l=10_000, temperature_time_constant_s=1e12)
    tank.set_state(temperature_c=10.0)
    tank.deliver(10_000, duration_s=0, temperature_c=20.0)
    assert tank.temperature_c == pytest.approx(15.0)


# ---------------------------------------------------------------------- leaks, temperature
def test_a_leak_loses_product_slowly() -> None:
    fake = FakeTime()
    tank = make_tank(fake, product_l=10_000)
    tank.set_leak(0.76)  # 0.2 gal/h, the ATG leak-test threshold
    fake.advance(10 * 3600)
    assert tank.volume_l == pytest.approx(10_000 - 7.6)
    assert tank.snapshot().leak_lph == 0.76
    tank.set_leak(0)
    fake.advance(3600)
    assert tank.volume_l == pytest.approx(10_000 - 7.6)
    with pytest.raises(ValueError):
        tank.set_leak(-1)


def test_temperature_drifts_towards_the_ground() -> None:
    fake = FakeTime()
    tank = make_tank(fake, ground_temperature_c=12.0, temperature_time_constant_s=3600)
    tank.set_state(temperature_c=22.0)
    fake.advance(3600)
    assert tank.temperature_c == pytest.approx(12.0 + 10.0 / math.e)
    fake.advance(10 * 3600)
    assert tank.temperature_c == pytest.approx(12.0, abs=0.01)


# ---------------------------------------------------------------------- compensation
def test_vcf_is_one_at_15_degrees_and_below_one_when_warm() -> None:
    for density in (700.0, 780.0, 800.0, 840.0):
        assert vcf_54b(15.0, density) == 1.0
    diesel = vcf_54b(25.0, 840.0)
    gasoline = vcf_54b(25.0, 745.0)
    assert 0.99 < diesel < 1.0 and 0.985 < gasoline < diesel  # gasoline expands more
    assert vcf_54b(5.0, 840.0) > 1.0
    with pytest.raises(ValueError, match="outside table 54B"):
        vcf_54b(20.0, 600.0)


def test_tc_volume_uses_the_tank_density() -> None:
    fake = FakeTime()
    tank = make_tank(fake, density15=745.0, temperature_time_constant_s=1e12)
    tank.set_state(temperature_c=25.0)
    assert tank.tc_volume_l == pytest.approx(10_000 * vcf_54b(25.0, 745.0))
    with pytest.raises(ValueError):
        TankSpec(1, SQUARE, density15=1200.0)


# ---------------------------------------------------------------------- alarms
def test_alarms_follow_the_levels() -> None:
    fake = FakeTime()
    tank = make_tank(fake, product_l=10_000, high_water_mm=50)
    assert tank.alarms == frozenset()
    tank.add_water(600)  # 60 mm
    assert tank.alarms == {TankAlarm.HIGH_WATER}
    tank.add_water(-600)
    tank.set_state(product_l=28_000)  # 93 % of capacity
    assert tank.alarms == {TankAlarm.OVERFILL}
    tank.set_state(product_l=2_500)  # below 10 %
    assert tank.alarms == {TankAlarm.LOW_PRODUCT}


# ---------------------------------------------------------------------- threads
def test_concurrent_draws_lose_nothing() -> None:
    tank = SimTank(TankSpec(1, SQUARE), product_l=20_000)

    def pump() -> None:
        for _ in range(500):
            tank.draw(1.0)

    threads = [threading.Thread(target=pump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tank.volume_l == pytest.approx(18_000)
