"""The station's MQTT 5 link to the cloud: one persistent session that keeps itself connected.

`CloudSession.run()` connects out with ``clean_start=False`` and a session expiry, registers a
retained Last Will (``state/online`` = false), subscribes to ``cmd/+`` at QoS 1, announces
``online: true``, hands commands to the station one at a time in arrival order, and sends a
heartbeat. When the link drops it logs once, waits a jittered, capped, exponential delay (full
jitter, so thousands of stations cut off by one broker restart do not come back in step),
reconnects, and logs the recovery once. aiomqtt and paho errors become `CloudError` here and
nowhere else.

What aiomqtt 2.5.1 / paho-mqtt 2.2.0 really do (read in their source, checked against Mosquitto
2.0 in tests/cloud/test_session.py), and what this module does about it:

* ``aiomqtt.Client.publish(qos=1)`` does wait for the PUBACK: it parks on an event keyed by the
  message id that paho's ``on_publish`` sets when the PUBACK arrives. But it ignores the MQTT 5
  reason code in that PUBACK, so a message the broker refused (0x87 "Not authorized" from an
  ACL, 0x97 "Quota exceeded") returns as a success and the outbox would delete a row the broker
  dropped. It is not woken when the connection drops (it sits out its 10 s timeout), and a
  publish refused for want of a connection stays in paho's queue and goes out if the same
  client object reconnects. paho also ignores the broker's Receive Maximum (Mosquitto announces
  20; EMQX disconnects a client that exceeds it).
  So `publish()` goes through the paho client underneath aiomqtt: one future per message id,
  resolved by the PUBACK and failed on a refusal reason code or as soon as the connection is
  lost; at most min(``max_inflight``, the broker's Receive Maximum) in flight; and a fresh
  aiomqtt client for every connection, so nothing from a dead connection is sent later.
  `publish_then()` is the same with a callback in place of the wait, for the outbox replay.
* paho writes every queued packet with a ``send`` of its own, which with TCP_NODELAY is a
  TCP segment of its own; the packets queued since its last write are joined first, so a
  window of publishes goes out in one (paho's ``_packet_write``, wrapped per connection).
* aiomqtt acknowledges an incoming QoS 1 message as soon as paho queues it. paho 2.x can leave
  that to the application (``manual_ack_set(True)``, then ``ack(mid, qos)``); aiomqtt 2.5 does
  not offer it but keeps the paho client as ``Client._client`` and each message's ``mid`` and
  ``qos``, and paho's ``ack`` sends through the same write path aiomqtt drives on the event
  loop. So the PUBACK for a command goes out only after ``on_command`` returned, i.e. after the
  station persisted it. It holds because: commands are handled one at a time, so PUBACKs leave
  in arrival order as MQTT requires (MQTT-4.6.0-2); a handler that raises is not acknowledged
  and ends the connection, so nothing after it is acknowledged first, and the broker redelivers
  it on the next connection (session kept by ``clean_start=False``); the incoming queue is never
  capped (aiomqtt would drop a message over the cap, and an unacknowledged dropped message would
  block until the next connection) -- our Receive Maximum bounds it instead; an ack on a
  connection that is gone does nothing, and the broker redelivers. The station's inbox answers a
  redelivered ``cmd_id`` from its stored result. This leans on aiomqtt internals (``_client``,
  the ``_on_*`` callbacks), which is one reason aiomqtt is pinned to 2.5.x.
* aiomqtt ignores a connection that closes before its CONNACK (a TLS 1.3 broker refusing the
  client certificate does so just after the handshake) and waits out its timeout; the attempt
  is failed at once here instead.

Limits: the handler runs inside the command loop, so a handler that never returns also hides
the loss of the connection until it does; `stop()` during a connection attempt waits for that
attempt (at most ``keepalive_s``).
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edgectl import __version__
from edgectl.cloud import contract
from edgectl.cloud.mqtt import AckedClient, PubackCallback, tls_context
from edgectl.config import CloudConfig
from edgectl.errors import CloudError, EdgectlError
from edgectl.logs import get_logger

__all__ = ["CloudSession", "IncomingCommand", "reconnect_delay"]

_GOODBYE_TIMEOUT_S: Final = 2.0  # for the retained online=false on the way out
_HANDLER_GRACE_S: Final = 5.0  # a command being handled when stop() comes may finish
_RECEIVE_MAXIMUM_DEFAULT: Final = 65535  # MQTT 5, when the CONNACK does not say


@dataclass(frozen=True)
class IncomingCommand:
    """One message from ``{prefix}/v1/{station}/cmd/{type}``, as the broker delivered it."""

    topic: str
    type: str  # the last topic level: "authorize", "cancel", ...
    payload: bytes
    response_topic: str | None  # MQTT 5: where the sender wants the result
    correlation_data: bytes | None  # MQTT 5: to send back with the result
    received_at: datetime


def _utc_now() -> datetime:
    return datetime.now(UTC)


class CloudSession:
    """The MQTT session of one station. Run `run()` as a task; `stop()` ends it politely."""

    def __init__(
        self,
        cloud: CloudConfig,
        station_id: str,
        *,
        on_command: Callable[[IncomingCommand], Awaitable[None]],
        clock: Callable[[], datetime] = _utc_now,
        heartbeat: Callable[[], Awaitable[bytes]] | None = None,
        on_connected: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        """`on_command` must persist the command before it returns: only then is it
        acknowledged to the broker. If it raises, the command is not acknowledged, the
        connection is dropped and the broker delivers the command again after reconnecting.
        `heartbeat` builds each heartbeat payload (default: uptime, outbox depth 0).
        `on_connected` is awaited on every connection, once it is subscribed and announced
        online, with the broker's session-present flag: the station queues its retained
        state again there (the broker may have lost it, with or without our session)."""
        self.cloud = cloud
        self.station_id = station_id
        self.topics = contract.Topics(cloud.topic_prefix, station_id)
        self._on_command = on_command
        self._clock = clock
        self._heartbeat_payload = heartbeat or self._default_heartbeat
        self._on_connected = on_connected
        self._tls = tls_context(
            tls=cloud.tls, ca_file=cloud.ca_file, cert_file=cloud.cert_file, key_file=cloud.key_file
        )
        self._rng = random.Random()
        self.log = get_logger(station=station_id, part="cloud", broker=f"{cloud.host}:{cloud.port}")

        self._link: _Link | None = None
        self._connected = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._running = False
        self._handling = False
        self._ever_connected = False
        self._outage_since: datetime | None = None
        self._started_at = clock()

        self.publishes = 0  # messages the broker acknowledged (QoS 1) or that were sent (QoS 0)
        self.reconnects = 0  # successful connections after the first
        self.commands = 0  # commands handled and acknowledged
        self.last_puback_at: datetime | None = None
        self.last_error: CloudError | None = None  # what ended the last connection or attempt
        self.session_present: bool | None = None  # did the broker still hold our session?

    # ------------------------------------------------------------------ state

    @property
    def connected(self) -> bool:
        """True while a connection is up, subscribed and announced online."""
        return self._connected.is_set()

    @property
    def outage_since(self) -> datetime | None:
        """When the current outage began (its first failed attempt); None while connected."""
        return self._outage_since

    async def wait_connected(self) -> None:
        await self._connected.wait()

    # ------------------------------------------------------------------ publishing

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
    ) -> None:
        """Publish and, for QoS 1, return only once the broker has acknowledged it with a
        success code. Raises `CloudError` when not connected, when the connection is lost
        before the PUBACK, or when the broker refuses the message."""
        link = self._link
        if link is None or not self._connected.is_set():
            raise CloudError("not connected to the MQTT broker", code="not_connected")
        properties = _publish_properties(response_topic, correlation_data)
        await self._send(link, topic, payload, qos=qos, retain=retain, properties=properties)

    async def publish_then(
        self,
        topic: str,
        payload: bytes,
        done: PubackCallback,
        *,
        retain: bool = False,
        correlation_data: bytes | None = None,
    ) -> None:
        """Publish at QoS 1 without waiting for the PUBACK: wait for room in the window, hand
        the message to the broker and return. `done` is called once, from the event loop, with
        None when a PUBACK accepted the message or with the `CloudError` that failed it (the
        broker refused it, no PUBACK in time, the connection lost); its place in the window is
        free again by then. Raises `CloudError` if it could not be handed over (not connected),
        and then never calls `done`. The outbox publisher drains a backlog so: no task, future
        or second semaphore of its own per message."""
        link = self._link
        if link is None or not self._connected.is_set():
            raise CloudError("not connected to the MQTT broker", code="not_connected")
        properties = _publish_properties(None, correlation_data)

        def settled(error: CloudError | None) -> None:
            if error is None:
                self.publishes += 1
                self.last_puback_at = self._clock()
            done(error)

        await link.send_then(topic, payload, settled, retain=retain, properties=properties)

    async def _send(
        self,
        link: _Link,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool,
        properties: Properties | None = None,
    ) -> None:
        await link.send(topic, payload, qos=qos, retain=retain, properties=properties)
        self.publishes += 1
        if qos > 0:
            self.last_puback_at = self._clock()

    # ------------------------------------------------------------------ life cycle

    async def stop(self) -> None:
        """Publish the retained online=false, disconnect cleanly (so the broker drops the Last
        Will) and make `run()` return. A command being handled may finish first. A stopped
        session stays stopped."""
        self._stop_requested.set()
        if self._running:
            await self._stopped.wait()

    async def run(self) -> None:
        """Stay connected until `stop()` or cancellation; never raises for a broker problem."""
        if self._running:
            raise RuntimeError("CloudSession.run() is already running")
        self._running = True
        self._stopped.clear()
        loop = asyncio.get_running_loop()
        failures = 0
        try:
            while not self._stop_requested.is_set():
                link = self._new_link()
                try:
                    await self._connect_and_serve(link)
                    break  # returns normally only once stop() was asked
                except CloudError as exc:
                    if self._stop_requested.is_set():
                        break
                    self._note_failure(exc, connected=link.connected_at is not None)
                    # A link that held for a while starts the backoff over; one that keeps
                    # dropping right after connecting does not.
                    if (
                        link.connected_at is not None
                        and loop.time() - link.connected_at >= self.cloud.reconnect_max_s
                    ):
                        failures = 0
                delay = self._backoff(failures)
                failures += 1
                self.log.debug("cloud_reconnect_wait", delay_s=round(delay, 3), attempt=failures)
                try:
                    async with asyncio.timeout(delay):
                        await self._stop_requested.wait()
                except TimeoutError:
                    pass
        finally:
            self._running = False
            self._connected.clear()
            self._stopped.set()

    def _note_failure(self, error: CloudError, *, connected: bool) -> None:
        """Log the start of an outage once; the attempts that follow only at debug level."""
        self.last_error = error
        if self._outage_since is None:
            self._outage_since = self._clock()
            event = "cloud_disconnected" if connected else "cloud_unreachable"
            self.log.warning(event, error=str(error), code=error.code)
        else:
            self.log.debug("cloud_still_unreachable", error=str(error), code=error.code)

    # ------------------------------------------------------------------ one connection

    def _new_link(self) -> _Link:
        cloud = self.cloud
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = cloud.session_expiry_s
        # With manual acknowledgement, this is also how many commands can wait in our queue.
        properties.ReceiveMaximum = cloud.max_inflight
        will = aiomqtt.Will(
            self.topics.online, self._online_payload(online=False), qos=1, retain=True
        )
        return _Link(
            hostname=cloud.host,
            port=cloud.port,
            username=cloud.username,
            password=cloud.password,
            identifier=cloud.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=will,
            clean_start=False,
            keepalive=cloud.keepalive_s,
            timeout=float(cloud.keepalive_s),
            # A live connection answers within a keepalive; past two, something is wrong.
            puback_timeout_s=2.0 * cloud.keepalive_s,
            max_inflight_messages=cloud.max_inflight,
            max_concurrent_outgoing_calls=cloud.max_inflight,
            properties=properties,
            tls_context=self._tls,
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )

    async def _connect_and_serve(self, link: _Link) -> None:
        """One connection, from CONNECT to its end. Returns only when stop() was asked."""
        try:
            async with link:
                try:
                    await self._opened(link)
                    await self._serve(link)
                except asyncio.CancelledError:
                    await self._say_goodbye(link)
                    raise
                await self._say_goodbye(link)
        except aiomqtt.MqttError as exc:
            raise _translate(exc, connected=link.connected_at is not None) from exc
        except OSError as exc:
            raise CloudError(
                f"the broker connection failed: {exc}", code="connection_lost"
            ) from exc
        finally:
            self._connected.clear()
            if self._link is link:
                self._link = None
            link.lose(CloudError("the connection to the broker was closed", code="connection_lost"))

    async def _opened(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        link.connected_at = loop.time()
        link.open_window(self.cloud.max_inflight)
        self._link = link
        self.session_present = link.session_present
        # Subscribe before announcing: a command sent the moment we look online must not be
        # lost on a first connection, when the broker holds no subscription for us yet.
        granted = await link.subscribe(
            self.topics.commands_filter, options=SubscribeOptions(qos=1, retainHandling=2)
        )
        for code in granted:
            if isinstance(code, ReasonCode) and code.is_failure:
                raise CloudError(
                    f"the broker refused the subscription to {self.topics.commands_filter}: {code}",
                    code="subscribe_refused",
                )
        await self._send(
            link, self.topics.online, self._online_payload(online=True), qos=1, retain=True
        )
        self._connected.set()
        down_s = None
        if self._outage_since is not None:
            down_s = round((self._clock() - self._outage_since).total_seconds(), 3)
            self._outage_since = None
        if self._ever_connected:
            self.reconnects += 1
            self.log.info(
                "cloud_reconnected",
                down_s=down_s,
                session_present=link.session_present,
                reconnects=self.reconnects,
            )
            if not link.session_present:
                self.log.warning(
                    "cloud_session_lost", hint="the broker forgot our session while we were away"
                )
        else:
            self._ever_connected = True
            self.log.info("cloud_connected", down_s=down_s, session_present=link.session_present)
        if self._on_connected is not None:
            try:
                await self._on_connected(link.session_present)
            except EdgectlError as exc:
                # The connection is fine; the state is queued again with its next change.
                self.log.warning("cloud_retained_state_not_queued", error=str(exc), code=exc.code)

    async def _serve(self, link: _Link) -> None:
        deliver = asyncio.create_task(self._deliver(link), name="cloud-commands")
        beat = asyncio.create_task(self._heartbeat(), name="cloud-heartbeat")
        stop = asyncio.create_task(self._stop_requested.wait(), name="cloud-stop")
        try:
            await asyncio.wait((deliver, stop), return_when=asyncio.FIRST_COMPLETED)
            if not deliver.done():
                # Stop asked: take no new command, let the one in hand finish (it is not
                # acknowledged otherwise, and would only come back after the restart).
                self._connected.clear()
                if not self._handling:
                    deliver.cancel()
                await asyncio.wait((deliver,), timeout=_HANDLER_GRACE_S)
        finally:
            for task in (deliver, beat, stop):
                task.cancel()
            await asyncio.gather(deliver, beat, stop, return_exceptions=True)
        error = None if deliver.cancelled() else deliver.exception()
        if error is not None:
            raise error

    async def _deliver(self, link: _Link) -> None:
        async for message in link.messages:
            command = self._incoming(message)
            if command is not None:
                self._handling = True
                try:
                    await self._on_command(command)
                except Exception as exc:
                    # Not acknowledged: the broker delivers it again on the next connection.
                    self.log.error("command_handler_failed", topic=command.topic, error=repr(exc))
                    raise CloudError(
                        f"the command handler failed on {command.topic}: {exc!r}",
                        code="handler_failed",
                    ) from exc
                finally:
                    self._handling = False
                self.commands += 1
            link.ack(message)
            if self._stop_requested.is_set():
                return

    def _incoming(self, message: aiomqtt.Message) -> IncomingCommand | None:
        topic = str(message.topic)
        command_type = self.topics.parse_command_topic(topic)
        if command_type is None:
            self.log.warning("cloud_message_ignored", topic=topic)
            return None
        properties = message.properties
        response_topic = getattr(properties, "ResponseTopic", None)
        correlation = getattr(properties, "CorrelationData", None)
        return IncomingCommand(
            topic=topic,
            type=command_type,
            payload=bytes(message.payload),
            response_topic=str(response_topic) if response_topic else None,
            correlation_data=bytes(correlation) if correlation is not None else None,
            received_at=self._clock(),
        )

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.cloud.heartbeat_s
        due = loop.time() + period
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due += period
            try:
                payload = await self._heartbeat_payload()
                await self.publish(self.topics.heartbeat, payload, qos=0)
            except EdgectlError as exc:
                # A dead link is noticed and reported by the command loop; nothing to add here.
                self.log.debug("heartbeat_not_sent", error=str(exc), code=exc.code)

    async def _say_goodbye(self, link: _Link) -> None:
        """The retained online=false; the clean DISCONNECT that follows drops the Will."""
        self._connected.clear()
        try:
            async with asyncio.timeout(_GOODBYE_TIMEOUT_S):
                await self._send(
                    link, self.topics.online, self._online_payload(online=False), qos=1, retain=True
                )
        except (CloudError, TimeoutError) as exc:
            self.log.warning("cloud_goodbye_not_sent", error=str(exc) or "timeout")

    # ------------------------------------------------------------------ payloads, backoff

    def _online_payload(self, *, online: bool) -> bytes:
        message = contract.envelope(
            "online",
            self.station_id,
            0,
            contract.timestamp(self._clock()),
            contract.online_data(online, __version__),
        )
        return contract.encode(message)

    async def _default_heartbeat(self) -> bytes:
        now = self._clock()
        uptime = max(0, int((now - self._started_at).total_seconds()))
        # Sent by the session itself, not through the outbox: outside the sequence (seq 0).
        message = contract.envelope(
            "heartbeat",
            self.station_id,
            0,
            contract.timestamp(now),
            contract.heartbeat_data(uptime, 0),
        )
        return contract.encode(message)

    def _backoff(self, failures: int) -> float:
        return reconnect_delay(
            failures, low=self.cloud.reconnect_min_s, high=self.cloud.reconnect_max_s, rng=self._rng
        )


def reconnect_delay(failures: int, *, low: float, high: float, rng: random.Random) -> float:
    """Seconds to wait before the next attempt: full jitter between `low` and a cap that
    doubles with each failure, up to `high`."""
    cap = min(high, low * 2.0 ** min(failures + 1, 32))
    return rng.uniform(low, max(low, cap))


# --------------------------------------------------------------------------- the connection


class _Link(AckedClient):
    """One connection: an `AckedClient` that leaves QoS 1 acknowledgement of incoming
    messages to us and bounds the publishes in flight. Used once; the next connection gets a
    new one."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client.manual_ack_set(True)
        # paho sends each queued packet with a `send` of its own (with TCP_NODELAY, a segment
        # of its own); the packets queued since the last write go out together instead.
        self._write_packets = self._client._packet_write
        setattr(self._client, "_packet_write", self._write_together)  # noqa: B010
        self.connected_at: float | None = None
        self.session_present = False
        self.receive_maximum = _RECEIVE_MAXIMUM_DEFAULT
        self._window = asyncio.Semaphore(1)
        self._lost: CloudError | None = None

    def open_window(self, max_inflight: int) -> None:
        self._window = asyncio.Semaphore(max(1, min(max_inflight, self.receive_maximum)))

    @property
    def sock(self) -> socket.socket | None:
        sock = self._client.socket()
        return sock if isinstance(sock, socket.socket) else None

    async def send(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool,
        properties: Properties | None = None,
    ) -> None:
        async with self._window:
            if self._lost is not None:
                raise CloudError(str(self._lost), code="not_connected")
            await self.publish_acked(topic, payload, qos=qos, retain=retain, properties=properties)

    async def send_then(
        self,
        topic: str,
        payload: bytes,
        done: PubackCallback,
        *,
        retain: bool,
        properties: Properties | None = None,
    ) -> None:
        """QoS 1 within the window, `done` called on the PUBACK (`CloudSession.publish_then`).
        The place in the window is given back before `done` runs."""
        window = self._window
        await window.acquire()
        if self._lost is not None:
            window.release()
            raise CloudError(str(self._lost), code="not_connected")

        def settled(error: CloudError | None) -> None:
            window.release()
            done(error)

        try:
            mid = self.publish_then(
                topic, payload, settled, qos=1, retain=retain, properties=properties
            )
        except BaseException:
            window.release()
            raise
        if mid is None:  # not waiting for a PUBACK after all
            settled(None)

    def _write_together(self) -> MQTTErrorCode:
        """paho's `_packet_write`, after each run of packets waiting in its queue was joined
        into one (of up to _JOINED_BYTES), so that a run goes out in one `send`.

        A packet paho does something with once written (a QoS 0 PUBLISH: its on_publish; a
        DISCONNECT: closing the socket) stays as it is, between the runs. A joined packet
        takes its first packet's header fields, which paho reads only to decide that: so it
        does nothing with it but write it, as with the packets it was made of.
        """
        queue = self._client._out_packet
        if len(queue) < 2:
            return self._write_packets()
        packets = list(queue)
        queue.clear()
        run: list[Any] = []
        size = 0
        for packet in [*packets, None]:
            if packet is not None and _joinable(packet) and size < _JOINED_BYTES:
                run.append(packet)
                size += packet["to_process"]
                continue
            if len(run) > 1:
                joined = b"".join(p["packet"][p["pos"] :] for p in run)
                first = run[0]
                first["packet"], first["pos"], first["to_process"] = joined, 0, len(joined)
                queue.append(first)
            elif run:
                queue.append(run[0])
            run, size = [], 0
            if packet is not None:
                if _joinable(packet):  # the run before it was full
                    run, size = [packet], packet["to_process"]
                else:
                    queue.append(packet)
        return self._write_packets()

    def ack(self, message: aiomqtt.Message) -> None:
        if message.qos > 0 and self._lost is None:
            # On a connection that has just gone this does nothing; the broker redelivers.
            self._client.ack(message.mid, message.qos)

    def lose(self, error: CloudError) -> None:
        """The connection is gone: fail every publish still waiting for its PUBACK."""
        if self._lost is None:
            self._lost = error
        self.fail_pending(error)

    # -- paho callbacks (run on the event loop, from aiomqtt's socket callbacks)

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        if not reason_code.is_failure:
            self.session_present = bool(flags.session_present)
            maximum = getattr(properties, "ReceiveMaximum", None)
            if isinstance(maximum, int) and maximum > 0:
                self.receive_maximum = maximum
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        super()._on_disconnect(client, userdata, flags, reason_code, properties)
        if self.connected_at is not None:
            self.lose(
                CloudError(f"the broker connection closed: {reason_code}", code="connection_lost")
            )


# --------------------------------------------------------------------------- helpers

_JOINED_BYTES: Final = 65536  # at most this much in one `send` of joined packets


def _joinable(packet: Any) -> bool:
    """A queued packet paho does nothing with once written but forget it."""
    kind = packet["command"] & 0xF0
    return not ((kind == paho.PUBLISH and packet["qos"] == 0) or kind == paho.DISCONNECT)


def _publish_properties(
    response_topic: str | None, correlation_data: bytes | None
) -> Properties | None:
    if response_topic is None and correlation_data is None:
        return None
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if response_topic is not None:
        properties.ResponseTopic = response_topic
    if correlation_data is not None:
        properties.CorrelationData = correlation_data
    return properties


def _translate(exc: aiomqtt.MqttError, *, connected: bool) -> CloudError:
    if isinstance(exc, MqttConnectError):
        return CloudError(f"the broker refused the connection: {exc}", code="connect_refused")
    if connected:
        cause = exc.__cause__ or exc
        return CloudError(f"the connection to the broker was lost: {cause}", code="connection_lost")
    return CloudError(f"cannot connect to the broker: {exc}", code="connect_failed")
