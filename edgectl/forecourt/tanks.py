"""Tanks as the forecourt sees them: strapping charts, gauge readings turned into inventory, alarms.

Pure domain: no I/O, no clock of its own (every time comes in on a reading or an argument), no
asyncio, and `Decimal` arithmetic throughout so that book stock adds up to the litre.

* `TankChart` turns a height (mm) into a volume (L) by piecewise-linear interpolation of the
  tank's strapping table; heights outside the table clamp to its ends and say so.
* `Tank` is what a configured tank is: grade, capacity, safe fill, chart, density at 15 °C,
  internal height, alarm limits, delivery rules. `Tank.measure` turns the one `TankReading`
  shape that every gauge driver feeds into a `TankInventory`, or into an `ImplausibleReading`
  that says why it cannot be true (a reading like that is never stored as stock).
* `vcf_54b` is the volume correction factor to 15 °C of API MPMS 11.1 / ASTM D1250 table 54B.
* `AlarmTracker` raises and clears a tank's alarms with hysteresis, each once per crossing.

Volumes are kept to 0.01 L. The "net" volume is the product (water excluded) corrected to
15 °C; every comparison that must not move with the temperature (losses, deliveries, book
stock) uses it.
"""

from __future__ import annotations

import enum
import re
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Final

from edgectl.errors import EdgectlError

__all__ = [
    "RECONCILIATION_ALLOWANCE_L",
    "AlarmChange",
    "AlarmLimits",
    "AlarmTracker",
    "ChartVolume",
    "DeliveryRules",
    "ImplausibleReading",
    "InvalidChart",
    "Tank",
    "TankAlarm",
    "TankChart",
    "TankInventory",
    "TankModelError",
    "TankReading",
    "alpha_15",
    "litres",
    "vcf_54b",
]

LITRE_PLACES: Final = Decimal("0.01")
VCF_PLACES: Final = Decimal("0.00001")
# 130 US gallons (40 CFR 280.43(a)), the fixed part of the monthly reconciliation limit.
RECONCILIATION_ALLOWANCE_L: Final = Decimal("492.1")
MIN_TEMPERATURE_C: Final = Decimal(-40)
MAX_TEMPERATURE_C: Final = Decimal(70)
REFERENCE_TEMPERATURE_C: Final = Decimal(15)


class TankModelError(EdgectlError):
    """Figures that cannot describe a real tank (a density outside table 54B, a bad chart)."""

    code = "tank_model"


class InvalidChart(TankModelError):
    """A strapping table that is not a chart; `index` is the offending point (0-based), if any."""

    code = "tank_chart"

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


# A gauge's own volume may exceed the configured capacity a little (its chart and ours differ);
# more than this share of it cannot be in the tank.
GAUGE_VOLUME_SLACK = Decimal("1.05")


def litres(value: Decimal) -> Decimal:
    """A volume as it is kept: to 0.01 L."""
    return value.quantize(LITRE_PLACES)


# --------------------------------------------------------------------------- the chart


@dataclass(frozen=True, slots=True)
class ChartVolume:
    """A chart lookup: the volume, and whether the height lay outside the chart (clamped)."""

    volume_l: Decimal
    clamped: bool


