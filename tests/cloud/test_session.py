"""The station's MQTT session against a real Mosquitto: presence, Will, commands in order,
acknowledgement after the handler, outages and broker restarts, TLS, passwords, latency."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import ssl
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from chaos.netproxy import FaultProxy
from edgectl.cloud.contract import Topics
from edgectl.cloud.session import CloudSession, IncomingCommand, reconnect_delay
from edgectl.config import CloudConfig
from edgectl.errors import CloudError
from tests.cloud.test_contract import schema_errors
from tests.mqttkit import MOSQUITTO, MosquittoBroker, make_certificates, write_password_file

pytestmark = pytest.mark.skipif(
    MOSQUITTO is None, reason="mosquitto is not installed (make installs it)"
)

STATION = "TEST-1"
TOPICS = Topics("edgectl", STATION)
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


def cloud_for(broker: MosquittoBroker, **changes: Any) -> CloudConfig:
    """Fast settings for tests: short keepalive, heartbeat and reconnect delays."""
    config = CloudConfig(
        host=broker.host,
        port=broker.port,
        client_id=f"edgectl-{STATION}",
        tls=False,
        keepalive_s=5,
        heartbeat_s=0.2,
        reconnect_min_s=0.05,
        reconnect_max_s=0.4,
    )
    return replace(config, **changes)


class Inbox:
    """What the station's command handler saw, in order."""

    def __init__(self) -> None:
        self.commands: list[IncomingCommand] = []
        self.behaviour: Callable[[IncomingCommand], Awaitable[None]] | None = None

    async def handle(self, command: IncomingCommand) -> None:
        self.commands.append(command)
        if self.behaviour is not None:
            await self.behaviour(command)

    @property
    def payloads(self) -> list[bytes]:
        return [c.payload for c in self.commands]


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@asynccontextmanager
async def running(
    session: CloudSession, *, connect: bool = True
) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(session.run(), name="session-under-test")
    try:
        if connect:
            async with asyncio.timeout(5):
                await session.wait_connected()
        yield task
    finally:
        if not task.done():
            async with asyncio.timeout(10):
                await session.stop()
        await task


@asynccontextmanager
async def cloud_client(
    broker: MosquittoBroker, *subscriptions: str, name: str = "test-cloud", **kwargs: Any
) -> AsyncIterator[aiomqtt.Client]:
    """A client standing for the cloud side (or an observer)."""
    client = aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=name,
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=NODELAY,
        **kwargs,
    )
    async with client:
        for topic in subscriptions:
            await client.subscribe(topic, qos=1)
        yield client


async def next_message(client: aiomqtt.Client, timeout: float = 5.0) -> aiomqtt.Message:
    async with asyncio.timeout(timeout):
        return await anext(client.messages)


def online_of(message: aiomqtt.Message) -> bool:
    body = json.loads(bytes(message.payload))
    assert schema_errors("online", body) == []
    assert body["station"] == STATION
    online: bool = body["data"]["online"]
    return online


def station_socket(session: CloudSession) -> socket.socket:
    """The live socket of the session (a test peeks inside to cut or inspect it)."""
    link = session._link
    assert link is not None and link.sock is not None
    return link.sock


async def send_commands(broker: MosquittoBroker, *payloads: bytes, kind: str = "stop") -> None:
    async with cloud_client(broker, name="test-sender") as sender:
        for payload in payloads:
            await sender.publish(TOPICS.command(kind), payload, qos=1)


# ------------------------------------------------------------------ presence


async def test_connects_and_publishes_retained_online(mosquitto: MosquittoBroker) -> None:
    session = CloudSession(cloud_for(mosquitto), STATION, on_command=Inbox().handle)
    async with running(session):
        assert session.connected
        assert session.session_present is False  # first connection ever
        async with cloud_client(mosquitto, TOPICS.online) as observer:
            message = await next_message(observer)
            assert message.retain  # retained: a late subscriber sees it at once
            assert online_of(message) is True
            body = json.loads(bytes(message.payload))
            assert body["seq"] == 0 and body["data"]["version"]
    # MQTT 5 (p5), clean start off (c0), our keepalive (k5): the broker's own view.
    assert f"as edgectl-{STATION} (p5, c0, k5)" in mosquitto.log
    assert session.publishes >= 1 and session.last_puback_at is not None


