"""Wet stock: deliveries into a tank and the daily reconciliation of its book and measured stock.

Pure domain like `tanks`: no I/O, no clock (times come with readings), `Decimal` volumes.

Deliveries. A `DeliveryDetector` watches one tank's *adjusted level*: its net (15 °C) product
volume plus everything dispensed from it since the detector began. Sales lower the net volume
and raise the dispensed sum by the same amount, so the adjusted level stays flat while the
station sells; it rises only when product comes in. A rise of at least
`DeliveryRules.min_rise_l` within `rise_window` starts a delivery at the lowest point before it;
the delivery ends once the level has stayed within `stable_band_l` for `settle_readings`
readings spanning `settle_time` (and the gauge no longer flags one). Settled product measures
truer than a level still moving (foam, turbulence), which is why consoles wait too. Then
``delivered = end − start + dispensed during``, in gross and in net litres.

A gauge that reports its own deliveries (TLS ``i202``) is the better witness: its reports are
taken as they come, with the sales during them added back from the detector's history, and
a detected delivery overlapping one is dropped. So a detected delivery on such a tank is held
for `report_grace` before it is given out, and one physical delivery yields one `Delivery`.

Reconciliation. ``book = opening + deliveries − sales``, ``variance = closing − book``, all in
net litres, per tank per day; variances add up over the calendar month and are held against
1 % of the month's throughput plus 130 gallons (40 CFR 280.43(a)), or a configured allowance.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Final

from edgectl.forecourt.tanks import (
    RECONCILIATION_ALLOWANCE_L,
    Tank,
    TankInventory,
    litres,
)

__all__ = [
    "THROUGHPUT_SHARE",
    "Delivery",
    "DeliveryDetector",
    "DeliveryInProgress",
    "DeliverySource",
    "GaugeDelivery",
    "Reconciliation",
    "allocate",
    "reconcile",
]

THROUGHPUT_SHARE: Final = Decimal("0.01")  # 1 % of a period's throughput may go unexplained


# --------------------------------------------------------------------------- deliveries


class DeliverySource(enum.Enum):
    DETECTED = "detected"  # found by the station from the level
    GAUGE = "gauge"  # the gauge's own delivery report

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Delivery:
    """Product put into a tank. Volumes are the tank's product (water excluded), gross and net
    (15 °C). `dispensed_during` is what the tank's pumps sold meanwhile, added back to the rise;
    None when the station was not watching then (a gauge report from before a restart), in
    which case `delivered` is the bare rise."""

    tank: int
    source: DeliverySource
    start_at: datetime
    end_at: datetime
    start_volume: Decimal
    end_volume: Decimal
    start_volume_tc: Decimal
    end_volume_tc: Decimal
    dispensed_during: Decimal | None
    dispensed_during_tc: Decimal | None

    @property
    def delivered(self) -> Decimal:
        return self.end_volume - self.start_volume + (self.dispensed_during or Decimal(0))

    @property
    def delivered_tc(self) -> Decimal:
        return self.end_volume_tc - self.start_volume_tc + (self.dispensed_during_tc or Decimal(0))

    @property
    def sales_added_back(self) -> bool:
        return self.dispensed_during is not None


@dataclass(frozen=True, slots=True)
class GaugeDelivery:
    """A delivery as a gauge reports it (TLS ``i202``): its start and end product volumes."""

    tank: int
    start_at: datetime
    end_at: datetime
    start_volume: Decimal
    end_volume: Decimal
    start_volume_tc: Decimal
    end_volume_tc: Decimal


@dataclass(frozen=True, slots=True)
class DeliveryInProgress:
    """A delivery seen starting and not yet settled; `rise_tc` is the net rise so far, sales
    added back."""

    tank: int
    start_at: datetime
    start_volume: Decimal
    start_volume_tc: Decimal
    rise_tc: Decimal


@dataclass(frozen=True, slots=True)
class _Point:
    inventory: TankInventory
    dispensed: Decimal  # gross litres dispensed from the tank since the detector began
    dispensed_tc: Decimal

    @property
    def at(self) -> datetime:
        return self.inventory.at

    @property
    def level(self) -> Decimal:
        """The adjusted level: flat while selling, rising with a delivery."""
        return self.inventory.net_l + self.dispensed_tc


@dataclass(slots=True)
class _Open:
    start: _Point
    settle_from: _Point  # first reading of the current run of stable readings
    settled: int  # readings in that run
    claimed: bool = False  # a gauge report already covers this delivery


class DeliveryDetector:
    """Finds one tank's deliveries from its readings and takes its gauge's delivery reports.

    `observe` takes each plausible inventory in time order with the gross litres dispensed
    from this tank since the previous inventory given here, fills still running included (a
    long truck fill sold only at its end would first look like a loss, then like a delivery).
    Set `gauge_reports` when the tank's gauge reports deliveries; `reports_after` is the end of
    the last gauge-reported delivery already recorded, so a console's repeated list is not
    taken twice across a restart.

    State lives in memory: a delivery under way when the station restarts is found again only
    if the gauge reports it.
    """

    def __init__(
        self,
        tank: Tank,
        *,
        gauge_reports: bool = False,
        reports_after: datetime | None = None,
    ) -> None:
        self._tank = tank
        self._rules = tank.deliveries
        self._gauge_reports = gauge_reports
        self._reported_until = reports_after
        self._points: deque[_Point] = deque()
        self._open: _Open | None = None
        self._quiet_from: datetime | None = None  # a new rise counts only from here
        self._pending: list[Delivery] = []  # detected, waiting for a gauge report
        self._reported: deque[tuple[datetime, datetime]] = deque()  # gauge report intervals
        self._given: deque[tuple[datetime, datetime]] = deque()  # detected deliveries given out

    @property
    def in_progress(self) -> DeliveryInProgress | None:
        if self._open is None or not self._points:
            return None
        start, last = self._open.start, self._points[-1]
        return DeliveryInProgress(
            tank=self._tank.number,
            start_at=start.at,
            start_volume=start.inventory.product_l,
            start_volume_tc=start.inventory.net_l,
            rise_tc=last.level - start.level,
        )

    def observe(self, inventory: TankInventory, dispensed: Decimal) -> tuple[Delivery, ...]:
        """Take the next reading; returns the deliveries that are complete now."""
        if inventory.tank != self._tank.number:
            raise ValueError(f"inventory of tank {inventory.tank} given to {self._tank.number}")
        if dispensed < 0:
            raise ValueError(f"dispensed volume {dispensed} L is negative")
        last = self._points[-1] if self._points else None
        if last is not None and inventory.at <= last.at:
            raise ValueError(f"reading at {inventory.at} is not after the previous {last.at}")
        point = _Point(
            inventory,
            (last.dispensed if last else Decimal(0)) + dispensed,
            (last.dispensed_tc if last else Decimal(0)) + litres(dispensed * inventory.vcf),
        )
        self._points.append(point)
        self._forget_before(point.at - self._rules.history)
        done: list[Delivery] = []
        if self._open is None:
            self._start_if_rising(point)
        else:
            done.extend(self._settle(self._open, point))
        done.extend(self._release(point.at))
        return tuple(done)

    def report(self, reported: GaugeDelivery) -> Delivery | None:
        """Take a gauge's delivery report. None when it is nothing new: already taken (consoles
        repeat their last deliveries on every request) or already given out as detected.

        Give a console's reports in the order they ended (`report_all` sorts them).
        """
        if reported.tank != self._tank.number:
            raise ValueError(f"report for tank {reported.tank} given to {self._tank.number}")
        if self._reported_until is not None and reported.end_at <= self._reported_until:
            return None
        self._reported_until = reported.end_at
        interval = (reported.start_at, reported.end_at)
        self._reported.append(interval)
        self._pending = [d for d in self._pending if not self._overlap(d, interval)]
        if self._open is not None and reported.end_at >= self._open.start.at - self._slack:
            self._open.claimed = True
        if any(self._overlap(given, interval) for given in self._given):
            return None
        dispensed, dispensed_tc = self._dispensed_between(reported.start_at, reported.end_at)
        return Delivery(
            tank=self._tank.number,
            source=DeliverySource.GAUGE,
            start_at=reported.start_at,
            end_at=reported.end_at,
            start_volume=reported.start_volume,
            end_volume=reported.end_volume,
            start_volume_tc=reported.start_volume_tc,
            end_volume_tc=reported.end_volume_tc,
            dispensed_during=dispensed,
            dispensed_during_tc=dispensed_tc,
        )

    def report_all(self, reports: Iterable[GaugeDelivery]) -> tuple[Delivery, ...]:
        """Take a console's whole delivery list; returns the new deliveries, oldest first."""
        taken = (self.report(r) for r in sorted(reports, key=lambda r: r.end_at))
        return tuple(d for d in taken if d is not None)

    # -- detection

    @property
    def _slack(self) -> timedelta:
        return self._rules.match_slack

    def _start_if_rising(self, point: _Point) -> None:
        since = point.at - self._rules.rise_window
        if self._quiet_from is not None:
            since = max(since, self._quiet_from)  # the last delivery's rise is not a new one
        before = [p for p in self._points if since <= p.at < point.at]
        if not before:
            return
        lowest = min(p.level for p in before)
        if point.level - lowest < self._rules.min_rise_l:
            return
        # The rise began after the last reading still at the bottom: dated from the lowest one,
        # a slow drift (meter error, rounding) would put the start at the window's far end.
        floor = lowest + self._rules.stable_band_l
        start = next(p for p in reversed(before) if p.level <= floor)
        self._open = _Open(start=start, settle_from=point, settled=1)

    def _settle(self, delivery: _Open, point: _Point) -> tuple[Delivery, ...]:
        if abs(point.level - delivery.settle_from.level) > self._rules.stable_band_l:
            delivery.settle_from, delivery.settled = point, 1
        else:
            delivery.settled += 1
        if point.inventory.gauge_delivery:
            return ()  # the gauge says product is still coming in
        if delivery.settled < self._rules.settle_readings:
            return ()
        if point.at - delivery.settle_from.at < self._rules.settle_time:
            return ()
        self._open = None
        self._quiet_from = point.at
        found = Delivery(
            tank=self._tank.number,
            source=DeliverySource.DETECTED,
            start_at=delivery.start.at,
            end_at=point.at,
            start_volume=delivery.start.inventory.product_l,
            end_volume=point.inventory.product_l,
            start_volume_tc=delivery.start.inventory.net_l,
            end_volume_tc=point.inventory.net_l,
            dispensed_during=point.dispensed - delivery.start.dispensed,
            dispensed_during_tc=point.dispensed_tc - delivery.start.dispensed_tc,
        )
        if found.delivered_tc < self._rules.min_rise_l:
            return ()  # the rise fell back: a probe glitch or a wave, not product
        if delivery.claimed or any(self._overlap(found, r) for r in self._reported):
            return ()
        if self._gauge_reports:
            self._pending.append(found)
            return ()
        return self._give(found)

    def _release(self, now: datetime) -> tuple[Delivery, ...]:
        """Detected deliveries whose gauge report did not come in time."""
        due = [d for d in self._pending if d.end_at + self._rules.report_grace <= now]
        self._pending = [d for d in self._pending if d not in due]
        return tuple(given for d in due for given in self._give(d))

    def _give(self, delivery: Delivery) -> tuple[Delivery, ...]:
        self._given.append((delivery.start_at, delivery.end_at))
        return (delivery,)

    def _overlap(
        self, delivery: Delivery | tuple[datetime, datetime], other: tuple[datetime, datetime]
    ) -> bool:
        start, end = (
            (delivery.start_at, delivery.end_at) if isinstance(delivery, Delivery) else delivery
        )
        return start <= other[1] + self._slack and other[0] <= end + self._slack

    def _forget_before(self, horizon: datetime) -> None:
        while len(self._points) > 1 and self._points[0].at < horizon:
            self._points.popleft()
        for intervals in (self._reported, self._given):
            while intervals and intervals[0][1] < horizon:
                intervals.popleft()

    def _dispensed_between(
        self, start: datetime, end: datetime
    ) -> tuple[Decimal | None, Decimal | None]:
        """Gross and net litres dispensed between two times, from the readings' running sums
        (interpolated between readings); None when the readings do not reach back to `start`."""
        if not self._points or start < self._points[0].at:
            return None, None
        first, last = self._dispensed_at(start), self._dispensed_at(end)
        return last[0] - first[0], last[1] - first[1]

    def _dispensed_at(self, at: datetime) -> tuple[Decimal, Decimal]:
        previous = self._points[0]
        for point in self._points:
            if point.at >= at:
                if point is previous:
                    break
                share = _seconds(at - previous.at) / _seconds(point.at - previous.at)
                return (
                    litres(previous.dispensed + (point.dispensed - previous.dispensed) * share),
                    litres(
                        previous.dispensed_tc + (point.dispensed_tc - previous.dispensed_tc) * share
                    ),
                )
            previous = point
        return previous.dispensed, previous.dispensed_tc


