"""Publishes the SQLite outbox in seq order; a row is done after its PUBACK (delivery = "broker")
or, for a guaranteed message, once the backend acknowledged it (delivery = "backend")."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from edgectl.cloud.contract import Topics, encode, envelope, message_id
from edgectl.errors import CloudError
from edgectl.logs import get_logger
from edgectl.store.store import OutboxRow

DELETE_EVERY_S = 0.05  # acknowledged rows are deleted in small batches, not one commit each


class Publisher(Protocol):
    async def wait_connected(self) -> None: ...

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation_data: bytes | None = None,
    ) -> None: ...


class OutboxPublisher:
    """Drains the outbox through a connected session with a bounded window of publishes.

    Each priority class is sent in seq order; on every (re)connection the cursors start
    again from the oldest row still waiting, so anything not acknowledged is sent again with
    the same msg_id and the cloud drops the duplicate. `done` is called with the rows the
    broker acknowledged: it deletes them, or marks them sent to wait for the backend's ack.
    `rewind()` (after a replay made sent rows wait again) starts the cursors over.
    """

    def __init__(
        self,
        *,
        session: Publisher,
        topics: Topics,
        station: str,
        fetch: Callable[[dict[int, int], int], Awaitable[list[OutboxRow]]],
        delete: Callable[[list[int]], Awaitable[None]],
        epoch: str,
        window: int = 32,
    ) -> None:
        self.epoch = epoch
        self.session = session
        self.topics = topics
        self.station = station
        self._fetch = fetch
        self._delete = delete
        self.window = window
        self._wake = asyncio.Event()
        self._rewind = False
        # Rows handed to the broker and not yet done in the store: a rewind must not send them
        # a second time.
        self._in_hand: set[int] = set()
        self.log = get_logger(station=station, part="outbox")
        self.published = 0
        self.last_puback_at: float | None = None

    def wake(self) -> None:
        """Called after rows were added: publish them now rather than at the next check."""
        self._wake.set()

    def rewind(self) -> None:
        """Called after rows behind the cursors became waiting again (a replay)."""
        self._rewind = True
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self.session.wait_connected()
            try:
                await self._drain()
            except CloudError as exc:
                self.log.warning("outbox_publish_interrupted", error=str(exc))

    async def _drain(self) -> None:
        cursors: dict[int, int] = {}
        acked: list[int] = []
        slots = asyncio.Semaphore(self.window)
        failure: list[CloudError] = []
        last_delete = time.monotonic()

        async def send(row: OutboxRow) -> None:
            try:
                await self.session.publish(
                    self.topic_for(row),
                    self.payload_for(row),
                    qos=1,
                    retain=bool(row.retain),
                    correlation_data=row.correlation,
                )
            except CloudError as exc:
                failure.append(exc)
            else:
                acked.append(row.seq)
                self.published += 1
                self.last_puback_at = time.time()
            finally:
                slots.release()
                self._wake.set()

        self._in_hand.clear()
        async with asyncio.TaskGroup() as tg:
            while not failure:
                self._wake.clear()
                if acked and (
                    len(acked) >= self.window or time.monotonic() - last_delete > DELETE_EVERY_S
                ):
                    done, acked[:] = list(acked), []
                    await self._delete(done)
                    self._in_hand.difference_update(done)
                    last_delete = time.monotonic()
                if self._rewind:
                    self._rewind = False
                    cursors.clear()
                fetched = await self._fetch(cursors, self.window)
                rows = [row for row in fetched if row.seq not in self._in_hand]
                if len(rows) < len(fetched):
                    for row in fetched:  # step over those in hand, or they come back forever
                        cursors[row.priority] = max(cursors.get(row.priority, 0), row.seq)
                    if not rows:
                        continue
                if not rows:
                    timeout = DELETE_EVERY_S if acked else 1.0
                    try:
                        async with asyncio.timeout(timeout):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                    continue
                for row in rows:
                    await slots.acquire()
                    if failure:
                        slots.release()
                        break
                    cursors[row.priority] = max(cursors.get(row.priority, 0), row.seq)
                    self._in_hand.add(row.seq)
                    tg.create_task(send(row), name=f"publish-{row.seq}")
        if acked:
            await self._delete(list(acked))
        raise failure[0]

    def topic_for(self, row: OutboxRow) -> str:
        if row.topic:
            return row.topic
        if row.stream == "result":
            return self.topics.result
        if row.stream == "pump_state":
            return self.topics.pump_state(int(row.key or 0))
        if row.stream == "prices":
            return self.topics.prices
        return self.topics.event(row.stream)

    def payload_for(self, row: OutboxRow) -> bytes:
        """The message of a row: its seq in its stream (or its key's version), and a msg_id
        of the row itself, the same on every re-send and replay."""
        data: dict[str, Any] = json.loads(row.payload)
        msg_id = message_id(self.station, row.seq, self.epoch)
        message = envelope(
            row.stream,
            self.station,
            row.stream_seq or 0,
            row.created_at,
            data,
            msg_id,
            version=row.version,
        )
        return encode(message)