@dataclass(frozen=True, slots=True)
class TankChart:
    """A strapping table: (height mm, volume L) points, heights strictly rising, volumes never
    falling. Two points are the least that describe a tank; a chart may start above 0 mm."""

    points: tuple[tuple[Decimal, Decimal], ...]
    _heights: tuple[Decimal, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        points = tuple((Decimal(h), Decimal(v)) for h, v in self.points)
        if len(points) < 2:
            raise InvalidChart(f"a chart needs at least 2 points, got {len(points)}")
        for i, (height, volume) in enumerate(points):
            if not (height.is_finite() and volume.is_finite()):
                raise InvalidChart(f"{height} mm, {volume} L is not a number", index=i)
            if height < 0 or volume < 0:
                raise InvalidChart(f"{height} mm, {volume} L: must not be negative", index=i)
            if i == 0:
                continue
            prev_height, prev_volume = points[i - 1]
            if height <= prev_height:
                raise InvalidChart(
                    f"height {height} mm is not above the previous point's {prev_height} mm "
                    "(heights must rise)",
                    index=i,
                )
            if volume < prev_volume:
                raise InvalidChart(
                    f"volume {volume} L at {height} mm is less than {prev_volume} L at "
                    f"{prev_height} mm (a tank holds more the higher it is filled)",
                    index=i,
                )
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "_heights", tuple(h for h, _ in points))

    @classmethod
    def parse_csv(cls, text: str) -> TankChart:
        """A chart from CSV text: one ``height_mm,volume_l`` pair per line.

        Blank lines and lines starting with ``#`` are skipped, and so is one header line before
        the first pair if its first field is not a number. ``;`` and tabs separate fields too
        (spreadsheet exports differ). Errors name the line.
        """
        points: list[tuple[Decimal, Decimal]] = []
        line_numbers: list[int] = []
        header_seen = False
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.lstrip("\ufeff").strip()
            if not line or line.startswith("#"):
                continue
            fields = _CSV_SEPARATOR.split(line)
            while len(fields) > 2 and not fields[-1]:
                fields.pop()  # a trailing separator
            if len(fields) != 2:
                raise InvalidChart(f"line {number}: expected height_mm,volume_l, got {line!r}")
            try:
                pair = (Decimal(fields[0]), Decimal(fields[1]))
            except InvalidOperation:
                if not points and not header_seen and not _is_number(fields[0]):
                    header_seen = True
                    continue
                raise InvalidChart(f"line {number}: not two numbers: {line!r}") from None
            points.append(pair)
            line_numbers.append(number)
        try:
            return cls(tuple(points))
        except InvalidChart as exc:
            if exc.index is None:
                raise
            raise InvalidChart(f"line {line_numbers[exc.index]}: {exc}") from None

    @property
    def min_height(self) -> Decimal:
        return self.points[0][0]

    @property
    def max_height(self) -> Decimal:
        return self.points[-1][0]

    @property
    def max_volume(self) -> Decimal:
        return self.points[-1][1]

    def volume_at(self, height_mm: Decimal) -> ChartVolume:
        """The volume at a height, interpolated; outside the chart, the nearest end, clamped."""
        if height_mm < self.min_height:
            return ChartVolume(self.points[0][1], clamped=True)
        if height_mm > self.max_height:
            return ChartVolume(self.max_volume, clamped=True)
        i = bisect_right(self._heights, height_mm)
        if i == len(self.points):
            return ChartVolume(self.max_volume, clamped=False)
        (h0, v0), (h1, v1) = self.points[i - 1], self.points[i]
        return ChartVolume(v0 + (v1 - v0) * (height_mm - h0) / (h1 - h0), clamped=False)

    def height_at(self, volume_l: Decimal) -> Decimal:
        """The lowest height holding a volume (for simulators); clamped to the chart's ends."""
        if volume_l <= self.points[0][1]:
            return self.min_height
        for (h0, v0), (h1, v1) in zip(self.points, self.points[1:], strict=False):
            # v0 < volume_l here (else an earlier segment answered), so v1 > v0 below.
            if volume_l <= v1:
                return h0 + (h1 - h0) * (volume_l - v0) / (v1 - v0)
        return next(h for h, v in self.points if v == self.max_volume)


_CSV_SEPARATOR: Final = re.compile(r"\s*[,;\t]\s*")


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except InvalidOperation:
        return False
    return True


# --------------------------------------------------------------------------- table 54B


# Table 54B: K0, K1 per density band (kg/m³ at 15 °C); each band includes its lower edge.
_DENSITY_MIN: Final = Decimal(653)
_DENSITY_MAX: Final = Decimal(1075)
_GASOLINE: Final = (Decimal("346.4228"), Decimal("0.4388"))  # 653 <= ρ < 770
_JET: Final = (Decimal("594.5418"), Decimal(0))  # 788 <= ρ < 839
_FUEL_OIL: Final = (Decimal("186.9696"), Decimal("0.4862"))  # 839 <= ρ <= 1075
# 770 <= ρ < 788, between gasoline and jet: α15 = A + B / ρ²
_TRANSITION_A: Final = Decimal("-0.00336312")
_TRANSITION_B: Final = Decimal("2680.3206")


