"""The outbox publisher against a real Mosquitto: a backlog after an outage is replayed in
seq order, live sales and results overtake it, rows go only after their PUBACK."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from chaos.netproxy import FaultProxy
from edgectl.cloud.messages import ContractMessages
from edgectl.cloud.publisher import OutboxPublisher
from edgectl.cloud.session import CloudSession
from edgectl.errors import CloudError
from edgectl.store.store import PRIORITY_EVENT, PRIORITY_SALE, OutboxRow, Store
from tests.cloud.test_session import (
    STATION,
    TOPICS,
    Inbox,
    cloud_client,
    cloud_for,
    eventually,
    running,
)
from tests.mqttkit import MOSQUITTO, MosquittoBroker

pytestmark = pytest.mark.skipif(
    MOSQUITTO is None, reason="mosquitto is not installed (make installs it)"
)

BACKLOG = 1500
NOW = "2026-11-24T10:00:00.000Z"


def queue(store: Store, stream: str, priority: int, count: int) -> list[int]:
    # Shaped here, not by the store's own `messages`: a store opened without any queues too.
    shapes = ContractMessages()
    with store.transaction() as tx:
        return [
            tx.outbox(shapes.shaped(stream, {"n": i}), priority, "2026-11-24T10:00:00.000Z")
            for i in range(count)
        ]


@asynccontextmanager
async def publishing(
    store: Store,
    broker: MosquittoBroker,
    *,
    window: int = 16,
    delete: Callable[[list[int]], Awaitable[None]] | None = None,
) -> AsyncIterator[OutboxPublisher]:
    session = CloudSession(cloud_for(broker), STATION, on_command=Inbox().handle)

    async def fetch(cursors: dict[int, int], limit: int) -> list[OutboxRow]:
        return store.outbox_after(cursors, limit)

    async def delete_now(seqs: list[int]) -> None:
        store.outbox_delete(seqs)

    publisher = OutboxPublisher(
        session=session,
        topics=TOPICS,
        station=STATION,
        fetch=fetch,
        delete=delete or delete_now,
        epoch=store.epoch,
        window=window,
    )
    async with running(session):
        task = asyncio.create_task(publisher.run(), name="publisher-under-test")
        try:
            yield publisher
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


class Seen:
    """What the cloud received from the station's event streams, in arrival order."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []

    async def read(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError):  # the broker went away: reading ends
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                self.messages.append((str(message.topic), json.loads(message.payload)))

    def seqs(self, stream: str) -> list[int]:
        return [m["seq"] for t, m in self.messages if t == TOPICS.event(stream)]