async def test_stop_announces_offline_and_disconnects_cleanly(mosquitto: MosquittoBroker) -> None:
    session = CloudSession(cloud_for(mosquitto), STATION, on_command=Inbox().handle)
    async with running(session):
        pass
    assert not session.connected
    await eventually(lambda: f"Received DISCONNECT from edgectl-{STATION}" in mosquitto.log)
    async with cloud_client(mosquitto, TOPICS.online) as observer:
        message = await next_message(observer)
        assert message.retain and online_of(message) is False


async def test_cancelling_run_also_announces_offline(mosquitto: MosquittoBroker) -> None:
    session = CloudSession(cloud_for(mosquitto), STATION, on_command=Inbox().handle)
    task = asyncio.create_task(session.run())
    async with asyncio.timeout(5):
        await session.wait_connected()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: f"Received DISCONNECT from edgectl-{STATION}" in mosquitto.log)
    async with cloud_client(mosquitto, TOPICS.online) as observer:
        assert online_of(await next_message(observer)) is False


async def test_last_will_when_the_connection_dies(mosquitto: MosquittoBroker) -> None:
    session = CloudSession(cloud_for(mosquitto), STATION, on_command=Inbox().handle)
    async with running(session), cloud_client(mosquitto, TOPICS.online) as observer:
        assert online_of(await next_message(observer)) is True
        # The link dies without a DISCONNECT (as when the power or the network goes): the
        # broker sees the TCP connection end and publishes the Will.
        station_socket(session).shutdown(socket.SHUT_RDWR)
        will = await next_message(observer)
        assert online_of(will) is False
        # The session comes back by itself and says so.
        assert online_of(await next_message(observer)) is True
        await eventually(lambda: session.connected and session.reconnects == 1)
        assert session.last_error is not None and session.last_error.code == "connection_lost"


async def test_heartbeat_while_connected(mosquitto: MosquittoBroker) -> None:
    session = CloudSession(cloud_for(mosquitto), STATION, on_command=Inbox().handle)
    async with running(session), cloud_client(mosquitto, TOPICS.heartbeat) as observer:
        beats = [await next_message(observer) for _ in range(3)]
    for beat in beats:
        assert beat.qos == 0
        body = json.loads(bytes(beat.payload))
        assert schema_errors("heartbeat", body) == []
        assert body["station"] == STATION and body["seq"] == 0


async def test_heartbeat_payload_can_be_supplied(mosquitto: MosquittoBroker) -> None:
    async def beat() -> bytes:
        return b'{"custom":true}'

    session = CloudSession(cloud_for(mosquitto), STATION, on_command=Inbox().handle, heartbeat=beat)
    async with running(session), cloud_client(mosquitto, TOPICS.heartbeat) as observer:
        assert bytes((await next_message(observer)).payload) == b'{"custom":true}'


# ------------------------------------------------------------------ commands


async def test_commands_arrive_in_order_with_their_properties(mosquitto: MosquittoBroker) -> None:
    inbox = Inbox()
    session = CloudSession(cloud_for(mosquitto), STATION, on_command=inbox.handle)
    async with running(session), cloud_client(mosquitto, name="test-sender") as sender:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ResponseTopic = "cloud/replies/worker-7"
        properties.CorrelationData = b"\x00corr-1"
        await sender.publish(TOPICS.command("authorize"), b"first", qos=1, properties=properties)
        payloads = [f"cmd-{i}".encode() for i in range(30)]
        for payload in payloads:
            await sender.publish(TOPICS.command("stop"), payload, qos=1)
        await eventually(lambda: len(inbox.commands) == 31)
    first = inbox.commands[0]
    assert (first.topic, first.type, first.payload) == (
        TOPICS.command("authorize"),
        "authorize",
        b"first",
    )
    assert first.response_topic == "cloud/replies/worker-7"
    assert first.correlation_data == b"\x00corr-1"
    assert inbox.payloads[1:] == payloads
    assert all(c.type == "stop" and c.response_topic is None for c in inbox.commands[1:])
    assert session.commands == 31


