"""AckedClient's PUBACK wait against a real Mosquitto behind a fault proxy."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from chaos.netproxy import FaultProxy
from edgectl.cloud.mqtt import AckedClient
from edgectl.errors import CloudError
from tests.mqttkit import MosquittoBroker


async def test_publishes_without_a_puback_time_out_and_later_ones_still_go(
    mosquitto: MosquittoBroker,
) -> None:
    """One timer watches every publish in flight: each still fails on its own once its
    PUBACK is overdue, and a publish made after the stall is acknowledged as before."""
    async with FaultProxy(mosquitto.port) as proxy:
        client = AckedClient(
            hostname="127.0.0.1",
            port=proxy.port,
            identifier="acked-timeout",
            protocol=aiomqtt.ProtocolVersion.V5,
            puback_timeout_s=0.5,
        )
        async with client:
            await client.publish_acked("t/ok", b"before", qos=1)
            proxy.blackhole(True)
            first = asyncio.create_task(client.publish_acked("t/held", b"1", qos=1))
            await asyncio.sleep(0.2)  # a second publish with a later deadline than the first
            second = asyncio.create_task(client.publish_acked("t/held", b"2", qos=1))
            results = await asyncio.gather(first, second, return_exceptions=True)
            assert [getattr(r, "code", r) for r in results] == ["puback_timeout"] * 2
            assert all(isinstance(r, CloudError) for r in results)
            assert not client._pubacks  # nothing left waiting
            proxy.blackhole(False)
            await client.publish_acked("t/ok", b"after", qos=1)


async def test_a_cancelled_wait_leaves_nothing_registered(mosquitto: MosquittoBroker) -> None:
    async with FaultProxy(mosquitto.port) as proxy:
        client = AckedClient(
            hostname="127.0.0.1",
            port=proxy.port,
            identifier="acked-cancel",
            protocol=aiomqtt.ProtocolVersion.V5,
            puback_timeout_s=30.0,
        )
        async with client:
            proxy.blackhole(True)
            task = asyncio.create_task(client.publish_acked("t/held", b"x", qos=1))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not client._pubacks
            proxy.blackhole(False)
