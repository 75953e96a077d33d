"""The disk holding the store fills up while a pump sells (issue 9, point 4), on a real small
file system: the real daemon with simulated DART pumps. The fill stays held at the pump (never
reset before its sale is committed), nothing is authorized while the store cannot write, the
fault is one log line and an alarm, not a traceback per report, and once space comes back the
sale is recorded once, the pump reset, the alarm recorded (raised, then cleared) and selling
goes on."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from drivers.wayne_dart.codec import DartStatus
from drivers.wayne_dart.sim import Customer, normal_fill
from edgectl.errors import StoreFullError
from edgectl.forecourt.sale import AuthorizationSource
from tests.faultkit import fill, tmpfs
from tests.stationkit import rows, running_station, until, write_config

pytestmark = pytest.mark.slow


def truncate_wal(db: Path) -> None:
    """Checkpoint the daemon's -wal into the main file and cut it to nothing, so that the
    next commit has to grow it (a -wal with room left would take a few more commits)."""
    other = sqlite3.connect(db, timeout=10)
    try:
        for _ in range(50):
            if other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0:
                return
        raise AssertionError("the -wal could not be checkpointed")
    finally:
        other.close()


async def test_a_full_disk_while_selling_holds_the_sale_and_heals(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", size="16m") as disk:
        config = write_config(tmp_path, mode="auto")
        db = disk / "edgectl.db"
        config.write_text(config.read_text().replace(str(tmp_path / "edgectl.db"), str(db)))
        with capture_logs() as logs:
            async with running_station(config, flow_rate_lps=2.0) as st:
                await st.quiet()
                pump, other = st.pump(1), st.pump(2)
                # Each reset of pump 1, with the sales on record at that moment.
                resets: list[int] = []
                pump.add_listener(
                    lambda s: resets.append(len(rows(db, "SELECT id FROM sales")))
                    if s is DartStatus.RESET
                    else None
                )
                pump.lift(1)
                await until(lambda: pump.status is DartStatus.AUTHORIZED, what="authorized")
                pump.squeeze()
                await until(lambda: pump.volume > 50, what="fuel flowing")

                truncate_wal(db)
                filler = fill(disk)  # the disk is full while fuel flows
                pump.release()
                pump.hang_up()
                await until(lambda: pump.status is DartStatus.FILLING_COMPLETED, what="fill over")
                store = st.daemon.store
                await until(lambda: store.write_fault is not None, what="the store fails")
                held = pump.volume

                # Another customer, and an attendant: no release without a durable record.
                other.lift(1)
                with pytest.raises(StoreFullError, match="full"):
                    await st.daemon.station.authorize(2, AuthorizationSource.ATTENDANT)
                await asyncio.sleep(2.5)  # reports keep coming; the daemon waits them out
                assert other.status is DartStatus.RESET
                assert pump.status is DartStatus.FILLING_COMPLETED and pump.volume == held
                assert resets == [] and rows(db, "SELECT * FROM sales") == []
                assert store.write_fault is not None and store.write_fault.error.code == (
                    "store_full"
                )
                active = await st.daemon.station.db(store.reader.alarms, active_only=True)
                assert [a["kind"] for a in active] == ["store_unwritable"]
                assert "full" in active[0]["message"]
                assert st.service(1).online  # the pump is still followed

                filler.unlink()  # space comes back
                await until(lambda: len(rows(db, "SELECT id FROM sales")) == 1, timeout=20)
                await until(lambda: pump.status is DartStatus.RESET, what="reset after commit")
                sale = rows(db, "SELECT * FROM sales")[0]
                assert Decimal(sale["volume"]) * 100 == held and sale["pump"] == 1
                assert resets and resets[0] == 1  # never reset before its sale was on record

                alarm = rows(db, "SELECT * FROM alarms WHERE kind = 'store_unwritable'")
                assert len(alarm) == 1 and alarm[0]["cleared_at"] is not None
                assert "full" in alarm[0]["message"]
                sent = [
                    json.loads(r["payload"])
                    for r in rows(db, "SELECT payload FROM outbox WHERE stream = 'alarm'")
                ]
                assert [a["cleared_at"] is None for a in sent] == [True, False]

                # Selling goes on, on both pumps: the customer who waited on pump 2 hangs up
                # and lifts again, and pump 1, hung up during the fault, serves the next one.
                other.hang_up()
                await asyncio.sleep(0.3)
                await Customer(other, normal_fill(1, Decimal("5.00"))).run()
                await Customer(pump, normal_fill(2, Decimal("5.00"))).run()
                await until(lambda: len(rows(db, "SELECT id FROM sales")) == 3, timeout=20)
    events = [e["event"] for e in logs]
    assert events.count("store_unwritable") == 1
    assert events.count("store_writable_again") == 1
    assert "pump_step_crashed" not in events
    assert not [e for e in logs if e["event"] == "pump_step_failed"]
    assert "sale_not_committed_will_retry" not in events
