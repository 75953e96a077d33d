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
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttCodeError
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edgectl.errors import CloudError

__all__ = ["AckedClient", "tls_context"]


class _PubackTimeout(Exception):
    """A publish waited for its PUBACK longer than `AckedClient.puback_timeout_s`."""


class AckedClient(aiomqtt.Client):
    """An aiomqtt client whose QoS 1 publishes return only on a PUBACK that accepts them."""

    def __init__(self, *, puback_timeout_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.puback_timeout_s = puback_timeout_s
        # The publishes waiting for their PUBACK, oldest first, each with its deadline. One
        # timer watches them all (the oldest's deadline): an `asyncio.timeout` per message,
        # a timer scheduled and cancelled in the loop's heap for each, cost more than the
        # rest of the wait in an outbox replay (issue 12).
        self._pubacks: dict[int, tuple[asyncio.Future[ReasonCode], float]] = {}
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
            return
        # The PUBACK is read on the event loop, so it cannot arrive before this is registered.
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ReasonCode] = loop.create_future()
        timeout = self.puback_timeout_s
        deadline = loop.time() + timeout if timeout is not None else float("inf")
        self._pubacks[info.mid] = (future, deadline)
        if self._expiry is None and timeout is not None:
            self._expiry = loop.call_at(deadline, self._expire)
        try:
            reason = await future
        except _PubackTimeout:
            raise CloudError(
                f"no PUBACK for the message on {topic} within {timeout:g} s",
                code="puback_timeout",
            ) from None
        finally:
            entry = self._pubacks.get(info.mid)
            if entry is not None and entry[0] is future:
                del self._pubacks[info.mid]
        if reason.is_failure:
            raise CloudError(
                f"the broker refused the message on {topic}: {reason}", code="publish_refused"
            )

    def fail_pending(self, error: CloudError) -> None:
        """Fail every publish still waiting for its PUBACK (the connection is gone)."""
        for future, _ in self._pubacks.values():
            if not future.done():
                future.set_exception(CloudError(str(error), code=error.code))
        self._pubacks.clear()

    def _expire(self) -> None:
        """The timer: fail the publishes past their deadline and wait for the next one.

        Every publish has the same timeout, so the dict's order (oldest first) is the order
        of the deadlines; one still in time ends the sweep."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for mid, (future, deadline) in list(self._pubacks.items()):
            if deadline > now:
                self._expiry = loop.call_at(deadline, self._expire)
                return
            del self._pubacks[mid]
            if not future.done():
                future.set_exception(_PubackTimeout())

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
        if entry is not None and not entry[0].done():
            entry[0].set_result(reason_code)
        super()._on_publish(client, userdata, mid, reason_code, properties)


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
