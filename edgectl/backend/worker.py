"""The reference ingest worker: a shared MQTT subscription into PostgreSQL, exactly once.

One worker = one persistent MQTT 5 session (``clean_start=False``, a session expiry, a stable
client id) in the shared group ``$share/{group}/…`` and one PostgreSQL connection; any number
run side by side. MQTT delivers at least once; the database keeps each msg_id once; so storage
is exactly once however often a message comes.

The worker acknowledges nothing before its transaction committed:

- the broker's PUBACK: paho's manual acknowledgement (as the station's session does for
  commands, see edgectl/cloud/session.py), sent for a batch in arrival order after its commit.
  A worker killed before that leaves the messages unacknowledged in its session: the broker
  sends them again when the worker (the same client id) comes back;
- the station's `ack`: sent for what is contiguous in PostgreSQL, which only committed rows
  make. With ``delivery = "backend"`` the station keeps each message until then, so what the
  broker loses (a session that expired, a worker that never came back) shows as a gap and is
  asked for again with `replay`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import aiomqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edgectl.backend.config import IngestConfig
from edgectl.backend.db import Database, DueCommand
from edgectl.backend.verify import Verdict, Verifier
from edgectl.cloud import contract
from edgectl.cloud.mqtt import AckedClient, tls_context
from edgectl.cloud.signing import sign_command
from edgectl.errors import CloudError
from edgectl.logs import get_logger

__all__ = ["IngestWorker", "WorkerCounters"]

T = TypeVar("T")

_TICK_S: Final = 0.5
_RETRY_MIN_S: Final = 0.5
_RETRY_MAX_S: Final = 15.0


@dataclass
class WorkerCounters:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    acks_sent: int = 0
    replays_sent: int = 0
    batches: int = 0
    started_at: float = field(default_factory=time.monotonic)


class IngestWorker:
    """Runs until cancelled; reconnects to the broker and to PostgreSQL by itself."""

    def __init__(self, config: IngestConfig) -> None:
        self.config = config
        self.verifier = Verifier(config.prefix, config.schemas)
        self.counters = WorkerCounters()
        self.log = get_logger(part="ingest", worker=config.client_id, group=config.group)
        # Two connections: the batches, and the acks / replays picked meanwhile. One psycopg
        # connection holds one transaction at a time; two tasks on it would nest theirs.
        self._db: tuple[Database, Database] | None = None
        self._ready = asyncio.Event()
        self._failures = 0

    @property
    def filters(self) -> list[str]:
        share = f"$share/{self.config.group}/{self.config.prefix}/{contract.SCHEMA_VERSION}/+"
        # Results come on /result, or on a command's response topic, which a station may only
        # name under its own tree (reply/…, as edgectl cloud uses): the result stream is
        # gap-free only if the backend sees both.
        return [f"{share}/evt/#", f"{share}/result", f"{share}/reply/#"]

    async def wait_ready(self) -> None:
        """Until the first subscription is in place (tests, and a supervisor's readiness)."""
        await self._ready.wait()

    async def run(self) -> None:
        try:
            await self._database()  # a wrong DSN or schema fails the start, loudly
            while True:
                try:
                    await self._connection()
                except Exception as exc:
                    lost = _transient(exc)
                    if lost is None:
                        raise
                    # The database connection may have been cut in the middle of a batch (a
                    # cancelled query): start the next connection on a fresh one.
                    await self._drop_database()
                    self._failures += 1
                    if self._failures == 1:  # an outage is logged once, its end once
                        self.log.warning("ingest_link_lost", error=str(lost) or type(lost).__name__)
                    backoff = min(_RETRY_MAX_S, _RETRY_MIN_S * 2**self._failures)
                    await asyncio.sleep(random.uniform(0, backoff))
        finally:
            await self._drop_database()

    async def _drop_database(self) -> None:
        dbs, self._db = self._db, None
        for db in dbs or ():
            with contextlib.suppress(Exception):
                await db.close()

    async def _database(self) -> tuple[Database, Database]:
        if self._db is not None and not any(d.conn.closed or d.conn.broken for d in self._db):
            return self._db
        await self._drop_database()
        cfg = self.config
        batches = await Database.open(cfg.dsn, cfg.schema, cfg.client_id)
        try:
            await batches.create_tables()
            due = await Database.open(cfg.dsn, cfg.schema, cfg.client_id)
        except BaseException:
            await batches.close()
            raise
        self._db = (batches, due)
        self.log.info("ingest_database_ready", schema=cfg.schema)
        return self._db

    def _link(self) -> AckedClient:
        cfg = self.config
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = cfg.session_expiry_s
        # Unacknowledged messages in flight to us: the broker stops there until we commit.
        properties.ReceiveMaximum = cfg.batch_max
        link = AckedClient(
            hostname=cfg.broker.host,
            port=cfg.broker.port,
            username=cfg.broker.username,
            password=cfg.broker.password,
            identifier=cfg.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            keepalive=30,
            timeout=10.0,
            puback_timeout_s=30.0,
            properties=properties,
            tls_context=tls_context(
                tls=cfg.broker.tls,
                ca_file=cfg.broker.ca_file,
                cert_file=cfg.broker.cert_file,
                key_file=cfg.broker.key_file,
            ),
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        # PUBACK after the commit, not on receipt (aiomqtt's default): see the module doc.
        link._client.manual_ack_set(True)
        return link

    async def _connection(self) -> None:
        batches, due = await self._database()
        link = self._link()
        async with link:
            for topic_filter in self.filters:
                granted = await link.subscribe(topic_filter, options=SubscribeOptions(qos=1))
                for code in granted:
                    if isinstance(code, ReasonCode) and code.is_failure:
                        raise CloudError(
                            f"the broker refused the subscription to {topic_filter}: {code}",
                            code="subscribe_refused",
                        )
            self.log.info(
                "ingest_subscribed",
                filters=self.filters,
                broker=str(self.config.broker),
                recovered=self._failures > 0,
            )
            self._failures = 0
            self._ready.set()
            queue: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()

            async def read() -> None:
                async for message in link.messages:
                    queue.put_nowait(message)
                raise CloudError("the broker connection ended", code="connection_lost")

            async with asyncio.TaskGroup() as tg:
                tg.create_task(read(), name="ingest-read")
                tg.create_task(self._store(link, batches, queue), name="ingest-store")
                tg.create_task(self._send_due(link, due), name="ingest-due")

    async def _store(
        self, link: AckedClient, db: Database, queue: asyncio.Queue[aiomqtt.Message]
    ) -> None:
        """Batches in arrival order: verify, commit, then PUBACK each, then the answers."""
        while True:
            batch = [await queue.get()]
            while len(batch) < self.config.batch_max and not queue.empty():
                batch.append(queue.get_nowait())
            verdicts = [self._verdict(m) for m in batch]
            # A lost database ends this connection: nothing of the batch is acknowledged.
            stats = await _retrying(functools.partial(db.ingest, verdicts))
            for message in batch:
                if message.qos > 0:
                    link._client.ack(message.mid, message.qos)
            c = self.counters
            c.received += len(batch)
            c.stored += stats.stored
            c.duplicates += stats.duplicates
            c.rejected += stats.rejected
            c.batches += 1
            for verdict in verdicts:
                if not verdict.ok:
                    self.log.warning("ingest_rejected", topic=verdict.topic, reason=verdict.reason)
            if stats.answers:
                for note in await _retrying(functools.partial(db.answered, stats.answers)):
                    self.log.warning("ingest_stream_note", note=note)

    def _verdict(self, message: aiomqtt.Message) -> Verdict:
        payload = message.payload if isinstance(message.payload, bytes) else b""
        return self.verifier.check(str(message.topic), payload)

    async def _send_due(self, link: AckedClient, db: Database) -> None:
        cfg = self.config
        while True:
            due = await _retrying(
                lambda: db.due(
                    ack_every=cfg.ack_every,
                    ack_interval_s=cfg.ack_interval_s,
                    answer_timeout_s=cfg.answer_timeout_s,
                    gap_grace_s=cfg.gap_grace_s,
                    replay_interval_s=cfg.replay_interval_s,
                    quiet_s=cfg.quiet_s,
                    probe_interval_s=cfg.probe_interval_s,
                )
            )
            if due:
                await asyncio.gather(*(self._send(link, cmd) for cmd in due))
            await asyncio.sleep(_TICK_S)

    async def _send(self, link: AckedClient, cmd: DueCommand) -> None:
        data: contract.CommandData
        if cmd.type == "ack":
            data = contract.AckData(stream=cmd.stream, seq=cmd.seq)
            self.counters.acks_sent += 1
        else:
            data = contract.ReplayData(stream=cmd.stream, from_seq=cmd.from_seq, to_seq=cmd.to_seq)
            self.counters.replays_sent += 1
            self.log.info(
                "ingest_replay_asked",
                station=cmd.station,
                stream=cmd.stream,
                from_seq=cmd.from_seq,
                to_seq=cmd.to_seq,
            )
        issued = datetime.now(UTC)
        message = contract.command_envelope(
            data,
            cmd_id=cmd.cmd_id,
            station=cmd.station,
            issued_at=issued,
            expires_at=issued + timedelta(seconds=self.config.command_valid_s),
        )
        signed = sign_command(message, self.config.key, self.config.key_id)
        topic = contract.Topics(self.config.prefix, cmd.station).command(cmd.type)
        # No response topic: the answer goes to {station}/result, which the group reads.
        await link.publish_acked(topic, contract.encode(signed))


_TRANSIENT: Final = (CloudError, aiomqtt.MqttError, OSError, psycopg.OperationalError)


def _transient(exc: BaseException) -> BaseException | None:
    """The error to report if `exc` (or every error of a group) is a lost link, else None."""
    if isinstance(exc, BaseExceptionGroup):
        inner = [_transient(e) for e in exc.exceptions]
        return inner[0] if inner and all(e is not None for e in inner) else None
    return exc if isinstance(exc, _TRANSIENT) else None


async def _retrying(work: Callable[[], Awaitable[T]]) -> T:
    """Run a transaction again when PostgreSQL rolled it back for a deadlock or a
    serialization failure (two workers on the same rows); other errors go up."""
    for attempt in range(6):
        try:
            return await work()
        except psycopg.errors.TransactionRollback:
            await asyncio.sleep(random.uniform(0, 0.02 * 2**attempt))
    return await work()


def describe_counters(counters: WorkerCounters) -> dict[str, Any]:
    up = time.monotonic() - counters.started_at
    return {
        "received": counters.received,
        "stored": counters.stored,
        "duplicates": counters.duplicates,
        "rejected": counters.rejected,
        "acks_sent": counters.acks_sent,
        "replays_sent": counters.replays_sent,
        "uptime_s": round(up, 1),
    }
