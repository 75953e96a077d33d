"""The figures of a day or shift report, from the records of its period. Pure: no I/O, no clock
(the period and the time the report is made come in), `Decimal` litres and money.

A period runs from `start` (excluded) to `end` (included), as the daily reconciliation counts a
day: a sale, delivery or reading belongs to it when its time is after the start and not after
the end. Sales count by the time the fill ended.

- Sales are summed by grade, by pump and by payment source: what authorized the fill (a cloud
  order, auto mode, an attendant at the CLI; `none` for a sale without an authorization record).
- The totals check takes each nozzle's electronic totals at both ends of the period and holds
  their difference against the sum of its sales: a shift has the totals recorded when it was
  opened and closed; a day has those its sales carried (from the first sale's totals before it
  to the last one's after it). Totals that moved more than the sales mean fuel that left
  unrecorded; less, sales the meter does not know.
- Each tank's book: the reconciliation the daemon kept for the day, or, for a day not kept yet
  and for a shift, one worked out the same way from the readings (`provisional`): opening and
  closing stock at 15 °C, deliveries, sales (a grade's shared among its tanks by their
  product), variance, and for a day the month's cumulative variance against its limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Final, Literal

from edgectl.forecourt.tanks import RECONCILIATION_ALLOWANCE_L, litres
from edgectl.forecourt.wetstock import (
    THROUGHPUT_SHARE,
    Reconciliation,
    allocate,
    reconcile,
)

ZERO: Final = Decimal(0)
HOUR: Final = timedelta(hours=1)

# Payment sources in the order a report lists them, and how it names them.
SOURCES: Final = ("cloud", "auto", "attendant", "none")
SOURCE_NAMES: Final = {
    "cloud": "cloud order",
    "auto": "auto",
    "attendant": "attendant",
    "none": "no authorization",
}

Verdict = Literal["ok", "mismatch", "no totals", "no sales"]
Basis = Literal["kept", "provisional", "none"]


# --------------------------------------------------------------------------- records in


@dataclass(frozen=True, slots=True)
class GradeInfo:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class TankInfo:
    number: int
    name: str
    grade: str
    product: str  # the grade's name
    capacity_l: Decimal
    allowance_l: Decimal = RECONCILIATION_ALLOWANCE_L


@dataclass(frozen=True, slots=True)
class SaleRecord:
    id: int
    pump: int
    nozzle: int
    grade: str
    volume: Decimal
    amount: Decimal
    ended_at: datetime
    source: str  # one of SOURCES
    total_volume_before: Decimal | None = None
    total_volume_after: Decimal | None = None
    total_amount_before: Decimal | None = None
    total_amount_after: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    tank: int
    at: datetime
    net_l: Decimal  # product at 15 °C
    product_l: Decimal  # product at its own temperature


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: int
    tank: int
    source: str
    start_at: datetime
    end_at: datetime
    delivered: Decimal
    delivered_tc: Decimal


@dataclass(frozen=True, slots=True)
class KeptDay:
    """A daily reconciliation as the daemon kept it."""

    tank: int
    day: date
    opening: Decimal
    deliveries: Decimal
    sales: Decimal
    closing: Decimal
    variance: Decimal
    cumulative_variance: Decimal
    period_throughput: Decimal
    flagged: bool


@dataclass(frozen=True, slots=True)
class AlarmRecord:
    id: int | None
    kind: str
    severity: str
    message: str
    raised_at: datetime
    cleared_at: datetime | None = None
    pump: int | None = None
    nozzle: int | None = None
    tank: int | None = None


@dataclass(frozen=True, slots=True)
class NozzleTotals:
    """One nozzle's electronic totals at one end of a period, and where they came from:
    `pump` (asked of the pump then) or `store` (the last the store had); None figures when
    they were never read."""

    pump: int
    nozzle: int
    volume: Decimal | None
    amount: Decimal | None
    source: str
    read_at: datetime | None = None
    grade: str | None = None


@dataclass(frozen=True, slots=True)
class Period:
    """The time a report covers. `kind` day or shift; `day` the local date of a day report;
    `shift` the shift's id, who opened and closed it; `running` a shift still open (its end is
    the time of the report)."""

    kind: Literal["day", "shift"]
    start: datetime
    end: datetime
    title: str
    day: date | None = None
    shift: int | None = None
    opened_by: str | None = None
    closed_by: str | None = None
    running: bool = False


@dataclass(frozen=True)
class Records:
    """Everything a report is made from. `nozzles` (pump, nozzle, grade) are the configured
    ones; `kept_days` the reconciliations kept in the period's month; `totals_start` and
    `totals_end` a shift's recorded totals (None for a day: its sales carry theirs)."""

    station_id: str
    station_name: str
    currency: str
    period: Period
    generated_at: datetime
    grades: Sequence[GradeInfo] = ()
    tanks: Sequence[TankInfo] = ()
    nozzles: Sequence[tuple[int, int, str]] = ()
    sales: Sequence[SaleRecord] = ()
    readings: Sequence[Reading] = ()
    deliveries: Sequence[DeliveryRecord] = ()
    kept_days: Sequence[KeptDay] = ()
    alarms: Sequence[AlarmRecord] = ()
    totals_start: Mapping[tuple[int, int], NozzleTotals] | None = None
    totals_end: Mapping[tuple[int, int], NozzleTotals] | None = None
    money_places: int = 2
    source: str = ""  # where the records were read (the store's path)


