"""Simulated underground tanks that every gauge simulator and the demo read: one physics model.

A tank holds product floating on a little water. Its chart (height ↔ litres, piecewise
linear, like a strapping table) turns volumes into the heights a probe measures. Simulated
pumps draw product (`TankFarm.draw` is the hook for their sales), tankers deliver over time,
a leak loses product slowly, and the temperature drifts towards the ground's.

Nothing runs in the background: every read or action first advances the tank to the
clock's "now", under the tank's lock, so pumps, gauge simulators and tests may call from
any thread. Quantities are floats in mm, L and °C: this is a simulator, not a ledger.
"""

from __future__ import annotations

import bisect
import enum
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

Clock = Callable[[], float]
WallClock = Callable[[], datetime]


# ======================================================================================
# Chart
# ======================================================================================
@dataclass(frozen=True, slots=True)
class TankChart:
    """Height (mm) ↔ volume (L), linear between points; both rise strictly from (0, 0)."""

    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if len(self.points) < 2:
            raise ValueError("a tank chart needs at least two points")
        if self.points[0] != (0.0, 0.0):
            raise ValueError("a tank chart starts at height 0 with volume 0")
        for (h0, v0), (h1, v1) in zip(self.points, self.points[1:], strict=False):
            if not (h1 > h0 and v1 > v0):
                raise ValueError(
                    f"chart points must rise in height and volume: {h0, v0} → {h1, v1}"
                )

    @classmethod
    def from_points(cls, points: Iterable[tuple[float, float]]) -> TankChart:
        return cls(tuple((float(h), float(v)) for h, v in points))

    @classmethod
    def horizontal_cylinder(
        cls, diameter_mm: float, length_mm: float, *, points: int = 101
    ) -> TankChart:
        """The chart of a flat-ended horizontal cylinder, at `points` evenly spaced heights."""
        if diameter_mm <= 0 or length_mm <= 0 or points < 2:
            raise ValueError("a cylinder needs a positive diameter and length and two points")
        radius = diameter_mm / 2
        table = []
        for i in range(points):
            h = diameter_mm * i / (points - 1)
            # Area of the circular segment of depth h, times the length; mm³ → L.
            area = radius**2 * math.acos((radius - h) / radius) - (radius - h) * math.sqrt(
                max(0.0, 2 * radius * h - h * h)
            )
            table.append((h, area * length_mm / 1e6))
        table[0] = (0.0, 0.0)
        return cls(tuple(table))

    @property
    def height_mm(self) -> float:
        return self.points[-1][0]

    @property
    def capacity_l(self) -> float:
        return self.points[-1][1]

    def volume_at(self, height_mm: float) -> float:
        """Litres at this liquid height (clamped to the chart)."""
        return _interpolate(self.points, height_mm, 0, 1)

    def height_at(self, volume_l: float) -> float:
        """Liquid height for this many litres (clamped to the chart)."""
        return _interpolate(self.points, volume_l, 1, 0)


def _interpolate(points: Sequence[tuple[float, float]], x: float, given: int, wanted: int) -> float:
    if x <= points[0][given]:
        return points[0][wanted]
    if x >= points[-1][given]:
        return points[-1][wanted]
    keys = [p[given] for p in points]
    i = bisect.bisect_right(keys, x)
    lo, hi = points[i - 1], points[i]
    fraction = (x - lo[given]) / (hi[given] - lo[given])
    return lo[wanted] + fraction * (hi[wanted] - lo[wanted])


# ======================================================================================
# Temperature compensation
# ======================================================================================
# Typical densities at 15 °C (kg/m³), for tanks that do not give their own.
DENSITY_15C = {"gasoline": 745.0, "diesel": 840.0, "kerosene": 800.0}


