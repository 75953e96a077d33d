"""The cloud's side of the MQTT contract: sign a command, send it, wait for its result, follow a
station. Used by `edgectl cloud`, the demo, tests and benchmarks.

`CloudClient` is one MQTT 5 connection (clean start, no session kept, TCP_NODELAY like the
station's session) under a random client id ``edgectl-cloud-tool-<hex>``, never the station's.
At connect it subscribes once to its own reply topic ``{prefix}/v1/{station}/reply/<hex>``;
every command then goes out at QoS 1 with that topic as its MQTT 5 *response topic* and a fresh
*correlation data*, so sending costs one PUBLISH and its PUBACK and no subscribe round trip.
The station answers on whatever response topic a command names. The tool picks one inside the
station's own topic tree, so a broker ACL that lets a station publish only under
``{prefix}/v1/{station}/#`` (and lets the cloud read it) allows the answer; a response topic
the station may not publish to would be refused by the broker and the answer never arrive.

A PUBACK with a failure reason code (an ACL refusal, 0x87) is reported as such rather than
waited out; aiomqtt ignores those codes, so publishing goes through its paho client here.
aiomqtt and paho errors become `CloudError` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edgectl.cloud import contract
from edgectl.cloud.mqtt import AckedClient, tls_context
from edgectl.cloud.signing import sign_command
from edgectl.config import CloudConfig
from edgectl.errors import CloudError

__all__ = [
    "FINAL_ORDER_STATUSES",
    "Broker",
    "CloudClient",
    "Follower",
    "new_cmd_id",
]

FINAL_ORDER_STATUSES: Final = frozenset({"completed", "expired", "cancelled", "failed"})
CLIENT_ID_PREFIX: Final = "edgectl-cloud-tool-"

# paho logs through the stdlib; a library stays silent unless its user configures logging.
_MQTT_LOG: Final = logging.getLogger("edgectl.cloud.client")
_MQTT_LOG.addHandler(logging.NullHandler())
_MQTT_LOG.propagate = False

_SEEN_MAX: Final = 4096  # msg_ids a follower remembers to drop re-sent messages


@dataclass(frozen=True)
class Broker:
    """Where the broker is and how to log in; the cloud side of a station's [cloud] section."""

    host: str
    port: int = 1883
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, cloud: CloudConfig) -> Broker:
        """The broker a station config points at, with the station's credentials."""
        return cls(
            host=cloud.host,
            port=cloud.port,
            tls=cloud.tls,
            ca_file=cloud.ca_file,
            cert_file=cloud.cert_file,
            key_file=cloud.key_file,
            username=cloud.username,
            password=cloud.password,
        )

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def new_cmd_id() -> str:
    """A fresh command id that a person can read: ``c-20261124T102000-1a2b3c``."""
    return f"c-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