async def test_commands_sent_while_the_station_was_away_are_delivered(
    mosquitto: MosquittoBroker,
) -> None:
    cloud = cloud_for(mosquitto)
    first = Inbox()
    async with running(CloudSession(cloud, STATION, on_command=first.handle)):
        pass  # the broker now holds a session for the station
    await send_commands(mosquitto, b"while-away-1", b"while-away-2", b"while-away-3")

    # A new process: a new session object, the same client id.
    second = Inbox()
    session = CloudSession(cloud, STATION, on_command=second.handle)
    async with running(session):
        await eventually(lambda: len(second.commands) == 3)
        assert session.session_present is True
    assert second.payloads == [b"while-away-1", b"while-away-2", b"while-away-3"]
    assert first.commands == []


async def test_broker_restart_session_reconnects_and_resumes(mosquitto: MosquittoBroker) -> None:
    inbox = Inbox()
    with structlog.testing.capture_logs() as logs:
        session = CloudSession(cloud_for(mosquitto), STATION, on_command=inbox.handle)
        async with running(session):
            await send_commands(mosquitto, b"before")
            await eventually(lambda: inbox.payloads == [b"before"])
            mosquitto.stop()
            await eventually(lambda: not session.connected)
            await asyncio.sleep(0.5)  # several failed attempts while the broker is down
            mosquitto.start()
            async with asyncio.timeout(5):
                await session.wait_connected()
            assert session.reconnects == 1
            assert session.session_present is True  # the broker kept it on disk
            await send_commands(mosquitto, b"after")
            await eventually(lambda: inbox.payloads == [b"before", b"after"])
    events = [entry["event"] for entry in logs]
    # One line when the link went, one when it came back; the retries in between are quiet.
    assert events.count("cloud_disconnected") == 1
    assert events.count("cloud_reconnected") == 1
    assert events.count("cloud_still_unreachable") >= 1
    assert "cloud_unreachable" not in events


async def test_every_connection_is_announced_with_the_session_present_flag(
    mosquitto: MosquittoBroker,
) -> None:
    """The station queues its retained state again on each connection, told whether the
    broker kept the session: first connection, a restart that kept the database, one that
    lost it."""
    seen: list[bool] = []

    async def connected(session_present: bool) -> None:
        seen.append(session_present)

    session = CloudSession(
        cloud_for(mosquitto), STATION, on_command=Inbox().handle, on_connected=connected
    )
    async with running(session):
        await eventually(lambda: seen == [False])
        mosquitto.restart()
        await eventually(lambda: seen == [False, True], timeout=10)
        mosquitto.stop()
        (mosquitto.directory / "mosquitto.db").unlink(missing_ok=True)
        mosquitto.start()
        await eventually(lambda: seen == [False, True, False], timeout=10)
        assert session.connected and session.session_present is False


async def test_commands_queued_for_the_station_survive_a_broker_restart(
    mosquitto: MosquittoBroker,
) -> None:
    cloud = cloud_for(mosquitto)
    async with running(CloudSession(cloud, STATION, on_command=Inbox().handle)):
        pass
    await send_commands(mosquitto, b"queued-1", b"queued-2")
    mosquitto.restart()  # SIGTERM: Mosquitto writes sessions and queued messages to disk
    inbox = Inbox()
    session = CloudSession(cloud, STATION, on_command=inbox.handle)
    async with running(session):
        await eventually(lambda: len(inbox.commands) == 2)
        assert session.session_present is True
    assert inbox.payloads == [b"queued-1", b"queued-2"]


