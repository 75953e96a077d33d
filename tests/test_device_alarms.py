"""Device alarms with reasons, device history and the health check (issue 11.1-11.3), with the
real daemon: a missing port, a port the daemon may not open, a pump gone silent, a line of
bad CRCs, a pump answering NAK, a tank gauge gone silent."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drivers.wayne_dart.sim import DartLineSimulator
from edgectl.config import load_config
from tests import tankkit
from tests.control.clikit import ROOT, cli, control_config, short_dir
from tests.stationkit import rows, running_station, start_simulators, until, write_config


def alarms(db: Path, kind: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM alarms" + (" WHERE kind = ?" if kind else "") + " ORDER BY id"
    try:
        return rows(db, sql, (kind,) if kind else ())
    except sqlite3.OperationalError:
        return []  # the daemon is still creating the store (file there, tables not yet)


def alarm_messages(db: Path) -> list[dict[str, Any]]:
    """The alarm messages queued for the cloud, as the contract has them."""
    return [
        json.loads(r["payload"])
        for r in rows(db, "SELECT payload FROM outbox WHERE stream = 'alarm' ORDER BY seq")
    ]


def log_events(log: Path, event: str) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == event:
            found.append(entry)
    return found


def wait(predicate: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def tmp() -> Iterator[Path]:
    with short_dir() as path:
        yield path


def start_daemon(config: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log = config.with_name("daemon.log")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgectl", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    return proc, log


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_missing_port_is_one_alarm_with_its_reason_until_the_adapter_is_plugged(
    tmp: Path,
) -> None:
    config_path = control_config(tmp, tmp / "ctl.sock", mode="attendant")
    config = load_config(config_path)
    db, port = config.store.path, config.line("l0").port
    proc, log = start_daemon(config_path)
    sims: dict[str, DartLineSimulator] = {}
    try:
        wait(lambda: db.exists() and bool(alarms(db, "line_down")), "the line_down alarm")
        time.sleep(3)  # a few more tries to open the port: still one alarm, one log line
        down = alarms(db, "line_down")
        assert len(down) == 1 and down[0]["cleared_at"] is None
        assert down[0]["severity"] == "critical"
        assert f"the port {port} does not exist (adapter unplugged?)" in down[0]["message"]
        assert json.loads(down[0]["detail"])["device"] == "line:l0"
        assert alarms(db, "pump_offline") == []  # the line's alarm names the cause
        assert len(log_events(log, "device_offline")) == 1

        status = cli("status", "--config", str(config_path))
        assert status.code == 2, status
        assert "does not exist (adapter unplugged?)" in status.out
        assert "EDGECTL CRITICAL" in status.out
        shown = cli("status", "--json", "--config", str(config_path)).json()
        assert [p["reason"] for p in shown["pumps"]] == [
            f"line l0 is down: the port {port} does not exist (adapter unplugged?)"
        ] * 2
        assert shown["lines"][0]["reason"].startswith(f"the port {port} does not exist")
        listed = cli("alarms", "--config", str(config_path))
        assert "line_down" in listed.out and "no active alarms" not in listed.out
        verdict = cli("health", "--config", str(config_path))
        assert verdict.code == 2 and verdict.out.startswith("EDGECTL CRITICAL - line_down:")

        sims = start_simulators(config)  # the adapter is plugged in
        wait(lambda: alarms(db, "line_down")[0]["cleared_at"] is not None, "the alarm cleared")
        wait(lambda: cli("health", "--config", str(config_path)).code == 0, "healthy again")
        assert len(alarms(db, "line_down")) == 1
        messages = alarm_messages(db)
        assert [(m["kind"], m["cleared_at"] is None) for m in messages] == [
            ("line_down", True),
            ("line_down", False),
        ]
        assert len(log_events(log, "device_online")) == 1
        healthy = cli("health", "--config", str(config_path))
        assert healthy.out.startswith("EDGECTL OK - ") and "2/2 pumps online" in healthy.out
        assert cli("status", "--config", str(config_path)).code == 0

        history = cli("history", "l0", "--json", "--config", str(config_path)).json()
        (line,) = history["devices"]
        assert line["device"] == "line:l0" and line["online"] == 1
        assert line["offline_since"] and line["online_since"] and line["last_seen_at"]
        assert [e["event"] for e in line["events"]][:2] == ["online", "offline"]
        assert line["events"][1]["kind"] == "port_missing"
        assert line["errors_last_hour"]["offline"] == 1
    finally:
        stop_daemon(proc)
        for sim in sims.values():
            sim.stop()
    # With the daemon down: history from the store, health critical but still evaluated.
    history = cli("history", "--config", str(config_path))
    assert history.code == 0 and "line:l0" in history.out and "pump:1" in history.out
    verdict = cli("health", "--json", "--config", str(config_path))
    assert verdict.code == 2
    shown = verdict.json()
    assert shown["source"] == "database"
    assert {c["name"]: c["status"] for c in shown["checks"]}["daemon"] == "critical"
    assert {c["name"]: c["status"] for c in shown["checks"]}["clock"] == "ok"


def test_a_port_the_daemon_may_not_open_says_permission_denied(tmp: Path) -> None:
    config_path = control_config(tmp, tmp / "ctl.sock", mode="attendant")
    config = load_config(config_path)
    db, port = config.store.path, Path(config.line("l0").port)
    # Root may open any file but an immutable one: the kernel's EPERM, as systemd's device
    # policy gives a daemon refused the port.
    port.write_bytes(b"")
    if subprocess.run(["chattr", "+i", str(port)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    proc, _log = start_daemon(config_path)
    try:
        wait(lambda: db.exists() and bool(alarms(db, "line_down")), "the line_down alarm")
        (down,) = alarms(db, "line_down")
        assert (
            f"permission denied on {port} (is the daemon's user in group dialout?)"
            in down["message"]
        )
        assert json.loads(down["detail"])["code"] == "permission_denied"
    finally:
        stop_daemon(proc)
        subprocess.run(["chattr", "-i", str(port)], check=True)


async def test_a_silent_pump_a_noisy_one_and_a_refusing_one_each_have_their_reason(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, mode="attendant", pumps_per_line=3)
    async with running_station(config) as station:
        db = station.config.store.path
        sim = station.sims["l0"]

        def open_alarms() -> list[dict[str, Any]]:
            return [a for a in alarms(db, "pump_offline") if a["cleared_at"] is None]

        # Silent: nothing at all comes back.
        sim.set_online(0x50, False)
        await until(lambda: bool(open_alarms()), timeout=15, what="pump 1 offline")
        (silent,) = open_alarms()
        assert silent["pump"] == 1 and "no answer to 3 requests in a row" in silent["message"]
        sim.set_online(0x50, True)
        await until(lambda: not open_alarms(), timeout=15, what="pump 1 back")

        # Noisy: its data comes back with a bad CRC on every poll.
        sim.corrupt_replies(0x51, 10_000)
        station.pump(2).lift(1)  # a status change to report: retransmitted until taken
        await until(lambda: bool(open_alarms()), timeout=15, what="pump 2 offline")
        (noisy,) = open_alarms()
        assert noisy["pump"] == 2 and "CRC errors" in noisy["message"]
        assert json.loads(noisy["detail"])["code"] == "bad_crc"
        sim.corrupt_replies(0x51, 0)
        await until(lambda: not open_alarms(), timeout=20, what="pump 2 back")

        # Refusing: every command is answered NAK.
        sim.nak_data_frames(0x52, 8)
        with pytest.raises(Exception):  # noqa: B017 - the stop fails: refused
            await station.daemon.station.stop_pump(3)
        await until(
            lambda: any(a["pump"] == 3 for a in alarms(db, "pump_offline")),
            timeout=15,
            what="pump 3 offline",
        )
        refusing = next(a for a in alarms(db, "pump_offline") if a["pump"] == 3)
        assert "answers NAK" in refusing["message"]
        await until(
            lambda: alarms(db, "pump_offline")[-1]["cleared_at"] is not None,
            timeout=15,
            what="pump 3 back",
        )
        # Each fault is raised and cleared in pairs: once per outage (a pump whose fault
        # flickers on a loaded machine may have two outages, never an unpaired alarm).
        offline = alarms(db, "pump_offline")
        assert {a["pump"] for a in offline} == {1, 2, 3}
        assert all(a["cleared_at"] is not None for a in offline)
        assert alarms(db, "line_down") == []
        kinds = [(m["kind"], m["pump"], m["cleared_at"] is None) for m in alarm_messages(db)]
        for pump in (1, 2, 3):
            mine = [raised for kind, p, raised in kinds if p == pump and kind == "pump_offline"]
            assert mine and mine == [True, False] * (len(mine) // 2), (pump, kinds)
        await station.daemon.devices.flush()
        reader = station.daemon.store.reader
        (noisy_history,) = reader.device_history(now=datetime.now(UTC), device="pump:2")
        assert noisy_history["errors_last_hour"]["bad_crc"] >= 3
        assert any(e["kind"] == "bad_crc" for e in noisy_history["events"])


async def test_a_tank_gauge_gone_silent_is_one_alarm_cleared_when_it_answers(
    tmp_path: Path,
) -> None:
    with tankkit.console(tmp_path, 20000) as (_tank, console):
        async with running_station(tankkit.config(tmp_path)) as station:
            db = station.config.store.path
            await until(
                lambda: (
                    station.daemon.tanks is not None
                    and station.daemon.tanks.gauges["tls"].is_online
                ),
                what="the gauge online",
            )
            console.set_online(False)
            await until(lambda: bool(alarms(db, "gauge_offline")), timeout=15, what="alarm")
            (offline,) = alarms(db, "gauge_offline")
            assert offline["message"].startswith("gauge tls (")
            assert "no reply" in offline["message"]
            console.set_online(True)
            await until(
                lambda: alarms(db, "gauge_offline")[0]["cleared_at"] is not None,
                timeout=15,
                what="cleared",
            )
            assert len(alarms(db, "gauge_offline")) == 1
            view = station.daemon.devices.view("gauge:tls")
            assert view["online"] is True and view["reason"] is None
