"""The aiomqtt client both ends of the cloud link use: PUBACK reason codes and early failures.

aiomqtt 2.5 resolves a QoS 1 publish on the PUBACK but drops its MQTT 5 reason code, so a
broker that refuses a message (quota exceeded, not authorized) looks like one that took it;
and a connection that closes before its CONNACK (a TLS 1.3 broker refusing the client
certificate does so just after the handshake) is only noticed at aiomqtt's timeout. This
subclass publishes through aiomqtt's paho client and hooks paho's callbacks (aiomqtt's
``_on_*`` methods) for both, which is one reason aiomqtt is pinned to 2.5.x. aiomqtt and paho
errors of a publish become `CloudError` here.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttCodeError
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edgectl.errors import CloudError

__all__ = ["AckedClient", "PubackCallback", "tls_context"]


PubackCallback = Callable[[CloudError | None], None]
"""Called once for a QoS 1 publish handed over with `AckedClient.publish_then`: with None
when a PUBACK accepted it, or with the `CloudError` that failed it."""


class AckedClient(aiomqtt.Client):
    """An aiomqtt client whose QoS 1 publishes return only on a PUBACK that accepts them."""

    def __init__(self, *, puback_timeout_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.puback_timeout_s = puback_timeout_s
        # The publishes waiting for their PUBACK, oldest first, each with its topic (for the
        # error) and its deadline. One timer watches them all (the oldest's deadline): an
        # `asyncio.timeout` per message, a timer scheduled and cancelled in the loop's heap for
        # each, cost more than the rest of the wait in an outbox replay (issue 12).
        self._pubacks: dict[int, tuple[PubackCallback, str, float]] = {}
        self._expiry: asyncio.TimerHandle | None = None

    async def publish_acked(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        """Publish; for QoS 1 wait for the PUBACK (up to `puback_timeout_s`) and raise
        `CloudError` if the broker refused the message or the connection went first."""
        future: asyncio.Future[CloudError | None] = asyncio.get_running_loop().create_future()

        def resolve(error: CloudError | None) -> None:
            if not future.done():
                future.set_result(error)

        mid = self.publish_then(
            topic, payload, resolve, qos=qos, retain=retain, properties=properties
        )
        if mid is None:
            return
        try:
            error = await future
        finally:
            entry = self._pubacks.get(mid)
            if entry is not None and entry[0] is resolve:  # cancelled: nobody is waiting
                del self._pubacks[mid]
        if error is not None:
            raise error

    def publish_then(
        self,
        topic: str,
        payload: bytes,
        done: PubackCallback,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> int | None:
        """Hand a message to the broker without waiting: for QoS 1, `done` is called once
        later, from the event loop, with None on a PUBACK that accepts it or with the
        `CloudError` that failed it (refused, `puback_timeout`, the connection lost). An outbox
        replay publishes so, with no task or future of its own per message.

        Returns the message id `done` waits on, or None (QoS 0, or sent already) if `done`
        will not be called. Raises `CloudError` (and never calls `done`) if the message could
        not be handed over. `done` must not raise: it runs inside paho's packet handling.
        """
        try:
            info = self._client.publish(topic, payload, qos, retain, properties)
        except ValueError as exc:  # bad topic, QoS or payload size
            raise CloudError(f"cannot publish on {topic}: {exc}", code="publish_failed") from exc
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise CloudError(
                f"cannot publish on {topic}: {paho.error_string(info.rc)}",
                code="not_connected" if info.rc == paho.MQTT_ERR_NO_CONN else "publish_failed",
            )
        if qos == 0 or info.is_published():
            return None
        # The PUBACK is read on the event loop, so it cannot arrive before this is registered.
        timeout = self.puback_timeout_s
        if timeout is None:
            deadline = float("inf")
        else:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            if self._expiry is None:
                self._expiry = loop.call_at(deadline, self._expire)
        self._pubacks[info.mid] = (done, topic, deadline)
        return info.mid

    def fail_pending(self, error: CloudError) -> None:
        """Fail every publish still waiting for its PUBACK (the connection is gone)."""
        pending, self._pubacks = self._pubacks, {}
        for done, _, _ in pending.values():
            _settle(done, CloudError(str(error), code=error.code))

    def _expire(self) -> None:
        """The timer: fail the publishes past their deadline and wait for the next one.

        Every publish has the same timeout, so the dict's order (oldest first) is the order
        of the deadlines; one still in time ends the sweep."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for mid, (done, topic, deadline) in list(self._pubacks.items()):
            if deadline > now:
                self._expiry = loop.call_at(deadline, self._expire)
                return
            del self._pubacks[mid]
            _settle(
                done,
                CloudError(
                    f"no PUBACK for the message on {topic} within {self.puback_timeout_s:g} s",
                    code="puback_timeout",
                ),
            )

    # -- paho callbacks (run on the event loop, from aiomqtt's socket callbacks)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        super()._on_disconnect(client, userdata, flags, reason_code, properties)
        if not self._connected.done():
            # Closed before the CONNACK: fail the connect now rather than at aiomqtt's timeout.
            self._connected.set_exception(
                MqttCodeError(reason_code, "the connection closed before the CONNACK")
            )
        self.fail_pending(
            CloudError(f"the broker connection closed: {reason_code}", code="connection_lost")
        )

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        entry = self._pubacks.pop(mid, None)
        if entry is not None:
            done, topic, _ = entry
            _settle(
                done,
                CloudError(
                    f"the broker refused the message on {topic}: {reason_code}",
                    code="publish_refused",
                )
                if reason_code.is_failure
                else None,
            )
        super()._on_publish(client, userdata, mid, reason_code, properties)


def _settle(done: PubackCallback, error: CloudError | None) -> None:
    """Call a publish's `done`; one that raises is reported to the loop's exception handler
    and does not stop the others (paho's packet handling, or a sweep of many, is calling)."""
    try:
        done(error)
    except Exception as exc:
        asyncio.get_running_loop().call_exception_handler(
            {"message": "a PUBACK callback raised", "exception": exc}
        )


def tls_context(
    *, tls: bool, ca_file: Path | None, cert_file: Path | None, key_file: Path | None
) -> ssl.SSLContext | None:
    """The TLS settings of a broker connection (TLS 1.2 at least), or None without TLS."""
    if not tls:
        return None
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert_file is not None:
            context.load_cert_chain(cert_file, key_file)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise CloudError(f"cannot load the TLS files: {exc}", code="tls") from None
    return context
