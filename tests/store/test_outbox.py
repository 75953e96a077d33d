"""The outbox: seq order per class, interleaving, telemetry coalescing, quota thinning; the
sequences of contract 1.1 (per stream, per key) and delivery = "backend" (ack, replay)."""

from __future__ import annotations

import contextlib
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from edgectl.cloud.messages import ContractMessages
from edgectl.store.schema import MIGRATIONS
from edgectl.store.store import PRIORITY_EVENT, PRIORITY_SALE, PRIORITY_TELEMETRY, Store

# The migration that numbers the outbox's streams (contract 1.1) is this one (0-based): a
# store of the schema before it has the migrations below this index.
OUTBOX_SEQUENCES = next(i for i, m in enumerate(MIGRATIONS) if "outbox_streams" in m)


def fill(store: Store, stream: str, priority: int, n: int, key: str | None = None) -> list[int]:
    seqs = []
    for i in range(n):
        with store.transaction() as tx:
            message = tx.messages.shaped(stream, {"i": i}, key=key)
            seqs.append(tx.outbox(message, priority, "t"))
    return seqs


def test_seq_only_grows_and_survives_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", messages=ContractMessages())
    first = fill(store, "sale", PRIORITY_SALE, 3)
    store.outbox_delete(first)
    store.close()
    store = Store(tmp_path / "s.db", messages=ContractMessages())
    second = fill(store, "sale", PRIORITY_SALE, 1)
    assert second[0] > max(first)  # AUTOINCREMENT: a deleted seq is never reused
    store.close()


