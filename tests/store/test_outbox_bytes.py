"""The outbox keeps, byte for byte, the data the contract's builders give for each outcome.

The store shapes no message itself: it hands its rows to `ContractMessages`. These tests build
each message a second way, straight from the contract's functions with the figures written
out, and hold the stored text (and stream, key, retain, numbering) equal to it.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from edgectl.cloud import contract
from edgectl.cloud.messages import ContractMessages
from edgectl.forecourt.sale import AuthorizationSource, AuthorizationState, Sale
from edgectl.store.messages import NoOutboxMessages
from edgectl.store.store import Store

NOW = "2026-11-24T10:00:00.000Z"


def rows(store: Store) -> list[dict[str, Any]]:
    return store.query(
        "SELECT stream, payload, key, retain, stream_seq, version FROM outbox ORDER BY seq"
    )


def data(value: dict[str, Any]) -> str:
    return contract.encode_data(value)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "s.db", clock=lambda: NOW, messages=ContractMessages())


def test_an_order_and_its_sale_are_the_contracts_bytes(store: Store) -> None:
    auth = store.create_order(
        order_id="o-1",
        cmd_id="c-1",
        pump=2,
        preset_type="amount",
        preset_value=Decimal("50.00"),
        currency="CNY",
        nozzles=(1,),
        grades=("95",),
        payment_method="card",
        expires_at="2026-11-24T10:05:00.000Z",
    )
    store.update_authorization(auth.id, AuthorizationState.AUTHORIZED)
    sale = Sale(
        pump=2,
        nozzle=1,
        grade="95",
        volume=Decimal("6.305"),
        amount=Decimal("50.00"),
        unit_price=Decimal("7.93"),
        currency="CNY",
        ended_at=NOW,
        total_volume_after=Decimal("1006.305"),
        total_amount_after=Decimal("8010.00"),
        authorization_id=auth.id,
        price_set_id="ps-7",
    )
    recorded = store.record_sale(sale)
    preset = {"preset_type": "amount", "preset_value": Decimal("50.00"), "currency": "CNY"}
    expires = {"expires_at": "2026-11-24T10:05:00.000Z"}
    sale_data = contract.sale_data(
        sale_id=recorded.id,
        uid=sale.uid,
        pump=2,
        nozzle=1,
        grade="95",
        volume=Decimal("6.305"),
        amount=Decimal("50.00"),
        unit_price=Decimal("7.93"),
        currency="CNY",
        ended_at=NOW,
        authorized_by="cloud",
        order_id="o-1",
        price_set_id="ps-7",
        total_volume_after=Decimal("1006.305"),
        total_amount_after=Decimal("8010.00"),
    )
    assert rows(store) == [
        {
            "stream": "order",
            "payload": data(contract.order_data("o-1", 2, "accepted", **preset, **expires)),
            "key": None,
            "retain": 0,
            "stream_seq": 1,
            "version": None,
        },
        {
            "stream": "order",
            "payload": data(
                contract.order_data("o-1", 2, "authorized", authorized_at=NOW, **preset, **expires)
            ),
            "key": None,
            "retain": 0,
            "stream_seq": 2,
            "version": None,
        },
        {
            "stream": "order",
            "payload": data(
                contract.order_data(
                    "o-1",
                    2,
                    "completed",
                    sale=sale_data,
                    authorized_at=NOW,
                    **preset,
                    **expires,
                )
            ),
            "key": None,
            "retain": 0,
            "stream_seq": 3,
            "version": None,
        },
        {
            "stream": "sale",
            "payload": data(sale_data),
            "key": None,
            "retain": 0,
            "stream_seq": 1,
            "version": None,
        },
    ]


def test_an_alarm_raised_and_cleared_is_the_contracts_bytes(store: Store) -> None:
    alarm_id = store.raise_alarm(
        "totals_mismatch", "pump 1 nozzle 2: totals moved", severity="critical", pump=1, nozzle=2
    )
    assert store.clear_alarm("totals_mismatch", pump=1) == 1
    raised = contract.alarm_data(
        alarm_id,
        "totals_mismatch",
        "critical",
        "pump 1 nozzle 2: totals moved",
        raised_at=NOW,
        pump=1,
        nozzle=2,
    )
    # The cleared event names the pump, not the nozzle: as the store has always sent it.
    cleared = contract.alarm_data(
        alarm_id,
        "totals_mismatch",
        "critical",
        "pump 1 nozzle 2: totals moved",
        raised_at=NOW,
        pump=1,
        cleared_at=NOW,
    )
    assert [(r["stream"], r["payload"], r["stream_seq"]) for r in rows(store)] == [
        ("alarm", data(raised), 1),
        ("alarm", data(cleared), 2),
    ]


def test_prices_and_a_delivery_are_the_contracts_bytes(store: Store) -> None:
    prices = {"95": Decimal("7.93"), "92": Decimal("7.41")}
    store.confirm_prices("ps-7", 3, "failed", "pump_refused", {"95": "7.93"}, "CNY")
    store.publish_prices("ps-7", prices, "CNY")
    delivery_id = store.record_delivery(
        "tls",
        {
            "tank": 2,
            "source": "gauge",
            "start_at": "2026-11-24T11:00:00+01:00",
            "end_at": "2026-11-24T10:30:00Z",
            "start_volume": Decimal("5000.0"),
            "end_volume": "15000.0",
            "start_volume_tc": "4990.0",
            "end_volume_tc": "14980.0",
            "dispensed_during": "20.5",
            "dispensed_during_tc": "20.4",
            "delivered": Decimal("10020.5"),
            "delivered_tc": "10010.0",
        },
    )
    assert delivery_id is not None
    grade = contract.GradePrice
    expected = [
        {
            "stream": "price",
            "payload": data(
                contract.price_data(
                    "ps-7",
                    3,
                    "failed",
                    [grade("95", Decimal("7.93"))],
                    "pump_refused",
                    currency="CNY",
                )
            ),
            "key": None,
            "retain": 0,
            "stream_seq": 1,
            "version": None,
        },
        {
            "stream": "prices",
            "payload": data(
                contract.prices_data(
                    "ps-7",
                    [grade("92", Decimal("7.41")), grade("95", Decimal("7.93"))],
                    currency="CNY",
                )
            ),
            "key": "prices",
            "retain": 1,
            "stream_seq": None,
            "version": 1,
        },
        {
            "stream": "delivery",
            "payload": data(
                contract.delivery_data(
                    delivery_id,
                    2,
                    "gauge",
                    start_at="2026-11-24T10:00:00.000Z",
                    end_at="2026-11-24T10:30:00.000Z",
                    start_volume=Decimal("5000.0"),
                    end_volume=Decimal("15000.0"),
                    delivered=Decimal("10020.5"),
                    delivered_tc=Decimal("10010.0"),
                    dispensed_during=Decimal("20.5"),
                )
            ),
            "key": None,
            "retain": 0,
            "stream_seq": 1,
            "version": None,
        },
    ]
    assert rows(store) == expected


def test_a_shaped_message_is_encoded_as_the_contract_encodes_it(store: Store) -> None:
    state = {"pump": 4, "state": "idle", "note": "zwölf"}
    store.queue_event("pump_state", state, priority=2, key="4", retain=True)
    store.queue_result({"cmd_id": "c-1", "status": "ok"}, topic="t/1", correlation=b"x")
    assert [
        (r["stream"], r["payload"], r["key"], r["retain"], r["version"]) for r in rows(store)
    ] == [
        ("pump_state", data(state), "4", 1, 1),
        ("result", data({"cmd_id": "c-1", "status": "ok"}), None, 0, None),
    ]


def test_a_store_without_message_shapes_refuses_to_queue_and_writes_nothing(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s.db", clock=lambda: NOW)
    with pytest.raises(NoOutboxMessages) as refused:
        store.raise_alarm("missed_sale", "unrecorded dispensing", pump=1)
    assert refused.value.code == "store_no_outbox"
    assert store.alarms() == [] and rows(store) == []  # the alarm's row went with it
    # What tells the cloud nothing is written as ever.
    auth = store.create_authorization(1, AuthorizationSource.AUTO)
    assert store.open_authorization(1) == auth