async def test_command_whose_handler_failed_is_delivered_again(mosquitto: MosquittoBroker) -> None:
    inbox = Inbox()
    failed: list[bytes] = []

    async def fail_once(command: IncomingCommand) -> None:
        if command.payload == b"A" and not failed:
            failed.append(command.payload)
            raise RuntimeError("disk full")  # nothing persisted: must not be acknowledged

    inbox.behaviour = fail_once
    session = CloudSession(cloud_for(mosquitto), STATION, on_command=inbox.handle)
    async with running(session):
        await send_commands(mosquitto, b"A", b"B")
        await eventually(lambda: inbox.payloads.count(b"B") == 1 and session.connected)
    # A came back after the reconnect and before B: nothing was acknowledged out of order.
    assert inbox.payloads == [b"A", b"A", b"B"]
    assert session.reconnects == 1
    assert session.last_error is not None and session.last_error.code == "handler_failed"


async def test_command_interrupted_before_persisting_is_delivered_after_restart(
    mosquitto: MosquittoBroker,
) -> None:
    cloud = cloud_for(mosquitto)
    first = Inbox()
    started = asyncio.Event()

    async def hang(command: IncomingCommand) -> None:
        started.set()
        await asyncio.Event().wait()  # the daemon dies here, before committing

    first.behaviour = hang
    session = CloudSession(cloud, STATION, on_command=first.handle)
    task = asyncio.create_task(session.run())
    async with asyncio.timeout(5):
        await session.wait_connected()
        await send_commands(mosquitto, b"A")
        await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    second = Inbox()
    async with running(CloudSession(cloud, STATION, on_command=second.handle)):
        await eventually(lambda: second.payloads == [b"A"])
    assert first.payloads == [b"A"]


async def test_acknowledged_command_is_not_delivered_again(mosquitto: MosquittoBroker) -> None:
    cloud = cloud_for(mosquitto)
    first = Inbox()
    async with running(CloudSession(cloud, STATION, on_command=first.handle)):
        await send_commands(mosquitto, b"A")
        await eventually(lambda: first.payloads == [b"A"])
        await asyncio.sleep(0.1)  # the PUBACK reaches the broker
    second = Inbox()
    async with running(CloudSession(cloud, STATION, on_command=second.handle)):
        await send_commands(mosquitto, b"B")
        await eventually(lambda: second.payloads == [b"B"])


# ------------------------------------------------------------------ publishing


async def test_publish_returns_after_puback(mosquitto: MosquittoBroker) -> None:
    session = CloudSession(cloud_for(mosquitto), STATION, on_command=Inbox().handle)
    async with running(session), cloud_client(mosquitto, TOPICS.event("sale")) as observer:
        before = session.publishes
        await session.publish(TOPICS.event("sale"), b'{"n":1}', qos=1)
        assert session.publishes == before + 1
        assert session.last_puback_at is not None
        assert bytes((await next_message(observer)).payload) == b'{"n":1}'
    await eventually(lambda: "Sending PUBACK to edgectl-TEST-1" in mosquitto.log)


async def test_publish_carries_correlation_data(mosquitto: MosquittoBroker) -> None:
    session = CloudSession(cloud_for(mosquitto), STATION, on_command=Inbox().handle)
    async with running(session), cloud_client(mosquitto, "replies/#") as observer:
        await session.publish(
            "replies/w1", b"r", response_topic="replies/back", correlation_data=b"c-7"
        )
        message = await next_message(observer)
    assert message.properties is not None
    assert getattr(message.properties, "CorrelationData", None) == b"c-7"
    assert getattr(message.properties, "ResponseTopic", None) == "replies/back"


async def test_many_concurrent_publishes_within_the_inflight_cap(
    mosquitto: MosquittoBroker,
) -> None:
    cloud = cloud_for(mosquitto, max_inflight=4)
    session = CloudSession(cloud, STATION, on_command=Inbox().handle)
    async with running(session), cloud_client(mosquitto, TOPICS.event("order")) as observer:
        await asyncio.gather(
            *(session.publish(TOPICS.event("order"), str(i).encode()) for i in range(200))
        )
        received = [int(bytes((await next_message(observer)).payload)) for _ in range(200)]
    assert sorted(received) == list(range(200))