# --------------------------------------------------------------------------- figures out


@dataclass(frozen=True, slots=True)
class Sum:
    """Sales of one grade, pump or source (`key`), named `name` for people."""

    key: str
    name: str
    sales: int
    litres: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class HourSales:
    """Litres sold in one hour, by grade; `start` in local time."""

    start: datetime
    litres: Mapping[str, Decimal]
    amount: Decimal

    @property
    def total(self) -> Decimal:
        return sum(self.litres.values(), ZERO)


@dataclass(frozen=True, slots=True)
class NozzleCheck:
    """One nozzle's totals delta against the sum of its sales over the period. `basis` says
    where the totals came from (`shift totals` with their sources, `sales' totals`)."""

    pump: int
    nozzle: int
    grade: str
    basis: str
    sales: int
    sold: Decimal
    sold_amount: Decimal
    start: Decimal | None
    end: Decimal | None
    delta: Decimal | None
    difference: Decimal | None
    amount_delta: Decimal | None
    amount_difference: Decimal | None
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class TankBook:
    """One tank's wet-stock book over the period, litres at 15 °C. `basis`: `kept` (the
    daemon's reconciliation of the day), `provisional` (worked out from the readings), `none`
    (no reading). `cumulative_variance` is the month's, for a day; a shift has only its own
    variance, held against its own limit."""

    tank: int
    name: str
    product: str
    capacity_l: Decimal
    basis: Basis
    opening: Decimal | None
    opening_at: datetime | None
    closing: Decimal | None
    closing_at: datetime | None
    deliveries: Decimal | None
    sales: Decimal | None
    variance: Decimal | None
    cumulative_variance: Decimal | None
    limit: Decimal | None
    flagged: bool | None


@dataclass(frozen=True, slots=True)
class LevelPoint:
    at: datetime
    net_l: Decimal


@dataclass(frozen=True, slots=True)
class DeliveryMark:
    delivery: int
    start_at: datetime
    end_at: datetime
    delivered_tc: Decimal
    level: Decimal | None  # the stock right after it, where the chart marks it


@dataclass(frozen=True, slots=True)
class TankLevels:
    """A tank's stock over the period (the opening reading first, at the period's start)."""

    tank: int
    name: str
    capacity_l: Decimal
    points: tuple[LevelPoint, ...]
    deliveries: tuple[DeliveryMark, ...]


@dataclass(frozen=True, slots=True)
class VariancePoint:
    day: date
    cumulative_variance: Decimal
    limit: Decimal
    flagged: bool
    kept: bool  # False: the report day worked out, not kept yet


