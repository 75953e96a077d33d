"""Each nozzle's electronic totals at this moment, for a shift's opening or closing.

The running station asks every pump that is online and idle (no authorization, no fill, the
dispenser at rest) for its nozzles' totals, one pump at a time under that pump's own lock so
its task is not stepping meanwhile, and keeps them as the store's new base the way a pump's
own check at start does (`Store.check_totals`: totals that moved with no sale raise
`missed_sale`). A pump that is busy, offline or does not answer within `PUMP_TIMEOUT_S`
gives the store's last totals instead; each nozzle says which (`source`: `pump`, `store`, or
`none` for a nozzle whose totals were never read) and when they were read.

Without the daemon the CLI takes the store's last totals itself (`stored_totals`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from drivers.base import DispenserStatus
from edgectl.config import Config
from edgectl.errors import EdgectlError
from edgectl.store.store import StoreReader, utc_now

if TYPE_CHECKING:
    from edgectl.station import PumpService, Station

PUMP_TIMEOUT_S: Final = 3.0


def summary(totals: Iterable[Mapping[str, Any]]) -> str:
    """Where a shift's totals came from, in words: pumps, store, or both."""
    sources = {str(t["source"]) for t in totals}
    if sources <= {"pump"}:
        return "asked of the pumps"
    if "pump" not in sources:
        return "the store's last recorded totals"
    return "asked of the idle pumps, the store's last recorded for the others"


def result(
    moment: str, shift: Mapping[str, Any], totals: list[dict[str, Any]], source: str
) -> dict[str, Any]:
    """The answer to a shift's opening or closing, the daemon's or the CLI's own."""
    verb = "opened" if moment == "open" else "closed"
    where = summary(totals)
    if source != "daemon":
        where += " (the daemon is not running)"
    return {
        "message": f"shift {shift['id']} {verb}; nozzle totals: {where}",
        "shift": shift,
        "totals": totals,
        "totals_from": where,
        "source": source,
    }


def stored_totals(reader: StoreReader, config: Config) -> list[dict[str, Any]]:
    """Every configured nozzle's last totals in the store (source `store`, or `none`)."""
    kept = {(int(r["pump"]), int(r["nozzle"])): r for r in reader.nozzle_totals()}
    rows = []
    for pump in config.pumps:
        for nozzle, grade in sorted(pump.nozzles.items()):
            rows.append(_stored(pump.number, nozzle, grade, kept.get((pump.number, nozzle))))
    return rows


def _stored(pump: int, nozzle: int, grade: str, row: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "pump": pump,
        "nozzle": nozzle,
        "grade": grade,
        "volume": None if row is None else Decimal(row["volume"]),
        "amount": None if row is None else Decimal(row["amount"]),
        "source": "none" if row is None else "store",
        "read_at": None if row is None else row["updated_at"],
    }


async def totals_now(station: Station) -> list[dict[str, Any]]:
    """Every configured nozzle's totals now: asked of the idle pumps, else the store's."""
    services = list(station.points.values())
    asked = await asyncio.gather(*(_ask(station, service) for service in services))
    reader = station.store.reader
    kept = {(int(r["pump"]), int(r["nozzle"])): r for r in await station.db(reader.nozzle_totals)}
    rows = []
    for service, read in zip(services, asked, strict=True):
        number = service.pump.number
        for nozzle, grade in sorted(service.pump.nozzles.items()):
            if nozzle in read:
                volume, amount, at = read[nozzle]
                rows.append(
                    {
                        "pump": number,
                        "nozzle": nozzle,
                        "grade": grade,
                        "volume": volume,
                        "amount": amount,
                        "source": "pump",
                        "read_at": at,
                    }
                )
            else:
                rows.append(_stored(number, nozzle, grade, kept.get((number, nozzle))))
    return rows


def _idle(service: PumpService) -> bool:
    return (
        service.online
        and service.status is DispenserStatus.RESET
        and service.auth is None
        and service.fill_in_progress() is None
        and not service.stopping
    )


async def _ask(station: Station, service: PumpService) -> dict[int, tuple[Decimal, Decimal, str]]:
    """The nozzles' totals of one idle pump, each kept as the store's new base; the nozzles
    read before a failure or the timeout, nothing from a busy pump."""
    read: dict[int, tuple[Decimal, Decimal, str]] = {}
    if not _idle(service):
        return read
    number = service.pump.number
    try:
        async with asyncio.timeout(PUMP_TIMEOUT_S), service.lock:
            if not _idle(service):
                return read
            for nozzle in sorted(service.pump.nozzles):
                volume, amount = await service.line.totals(service.address, nozzle)
                await station.db(station.store.check_totals, number, nozzle, volume, amount)
                read[nozzle] = (volume, amount, utc_now())
    except (TimeoutError, EdgectlError) as exc:
        service.log.warning("shift_totals_unread", error=str(exc) or type(exc).__name__)
    return read
