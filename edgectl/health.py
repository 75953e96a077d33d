"""The station's health verdict (`edgectl health`, `edgectl status`): rules over one snapshot.

`evaluate` is a pure function of a `HealthSnapshot`; each rule is written out in
docs/operations.md. Where a fault has an alarm (a device offline, a failed backup, a store
that cannot write) the verdict comes from the open alarms, so there is one source of truth;
the other rules look at what no alarm covers (the daemon itself, the cloud link, ages, the
disk, the clock). `gather_store` and `gather_files` read what the rules need, with the
daemon or without it.
"""

from __future__ import annotations

import enum
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgectl.config import Config, HealthConfig
from edgectl.store.backups import list_backups
from edgectl.store.store import StoreReader

CLOCK_EARLIEST = datetime(2024, 1, 1, tzinfo=UTC)  # before this, the clock was never set
# The other thresholds are `[health]` in the config (config.HealthConfig, docs/operations.md).


class Status(enum.IntEnum):
    """Monitoring-plugin exit codes."""

    OK = 0
    DEGRADED = 1
    CRITICAL = 2

    @property
    def word(self) -> str:
        return ("OK", "WARNING", "CRITICAL")[self.value]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    text: str


@dataclass(frozen=True, slots=True)
class Devices:
    """Configured and working devices of one kind (from the running daemon)."""

    total: int
    online: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthSnapshot:
    """What the rules look at, at `now`. None: not known (the daemon is down)."""

    now: datetime
    daemon_up: bool
    daemon_detail: str | None = None
    uptime_s: float | None = None
    store_error: str | None = None  # why the store cannot be written
    alarms: Sequence[dict[str, Any]] = ()  # the open alarms
    pumps: Devices | None = None
    lines: Devices | None = None
    gauges: Devices | None = None
    cloud_configured: bool = False
    cloud_connected: bool | None = None
    cloud_outage_s: float | None = None
    outbox_depth: int = 0
    outbox_oldest_age_s: float | None = None
    backup_interval_h: float = 24.0
    last_backup_age_s: float | None = None
    disk_free_bytes: int | None = None
    disk_total_bytes: int | None = None
    newest_record_at: datetime | None = None
    rules: HealthConfig = field(default_factory=HealthConfig)  # the station's `[health]`


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    checks: tuple[Check, ...]
    summary: str = field(default="")

    @property
    def line(self) -> str:
        """The monitoring plugin's one line: `EDGECTL OK - 4/4 pumps online, …`."""
        return f"EDGECTL {self.status.word} - {self.summary}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.name.lower(),
            "code": int(self.status),
            "line": self.line,
            "checks": [
                {"name": c.name, "status": c.status.name.lower(), "text": c.text}
                for c in self.checks
            ],
        }


def evaluate(snap: HealthSnapshot) -> Verdict:
    """Every rule over `snap`; the verdict is the worst of them."""
    checks = [
        _daemon(snap),
        _store(snap),
        *_alarms(snap),
        *_devices(snap),
        _cloud(snap),
        _outbox(snap),
        _backup(snap),
        _disk(snap),
        _clock(snap),
    ]
    kept = tuple(c for c in checks if c is not None)
    status = max((c.status for c in kept), default=Status.OK)
    problems = [c.text for c in sorted(kept, key=lambda c: -c.status) if c.status]
    fine = [c.text for c in kept if not c.status and c.name != "alarms"]
    return Verdict(
        status, kept, "; ".join(problems) + (" | " if problems else "") + ", ".join(fine)
    )


# ---------------------------------------------------------------------------- the rules
def _daemon(snap: HealthSnapshot) -> Check:
    if not snap.daemon_up:
        why = f" ({snap.daemon_detail})" if snap.daemon_detail else ""
        return Check("daemon", Status.CRITICAL, f"daemon not running{why}")
    up = "" if snap.uptime_s is None else f" for {_ago(snap.uptime_s)}"
    return Check("daemon", Status.OK, f"daemon up{up}")


def _store(snap: HealthSnapshot) -> Check | None:
    if snap.store_error is not None:
        return Check("store", Status.CRITICAL, f"store not writable: {snap.store_error}")
    return None


def _alarms(snap: HealthSnapshot) -> list[Check]:
    """Each open alarm: a critical one makes the station critical, any other degraded."""
    checks = []
    for alarm in snap.alarms:
        if alarm.get("kind") == "store_unwritable" and snap.store_error is not None:
            continue  # said by the store rule already
        status = Status.CRITICAL if alarm.get("severity") == "critical" else Status.DEGRADED
        checks.append(Check("alarms", status, f"{alarm.get('kind')}: {alarm.get('message')}"))
    if not checks:
        checks.append(Check("alarms", Status.OK, "no active alarms"))
    return checks


