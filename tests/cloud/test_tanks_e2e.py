"""The three tank streams end to end: the real daemon reading a simulated TLS console, a real
Mosquitto, and the cloud's side checking every message against its JSON Schema."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgectl import tank_service
from tests.cloud.test_contract import schema_errors
from tests.cloudkit import TestCloud, cloud_section
from tests.mqttkit import MosquittoBroker
from tests.stationkit import running_station, until, write_config
from tests.tankkit import TANK_TOML, HandClock, console

pytestmark = pytest.mark.slow


async def test_inventory_a_delivery_and_a_reconciliation_reach_the_cloud(
    tmp_path: Path, mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tank_service, "DELIVERIES_INTERVAL_S", 0.5)
    key = Ed25519PrivateKey.generate()
    tanks = TANK_TOML.format(port=tmp_path / "tls", low=1000)
    path = write_config(tmp_path, extra=cloud_section(mosquitto.port, key) + tanks)
    clock = HandClock(datetime.now().astimezone())
    with console(tmp_path, 15000) as (tank, _sim):
        async with (
            TestCloud(mosquitto.port, "TEST-01", key) as cloud,
            running_station(path, wall_clock=clock) as st,
        ):
            inventory = await cloud.wait(lambda: cloud.on("evt/inventory"), what="inventory")
            assert inventory[0]["data"]["tank"] == 1
            assert abs(Decimal(inventory[0]["data"]["product_l"]) - 15000) < 1

            tank.deliver(3000, duration_s=2)
            (delivery,) = await cloud.wait(lambda: cloud.on("evt/delivery"), 30, "delivery")
            assert delivery["data"]["source"] == "gauge"
            assert abs(Decimal(delivery["data"]["delivered"]) - 3000) <= 2

            # The day ends: the service's own timer reconciles it at local midnight.
            await until(lambda: clock.naps >= 1, what="the timer asleep")
            today = clock.now().date()
            midnight = datetime.combine(today + timedelta(days=1), time()).astimezone()
            await clock.move_to(midnight + timedelta(seconds=1))
            (reconciliation,) = await cloud.wait(
                lambda: cloud.on("evt/reconciliation"), what="reconciliation"
            )
            data = reconciliation["data"]
            assert (data["tank"], data["day"]) == (1, today.isoformat())
            assert Decimal(data["deliveries"]) == Decimal(delivery["data"]["delivered_tc"])
            # Opening is the day's first reading, before the drop; closing after it.
            assert abs(Decimal(data["closing"]) - Decimal(data["opening"]) - 3000) < 60

            messages = [body for _topic, body, _raw in cloud.messages if "schema" in body]
            tanks_only = [m for m in messages if m["schema"].split("/")[-1] in KINDS]
            for message in tanks_only:
                kind = message["schema"].split("/")[-1]
                assert schema_errors(kind, message) == [], message
            # Contract 1.1: a delivery and a reconciliation are each their own gap-free stream;
            # the inventory is latest-value state, with a version per tank instead.
            for kind in ("delivery", "reconciliation"):
                stream = [m["seq"] for m in tanks_only if m["schema"].endswith(f"/{kind}")]
                assert stream == list(range(1, len(stream) + 1)) and stream, kind
            versions = [m["version"] for m in tanks_only if m["schema"].endswith("/inventory")]
            assert versions == sorted(versions) and versions
            first = {kind: _first(tanks_only, kind) for kind in KINDS}
            assert first["inventory"] < first["delivery"] < first["reconciliation"]
            await until(
                lambda: st.rows("SELECT COUNT(*) AS n FROM outbox")[0]["n"] == 0, what="drained"
            )


KINDS = ("inventory", "delivery", "reconciliation")


def _first(messages: list[dict[str, Any]], kind: str) -> int:
    """Where the first message of `kind` arrived."""
    return min(i for i, m in enumerate(messages) if m["schema"].endswith(f"/{kind}"))