@dataclass(frozen=True, slots=True)
class TankVariance:
    """A tank's cumulative variance through the month against its limit, day by day."""

    tank: int
    name: str
    month: date
    points: tuple[VariancePoint, ...]


@dataclass(frozen=True)
class Report:
    station_id: str
    station_name: str
    currency: str
    period: Period
    generated_at: datetime
    timezone: str  # the local time zone the report's times and hours are in
    source: str
    total: Sum
    by_grade: tuple[Sum, ...]
    by_pump: tuple[Sum, ...]
    by_source: tuple[Sum, ...]
    hours: tuple[HourSales, ...]
    nozzle_checks: tuple[NozzleCheck, ...]
    deliveries: tuple[DeliveryRecord, ...]
    tanks: tuple[TankBook, ...]
    levels: tuple[TankLevels, ...]
    variance: tuple[TankVariance, ...]
    alarms: tuple[AlarmRecord, ...]
    grades: tuple[GradeInfo, ...]
    findings: tuple[str, ...] = field(default=())

    @property
    def grade_names(self) -> dict[str, str]:
        return {g.id: g.name for g in self.grades}


# --------------------------------------------------------------------------- building


def build(records: Records, *, tz: tzinfo | None = None) -> Report:
    """The report of `records`. `tz` is the time zone of its hours and dates (None: the
    machine's local zone, as the daily reconciliation uses)."""
    period = records.period
    money = Decimal(1).scaleb(-records.money_places)
    sales = [s for s in records.sales if _within(s.ended_at, period)]
    grades = _grades(records, sales)
    names = {g.id: g.name for g in grades}
    total = _sum("all", "all sales", sales, money)
    by_grade = tuple(
        _sum(g.id, g.name, [s for s in sales if s.grade == g.id], money)
        for g in grades
        if any(s.grade == g.id for s in sales)
    )
    by_pump = tuple(
        _sum(str(pump), f"pump {pump}", [s for s in sales if s.pump == pump], money)
        for pump in sorted({s.pump for s in sales})
    )
    by_source = tuple(
        _sum(source, SOURCE_NAMES[source], [s for s in sales if _source(s) == source], money)
        for source in SOURCES
        if source != "none" or any(_source(s) == "none" for s in sales)
    )
    deliveries = tuple(
        sorted(
            (d for d in records.deliveries if _within(d.end_at, period)),
            key=lambda d: (d.end_at, d.id),
        )
    )
    books = _books(records, sales, deliveries)
    report = Report(
        station_id=records.station_id,
        station_name=records.station_name,
        currency=records.currency,
        period=period,
        generated_at=records.generated_at,
        timezone=_zone_name(period.start, tz),
        source=records.source,
        total=total,
        by_grade=by_grade,
        by_pump=by_pump,
        by_source=by_source,
        hours=_hours(period, sales, [g.id for g in grades], money, tz),
        nozzle_checks=_nozzle_checks(records, sales, names, money),
        deliveries=deliveries,
        tanks=books,
        levels=_levels(records, deliveries),
        variance=_variance(records, books, tz),
        alarms=tuple(
            sorted(
                (a for a in records.alarms if _alarm_within(a, period)),
                key=lambda a: (a.raised_at, a.id or 0),
            )
        ),
        grades=tuple(grades),
    )
    return _with_findings(report)


def _within(moment: datetime, period: Period) -> bool:
    return period.start < moment <= period.end


def _alarm_within(alarm: AlarmRecord, period: Period) -> bool:
    """Raised before the period ended and not cleared before it began."""
    if alarm.raised_at > period.end:
        return False
    return alarm.cleared_at is None or alarm.cleared_at >= period.start


def _source(sale: SaleRecord) -> str:
    return sale.source if sale.source in SOURCES else "none"


def _grades(records: Records, sales: Sequence[SaleRecord]) -> list[GradeInfo]:
    """The configured grades in their order, then any other grade a sale names."""
    known = list(records.grades)
    ids = {g.id for g in known}
    for grade in sorted({s.grade for s in sales} - ids):
        known.append(GradeInfo(grade, grade))
    return known


