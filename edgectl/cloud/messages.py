"""The store's outcomes in the cloud's shapes: `ContractMessages`, the store's `OutboxMessages`.

The daemon (and whatever else opens a store that writes) hands one to the `Store`, which
passes each outcome's rows here inside the transaction that records it and keeps the encoded
data the contract gives back; the publisher sends those bytes without encoding them again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from edgectl.cloud import contract
from edgectl.store.messages import Message


class ContractMessages:
    """Each message built by the contract's builders (`contract.sale_data`, …) and encoded
    with `contract.encode_data`; a latest-value stream is one of `contract.LATEST_VALUE`."""

    def sale(self, sale: Mapping[str, Any]) -> Message:
        return _message("sale", _sale_data(sale))

    def order(
        self,
        order: Mapping[str, Any],
        sale: Mapping[str, Any] | None,
        authorized_at: str | None,
    ) -> Message:
        sale_data = None if sale is None else _sale_data(sale)
        data = contract.order_data(
            order["order_id"],
            order["pump"],
            order["status"],
            reason=order["reason"],
            sale=sale_data if order["status"] == "completed" else None,
            authorized_at=authorized_at,
            preset_type=order["preset_type"],
            preset_value=Decimal(order["preset_value"]),
            currency=order["currency"],
            expires_at=order["expires_at"],
        )
        return _message("order", data)

    def alarm(
        self,
        alarm_id: int,
        kind: str,
        severity: str,
        message: str,
        *,
        raised_at: str,
        cleared_at: str | None = None,
        pump: int | None = None,
        nozzle: int | None = None,
    ) -> Message:
        data = contract.alarm_data(
            alarm_id,
            kind,
            severity,  # type: ignore[arg-type]  # the contract checks it
            message,
            raised_at=raised_at,
            pump=pump,
            nozzle=nozzle,
            cleared_at=cleared_at,
        )
        return _message("alarm", data)

    def price(
        self,
        price_set_id: str,
        pump: int,
        status: str,
        reason: str | None,
        prices: Mapping[str, Decimal | str],
        currency: str,
    ) -> Message:
        data = contract.price_data(
            price_set_id,
            pump,
            status,  # type: ignore[arg-type]  # the contract checks it
            _grade_prices(prices),
            reason,
            currency=currency,
        )
        return _message("price", data)

    def prices(
        self, price_set_id: str | None, prices: Mapping[str, Decimal], currency: str
    ) -> Message:
        data = contract.prices_data(price_set_id, _grade_prices(prices), currency=currency)
        return _message("prices", data, key="prices", retain=True)

    def delivery(self, delivery_id: int, values: Mapping[str, Any]) -> Message:
        dispensed = values["dispensed_during"]
        data = contract.delivery_data(
            delivery_id,
            int(values["tank"]),
            values["source"],
            start_at=_stamp(values["start_at"]),
            end_at=_stamp(values["end_at"]),
            start_volume=Decimal(str(values["start_volume"])),
            end_volume=Decimal(str(values["end_volume"])),
            delivered=Decimal(str(values["delivered"])),
            delivered_tc=Decimal(str(values["delivered_tc"])),
            dispensed_during=None if dispensed is None else Decimal(dispensed),
        )
        return _message("delivery", data)

    def shaped(
        self, stream: str, data: Mapping[str, Any], *, key: str | None = None, retain: bool = False
    ) -> Message:
        return _message(stream, data, key=key, retain=retain)


def _message(
    stream: str, data: Mapping[str, Any], *, key: str | None = None, retain: bool = False
) -> Message:
    return Message(
        stream,
        # Checked and encoded once, here: the publisher sends it as it is.
        contract.encode_data(data),
        key=key,
        latest=stream in contract.LATEST_VALUE,
        retain=retain,
    )


def _sale_data(row: Mapping[str, Any]) -> dict[str, Any]:
    return contract.sale_data(
        sale_id=row["id"],
        uid=row["uid"],
        pump=row["pump"],
        nozzle=row["nozzle"],
        grade=row["grade"],
        volume=Decimal(row["volume"]),
        amount=Decimal(row["amount"]),
        unit_price=Decimal(row["unit_price"]),
        currency=row["currency"],
        ended_at=row["ended_at"],
        authorized_by=row["authorized_by"] or "none",
        order_id=row["order_id"],
        price_set_id=row["price_set_id"],
        total_volume_before=_dec(row["total_volume_before"]),
        total_amount_before=_dec(row["total_amount_before"]),
        total_volume_after=_dec(row["total_volume_after"]),
        total_amount_after=_dec(row["total_amount_after"]),
    )


def _dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _stamp(iso: str) -> str:
    """An ISO time (any offset) as the contract writes times: UTC, milliseconds, Z."""
    return contract.timestamp(datetime.fromisoformat(iso))


def _grade_prices(prices: Mapping[str, Decimal | str]) -> list[contract.GradePrice]:
    return [contract.GradePrice(g, Decimal(p)) for g, p in sorted(prices.items())]
