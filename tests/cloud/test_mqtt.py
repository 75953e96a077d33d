"""AckedClient's PUBACK wait against a real Mosquitto behind a fault proxy."""

from __future__ import annotations

import asyncio
from pathlib import Path

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


# ------------------------------------------------------------------ publish_then: no wait


class Outcomes:
    """What a publish_then's callback was called with, in order."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []

    def __call__(self, error: CloudError | None) -> None:
        self.seen.append(None if error is None else error.code)


def acked_client(port: int, name: str, timeout: float) -> AckedClient:
    return AckedClient(
        hostname="127.0.0.1",
        port=port,
        identifier=name,
        protocol=aiomqtt.ProtocolVersion.V5,
        puback_timeout_s=timeout,
    )


async def test_publish_then_calls_back_once_per_message_on_its_puback(
    mosquitto: MosquittoBroker,
) -> None:
    async with acked_client(mosquitto.port, "then-ok", 30.0) as client:
        outcomes = [Outcomes() for _ in range(100)]
        for i, done in enumerate(outcomes):
            assert client.publish_then("t/then", str(i).encode(), done, qos=1) is not None
        assert all(not done.seen for done in outcomes)  # nothing before its PUBACK
        async with asyncio.timeout(5):
            while any(not done.seen for done in outcomes):
                await asyncio.sleep(0.01)
        assert [done.seen for done in outcomes] == [[None]] * 100
        assert not client._pubacks
        # QoS 0: nothing to wait for, and the callback is never called.
        never = Outcomes()
        assert client.publish_then("t/then", b"q0", never, qos=0) is None
        await client.publish_acked("t/then", b"after", qos=1)
        assert not never.seen


async def test_publish_then_calls_back_with_the_timeout_and_the_lost_connection(
    mosquitto: MosquittoBroker,
) -> None:
    async with (
        FaultProxy(mosquitto.port) as proxy,
        acked_client(proxy.port, "then-faults", 0.3) as client,
    ):
        proxy.blackhole(True)
        late = Outcomes()
        client.publish_then("t/held", b"1", late, qos=1)
        await asyncio.sleep(0.5)
        assert late.seen == ["puback_timeout"]
        lost = [Outcomes() for _ in range(3)]
        for done in lost:
            client.publish_then("t/held", b"2", done, qos=1)
        client.puback_timeout_s = 30.0
        assert proxy.drop() == 1  # the connection goes with three in flight
        async with asyncio.timeout(5):
            while any(not done.seen for done in lost):
                await asyncio.sleep(0.01)
        assert [done.seen for done in lost] == [["connection_lost"]] * 3
        assert late.seen == ["puback_timeout"]  # once only
        assert not client._pubacks


async def test_a_callback_that_raises_does_not_keep_the_others_from_theirs(
    mosquitto: MosquittoBroker,
) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        async with (
            FaultProxy(mosquitto.port) as proxy,
            acked_client(proxy.port, "then-raises", 30.0) as client,
        ):
            proxy.blackhole(True)

            def broken(error: CloudError | None) -> None:
                raise RuntimeError("a broken callback")

            after = Outcomes()
            client.publish_then("t/held", b"1", broken, qos=1)
            client.publish_then("t/held", b"2", after, qos=1)
            client.fail_pending(CloudError("gone", code="connection_lost"))
            assert after.seen == ["connection_lost"]
            assert [type(c["exception"]) for c in reported] == [RuntimeError]
            assert not client._pubacks
            proxy.blackhole(False)
    finally:
        loop.set_exception_handler(None)


async def test_publish_then_reports_a_refusal(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite allowed/#\n")
    with MosquittoBroker(tmp_path, acl_file=acl) as broker:
        async with acked_client(broker.port, "then-refused", 30.0) as client:
            refused, taken = Outcomes(), Outcomes()
            client.publish_then("elsewhere/evt", b"x", refused, qos=1)
            client.publish_then("allowed/evt", b"x", taken, qos=1)
            async with asyncio.timeout(5):
                while not (refused.seen and taken.seen):
                    await asyncio.sleep(0.01)
            assert (refused.seen, taken.seen) == (["publish_refused"], [None])