def alpha_15(density_15: Decimal) -> Decimal:
    """The thermal expansion coefficient at 15 °C (per °C) of table 54B for a density (kg/m³).

    Raises `TankModelError` outside 653..1075 kg/m³, where the table says nothing.
    """
    rho = density_15
    if not (rho.is_finite() and _DENSITY_MIN <= rho <= _DENSITY_MAX):
        raise TankModelError(
            f"density {rho} kg/m³ at 15 °C is outside table 54B ({_DENSITY_MIN}..{_DENSITY_MAX})"
        )
    if Decimal(770) <= rho < Decimal(788):
        return _TRANSITION_A + _TRANSITION_B / (rho * rho)
    if rho < Decimal(770):
        k0, k1 = _GASOLINE
    elif rho < Decimal(839):
        k0, k1 = _JET
    else:
        k0, k1 = _FUEL_OIL
    return k0 / (rho * rho) + k1 / rho


def vcf_54b(density_15: Decimal, temperature_c: Decimal) -> Decimal:
    """Volume correction factor to 15 °C: VCF = exp(−α·ΔT·(1 + 0.8·α·ΔT)), ΔT = T − 15 °C.

    Rounded to 5 decimal places (at most 0.2 L on 30 000 L), so that a stored factor times
    the stored gross volume gives back the stored net volume.
    """
    alpha = alpha_15(density_15)
    delta = temperature_c - REFERENCE_TEMPERATURE_C
    exponent = -alpha * delta * (1 + Decimal("0.8") * alpha * delta)
    return exponent.exp().quantize(VCF_PLACES)


# --------------------------------------------------------------------------- the tank


@dataclass(frozen=True, slots=True)
class AlarmLimits:
    """When a tank's alarms are raised. Each is cleared only once the value is back past its
    threshold by `hysteresis_pct` percent of that threshold, so a level wavering around a
    limit raises one alarm, not one per reading. A zero `low_product_l` never raises."""

    low_product_l: Decimal = Decimal(0)  # product volume below this
    high_water_mm: Decimal = Decimal(50)  # water height above this
    overfill_pct: Decimal = Decimal(90)  # gross volume above this share of capacity
    sudden_loss_l: Decimal = Decimal(200)  # net loss not explained by dispensing, in `loss_window`
    hysteresis_pct: Decimal = Decimal(5)
    loss_window: timedelta = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class DeliveryRules:
    """How a delivery is recognised from the level (see `wetstock.DeliveryDetector`)."""

    min_rise_l: Decimal = Decimal(500)  # net rise, after adding back sales, that is a delivery
    rise_window: timedelta = timedelta(minutes=10)  # ... within this time
    stable_band_l: Decimal = Decimal(20)  # the level is stable while it stays within this
    settle_readings: int = 3  # ... for this many readings
    settle_time: timedelta = timedelta(minutes=2)  # ... spanning at least this long
    report_grace: timedelta = timedelta(minutes=15)  # a detected delivery waits for the gauge's
    match_slack: timedelta = timedelta(minutes=10)  # detected and reported deliveries match
    history: timedelta = timedelta(hours=48)  # readings kept to add back sales to reports


@dataclass(frozen=True, slots=True)
class TankReading:
    """One reading of one tank, in the shape every gauge driver's output is turned into.

    `tank` is the station's tank number. Heights are in mm from the tank bottom, `height_mm`
    being the top of the liquid (product over water). The volumes are optional and only what
    the gauge itself computed: `volume_l` the product volume without water (TLS "VOLUME"),
    `water_volume_l` the water. `gauge_delivery` is the gauge's own "delivery in progress"
    flag (TLS i201 status bit 0).
    """

    tank: int
    at: datetime
    height_mm: Decimal
    temperature_c: Decimal
    water_mm: Decimal = Decimal(0)
    volume_l: Decimal | None = None
    tc_volume_l: Decimal | None = None
    water_volume_l: Decimal | None = None
    gauge_delivery: bool = False


