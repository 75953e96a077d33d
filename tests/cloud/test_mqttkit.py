"""The tests' own Mosquitto: what the tests standing for the cloud rely on it for."""

from __future__ import annotations

import contextlib

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.cloud.test_session import cloud_client, next_message
from tests.mqttkit import MOSQUITTO, MosquittoBroker

pytestmark = pytest.mark.skipif(
    MOSQUITTO is None, reason="mosquitto is not installed (make installs it)"
)

# More than Mosquitto's default max_queued_messages (1000) and max_inflight_messages (20).
BEHIND = 1100


async def test_a_subscriber_far_behind_loses_none_of_its_messages(
    mosquitto: MosquittoBroker,
) -> None:
    """An observer reading in the test's own event loop falls behind a fast station (aiomqtt
    reads one packet per wakeup); the broker keeps all it is owed rather than drop past 1000.
    Here it is behind by all of them: offline, with a session the broker keeps."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 300
    kept = {"name": "behind", "clean_start": False, "properties": properties}
    async with cloud_client(mosquitto, "t/behind", **kept):
        pass  # subscribed; its session stays and collects
    async with aiomqtt.Client(
        mosquitto.host, mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5
    ) as station:
        for n in range(BEHIND):
            await station.publish("t/behind", str(n).encode(), qos=1)
    received: list[bytes] = []
    async with cloud_client(mosquitto, **kept) as observer:
        with contextlib.suppress(TimeoutError):  # what the broker dropped never comes
            while len(received) < BEHIND:
                received.append(bytes((await next_message(observer, timeout=2)).payload))
    assert received == [str(n).encode() for n in range(BEHIND)]
    assert "being dropped" not in mosquitto.log
