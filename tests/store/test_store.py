"""The SQLite store: durability settings, idempotent sales, totals checks, corrupt files."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from edgectl.cloud.messages import ContractMessages
from edgectl.errors import StoreError
from edgectl.forecourt.sale import (
    Authorization,
    AuthorizationSource,
    AuthorizationState,
    Sale,
)
from edgectl.store.schema import MIGRATIONS
from edgectl.store.store import OrderExists, Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "edgectl.db", messages=ContractMessages())
    yield s
    s.close()


def make_sale(**overrides: object) -> Sale:
    values: dict[str, object] = dict(
        pump=1,
        nozzle=1,
        grade="95",
        volume=Decimal("10.00"),
        amount=Decimal("78.90"),
        unit_price=Decimal("7.89"),
        currency="CNY",
        ended_at="2026-11-24T10:00:00.000Z",
        total_volume_after=Decimal("1010.00"),
        total_amount_after=Decimal("7978.90"),
    )
    values.update(overrides)
    return Sale(**values)  # type: ignore[arg-type]


def test_opens_in_wal_with_full_sync_and_latest_schema(store: Store) -> None:
    assert store.query("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
    assert store.query("PRAGMA synchronous")[0]["synchronous"] == 2  # FULL
    assert store.schema_version == len(MIGRATIONS)


def test_reopen_keeps_data_and_does_not_migrate_twice(tmp_path: Path) -> None:
    first = Store(tmp_path / "s.db", messages=ContractMessages())
    first.record_sale(make_sale())
    first.close()
    again = Store(tmp_path / "s.db", messages=ContractMessages())
    assert len(again.sales()) == 1
    assert again.schema_version == len(MIGRATIONS)
    again.close()


def test_sale_is_recorded_once_even_when_read_again(store: Store) -> None:
    first = store.record_sale(make_sale())
    second = store.record_sale(make_sale(ended_at="2026-11-24T10:05:00.000Z"))
    assert first.created and not second.created
    assert second.id == first.id
    assert len(store.sales()) == 1


def test_sale_commits_its_outbox_event_and_closes_its_authorization(store: Store) -> None:
    auth = store.create_authorization(
        1, AuthorizationSource.AUTO, nozzles=(1,), preset_amount=Decimal("100.00")
    )
    assert store.open_authorization(1) == auth
    recorded = store.record_sale(make_sale(authorization_id=auth.id))
    closed = store.authorization(auth.id)
    assert closed is not None and closed.state is AuthorizationState.COMPLETED
    assert store.open_authorization(1) is None
    rows = store.query("SELECT stream, payload FROM outbox")
    assert [r["stream"] for r in rows] == ["sale"]
    assert f'"sale_id":{recorded.id}' in rows[0]["payload"]
    assert '"amount":"78.90"' in rows[0]["payload"]  # money as decimal strings


def test_one_sale_per_authorization_even_without_totals(store: Store) -> None:
    auth = store.create_authorization(2, AuthorizationSource.AUTO)
    sale = make_sale(
        pump=2, total_volume_after=None, total_amount_after=None, authorization_id=auth.id
    )
    assert store.record_sale(sale).created
    assert not store.record_sale(make_sale(pump=2, authorization_id=auth.id)).created


def test_totals_that_match_the_sale_raise_nothing(store: Store) -> None:
    store.check_totals(1, 1, Decimal("1000.00"), Decimal("7900.00"))
    recorded = store.record_sale(make_sale())
    assert recorded.totals_alarm is None
    assert store.alarms() == []
    assert store.nozzle_totals(1, 1) == (Decimal("1010.00"), Decimal("7978.90"))


def test_totals_delta_that_disagrees_raises_an_alarm(store: Store) -> None:
    store.check_totals(1, 1, Decimal("990.00"), Decimal("7821.10"))  # 10 L missing
    recorded = store.record_sale(make_sale())
    assert recorded.totals_alarm is not None and "missed or tampered" in recorded.totals_alarm
    alarms = store.alarms()
    assert [a["kind"] for a in alarms] == ["totals_mismatch"]
    assert alarms[0]["severity"] == "critical"


def test_totals_that_moved_while_idle_mean_an_unrecorded_sale(store: Store) -> None:
    assert store.check_totals(3, 2, Decimal("500.00"), Decimal("3945.00")) is None
    assert store.check_totals(3, 2, Decimal("500.00"), Decimal("3945.00")) is None
    problem = store.check_totals(3, 2, Decimal("520.00"), Decimal("4102.80"))
    assert problem is not None and "unrecorded dispensing" in problem
    backwards = store.check_totals(3, 2, Decimal("100.00"), Decimal("4102.80"))
    assert backwards is not None and "backwards" in backwards
    assert [a["kind"] for a in store.alarms()] == ["missed_sale", "missed_sale"]


def test_authorization_states_are_recorded(store: Store) -> None:
    auth = store.create_authorization(
        4, AuthorizationSource.ATTENDANT, requested_by="alice", preset_volume=Decimal("20.00")
    )
    store.update_authorization(auth.id, AuthorizationState.AUTHORIZED)
    store.update_authorization(auth.id, AuthorizationState.EXPIRED, "no nozzle lifted in time")
    row = store.query("SELECT * FROM authorizations WHERE id = ?", (auth.id,))[0]
    assert row["state"] == "expired" and row["reason"] == "no nozzle lifted in time"
    assert row["requested_by"] == "alice" and row["preset_volume"] == "20.00"


def _order(
    store: Store, order_id: str = "o-1", cmd_id: str = "c-1", **extra: object
) -> Authorization:
    values: dict[str, object] = dict(
        order_id=order_id,
        cmd_id=cmd_id,
        pump=2,
        preset_type="amount",
        preset_value=Decimal("50.00"),
        currency="CNY",
        nozzles=(1, 2),
        grades=(),
        payment_method=None,
        expires_at=None,
    )
    values.update(extra)
    return store.create_order(**values)  # type: ignore[arg-type]


def test_order_and_its_command_are_persisted_in_one_commit(store: Store) -> None:
    auth = _order(store, command_payload='{"cmd_id": "c-1"}')
    inbox = store.command_result("c-1")
    assert inbox is not None and inbox["type"] == "authorize" and inbox["result"] is None
    assert inbox["payload"] == '{"cmd_id": "c-1"}'
    assert store.peek_command("c-1") == inbox  # the event loop's own connection sees it
    order = store.order("o-1")
    assert order is not None and order["authorization_id"] == auth.id
    events = [r for r in store.outbox_after({}, 10) if r.stream == "order"]
    assert [json.loads(r.payload)["status"] for r in events] == ["accepted"]


def test_taken_order_id_writes_nothing(store: Store) -> None:
    _order(store)
    depth = store.outbox_depth()
    with pytest.raises(OrderExists, match="exists already"):
        _order(store, cmd_id="c-2", command_payload="{}")
    assert store.command_result("c-2") is None
    assert len(store.query("SELECT * FROM authorizations")) == 1
    assert store.outbox_depth() == depth


def test_authorization_update_carries_the_pump_state(store: Store) -> None:
    auth = _order(store)
    before = store.outbox_depth()
    state = {"pump": 2, "state": "authorised", "order_id": "o-1"}
    now = store.update_authorization(auth.id, AuthorizationState.AUTHORIZED, pump_state=state)
    assert now is not None and now.state is AuthorizationState.AUTHORIZED
    rows = sorted(store.outbox_after({}, 10), key=lambda r: r.seq)[before:]
    assert [(r.stream, r.key, r.retain) for r in rows] == [
        ("order", None, 0),
        ("pump_state", "2", 1),
    ]


def test_failed_transaction_leaves_nothing_behind(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.outbox(tx.messages.shaped("sale", {"x": 1}), 0, "now")
        raise RuntimeError("power cut")
    assert store.outbox_depth() == 0


def test_corrupt_database_is_a_clear_store_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as err:
        Store(path, messages=ContractMessages())
    assert "not an SQLite database" in str(err.value) and "restore" in str(err.value)
    assert err.value.code == "store_corrupt"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={len(MIGRATIONS) + 5}")
    db.close()
    with pytest.raises(StoreError, match="upgrade edgectl"):
        Store(path, messages=ContractMessages())