def _sum(key: str, name: str, sales: Sequence[SaleRecord], money: Decimal) -> Sum:
    return Sum(
        key=key,
        name=name,
        sales=len(sales),
        litres=litres(sum((s.volume for s in sales), ZERO)),
        amount=sum((s.amount for s in sales), ZERO).quantize(money),
    )


def _local(moment: datetime, tz: tzinfo | None) -> datetime:
    return moment.astimezone(tz)


def _zone_name(moment: datetime, tz: tzinfo | None) -> str:
    local = _local(moment, tz)
    offset = local.strftime("%z")
    name = local.tzname() or ""
    utc = f"UTC{offset[:3]}:{offset[3:]}" if offset else "UTC"
    return utc if not name or name.startswith(("UTC", "+", "-")) else f"{name}, {utc}"


def hour_starts(period: Period, tz: tzinfo | None = None) -> list[datetime]:
    """The local hours the period spans: from the hour its start falls in to the one its end
    falls in (24 for a day; 23 or 25 on the days the clocks change)."""
    first = _local(period.start, tz).replace(minute=0, second=0, microsecond=0)
    hours: list[datetime] = []
    moment = first
    while moment < period.end or not hours:
        hours.append(moment)
        moment = _local(moment.astimezone(UTC) + HOUR, tz)  # an hour of real time
    return hours


def _hours(
    period: Period,
    sales: Sequence[SaleRecord],
    grades: Sequence[str],
    money: Decimal,
    tz: tzinfo | None,
) -> tuple[HourSales, ...]:
    starts = hour_starts(period, tz)
    litres_by: list[dict[str, Decimal]] = [dict.fromkeys(grades, ZERO) for _ in starts]
    amounts = [ZERO] * len(starts)
    for sale in sales:
        # A sale at an hour's stroke ends that hour's fills (as a day ends at midnight).
        index = _bucket(sale.ended_at, starts)
        litres_by[index][sale.grade] = litres_by[index].get(sale.grade, ZERO) + sale.volume
        amounts[index] += sale.amount
    return tuple(
        HourSales(start, {g: litres(v) for g, v in by.items()}, amount.quantize(money))
        for start, by, amount in zip(starts, litres_by, amounts, strict=True)
    )


def _bucket(moment: datetime, starts: Sequence[datetime]) -> int:
    index = 0
    for i, start in enumerate(starts):
        if start < moment:
            index = i
    return index


# --------------------------------------------------------------------------- totals check


def _nozzle_checks(
    records: Records, sales: Sequence[SaleRecord], names: Mapping[str, str], money: Decimal
) -> tuple[NozzleCheck, ...]:
    nozzles: dict[tuple[int, int], str] = {(p, n): g for p, n, g in records.nozzles}
    for sale in sales:
        nozzles.setdefault((sale.pump, sale.nozzle), sale.grade)
    for totals in (records.totals_start or {}, records.totals_end or {}):
        for key, t in totals.items():
            nozzles.setdefault(key, t.grade or "?")
    checks = []
    for (pump, nozzle), grade in sorted(nozzles.items()):
        own = sorted((s for s in sales if (s.pump, s.nozzle) == (pump, nozzle)), key=lambda s: s.id)
        if records.totals_start is not None or records.totals_end is not None:
            checks.append(_shift_check(records, pump, nozzle, grade, own, money))
        else:
            checks.append(_sales_check(pump, nozzle, grade, own, money))
    return tuple(checks)


def _shift_check(
    records: Records,
    pump: int,
    nozzle: int,
    grade: str,
    sales: Sequence[SaleRecord],
    money: Decimal,
) -> NozzleCheck:
    start = (records.totals_start or {}).get((pump, nozzle))
    end = (records.totals_end or {}).get((pump, nozzle))
    sources = sorted({t.source for t in (start, end) if t is not None})
    basis = "shift totals" + (f" ({', '.join(sources)})" if sources else "")
    return _check(
        pump,
        nozzle,
        grade,
        basis,
        sales,
        money,
        volumes=(start.volume if start else None, end.volume if end else None),
        amounts=(start.amount if start else None, end.amount if end else None),
        totals_expected=True,
    )