@dataclass(frozen=True, slots=True)
class TankInventory:
    """What a plausible reading says is in the tank.

    gross = total liquid at `height_mm`; water = liquid below `water_mm`; product = gross −
    water; net = product × VCF (to 15 °C). `ullage_l` is room left to capacity, `safe_ullage_l`
    room left to the safe fill volume (what a delivery may still bring; negative when over).
    `beyond_chart` marks a height outside the chart, whose volume was clamped to its end.
    """

    tank: int
    at: datetime
    height_mm: Decimal
    water_mm: Decimal
    temperature_c: Decimal
    gross_l: Decimal
    water_l: Decimal
    product_l: Decimal
    vcf: Decimal
    net_l: Decimal
    ullage_l: Decimal
    safe_ullage_l: Decimal
    fill_pct: Decimal
    beyond_chart: bool = False
    gauge_delivery: bool = False


@dataclass(frozen=True, slots=True)
class ImplausibleReading:
    """A reading that cannot be true, with every reason found; it is reported, never stored
    as stock."""

    tank: int
    at: datetime
    reading: TankReading
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Tank:
    """A configured tank. `height_mm` is its internal height (diameter of a horizontal tank);
    `chart` may be None only where the gauge reports volumes itself."""

    number: int
    grade: str
    capacity_l: Decimal
    height_mm: Decimal
    density_15: Decimal
    chart: TankChart | None = None
    safe_fill_pct: Decimal = Decimal(95)
    name: str = ""
    alarms: AlarmLimits = field(default_factory=AlarmLimits)
    deliveries: DeliveryRules = field(default_factory=DeliveryRules)
    reconciliation_allowance_l: Decimal = RECONCILIATION_ALLOWANCE_L

    def __post_init__(self) -> None:
        if self.capacity_l <= 0 or self.height_mm <= 0:
            raise TankModelError(f"tank {self.number}: capacity and height must be positive")
        if not 0 < self.safe_fill_pct <= 100:
            raise TankModelError(f"tank {self.number}: safe fill must be within 0..100 %")
        alpha_15(self.density_15)  # refuses a density outside table 54B now, not per reading

    @property
    def safe_fill_l(self) -> Decimal:
        return litres(self.capacity_l * self.safe_fill_pct / 100)

    @property
    def overfill_l(self) -> Decimal:
        return litres(self.capacity_l * self.alarms.overfill_pct / 100)

    def measure(self, reading: TankReading) -> TankInventory | ImplausibleReading:
        """The inventory a reading shows, or why the reading cannot be believed."""
        if reading.tank != self.number:
            raise ValueError(f"reading of tank {reading.tank} given to tank {self.number}")
        reasons = self._implausible(reading)
        if reasons:
            return ImplausibleReading(self.number, reading.at, reading, tuple(reasons))
        if self.chart is not None:
            gross = self.chart.volume_at(reading.height_mm)
            water = (
                self.chart.volume_at(reading.water_mm)
                if reading.water_mm > 0
                else ChartVolume(Decimal(0), clamped=False)
            )
            gross_l, water_l = litres(gross.volume_l), litres(water.volume_l)
            clamped = gross.clamped or water.clamped
        else:
            assert reading.volume_l is not None  # checked by _implausible
            water_l = litres(reading.water_volume_l or Decimal(0))
            gross_l = litres(reading.volume_l) + water_l
            clamped = False
        product_l = max(gross_l - water_l, Decimal(0))
        vcf = vcf_54b(self.density_15, reading.temperature_c)
        return TankInventory(
            tank=self.number,
            at=reading.at,
            height_mm=reading.height_mm,
            water_mm=reading.water_mm,
            temperature_c=reading.temperature_c,
            gross_l=gross_l,
            water_l=water_l,
            product_l=product_l,
            vcf=vcf,
            net_l=litres(product_l * vcf),
            ullage_l=self.capacity_l - gross_l,
            safe_ullage_l=self.safe_fill_l - gross_l,
            fill_pct=(gross_l * 100 / self.capacity_l).quantize(Decimal("0.1")),
            beyond_chart=clamped,
            gauge_delivery=reading.gauge_delivery,
        )

    def _implausible(self, r: TankReading) -> list[str]:
        reasons: list[str] = []
        figures: list[tuple[str, Decimal | None, str]] = [
            ("level", r.height_mm, "mm"),
            ("water", r.water_mm, "mm"),
            ("gauge volume", r.volume_l, "L"),
            ("gauge TC volume", r.tc_volume_l, "L"),
            ("gauge water volume", r.water_volume_l, "L"),
            ("temperature", r.temperature_c, "°C"),
        ]
        for name, value, unit in figures:
            if value is None:
                continue
            if not value.is_finite():
                reasons.append(f"{name} is not a number ({value})")
            elif value < 0 and unit != "°C":
                reasons.append(f"{name} {value} {unit} is negative")
        if reasons:
            return reasons
        if r.height_mm > self.height_mm:
            reasons.append(f"level {r.height_mm} mm is above the tank height {self.height_mm} mm")
        if r.water_mm > r.height_mm:
            reasons.append(f"water {r.water_mm} mm is above the product level {r.height_mm} mm")
        if not MIN_TEMPERATURE_C <= r.temperature_c <= MAX_TEMPERATURE_C:
            reasons.append(
                f"temperature {r.temperature_c} °C is outside "
                f"{MIN_TEMPERATURE_C}..{MAX_TEMPERATURE_C} °C"
            )
        most = self.capacity_l * GAUGE_VOLUME_SLACK
        for name, value in (
            ("gauge volume", r.volume_l),
            ("gauge TC volume", r.tc_volume_l),
            ("gauge water volume", r.water_volume_l),
        ):
            # A float glitch (1e38 from a probe) must be refused here, not fail later.
            if value is not None and value > most:
                reasons.append(f"{name} {value} L is above the tank capacity {self.capacity_l} L")
        if self.chart is None and r.volume_l is None:
            reasons.append("no volume: the tank has no chart and the gauge reported none")
        return reasons


