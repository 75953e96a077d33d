"""A report's records, read from the store (`StoreReader`, read-only) and the config: the
period of a local day or of a shift, and the rows that fall in it, as `model.Records`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from edgectl.config import Config
from edgectl.errors import EdgectlError
from edgectl.reports.model import (
    AlarmRecord,
    DeliveryRecord,
    GradeInfo,
    KeptDay,
    NozzleTotals,
    Period,
    Reading,
    Records,
    SaleRecord,
    TankInfo,
)
from edgectl.store.store import StoreReader


class NoSuchShift(EdgectlError):
    code = "unknown_shift"


def moment(stamp: str) -> datetime:
    """A stored ISO time as an aware datetime (a time without offset is UTC)."""
    parsed = datetime.fromisoformat(stamp)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def local_midnight(day: date, tz: tzinfo | None = None) -> datetime:
    """The start of a local day (as the daily reconciliation cuts days), in UTC."""
    if tz is None:
        return datetime.combine(day, time()).astimezone().astimezone(UTC)
    return datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)


def day_period(day: date, tz: tzinfo | None = None) -> Period:
    start, end = local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz)
    return Period("day", start, end, f"Day report {day.isoformat()}", day=day)


def shift_period(shift: Mapping[str, Any], now: datetime) -> Period:
    running = shift["closed_at"] is None
    end = now if running else moment(shift["closed_at"])
    return Period(
        "shift",
        moment(shift["opened_at"]),
        end,
        f"Shift report {shift['id']}" + (" (open)" if running else ""),
        shift=int(shift["id"]),
        opened_by=shift["opened_by"],
        closed_by=shift["closed_by"],
        running=running,
    )


def day_records(
    reader: StoreReader,
    config: Config,
    day: date,
    *,
    now: datetime,
    tz: tzinfo | None = None,
    source: str = "",
) -> Records:
    return _records(reader, config, day_period(day, tz), now=now, source=source)


def shift_records(
    reader: StoreReader,
    config: Config,
    shift_id: int | None,
    *,
    now: datetime,
    source: str = "",
) -> Records:
    """The records of shift `shift_id` (None: the open shift, else the last one). An open
    shift runs to `now`, its closing totals the store's last ones."""
    shift = reader.shift(shift_id)
    if shift is None:
        if shift_id is None:
            raise NoSuchShift("no shift recorded yet (edgectl shift open starts one)")
        raise NoSuchShift(f"no shift {shift_id} (edgectl shift list shows them)")
    period = shift_period(shift, now)
    start = _totals(shift["open_totals"])
    if period.running:
        end = {
            (int(r["pump"]), int(r["nozzle"])): NozzleTotals(
                int(r["pump"]),
                int(r["nozzle"]),
                Decimal(r["volume"]),
                Decimal(r["amount"]),
                "store",
                moment(r["updated_at"]),
            )
            for r in reader.nozzle_totals()
        }
    else:
        end = _totals(shift["close_totals"])
    return _records(
        reader, config, period, now=now, source=source, totals_start=start, totals_end=end
    )


def _totals(rows: list[dict[str, Any]]) -> dict[tuple[int, int], NozzleTotals]:
    return {
        (int(r["pump"]), int(r["nozzle"])): NozzleTotals(
            int(r["pump"]),
            int(r["nozzle"]),
            None if r["volume"] is None else Decimal(r["volume"]),
            None if r["amount"] is None else Decimal(r["amount"]),
            str(r["source"]),
            None if r["read_at"] is None else moment(r["read_at"]),
            r["grade"],
        )
        for r in rows
    }


def _records(
    reader: StoreReader,
    config: Config,
    period: Period,
    *,
    now: datetime,
    source: str,
    totals_start: Mapping[tuple[int, int], NozzleTotals] | None = None,
    totals_end: Mapping[tuple[int, int], NozzleTotals] | None = None,
) -> Records:
    rows = reader.period_rows(_iso(period.start), _iso(period.end))
    names = {g.id: g.name for g in config.grades}
    return Records(
        station_id=config.station.id,
        station_name=config.station.name,
        currency=config.station.currency,
        period=period,
        generated_at=now,
        grades=tuple(GradeInfo(g.id, g.name) for g in config.grades),
        tanks=tuple(
            TankInfo(
                t.number,
                t.name,
                t.grade,
                names.get(t.grade, t.grade),
                t.capacity_l,
                t.reconciliation_limit_l,
            )
            for t in config.tanks
        ),
        nozzles=tuple(
            (p.number, nozzle, grade) for p in config.pumps for nozzle, grade in p.nozzles.items()
        ),
        sales=tuple(_sale(r) for r in rows["sales"]),
        readings=tuple(
            Reading(int(r["tank"]), moment(r["at"]), Decimal(r["net_l"]), Decimal(r["product_l"]))
            for r in rows["readings"]
        ),
        deliveries=tuple(
            DeliveryRecord(
                int(r["id"]),
                int(r["tank"]),
                str(r["source"]),
                moment(r["start_at"]),
                moment(r["end_at"]),
                Decimal(r["delivered"]),
                Decimal(r["delivered_tc"]),
            )
            for r in rows["deliveries"]
        ),
        kept_days=tuple(
            KeptDay(
                int(r["tank"]),
                date.fromisoformat(r["day"]),
                Decimal(r["opening"]),
                Decimal(r["deliveries"]),
                Decimal(r["sales"]),
                Decimal(r["closing"]),
                Decimal(r["variance"]),
                Decimal(r["cumulative_variance"]),
                Decimal(r["period_throughput"]),
                bool(r["flagged"]),
            )
            for r in rows["reconciliations"]
        ),
        alarms=tuple(_alarm(r) for r in rows["alarms"]),
        totals_start=totals_start,
        totals_end=totals_end,
        money_places=max((g.amount_decimals for g in config.grades), default=2),
        source=source,
    )


def _sale(row: Mapping[str, Any]) -> SaleRecord:
    source = row.get("authorized_by") or ("cloud" if row.get("order_id") else "none")
    return SaleRecord(
        id=int(row["id"]),
        pump=int(row["pump"]),
        nozzle=int(row["nozzle"]),
        grade=str(row["grade"]),
        volume=Decimal(row["volume"]),
        amount=Decimal(row["amount"]),
        ended_at=moment(row["ended_at"]),
        source=str(source),
        total_volume_before=_dec(row["total_volume_before"]),
        total_volume_after=_dec(row["total_volume_after"]),
        total_amount_before=_dec(row["total_amount_before"]),
        total_amount_after=_dec(row["total_amount_after"]),
    )


def _alarm(row: Mapping[str, Any]) -> AlarmRecord:
    try:
        detail = json.loads(row.get("detail") or "{}")
    except ValueError:
        detail = {}
    tank = detail.get("tank") if isinstance(detail, dict) else None
    return AlarmRecord(
        id=row["id"],
        kind=str(row["kind"]),
        severity=str(row["severity"]),
        message=str(row["message"]),
        raised_at=moment(row["raised_at"]),
        cleared_at=None if row["cleared_at"] is None else moment(row["cleared_at"]),
        pump=row["pump"],
        nozzle=row["nozzle"],
        tank=tank if isinstance(tank, int) and not isinstance(tank, bool) else None,
    )


def _dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
