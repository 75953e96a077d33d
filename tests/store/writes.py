"""Every write path of the Store, each as one call on a seeded store: the tests of store faults
and of store identity run the whole class, and a test keeps this list complete."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from edgectl.forecourt.sale import AuthorizationSource, AuthorizationState, Sale
from edgectl.store.store import Store

NOW = "2026-11-24T10:00:00.000Z"


@dataclass(frozen=True)
class Seeded:
    """Rows the write paths act on."""

    auth_id: int
    sale_id: int
    audit_id: int
    outbox_seqs: list[int]


def sale(n: int, *, pump: int = 1, auth: int | None = None) -> Sale:
    return Sale(
        pump=pump,
        nozzle=1,
        grade="95",
        volume=Decimal("10.00"),
        amount=Decimal("79.30"),
        unit_price=Decimal("7.93"),
        currency="CNY",
        ended_at=NOW,
        total_volume_after=Decimal(1000 + 10 * n),
        total_amount_after=Decimal(7930 + 80 * n),
        authorization_id=auth,
    )


def seed(store: Store) -> Seeded:
    auth = store.create_authorization(1, AuthorizationSource.ATTENDANT, nozzles=(1,))
    store.create_order(
        order_id="o-1",
        cmd_id="c-1",
        pump=2,
        preset_type="amount",
        preset_value=Decimal("50.00"),
        currency="CNY",
        nozzles=(1,),
        grades=("95",),
        payment_method="card",
        expires_at=None,
    )
    recorded = store.record_sale(sale(1, pump=3))
    store.raise_tank_alarm(1, "tank_low_product", "tank 1 is low")
    store.raise_device_alarm("gauge_offline", "gauge:tls-1", "gauge tls-1: no answer")
    audit_id = store.audit_requested(
        "authorize", {"pump": 1}, client_user="t", peer_uid=0, peer_user="root", peer_pid=1
    )
    store.receive_command("c-9", "price", "{}")
    seqs = [row.seq for row in store.outbox_after({}, 5)]
    return Seeded(auth.id, recorded.id, audit_id, seqs)


TANK_READING = {
    "tank": 1,
    "at": NOW,
    "height_mm": "1200.0",
    "water_mm": "0.0",
    "temperature_c": "15.0",
    "gross_l": "20000",
    "water_l": "0",
    "product_l": "20000",
    "net_l": "19950",
    "ullage_l": "10000",
    "fill_pct": "66.7",
}
DELIVERY = {
    "tank": 1,
    "source": "detected",
    "start_at": NOW,
    "end_at": "2026-11-24T10:30:00.000Z",
    "start_volume": "5000",
    "end_volume": "15000",
    "start_volume_tc": "4990",
    "end_volume_tc": "14980",
    "dispensed_during": "20",
    "dispensed_during_tc": "20",
    "delivered": "10020",
    "delivered_tc": "10010",
}
RECONCILIATION = {
    "tank": 1,
    "day": "2026-11-24",
    "opening": "20000",
    "deliveries": "0",
    "sales": "100",
    "closing": "19900",
    "variance": "0",
    "cumulative_variance": "0",
    "period_throughput": "100",
    "flagged": 0,
}

SHIFT_TOTALS = (
    {
        "pump": 1,
        "nozzle": 1,
        "grade": "95",
        "volume": Decimal(1010),
        "amount": Decimal(8010),
        "source": "store",
        "read_at": NOW,
    },
    {"pump": 1, "nozzle": 2, "grade": "92", "volume": None, "amount": None, "source": "none"},
)

Write = Callable[[Store, Seeded], Any]

# Name of the Store method -> one call of it that changes the store.
WRITES: dict[str, Write] = {
    "create_authorization": lambda s, x: s.create_authorization(2, AuthorizationSource.AUTO),
    "update_authorization": lambda s, x: s.update_authorization(
        x.auth_id, AuthorizationState.AUTHORIZED, pump_state={"pump": 1, "state": "authorised"}
    ),
    "create_order": lambda s, x: s.create_order(
        order_id="o-2",
        cmd_id="c-2",
        pump=4,
        preset_type="volume",
        preset_value=Decimal("20"),
        currency="CNY",
        nozzles=(),
        grades=(),
        payment_method=None,
        expires_at=None,
        command_payload="{}",
    ),
    "set_order_status": lambda s, x: s.set_order_status("o-1", "authorized"),
    "clear_sale": lambda s, x: s.clear_sale(sale_id=x.sale_id),
    "confirm_prices": lambda s, x: s.confirm_prices(
        "ps-1", 1, "applied", None, {"95": "7.99"}, "CNY"
    ),
    "save_price_set": lambda s, x: s.save_price_set("ps-2", {"95": Decimal("8.01")}, None),
    "activate_price_set": lambda s, x: s.activate_price_set("ps-2", {"95": Decimal("8")}, "CNY"),
    "publish_prices": lambda s, x: s.publish_prices(None, {"95": Decimal("7.93")}, "CNY"),
    "receive_command": lambda s, x: s.receive_command("c-3", "stop", "{}"),
    "finish_command": lambda s, x: s.finish_command(
        "c-9", {"type": "price", "status": "ok", "cmd_id": "c-9"}
    ),
    "queue_result": lambda s, x: s.queue_result({"status": "rejected"}),
    "queue_event": lambda s, x: s.queue_event("pump_state", {"pump": 1}, key="1"),
    "record_sale": lambda s, x: s.record_sale(sale(2, auth=x.auth_id)),
    "check_totals": lambda s, x: s.check_totals(1, 2, Decimal(500), Decimal(4000)),
    "raise_alarm": lambda s, x: s.raise_alarm("pump_alarm", "pump 1 alarm 7", pump=1),
    "raise_tank_alarm": lambda s, x: s.raise_tank_alarm(2, "tank_high_water", "water"),
    "clear_tank_alarm": lambda s, x: s.clear_tank_alarm(1, "tank_low_product"),
    "record_tank_reading": lambda s, x: s.record_tank_reading(TANK_READING, history=True),
    "record_delivery": lambda s, x: s.record_delivery("tls-1", DELIVERY),
    "record_reconciliation": lambda s, x: s.record_reconciliation(RECONCILIATION, {"tank": 1}),
    "audit_requested": lambda s, x: s.audit_requested(
        "stop", {"pump": 2}, client_user=None, peer_uid=0, peer_user=None, peer_pid=None
    ),
    "audit_finished": lambda s, x: s.audit_finished(x.audit_id, "ok", None),
    "lift_ended": lambda s, x: s.lift_ended(1),
    "pump_reset": lambda s, x: s.pump_reset(1),
    "raise_alarm_once": lambda s, x: s.raise_alarm_once("backup_failed", "no space"),
    "clear_alarm": lambda s, x: s.clear_alarm("tank_low_product"),
    "purge_old_records": lambda s, x: s.purge_old_records("2099-01-01T00:00:00.000Z"),
    "raise_device_alarm": lambda s, x: s.raise_device_alarm(
        "line_down", "line:l9", "line l9: the port /dev/ttyUSB9 does not exist"
    ),
    "clear_device_alarm": lambda s, x: s.clear_device_alarm("gauge_offline", "gauge:tls-1"),
    "record_device_activity": lambda s, x: s.record_device_activity(
        [{"device": "pump:1", "kind": "pump", "online": 1, "last_seen_at": NOW}],
        [{"device": "pump:1", "at": NOW, "event": "errors", "kind": "bad_crc", "count": 2}],
        [("pump:1", "2026-11-24T10:00:00Z", "bad_crc", 2)],
    ),
    "outbox_ack": lambda s, x: s.outbox_ack("sale", 1),
    "outbox_replay": lambda s, x: s.outbox_replay("sale", 1, 5),
    "outbox_forget_sent": lambda s, x: s.outbox_forget_sent(),
    "probe": lambda s, x: s.probe(),
    "open_shift": lambda s, x: s.open_shift("ana", SHIFT_TOTALS),
    # A shift must be open to be closed: the opening is the write that fails on a full disk.
    "close_shift": lambda s, x: (s.open_shift("ana", SHIFT_TOTALS), s.close_shift("bo", ())),
    # Housekeeping that never fails its caller (it is retried instead):
    "purge_inbox": lambda s, x: s.purge_inbox("2099-01-01T00:00:00.000Z"),
    "outbox_delete": lambda s, x: s.outbox_delete(x.outbox_seqs),
    "outbox_sent": lambda s, x: s.outbox_sent(x.outbox_seqs),
}
HOUSEKEEPING = {"purge_inbox", "outbox_delete", "outbox_sent"}


def write_methods() -> set[str]:
    """The public Store methods that open a write transaction (`self.transaction`)."""
    return {
        name
        for name, member in inspect.getmembers(Store, inspect.isfunction)
        if not name.startswith("_") and "transaction" in member.__code__.co_names
    }


def writes_here() -> list[str]:
    """The listed write paths this Store has (another change may not have landed yet)."""
    return [name for name in WRITES if hasattr(Store, name)]
