"""The fleet's topic ACLs (config/broker/mosquitto-acl.conf) on a real Mosquitto: a station
publishes only under its own id and reads only its own commands; the backend reads every
station's events on a shared subscription and commands any station."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from tests.mqttkit import MOSQUITTO, MosquittoBroker, write_password_file

ACL = Path(__file__).resolve().parents[2] / "config" / "broker" / "mosquitto-acl.conf"
USERS = {"ST-A": "pa", "ST-B": "pb", "backend": "pw"}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    passwords = write_password_file(tmp_path / "passwords", USERS)
    with MosquittoBroker(tmp_path, password_file=passwords, acl_file=ACL) as running:
        yield running


def client(broker: MosquittoBroker, user: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=f"acl-{user}",
        username=user,
        password=USERS[user],
        protocol=aiomqtt.ProtocolVersion.V5,
    )


async def next_payload(c: aiomqtt.Client, timeout: float = 3.0) -> bytes | None:
    try:
        async with asyncio.timeout(timeout):
            async for message in c.messages:
                return bytes(message.payload)  # type: ignore[arg-type]
    except TimeoutError:
        return None
    return None


async def test_a_station_reads_only_its_own_commands(broker: MosquittoBroker) -> None:
    """Mosquitto grants the SUBSCRIBE and checks `read` at delivery: another station's
    commands and events never reach a station, whatever it subscribed to."""
    async with client(broker, "ST-A") as a, client(broker, "backend") as backend:
        await a.subscribe("edgectl/v1/ST-B/cmd/#", qos=1)
        await a.subscribe("edgectl/v1/+/evt/#", qos=1)
        await a.subscribe("edgectl/v1/ST-A/cmd/#", qos=1)
        await backend.publish("edgectl/v1/ST-B/cmd/stop", b"for b", qos=1)
        await backend.publish("edgectl/v1/ST-B/evt/sale", b"b's sale", qos=1)  # refused anyway
        await backend.publish("edgectl/v1/ST-A/cmd/stop", b"for a", qos=1)
        assert await next_payload(a) == b"for a"
        assert await next_payload(a, timeout=0.5) is None


async def test_a_station_publishes_only_under_its_own_id(broker: MosquittoBroker) -> None:
    async with client(broker, "backend") as backend, client(broker, "ST-A") as a:
        await backend.subscribe("$share/ingest/edgectl/v1/+/evt/#", qos=1)
        await a.publish("edgectl/v1/ST-B/evt/sale", b"forged", qos=1)  # refused (rc 135)
        await a.publish("edgectl/v1/ST-A/evt/sale", b"own", qos=1)
        assert await next_payload(backend) == b"own"  # the forged one never arrived
        assert await next_payload(backend, timeout=0.5) is None
        # A result on a response topic under the station's own reply/ tree is allowed.
        await backend.subscribe("$share/ingest/edgectl/v1/+/reply/#", qos=1)
        await a.publish("edgectl/v1/ST-B/reply/w1", b"forged answer", qos=1)  # refused
        await a.publish("edgectl/v1/ST-A/reply/w1", b"answer", qos=1)
        assert await next_payload(backend) == b"answer"
    assert "ST-A" in broker.log and "(m1, rc135)" in broker.log


async def test_the_backend_commands_any_station_and_a_station_none(
    broker: MosquittoBroker,
) -> None:
    async with (
        client(broker, "ST-A") as a,
        client(broker, "ST-B") as b,
        client(broker, "backend") as backend,
    ):
        await b.subscribe("edgectl/v1/ST-B/cmd/#", qos=1)
        await a.publish("edgectl/v1/ST-B/cmd/stop", b"from a", qos=1)  # refused
        await backend.publish("edgectl/v1/ST-B/cmd/stop", b"from backend", qos=1)
        assert await next_payload(b) == b"from backend"
        assert await next_payload(b, timeout=0.5) is None


async def test_a_real_station_works_within_its_acl(tmp_path: Path, broker: MosquittoBroker) -> None:
    """Everything the daemon publishes (online and its will, pump states, prices, results,
    orders, sales) lies inside its ACL: a pay-at-pump sale goes through end to end, and the
    broker refused nothing of the station's."""
    from decimal import Decimal

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from drivers.wayne_dart.sim import Customer, normal_fill
    from tests.cloudkit import TestCloud, cloud_section
    from tests.stationkit import running_station, write_config

    key = Ed25519PrivateKey.generate()
    section = cloud_section(broker.port, key) + 'username = "ST-A"\npassword = "pa"\n'
    config = write_config(tmp_path, mode="cloud", extra=section)
    text = config.read_text().replace('id = "TEST-01"', 'id = "ST-A"')
    config.write_text(text)
    async with (
        TestCloud(broker.port, "ST-A", key, username="backend", password="pw") as cloud,
        running_station(config, flow_rate_lps=20.0) as st,
    ):
        await cloud.wait(lambda: cloud.on("state/online"), what="station online")
        order = {
            "order_id": "o-acl",
            "pump": 1,
            "preset": {"type": "amount", "value": "20.00"},
            "currency": "CNY",
        }
        result = await cloud.result(await cloud.send("authorize", order))
        assert result["status"] == "accepted"
        await Customer(st.pump(1), normal_fill(1, Decimal("20.00"))).run()
        await cloud.wait(lambda: cloud.on("evt/sale"), what="sale")
        await cloud.wait(lambda: len(cloud.on("state/pump/2")) > 0, what="pump states")
        assert cloud.on("state/prices")
    assert "rc135" not in broker.log  # not one of the station's publishes was refused
