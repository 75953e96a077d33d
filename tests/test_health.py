"""The health rules (edgectl/health.py), one by one, over hand-made snapshots."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edgectl.config import HealthConfig
from edgectl.health import Devices, HealthSnapshot, Status, evaluate

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
HEALTHY = HealthSnapshot(
    now=NOW,
    daemon_up=True,
    uptime_s=3600,
    pumps=Devices(4, 4),
    lines=Devices(1, 1),
    gauges=Devices(1, 1),
    cloud_configured=True,
    cloud_connected=True,
    last_backup_age_s=3 * 3600,
    disk_free_bytes=50 * 2**30,
    disk_total_bytes=100 * 2**30,
    newest_record_at=NOW - timedelta(seconds=5),
)


def check(snap: HealthSnapshot, name: str) -> tuple[Status, str]:
    verdict = evaluate(snap)
    (found,) = [c for c in verdict.checks if c.name == name]
    return found.status, found.text


def test_a_healthy_station_is_ok_in_one_line() -> None:
    verdict = evaluate(HEALTHY)
    assert verdict.status is Status.OK
    assert verdict.line.startswith("EDGECTL OK - daemon up for 60 min, 4/4 pumps online,")
    assert "1/1 lines up" in verdict.line and "cloud connected" in verdict.line
    assert verdict.as_dict()["code"] == 0


def test_a_daemon_down_is_critical() -> None:
    snap = replace(HEALTHY, daemon_up=False, daemon_detail="nothing on /run/edgectl/x.sock")
    assert check(snap, "daemon")[0] is Status.CRITICAL
    assert evaluate(snap).line.startswith("EDGECTL CRITICAL - daemon not running (nothing on")


def test_a_store_that_cannot_write_is_critical_said_once() -> None:
    unwritable = {"kind": "store_unwritable", "severity": "critical", "message": "disk full"}
    snap = replace(HEALTHY, store_error="the disk is full", alarms=[unwritable])
    verdict = evaluate(snap)
    assert verdict.status is Status.CRITICAL
    assert verdict.line.count("disk") == 2  # the store's reason, and the disk's free space


@pytest.mark.parametrize(
    ("severity", "status"), [("critical", Status.CRITICAL), ("warning", Status.DEGRADED)]
)
def test_an_open_alarm_sets_the_verdict_by_its_severity(severity: str, status: Status) -> None:
    alarm: dict[str, Any] = {"kind": "pump_offline", "severity": severity, "message": "pump 2"}
    verdict = evaluate(replace(HEALTHY, alarms=[alarm]))
    assert verdict.status is status
    assert "pump_offline: pump 2" in verdict.line


def test_the_cloud_link_has_an_outage_budget() -> None:
    short = replace(HEALTHY, cloud_connected=False, cloud_outage_s=60)
    assert check(short, "cloud") == (Status.OK, "cloud reconnecting (60 s)")
    long = replace(HEALTHY, cloud_connected=False, cloud_outage_s=3600)
    assert check(long, "cloud") == (Status.DEGRADED, "cloud link down for 60 min")
    no_cloud = replace(HEALTHY, cloud_configured=False, cloud_connected=None)
    assert [c for c in evaluate(no_cloud).checks if c.name in ("cloud", "outbox")] == []


def test_the_outbox_oldest_age() -> None:
    assert check(replace(HEALTHY, outbox_depth=3, outbox_oldest_age_s=10), "outbox")[0] == 0
    late = replace(HEALTHY, outbox_depth=3, outbox_oldest_age_s=3600)
    assert check(late, "outbox")[0] is Status.DEGRADED
    stuck = replace(HEALTHY, outbox_depth=3, outbox_oldest_age_s=2 * 86400)
    assert check(stuck, "outbox")[0] is Status.CRITICAL


def test_the_last_backup_age() -> None:
    assert check(replace(HEALTHY, last_backup_age_s=47 * 3600), "backup")[0] is Status.OK
    late = replace(HEALTHY, last_backup_age_s=49 * 3600)
    assert check(late, "backup") == (Status.DEGRADED, "last backup 2 d ago")
    fresh = replace(HEALTHY, last_backup_age_s=None, uptime_s=600)
    assert check(fresh, "backup") == (Status.OK, "no backup yet")
    never = replace(HEALTHY, last_backup_age_s=None, uptime_s=30 * 3600)
    assert check(never, "backup")[0] is Status.DEGRADED
    off = replace(HEALTHY, backup_interval_h=0)
    assert [c for c in evaluate(off).checks if c.name == "backup"] == []


def test_the_disk_free() -> None:
    gib = 2**30
    assert check(replace(HEALTHY, disk_free_bytes=5 * gib), "disk")[0] is Status.DEGRADED
    short = replace(HEALTHY, disk_free_bytes=50 * 2**20)
    assert check(short, "disk")[0] is Status.CRITICAL


def test_the_clock() -> None:
    unset = replace(HEALTHY, now=datetime(1970, 1, 1, tzinfo=UTC))
    assert check(unset, "clock")[0] is Status.CRITICAL
    back = replace(HEALTHY, newest_record_at=NOW + timedelta(hours=2))
    assert check(back, "clock") == (
        Status.DEGRADED,
        "clock went back: the store has records from 2 h in the future",
    )


def test_the_stations_own_thresholds_decide() -> None:
    """`[health]` tunes the rules: a station on a poor uplink allows a longer outage, one on
    a small disk a smaller free space (config.HealthConfig)."""
    down = replace(HEALTHY, cloud_connected=False, cloud_outage_s=40 * 60)
    assert check(down, "cloud")[0] is Status.DEGRADED  # the default budget is 15 min
    patient = replace(down, rules=HealthConfig(cloud_outage_budget_s=3600))
    assert check(patient, "cloud")[0] is Status.OK

    small = replace(HEALTHY, disk_free_bytes=300 * 2**20, disk_total_bytes=2 * 2**30)
    assert check(small, "disk")[0] is Status.DEGRADED
    tuned = HealthConfig(disk_degraded_mb=200, disk_critical_mb=50, disk_degraded_pct=5)
    assert check(replace(small, rules=tuned), "disk")[0] is Status.OK

    backlog = replace(HEALTHY, outbox_depth=3, outbox_oldest_age_s=2 * 3600)
    assert check(backlog, "outbox")[0] is Status.DEGRADED
    strict = HealthConfig(outbox_degraded_s=600, outbox_critical_s=3600)
    assert check(replace(backlog, rules=strict), "outbox")[0] is Status.CRITICAL
