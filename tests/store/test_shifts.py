"""Shifts in the store (issue 16.2): the migration that adds them to an older store, one shift
open at a time, each end's nozzle totals kept with where they came from; and the reads the
records commands and reports use (deliveries, reconciliations, totals, a period's rows)."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from edgectl.cloud.messages import ContractMessages
from edgectl.errors import CommandError
from edgectl.forecourt.sale import AuthorizationSource
from edgectl.store.schema import MIGRATIONS
from edgectl.store.store import Store, StoreReader, open_read_only
from tests.store.writes import DELIVERY, NOW, RECONCILIATION, TANK_READING, sale

SHIFTS = next(i for i, m in enumerate(MIGRATIONS) if "CREATE TABLE shifts" in m)


def totals(volume: str | None, source: str = "pump") -> list[dict[str, object]]:
    return [
        {
            "pump": 1,
            "nozzle": 1,
            "grade": "95",
            "volume": None if volume is None else Decimal(volume),
            "amount": None if volume is None else Decimal(volume) * 8,
            "source": source,
            "read_at": NOW,
        }
    ]


def test_the_shifts_migration_adds_its_tables_to_an_older_store(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = sqlite3.connect(path, isolation_level=None)
    for number in range(SHIFTS):
        db.executescript(f"BEGIN;\n{MIGRATIONS[number]}\nCOMMIT;")
        db.execute(f"PRAGMA user_version={number + 1}")
    db.execute(
        "INSERT INTO nozzle_totals (pump, nozzle, volume, amount, updated_at)"
        " VALUES (1, 1, '1000.00', '7930.00', ?)",
        (NOW,),
    )
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "shifts" not in tables and "shift_totals" not in tables
    db.close()

    store = Store(path, messages=ContractMessages())
    try:
        assert store.schema_version == len(MIGRATIONS) >= SHIFTS + 1
        assert store.reader.shift() is None and store.reader.shifts() == []
        # The rows from before are there, and the totals a shift takes are the ones kept.
        [kept] = store.reader.nozzle_totals()
        assert (kept["volume"], kept["amount"]) == ("1000.00", "7930.00")
        opened = store.open_shift("ana", totals("1000.00", "store"))
        assert opened["id"] == 1 and opened["closed_at"] is None
        assert opened["open_totals"][0]["volume"] == "1000.00"
    finally:
        store.close()


def test_one_shift_at_a_time_each_end_with_its_totals(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", messages=ContractMessages())
    try:
        with pytest.raises(CommandError) as none_open:
            store.close_shift("ana", totals("1"))
        assert none_open.value.code == "no_open_shift"
        assert "edgectl shift open" in str(none_open.value)

        first = store.open_shift("ana", totals("1000.00"))
        with pytest.raises(CommandError) as twice:
            store.open_shift("bo", totals("1000.00"))
        assert twice.value.code == "shift_open" and "shift 1 is still open" in str(twice.value)
        assert store.query("SELECT COUNT(*) AS n FROM shifts")[0]["n"] == 1  # nothing written

        closed = store.close_shift("bo", totals("1042.50"))
        assert closed["id"] == first["id"] and closed["closed_by"] == "bo"
        assert closed["opened_at"] <= closed["closed_at"]
        assert [t["volume"] for t in closed["open_totals"]] == ["1000.00"]
        assert [t["volume"] for t in closed["close_totals"]] == ["1042.50"]
        assert closed["close_totals"][0]["source"] == "pump"

        second = store.open_shift("bo", totals(None, "none"))
        assert second["id"] == 2
        assert second["open_totals"][0] | {"read_at": None} == {
            "pump": 1,
            "nozzle": 1,
            "grade": "95",
            "volume": None,
            "amount": None,
            "source": "none",
            "read_at": None,
        }
        reader = store.reader
        assert reader.shift()["id"] == 2  # the open one
        assert reader.shift(1)["closed_by"] == "bo"
        assert reader.shift(9) is None
        assert [s["id"] for s in reader.shifts()] == [1, 2]
        assert [s["id"] for s in reader.shifts(limit=1)] == [2]
        store.close_shift("bo", totals("1050.00"))
        assert reader.shift()["id"] == 2  # none open: the last one
    finally:
        store.close()


def test_the_records_reads(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", messages=ContractMessages())
    try:
        store.record_tank_reading(TANK_READING, history=True)
        store.record_delivery("tls-1", DELIVERY)
        store.record_delivery(
            "tls-1",
            {
                **DELIVERY,
                "start_at": "2026-11-25T09:00:00+00:00",
                "end_at": "2026-11-25T09:40:00+00:00",
                "tank": 2,
            },
        )
        store.record_reconciliation(RECONCILIATION, {"tank": 1})
        store.record_reconciliation({**RECONCILIATION, "day": "2026-11-25"}, {"tank": 1})
        auth = store.create_authorization(1, AuthorizationSource.ATTENDANT)
        store.record_sale(sale(1, pump=1, auth=auth.id))
        store.record_sale(sale(2, pump=1))
    finally:
        store.close()
    db = open_read_only(tmp_path / "s.db")
    try:
        reader = StoreReader(db)
        assert [d["tank"] for d in reader.deliveries()] == [1, 2]
        assert [d["tank"] for d in reader.deliveries(tank=2)] == [2]
        # Times in either form (Z, an offset) compare as times.
        assert [d["tank"] for d in reader.deliveries(since="2026-11-25T09:39:00.000Z")] == [2]
        assert [d["tank"] for d in reader.deliveries(limit=1)] == [2]
        assert [r["day"] for r in reader.reconciliations(since_day="2026-11-25")] == ["2026-11-25"]
        assert reader.tank_latest()[1]["net_l"] == "19950"
        [nozzle] = reader.nozzle_totals()
        assert (nozzle["pump"], nozzle["nozzle"], nozzle["volume"]) == (1, 1, "1020")
        assert nozzle["last_sale"]["id"] == 2
        # writes.sale's totals move its amount by 80.00 for a sale of 79.30: the alarm says so.
        assert nozzle["last_alarm"]["kind"] == "totals_mismatch"
        rows = reader.period_rows("2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z")
        assert [s["authorized_by"] for s in rows["sales"]] == ["attendant", None]
        assert len(rows["readings"]) == 1 and len(rows["deliveries"]) == 2
        assert [r["day"] for r in rows["reconciliations"]] == ["2026-11-24", "2026-11-25"]
    finally:
        db.close()