def _seconds(span: timedelta) -> Decimal:
    return Decimal(span // timedelta(microseconds=1)) / 1_000_000


# --------------------------------------------------------------------------- sales per tank


def allocate(volume: Decimal, product_by_tank: Mapping[int, Decimal]) -> dict[int, Decimal]:
    """Share a volume sold of one grade among the tanks holding it, in proportion to their
    product volumes: manifolded tanks level out through their siphon, so each gives its share.
    The shares add up to `volume` exactly (the rounding remainder goes to the fullest tank).
    With one tank, it takes all; with all tanks empty, they share equally."""
    if not product_by_tank:
        raise ValueError("no tank to allocate to")
    tanks = sorted(product_by_tank)
    total = sum((max(product_by_tank[t], Decimal(0)) for t in tanks), Decimal(0))
    if total > 0:
        shares = {t: litres(volume * max(product_by_tank[t], Decimal(0)) / total) for t in tanks}
    else:
        shares = {t: litres(volume / len(tanks)) for t in tanks}
    fullest = max(tanks, key=lambda t: (product_by_tank[t], -t))
    shares[fullest] += volume - sum(shares.values(), Decimal(0))
    return shares


# --------------------------------------------------------------------------- reconciliation


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """One tank's wet-stock reconciliation for one day, all in net (15 °C) litres.

    `period` is the first day of the reconciliation period (the calendar month);
    `period_throughput_before` and `cumulative_variance_before` carry the month's earlier days.
    The derived figures are properties, so a stored row cannot disagree with itself.
    """

    tank: int
    day: date
    opening: Decimal  # measured at the start of the day
    deliveries: Decimal
    sales: Decimal
    closing: Decimal  # measured at the end of the day
    allowance: Decimal = RECONCILIATION_ALLOWANCE_L
    period_throughput_before: Decimal = Decimal(0)
    cumulative_variance_before: Decimal = Decimal(0)

    @property
    def period(self) -> date:
        return self.day.replace(day=1)

    @property
    def book(self) -> Decimal:
        return self.opening + self.deliveries - self.sales

    @property
    def variance(self) -> Decimal:
        """Measured minus book. Negative: product missing (a leak, theft, pumps giving more than
        they meter); positive: more than the book (pumps giving less, an unrecorded delivery)."""
        return self.closing - self.book

    @property
    def throughput(self) -> Decimal:
        return self.sales

    @property
    def period_throughput(self) -> Decimal:
        return self.period_throughput_before + self.throughput

    @property
    def cumulative_variance(self) -> Decimal:
        return self.cumulative_variance_before + self.variance

    @property
    def limit(self) -> Decimal:
        """What the period's cumulative variance may reach: 1 % of throughput + allowance."""
        return litres(self.period_throughput * THROUGHPUT_SHARE) + self.allowance

    @property
    def flagged(self) -> bool:
        return abs(self.cumulative_variance) > self.limit

    @property
    def day_limit(self) -> Decimal:
        return litres(self.throughput * THROUGHPUT_SHARE) + self.allowance

    @property
    def day_flagged(self) -> bool:
        """This day alone broke the rule: a loss that big needs looking at today."""
        return abs(self.variance) > self.day_limit


def reconcile(
    tank: int,
    day: date,
    *,
    opening: Decimal,
    closing: Decimal,
    deliveries: Decimal,
    sales: Decimal,
    allowance: Decimal = RECONCILIATION_ALLOWANCE_L,
    previous: Reconciliation | None = None,
) -> Reconciliation:
    """Reconcile a day. `previous` is the tank's last reconciled day; its month's running sums
    carry on into this day, and a new month starts them again."""
    if min(opening, closing, deliveries, sales) < 0:
        raise ValueError("reconciliation volumes must not be negative")
    before_throughput = before_variance = Decimal(0)
    if previous is not None:
        if previous.tank != tank:
            raise ValueError(f"previous day is of tank {previous.tank}, not {tank}")
        if previous.day >= day:
            raise ValueError(f"previous day {previous.day} is not before {day}")
        if previous.period == day.replace(day=1):
            before_throughput = previous.period_throughput
            before_variance = previous.cumulative_variance
    return Reconciliation(
        tank=tank,
        day=day,
        opening=opening,
        deliveries=deliveries,
        sales=sales,
        closing=closing,
        allowance=allowance,
        period_throughput_before=before_throughput,
        cumulative_variance_before=before_variance,
    )
