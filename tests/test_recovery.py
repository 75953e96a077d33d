"""Power-cut behaviour: the daemon is SIGKILLed mid-sale and recovers the sale from the pump."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.wayne_dart.codec import DCC, DartStatus
from drivers.wayne_dart.sim import Customer, SimPump, normal_fill
from edgectl.config import load_config
from tests.cloudkit import TestCloud, cloud_section
from tests.mqttkit import MOSQUITTO, MosquittoBroker
from tests.stationkit import (
    DaemonProcess,
    count_when_ready,
    rows,
    start_simulators,
    until,
    write_config,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(write_config(tmp_path, mode="auto"), tmp_path / "daemon.log")
    yield proc
    proc.cleanup()


def listening_sockets(pid: int) -> list[str]:
    """TCP/UDP sockets in LISTEN (or bound UDP) state owned by a process, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            listening = fields[3] == "0A" if table.startswith("tcp") else fields[3] == "07"
            if listening and fields[9] in inodes:
                found.append(f"{table} {fields[1]}")
    return found


async def auto_fill(pump: SimPump, nozzle: int) -> None:
    """An auto-mode customer: lifts, waits for the release, draws past 2 L, hangs up."""
    pump.lift(nozzle)
    await until(lambda: pump.status is DartStatus.AUTHORIZED, what="auto authorization")
    pump.squeeze()
    await until(lambda: pump.volume > 200, what="fuel flowing")
    pump.release()
    pump.hang_up()


def sales(db: Path) -> list[dict[str, object]]:
    return rows(db, "SELECT * FROM sales") if db.exists() else []


async def test_sigkill_mid_fill_loses_nothing_and_records_once(
    tmp_path: Path, daemon: DaemonProcess
) -> None:
    config = load_config(daemon.config)
    db = config.store.path
    sims = start_simulators(config, flow_rate_lps=2.0)
    pump = sims["l0"].pump(0x50)
    try:
        daemon.start()
        await until(
            lambda: count_when_ready(db, "nozzle_totals") == 4,
            timeout=20,
            what="daemon online",
        )
        pump.lift(1)
        await until(lambda: pump.status is DartStatus.AUTHORIZED, what="auto authorization")
        pump.squeeze()
        await until(lambda: pump.volume > 100, what="fuel flowing")
        daemon.kill()  # power cut in the middle of the fill
        await asyncio.sleep(0.3)
        pump.release()
        pump.hang_up()  # the customer finishes while nobody is watching
        assert pump.status is DartStatus.FILLING_COMPLETED
        volume, amount = pump.volume, pump.amount
        assert sales(db) == []

        daemon.start()
        await until(lambda: len(sales(db)) == 1, timeout=20, what="sale recovered")
        await until(lambda: pump.status is DartStatus.RESET, what="pump reset after commit")
        sale = sales(db)[0]
        assert Decimal(str(sale["volume"])) == Decimal(volume) / 100
        assert Decimal(str(sale["amount"])) == Decimal(amount) / 100
        auth = rows(db, "SELECT * FROM authorizations")
        assert len(auth) == 1 and auth[0]["state"] == "completed"
        assert auth[0]["sale_id"] == sale["id"]
        assert rows(db, "SELECT * FROM alarms") == []
        assert daemon.terminate() == 0
        assert len(sales(db)) == 1
    finally:
        for sim in sims.values():
            sim.stop()


async def test_sigterm_is_a_clean_exit(tmp_path: Path, daemon: DaemonProcess) -> None:
    config = load_config(daemon.config)
    sims = start_simulators(config)
    try:
        daemon.start()
        await until(
            lambda: count_when_ready(config.store.path, "nozzle_totals") == 4,
            timeout=20,
            what="daemon online",
        )
        assert daemon.terminate() == 0
        text = daemon.log.read_text()
        assert '"daemon_stopped"' in text and "Traceback" not in text
    finally:
        for sim in sims.values():
            sim.stop()