def _devices(snap: HealthSnapshot) -> list[Check]:
    """The devices' counts, for the line (their faults are alarms: see _alarms)."""
    checks = []
    for name, devices, word in (
        ("pumps", snap.pumps, "pumps online"),
        ("lines", snap.lines, "lines up"),
        ("gauges", snap.gauges, "gauges online"),
    ):
        if devices is not None and devices.total:
            checks.append(Check(name, Status.OK, f"{devices.online}/{devices.total} {word}"))
    return checks


def _cloud(snap: HealthSnapshot) -> Check | None:
    if not snap.cloud_configured or snap.cloud_connected is None:
        return None
    if snap.cloud_connected:
        return Check("cloud", Status.OK, "cloud connected")
    outage = snap.cloud_outage_s or 0.0
    if outage > snap.rules.cloud_outage_budget_s:
        return Check("cloud", Status.DEGRADED, f"cloud link down for {_ago(outage)}")
    return Check("cloud", Status.OK, f"cloud reconnecting ({_ago(outage)})")


def _outbox(snap: HealthSnapshot) -> Check | None:
    if not snap.cloud_configured:
        return None  # without a link the outbox only keeps events for one to come
    age = snap.outbox_oldest_age_s
    if not snap.outbox_depth or age is None:
        return Check("outbox", Status.OK, "outbox empty")
    text = f"outbox {snap.outbox_depth}, oldest {_ago(age)} old"
    if age > snap.rules.outbox_critical_s:
        return Check("outbox", Status.CRITICAL, text)
    if age > snap.rules.outbox_degraded_s:
        return Check("outbox", Status.DEGRADED, text)
    return Check("outbox", Status.OK, text)


def _backup(snap: HealthSnapshot) -> Check | None:
    interval_s = snap.backup_interval_h * 3600
    if interval_s <= 0:
        return None
    age = snap.last_backup_age_s
    if age is None:
        if snap.uptime_s is not None and snap.uptime_s < interval_s:
            return Check("backup", Status.OK, "no backup yet")
        return Check("backup", Status.DEGRADED, "no backup taken")
    if age > snap.rules.backup_late_factor * interval_s:
        return Check("backup", Status.DEGRADED, f"last backup {_ago(age)} ago")
    return Check("backup", Status.OK, f"last backup {_ago(age)} ago")


def _disk(snap: HealthSnapshot) -> Check | None:
    free, total = snap.disk_free_bytes, snap.disk_total_bytes
    if free is None or not total:
        return None
    text = f"disk {free * 100 // total}% free ({free // 2**20} MB)"
    rules = snap.rules
    if free < rules.disk_critical_mb * 2**20:
        return Check("disk", Status.CRITICAL, text)
    if free < rules.disk_degraded_mb * 2**20 or free < rules.disk_degraded_pct / 100 * total:
        return Check("disk", Status.DEGRADED, text)
    return Check("disk", Status.OK, text)


def _clock(snap: HealthSnapshot) -> Check:
    if snap.now < CLOCK_EARLIEST:
        return Check("clock", Status.CRITICAL, f"clock not set ({snap.now:%Y-%m-%d})")
    newest = snap.newest_record_at
    ahead = 0.0 if newest is None else (newest - snap.now).total_seconds()
    if ahead > snap.rules.clock_behind_s:
        return Check(
            "clock",
            Status.DEGRADED,
            f"clock went back: the store has records from {_ago(ahead)} in the future",
        )
    return Check("clock", Status.OK, "clock sane")


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


# ---------------------------------------------------------------------------- gathering
def gather_store(reader: StoreReader, now: datetime) -> dict[str, Any]:
    """The snapshot's fields the store answers: open alarms, outbox, newest record."""
    outbox = reader.outbox_summary()
    return {
        "alarms": reader.alarms(active_only=True),
        "outbox_depth": int(outbox["depth"]),
        "outbox_oldest_age_s": _age(outbox["oldest_at"], now),
        "newest_record_at": _parse(reader.newest_record_at()),
    }


def gather_files(config: Config, now: datetime) -> dict[str, Any]:
    """The fields the file system answers: the newest backup, the store's disk."""
    ours = [b for b in list_backups(config.store.backups) if b.station == config.station.id]
    fields: dict[str, Any] = {
        "rules": config.health,
        "backup_interval_h": config.store.backup_interval_h,
        "last_backup_age_s": (now - ours[-1].taken_at).total_seconds() if ours else None,
    }
    try:
        usage = shutil.disk_usage(config.store.path.parent)
    except OSError:
        return fields
    fields["disk_free_bytes"], fields["disk_total_bytes"] = usage.free, usage.total
    return fields


def store_write_problem(path: Path) -> str | None:
    """Without the daemon: would its user be refused writing the store (as this user)?"""
    for target in (path.parent, path):
        if target.exists() and not os.access(target, os.W_OK):
            return f"{target} cannot be written"
    return None


def _parse(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _age(stamp: str | None, now: datetime) -> float | None:
    moment = _parse(stamp)
    return None if moment is None else (now - moment).total_seconds()