def _sales_check(
    pump: int, nozzle: int, grade: str, sales: Sequence[SaleRecord], money: Decimal
) -> NozzleCheck:
    """From the first sale whose totals before it are known to the last whose totals after
    it are; the sales between them are held against the totals' move."""
    first = next((i for i, s in enumerate(sales) if s.total_volume_before is not None), None)
    last = next(
        (i for i in range(len(sales) - 1, -1, -1) if sales[i].total_volume_after is not None),
        None,
    )
    if first is None or last is None or last < first:
        return _check(pump, nozzle, grade, "sales' totals", sales, money, (None, None), None)
    window = sales[first : last + 1]
    return _check(
        pump,
        nozzle,
        grade,
        "sales' totals",
        window,
        money,
        volumes=(window[0].total_volume_before, window[-1].total_volume_after),
        amounts=(window[0].total_amount_before, window[-1].total_amount_after),
        counted=sales,
    )


def _check(
    pump: int,
    nozzle: int,
    grade: str,
    basis: str,
    sales: Sequence[SaleRecord],
    money: Decimal,
    volumes: tuple[Decimal | None, Decimal | None],
    amounts: tuple[Decimal | None, Decimal | None] | None,
    counted: Sequence[SaleRecord] | None = None,
    totals_expected: bool = False,
) -> NozzleCheck:
    """`sales` are held against the totals' move; `counted` (default: the same) are the
    nozzle's sales of the period, as the check reports them. `totals_expected`: a shift's
    nozzle without totals is "no totals" even without sales (a day's is "no sales")."""
    shown = sales if counted is None else counted
    sold = litres(sum((s.volume for s in sales), ZERO))
    sold_amount = sum((s.amount for s in sales), ZERO).quantize(money)
    start, end = volumes
    delta = difference = amount_delta = amount_difference = None
    if start is not None and end is not None:
        delta = litres(end - start)
        difference = litres(delta - sold)
    if amounts is not None and amounts[0] is not None and amounts[1] is not None:
        amount_delta = (amounts[1] - amounts[0]).quantize(money)
        amount_difference = (amount_delta - sold_amount).quantize(money)
    verdict: Verdict
    if delta is None:
        verdict = "no sales" if not shown and not totals_expected else "no totals"
    elif difference == 0 and not amount_difference:
        verdict = "ok"
    else:
        verdict = "mismatch"
    return NozzleCheck(
        pump=pump,
        nozzle=nozzle,
        grade=grade,
        basis=basis,
        sales=len(shown),
        sold=litres(sum((s.volume for s in shown), ZERO)),
        sold_amount=sum((s.amount for s in shown), ZERO).quantize(money),
        start=start,
        end=end,
        delta=delta,
        difference=difference,
        amount_delta=amount_delta,
        amount_difference=amount_difference,
        verdict=verdict,
    )


# --------------------------------------------------------------------------- wet stock


def _readings(records: Records, tank: int) -> list[Reading]:
    return sorted((r for r in records.readings if r.tank == tank), key=lambda r: r.at)


def _ends(readings: Sequence[Reading], period: Period) -> tuple[Reading, Reading] | None:
    """The opening and closing readings, as the daily reconciliation takes them: the last at
    or before the start (else the first within), the last within (else the last before)."""
    before = [r for r in readings if r.at <= period.start]
    within = [r for r in readings if period.start < r.at <= period.end]
    if not before and not within:
        return None
    opening = before[-1] if before else within[0]
    closing = within[-1] if within else before[-1]
    return opening, closing


