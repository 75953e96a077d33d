"""The order reasons docs/mqtt.md lists are exactly the ones the station can send."""

from __future__ import annotations

import re
from pathlib import Path

from edgectl.forecourt.authorization import (
    ORDER_REASON,
    ORDER_REASON_LIFTED_NO_FUEL,
    ORDER_STATUS,
)
from edgectl.store import authorizations

DOC = Path(__file__).resolve().parents[2] / "docs" / "mqtt.md"


def documented_reasons() -> set[tuple[str, str]]:
    """(status, reason) of each row of the order-reason table on the page."""
    text = DOC.read_text(encoding="utf-8")
    table = text.split("| status | reason | when |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \|", table, flags=re.MULTILINE)
    assert rows, "the order-reason table is missing from docs/mqtt.md"
    return set(rows)


def test_every_order_reason_the_station_sends_is_documented_and_no_other() -> None:
    sent = {(ORDER_STATUS[state], reason) for state, reason in ORDER_REASON.items()}
    sent.add(("expired", ORDER_REASON_LIFTED_NO_FUEL))
    assert documented_reasons() == sent


def test_the_store_takes_its_order_steps_from_the_lifecycle_tables() -> None:
    """The store keeps no copy of the order steps and reasons: it uses the domain's."""
    assert authorizations.ORDER_STATUS is ORDER_STATUS
    assert authorizations.ORDER_REASON is ORDER_REASON