def test_classes_are_interleaved_each_in_seq_order(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", messages=ContractMessages())
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
    store = Store(tmp_path / "s.db", messages=ContractMessages())
    fill(store, "pump_state", PRIORITY_TELEMETRY, 5, key="3")
    fill(store, "pump_state", PRIORITY_TELEMETRY, 2, key="4")
    rows = store.query("SELECT key, payload FROM outbox ORDER BY seq")
    assert rows == [{"key": "3", "payload": '{"i":4}'}, {"key": "4", "payload": '{"i":1}'}]
    store.close()


def test_quota_thins_telemetry_but_never_drops_sales(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", outbox_max_rows=10, messages=ContractMessages())
    for pump in range(8):
        fill(store, "pump_state", PRIORITY_TELEMETRY, 1, key=str(pump))
    sales = fill(store, "sale", PRIORITY_SALE, 12)
    remaining = store.query("SELECT stream, seq FROM outbox ORDER BY seq")
    assert [r["seq"] for r in remaining if r["stream"] == "sale"] == sales  # all kept
    assert not [r for r in remaining if r["stream"] == "pump_state"]  # thinned first
    store.close()


# --------------------------------------------------------------------------- contract 1.1


def stream_seqs(store: Store, stream: str) -> list[int]:
    rows = store.query("SELECT stream_seq FROM outbox WHERE stream = ? ORDER BY seq", (stream,))
    return [r["stream_seq"] for r in rows]


def test_each_guaranteed_stream_counts_from_one_without_gaps_whatever_is_thinned(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s.db", outbox_max_rows=1000, messages=ContractMessages())
    for _ in range(3):
        fill(store, "pump_state", PRIORITY_TELEMETRY, 4, key="3")  # thinned to the newest
        fill(store, "sale", PRIORITY_SALE, 2)
        fill(store, "alarm", PRIORITY_EVENT, 1)
    assert stream_seqs(store, "sale") == [1, 2, 3, 4, 5, 6]
    assert stream_seqs(store, "alarm") == [1, 2, 3]
    (state,) = store.query("SELECT stream_seq, version FROM outbox WHERE stream = 'pump_state'")
    assert state == {"stream_seq": None, "version": 12}  # twelve values, the newest waits
    fill(store, "pump_state", PRIORITY_TELEMETRY, 1, key="4")  # another key: its own version
    assert store.query("SELECT version FROM outbox WHERE key = '4'") == [{"version": 1}]
    store.close()


def test_a_rolled_back_message_takes_no_seq_and_the_counters_survive_a_restart(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s.db", messages=ContractMessages())
    fill(store, "sale", PRIORITY_SALE, 2)
    with contextlib.suppress(RuntimeError), store.transaction() as tx:
        tx.outbox(tx.messages.shaped("sale", {"lost": True}), PRIORITY_SALE, "t")
        raise RuntimeError("the state change failed: its message goes with it")
    store.outbox_delete([r.seq for r in store.outbox_after({}, 10)])  # the broker took them
    store.close()
    store = Store(tmp_path / "s.db", messages=ContractMessages())
    fill(store, "sale", PRIORITY_SALE, 1)
    assert stream_seqs(store, "sale") == [3]
    store.close()


def test_backend_delivery_keeps_guaranteed_rows_until_acked_and_replays_them(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s.db", messages=ContractMessages())
    fill(store, "sale", PRIORITY_SALE, 5)
    fill(store, "pump_state", PRIORITY_TELEMETRY, 1, key="1")
    rows = store.outbox_after({}, 10)
    ids = {r.stream_seq: r.seq for r in rows if r.stream == "sale"}
    store.outbox_sent([r.seq for r in rows])
    # Latest-value state is done at the PUBACK; the sales wait, sent, for the backend.
    assert (
        store.query("SELECT stream, sent_at IS NOT NULL AS sent FROM outbox")
        == [{"stream": "sale", "sent": 1}] * 5
    )
    assert store.outbox_depth() == 0 and store.outbox_after({}, 10) == []
    assert store.outbox_ack("sale", 2) == {"last_seq": 5, "acked_seq": 2, "removed": 2, "ahead": 0}
    assert store.outbox_ack("sale", 1)["acked_seq"] == 2  # a watermark never goes back
    assert store.outbox_ack("sale", 6)["ahead"] == 1  # past the stream: nothing changes
    assert stream_seqs(store, "sale") == [3, 4, 5]
    store.close()
    # A restart keeps what the backend has not acknowledged.
    store = Store(tmp_path / "s.db", messages=ContractMessages())
    assert store.outbox_replay("sale", 2, 4) == {"asked": 3, "held": 2, "last_seq": 5}
    again = store.outbox_after({}, 10)
    assert [(r.stream_seq, r.seq) for r in again] == [(3, ids[3]), (4, ids[4])]  # same rows
    assert store.outbox_replay("sale", 5, 10**12) == {"asked": 1, "held": 1, "last_seq": 5}
    assert store.outbox_replay("sale", 6, 9) == {"asked": 0, "held": 0, "last_seq": 5}
    summary = store.reader.outbox_summary()
    assert summary["waiting"] == 3 and summary["depth"] == 3
    assert summary["sequences"]["sale"] | {"oldest_unacked_at": None} == {
        "last_seq": 5,
        "acked_seq": 2,
        "dropped": 0,
        "unacked": 3,
        "sent": 0,
        "oldest_unacked_at": None,
    }
    store.close()


def test_over_quota_backend_delivery_gives_up_sent_events_but_never_a_sale(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s.db", outbox_max_rows=10, messages=ContractMessages())
    fill(store, "sale", PRIORITY_SALE, 6)
    fill(store, "alarm", PRIORITY_EVENT, 4)
    store.outbox_sent([r.seq for r in store.outbox_after({}, 20)])
    fill(store, "sale", PRIORITY_SALE, 6)  # the backend acknowledges nothing meanwhile
    assert stream_seqs(store, "sale") == list(range(1, 13))  # past the quota, all kept
    assert stream_seqs(store, "alarm") == []  # sent, unacknowledged: given up
    assert store.reader.outbox_summary()["sequences"]["alarm"]["dropped"] == 4
    store.outbox_forget_sent()  # back to delivery = "broker": the broker took the sent ones
    assert stream_seqs(store, "sale") == list(range(7, 13))
    store.close()


def test_an_upgrade_numbers_the_waiting_messages_of_each_stream(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = sqlite3.connect(path, isolation_level=None)
    for number in range(OUTBOX_SEQUENCES):
        db.executescript(f"BEGIN;\n{MIGRATIONS[number]}\nCOMMIT;")
        db.execute(f"PRAGMA user_version={number + 1}")
    for stream, priority, key in [
        ("sale", 0, None),
        ("pump_state", 2, "1"),
        ("alarm", 1, None),
        ("sale", 0, None),
        ("alarm", 1, None),
    ]:
        db.execute(
            "INSERT INTO outbox (stream, priority, payload, created_at, key)"
            " VALUES (?, ?, '{}', 't', ?)",
            (stream, priority, key),
        )
    db.close()
    store = Store(path, messages=ContractMessages())
    assert store.query("SELECT stream, stream_seq, version FROM outbox ORDER BY seq") == [
        {"stream": "sale", "stream_seq": 1, "version": None},
        {"stream": "pump_state", "stream_seq": None, "version": 1},
        {"stream": "alarm", "stream_seq": 1, "version": None},
        {"stream": "sale", "stream_seq": 2, "version": None},
        {"stream": "alarm", "stream_seq": 2, "version": None},
    ]
    fill(store, "sale", PRIORITY_SALE, 1)
    fill(store, "pump_state", PRIORITY_TELEMETRY, 1, key="1")
    assert stream_seqs(store, "sale") == [1, 2, 3]
    assert store.query("SELECT version FROM outbox WHERE stream = 'pump_state'") == [{"version": 2}]
    store.close()


def test_a_payload_that_could_not_be_sent_is_refused_when_it_is_queued(tmp_path: Path) -> None:
    # The publisher sends a row's payload as it was stored (contract.encode_envelope), so
    # what `encode` would refuse at publish time is refused at the door, and nothing is kept.
    from edgectl.cloud.contract import ContractError

    store = Store(tmp_path / "s.db", messages=ContractMessages())
    for bad in ({"volume": 1.5}, {"amount": Decimal("2.00")}, {"text": "\ud800"}):
        with pytest.raises(ContractError):
            store.queue_event("alarm", bad)
    assert store.query("SELECT COUNT(*) AS n FROM outbox")[0]["n"] == 0
    assert store.query("SELECT COUNT(*) AS n FROM outbox_streams")[0]["n"] == 0
    # Text is kept as UTF-8, as it goes out, not as \u escapes.
    store.queue_event("alarm", {"message": "泵 3 离线, 15 °C"})
    assert store.query("SELECT payload FROM outbox")[0]["payload"] == (
        '{"message":"泵 3 离线, 15 °C"}'
    )
    store.close()
