"""A pump closed at the station, as the cloud sees it: its state says `closed`, an order for it
is refused `pump_closed` and acts on nothing; opened again, it takes orders (real Mosquitto,
the real daemon, DART pumps)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.wayne_dart.codec import DartStatus
from tests.cloudkit import TestCloud, cloud_section
from tests.mqttkit import MosquittoBroker
from tests.stationkit import RunningStation, running_station, until, write_config

pytestmark = pytest.mark.slow


@pytest.fixture
async def rig(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> AsyncIterator[tuple[RunningStation, TestCloud]]:
    key = Ed25519PrivateKey.generate()
    config = write_config(tmp_path, mode="cloud", extra=cloud_section(mosquitto.port, key))
    async with (
        TestCloud(mosquitto.port, "TEST-01", key) as cloud,
        running_station(config) as st,
    ):
        await cloud.wait(lambda: cloud.on("state/online"), what="station online")
        yield st, cloud


def order(order_id: str, pump: int = 1) -> dict[str, object]:
    return {
        "order_id": order_id,
        "pump": pump,
        "preset": {"type": "amount", "value": "20.00"},
        "currency": "CNY",
    }


async def test_an_order_for_a_closed_pump_is_refused_with_its_code(
    rig: tuple[RunningStation, TestCloud],
) -> None:
    st, cloud = rig
    station = st.daemon.station
    await station.close_pump(1, by="cli:tech", reason="calibration")
    await cloud.wait(
        lambda: [m for m in cloud.on("state/pump/1") if m["data"]["state"] == "closed"],
        what="pump 1 shown closed",
    )
    closed = [m for m in cloud.on("state/pump/1") if m["data"]["state"] == "closed"][-1]
    assert closed["data"]["state_code"] == 2 and closed["data"]["status"] == "reset"
    assert closed["data"]["online"] is True

    cmd_id = await cloud.send("authorize", order("o-closed"))
    result = await cloud.result(cmd_id)
    assert (result["status"], result["code"]) == ("rejected", "pump_closed")
    assert result["order_id"] == "o-closed"
    assert "pump 1 is closed" in result["message"]
    assert st.rows("SELECT * FROM orders") == []  # nothing recorded: no evt/order at all
    assert st.rows("SELECT * FROM authorizations") == []
    assert cloud.orders("o-closed") == []
    assert st.pump(1).status is DartStatus.RESET

    # Another pump is not concerned; opened again, pump 1 takes orders.
    other = await cloud.send("authorize", order("o-2", pump=2))
    assert (await cloud.result(other))["code"] == "ok"
    await station.open_pump(1, by="cli:tech")
    await cloud.wait(
        lambda: [m for m in cloud.on("state/pump/1") if m["data"]["state"] == "idle"],
        what="pump 1 idle again",
    )
    again = await cloud.send("authorize", order("o-open"))
    assert (await cloud.result(again))["code"] == "ok"
    await until(lambda: st.pump(1).status is DartStatus.AUTHORIZED, what="pump 1 authorized")
