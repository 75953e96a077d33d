"""`edgectl status` as people read it, from a status document (no daemon needed).

The daemon-level shape of `status` is tested in test_cli_station.py; here the rendering of
what a technician must see at a glance, including contract 1.1's per-stream sequences."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edgectl.cli import status as status_cli


def document(sequences: dict[str, dict[str, Any]]) -> dict[str, Any]:
    old = (datetime.now(UTC) - timedelta(minutes=7)).isoformat()
    return {
        "health": {"code": 0, "status": "ok", "line": "EDGECTL OK - all well"},
        "daemon": {
            "version": "1.0",
            "station": "TEST-01",
            "station_name": None,
            "uptime_s": 12.0,
            "pid": 42,
            "mode": "cloud",
            "config": "/etc/edgectl/station.toml",
            "store": "/var/lib/edgectl/edgectl.db",
        },
        "cloud": {
            "broker": "mqtt://broker:1883",
            "connected": True,
            "last_puback_age_s": 1.0,
            "last_error": None,
        },
        "outbox": {
            "depth": 3,
            "waiting": 1,
            "oldest_at": old,
            "oldest_age_s": 420.0,
            "streams": {"sale": 2, "alarm": 1},
            "sequences": sequences,
        },
        "lines": [],
        "pumps": [],
        "tanks": [],
    }


def test_status_shows_each_streams_unacknowledged_depth_and_age(
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = (datetime.now(UTC) - timedelta(minutes=7)).isoformat()
    sequences = {
        "sale": {
            "last_seq": 41,
            "acked_seq": 39,
            "unacked": 2,
            "sent": 2,
            "dropped": 0,
            "oldest_unacked_at": old,
        },
        "alarm": {
            "last_seq": 5,
            "acked_seq": 5,
            "unacked": 0,
            "sent": 0,
            "dropped": 0,
            "oldest_unacked_at": None,
        },
    }
    status_cli.render(document(sequences))
    out = capsys.readouterr().out
    [sale] = [line for line in out.splitlines() if line.split()[:1] == ["sale"]]
    assert sale.split()[:4] == ["sale", "41", "39", "2"]
    assert "7m" in sale  # the oldest unacknowledged message's age
    [alarm] = [line for line in out.splitlines() if line.split()[:1] == ["alarm"]]
    assert alarm.split()[:4] == ["alarm", "5", "5", "0"]


def test_status_without_any_stream_yet_prints_no_stream_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status_cli.render(document({}))
    out = capsys.readouterr().out
    assert "cloud mqtt://broker:1883: connected" in out
    assert "unacked" not in out


def test_status_shows_where_an_ifsf_pump_is_configured_and_its_offline_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = document({})
    reason = "IFSF node 1.1 heard at 10.0.0.9:3486, configured at 192.168.1.21"
    doc["pumps"] = [
        {
            "pump": 2,
            "line": "ifsf",
            "address": "1.1/FP1",
            "host": "192.168.1.21",
            "online": False,
            "state": "OFFLINE",
            "reason": reason,
            "last_seen_at": None,
        },
        {
            "pump": 3,
            "line": "ifsf",
            "address": "1.2/FP1",
            "host": None,
            "online": True,
            "state": "IDLE",
            "reason": None,
            "last_seen_at": None,
        },
    ]
    status_cli.render(doc)
    out = " ".join(capsys.readouterr().out.split())  # the table's wrapping aside
    assert "ifsf/1.1/FP1 at 192.168.1.21" in out and reason in out
    assert "ifsf/1.2/FP1 at" not in out  # no host: learned from its heartbeat
