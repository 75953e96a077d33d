"""Test kit: the cloud's side of the MQTT contract, on a real broker, for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgectl.cloud.signing import encode_public_key, sign_command

Message = tuple[str, dict[str, Any], aiomqtt.Message]


def cloud_section(port: int, key: Ed25519PrivateKey, key_id: str = "test-key") -> str:
    public = encode_public_key(key.public_key())
    return f"""
[cloud]
host = "127.0.0.1"
port = {port}
tls = false
heartbeat_s = 2
keepalive_s = 5
reconnect_min_s = 0.2
reconnect_max_s = 1
command_keys = [{{ id = "{key_id}", public_key = "{public}" }}]
"""


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TestCloud:
    __test__ = False  # a helper, not a test class
    """Sends signed commands and records everything the station publishes."""

    def __init__(
        self,
        port: int,
        station: str,
        key: Ed25519PrivateKey,
        *,
        key_id: str = "test-key",
        prefix: str = "edgectl",
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.username = username
        self.password = password
        self.port = port
        self.station = station
        self.key = key
        self.key_id = key_id
        self.base = f"{prefix}/v1/{station}"
        self.messages: list[Message] = []
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> TestCloud:
        self._client = aiomqtt.Client(
            "127.0.0.1",
            self.port,
            identifier=f"test-cloud-{uuid.uuid4().hex[:8]}",
            protocol=aiomqtt.ProtocolVersion.V5,
            username=self.username,
            password=self.password,
        )
        await self._stack.enter_async_context(self._client)
        await self._client.subscribe(f"{self.base}/#", qos=1)
        await self._client.subscribe("replies/#", qos=1)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._reader
        with contextlib.suppress(aiomqtt.MqttError):
            await self._stack.aclose()

    async def _read(self) -> None:
        assert self._client is not None
        async for message in self._client.messages:
            payload = message.payload
            if not isinstance(payload, bytes):
                continue
            try:
                body = json.loads(payload)
            except ValueError:
                continue
            self.messages.append((str(message.topic), body, message))

    # ------------------------------------------------------------------ commands
    def command(
        self,
        type_: str,
        data: dict[str, Any],
        *,
        cmd_id: str | None = None,
        valid_for: float = 60,
        issued_at: datetime | None = None,
        station: str | None = None,
        sign: bool = True,
        key: Ed25519PrivateKey | None = None,
    ) -> dict[str, Any]:
        issued = issued_at or datetime.now(UTC)
        body: dict[str, Any] = {
            "schema": f"edgectl/v1/cmd/{type_}",
            "cmd_id": cmd_id or f"c-{uuid.uuid4().hex[:12]}",
            "station": station or self.station,
            "issued_at": iso(issued),
            "expires_at": iso(issued + timedelta(seconds=valid_for)),
            "data": data,
        }
        if sign:
            body = sign_command(body, key or self.key, self.key_id)
        return body

    async def publish(
        self,
        type_: str,
        body: dict[str, Any] | bytes,
        *,
        reply_to: str | None = None,
        correlation: bytes | None = None,
    ) -> None:
        assert self._client is not None
        properties = None
        if reply_to is not None:
            properties = Properties(PacketTypes.PUBLISH)
            properties.ResponseTopic = reply_to
            if correlation is not None:
                properties.CorrelationData = correlation
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        await self._client.publish(
            f"{self.base}/cmd/{type_}", payload, qos=1, properties=properties
        )

    async def send(self, type_: str, data: dict[str, Any], **kw: Any) -> str:
        body = self.command(type_, data, **kw)
        await self.publish(type_, body)
        return str(body["cmd_id"])

    # ------------------------------------------------------------------ what came back
    def on(self, suffix: str) -> list[dict[str, Any]]:
        return [body for topic, body, _ in self.messages if topic == f"{self.base}/{suffix}"]

    def results(self, cmd_id: str) -> list[dict[str, Any]]:
        return [m["data"] for m in self.on("result") if m["data"].get("cmd_id") == cmd_id]

    def orders(self, order_id: str) -> list[dict[str, Any]]:
        """The order's steps as a cloud keeps them: a re-send (the same `msg_id`, as after a
        restart whose PUBACK was not on record yet) counted once, as docs/mqtt.md says."""
        seen: set[str] = set()
        steps = []
        for m in self.on("evt/order"):
            if m["data"]["order_id"] != order_id or m["msg_id"] in seen:
                continue
            seen.add(m["msg_id"])
            steps.append(m["data"])
        return steps

    async def wait(self, predicate: Callable[[], Any], timeout: float = 10, what: str = "") -> Any:
        async def poll() -> Any:
            while not (value := predicate()):
                await asyncio.sleep(0.01)
            return value

        try:
            return await asyncio.wait_for(poll(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what or predicate}") from None

    async def result(self, cmd_id: str, timeout: float = 10) -> dict[str, Any]:
        found = await self.wait(lambda: self.results(cmd_id), timeout, f"result of {cmd_id}")
        return dict(found[0])


@contextlib.asynccontextmanager
async def cloud_for(port: int, station: str, key: Ed25519PrivateKey) -> AsyncIterator[TestCloud]:
    async with TestCloud(port, station, key) as cloud:
        yield cloud