class CloudClient:
    """Acts as the cloud towards one station. Use as ``async with CloudClient(...) as cloud``.

    `key` / `key_id` sign every command; without a key commands go out unsigned (the station
    answers ``unsigned``, which is how a test proves it). `timeout_s` bounds the wait for each
    result; `connect_timeout_s` the connection.
    """

    def __init__(
        self,
        broker: Broker,
        station: str,
        *,
        prefix: str = "edgectl",
        key: Ed25519PrivateKey | None = None,
        key_id: str | None = None,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if key is not None and key_id is None:
            raise ValueError("a signing key needs its key_id")
        self.broker = broker
        self.station = station
        self.topics = contract.Topics(prefix, station)  # ConfigError on a bad prefix or id
        self.key = key
        self.key_id = key_id
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        token = secrets.token_hex(6)
        self.client_id = CLIENT_ID_PREFIX + token
        self.reply_topic = f"{self.topics.base}/reply/{token}"
        self._conn: AckedClient | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lost: CloudError | None = None
        self._pending: dict[bytes, asyncio.Future[dict[str, Any]]] = {}
        self._followers: set[Follower] = set()
        self._subscribed: dict[str, int] = {}  # topic filter -> followers using it

    # ------------------------------------------------------------------ connection

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        if self._conn is not None:
            raise RuntimeError("the client is already connected")
        conn = AckedClient(
            hostname=self.broker.host,
            port=self.broker.port,
            username=self.broker.username,
            password=self.broker.password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=True,
            keepalive=30,
            timeout=self.connect_timeout_s,
            tls_context=tls_context(
                tls=self.broker.tls,
                ca_file=self.broker.ca_file,
                cert_file=self.broker.cert_file,
                key_file=self.broker.key_file,
            ),
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            logger=_MQTT_LOG,
        )
        where = f"the broker at {self.broker}"
        try:
            await conn.__aenter__()
        except MqttConnectError as exc:
            raise CloudError(
                f"{where} refused the connection: {exc.rc}", code="connect_refused"
            ) from None
        except aiomqtt.MqttError as exc:
            raise CloudError(
                f"cannot connect to {where}: {_reason(exc)}", code="connect_failed"
            ) from None
        except OSError as exc:
            raise CloudError(
                f"cannot connect to {where}: {exc.strerror or exc}", code="connect_failed"
            ) from None
        self._conn = conn
        self._lost = None
        self._reader = asyncio.create_task(self._read(conn), name="cloud-client-reader")
        try:
            await self._subscribe(self.reply_topic)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Disconnect; pending sends and followers end with a `CloudError`."""
        conn, self._conn = self._conn, None
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        self._lose(CloudError("the cloud client was closed", code="closed"))
        self._subscribed.clear()
        if conn is not None:
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                async with asyncio.timeout(2.0):
                    await conn.__aexit__(None, None, None)

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._lost is None

    # ------------------------------------------------------------------ commands

    def command(
        self,
        command_type: str,
        data: contract.CommandData,
        *,
        cmd_id: str | None = None,
        valid_for_s: float = 60.0,
        issued_at: datetime | None = None,
    ) -> dict[str, Any]:
        """The signed command, ready for `request`; no I/O (so a benchmark can build ahead)."""
        issued = issued_at or datetime.now(UTC)
        message = contract.command_envelope(
            data,
            cmd_id=cmd_id or new_cmd_id(),
            station=self.station,
            issued_at=issued,
            expires_at=issued + timedelta(seconds=valid_for_s),
        )
        if message["schema"] != f"edgectl/{contract.SCHEMA_VERSION}/cmd/{command_type}":
            raise ValueError(f"{type(data).__name__} is not the data of a {command_type!r}")
        if self.key is not None and self.key_id is not None:
            message = sign_command(message, self.key, self.key_id)
        return message

    async def send(
        self,
        command_type: str,
        data: contract.CommandData,
        *,
        cmd_id: str | None = None,
        valid_for_s: float = 60.0,
    ) -> dict[str, Any]:
        """Sign and send one command, and return the station's whole `result` message (its
        ``data`` holds status, code, message…). `CloudError` when there is no answer within
        `timeout_s`, the broker refuses the command or the connection is lost."""
        message = self.command(command_type, data, cmd_id=cmd_id, valid_for_s=valid_for_s)
        return await self.request(message)

    async def request(
        self, command: Mapping[str, Any], *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Publish a prepared command (from `command`) and wait for its result message."""
        conn = self._live()
        schema = str(command.get("schema", ""))
        topic = self.topics.command(schema.rsplit("/", 1)[-1])
        payload = json.dumps(dict(command), ensure_ascii=False, separators=(",", ":")).encode()
        correlation = secrets.token_bytes(8)
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ResponseTopic = self.reply_topic
        properties.CorrelationData = correlation
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[correlation] = answer
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(timeout):
                await conn.publish_acked(topic, payload, properties=properties)
                return await answer
        except TimeoutError:
            raise CloudError(
                f"no answer from station {self.station} within {timeout:g} s (is it online "
                "and connected to this broker, with this topic prefix?)",
                code="no_answer",
            ) from None
        finally:
            self._pending.pop(correlation, None)

    # ------------------------------------------------------------------ following

    def station_filters(self, *, heartbeats: bool = False) -> list[str]:
        """What a person following a station wants: results (also those sent to other
        tools' reply topics), order / sale / alarm / price events and the retained states."""
        base = self.topics.base
        filters = [
            self.topics.result,
            f"{base}/reply/#",
            *(self.topics.event(stream) for stream in ("order", "sale", "alarm", "price")),
            f"{base}/state/#",
        ]
        if heartbeats:
            filters.append(self.topics.heartbeat)
        return filters

    def follow(self, filters: Iterable[str]) -> Follower:
        """Station messages on `filters` as ``(topic, message)``, in arrival order, each
        ``msg_id`` once. Subscribe before acting with ``async with client.follow(…) as f``;
        plain ``async for`` subscribes at the first step."""
        return Follower(self, tuple(filters))

    # ------------------------------------------------------------------ internals

    def _live(self) -> AckedClient:
        if self._lost is not None:
            raise CloudError(str(self._lost), code=self._lost.code)
        if self._conn is None:
            raise CloudError("the cloud client is not connected", code="not_connected")
        return self._conn

    async def _subscribe(self, topic_filter: str) -> None:
        conn = self._live()
        if self._subscribed.get(topic_filter, 0) == 0:
            try:
                granted = await conn.subscribe(topic_filter, qos=1, timeout=self.timeout_s)
            except aiomqtt.MqttError as exc:
                raise CloudError(
                    f"cannot subscribe to {topic_filter}: {_reason(exc)}", code="subscribe_failed"
                ) from None
            for code in granted:
                if isinstance(code, ReasonCode) and code.is_failure:
                    raise CloudError(
                        f"the broker refused the subscription to {topic_filter}: {code}",
                        code="subscribe_refused",
                    )
        self._subscribed[topic_filter] = self._subscribed.get(topic_filter, 0) + 1

    async def _unsubscribe(self, topic_filter: str) -> None:
        users = self._subscribed.get(topic_filter, 0) - 1
        if users > 0:
            self._subscribed[topic_filter] = users
            return
        self._subscribed.pop(topic_filter, None)
        if self.connected and self._conn is not None and topic_filter != self.reply_topic:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await self._conn.unsubscribe(topic_filter, timeout=self.timeout_s)

    async def _read(self, conn: AckedClient) -> None:
        try:
            async for message in conn.messages:
                self._dispatch(message)
        except aiomqtt.MqttError as exc:
            self._lose(
                CloudError(
                    f"the connection to the broker at {self.broker} was lost: {_reason(exc)}",
                    code="connection_lost",
                )
            )

    def _dispatch(self, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        raw = message.payload if isinstance(message.payload, bytes) else b""
        if not raw:
            return  # a retained message being cleared
        body = _decode(raw)
        if topic == self.reply_topic:
            correlation = getattr(message.properties, "CorrelationData", None)
            answer = self._pending.pop(bytes(correlation), None) if correlation else None
            if answer is not None and not answer.done():
                if body.get("schema") == f"edgectl/{contract.SCHEMA_VERSION}/result":
                    answer.set_result(body)
                else:
                    answer.set_exception(
                        CloudError(
                            f"the answer on {topic} is not a result message", code="bad_answer"
                        )
                    )
        for follower in tuple(self._followers):
            follower.offer(topic, body)

    def _lose(self, error: CloudError) -> None:
        if self._lost is None:
            self._lost = error
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(CloudError(str(error), code=error.code))
        self._pending.clear()
        for follower in tuple(self._followers):
            follower.fail(error)


class Follower:
    """One subscription's stream of station messages; see `CloudClient.follow`."""

    def __init__(self, client: CloudClient, filters: tuple[str, ...]) -> None:
        if not filters:
            raise ValueError("follow needs at least one topic filter")
        self.client = client
        self.filters = filters
        # None: closed, which ends an iteration waiting in another task too.
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]] | CloudError | None] = asyncio.Queue()
        self._seen: dict[str, None] = {}
        self._started = False
        self._closed = False

    async def start(self) -> Self:
        """Subscribe; retained messages (pump states, prices, online) arrive first."""
        if self._started:
            return self
        self._started = True
        self.client._followers.add(self)
        done: list[str] = []
        try:
            for topic_filter in self.filters:
                await self.client._subscribe(topic_filter)
                done.append(topic_filter)
        except BaseException:
            self.client._followers.discard(self)
            for topic_filter in done:
                await self.client._unsubscribe(topic_filter)
            raise
        return self

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(None)
        if self._started:
            self.client._followers.discard(self)
            for topic_filter in self.filters:
                await self.client._unsubscribe(topic_filter)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> tuple[str, dict[str, Any]]:
        if self._closed:
            raise StopAsyncIteration
        if not self._started:
            await self.start()
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)
            raise StopAsyncIteration
        if isinstance(item, CloudError):
            self._queue.put_nowait(item)  # every later step fails the same way
            raise item
        return item

    def offer(self, topic: str, message: dict[str, Any]) -> None:
        if not any(paho.topic_matches_sub(f, topic) for f in self.filters):
            return
        msg_id = message.get("msg_id")
        if isinstance(msg_id, str):
            # Re-published after a reconnect or a restart with the same id: show it once.
            if msg_id in self._seen:
                return
            self._seen[msg_id] = None
            if len(self._seen) > _SEEN_MAX:
                del self._seen[next(iter(self._seen))]
        self._queue.put_nowait((topic, message))

    def fail(self, error: CloudError) -> None:
        self._queue.put_nowait(error)


def _decode(raw: bytes) -> dict[str, Any]:
    """A station message; anything else is kept visible rather than dropped."""
    try:
        body = json.loads(raw)
    except ValueError:
        return {"unreadable": raw[:200].decode("utf-8", "replace")}
    return body if isinstance(body, dict) else {"unreadable": body}


def _reason(exc: BaseException) -> str:
    """The most useful words of an aiomqtt error (often a wrapped OSError)."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    text = str(exc)
    if text.startswith("[Errno"):
        text = text.split("] ", 1)[-1]
    return text or type(exc).__name__