async def test_publish_refused_by_the_broker_raises(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite edgectl/#\n")
    with MosquittoBroker(tmp_path, acl_file=acl) as broker:
        session = CloudSession(cloud_for(broker), STATION, on_command=Inbox().handle)
        async with running(session):
            with pytest.raises(CloudError) as info:
                await session.publish("elsewhere/evt", b"x")
            assert info.value.code == "publish_refused"
            assert "Not authorized" in str(info.value)
            await session.publish(TOPICS.event("sale"), b"x")  # the link is still fine


async def test_aiomqtt_alone_reports_a_refused_publish_as_success(tmp_path: Path) -> None:
    """Pins the aiomqtt 2.5 behaviour that made session.publish bypass it: the PUBACK's
    reason code is ignored. If this starts failing, aiomqtt has changed; see session.py."""
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite edgectl/#\n")
    with MosquittoBroker(tmp_path, acl_file=acl) as broker:
        async with cloud_client(broker) as client:
            await client.publish("elsewhere/evt", b"x", qos=1)  # no exception
        await eventually(lambda: "Sending PUBACK to test-cloud (m1, rc135)" in broker.log)


async def test_publish_when_not_connected_raises(mosquitto: MosquittoBroker) -> None:
    session = CloudSession(cloud_for(mosquitto), STATION, on_command=Inbox().handle)
    with pytest.raises(CloudError) as info:
        await session.publish(TOPICS.event("sale"), b"x")
    assert info.value.code == "not_connected"
    async with running(session):
        mosquitto.stop()
        await eventually(lambda: not session.connected)
        with pytest.raises(CloudError) as info:
            await session.publish(TOPICS.event("sale"), b"x")
        assert info.value.code == "not_connected"


async def test_publish_in_flight_fails_when_the_link_drops(mosquitto: MosquittoBroker) -> None:
    session = CloudSession(cloud_for(mosquitto), STATION, on_command=Inbox().handle)
    async with running(session):
        mosquitto.kill()
        with pytest.raises(CloudError) as info:
            async with asyncio.timeout(5):  # not aiomqtt's 10 s, nor the PUBACK timeout
                while True:
                    await session.publish(TOPICS.event("sale"), b"x" * 1000)
        assert info.value.code in {"connection_lost", "not_connected"}


async def test_publish_then_holds_a_place_in_the_window_until_its_puback(
    mosquitto: MosquittoBroker,
) -> None:
    """The outbox's way to publish: no wait for the PUBACK, and the window still capped."""
    async with FaultProxy(mosquitto.port) as proxy:
        session = CloudSession(
            cloud_for(mosquitto, port=proxy.port, max_inflight=4, heartbeat_s=60),
            STATION,
            on_command=Inbox().handle,
        )
        async with running(session), cloud_client(mosquitto, TOPICS.event("order")) as observer:
            seen: list[tuple[int, str | None]] = []

            def done(n: int) -> Callable[[CloudError | None], None]:
                return lambda error: seen.append((n, None if error is None else error.code))

            before = session.publishes
            proxy.blackhole(True)
            for n in range(4):  # the window: each returns at once
                async with asyncio.timeout(1):
                    await session.publish_then(TOPICS.event("order"), str(n).encode(), done(n))
            fifth = asyncio.create_task(session.publish_then(TOPICS.event("order"), b"4", done(4)))
            await asyncio.sleep(0.2)
            assert not fifth.done() and not seen  # the window is full
            proxy.blackhole(False)
            await fifth
            await eventually(lambda: len(seen) == 5)
            assert sorted(seen) == [(n, None) for n in range(5)]
            assert session.publishes == before + 5
            received = [int(bytes((await next_message(observer)).payload)) for _ in range(5)]
            assert received == [0, 1, 2, 3, 4]


async def test_publish_then_fails_what_is_in_flight_when_the_link_drops(
    mosquitto: MosquittoBroker,
) -> None:
    async with FaultProxy(mosquitto.port) as proxy:
        session = CloudSession(
            cloud_for(mosquitto, port=proxy.port, max_inflight=3),
            STATION,
            on_command=Inbox().handle,
        )
        never: list[CloudError | None] = []
        with pytest.raises(CloudError) as info:  # not connected: never called back
            await session.publish_then(TOPICS.event("order"), b"x", never.append)
        assert info.value.code == "not_connected"
        async with running(session):
            seen: list[str | None] = []
            proxy.blackhole(True)
            for _ in range(3):
                await session.publish_then(
                    TOPICS.event("order"), b"x", lambda e: seen.append(e and e.code)
                )
            waiting = asyncio.create_task(
                session.publish_then(TOPICS.event("order"), b"x", never.append)
            )
            await asyncio.sleep(0.1)
            proxy.drop()
            proxy.blackhole(False)
            await eventually(lambda: len(seen) == 3)
            assert seen == ["connection_lost"] * 3
            with pytest.raises(CloudError) as info:  # waited for room on a link now gone
                await waiting
            assert info.value.code == "not_connected"
            await eventually(lambda: session.connected)  # reconnected, and publishing again
            await session.publish(TOPICS.event("order"), b"y")
        assert never == []


def counted_sends(link: Any) -> list[int]:
    """The length of every `send` the link's paho client makes from now on."""
    sends: list[int] = []
    send = link._client._sock_send

    def counted(data: bytes | bytearray) -> int:
        sends.append(len(data))
        return send(data)

    setattr(link._client, "_sock_send", counted)  # noqa: B010
    return sends


async def test_the_packets_queued_together_go_out_in_one_send(mosquitto: MosquittoBroker) -> None:
    """paho writes each packet with a `send` of its own; the link joins those waiting. A QoS 0
    one (paho calls its on_publish once written) goes on its own, in its place."""
    cloud = cloud_for(mosquitto, heartbeat_s=60)
    session = CloudSession(cloud, STATION, on_command=Inbox().handle)
    async with running(session), cloud_client(mosquitto, TOPICS.event("order")) as observer:
        link = session._link
        assert link is not None
        sends = counted_sends(link)
        acked: list[CloudError | None] = []
        for n in range(10):  # none of these waits: all queued before paho writes
            await session.publish_then(TOPICS.event("order"), str(n).encode(), acked.append)
        await session.publish(TOPICS.event("order"), b"q0", qos=0)
        for n in range(10, 20):
            await session.publish_then(TOPICS.event("order"), str(n).encode(), acked.append)
        await eventually(lambda: len(acked) == 20)
        assert acked == [None] * 20
        assert len(sends) == 3  # ten PUBLISHes, the QoS 0 one, ten more
        received = [bytes((await next_message(observer)).payload) for _ in range(21)]
    expected = [str(n).encode() for n in range(10)] + [b"q0"]
    assert received == expected + [str(n).encode() for n in range(10, 20)]


async def test_large_packets_are_joined_up_to_a_bound_and_arrive_whole(
    mosquitto: MosquittoBroker,
) -> None:
    session = CloudSession(cloud_for(mosquitto, heartbeat_s=60), STATION, on_command=Inbox().handle)
    async with running(session), cloud_client(mosquitto, TOPICS.event("order")) as observer:
        link = session._link
        assert link is not None
        sends = counted_sends(link)
        payloads = [bytes([65 + n]) * 20_000 for n in range(16)]  # 320 kB in one go
        acked: list[CloudError | None] = []
        for payload in payloads:
            await session.publish_then(TOPICS.event("order"), payload, acked.append)
        await eventually(lambda: len(acked) == 16)
        received = [bytes((await next_message(observer)).payload) for _ in range(16)]
    assert received == payloads
    assert 4 <= len(sends) < 16 and max(sends) < 65_536 + 20_100  # a run stops past 64 KiB


async def test_joined_packets_written_a_few_bytes_at_a_time_arrive_whole_and_in_order(
    mosquitto: MosquittoBroker,
) -> None:
    """A socket that takes 53 bytes at most and then is full until the loop's next turn: a
    joined run is written in pieces, more packets (QoS 0 ones among them) queue behind its
    unwritten rest and are joined with it; the broker still reads every packet whole."""
    cloud = cloud_for(mosquitto, heartbeat_s=60, max_inflight=8)
    session = CloudSession(cloud, STATION, on_command=Inbox().handle)
    async with running(session), cloud_client(mosquitto, TOPICS.event("order")) as observer:
        link = session._link
        assert link is not None
        send = link._client._sock_send
        full = [False]

        def trickle(data: bytes | bytearray) -> int:
            full[0] = not full[0]
            if not full[0]:
                raise BlockingIOError
            return send(data[:53])

        setattr(link._client, "_sock_send", trickle)  # noqa: B010
        payloads = [f"{n}:".encode() + bytes([65 + n % 26]) * (n * 37 % 300) for n in range(120)]
        acked: list[CloudError | None] = []
        for n, payload in enumerate(payloads):
            if n % 7 == 3:
                await session.publish(TOPICS.event("order"), payload, qos=0)
            else:
                await session.publish_then(TOPICS.event("order"), payload, acked.append)
        expected_acks = len([n for n in range(120) if n % 7 != 3])
        await eventually(lambda: len(acked) == expected_acks, timeout=20)
        assert acked == [None] * expected_acks
        received = [bytes((await next_message(observer)).payload) for _ in payloads]
        assert session._link is link  # the same connection all along
    assert received == payloads


# ------------------------------------------------------------------ security


async def test_tls_with_client_certificate(tmp_path: Path) -> None:
    with MosquittoBroker(tmp_path, tls=True, require_certificate=True) as broker:
        certs = broker.certs
        assert certs is not None
        cloud = cloud_for(
            broker,
            tls=True,
            ca_file=certs.ca_file,
            cert_file=certs.client_cert,
            key_file=certs.client_key,
        )
        inbox = Inbox()
        session = CloudSession(cloud, STATION, on_command=inbox.handle)
        async with running(session):
            sock = station_socket(session)
            assert isinstance(sock, ssl.SSLSocket)
            assert sock.version() in {"TLSv1.2", "TLSv1.3"}
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            context = ssl.create_default_context(cafile=str(certs.ca_file))
            context.load_cert_chain(certs.client_cert, certs.client_key)
            async with cloud_client(broker, tls_context=context) as sender:
                await sender.publish(TOPICS.command("stop"), b"over-tls", qos=1)
            await eventually(lambda: inbox.payloads == [b"over-tls"])

        # The same station without its client certificate is turned away.
        no_cert = CloudSession(
            replace(cloud, cert_file=None, key_file=None), STATION, on_command=Inbox().handle
        )
        async with running(no_cert, connect=False):
            await eventually(lambda: no_cert.last_error is not None)
            assert not no_cert.connected
        assert no_cert.last_error is not None
        assert no_cert.last_error.code in {"connect_failed", "connection_lost"}


async def test_tls_refuses_a_broker_signed_by_another_ca(tmp_path: Path) -> None:
    other = make_certificates(tmp_path / "other")
    with MosquittoBroker(tmp_path, tls=True) as broker:
        cloud = cloud_for(broker, tls=True, ca_file=other.ca_file)
        session = CloudSession(cloud, STATION, on_command=Inbox().handle)
        async with running(session, connect=False):
            await eventually(lambda: session.last_error is not None)
        assert session.last_error is not None
        assert "CERTIFICATE_VERIFY_FAILED" in str(session.last_error)
        assert not session.connected


def test_unreadable_tls_files_fail_at_construction(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    cloud = CloudConfig(host="127.0.0.1", client_id="x", ca_file=bad)
    with pytest.raises(CloudError) as info:
        CloudSession(cloud, STATION, on_command=Inbox().handle)
    assert info.value.code == "tls"


async def test_username_and_password(tmp_path: Path) -> None:
    passwords = write_password_file(tmp_path / "passwd", {"station-1": "s3cret"})
    with MosquittoBroker(tmp_path, password_file=passwords) as broker:
        good = CloudSession(
            cloud_for(broker, username="station-1", password="s3cret"),
            STATION,
            on_command=Inbox().handle,
        )
        async with running(good):
            assert good.connected
        bad = CloudSession(
            cloud_for(broker, username="station-1", password="wrong"),
            STATION,
            on_command=Inbox().handle,
        )
        async with running(bad, connect=False):
            await eventually(lambda: bad.last_error is not None)
        assert bad.last_error is not None
        assert bad.last_error.code == "connect_refused"
        assert not bad.connected


async def test_unreachable_broker_keeps_trying_and_stops_promptly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    cloud = CloudConfig(
        host="127.0.0.1",
        port=port,
        client_id="x",
        tls=False,
        reconnect_min_s=0.02,
        reconnect_max_s=0.05,
    )
    session = CloudSession(cloud, STATION, on_command=Inbox().handle)
    async with running(session, connect=False):
        await asyncio.sleep(0.3)
        assert session.last_error is not None
        assert session.last_error.code == "connect_failed"
        started = time.monotonic()
    assert time.monotonic() - started < 1.0


async def test_broker_that_never_answers_times_out_and_closes_the_socket() -> None:
    """A listener that accepts but never sends a CONNACK: each attempt gives up after the
    timeout (keepalive_s) and its socket is closed, nothing is left half-open."""
    accepted: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append((reader, writer))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cloud = CloudConfig(
        host="127.0.0.1",
        port=port,
        client_id="x",
        tls=False,
        keepalive_s=1,
        reconnect_min_s=0.05,
        reconnect_max_s=0.1,
    )
    session = CloudSession(cloud, STATION, on_command=Inbox().handle)
    async with server:
        async with running(session, connect=False):
            await eventually(lambda: len(accepted) >= 1)
            reader, _ = accepted[0]
            async with asyncio.timeout(3):
                await reader.read()  # returns at end of stream: the station closed its attempt
            await eventually(lambda: session.last_error is not None)
        for _, writer in accepted:
            writer.close()
    assert session.last_error is not None
    assert session.last_error.code == "connect_failed"


# ------------------------------------------------------------------ latency


async def test_tcp_nodelay_and_round_trip(mosquitto: MosquittoBroker) -> None:
    """TCP_NODELAY is on the station's socket; a command → result round trip through the
    broker takes about a millisecond here (Nagle + delayed ACK would make it 40+ ms)."""
    session: CloudSession

    async def answer(command: IncomingCommand) -> None:
        assert command.response_topic is not None
        await session.publish(
            command.response_topic, b"ok", correlation_data=command.correlation_data
        )

    session = CloudSession(cloud_for(mosquitto), STATION, on_command=answer)
    async with running(session), cloud_client(mosquitto, "replies/rtt") as client:
        assert station_socket(session).getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        rounds: list[float] = []
        for i in range(50):
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = "replies/rtt"
            properties.CorrelationData = str(i).encode()
            started = time.perf_counter()
            await client.publish(TOPICS.command("stop"), b"ping", qos=1, properties=properties)
            reply = await next_message(client)
            rounds.append(time.perf_counter() - started)
            assert reply.properties is not None
            assert getattr(reply.properties, "CorrelationData", None) == str(i).encode()
    median_ms = statistics.median(rounds) * 1000
    p90_ms = statistics.quantiles(rounds, n=10)[-1] * 1000
    print(f"\ncommand -> result round trip: median {median_ms:.2f} ms, p90 {p90_ms:.2f} ms")


# ------------------------------------------------------------------ backoff


def test_reconnect_delay_is_jittered_and_capped() -> None:
    rng = random.Random(7)
    for failures in range(12):
        cap = min(60.0, 1.0 * 2 ** (failures + 1))
        delays = [reconnect_delay(failures, low=1.0, high=60.0, rng=rng) for _ in range(200)]
        assert all(1.0 <= d <= cap for d in delays)
        # Spread over the whole window, so stations cut off together do not return together.
        assert max(delays) - min(delays) > 0.5 * (cap - 1.0)
    assert reconnect_delay(10**6, low=1.0, high=60.0, rng=rng) <= 60.0
    assert reconnect_delay(0, low=0.5, high=0.5, rng=rng) == 0.5
