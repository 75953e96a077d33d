"""The technician CLI against a running daemon (`edgectl run` as a child process) on simulated
DART pumps: JSON shapes, readable output, manual actions with their audit, live streams."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.wayne_dart.codec import DartStatus
from tests.control.clikit import ROOT, DaemonProcess, cli, control_config, daemon_process, short_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def station() -> Iterator[DaemonProcess]:
    """One station for the module: attendant mode (nothing is authorized unless asked), pumps
    1-2 on line l0 and 3-4 on l1. Each test leaves its pumps idle."""
    with short_dir() as tmp:
        config = control_config(tmp, tmp / "control.sock", mode="attendant", lines=2)
        with daemon_process(config) as daemon:
            yield daemon


def run(station: DaemonProcess, *args: str) -> Any:
    """A command with --json that must succeed; its parsed output."""
    result = cli(*args, "--config", str(station.config_path), "--json")
    assert result.code == 0, result.err
    assert result.err == ""
    return result.json()


def audit_rows(station: DaemonProcess) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{station.config.store.path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM audit ORDER BY id")]
    finally:
        db.close()


# --------------------------------------------------------------------------- reads


def test_status_json_shape(station: DaemonProcess) -> None:
    # Line rates need a first second of samples.
    station.wait_for(
        lambda: all(line["per_minute"] for line in station.call("status")["lines"]),
        "line rates",
    )
    status = run(station, "status")
    assert set(status) == {"daemon", "cloud", "outbox", "lines", "pumps", "tanks", "health"}
    assert status["health"]["status"] == "ok" and status["health"]["line"].startswith("EDGECTL OK")
    assert [p["reason"] for p in status["pumps"]] == [None] * 4
    assert [line["up"] for line in status["lines"]] == [True, True]
    daemon = status["daemon"]
    assert daemon["station"] == "TEST-01" and daemon["mode"] == "attendant"
    assert daemon["uptime_s"] > 0 and daemon["pid"] == station.proc.pid
    assert daemon["socket"] == str(station.socket)
    assert status["cloud"] is None  # no [cloud] section
    assert set(status["outbox"]) == {
        "depth",
        "waiting",
        "oldest_at",
        "oldest_age_s",
        "streams",
        "sequences",
    }
    assert [line["line"] for line in status["lines"]] == ["l0", "l1"]
    line = status["lines"][0]
    assert line["protocol"] == "wayne_dart" and line["settings"] == "9600 8O1"
    assert line["pumps"] == 2 and line["online"] == 2
    assert line["counters"]["frames_sent"] > 0
    assert set(line["per_minute"]) == {"frames", "errors", "timeouts", "retransmissions"}
    assert line["per_minute"]["frames"] > 0
    assert [(p["pump"], p["online"]) for p in status["pumps"]] == [
        (1, True),
        (2, True),
        (3, True),
        (4, True),
    ]
    assert status["tanks"] == []


def test_status_reads_for_people(station: DaemonProcess) -> None:
    result = cli("status", "--config", str(station.config_path))
    assert result.code == 0, result.err
    assert "station TEST-01" in result.out and "running for" in result.out
    assert "cloud: not configured" in result.out
    assert "l0" in result.out and "l1" in result.out and "pump 4" in result.out
    assert "\x1b[" not in result.out  # no colour codes in a pipe


def test_pumps_json_shape(station: DaemonProcess) -> None:
    pumps = run(station, "pumps")
    assert [p["pump"] for p in pumps] == [1, 2, 3, 4]
    first = pumps[0]
    assert set(first) == {
        "pump",
        "line",
        "address",
        "online",
        "state",
        "state_code",
        "status",
        "nozzle",
        "nozzle_out",
        "grade",
        "unit_price",
        "volume",
        "amount",
        "authorization_id",
        "sales",
        "closed",
    }
    assert first["address"] == "0x50" and first["state"] == "IDLE" and first["status"] == "reset"
    assert isinstance(first["volume"], str)  # money and volumes travel as decimal strings


def test_pumps_and_prices_read_for_people(station: DaemonProcess) -> None:
    result = cli("pumps", "--config", str(station.config_path))
    assert result.code == 0 and "IDLE" in result.out and "l1/0x51" in result.out
    result = cli("prices", "--config", str(station.config_path))
    assert result.code == 0 and "diesel" in result.out and "7.10" in result.out


def test_tanks_when_the_station_has_none(station: DaemonProcess) -> None:
    result = cli("tanks", "--config", str(station.config_path))
    assert result.code == 0
    assert result.out.strip() == "no tanks configured"
    assert run(station, "tanks") == {"source": "daemon", "tanks": []}


def test_socket_option_instead_of_config(station: DaemonProcess) -> None:
    result = cli("pumps", "--socket", str(station.socket), "--json", "--config", "/nonexistent")
    assert result.code == 0 and len(result.json()) == 4


# --------------------------------------------------------------------------- actions


def test_authorize_authorizes_the_pump_and_is_audited(station: DaemonProcess) -> None:
    sim = station.sims["l0"].pump(0x50)
    result = run(station, "authorize", "1", "--amount", "20")
    assert result["pump"] == 1 and result["preset_amount"] == "20"
    assert result["state"] == "authorized" and result["currency"] == "CNY"
    assert sim.status is DartStatus.AUTHORIZED  # the pump itself says so
    station.wait_for(lambda: station.pump_view(1)["state"] == "AUTHORISED", "pump 1 authorised")

    row = audit_rows(station)[-1]
    assert row["action"] == "authorize" and row["outcome"] == "ok"
    assert json.loads(row["args"]) == {"pump": 1, "amount": "20", "nozzles": []}
    assert row["client_user"] and row["peer_uid"] is not None and row["peer_user"]
    assert row["finished_at"] is not None

    # The authorization says who asked for it, too.
    db = sqlite3.connect(f"file:{station.config.store.path}?mode=ro", uri=True)
    try:
        source, requested_by = db.execute(
            "SELECT source, requested_by FROM authorizations WHERE id = ?",
            (result["authorization_id"],),
        ).fetchone()
    finally:
        db.close()
    assert source == "attendant" and requested_by.startswith("cli:")

    result = run(station, "stop", "1")
    assert result["message"] == "pump 1 stopped"
    station.wait_for(lambda: sim.status is DartStatus.RESET, "pump 1 reset")
    station.wait_for(lambda: station.pump_view(1)["state"] == "IDLE", "pump 1 idle")
    assert audit_rows(station)[-1]["action"] == "stop"


def test_a_refused_action_fails_plainly_and_is_audited(station: DaemonProcess) -> None:
    result = cli("authorize", "1", "--amount", "999999", "--config", str(station.config_path))
    assert result.code == 1
    assert result.err.strip().startswith("edgectl authorize: preset amount 999999 outside")
    assert "Traceback" not in result.err and result.out == ""
    row = audit_rows(station)[-1]
    assert row["action"] == "authorize" and row["outcome"] == "failed"
    assert "outside" in row["message"]

    result = cli("stop", "9", "--config", str(station.config_path))
    assert result.code == 1 and "unknown pump 9" in result.err


def test_an_authorized_fill_becomes_a_sale(station: DaemonProcess, tmp_path: Path) -> None:
    sim = station.sims["l1"].pump(0x50)  # pump 3
    before = station.call("sales", {"pump": 3, "all": True})
    result = cli("authorize", "3", "--amount", "10", "--config", str(station.config_path))
    assert result.code == 0 and result.out.startswith("pump 3 authorized up to 10 CNY")
    sim.lift(1)
    sim.squeeze()
    station.wait_for(lambda: sim.status is DartStatus.MAX_REACHED or sim.amount >= 1000, "fill")
    sim.hang_up()
    station.wait_for(
        lambda: len(station.call("sales", {"pump": 3, "all": True})) == len(before) + 1,
        "the sale recorded",
    )
    sales = run(station, "sales", "--pump", "3")
    assert sales["source"] == "daemon"
    sale = sales["sales"][-1]
    assert sale["pump"] == 3 and sale["grade"] == "92" and sale["amount"] == "10.00"
    station.wait_for(lambda: station.pump_view(3)["state"] == "IDLE", "pump 3 idle")

    text = cli("sales", "--since", "1h", "--config", str(station.config_path))
    assert text.code == 0 and "sale(s)" in text.out and "10.00" in text.out

    out = tmp_path / "sales.csv"
    result = cli("export", "sales", "--csv", str(out), "--config", str(station.config_path))
    assert result.code == 0 and str(out) in result.out
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[-1]["uid"] == sale["uid"] and rows[-1]["amount"] == "10.00"


def test_price_change_is_applied_and_audited(station: DaemonProcess) -> None:
    result = run(station, "price", "diesel", "7.20")
    assert result["grade"] == "diesel" and result["unit_price"] == "7.20"
    prices = run(station, "prices")
    assert prices["price_set_id"] == result["price_set_id"]
    diesel = next(g for g in prices["grades"] if g["grade"] == "diesel")
    assert diesel["unit_price"] == "7.20" and diesel["configured"] == "7.10"
    row = audit_rows(station)[-1]
    assert row["action"] == "price" and row["outcome"] == "ok"
    assert json.loads(row["args"]) == {"grade": "diesel", "price": "7.20"}
    audit = run(station, "audit")["audit"]
    assert audit[-1]["id"] == row["id"]

    result = cli("price", "diesel", "7.123", "--config", str(station.config_path))
    assert result.code == 1 and "decimals" in result.err
    result = cli("price", "jetfuel", "7", "--config", str(station.config_path))
    assert result.code == 1 and "unknown grade 'jetfuel'" in result.err


def test_stop_all_stops_every_pump_and_says_which_could_not(station: DaemonProcess) -> None:
    result = run(station, "stop", "all")
    assert result["stopped"] == [1, 2, 3, 4] and result["failed"] == []
    assert result["outcome"] == "ok"
    row = audit_rows(station)[-1]
    assert row["action"] == "stop" and row["outcome"] == "ok"
    assert json.loads(row["args"]) == {"all": True}

    silent = station.sims["l1"].pump(0x51)  # pump 4
    silent.set_online(False)
    try:
        station.wait_for(lambda: not station.pump_view(4)["online"], "pump 4 offline")
        text = cli("stop", "all", "--config", str(station.config_path))
        assert text.code == 1
        assert text.out == "stopped pump(s) 1, 2, 3\n"
        assert text.err.startswith("edgectl stop: pump 4 is offline")
        row = audit_rows(station)[-1]
        assert row["outcome"] == "partial" and "not stopped: pump 4 is offline" in row["message"]
    finally:
        silent.set_online(True)
    station.wait_for(lambda: station.pump_view(4)["online"], "pump 4 back online", 45)


def test_an_unknown_pump_is_answered_with_the_pumps_there_are(station: DaemonProcess) -> None:
    for action in (("authorize", "9"), ("stop", "9")):
        result = cli(*action, "--config", str(station.config_path))
        assert result.code == 1
        assert result.err == f"edgectl {action[0]}: unknown pump 9 (pumps: 1, 2, 3, 4)\n"


def test_a_price_change_shows_old_and_new_and_a_big_one_needs_force(
    station: DaemonProcess,
) -> None:
    old = next(g for g in run(station, "prices")["grades"] if g["grade"] == "92")["unit_price"]
    assert old == "7.45"
    # 70000 for 7.45: a slip of the finger, refused and audited as refused.
    result = cli("price", "92", "70000", "--config", str(station.config_path))
    assert result.code == 1 and result.out == ""
    assert result.err.startswith("edgectl price: grade 92: 7.45 → 70000.00 CNY is a change of")
    assert "more than the 20 % allowed" in result.err and "--force" in result.err
    row = audit_rows(station)[-1]
    assert row["action"] == "price" and row["outcome"] == "failed"
    prices = run(station, "prices")
    assert next(g for g in prices["grades"] if g["grade"] == "92")["unit_price"] == "7.45"

    result = cli("price", "92", "7.60", "--config", str(station.config_path))
    assert result.code == 0, result.err
    assert result.out.startswith("grade 92: 7.45 → 7.60 CNY (+2.0 %)")
    forced = run(station, "price", "92", "9.99", "--force")
    assert forced["previous_price"] == "7.60" and forced["unit_price"] == "9.99"
    assert json.loads(audit_rows(station)[-1]["args"]) == {
        "grade": "92",
        "price": "9.99",
        "force": True,
    }
    run(station, "price", "92", "7.45", "--force")


# --------------------------------------------------------------------------- streams


def test_watch_emits_updates_that_follow_the_pumps(station: DaemonProcess) -> None:
    sim = station.sims["l1"].pump(0x51)  # pump 4
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgectl",
            "watch",
            "--json",
            "--interval",
            "0.1",
            "--count",
            "40",
            "--config",
            str(station.config_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        sim.lift(2)
        updates = [first] + [json.loads(line) for line in proc.stdout]
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sim.hang_up()
    assert len(updates) == 40
    assert all([p["pump"] for p in u["pumps"]] == [1, 2, 3, 4] for u in updates)
    states = [u["pumps"][3]["state"] for u in updates]
    assert states[0] == "IDLE" and "CALLING" in states
    calling = next(u["pumps"][3] for u in updates if u["pumps"][3]["state"] == "CALLING")
    assert calling["nozzle"] == 2 and calling["nozzle_out"] is True
    station.wait_for(lambda: station.pump_view(4)["state"] == "IDLE", "pump 4 idle")


def test_watch_for_people_in_a_pipe(station: DaemonProcess) -> None:
    result = cli("watch", "--count", "2", "--interval", "0.1", "--config", str(station.config_path))
    assert result.code == 0 and result.out.count("TEST-01 at") == 2


def test_sniff_streams_decoded_frames(station: DaemonProcess) -> None:
    result = cli("sniff", "l0", "--json", "--count", "6", "--config", str(station.config_path))
    assert result.code == 0, result.err
    frames = result.json_lines()
    assert len(frames) == 6
    for frame in frames:
        assert frame["direction"] in ("tx", "rx")
        assert frame["from"] == ("controller" if frame["direction"] == "tx" else "pump")
        assert frame["address"] in ("0x50", "0x51")
        assert bytes.fromhex(frame["hex"])[-1] == 0xFA  # every DART frame ends with SF
        assert frame["at"].endswith("Z") and frame["valid"] is True
    assert frames[0]["type"] == "POLL" and frames[0]["direction"] == "tx"
    assert frames[1]["gap_ms"] is not None


def test_sniff_shows_data_frames_and_a_bad_crc(station: DaemonProcess) -> None:
    line = station.sims["l0"]
    sim = line.pump(0x51)  # pump 2
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgectl",
            "sniff",
            "l0",
            "--no-polls",
            "--address",
            "0x51",
            "--json",
            "--count",
            "3",
            "--config",
            str(station.config_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    frames: list[dict[str, Any]] = []
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stderr.readline().startswith("sniffing line l0")  # subscribed
        line.corrupt_next_reply(0x51)
        sim.lift(1)  # the pump queues its nozzle status: a DATA frame, corrupted once
        # Its CRC fails, the daemon hears nothing valid and polls again: the pump repeats it.
        frames = [json.loads(proc.stdout.readline()) for _ in range(2)]
        sim.hang_up()  # and the nozzle back in: one more DATA frame
        frames.append(json.loads(proc.stdout.readline()))
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sim.hang_up()
    assert all(f["type"] not in ("POLL", "EOT", "ACK") for f in frames)
    assert all(f["address"] == "0x51" for f in frames if f["address"])
    bad, again, back = frames
    assert bad["direction"] == "rx" and bad["crc"] == "bad" and bad["valid"] is False
    assert "CRC" in bad["summary"] or "crc" in bad["summary"].lower()
    assert again["crc"] == "ok" and again["type"] == "DATA" and again["direction"] == "rx"
    assert "DC3 nozzle status" in again["summary"]
    assert again["frame"]["transactions"][0]["values"]["nozzle_out"] is True
    assert back["crc"] == "ok" and "nozzle 1 in" in back["summary"]
    station.wait_for(lambda: station.pump_view(2)["state"] == "IDLE", "pump 2 idle")


def test_sniff_for_people(station: DaemonProcess) -> None:
    result = cli("sniff", "l1", "--count", "4", "--config", str(station.config_path))
    assert result.code == 0
    lines = result.out.splitlines()
    assert len(lines) == 4 and "ctl>" in lines[0] and "POLL" in lines[0]
    assert "sniffing line l1" in result.err
    result = cli("sniff", "nowhere", "--config", str(station.config_path))
    assert result.code == 1 and "no line named 'nowhere' (lines: l0, l1)" in result.err
    # An address nobody answers at is named in hex, with the ones that are there.
    result = cli("sniff", "l0", "--address", "0x99", "--config", str(station.config_path))
    assert result.code == 1
    assert result.err == (
        "edgectl sniff: l0 has nothing at address 0x99 (its addresses: 0x50, 0x51)\n"
    )


# --------------------------------------------------------------------------- store and lines


def test_backup_while_running_and_restore_refused(station: DaemonProcess, tmp_path: Path) -> None:
    dest = tmp_path / "backup.db"
    result = run(station, "db", "backup", str(dest))
    assert result["backup"] == str(dest) and result["schema_version"] >= 4
    check = sqlite3.connect(dest)
    try:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        check.close()
    assert run(station, "db", "check")["ok"] is True

    result = cli("db", "restore", str(dest), "--config", str(station.config_path))
    assert result.code == 1
    assert "edgectl is running" in result.err and "stop it first" in result.err

    result = cli("db", "backup", str(dest), "--config", str(station.config_path))
    assert result.code == 1 and "exists already" in result.err


def test_probe_refuses_a_port_the_daemon_holds(station: DaemonProcess) -> None:
    port = station.config.line("l0").port
    result = cli("probe", port, "--protocol", "dart")
    assert result.code == 1
    assert "in use by another process" in result.err and "edgectl sniff" in result.err


def test_the_daemon_survived_all_of_it(station: DaemonProcess) -> None:
    assert station.proc.poll() is None
    assert all(p["online"] for p in station.pump_views())
    log = station.log.read_text()
    assert "Traceback" not in log and "control_request_failed" not in log
