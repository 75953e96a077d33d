"""Wet stock: deliveries found from the level and from gauge reports, and the reconciliation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from edgectl.forecourt.tanks import (
    RECONCILIATION_ALLOWANCE_L,
    DeliveryRules,
    Tank,
    TankInventory,
    TankReading,
)
from edgectl.forecourt.wetstock import (
    Delivery,
    DeliveryDetector,
    DeliverySource,
    GaugeDelivery,
    Reconciliation,
    allocate,
    reconcile,
)

D = Decimal
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
STEP = timedelta(seconds=30)

# Volumes come from the gauge (no chart), so a test states the product volume directly.
TANK = Tank(
    number=1,
    grade="92",
    capacity_l=D(30000),
    height_mm=D(2500),
    density_15=D(745),
    deliveries=DeliveryRules(
        min_rise_l=D(500),
        rise_window=timedelta(minutes=10),
        stable_band_l=D(20),
        settle_readings=3,
        settle_time=timedelta(minutes=2),
        report_grace=timedelta(minutes=15),
        match_slack=timedelta(minutes=10),
    ),
)


def inventory(
    at: datetime, product: Decimal, temp: str = "15", flag: bool = False
) -> TankInventory:
    result = TANK.measure(
        TankReading(
            tank=1,
            at=at,
            height_mm=D(1000),
            temperature_c=D(temp),
            volume_l=product,
            gauge_delivery=flag,
        )
    )
    assert isinstance(result, TankInventory)
    return result


class Site:
    """One tank read every 30 s, with the litres its pumps sold in between."""

    def __init__(self, detector: DeliveryDetector, product: int = 10000, temp: str = "15") -> None:
        self.detector = detector
        self.at = T0
        self.product = D(product)
        self.temp = temp
        self.found: list[Delivery] = []
        self.readings: list[TankInventory] = []
        self.step(0, 0)

    def step(
        self, delivered: int | str, sold: int | str, flag: bool = False
    ) -> tuple[Delivery, ...]:
        """Advance 30 s: a tanker put `delivered` in, the pumps took `sold` out."""
        if self.readings:
            self.at += STEP
        self.product += D(delivered) - D(sold)
        reading = inventory(self.at, self.product, self.temp, flag)
        self.readings.append(reading)
        done = self.detector.observe(reading, D(sold))
        self.found.extend(done)
        return done

    def run(self, count: int, delivered: int | str = 0, sold: int | str = 0) -> None:
        for _ in range(count):
            self.step(delivered, sold)


def drop(site: Site, *, sold: int = 20) -> tuple[TankInventory, TankInventory]:
    """Ten minutes of selling, a 5000 L drop over 5 minutes while selling, then selling on until
    the delivery has settled. Returns the readings just before and at the start of the rise."""
    site.run(20, sold=sold)
    before = site.readings[-1]
    site.run(10, delivered=500, sold=sold)
    return before, site.readings[-10]


def test_a_delivery_while_dispensing_adds_the_sales_back() -> None:
    site = Site(DeliveryDetector(TANK))
    before, _ = drop(site)
    assert site.found == []
    assert site.detector.in_progress is not None
    assert site.detector.in_progress.start_at == before.at
    site.run(3, sold=20)
    assert site.found == []  # stable, but for only 1.5 minutes
    site.run(1, sold=20)
    (delivery,) = site.found
    end = site.readings[-1]
    # Start: the last reading before the rise. End: the reading that found it settled
    # (10 rising + 4 settling readings later). 14 readings × 20 L sold meanwhile.
    assert delivery == Delivery(
        tank=1,
        source=DeliverySource.DETECTED,
        start_at=before.at,
        end_at=end.at,
        start_volume=D("9600.00"),  # 10000 − 20 × 20
        end_volume=D("14320.00"),  # 9600 + 5000 − 14 × 20
        start_volume_tc=D("9600.00"),
        end_volume_tc=D("14320.00"),
        dispensed_during=D(280),
        dispensed_during_tc=D("280.00"),
    )
    assert delivery.delivered == delivery.delivered_tc == 5000
    assert delivery.sales_added_back
    assert end.at - before.at == 14 * STEP
    assert site.detector.in_progress is None


def test_delivery_in_gross_and_at_15_degrees() -> None:
    site = Site(DeliveryDetector(TANK), temp="25")  # VCF 0.98783 for 745 kg/m³ at 25 °C
    drop(site)
    site.run(4, sold=20)
    (delivery,) = site.found
    assert delivery.delivered == 5000
    assert delivery.dispensed_during_tc == 14 * D("19.76")  # 20 × 0.98783, kept to 0.01 L
    assert delivery.delivered_tc == (
        delivery.end_volume_tc - delivery.start_volume_tc + delivery.dispensed_during_tc
    )
    assert abs(delivery.delivered_tc - 5000 * D("0.98783")) < D("0.1")


def test_a_slow_drift_does_not_move_the_start_back() -> None:
    # Pumps that give 19.5 L for every 20 L they meter: the adjusted level creeps up 0.5 L a
    # reading. The delivery still starts at the last reading before the rise, not 10 min back.
    site = Site(DeliveryDetector(TANK))
    site.run(20, delivered="0.5", sold=20)
    before = site.readings[-1]
    site.run(10, delivered=500, sold=20)
    site.run(4, sold=20)
    (delivery,) = site.found
    assert delivery.start_at == before.at
    assert delivery.dispensed_during == 280


def test_selling_alone_is_no_delivery() -> None:
    site = Site(DeliveryDetector(TANK))
    site.run(100, sold=40)
    site.run(20, delivered=15, sold=0)  # noise and thermal creep under the threshold
    assert site.found == [] and site.detector.in_progress is None


def test_a_sale_reported_late_does_not_look_like_a_delivery() -> None:
    site = Site(DeliveryDetector(TANK))
    site.run(5)
    site.run(8, sold=0, delivered=-50)  # a 400 L truck fill drains the tank, not yet sold...
    site.step(0, 400)  # ...and is sold at once: the adjusted level rises 400 L, under 500 L
    site.run(10)
    assert site.found == []


def test_a_glitch_that_falls_back_is_no_delivery() -> None:
    site = Site(DeliveryDetector(TANK))
    site.run(5)
    site.step(600, 0)  # one wild reading
    site.step(-600, 0)
    site.run(10)
    assert site.found == [] and site.detector.in_progress is None


def test_a_settled_delivery_does_not_start_another() -> None:
    site = Site(DeliveryDetector(TANK))
    drop(site, sold=0)
    site.run(40)
    assert len(site.found) == 1


def test_the_gauge_flag_keeps_a_delivery_open() -> None:
    site = Site(DeliveryDetector(TANK))
    drop(site, sold=0)
    for _ in range(10):
        site.step(0, 0, flag=True)  # the console still sees a delivery
    assert site.found == []
    site.run(4)
    assert len(site.found) == 1
    assert site.found[0].delivered == 5000


def test_two_deliveries_in_a_row() -> None:
    site = Site(DeliveryDetector(TANK))
    drop(site, sold=10)
    site.run(30, sold=10)
    site.run(4, delivered=1000, sold=10)
    site.run(10, sold=10)
    assert [d.delivered for d in site.found] == [5000, 4000]


# ------------------------------------------------------------------ gauge reports


def report_of(first: TankInventory, last: TankInventory, **shift: int) -> GaugeDelivery:
    """A console's report of a drop, its times off by some minutes (it rounds to the minute and
    settles on its own clock)."""
    return GaugeDelivery(
        tank=1,
        start_at=first.at + timedelta(minutes=shift.get("start", 0)),
        end_at=last.at + timedelta(minutes=shift.get("end", 0)),
        start_volume=first.product_l,
        end_volume=last.product_l,
        start_volume_tc=first.net_l,
        end_volume_tc=last.net_l,
    )


def test_gauge_report_wins_over_the_detected_delivery() -> None:
    site = Site(DeliveryDetector(TANK, gauge_reports=True))
    before, _ = drop(site)
    site.run(4, sold=20)
    assert site.found == []  # detected, held for the gauge's report
    end = site.readings[-1]
    report = report_of(before, end, start=1, end=-1)
    delivery = site.detector.report(report)
    assert delivery is not None
    assert delivery.source is DeliverySource.GAUGE
    assert (delivery.start_at, delivery.end_at) == (report.start_at, report.end_at)
    # Sales added back over the report's own interval, 2 minutes shorter than ours: 10 readings.
    assert delivery.dispensed_during == 200
    assert delivery.delivered == end.product_l - before.product_l + 200
    site.run(40, sold=20)  # past the grace period: the detected one is not given out as well
    assert site.found == []
    assert site.detector.report(report) is None  # consoles repeat their list


def test_without_a_report_the_detected_delivery_comes_after_the_grace() -> None:
    site = Site(DeliveryDetector(TANK, gauge_reports=True))
    drop(site)
    site.run(4, sold=20)
    ended = site.readings[-1].at
    site.run(29, sold=20)
    assert site.found == []  # 14.5 minutes
    site.run(1, sold=20)
    (delivery,) = site.found
    assert delivery.source is DeliverySource.DETECTED and delivery.end_at == ended
    assert delivery.delivered == 5000
    # A report that comes later still is the same delivery: not taken twice.
    late = report_of(site.readings[20], site.readings[34])
    assert site.detector.report(late) is None


def test_a_report_during_the_rise_claims_the_delivery() -> None:
    site = Site(DeliveryDetector(TANK, gauge_reports=True))
    before, _ = drop(site)
    report = report_of(before, site.readings[-1])  # the console ended it first
    assert site.detector.report(report) is not None
    site.run(60, sold=20)
    assert site.found == []


def test_detector_without_gauge_reports_gives_out_at_once_and_dedupes_reports() -> None:
    site = Site(DeliveryDetector(TANK))
    before, _ = drop(site)
    site.run(4, sold=20)
    assert len(site.found) == 1
    assert site.detector.report(report_of(before, site.readings[-1])) is None


def test_report_from_before_the_station_watched_is_the_bare_rise() -> None:
    site = Site(DeliveryDetector(TANK, gauge_reports=True))
    report = GaugeDelivery(
        tank=1,
        start_at=T0 - timedelta(hours=3),
        end_at=T0 - timedelta(hours=2),
        start_volume=D(4000),
        end_volume=D(9000),
        start_volume_tc=D(3990),
        end_volume_tc=D(8980),
    )
    delivery = site.detector.report(report)
    assert delivery is not None
    assert delivery.dispensed_during is None and not delivery.sales_added_back
    assert (delivery.delivered, delivery.delivered_tc) == (D(5000), D(4990))


def test_reports_already_recorded_are_skipped_and_lists_taken_in_order() -> None:
    def rep(hour: int) -> GaugeDelivery:
        start = T0 - timedelta(hours=hour)
        return GaugeDelivery(1, start, start + timedelta(minutes=30), D(1), D(2), D(1), D(2))

    detector = DeliveryDetector(TANK, reports_after=T0 - timedelta(hours=5))
    taken = detector.report_all([rep(2), rep(6), rep(4), rep(10)])
    assert [d.start_at for d in taken] == [rep(4).start_at, rep(2).start_at]
    assert detector.report_all([rep(2), rep(4)]) == ()


def test_sales_during_a_report_are_interpolated_between_readings() -> None:
    detector = DeliveryDetector(TANK)
    for seconds, product, sold in ((0, 5000, 0), (60, 4940, 60), (120, 4940, 0)):
        detector.observe(inventory(T0 + timedelta(seconds=seconds), D(product)), D(sold))
    report = GaugeDelivery(
        1, T0 + timedelta(seconds=30), T0 + timedelta(seconds=90), D(0), D(1), D(0), D(1)
    )
    delivery = detector.report(report)
    assert delivery is not None
    assert delivery.dispensed_during == 30  # half of the 60 L sold between 0 s and 60 s


def test_detector_refuses_bad_input() -> None:
    detector = DeliveryDetector(TANK)
    detector.observe(inventory(T0, D(100)), D(0))
    with pytest.raises(ValueError, match="not after"):
        detector.observe(inventory(T0, D(100)), D(0))
    with pytest.raises(ValueError, match="negative"):
        detector.observe(inventory(T0 + STEP, D(100)), D(-1))
    other = GaugeDelivery(2, T0, T0, D(0), D(0), D(0), D(0))
    with pytest.raises(ValueError, match="tank 2"):
        detector.report(other)


# ------------------------------------------------------------------ sales to tanks


def test_allocate_shares_a_sale_among_manifolded_tanks() -> None:
    assert allocate(D(60), {1: D(20000), 2: D(10000)}) == {1: D(40), 2: D(20)}
    shares = allocate(D("10.00"), {1: D(1), 2: D(1), 3: D(1)})
    assert sum(shares.values()) == D("10.00")
    assert shares == {1: D("3.34"), 2: D("3.33"), 3: D("3.33")}  # the remainder to one tank
    assert allocate(D("45.67"), {7: D(12)}) == {7: D("45.67")}
    assert allocate(D(10), {1: D(0), 2: D(0)}) == {1: D(5), 2: D(5)}
    with pytest.raises(ValueError):
        allocate(D(1), {})


# ------------------------------------------------------------------ reconciliation


def test_reconciliation_of_a_known_day() -> None:
    day = reconcile(
        1,
        date(2026, 3, 5),
        opening=D("20000.00"),
        deliveries=D("10000.00"),
        sales=D("8000.00"),
        closing=D("21950.00"),
    )
    assert day.book == D("22000.00")  # 20000 + 10000 − 8000
    assert day.variance == D("-50.00")  # 50 L missing
    assert day.throughput == D("8000.00")
    assert day.period == date(2026, 3, 1)
    assert (day.period_throughput, day.cumulative_variance) == (D("8000.00"), D("-50.00"))
    assert day.limit == D("572.10")  # 1 % of 8000 + 492.1
    assert not day.flagged and not day.day_flagged


def test_130_gallons_is_492_1_litres() -> None:
    assert abs(130 * D("3.785411784") - RECONCILIATION_ALLOWANCE_L) < D("0.01")


def month(loss_per_day: str, sales: str = "10000", days: int = 31) -> Iterator[Reconciliation]:
    """A month of days each selling `sales` litres and losing `loss_per_day` more; every third
    day a delivery of three days' sales."""
    previous: Reconciliation | None = None
    stock = D(30000)
    for n in range(1, days + 1):
        delivered = 3 * D(sales) if n % 3 == 0 else D(0)
        closing = stock + delivered - D(sales) - D(loss_per_day)
        previous = reconcile(
            1,
            date(2026, 3, n),
            opening=stock,
            deliveries=delivered,
            sales=D(sales),
            closing=closing,
            previous=previous,
        )
        stock = closing
        yield previous


