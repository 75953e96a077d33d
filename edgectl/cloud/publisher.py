"""Publishes the SQLite outbox in seq order; a row is done after its PUBACK (delivery = "broker")
or, for a guaranteed message, once the backend acknowledged it (delivery = "backend")."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from edgectl.cloud.contract import Topics, encode_envelope, message_id
from edgectl.cloud.mqtt import PubackCallback
from edgectl.errors import CloudError
from edgectl.logs import get_logger
from edgectl.store.store import OutboxRow

# Acknowledged rows are deleted (or marked sent) together, one commit at most this often or
# for this many rows: after a crash at most these are sent again, with their msg_ids.
DELETE_EVERY_S = 0.05
COMMIT_ROWS = 500


class Publisher(Protocol):
    async def wait_connected(self) -> None: ...

    async def publish_then(
        self,
        topic: str,
        payload: bytes,
        done: PubackCallback,
        *,
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
        """Publish until the connection fails. The store is never waited for with the window
        open: each batch of rows is read while the one before it goes out, and acknowledged
        rows are deleted (or marked sent) in the background, one commit at a time, at most
        every DELETE_EVERY_S or COMMIT_ROWS rows, rather than a commit, and a pause of the
        whole window behind its fsync, every `window` messages.

        A row has no task of its own: it is handed to the session, which calls `settled`
        back on its PUBACK (or its failure). The session's window (the broker's Receive
        Maximum) bounds what is in flight; `window` bounds it too, where it is the smaller."""
        cursors: dict[int, int] = {}
        acked: list[int] = []
        failure: list[CloudError] = []
        last_commit = time.monotonic()
        committing: asyncio.Task[None] | None = None
        ahead: asyncio.Task[list[OutboxRow]] | None = None
        loop = asyncio.get_running_loop()
        in_flight = 0
        # Waited for when `window` rows are in flight, and when the drain ends with some.
        settling: asyncio.Future[None] | None = None

        def settled(seq: int, error: CloudError | None) -> None:
            nonlocal in_flight
            in_flight -= 1
            if error is None:
                acked.append(seq)
                self.published += 1
                self.last_puback_at = time.time()
            else:
                failure.append(error)
            if settling is not None and not settling.done():
                settling.set_result(None)
            self._wake.set()

        async def commit(done: list[int]) -> None:
            await self._delete(done)
            self._in_hand.difference_update(done)

        async def read(after: dict[int, int]) -> list[OutboxRow]:
            return await self._fetch(after, self.window)

        self._in_hand.clear()
        async with asyncio.TaskGroup() as tg:

            def commit_if_due() -> None:
                nonlocal committing, last_commit
                if not acked or (committing is not None and not committing.done()):
                    return
                if len(acked) >= COMMIT_ROWS or time.monotonic() - last_commit > DELETE_EVERY_S:
                    done, acked[:] = list(acked), []
                    committing = tg.create_task(commit(done), name="outbox-commit")
                    last_commit = time.monotonic()

            while not failure:
                self._wake.clear()
                if self._rewind:
                    self._rewind = False
                    if ahead is not None:  # read past rows that are waiting again: dropped
                        await ahead
                        ahead = None
                    cursors.clear()
                fetched: list[OutboxRow] = []
                if ahead is not None:
                    fetched = await ahead
                    ahead = None
                if not fetched:
                    # Read now, after the wake-up was cleared: a read made before it may have
                    # missed a row queued since, and waiting would hold that row back.
                    fetched = await read(cursors)
                for row in fetched:  # past every row read, those in hand included
                    cursors[row.priority] = max(cursors.get(row.priority, 0), row.seq)
                rows = [row for row in fetched if row.seq not in self._in_hand]
                if not fetched:
                    commit_if_due()
                    timeout = DELETE_EVERY_S if acked else 1.0
                    try:
                        async with asyncio.timeout(timeout):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                    continue
                # The next batch is read while this one goes out. A row queued meanwhile (a
                # live sale) waits at most for this batch and that one: both hold at most
                # `window` rows, the classes taking turns.
                ahead = tg.create_task(read(dict(cursors)), name="outbox-read")
                # After the read: the store has one thread, and the read is not to wait
                # behind the commit's fsync.
                commit_if_due()
                for row in rows:
                    while in_flight >= self.window and not failure:
                        settling = loop.create_future()
                        await settling
                    if failure:
                        break
                    self._in_hand.add(row.seq)
                    in_flight += 1
                    try:
                        await self.session.publish_then(
                            self.topic_for(row),
                            self.payload_for(row),
                            functools.partial(settled, row.seq),
                            retain=bool(row.retain),
                            correlation_data=row.correlation,
                        )
                    except CloudError as exc:  # not handed over: `settled` is not called
                        in_flight -= 1
                        failure.append(exc)
                    except BaseException:
                        in_flight -= 1
                        raise
            # What is in flight settles (a lost connection fails it at once, a PUBACK that
            # never comes times out) before the rows acknowledged are done in the store.
            while in_flight:
                settling = loop.create_future()
                await settling
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
        of the row itself, the same on every re-send and replay. The row's payload is its
        `data` already encoded (`contract.encode_data`, when it was queued)."""
        return encode_envelope(
            row.stream,
            self.station,
            row.stream_seq or 0,
            row.created_at,
            row.payload,
            message_id(self.station, row.seq, self.epoch),
            version=row.version,
        )
