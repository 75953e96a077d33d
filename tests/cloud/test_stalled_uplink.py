"""A stalled uplink (a 4G link that stops passing packets without closing) through the fault
proxy of chaos/netproxy.py: the keepalive notices, the station reconnects when the link comes
back, and nothing sold meanwhile is lost or sent twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chaos.netproxy import FaultProxy
from drivers.wayne_dart.codec import DartStatus
from drivers.wayne_dart.sim import Customer, normal_fill
from edgectl.forecourt.sale import AuthorizationSource
from tests.cloudkit import TestCloud, cloud_section
from tests.mqttkit import MosquittoBroker
from tests.stationkit import RunningStation, running_station, until, write_config

pytestmark = pytest.mark.slow

KEEPALIVE_S = 5  # the config's smallest


@dataclass
class Rig:
    station: RunningStation
    cloud: TestCloud
    proxy: FaultProxy


@pytest.fixture
async def rig(tmp_path: Path, mosquitto: MosquittoBroker) -> AsyncIterator[Rig]:
    key = Ed25519PrivateKey.generate()
    async with FaultProxy(mosquitto.port, latency_s=0.01, jitter_s=0.02, seed=1) as proxy:
        config = write_config(
            tmp_path, mode="cloud", extra=cloud_section(proxy.port, key)
        )  # the station's uplink goes through the proxy; the cloud talks to the broker
        async with (
            TestCloud(mosquitto.port, "TEST-01", key) as cloud,
            running_station(config, flow_rate_lps=20.0) as st,
        ):
            await cloud.wait(lambda: cloud.on("state/online"), what="station online")
            yield Rig(st, cloud, proxy)


def sales(cloud: TestCloud) -> list[dict]:
    return [m for t, m, _ in cloud.messages if t.endswith("evt/sale")]


async def test_a_stalled_link_is_noticed_and_what_was_sold_arrives_once(rig: Rig) -> None:
    st, cloud, proxy = rig.station, rig.cloud, rig.proxy
    session = st.daemon.cloud.session  # type: ignore[union-attr]
    await until(lambda: session.connected, what="connected through the proxy")
    proxy.blackhole(True)  # nothing passes, nothing is closed
    await st.daemon.station.authorize(1, AuthorizationSource.ATTENDANT)
    await Customer(st.pump(1), normal_fill(1, Decimal("12.00"))).run()
    await until(lambda: len(st.rows("SELECT * FROM sales")) == 1, what="sale recorded")
    # Only the keepalive can notice: no PINGRESP within a keepalive after the PINGREQ.
    await until(lambda: not session.connected, timeout=4 * KEEPALIVE_S, what="stall noticed")
    assert proxy.connections >= 1  # the stalled connection was never closed by the link
    assert not sales(cloud)
    proxy.blackhole(False)
    await until(lambda: session.connected, timeout=4 * KEEPALIVE_S, what="reconnected")
    [sale] = await cloud.wait(lambda: sales(cloud) or None, timeout=20, what="sale delivered")
    [stored] = st.rows("SELECT amount, uid FROM sales")
    assert sale["data"]["amount"] == stored["amount"] and sale["seq"] == 1
    # The bytes the stalled connection held are delivered late to a broker that already
    # dropped it: the broker must not take them twice (same msg_id at most once per seq).
    await until(lambda: st.rows("SELECT COUNT(*) AS n FROM outbox")[0]["n"] == 0, what="drained")
    assert len({m["msg_id"] for m in sales(cloud)}) == 1
    assert st.pump(1).status is DartStatus.RESET


async def test_orders_sent_during_a_stall_are_carried_out_after_it(rig: Rig) -> None:
    st, cloud, proxy = rig.station, rig.cloud, rig.proxy
    session = st.daemon.cloud.session  # type: ignore[union-attr]
    proxy.blackhole(True)
    await until(lambda: not session.connected, timeout=4 * KEEPALIVE_S, what="stall noticed")
    cmd_id = await cloud.send(
        "authorize",
        {
            "order_id": "o-stall",
            "pump": 2,
            "preset": {"type": "amount", "value": "30.00"},
            "currency": "CNY",
        },
    )
    proxy.blackhole(False)
    result = await cloud.result(cmd_id, timeout=6 * KEEPALIVE_S)
    assert (result["status"], result["code"]) == ("accepted", "ok")
    await until(lambda: st.pump(2).status is DartStatus.AUTHORIZED, what="pump 2 authorized")