async def test_backlog_is_replayed_in_order_and_live_sales_overtake_it(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    store = Store(tmp_path / "s.db", messages=ContractMessages())
    queue(store, "alarm", PRIORITY_EVENT, BACKLOG)  # piled up during an outage
    seen = Seen()
    async with cloud_client(mosquitto, f"{TOPICS.base}/evt/#") as cloud:
        reader = asyncio.create_task(seen.read(cloud))
        try:
            async with publishing(store, mosquitto) as publisher:
                await eventually(lambda: len(seen.seqs("alarm")) >= 100, timeout=20)
                sent_before = publisher.published
                queue(store, "sale", PRIORITY_SALE, 3)
                publisher.wake()
                await eventually(lambda: len(seen.seqs("sale")) == 3, timeout=20)
                await eventually(lambda: len(seen.seqs("alarm")) == BACKLOG, timeout=60)
                await eventually(lambda: store.outbox_depth() == 0, timeout=10)
        finally:
            reader.cancel()
    # The sales did not wait for the backlog: they went out within a few windows of being
    # queued (the broker keeps one client's messages in order, so arrival order is send order):
    # the window in flight, the rest of the batch going out and the batch read ahead. The
    # session's heartbeats (every 0.2 s, outside the outbox) come between them too; more of them
    # the slower the machine, so they are not counted.
    arrival = [(topic, m["seq"]) for topic, m in seen.messages if topic != TOPICS.heartbeat]
    first_sale = arrival.index((TOPICS.event("sale"), 1))
    assert sent_before < BACKLOG - 4 * publisher.window  # the backlog was far from done
    assert first_sale - sent_before <= 3 * publisher.window
    # Each stream in its own seq order from 1, nothing lost and nothing twice.
    assert seen.seqs("alarm") == list(range(1, BACKLOG + 1))
    assert seen.seqs("sale") == [1, 2, 3]
    ids = [m["msg_id"] for _, m in seen.messages]
    assert len(ids) == len(set(ids))
    assert publisher.published == BACKLOG + 3
    store.close()


def persistent_observer(broker: MosquittoBroker) -> Any:
    """The cloud side with a session the broker keeps over its restart, so that nothing the
    station sends while the observer reconnects is missed."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 300
    return cloud_client(
        broker, f"{TOPICS.base}/evt/#", name="cloud-kept", clean_start=False, properties=properties
    )


async def test_rows_stay_until_acknowledged_and_are_sent_again_after_an_outage(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    store = Store(tmp_path / "s.db", messages=ContractMessages())
    first = queue(store, "alarm", PRIORITY_EVENT, 300)
    seen = Seen()
    async with persistent_observer(mosquitto):
        pass  # the cloud's session exists (and collects) before the station sends anything
    async with publishing(store, mosquitto, window=4):
        with contextlib.suppress(aiomqtt.MqttError):
            async with persistent_observer(mosquitto) as cloud:
                reader = asyncio.create_task(seen.read(cloud))
                await eventually(lambda: len(seen.seqs("alarm")) >= 20, timeout=20)
                mosquitto.stop()  # the uplink goes away mid-replay
                # Whatever was not acknowledged is still in the outbox.
                remaining = {r["seq"] for r in store.query("SELECT seq FROM outbox")}
                assert remaining and remaining <= set(first)
                await eventually(reader.done)
        more = queue(store, "alarm", PRIORITY_EVENT, 50)  # queued while offline
        mosquitto.start()
        async with persistent_observer(mosquitto) as cloud:
            reader = asyncio.create_task(seen.read(cloud))
            await eventually(lambda: store.outbox_depth() == 0, timeout=30)
            await eventually(lambda: set(seen.seqs("alarm")) == set(first + more), timeout=10)
            reader.cancel()
    # A message sent again keeps its msg_id: after dropping repeats, each seq once, in order.
    unique: dict[str, int] = {}
    for topic, message in seen.messages:
        if topic == TOPICS.event("alarm"):
            unique.setdefault(message["msg_id"], message["seq"])
    assert list(unique.values()) == first + more
    store.close()


async def test_a_slow_commit_does_not_hold_the_replay_back(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    # Acknowledged rows are deleted in the background, one commit at a time: while a commit
    # waits for the disk, the window goes on (it used to wait with it, every window), and
    # the rows are still deleted only after their PUBACK.
    store = Store(tmp_path / "s.db", messages=ContractMessages())
    queue(store, "alarm", PRIORITY_EVENT, 400)
    disk = asyncio.Event()
    commits: list[list[int]] = []

    async def slow_delete(seqs: list[int]) -> None:
        commits.append(list(seqs))
        await disk.wait()
        store.outbox_delete(seqs)

    seen = Seen()
    async with cloud_client(mosquitto, f"{TOPICS.base}/evt/#") as cloud:
        reader = asyncio.create_task(seen.read(cloud))
        try:
            async with publishing(store, mosquitto, delete=slow_delete) as publisher:
                await eventually(lambda: commits, timeout=30)  # the first commit, held
                queue(store, "alarm", PRIORITY_EVENT, 400)
                publisher.wake()
                await eventually(lambda: len(seen.seqs("alarm")) == 800, timeout=30)
                assert len(commits) == 1  # one commit in flight, the rest waits for it
                assert store.outbox_depth() == 800  # nothing deleted yet: none committed
                disk.set()
                await eventually(lambda: store.outbox_depth() == 0, timeout=10)
        finally:
            reader.cancel()
    assert seen.seqs("alarm") == list(range(1, 801))
    committed = [seq for batch in commits for seq in batch]
    assert len(committed) == len(set(committed)) == 800  # each row deleted once
    store.close()


class Watched:
    """The station's session as the publisher sees it, keeping how each publish ended."""

    def __init__(self, session: CloudSession) -> None:
        self.session = session
        self.outcomes: list[str | None] = []

    async def wait_connected(self) -> None:
        await self.session.wait_connected()

    async def publish_then(
        self,
        topic: str,
        payload: bytes,
        done: Callable[[CloudError | None], None],
        *,
        retain: bool = False,
        correlation_data: bytes | None = None,
    ) -> None:
        def watched(error: CloudError | None) -> None:
            self.outcomes.append(None if error is None else error.code)
            done(error)

        await self.session.publish_then(
            topic, payload, watched, retain=retain, correlation_data=correlation_data
        )


class QuickTimeout(CloudSession):
    """A session whose publishes time out after 0.5 s instead of two keepalives."""

    def _new_link(self) -> Any:
        link = super()._new_link()
        link.puback_timeout_s = 0.5
        return link


def publisher_for(store: Store, session: Watched, deleted: list[int]) -> OutboxPublisher:
    async def fetch(cursors: dict[int, int], limit: int) -> list[OutboxRow]:
        return store.outbox_after(cursors, limit)

    async def delete(seqs: list[int]) -> None:
        deleted.extend(seqs)
        store.outbox_delete(seqs)

    return OutboxPublisher(
        session=session,
        topics=TOPICS,
        station=STATION,
        fetch=fetch,
        delete=delete,
        epoch=store.epoch,
        window=8,
    )


async def test_rows_in_flight_when_their_pubacks_time_out_are_sent_again(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    # No row has a task waiting for its PUBACK: the session calls the publisher back. When
    # the PUBACKs stop coming, every row in flight fails on its own timeout, none is deleted,
    # and the drain starts again from the oldest row still waiting.
    store = Store(tmp_path / "s.db")
    rows = queue(store, "alarm", PRIORITY_EVENT, 400)
    seen, deleted = Seen(), []
    async with FaultProxy(mosquitto.port) as proxy:
        session = QuickTimeout(
            cloud_for(mosquitto, port=proxy.port), STATION, on_command=Inbox().handle
        )
        watched = Watched(session)
        publisher = publisher_for(store, watched, deleted)
        async with running(session), cloud_client(mosquitto, f"{TOPICS.base}/evt/#") as cloud:
            reader = asyncio.create_task(seen.read(cloud))
            proxy.blackhole(True)
            task = asyncio.create_task(publisher.run())
            # The window (8) fails, each on its own timeout; the drain starts again.
            await eventually(lambda: watched.outcomes.count("puback_timeout") >= 8, timeout=10)
            assert None not in watched.outcomes
            assert not deleted and store.outbox_depth() == 400
            proxy.blackhole(False)
            await eventually(lambda: store.outbox_depth() == 0, timeout=30)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await eventually(lambda: len(set(seen.seqs("alarm"))) == 400, timeout=10)
            reader.cancel()
    # The timed-out rows went again with their msg_ids; after dropping repeats, in order.
    unique: dict[str, int] = {}
    for topic, message in seen.messages:
        if topic == TOPICS.event("alarm"):
            unique.setdefault(message["msg_id"], message["seq"])
    assert list(unique.values()) == list(range(1, 401))
    assert sorted(deleted) == rows  # each row deleted once
    store.close()


async def test_a_cancelled_publisher_deletes_nothing_whose_puback_it_did_not_see(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    # Cancelled (the daemon stopping) with the window in flight: the rows stay, and the
    # PUBACKs that arrive later go to callbacks nobody reads, with the session still fine.
    store = Store(tmp_path / "s.db")
    queue(store, "alarm", PRIORITY_EVENT, 200)
    deleted: list[int] = []
    async with FaultProxy(mosquitto.port) as proxy:
        cloud = cloud_for(mosquitto, port=proxy.port, max_inflight=8)
        session = CloudSession(cloud, STATION, on_command=Inbox().handle)
        watched = Watched(session)
        publisher = publisher_for(store, watched, deleted)
        async with running(session):
            task = asyncio.create_task(publisher.run())
            await eventually(lambda: len(watched.outcomes) >= 40, timeout=10)
            proxy.blackhole(True)
            await asyncio.sleep(0.2)  # rows in flight, their PUBACKs held
            acked = watched.outcomes.count(None)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert len(deleted) <= acked  # only what was acknowledged, if it was committed
            depth = store.outbox_depth()
            assert depth == 200 - len(deleted) and depth > 0
            proxy.blackhole(False)
            await eventually(lambda: watched.outcomes.count(None) > acked)  # the late PUBACKs
            assert store.outbox_depth() == depth  # nothing deleted for them
            await session.publish(TOPICS.event("alarm"), b"{}")  # the window was given back
    store.close()