def test_a_month_within_one_percent_plus_130_gallons() -> None:
    days = list(month("20"))
    last = days[-1]
    assert last.period_throughput == 310000
    assert last.cumulative_variance == -620  # 31 × 20
    assert last.limit == D("3592.10")  # 3100 + 492.1
    assert not any(d.flagged or d.day_flagged for d in days)


def test_a_steady_leak_is_flagged_the_day_it_passes_the_limit() -> None:
    # Cumulative loss 130·n against 100·n + 492.1: over the limit once 30·n > 492.1, day 17.
    days = list(month("130"))
    assert [d.day.day for d in days if d.flagged] == list(range(17, 32))
    assert days[15].cumulative_variance == -2080 and days[15].limit == D("2092.10")
    assert days[16].cumulative_variance == -2210 and days[16].limit == D("2192.10")
    assert not any(d.day_flagged for d in days)  # no single day is remarkable


def test_one_bad_day_is_flagged_on_its_own() -> None:
    day = reconcile(
        1, date(2026, 3, 9), opening=D(20000), deliveries=D(0), sales=D(1000), closing=D(18400)
    )
    assert day.variance == -600 and day.day_limit == D("502.10")
    assert day.day_flagged and day.flagged


def test_a_new_month_starts_the_cumulative_figures_again() -> None:
    march = list(month("130"))[-1]
    april = reconcile(
        1,
        date(2026, 4, 1),
        opening=D(10000),
        deliveries=D(0),
        sales=D(1000),
        closing=D(9000),
        previous=march,
    )
    assert (april.period, april.period_throughput, april.cumulative_variance) == (
        date(2026, 4, 1),
        D(1000),
        D(0),
    )
    assert not april.flagged


def test_configured_allowance() -> None:
    day = reconcile(
        1,
        date(2026, 3, 1),
        opening=D(1000),
        deliveries=D(0),
        sales=D(100),
        closing=D(800),
        allowance=D(50),
    )
    assert day.limit == D(51) and day.flagged  # |−100| > 1 + 50


def test_reconcile_refuses_inconsistent_input() -> None:
    first = reconcile(1, date(2026, 3, 2), opening=D(1), deliveries=D(0), sales=D(0), closing=D(1))
    with pytest.raises(ValueError, match="not before"):
        reconcile(
            1,
            date(2026, 3, 2),
            opening=D(1),
            deliveries=D(0),
            sales=D(0),
            closing=D(1),
            previous=first,
        )
    with pytest.raises(ValueError, match="tank 1, not 2"):
        reconcile(
            2,
            date(2026, 3, 3),
            opening=D(1),
            deliveries=D(0),
            sales=D(0),
            closing=D(1),
            previous=first,
        )
    with pytest.raises(ValueError, match="negative"):
        reconcile(1, date(2026, 3, 3), opening=D(-1), deliveries=D(0), sales=D(0), closing=D(1))