def test_bad_config_is_one_clear_line_and_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[station]\nid = "X"\n[store]\npath = "x.db"\n[[lines]]\nname = "a"\n')
    result = subprocess.run(
        [sys.executable, "-m", "edgectl", "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    # It names the first thing wrong by its key path: a key the line lacks (its protocol, now
    # that a line's keys depend on it), or, before the pydantic models, the missing grades.
    assert result.stderr.startswith("edgectl: ")
    assert 'lines[name="a"].' in result.stderr or "grades" in result.stderr
    assert "missing required key" in result.stderr or "grades" in result.stderr
    assert result.stderr.count("\n") == 1


async def test_sigkill_after_commit_before_reset_records_the_sale_once(
    tmp_path: Path, daemon: DaemonProcess
) -> None:
    config = load_config(daemon.config)
    db = config.store.path
    sims = start_simulators(config, flow_rate_lps=5.0)
    pump = sims["l0"].pump(0x51)
    try:
        daemon.start()
        await until(
            lambda: count_when_ready(db, "nozzle_totals") == 4, timeout=20, what="daemon online"
        )
        pump.ignore_commands(DCC.RESET)  # the reset after the sale will not take
        await auto_fill(pump, 2)
        await until(lambda: len(sales(db)) == 1, timeout=20, what="sale committed")
        await asyncio.sleep(0.3)  # the daemon is now trying to reset the pump, in vain
        assert pump.status is DartStatus.FILLING_COMPLETED
        daemon.kill()  # power cut between the commit and the reset
        pump.ignore_commands()

        daemon.start()  # reads the same fill from the pump again
        await until(lambda: pump.status is DartStatus.RESET, timeout=20, what="reset at last")
        assert len(sales(db)) == 1
        assert '"sale_already_recorded"' in daemon.log.read_text()
        assert rows(db, "SELECT kind FROM alarms") == []
        assert daemon.terminate() == 0
    finally:
        for sim in sims.values():
            sim.stop()


async def test_a_pump_without_totals_killed_after_commit_before_reset_records_once(
    tmp_path: Path, daemon: DaemonProcess
) -> None:
    """A pump that gives no totals: its sale is named by its authorization, which the commit
    closes. Killed before the reset, the daemon found the same fill at the pump after the
    restart with no open authorization and no totals, and recorded it a second time. And the
    restarted daemon could not check the idle pump's totals, so it never released it again."""
    config = load_config(daemon.config)
    db = config.store.path
    sims = start_simulators(config, flow_rate_lps=5.0)
    pump = sims["l0"].pump(0x51)
    try:
        daemon.start()
        await until(
            lambda: count_when_ready(db, "nozzle_totals") == 4, timeout=20, what="daemon online"
        )
        pump.give_no_totals()
        pump.ignore_commands(DCC.RESET)
        await auto_fill(pump, 2)
        await until(lambda: len(sales(db)) == 1, timeout=30, what="sale committed")
        assert sales(db)[0]["total_volume_after"] is None
        await asyncio.sleep(0.3)
        assert pump.status is DartStatus.FILLING_COMPLETED
        daemon.kill()
        pump.ignore_commands()

        daemon.start()
        await until(lambda: pump.status is DartStatus.RESET, timeout=30, what="reset at last")
        assert len(sales(db)) == 1
        assert '"sale_already_recorded"' in daemon.log.read_text()
        # The next customer's fill, the same figures and still no totals, is a new sale.
        await auto_fill(pump, 2)
        await until(lambda: len(sales(db)) == 2, timeout=30, what="the second sale")
        log = daemon.log.read_text()
        # The start-up totals check skipped its nozzles once each; the pump was not held,
        # failing its step on every report (it was, in a loop of thousands a second).
        assert '"pump_step_failed"' not in log and '"totals_check_skipped"' in log
        assert daemon.terminate() == 0
    finally:
        for sim in sims.values():
            sim.stop()


async def test_sigkill_between_commit_and_publish_publishes_after_restart(
    tmp_path: Path,
) -> None:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    key = Ed25519PrivateKey.generate()
    broker = MosquittoBroker(tmp_path)  # not started: the uplink is down
    config_path = write_config(tmp_path, mode="auto", extra=cloud_section(broker.port, key))
    daemon = DaemonProcess(config_path, tmp_path / "daemon.log")
    config = load_config(config_path)
    db = config.store.path
    sims = start_simulators(config, flow_rate_lps=20.0)
    pump = sims["l0"].pump(0x50)
    try:
        daemon.start()
        await until(
            lambda: count_when_ready(db, "nozzle_totals") == 4, timeout=20, what="daemon online"
        )
        await Customer(pump, normal_fill(1, Decimal("12.34"))).run()
        await until(lambda: len(sales(db)) == 1, timeout=20, what="sale committed")
        pending = rows(db, "SELECT stream_seq AS seq FROM outbox WHERE stream = 'sale'")
        assert len(pending) == 1  # committed with the sale, not yet published
        daemon.kill()

        broker.start()
        async with TestCloud(broker.port, "TEST-01", key) as cloud:
            daemon.start()
            published = await cloud.wait(
                lambda: cloud.on("evt/sale"),
                timeout=20,
                what="the sale published after the restart",
            )
            assert published[0]["seq"] == pending[0]["seq"]
            # The station only ever connects out: it listens on no port at all.
            assert daemon.proc is not None
            assert listening_sockets(daemon.proc.pid) == []
            assert published[0]["data"]["amount"] == sales(db)[0]["amount"]
            await until(
                lambda: not rows(db, "SELECT 1 FROM outbox WHERE stream = 'sale'"),
                timeout=20,
                what="deleted after its PUBACK",
            )
        assert daemon.terminate() == 0
        assert len(sales(db)) == 1
    finally:
        daemon.cleanup()
        if broker.running:
            broker.stop()
        for sim in sims.values():
            sim.stop()


@pytest.mark.parametrize("duplicates", ["ack", "silent"])
async def test_restart_never_strands_a_pump_whatever_tx_number_it_remembers(
    tmp_path: Path, daemon: DaemonProcess, duplicates: str
) -> None:
    """Issue 9.1: every start numbered its first DATA frame 1; a pump whose last executed
    frame was also 1 took it for a repeat, and stayed unknown, never released again."""
    config = load_config(daemon.config)
    db = config.store.path
    sims = start_simulators(config, flow_rate_lps=5.0)
    pumps = [p for sim in sims.values() for p in sim.pumps]
    for p in pumps:
        p.duplicates = duplicates
    pump = sims["l0"].pump(0x50)
    try:
        daemon.start()
        await until(
            lambda: count_when_ready(db, "nozzle_totals") == 4, timeout=20, what="daemon online"
        )
        daemon.kill()
        for p in pumps:  # each pump's last frame bore the number a fresh start uses first
            p.remember_master_seq(1)
        daemon.start()
        await asyncio.sleep(1.0)  # the restarted daemon finds its pumps again
        pump.lift(1)
        await until(
            lambda: pump.status is DartStatus.AUTHORIZED, timeout=10, what="released after restart"
        )
        pump.squeeze()
        await until(lambda: pump.volume > 100, what="fuel flowing")
        pump.release()
        pump.hang_up()
        await until(lambda: len(sales(db)) == 1, timeout=20, what="sale recorded")
        await until(lambda: pump.status is DartStatus.RESET, what="pump reset")
        text = daemon.log.read_text()
        assert "pump_step_failed" not in text and "Traceback" not in text
        assert daemon.terminate() == 0
    finally:
        for sim in sims.values():
            sim.stop()


async def test_a_lift_served_before_a_restart_is_not_released_again(
    tmp_path: Path, daemon: DaemonProcess
) -> None:
    """Issue 9.3: preset reached, the customer keeps the nozzle lifted, the daemon is killed
    and restarted: the same lift was released again. That it was served is durable."""
    config = load_config(daemon.config)
    db = config.store.path
    sims = start_simulators(config, flow_rate_lps=20.0)
    pump = sims["l0"].pump(0x50)
    try:
        daemon.start()
        await until(
            lambda: count_when_ready(db, "nozzle_totals") == 4, timeout=20, what="daemon online"
        )
        pump.lift(1)
        await until(lambda: pump.status is DartStatus.AUTHORIZED, what="auto authorization")
        pump.squeeze()
        await until(lambda: len(sales(db)) == 1, timeout=20, what="preset reached, sold")
        await until(lambda: pump.status is DartStatus.RESET, what="pump reset, nozzle still out")
        assert pump.nozzle_out == 1
        for restart in range(2):
            daemon.kill()
            daemon.start()
            await asyncio.sleep(2.5)  # long enough to find the pump and decide
            assert pump.status is DartStatus.RESET, f"released again after restart {restart}"
        assert len(rows(db, "SELECT * FROM authorizations")) == 1
        pump.release()
        pump.hang_up()
        await asyncio.sleep(0.5)
        pump.lift(2)  # a new lift is a new customer
        await until(lambda: pump.status is DartStatus.AUTHORIZED, what="next lift released")
        assert len(rows(db, "SELECT * FROM authorizations")) == 2
        assert daemon.terminate() == 0
    finally:
        for sim in sims.values():
            sim.stop()


async def test_a_report_that_another_nozzle_is_in_is_not_a_hang_up(
    tmp_path: Path, daemon: DaemonProcess
) -> None:
    """Found by make chaos: started while a customer holds nozzle 2, the daemon reads the
    pump's last fill, whose DC3 says "nozzle 1 in". Taken for a hang-up, it forgot that the
    lift of nozzle 2 had been served, and released it again after the next restart."""
    config = load_config(daemon.config)
    db = config.store.path
    sims = start_simulators(config, flow_rate_lps=20.0)
    pump = sims["l0"].pump(0x50)
    try:
        daemon.start()
        await until(
            lambda: count_when_ready(db, "nozzle_totals") == 4, timeout=20, what="daemon online"
        )
        await Customer(pump, normal_fill(1, Decimal("2.00"))).run()
        await until(lambda: len(sales(db)) == 1, timeout=20, what="nozzle 1 sold")
        await until(lambda: pump.status is DartStatus.RESET, what="reset")
        daemon.kill()
        pump.lift(2)  # the next customer, while the daemon is down
        daemon.start()
        await until(lambda: pump.status is DartStatus.AUTHORIZED, timeout=20, what="released")
        pump.squeeze()  # to the preset, and the customer keeps holding the nozzle
        await until(lambda: len(sales(db)) == 2, timeout=20, what="nozzle 2 sold")
        await until(lambda: pump.status is DartStatus.RESET, what="reset, nozzle still out")
        daemon.kill()
        daemon.start()
        await asyncio.sleep(2.5)
        assert pump.status is DartStatus.RESET, "the same lift was released again"
        assert len(rows(db, "SELECT * FROM authorizations")) == 2
        assert daemon.terminate() == 0
    finally:
        for sim in sims.values():
            sim.stop()


async def test_a_lift_whose_preset_is_reached_while_the_daemon_is_down_is_not_released_again(
    tmp_path: Path, daemon: DaemonProcess
) -> None:
    """Found by make chaos: the customer keeps the nozzle lifted, the preset stops the fill
    while the daemon is dead; the next daemon records the sale and must not release the
    same lift again."""
    config = load_config(daemon.config)
    db = config.store.path
    sims = start_simulators(config, flow_rate_lps=20.0)
    pump = sims["l0"].pump(0x50)
    try:
        daemon.start()
        await until(
            lambda: count_when_ready(db, "nozzle_totals") == 4, timeout=20, what="daemon online"
        )
        pump.lift(2)
        await until(lambda: pump.status is DartStatus.AUTHORIZED, what="auto authorization")
        daemon.kill()
        pump.squeeze()  # the preset (100.00) is reached while nobody watches
        await until(lambda: pump.status is DartStatus.MAX_REACHED, timeout=20, what="preset")
        daemon.start()
        await until(lambda: len(sales(db)) == 1, timeout=20, what="sale recorded")
        await until(lambda: pump.status is DartStatus.RESET, what="pump reset, nozzle still out")
        await asyncio.sleep(2.0)
        assert pump.status is DartStatus.RESET, "the same lift was released again"
        assert len(rows(db, "SELECT * FROM authorizations")) == 1
        assert daemon.terminate() == 0
    finally:
        for sim in sims.values():
            sim.stop()
