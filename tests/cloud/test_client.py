"""The reference cloud client against a real Mosquitto and the real daemon on simulated pumps."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.wayne_dart.codec import DartStatus
from drivers.wayne_dart.sim import Customer, preset_fill
from edgectl.cloud.client import Broker, CloudClient
from edgectl.cloud.contract import AuthorizeData, CancelData, StopData
from edgectl.errors import CloudError
from tests.cloud.test_contract import schema_errors
from tests.cloudkit import cloud_section
from tests.mqttkit import MOSQUITTO, MosquittoBroker
from tests.stationkit import RunningStation, running_station, until, write_config
from tests.test_cli_cloud import patient_line

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (make installs it)"),
]

STATION = "TEST-01"  # as tests/stationkit.py writes it


@dataclass
class Site:
    station: RunningStation
    broker: MosquittoBroker
    key: Ed25519PrivateKey

    def client(self, **kw: Any) -> CloudClient:
        kw.setdefault("key", self.key)
        kw.setdefault("key_id", "k1")
        return CloudClient(Broker(self.broker.host, self.broker.port), STATION, **kw)


@pytest.fixture
async def site(tmp_path: Path, mosquitto: MosquittoBroker) -> AsyncIterator[Site]:
    key = Ed25519PrivateKey.generate()
    config = write_config(tmp_path, mode="cloud", extra=cloud_section(mosquitto.port, key, "k1"))
    patient_line(config)
    async with running_station(config, flow_rate_lps=20.0) as st:
        cloud = st.daemon.cloud
        assert cloud is not None
        await until(lambda: cloud.session.connected, what="station connected")
        yield Site(st, mosquitto, key)


def order(order_id: str = "o-1", pump: int = 1, amount: str = "20.00") -> AuthorizeData:
    return AuthorizeData(
        order_id=order_id,
        pump=pump,
        preset_type="amount",
        preset_value=Decimal(amount),
        currency="CNY",
    )


async def test_send_returns_the_result_that_came_to_the_reply_topic(site: Site) -> None:
    async with site.client() as cloud:
        command = cloud.command("authorize", order())
        assert schema_errors("cmd-authorize", command) == []
        assert cloud.client_id.startswith("edgectl-cloud-tool-")
        assert cloud.reply_topic.startswith(f"edgectl/v1/{STATION}/reply/")
        async with cloud.follow([cloud.topics.result, f"{cloud.topics.base}/reply/#"]) as seen:
            message = await cloud.request(command)
            topic, copy = await anext(seen)
    assert schema_errors("result", message) == []
    data = message["data"]
    assert (data["status"], data["code"], data["cmd_id"]) == ("accepted", "ok", command["cmd_id"])
    assert data["order_id"] == "o-1" and data["duplicate"] is False
    # Only on the response topic: the shared result topic is for commands without one.
    assert (topic, copy) == (cloud.reply_topic, message)
    pump = site.station.pump(1)
    await until(lambda: pump.status is DartStatus.AUTHORIZED, what="pump authorized")


async def test_same_cmd_id_gets_the_stored_result_and_acts_once(site: Site) -> None:
    async with site.client() as cloud:
        first = await cloud.send("authorize", order(), cmd_id="c-once")
        again = await cloud.send("authorize", order(), cmd_id="c-once")
        other = await cloud.send("stop", StopData(pump=2), cmd_id="c-once")
    assert first["data"]["duplicate"] is False
    assert again["data"]["duplicate"] is True
    assert (again["data"]["status"], again["data"]["code"]) == ("accepted", "ok")
    assert again["msg_id"] != first["msg_id"]
    assert (other["data"]["status"], other["data"]["code"]) == ("rejected", "duplicate")
    assert len(site.station.rows("SELECT * FROM authorizations")) == 1


async def test_commands_that_cannot_be_trusted_are_rejected(site: Site) -> None:
    stranger = Ed25519PrivateKey.generate()
    cases = {
        "unsigned": site.client(key=None, key_id=None),
        "bad_signature": site.client(key=stranger, key_id="k1"),
        "unknown_key": site.client(key=stranger, key_id="k9"),
    }
    for code, client in cases.items():
        async with client as cloud:
            result = (await cloud.send("authorize", order()))["data"]
        assert (result["status"], result["code"]) == ("rejected", code)
    assert site.station.rows("SELECT * FROM authorizations") == []
    assert site.station.pump(1).status is DartStatus.RESET


async def test_follow_sees_states_then_every_step_of_an_order(site: Site) -> None:
    async with site.client() as cloud, cloud.follow(cloud.station_filters()) as messages:
        # The retained states first: the station is online and its pumps idle.
        states: dict[str, Any] = {}
        while [states.get(k) for k in ("online", "pump/1", "pump/2")] != [True, "idle", "idle"]:
            topic, message = await asyncio.wait_for(anext(messages), 5)
            data = message["data"]
            states[topic.split("/state/")[-1]] = data.get("state", data.get("online"))

        await cloud.send("authorize", order(amount="10.00"))
        pump = site.station.pump(1)
        await until(lambda: pump.status is DartStatus.AUTHORIZED, what="pump authorized")
        customer = asyncio.create_task(Customer(pump, preset_fill(2, react_s=0.1)).run())
        steps: list[str] = []
        ids: list[str] = []
        async with asyncio.timeout(30):
            async for topic, message in messages:
                ids.append(message["msg_id"])
                if topic.endswith("/evt/order"):
                    steps.append(message["data"]["status"])
                    if steps[-1] == "completed":
                        sale = message["data"]["sale"]
                        break
        await customer
    assert steps == ["accepted", "authorized", "fuelling", "completed"]
    assert sale["amount"] == "10.00" and sale["order_id"] == "o-1"
    assert len(ids) == len(set(ids))


async def test_follow_shows_a_re_sent_message_once(mosquitto: MosquittoBroker) -> None:
    base = f"edgectl/v1/{STATION}"

    def sale(msg_id: str) -> bytes:
        return json.dumps({"schema": "edgectl/v1/sale", "msg_id": msg_id, "data": {}}).encode()

    client = CloudClient(Broker(mosquitto.host, mosquitto.port), STATION)
    async with (
        client as cloud,
        cloud.follow([f"{base}/evt/#"]) as messages,
        aiomqtt.Client(mosquitto.host, mosquitto.port) as station,
    ):
        for msg_id in ("m-1", "m-1", "m-2"):  # m-1 again, as after a reconnect
            await station.publish(f"{base}/evt/sale", sale(msg_id), qos=1)
        await station.publish(f"{base}/elsewhere", sale("m-3"), qos=1)  # not followed
        await station.publish(f"{base}/evt/alarm", b"not json", qos=1)
        got = [await asyncio.wait_for(anext(messages), 5) for _ in range(3)]
    assert [m.get("msg_id") for _, m in got] == ["m-1", "m-2", None]
    assert got[2] == (f"{base}/evt/alarm", {"unreadable": "not json"})


async def test_one_subscription_per_connection_and_no_delay(site: Site) -> None:
    async with site.client() as cloud:
        for _ in range(3):
            result = await cloud.send("stop", StopData(pump=2))
            assert result["data"]["status"] == "accepted"
        conn = cloud._conn
        assert conn is not None
        sock = conn._client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    # The send path never subscribes: its reply topic was subscribed once, at connect.
    await until(lambda: f"Received DISCONNECT from {cloud.client_id}" in site.broker.log)
    assert site.broker.log.count(f"Received SUBSCRIBE from {cloud.client_id}") == 1
    assert site.broker.log.count(f"Received PUBLISH from {cloud.client_id}") == 3


async def test_no_answer_in_time_is_a_cloud_error(mosquitto: MosquittoBroker) -> None:
    client = CloudClient(Broker(mosquitto.host, mosquitto.port), "NOBODY-1", timeout_s=0.3)
    async with client as cloud:
        with pytest.raises(CloudError) as info:
            await cloud.send("cancel", CancelData(order_id="o-1"))
    assert info.value.code == "no_answer"
    assert "no answer from station NOBODY-1 within 0.3 s" in str(info.value)


async def test_no_broker_is_a_cloud_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        client = CloudClient(Broker("127.0.0.1", port), STATION)
        with pytest.raises(CloudError) as info:
            await client.connect()
    assert info.value.code == "connect_failed"
    assert str(info.value).endswith(f"the broker at 127.0.0.1:{port}: Connection refused")


async def test_a_command_the_broker_refuses_is_reported_not_waited_out(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text(f"topic read edgectl/#\ntopic readwrite edgectl/v1/{STATION}/reply/#\n")
    with MosquittoBroker(tmp_path, acl_file=acl) as broker:
        client = CloudClient(Broker(broker.host, broker.port), STATION, timeout_s=5)
        async with client as cloud:
            with pytest.raises(CloudError) as info:
                await asyncio.wait_for(cloud.send("stop", StopData(pump=1)), 2)
    assert info.value.code == "publish_refused"
    assert "Not authorized" in str(info.value)


async def test_a_lost_connection_ends_follow_and_send(mosquitto: MosquittoBroker) -> None:
    client = CloudClient(Broker(mosquitto.host, mosquitto.port), STATION)
    async with client as cloud, cloud.follow([f"edgectl/v1/{STATION}/#"]) as messages:
        waiting = asyncio.create_task(anext(messages))
        await asyncio.sleep(0.1)
        mosquitto.stop()
        with pytest.raises(CloudError) as info:
            await asyncio.wait_for(waiting, 5)
        assert info.value.code == "connection_lost"
        assert not cloud.connected
        with pytest.raises(CloudError):
            await cloud.send("stop", StopData(pump=1))


def test_command_data_must_match_the_type() -> None:
    client = CloudClient(Broker("127.0.0.1"), STATION)
    with pytest.raises(ValueError, match="not the data of a 'cancel'"):
        client.command("cancel", StopData(pump=1))
    unsigned = client.command("stop", StopData(pump=1), cmd_id="c-1", valid_for_s=30)
    assert "sig" not in unsigned and "key_id" not in unsigned
    assert unsigned["cmd_id"] == "c-1" and unsigned["data"] == {"pump": 1}
    with pytest.raises(ValueError, match="key_id"):
        CloudClient(Broker("127.0.0.1"), STATION, key=Ed25519PrivateKey.generate())
