"""An upgrade: a store written by an earlier schema is opened by the current code, migrated at
start, and keeps every row; the daemon then goes on selling on it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from drivers.wayne_dart.codec import DartStatus
from edgectl.cloud.messages import ContractMessages
from edgectl.config import load_config
from edgectl.store.schema import MIGRATIONS
from edgectl.store.store import Store
from tests.stationkit import rows, start_simulators, until, write_config

PREVIOUS = len(MIGRATIONS) - 1
AT = "2026-03-01T08:15:00.000Z"

# One row per table an older station had, with the columns its schema knew.
ROWS: dict[str, dict[str, Any]] = {
    "authorizations": {
        "pump": 1,
        "source": "auto",
        "state": "completed",
        "nozzles": "[1]",
        "preset_amount": "100.00",
        "sale_id": 1,
        "created_at": AT,
        "updated_at": AT,
    },
    "sales": {
        "uid": "upgrade-test-sale-1",
        "pump": 1,
        "nozzle": 1,
        "grade": "92",
        "volume": "13.42",
        "amount": "100.00",
        "unit_price": "7.45",
        "currency": "CNY",
        "authorization_id": 1,
        "ended_at": AT,
        "recorded_at": AT,
    },
    "nozzle_totals": {
        "pump": 7,
        "nozzle": 1,
        "volume": "52113.40",
        "amount": "388244.83",
        "updated_at": AT,
    },
    "alarms": {
        "kind": "pump_offline",
        "severity": "warning",
        "pump": 2,
        "message": "pump 2 does not answer",
        "raised_at": AT,
        "cleared_at": AT,
    },
    "outbox": {"stream": "sale", "priority": 0, "payload": '{"sale_id": 1}', "created_at": AT},
    "inbox": {
        "cmd_id": "cmd-1",
        "type": "authorize",
        "payload": "{}",
        "received_at": AT,
        "status": "accepted",
    },
    "orders": {
        "order_id": "order-1",
        "cmd_id": "cmd-1",
        "pump": 1,
        "status": "completed",
        "preset_type": "amount",
        "preset_value": "100.00",
        "currency": "CNY",
        "created_at": AT,
        "updated_at": AT,
    },
    "audit": {"action": "price", "args": '{"grade": "92"}', "requested_at": AT},
    "shifts": {"opened_at": AT, "opened_by": "ana", "closed_at": AT, "closed_by": "ana"},
    "shift_totals": {
        "shift": 1,
        "moment": "open",
        "pump": 1,
        "nozzle": 1,
        "grade": "92",
        "volume": "52113.40",
        "amount": "388244.83",
        "source": "pump",
        "read_at": AT,
    },
}


def old_store(path: Path, version: int, tables: set[str] | None = None) -> dict[str, list[Any]]:
    """A store as an edgectl of schema `version` left it (WAL, its own migrations applied
    one by one), with one row in each of `tables` that existed then; returns those rows."""
    db = sqlite3.connect(path, isolation_level=None)
    db.row_factory = sqlite3.Row
    try:
        db.execute("PRAGMA journal_mode=WAL")
        for number in range(version):
            db.executescript(f"BEGIN;\n{MIGRATIONS[number]}\nCOMMIT;")
            db.execute(f"PRAGMA user_version={number + 1}")
        existing = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        wanted = [t for t in ROWS if t in existing and (tables is None or t in tables)]
        for table in wanted:
            row = ROWS[table]
            marks = ", ".join("?" for _ in row)
            db.execute(
                f"INSERT INTO {table} ({', '.join(row)}) VALUES ({marks})", tuple(row.values())
            )
        return {t: [dict(r) for r in db.execute(f"SELECT * FROM {t}")] for t in wanted}
    finally:
        db.close()


def kept(db: Path, before: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The same tables now, each row cut to the columns it had before."""
    now = {}
    for table, old_rows in before.items():
        columns = list(old_rows[0])
        now[table] = [
            {c: r[c] for c in columns}
            for r in rows(db, f"SELECT * FROM {table} ORDER BY rowid")[: len(old_rows)]
        ]
    return now


@pytest.mark.parametrize("version", range(1, len(MIGRATIONS)), ids=lambda v: f"from-v{v}")
def test_a_store_of_an_earlier_schema_migrates_at_open_and_keeps_its_rows(
    tmp_path: Path, version: int
) -> None:
    db = tmp_path / "edgectl.db"
    before = old_store(db, version)
    assert before["sales"] and before["authorizations"]
    store = Store(db, messages=ContractMessages())
    try:
        assert store.schema_version == len(MIGRATIONS)
        assert [s["uid"] for s in store.sales()] == ["upgrade-test-sale-1"]
    finally:
        store.close()
    assert kept(db, before) == before
    # Opening again finds nothing left to do.
    Store(db, messages=ContractMessages()).close()
    assert rows(db, "PRAGMA user_version") == [{"user_version": len(MIGRATIONS)}]


def test_the_previous_schema_is_one_migration_behind(tmp_path: Path) -> None:
    db = tmp_path / "edgectl.db"
    old_store(db, PREVIOUS)
    assert rows(db, "PRAGMA user_version") == [{"user_version": PREVIOUS}]


@pytest.mark.slow
async def test_the_upgraded_daemon_starts_on_the_previous_store_and_goes_on_selling(
    tmp_path: Path,
) -> None:
    """The runbook's upgrade: the new edgectl starts on the store the previous one wrote
    (stopped cleanly), migrates it before serving, keeps its records and sells on."""
    config_path = write_config(tmp_path, mode="auto")
    config = load_config(config_path)
    db = config.store.path
    # Its meter totals are the pump's own business (re-read at start): not part of this.
    before = old_store(db, PREVIOUS, tables=set(ROWS) - {"nozzle_totals"})
    sims = start_simulators(config)
    pump = sims["l0"].pump(0x50)
    log = tmp_path / "daemon.log"
    proc = start_daemon(config_path, log)
    try:
        await until(
            lambda: (
                proc.poll() is not None
                or rows(db, "PRAGMA user_version")[0]["user_version"] == len(MIGRATIONS)
            ),
            timeout=30,
            what="the store migrated",
        )
        assert proc.poll() is None, log.read_text()
        pump.lift(1)
        await until(lambda: pump.status is DartStatus.AUTHORIZED, timeout=20, what="authorized")
        pump.squeeze()
        await until(lambda: pump.volume > 100, what="fuel flowing")
        pump.release()
        pump.hang_up()
        await until(lambda: len(rows(db, "SELECT id FROM sales")) == 2, timeout=20, what="sale")
        proc.terminate()
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for sim in sims.values():
            sim.stop()
    assert kept(db, before) == before
    sales = rows(db, "SELECT id, uid FROM sales ORDER BY id")
    assert sales[0] == {"id": 1, "uid": "upgrade-test-sale-1"} and sales[1]["id"] == 2
    assert "Traceback" not in log.read_text()


def start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "edgectl", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