def vcf_54b(temperature_c: float, density15: float) -> float:
    """Volume correction factor to 15 °C, API MPMS 11.1 table 54B (see our protocols notes).

    α15 = K0/ρ15² + K1/ρ15 per product band (a special formula between 770 and 788 kg/m³);
    VCF = exp(−α15·ΔT·(1 + 0.8·α15·ΔT)) with ΔT = T − 15 °C. Net (TC) volume = gross × VCF.
    """
    rho = density15
    if 653 <= rho < 770:
        alpha = 346.4228 / rho**2 + 0.4388 / rho
    elif 770 <= rho < 788:
        alpha = -0.00336312 + 2680.3206 / rho**2
    elif 788 <= rho < 839:
        alpha = 594.5418 / rho**2
    elif 839 <= rho <= 1075:
        alpha = 186.9696 / rho**2 + 0.4862 / rho
    else:
        raise ValueError(f"density {rho} kg/m³ is outside table 54B (653-1075)")
    delta = temperature_c - 15.0
    return math.exp(-alpha * delta * (1 + 0.8 * alpha * delta))


# ======================================================================================
# One tank
# ======================================================================================
class TankAlarm(enum.Enum):
    HIGH_WATER = "high_water"
    OVERFILL = "overfill"
    LOW_PRODUCT = "low_product"


@dataclass(frozen=True, slots=True)
class TankSpec:
    """What does not change about a tank. Fractions are of the chart's capacity."""

    number: int
    chart: TankChart
    product: str = "diesel"
    density15: float = DENSITY_15C["diesel"]  # kg/m³ at 15 °C, for the VCF
    ullage_fraction: float = 1.0  # consoles often give ullage to 90 or 95 % of capacity
    high_water_mm: float = 50.0
    overfill_fraction: float = 0.90
    low_product_fraction: float = 0.10
    ground_temperature_c: float = 15.0
    temperature_time_constant_s: float = 6 * 3600.0  # how fast product follows the ground

    def __post_init__(self) -> None:
        vcf_54b(15.0, self.density15)  # ValueError now for a density outside the table
        if not 0 < self.ullage_fraction <= 1 or not 0 < self.overfill_fraction <= 1:
            raise ValueError("ullage and overfill fractions are in (0, 1]")
        if self.temperature_time_constant_s <= 0:
            raise ValueError("the temperature time constant must be positive")

    @property
    def capacity_l(self) -> float:
        return self.chart.capacity_l