# --------------------------------------------------------------------------- alarms


class TankAlarm(enum.Enum):
    LOW_PRODUCT = "low_product"
    HIGH_WATER = "high_water"
    OVERFILL = "overfill"
    SUDDEN_LOSS = "sudden_loss"
    PROBE_OFFLINE = "probe_offline"
    INVALID_READING = "invalid_reading"  # the probe answers, but with figures that cannot be
    PROBE_FAULT = "probe_fault"  # the probe answers, but refuses the read (a Modbus exception)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class AlarmChange:
    """An alarm raised or cleared. `value` is the figure that crossed (L or mm) and `limit` the
    point it crossed: the threshold when raised, the end of the hysteresis band when cleared."""

    tank: int
    alarm: TankAlarm
    raised: bool
    at: datetime
    value: Decimal | None = None
    limit: Decimal | None = None
    detail: str = ""

    @property
    def cleared(self) -> bool:
        return not self.raised


class AlarmTracker:
    """A tank's alarms over time. Feed it every outcome of `Tank.measure` (and `offline` when
    the gauge stops answering, `fault` when it answers a read with a refusal); each call
    returns the alarms raised and cleared by it.

    `active` starts from the alarms the store still holds open, so a restart does not raise
    them again. A sudden loss is the fall of the net volume plus everything dispensed from
    the tank (`dispensed_l`, gross litres metered out since the previous reading, fills still
    running included) from its highest point within `AlarmLimits.loss_window`.
    """

    def __init__(self, tank: Tank, active: Iterable[TankAlarm] = ()) -> None:
        self._tank = tank
        self._active: set[TankAlarm] = set(active)
        self._levels: deque[tuple[datetime, Decimal]] = deque()
        self._dispensed_tc = Decimal(0)

    @property
    def active(self) -> frozenset[TankAlarm]:
        return frozenset(self._active)

    def observe(self, inventory: TankInventory, dispensed_l: Decimal) -> tuple[AlarmChange, ...]:
        if inventory.tank != self._tank.number:
            raise ValueError(f"inventory of tank {inventory.tank} given to {self._tank.number}")
        limits = self._tank.alarms
        at = inventory.at
        changes = [
            *self._clear(TankAlarm.PROBE_OFFLINE, at),
            *self._clear(TankAlarm.PROBE_FAULT, at),
            *self._clear(TankAlarm.INVALID_READING, at),
            *self._below(TankAlarm.LOW_PRODUCT, inventory.product_l, limits.low_product_l, at),
            *self._above(TankAlarm.HIGH_WATER, inventory.water_mm, limits.high_water_mm, at),
            *self._above(TankAlarm.OVERFILL, inventory.gross_l, self._tank.overfill_l, at),
        ]
        loss = self._loss(inventory, dispensed_l)
        changes += self._above(TankAlarm.SUDDEN_LOSS, loss, limits.sudden_loss_l, at)
        return tuple(changes)

    def reject(self, bad: ImplausibleReading) -> tuple[AlarmChange, ...]:
        """An implausible reading: the probe answers, so it is not offline, but is not sound."""
        detail = "; ".join(bad.reasons)
        return (
            *self._clear(TankAlarm.PROBE_OFFLINE, bad.at),
            *self._clear(TankAlarm.PROBE_FAULT, bad.at),
            *self._raise(TankAlarm.INVALID_READING, bad.at, None, None, detail),
        )

    def offline(self, at: datetime, reason: str = "") -> tuple[AlarmChange, ...]:
        """The gauge or probe stopped answering; cleared by the next plausible reading."""
        return self._raise(TankAlarm.PROBE_OFFLINE, at, None, None, reason)

    def fault(self, at: datetime, reason: str = "") -> tuple[AlarmChange, ...]:
        """The probe answers but refuses to give the tank's figures (a Modbus exception, a
        reply that cannot be decoded); cleared by the next reading, plausible or not."""
        return self._raise(TankAlarm.PROBE_FAULT, at, None, None, reason)

    def _loss(self, inventory: TankInventory, dispensed_l: Decimal) -> Decimal:
        if dispensed_l < 0:
            raise ValueError(f"dispensed volume {dispensed_l} L is negative")
        self._dispensed_tc += litres(dispensed_l * inventory.vcf)
        level = inventory.net_l + self._dispensed_tc
        horizon = inventory.at - self._tank.alarms.loss_window
        while self._levels and self._levels[0][0] < horizon:
            self._levels.popleft()
        self._levels.append((inventory.at, level))
        return max(lv for _, lv in self._levels) - level

    def _above(
        self, alarm: TankAlarm, value: Decimal, threshold: Decimal, at: datetime
    ) -> tuple[AlarmChange, ...]:
        if alarm not in self._active:
            return self._raise(alarm, at, value, threshold) if value > threshold else ()
        clear_at = threshold * (1 - self._tank.alarms.hysteresis_pct / 100)
        return self._clear(alarm, at, value, clear_at) if value <= clear_at else ()

    def _below(
        self, alarm: TankAlarm, value: Decimal, threshold: Decimal, at: datetime
    ) -> tuple[AlarmChange, ...]:
        if alarm not in self._active:
            return self._raise(alarm, at, value, threshold) if value < threshold else ()
        clear_at = threshold * (1 + self._tank.alarms.hysteresis_pct / 100)
        return self._clear(alarm, at, value, clear_at) if value >= clear_at else ()

    def _raise(
        self,
        alarm: TankAlarm,
        at: datetime,
        value: Decimal | None,
        limit: Decimal | None,
        detail: str = "",
    ) -> tuple[AlarmChange, ...]:
        if alarm in self._active:
            return ()
        self._active.add(alarm)
        return (AlarmChange(self._tank.number, alarm, True, at, value, _tidy(limit), detail),)

    def _clear(
        self,
        alarm: TankAlarm,
        at: datetime,
        value: Decimal | None = None,
        limit: Decimal | None = None,
    ) -> tuple[AlarmChange, ...]:
        if alarm not in self._active:
            return ()
        self._active.discard(alarm)
        return (AlarmChange(self._tank.number, alarm, False, at, value, _tidy(limit)),)


def _tidy(limit: Decimal | None) -> Decimal | None:
    return None if limit is None else litres(limit)
