"""JSON shapes the daemon answers with that the CLI also builds itself when the daemon is down.

A tank row is the same whether it comes live from the daemon or from the config alone, so a
script reads one shape: what only a running daemon knows (online, the last reading, alarms)
is null without it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from edgectl.config import Config

if TYPE_CHECKING:
    from edgectl.tank_service import TankView

# The figures of a reading, named as in the store's tank readings and the cloud's inventory.
READING_FIELDS = (
    "height_mm",
    "water_mm",
    "temperature_c",
    "gross_l",
    "product_l",
    "net_l",
    "ullage_l",
    "fill_pct",
)


def tank_rows(
    config: Config,
    views: Iterable[TankView] = (),
    *,
    stored_alarms: Mapping[int, Sequence[str]] | None = None,
    stored_readings: Mapping[int, Mapping[str, Any]] | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Every configured tank in number order, with what the tank service knows of it now.

    `alarms` are the tank's active alarms by name: those of its view, then those the store
    holds open that the view does not know (the gauge's own, `gauge_<name>`). Without a view
    (the daemon is down, or has not read the tank's gauge yet) `online` and `implausible` are
    null; the reading's figures are then those of `stored_readings` (the store's last kept
    reading of each tank, `StoreReader.tank_latest`) or null; `alarms` are null when nothing
    is known of them.
    """
    live = {view.number: view for view in views}
    products = {grade.id: grade.name for grade in config.grades}
    moment = now or datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for tank in sorted(config.tanks, key=lambda t: t.number):
        view = live.get(tank.number)
        kept = (
            None
            if view is not None or stored_readings is None
            else stored_readings.get(tank.number)
        )
        at = view.reading_at if view is not None else _moment(kept["at"]) if kept else None
        row: dict[str, Any] = {
            "tank": tank.number,
            "name": tank.name,
            "grade": tank.grade,
            "product": products.get(tank.grade, tank.grade),
            "capacity_l": tank.capacity_l,
            "gauge": tank.gauge,
            "gauge_tank": tank.gauge_tank,
            "online": None if view is None else view.online,
            "reading_at": None if at is None else _stamp(at),
            "reading_age_s": None if at is None else round((moment - at).total_seconds(), 1),
        }
        for name in READING_FIELDS:
            if view is not None:
                row[name] = getattr(view, name)
            else:
                row[name] = None if kept is None else kept.get(name)
        stored = None if stored_alarms is None else stored_alarms.get(tank.number, ())
        if view is None and stored is None:
            row["alarms"] = None
        else:
            known = [] if view is None else list(view.alarms)
            row["alarms"] = known + [name for name in stored or () if name not in known]
        row["implausible"] = None if view is None else view.implausible
        rows.append(row)
    return rows


def open_tank_alarms(alarms: Iterable[Mapping[str, Any]]) -> dict[int, list[str]]:
    """Open alarm rows of the store (`StoreReader.alarms`) by tank: each tank's alarm names,
    `tank_` taken off the kind, in the order they were raised."""
    found: dict[int, list[str]] = {}
    for alarm in alarms:
        kind = str(alarm["kind"])
        if not kind.startswith("tank_") or alarm.get("cleared_at") is not None:
            continue
        try:
            detail = json.loads(alarm.get("detail") or "{}")
        except ValueError:
            continue
        tank = detail.get("tank") if isinstance(detail, dict) else None
        if isinstance(tank, int) and not isinstance(tank, bool):
            names = found.setdefault(tank, [])
            if kind.removeprefix("tank_") not in names:
                names.append(kind.removeprefix("tank_"))
    return found


def _moment(stamp: str) -> datetime:
    moment = datetime.fromisoformat(stamp)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