@dataclass(frozen=True, slots=True)
class TankSnapshot:
    """Everything a gauge reports about one tank, taken at one instant.

    `volume_l` is the product (gross observed, water excluded), `gross_l` product + water
    (the chart at the liquid height), `tc_volume_l` the product corrected to 15 °C, and
    `ullage_l` the room left up to `ullage_fraction` of capacity.
    """

    number: int
    product: str
    height_mm: float
    volume_l: float
    water_mm: float
    water_l: float
    gross_l: float
    temperature_c: float
    tc_volume_l: float
    ullage_l: float
    capacity_l: float
    delivery_in_progress: bool
    alarms: frozenset[TankAlarm]
    leak_lph: float


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A finished tanker drop, as a gauge would record it (times are aware, UTC).

    The end volume may be less than start + delivered: pumps kept selling during the drop.
    """

    tank: int
    start: datetime
    end: datetime
    delivered_l: float
    start_volume_l: float
    end_volume_l: float
    start_tc_volume_l: float
    end_tc_volume_l: float
    start_water_l: float
    end_water_l: float
    start_height_mm: float
    end_height_mm: float
    start_temperature_c: float
    end_temperature_c: float


@dataclass
class _Drop:
    remaining_l: float
    rate_lps: float
    temperature_c: float
    delivered_l: float
    start_wall: datetime
    start: TankSnapshot


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SimTank:
    """One tank's state. Every public method is thread-safe and advances time first."""

    def __init__(
        self,
        spec: TankSpec,
        *,
        product_l: float = 0.0,
        water_l: float = 0.0,
        temperature_c: float | None = None,
        clock: Clock = time.monotonic,
        wall: WallClock = _utc_now,
    ) -> None:
        self.spec = spec
        self._clock = clock
        self._wall = wall
        self._lock = threading.RLock()
        self._product = 0.0
        self._water = 0.0
        self._temperature = spec.ground_temperature_c if temperature_c is None else temperature_c
        self._leak_lph = 0.0
        self._drop: _Drop | None = None
        self._deliveries: list[DeliveryRecord] = []
        self._last = clock()
        self._set(product_l, water_l)

    @property
    def number(self) -> int:
        return self.spec.number

    # ---------------------------------------------------------------- actions
    def draw(self, litres: float | Decimal) -> float:
        """A pump takes product; returns what it got (less if the tank runs dry)."""
        amount = float(litres)
        if amount < 0:
            raise ValueError("a pump cannot draw a negative volume")
        with self._lock:
            self._advance()
            taken = min(amount, self._product)
            self._product -= taken
            return taken

    def deliver(
        self, litres: float, duration_s: float = 1800.0, *, temperature_c: float | None = None
    ) -> None:
        """A tanker drops `litres` evenly over `duration_s` (0: at once).

        Product that does not fit spills and is not counted as delivered.
        """
        if litres <= 0 or duration_s < 0:
            raise ValueError("a delivery needs a positive volume and a duration of 0 or more")
        with self._lock:
            self._advance()
            if self._drop is not None:
                raise RuntimeError(f"tank {self.number}: a delivery is already in progress")
            drop_temperature = self._temperature if temperature_c is None else temperature_c
            self._drop = _Drop(
                remaining_l=float(litres),
                rate_lps=float(litres) / duration_s if duration_s else math.inf,
                temperature_c=drop_temperature,
                delivered_l=0.0,
                start_wall=self._wall(),
                start=self._snapshot(),
            )
            if not duration_s:
                self._flow(0.0)

    def add_water(self, litres: float) -> None:
        """Water gets in (rain through a fill cap, condensation); negative: a water draw-off."""
        with self._lock:
            self._advance()
            self._set(self._product, max(0.0, self._water + litres))

    def set_leak(self, litres_per_hour: float) -> None:
        """Lose product steadily from now on (0 stops the leak)."""
        if litres_per_hour < 0:
            raise ValueError("a leak rate cannot be negative")
        with self._lock:
            self._advance()
            self._leak_lph = float(litres_per_hour)

    def set_state(
        self,
        *,
        product_l: float | None = None,
        water_l: float | None = None,
        temperature_c: float | None = None,
    ) -> None:
        """Put the tank into a given state (test and demo set-up)."""
        with self._lock:
            self._advance()
            if temperature_c is not None:
                self._temperature = temperature_c
            self._set(
                self._product if product_l is None else product_l,
                self._water if water_l is None else water_l,
            )

    # ---------------------------------------------------------------- reading
    def snapshot(self) -> TankSnapshot:
        with self._lock:
            self._advance()
            return self._snapshot()

    @property
    def height_mm(self) -> float:
        return self.snapshot().height_mm

    @property
    def volume_l(self) -> float:
        return self.snapshot().volume_l

    @property
    def water_mm(self) -> float:
        return self.snapshot().water_mm

    @property
    def water_l(self) -> float:
        return self.snapshot().water_l

    @property
    def gross_l(self) -> float:
        return self.snapshot().gross_l

    @property
    def temperature_c(self) -> float:
        return self.snapshot().temperature_c

    @property
    def ullage_l(self) -> float:
        return self.snapshot().ullage_l

    @property
    def tc_volume_l(self) -> float:
        return self.snapshot().tc_volume_l

    @property
    def delivery_in_progress(self) -> bool:
        return self.snapshot().delivery_in_progress

    @property
    def alarms(self) -> frozenset[TankAlarm]:
        return self.snapshot().alarms

    @property
    def deliveries(self) -> tuple[DeliveryRecord, ...]:
        """Finished deliveries, oldest first."""
        with self._lock:
            self._advance()
            return tuple(self._deliveries)

    # ---------------------------------------------------------------- internals
    def _set(self, product_l: float, water_l: float) -> None:
        if product_l < 0 or water_l < 0:
            raise ValueError("volumes cannot be negative")
        capacity = self.spec.capacity_l
        if product_l + water_l > capacity:
            raise ValueError(
                f"tank {self.number}: {product_l + water_l:.0f} L exceeds capacity {capacity:.0f} L"
            )
        self._product = float(product_l)
        self._water = float(water_l)

    def _advance(self) -> None:
        now = self._clock()
        elapsed = now - self._last
        if elapsed <= 0:
            return
        self._last = now
        if self._drop is not None:
            self._flow(elapsed)
        # Product relaxes towards the ground's temperature (Newton's law of cooling).
        spec = self.spec
        keep = math.exp(-elapsed / spec.temperature_time_constant_s)
        self._temperature = (
            spec.ground_temperature_c + (self._temperature - spec.ground_temperature_c) * keep
        )
        if self._leak_lph:
            self._product = max(0.0, self._product - self._leak_lph * elapsed / 3600.0)

    def _flow(self, elapsed: float) -> None:
        """Pour `elapsed` seconds' worth of the current drop; close it when it is all in."""
        drop = self._drop
        assert drop is not None
        if math.isinf(drop.rate_lps):
            poured, used_s = drop.remaining_l, 0.0
        else:
            poured = min(drop.remaining_l, drop.rate_lps * elapsed)
            used_s = poured / drop.rate_lps
        drop.remaining_l -= poured
        room = max(0.0, self.spec.capacity_l - self._product - self._water)
        entered = min(poured, room)  # the rest spills
        if entered > 0:
            total = self._product + entered
            self._temperature = (
                self._product * self._temperature + entered * drop.temperature_c
            ) / total
            self._product = total
            drop.delivered_l += entered
        if drop.remaining_l <= 1e-9:
            finished_ago = max(0.0, elapsed - used_s)
            end = self._snapshot()
            start = drop.start
            self._deliveries.append(
                DeliveryRecord(
                    tank=self.number,
                    start=drop.start_wall,
                    end=self._wall() - timedelta(seconds=finished_ago),
                    delivered_l=drop.delivered_l,
                    start_volume_l=start.volume_l,
                    end_volume_l=end.volume_l,
                    start_tc_volume_l=start.tc_volume_l,
                    end_tc_volume_l=end.tc_volume_l,
                    start_water_l=start.water_l,
                    end_water_l=end.water_l,
                    start_height_mm=start.height_mm,
                    end_height_mm=end.height_mm,
                    start_temperature_c=start.temperature_c,
                    end_temperature_c=end.temperature_c,
                )
            )
            self._drop = None

    def _snapshot(self) -> TankSnapshot:
        spec = self.spec
        chart = spec.chart
        gross = self._product + self._water
        capacity = spec.capacity_l
        water_mm = chart.height_at(self._water)
        alarms = set()
        if water_mm >= spec.high_water_mm:
            alarms.add(TankAlarm.HIGH_WATER)
        if gross >= spec.overfill_fraction * capacity:
            alarms.add(TankAlarm.OVERFILL)
        if self._product <= spec.low_product_fraction * capacity:
            alarms.add(TankAlarm.LOW_PRODUCT)
        return TankSnapshot(
            number=spec.number,
            product=spec.product,
            height_mm=chart.height_at(gross),
            volume_l=self._product,
            water_mm=water_mm,
            water_l=self._water,
            gross_l=gross,
            temperature_c=self._temperature,
            tc_volume_l=self._product * vcf_54b(self._temperature, spec.density15),
            ullage_l=max(0.0, spec.ullage_fraction * capacity - gross),
            capacity_l=capacity,
            delivery_in_progress=self._drop is not None,
            alarms=frozenset(alarms),
            leak_lph=self._leak_lph,
        )

    def __repr__(self) -> str:
        return f"SimTank({self.number}, {self.spec.product}, {self._product:.0f} L)"


# ======================================================================================
# The station's tanks
# ======================================================================================
class TankFarm:
    """The tanks of one simulated station, by number."""

    def __init__(self, tanks: Iterable[SimTank]) -> None:
        self._tanks: dict[int, SimTank] = {}
        for tank in tanks:
            if tank.number in self._tanks:
                raise ValueError(f"two simulated tanks are numbered {tank.number}")
            self._tanks[tank.number] = tank

    def tank(self, number: int) -> SimTank:
        try:
            return self._tanks[number]
        except KeyError:
            raise KeyError(f"no simulated tank {number}") from None

    @property
    def tanks(self) -> tuple[SimTank, ...]:
        return tuple(self._tanks.values())

    def __iter__(self) -> Iterator[SimTank]:
        return iter(self._tanks.values())

    def __len__(self) -> int:
        return len(self._tanks)

    def draw(self, tank: int, litres: float | Decimal) -> float:
        """The hook for simulated pumps' sales: take `litres` of product from tank `tank`."""
        return self.tank(tank).draw(litres)
