"""The outbox: seq order per class, interleaving, telemetry coalescing, quota thinning."""

from __future__ import annotations

from pathlib import Path

from edgectl.store.store import PRIORITY_EVENT, PRIORITY_SALE, PRIORITY_TELEMETRY, Store


def fill(store: Store, stream: str, priority: int, n: int, key: str | None = None) -> list[int]:
    seqs = []
    for i in range(n):
        with store.transaction() as tx:
            seqs.append(tx.outbox(stream, priority, {"i": i}, "t", key=key))
    return seqs


def test_seq_only_grows_and_survives_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    first = fill(store, "sale", PRIORITY_SALE, 3)
    store.outbox_delete(first)
    store.close()
    store = Store(tmp_path / "s.db")
    second = fill(store, "sale", PRIORITY_SALE, 1)
    assert second[0] > max(first)  # AUTOINCREMENT: a deleted seq is never reused
    store.close()


def test_classes_are_interleaved_each_in_seq_order(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    sales = fill(store, "sale", PRIORITY_SALE, 5)
    alarms = fill(store, "alarm", PRIORITY_EVENT, 2)
    state = fill(store, "pump_state", PRIORITY_TELEMETRY, 1, key="1")
    rows = store.outbox_after({}, 6)
    assert [r.seq for r in rows] == [sales[0], alarms[0], state[0], sales[1], alarms[1], sales[2]]
    # The cursor per class continues where the last batch ended.
    cursors = {PRIORITY_SALE: sales[2], PRIORITY_EVENT: alarms[1], PRIORITY_TELEMETRY: state[0]}
    assert [r.seq for r in store.outbox_after(cursors, 10)] == sales[3:]
    store.close()


def test_telemetry_keeps_only_the_latest_value_per_key(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    fill(store, "pump_state", PRIORITY_TELEMETRY, 5, key="3")
    fill(store, "pump_state", PRIORITY_TELEMETRY, 2, key="4")
    rows = store.query("SELECT key, payload FROM outbox ORDER BY seq")
    assert rows == [{"key": "3", "payload": '{"i":4}'}, {"key": "4", "payload": '{"i":1}'}]
    store.close()


def test_quota_thins_telemetry_but_never_drops_sales(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", outbox_max_rows=10)
    for pump in range(8):
        fill(store, "pump_state", PRIORITY_TELEMETRY, 1, key=str(pump))
    sales = fill(store, "sale", PRIORITY_SALE, 12)
    remaining = store.query("SELECT stream, seq FROM outbox ORDER BY seq")
    assert [r["seq"] for r in remaining if r["stream"] == "sale"] == sales  # all kept
    assert not [r for r in remaining if r["stream"] == "pump_state"]  # thinned first
    store.close()