def _books(
    records: Records, sales: Sequence[SaleRecord], deliveries: Sequence[DeliveryRecord]
) -> tuple[TankBook, ...]:
    period = records.period
    ends = {t.number: _ends(_readings(records, t.number), period) for t in records.tanks}
    kept = {(k.tank, k.day): k for k in records.kept_days}
    grade_of = {t.number: t.grade for t in records.tanks}
    books = []
    for tank in sorted(records.tanks, key=lambda t: t.number):
        found = ends[tank.number]
        opening, closing = found if found is not None else (None, None)
        day = kept.get((tank.number, period.day)) if period.day is not None else None
        if day is not None:
            books.append(_kept_book(tank, day, opening, closing))
            continue
        if opening is None or closing is None:
            books.append(_empty_book(tank))
            continue
        delivered = sum((d.delivered_tc for d in deliveries if d.tank == tank.number), ZERO)
        sold = sum((s.volume for s in sales if s.grade == tank.grade), ZERO)
        mates = {
            number: pair[1].product_l
            for number, pair in ends.items()
            if pair is not None and grade_of[number] == tank.grade
        }
        share = allocate(sold, mates)[tank.number] if sold else ZERO
        # Sales are metered at product temperature: to 15 °C with the closing factor.
        vcf = closing.net_l / closing.product_l if closing.product_l > 0 else Decimal(1)
        rec = reconcile(
            tank.number,
            period.day or _local(period.start, None).date(),
            opening=opening.net_l,
            closing=closing.net_l,
            deliveries=max(delivered, ZERO),
            sales=litres(share * vcf),
            allowance=tank.allowance_l,
            previous=_previous(records, tank.number, period) if period.kind == "day" else None,
        )
        books.append(_provisional_book(tank, rec, opening, closing, period.kind == "day"))
    return tuple(books)


def _previous(records: Records, tank: int, period: Period) -> Reconciliation | None:
    """The tank's last kept day before the report's, as `reconcile` carries its month on."""
    assert period.day is not None
    earlier = sorted(
        (k for k in records.kept_days if k.tank == tank and k.day < period.day),
        key=lambda k: k.day,
    )
    if not earlier:
        return None
    last = earlier[-1]
    return Reconciliation(
        tank=tank,
        day=last.day,
        opening=ZERO,
        deliveries=ZERO,
        sales=ZERO,
        closing=ZERO,
        period_throughput_before=last.period_throughput,
        cumulative_variance_before=last.cumulative_variance,
    )


def kept_limit(day: KeptDay, allowance: Decimal) -> Decimal:
    """What a kept day's cumulative variance may reach: 1 % of the month's throughput so far
    plus the tank's allowance (as `Reconciliation.limit`)."""
    return litres(day.period_throughput * THROUGHPUT_SHARE) + allowance


def _kept_book(
    tank: TankInfo, day: KeptDay, opening: Reading | None, closing: Reading | None
) -> TankBook:
    return TankBook(
        tank=tank.number,
        name=tank.name,
        product=tank.product,
        capacity_l=tank.capacity_l,
        basis="kept",
        opening=day.opening,
        opening_at=None if opening is None else opening.at,
        closing=day.closing,
        closing_at=None if closing is None else closing.at,
        deliveries=day.deliveries,
        sales=day.sales,
        variance=day.variance,
        cumulative_variance=day.cumulative_variance,
        limit=kept_limit(day, tank.allowance_l),
        flagged=day.flagged,
    )


def _provisional_book(
    tank: TankInfo, rec: Reconciliation, opening: Reading, closing: Reading, month: bool
) -> TankBook:
    return TankBook(
        tank=tank.number,
        name=tank.name,
        product=tank.product,
        capacity_l=tank.capacity_l,
        basis="provisional",
        opening=rec.opening,
        opening_at=opening.at,
        closing=rec.closing,
        closing_at=closing.at,
        deliveries=rec.deliveries,
        sales=rec.sales,
        variance=rec.variance,
        cumulative_variance=rec.cumulative_variance if month else None,
        limit=rec.limit if month else rec.day_limit,
        flagged=rec.flagged if month else rec.day_flagged,
    )


def _empty_book(tank: TankInfo) -> TankBook:
    return TankBook(
        tank=tank.number,
        name=tank.name,
        product=tank.product,
        capacity_l=tank.capacity_l,
        basis="none",
        opening=None,
        opening_at=None,
        closing=None,
        closing_at=None,
        deliveries=None,
        sales=None,
        variance=None,
        cumulative_variance=None,
        limit=None,
        flagged=None,
    )


def _levels(records: Records, deliveries: Sequence[DeliveryRecord]) -> tuple[TankLevels, ...]:
    period = records.period
    series = []
    for tank in sorted(records.tanks, key=lambda t: t.number):
        readings = _readings(records, tank.number)
        before = [r for r in readings if r.at <= period.start]
        within = [r for r in readings if period.start < r.at <= period.end]
        points = [LevelPoint(period.start, before[-1].net_l)] if before else []
        points += [LevelPoint(r.at, r.net_l) for r in within]
        marks = tuple(
            DeliveryMark(d.id, d.start_at, d.end_at, d.delivered_tc, _level_at(points, d.end_at))
            for d in deliveries
            if d.tank == tank.number
        )
        series.append(TankLevels(tank.number, tank.name, tank.capacity_l, tuple(points), marks))
    return tuple(series)


def _level_at(points: Sequence[LevelPoint], moment: datetime) -> Decimal | None:
    """The stock at `moment`: the first reading from then on, else the last before."""
    after = [p for p in points if p.at >= moment]
    if after:
        return after[0].net_l
    return points[-1].net_l if points else None


def _variance(
    records: Records, books: Sequence[TankBook], tz: tzinfo | None
) -> tuple[TankVariance, ...]:
    """Each tank's month: its kept days to the report's last day, and the report day itself
    as worked out when it is not kept yet."""
    period = records.period
    last_day = period.day or _local(period.end, tz).date()
    month = last_day.replace(day=1)
    allowances = {t.number: t.allowance_l for t in records.tanks}
    series = []
    for tank in sorted(records.tanks, key=lambda t: t.number):
        days = sorted(
            (k for k in records.kept_days if k.tank == tank.number and month <= k.day <= last_day),
            key=lambda k: k.day,
        )
        points = [
            VariancePoint(
                k.day,
                k.cumulative_variance,
                kept_limit(k, allowances[tank.number]),
                k.flagged,
                kept=True,
            )
            for k in days
        ]
        book = next((b for b in books if b.tank == tank.number), None)
        if (
            period.kind == "day"
            and book is not None
            and book.basis == "provisional"
            and book.cumulative_variance is not None
            and book.limit is not None
        ):
            points.append(
                VariancePoint(
                    last_day, book.cumulative_variance, book.limit, bool(book.flagged), False
                )
            )
        series.append(TankVariance(tank.number, tank.name, month, tuple(points)))
    return tuple(series)


# --------------------------------------------------------------------------- findings


def _with_findings(report: Report) -> Report:
    """What a manager should look at first, one sentence each."""
    found: list[str] = []
    for check in report.nozzle_checks:
        if check.verdict == "mismatch":
            found.append(
                f"pump {check.pump} nozzle {check.nozzle}: totals moved {check.delta} L,"
                f" sales {check.sold} L (difference {check.difference} L)"
            )
    for book in report.tanks:
        if book.flagged:
            what = "cumulative variance" if book.cumulative_variance is not None else "variance"
            value = (
                book.cumulative_variance
                if book.cumulative_variance is not None
                else (book.variance)
            )
            found.append(
                f"tank {book.tank}: {what} {value} L is beyond its limit of {book.limit} L"
            )
    critical = [a for a in report.alarms if a.severity == "critical"]
    if critical:
        found.append(f"{len(critical)} critical alarm(s) in the period")
    open_ = [a for a in report.alarms if a.cleared_at is None]
    if open_:
        found.append(f"{len(open_)} alarm(s) still active")
    return replace(report, findings=tuple(found))


def grades_in(hours: Iterable[HourSales]) -> list[str]:
    """The grades with any litres in these hours, in the hours' own order."""
    seen: list[str] = []
    for hour in hours:
        for grade, value in hour.litres.items():
            if value and grade not in seen:
                seen.append(grade)
    return seen
