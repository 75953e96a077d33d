"""Benchmark: pay-at-pump order-to-authorize latency and live pump-state latency, end to end.

Everything real except the pumps and the cloud: a private Mosquitto on 127.0.0.1 (a free port,
`set_tcp_nodelay true`) and the daemon as a child process (`edgectl run` on a generated config:
cloud mode, a [cloud] section without TLS, logging at "warning"). In this process: two DART
lines of 8 simulated pumps each on ptys, without line-timing emulation, and the cloud, an
MQTT 5 client with TCP_NODELAY that signs its commands with a key made for the run. Both sides
of every figure are read from `time.perf_counter()` in this one process.

Orders, one at a time, rotating over the 16 pumps: publish a signed `authorize` (amount
preset); the latency ends when the simulated pump decodes the data frame that authorizes it.
The result's round trip (publish -> result received) is the second figure. A signed `cancel`
then frees the pump, and the next order waits until the pump is idle again.

Live status: nozzle lifts and hang-ups at idle pumps, from the moment the simulated pump
changes to the arrival of the retained `state/pump/{n}` at the cloud, split at the pump's
answer to the poll that carries the change (before it: waiting to be polled; after it: the
driver, the station, the store, the outbox and the broker). It runs once per idle poll
period given (the shipped 200 ms, then 0), each with a fresh daemon. `--line-timing` makes
the simulated lines emulate 9600 baud and a 5 ms think time, as a real line would.

    .venv/bin/python bench/order_latency.py                  # 1,000 orders, 200 changes x 2
    .venv/bin/python bench/order_latency.py --orders 5000 --idle-poll-ms 200
    .venv/bin/python bench/order_latency.py --json

Exits 0 whether or not the targets are met (this is a measurement); 1 when the measurement
could not be set up (the broker or the daemon failed, pumps never came online, the daemon
died, a pump could not be freed); 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiomqtt
from _kit import (
    GRADES_TOML,
    Child,
    SetupError,
    forecourt_toml,
    free_port,
    host_busy_s,
    read_log_events,
)
from _kit import machine as host_machine
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.ptylink import PtyLink
from drivers.wayne_dart.codec import DartStatus, Frame, FrameKind, Malformed
from drivers.wayne_dart.sim import DartLineSimulator, SimPump
from edgectl import config as station_config
from edgectl.cloud.contract import (
    AuthorizeData,
    CancelData,
    CommandData,
    StopData,
    Topics,
    command_envelope,
)
from edgectl.cloud.signing import encode_public_key, sign_command
from edgectl.logs import configure

STATION = "BENCH-01"
PREFIX = "edgectl"
KEY_ID = "bench-key"
CURRENCY = "CNY"
PRESET = Decimal("50.00")
LINES = 2
PUMPS_PER_LINE = 8
PUMPS = LINES * PUMPS_PER_LINE
NOZZLES = {1: 745, 2: 793}  # raw prices, 2 decimals: the grades below
HOST = "127.0.0.1"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
BAUD = 9600  # with --line-timing: 8O1, as the other benchmarks
REPLY_DELAY_S = 0.005
TARGET_AUTHORIZE_P99_S = 0.005
TARGET_STATUS_S = 0.250
SETUP_TIMEOUT_S = 30.0
STEP_TIMEOUT_S = 5.0  # one order's or one change's answer; far above any healthy figure
SETTLE_S = 1.0  # after the last pump came online: the station reads totals and sends prices
STOP_GRACE_S = 20.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


# ======================================================================================
# The pumps: simulated in this process, timestamped on the line thread
# ======================================================================================
class TimedPump(SimPump):
    """A simulated pump that timestamps the two frames this benchmark is about.

    The simulator calls `handle()` for a frame addressed to this pump as soon as it has
    decoded it, so the time taken on entry is when the frame arrived (the pty read and the
    decode are a few microseconds earlier). A status listener alone would fire later, after
    the frame's other transactions (allowed nozzles, preset) had been carried out.
    """

    def __init__(self, address: int) -> None:
        super().__init__(address, NOZZLES)
        # Called on the line thread with the arrival time of the frame that authorized it.
        self.on_authorized: Callable[[float], None] | None = None
        self.reported_at: float | None = None  # first data reply after `watch_report()`
        self._watching = False
        self._authorized_now = False
        self.add_listener(self._on_status)

    def _on_status(self, status: DartStatus) -> None:
        if status is DartStatus.AUTHORIZED:
            self._authorized_now = True

    def watch_report(self) -> None:
        """Timestamp the next data reply: the one carrying a change about to be made."""
        self.reported_at = None
        self._watching = True

    def handle(self, item: Frame | Malformed) -> Frame | None:
        arrived = time.perf_counter()
        self._authorized_now = False
        reply = super().handle(item)
        if self._authorized_now and self.on_authorized is not None:
            self.on_authorized(arrived)
        if self._watching and reply is not None and reply.kind is FrameKind.DATA:
            # Without line-timing emulation the simulator writes it right after this returns;
            # with it, the reply's own line time and the think time still come after this.
            self._watching = False
            self.reported_at = time.perf_counter()
        return reply


def build_lines(line_timing: bool) -> list[DartLineSimulator]:
    """Without line timing (the default) a reply goes out as soon as it is made."""
    return [
        DartLineSimulator(
            [TimedPump(0x50 + p) for p in range(PUMPS_PER_LINE)],
            baud=BAUD if line_timing else None,
            parity="odd",
            reply_delay_s=REPLY_DELAY_S if line_timing else 0.0,
            name=f"line{n}",
        )
        for n in range(LINES)
    ]


def pump_number(line: int, address: int) -> int:
    """The station's pump number of a simulated pump, as `station_toml` numbers them."""
    return line * PUMPS_PER_LINE + (address - 0x50) + 1


# ======================================================================================
# The broker and the daemon: child processes
# ======================================================================================


def mosquitto_conf(port: int) -> str:
    return "\n".join(
        [
            "# Generated by bench/order_latency.py",
            # Running as root, Mosquitto would drop to user "mosquitto".
            f"user {getpass.getuser()}",
            # Without it every small packet may wait for the peer's delayed ACK (40 ms).
            "set_tcp_nodelay true",
            # Sessions and queued messages in memory only: nothing here outlives the run.
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "allow_anonymous true",
            f"listener {port} {HOST}",
            "",
        ]
    )


def start_broker(workdir: Path) -> tuple[Child, int]:
    if not os.access(MOSQUITTO, os.X_OK):
        raise SetupError("mosquitto is not installed (apt-get install mosquitto)")
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(mosquitto_conf(port))
    broker = Child("mosquitto", [MOSQUITTO, "-c", str(conf)], workdir / "mosquitto.log")
    deadline = time.monotonic() + 10.0
    while True:
        if not broker.alive():
            raise SetupError(f"mosquitto exited at start\n{broker.tail()}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return broker, port
        except OSError:
            if time.monotonic() > deadline:
                broker.stop(5.0)
                raise SetupError(
                    f"mosquitto did not listen on {HOST}:{port}\n{broker.tail()}"
                ) from None
            time.sleep(0.02)


def station_toml(workdir: Path, port: int, public_key: str, idle_poll_ms: int) -> str:
    """Two lines of eight two-nozzle pumps, released by the cloud only."""
    parts = [
        f"""\
# Generated by bench/order_latency.py
[station]
id = "{STATION}"
currency = "{CURRENCY}"

[store]
path = "{workdir / "edgectl.db"}"

[authorization]
mode = "cloud"
authorize_timeout_s = 120

[logging]
# Warning, so the figures are the station's work and not the cost of writing log lines.
level = "warning"
format = "json"

[cloud]
host = "{HOST}"
port = {port}
tls = false
topic_prefix = "{PREFIX}"
command_keys = [{{ id = "{KEY_ID}", public_key = "{public_key}" }}]

"""
    ]
    parts.append(GRADES_TOML)
    if hasattr(station_config, "ControlConfig"):
        # The daemon's control socket in this run's folder, not the machine-wide default that
        # another daemon (or another run) may hold. Only where the config has the section.
        parts.append(f'\n[control]\nsocket = "{workdir / "control.sock"}"\n')
    parts.append(forecourt_toml(workdir, LINES, PUMPS_PER_LINE, f"idle_poll_ms = {idle_poll_ms}"))
    return "".join(parts)


# ======================================================================================
# The cloud: an MQTT 5 client in this process
# ======================================================================================
Arrival = tuple[float, dict[str, Any]]  # perf_counter at arrival, the message's `data`
StateWaiter = tuple[Callable[[dict[str, Any]], bool], "asyncio.Future[Arrival]"]


class Cloud:
    """Signs and publishes commands; hands each result and pump state, timestamped as it
    arrives, to whoever is waiting for it."""

    def __init__(self, port: int, key: Ed25519PrivateKey) -> None:
        self.port = port
        self.key = key
        self.topics = Topics(PREFIX, STATION)
        self.states: dict[int, dict[str, Any]] = {}  # the latest pump_state of each pump
        self.online = False
        self.changed = asyncio.Event()  # set on every state message: readiness checks
        self._results: dict[str, asyncio.Future[Arrival]] = {}
        self._state_waiters: dict[int, list[StateWaiter]] = {}
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()
        self._cmd_seq = 0
        self._run_id = os.urandom(4).hex()

    async def __aenter__(self) -> Cloud:
        self._client = aiomqtt.Client(
            HOST,
            self.port,
            identifier=f"bench-cloud-{self._run_id}",
            protocol=aiomqtt.ProtocolVersion.V5,
            socket_options=_NODELAY,
            timeout=10.0,
        )
        try:
            await self._stack.enter_async_context(self._client)
            await self._client.subscribe(self.topics.result, qos=1)
            await self._client.subscribe(f"{self.topics.base}/state/#", qos=1)
        except aiomqtt.MqttError as exc:
            await self._stack.aclose()
            raise SetupError(f"the cloud client could not connect to the broker: {exc}") from exc
        self._reader = asyncio.create_task(self._read(), name="cloud-reader")
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
        result_topic, pump_prefix = self.topics.result, f"{self.topics.base}/state/pump/"
        async for message in self._client.messages:
            arrived = time.perf_counter()
            topic = message.topic.value
            try:
                data = json.loads(message.payload)["data"]
            except (ValueError, KeyError, TypeError):
                continue
            if topic == result_topic:
                waiter = self._results.pop(str(data.get("cmd_id")), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result((arrived, data))
            elif topic.startswith(pump_prefix):
                pump = int(topic[len(pump_prefix) :])
                self.states[pump] = data
                waiters = self._state_waiters.get(pump, [])
                for entry in list(waiters):
                    predicate, waiter = entry
                    if predicate(data):
                        waiters.remove(entry)
                        if not waiter.done():
                            waiter.set_result((arrived, data))
                self.changed.set()
            elif topic == self.topics.online:
                self.online = bool(data.get("online"))
                self.changed.set()

    def command(self, data: CommandData) -> tuple[str, bytes]:
        """A signed command ready to publish, and its cmd_id."""
        self._cmd_seq += 1
        cmd_id = f"c-bench-{self._run_id}-{self._cmd_seq}"
        now = datetime.now(UTC)
        body = command_envelope(
            data,
            cmd_id=cmd_id,
            station=STATION,
            issued_at=now,
            expires_at=now + timedelta(minutes=5),
        )
        signed = sign_command(body, self.key, KEY_ID)
        return cmd_id, json.dumps(signed, separators=(",", ":")).encode()

    def order_id(self, n: int) -> str:
        return f"o-bench-{self._run_id}-{n}"

    def expect_result(self, cmd_id: str) -> asyncio.Future[Arrival]:
        future: asyncio.Future[Arrival] = asyncio.get_running_loop().create_future()
        self._results[cmd_id] = future
        return future

    def expect_state(
        self, pump: int, predicate: Callable[[dict[str, Any]], bool]
    ) -> asyncio.Future[Arrival]:
        """The next state of `pump` published from now on that satisfies `predicate`."""
        future: asyncio.Future[Arrival] = asyncio.get_running_loop().create_future()
        self._state_waiters.setdefault(pump, []).append((predicate, future))
        return future

    async def publish(self, command_type: str, payload: bytes) -> None:
        assert self._client is not None
        try:
            await self._client.publish(self.topics.command(command_type), payload, qos=1)
        except aiomqtt.MqttError as exc:
            raise SetupError(f"the cloud client lost the broker: {exc}") from exc

    def check(self) -> None:
        """SetupError if the connection to the broker is gone (the reader then ends)."""
        if self._reader is not None and self._reader.done():
            error = None if self._reader.cancelled() else self._reader.exception()
            raise SetupError(f"the cloud client lost the broker: {error}")


# ======================================================================================
# Measuring
# ======================================================================================
@dataclass
class Spread:
    """A latency distribution, in seconds."""

    n: int
    mean_s: float
    p50_s: float
    p95_s: float
    p99_s: float
    max_s: float
    min_s: float


def spread(values: list[float]) -> Spread | None:
    if not values:
        return None
    if len(values) == 1:
        v = values[0]
        return Spread(1, v, v, v, v, v, v)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return Spread(
        n=len(values),
        mean_s=statistics.fmean(values),
        p50_s=statistics.median(values),
        p95_s=cuts[94],
        p99_s=cuts[98],
        max_s=max(values),
        min_s=min(values),
    )


@dataclass
class Usage:
    """CPU over a phase: the daemon, the broker, this process, and the rest of the machine,
    each in % of one core."""

    seconds: float = 0.0
    daemon_pct: float = 0.0
    broker_pct: float = 0.0
    bench_pct: float = 0.0
    other_pct: float = 0.0


class UsageMeter:
    def __init__(self, daemon: Child, broker: Child) -> None:
        self._pids = (daemon.pid, broker.pid)
        self._start = self._read()

    def _read(self) -> tuple[float, float, float, float, float]:
        return (
            time.monotonic(),
            _cpu_s(self._pids[0]),
            _cpu_s(self._pids[1]),
            time.process_time(),
            host_busy_s(),
        )

    def done(self) -> Usage:
        end = self._read()
        wall = max(1e-9, end[0] - self._start[0])
        daemon, broker, bench, host = ((end[i] - self._start[i]) / wall * 100 for i in range(1, 5))
        return Usage(wall, daemon, broker, bench, max(0.0, host - daemon - broker - bench))


def _cpu_s(pid: int) -> float:
    """utime + stime of every thread of `pid`, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


@dataclass
class OrderTimes:
    authorize_s: float  # publish -> AUTHORIZE frame decoded at the pump
    result_s: float  # publish -> result received
    cancel_s: float  # publish of the cancel -> its result received


@dataclass
class ChangeTimes:
    lift: bool
    total_s: float  # the pump changes -> state/pump/{n} received
    poll_wait_s: float  # the pump changes -> the pump answers a poll with it
    publish_s: float  # the pump answers -> state/pump/{n} received


@dataclass
class RigResult:
    idle_poll_ms: int
    line_timing: bool  # 9600 baud 8O1 and a 5 ms think time emulated by the simulators
    pumps: int
    lines: int
    warmup_orders: int
    orders: int
    order_failures: dict[str, int]
    authorize: Spread | None
    result: Spread | None
    cancel_result: Spread | None
    target_authorize_p99_s: float
    authorize_target_met: bool | None
    orders_usage: Usage | None
    changes: int
    lifts: int
    hang_ups: int
    change_failures: int
    status_total: Spread | None
    status_poll_wait: Spread | None
    status_publish: Spread | None
    target_status_s: float
    # Issue 3 point 7 counts from when the driver sees the change: judged on `status_publish`.
    status_target_met: bool | None
    status_total_within_target: bool | None
    changes_usage: Usage | None
    daemon_log_events: dict[str, int] = field(default_factory=dict)


class Bench:
    """One rig's measurements: the cloud client, the simulated pumps, the daemon's health."""

    def __init__(
        self,
        cloud: Cloud,
        lines: list[DartLineSimulator],
        daemon: Child,
        broker: Child,
        rng: random.Random,
    ) -> None:
        self.cloud = cloud
        self.daemon = daemon
        self.broker = broker
        self.rng = rng
        self.pumps: dict[int, TimedPump] = {}
        for n, line in enumerate(lines):
            for sim_pump in line.pumps:
                assert isinstance(sim_pump, TimedPump)
                self.pumps[pump_number(n, sim_pump.address)] = sim_pump

    async def wait_ready(self) -> None:
        """The station is online and has reported every pump online and idle."""

        def ready() -> bool:
            states = self.cloud.states
            return self.cloud.online and all(
                states.get(n, {}).get("online") and states[n].get("state") == "idle"
                for n in self.pumps
            )

        deadline = time.monotonic() + SETUP_TIMEOUT_S
        while not ready():
            self.check_alive("the start")
            if time.monotonic() > deadline:
                idle = sum(1 for d in self.cloud.states.values() if d.get("state") == "idle")
                raise SetupError(
                    f"after {SETUP_TIMEOUT_S:.0f} s the station was "
                    f"{'online' if self.cloud.online else 'not online'} with {idle} of "
                    f"{PUMPS} pumps idle\n{self.daemon.tail()}"
                )
            self.cloud.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await self.cloud.changed.wait()
        await asyncio.sleep(SETTLE_S)

    def check_alive(self, what: str) -> None:
        """After a timeout: SetupError if it came from a dead process or connection."""
        for child in (self.daemon, self.broker):
            if not child.alive():
                raise SetupError(f"{child.name} exited during {what}\n{child.tail()}")
        self.cloud.check()

    async def pause(self, pause_s: float) -> None:
        # A random gap, so a step does not always meet the line or the outbox in one phase.
        await asyncio.sleep(self.rng.uniform(0.0, pause_s))

    # ---------------------------------------------------------------- orders
    async def order(self, n: int, pump: int) -> OrderTimes | str:
        """One order on an idle pump; its times, or why it failed. The pump ends idle."""
        cloud, sim_pump = self.cloud, self.pumps[pump]
        loop = asyncio.get_running_loop()
        order_id = cloud.order_id(n)
        data = AuthorizeData(order_id, pump, "amount", PRESET, CURRENCY)
        cmd_id, payload = cloud.command(data)
        authorized: asyncio.Future[float] = loop.create_future()

        def on_authorized(at: float) -> None:  # on the simulator's line thread
            loop.call_soon_threadsafe(_settle, authorized, at)

        result = cloud.expect_result(cmd_id)
        sim_pump.on_authorized = on_authorized
        try:
            sent = time.perf_counter()
            await cloud.publish("authorize", payload)
            async with asyncio.timeout(STEP_TIMEOUT_S):
                result_at, answer = await result
                if answer["status"] != "accepted":
                    return f"authorize {answer['code']}"
                authorized_at = await authorized
        except TimeoutError:
            self.check_alive("an order")
            await self.free(pump)
            return "authorize timeout"
        finally:
            sim_pump.on_authorized = None
        times = OrderTimes(authorized_at - sent, result_at - sent, float("nan"))

        cancel_id, cancel_payload = cloud.command(CancelData(order_id))
        idle = cloud.expect_state(pump, _idle)
        cancelled = cloud.expect_result(cancel_id)
        sent = time.perf_counter()
        await cloud.publish("cancel", cancel_payload)
        failure = None
        try:
            async with asyncio.timeout(STEP_TIMEOUT_S):
                cancelled_at, answer = await cancelled
                if answer["status"] != "accepted":
                    failure = f"cancel {answer['code']}"
                else:
                    await idle
        except TimeoutError:
            self.check_alive("a cancel")
            failure = "cancel timeout"
        if failure is not None:
            await self.free(pump)
            return failure
        times.cancel_s = cancelled_at - sent
        return times

    async def free(self, pump: int) -> None:
        """After a failed order: a signed `stop`, and the pump must be idle again."""
        cloud = self.cloud
        state = cloud.states.get(pump, {})
        if self.pumps[pump].status is DartStatus.RESET and _idle(state):
            return
        idle = cloud.expect_state(pump, _idle)
        cmd_id, payload = cloud.command(StopData(pump))
        stopped = cloud.expect_result(cmd_id)
        await cloud.publish("stop", payload)
        try:
            async with asyncio.timeout(STEP_TIMEOUT_S):
                await stopped
                await idle
        except TimeoutError:
            self.check_alive("freeing a pump")
            raise SetupError(
                f"pump {pump} could not be freed after a failed order (simulated pump "
                f"{self.pumps[pump].status.name}, station says {state.get('state')})"
            ) from None

    # ---------------------------------------------------------------- live status
    async def change(self, pump: int, lift: bool) -> ChangeTimes | None:
        """Lift (or hang up) nozzle 1 of an idle pump; None if the state never came."""
        sim_pump = self.pumps[pump]
        arrived = self.cloud.expect_state(pump, lambda d: d["nozzle_out"] is lift)
        sim_pump.watch_report()
        changed = time.perf_counter()
        if lift:
            sim_pump.lift(1)
        else:
            sim_pump.hang_up()
        try:
            async with asyncio.timeout(STEP_TIMEOUT_S):
                at, _data = await arrived
        except TimeoutError:
            self.check_alive("a nozzle change")
            return None
        reported = sim_pump.reported_at
        if reported is None:  # cannot happen: the state comes from that reply
            return None
        return ChangeTimes(lift, at - changed, reported - changed, at - reported)


def _settle(future: asyncio.Future[float], value: float) -> None:
    if not future.done():
        future.set_result(value)


def _idle(data: dict[str, Any]) -> bool:
    return data.get("state") == "idle" and data.get("order_id") is None


# ======================================================================================
# The phases
# ======================================================================================
@dataclass
class OrderPhase:
    times: list[OrderTimes]
    failures: dict[str, int]
    usage: Usage


@dataclass
class ChangePhase:
    times: list[ChangeTimes]
    failures: int
    usage: Usage


async def measure_orders(
    bench: Bench, orders: int, warmup: int, pause_s: float, meter: Callable[[], UsageMeter]
) -> OrderPhase:
    """`warmup` + `orders` orders, one at a time, each on the next pump in turn."""
    numbers = sorted(bench.pumps)
    times: list[OrderTimes] = []
    failures: dict[str, int] = {}
    usage = meter()
    for i in range(warmup + orders):
        if i == warmup:
            usage = meter()
        outcome = await bench.order(i, numbers[i % len(numbers)])
        if i >= warmup:
            if isinstance(outcome, str):
                failures[outcome] = failures.get(outcome, 0) + 1
            else:
                times.append(outcome)
        await bench.pause(pause_s)
    return OrderPhase(times, failures, usage.done())


async def measure_changes(
    bench: Bench, changes: int, pause_s: float, meter: Callable[[], UsageMeter]
) -> ChangePhase:
    """Lifts on up to 16 pumps in turn, then hang-ups on the same pumps, until `changes`.

    A line polls its idle pumps in one burst every idle poll period, and each change starts
    just after the previous one was reported, i.e. just after a burst. `pause_s` must cover a
    whole period for the next change to fall at a random phase, as a customer's would. A
    pump's hang-up comes a whole round after its lift for the same reason.
    """
    numbers = sorted(bench.pumps)
    times: list[ChangeTimes] = []
    failures = 0
    usage = meter()
    remaining = changes + changes % 2
    while remaining > 0:
        batch = numbers[: max(1, min(len(numbers), remaining // 2))]
        for lift in (True, False):
            for pump in batch:
                outcome = await bench.change(pump, lift)
                if outcome is None:
                    failures += 1
                else:
                    times.append(outcome)
                await bench.pause(pause_s)
        remaining -= 2 * len(batch)
    return ChangePhase(times, failures, usage.done())


async def measure(
    port: int,
    key: Ed25519PrivateKey,
    lines: list[DartLineSimulator],
    daemon: Child,
    broker: Child,
    *,
    orders: int,
    warmup_orders: int,
    changes: int,
    pause_s: float,
    idle_poll_ms: int,
    seed: int,
) -> tuple[OrderPhase | None, ChangePhase | None]:
    # SIGTERM cancels this task, as asyncio.run does on Ctrl-C, rather than raising
    # KeyboardInterrupt in the middle of the event loop's own machinery.
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        async with Cloud(port, key) as cloud:
            bench = Bench(cloud, lines, daemon, broker, random.Random(seed))
            await bench.wait_ready()

            def meter() -> UsageMeter:
                return UsageMeter(daemon, broker)

            order_phase = (
                await measure_orders(bench, orders, warmup_orders, pause_s, meter)
                if orders
                else None
            )
            change_pause_s = max(pause_s, idle_poll_ms / 1000)
            change_phase = (
                await measure_changes(bench, changes, change_pause_s, meter) if changes else None
            )
        return order_phase, change_phase
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, signal.default_int_handler)


# ======================================================================================
# One rig: broker, daemon, simulated lines, cloud
# ======================================================================================
def run_rig(
    *,
    idle_poll_ms: int,
    line_timing: bool,
    orders: int,
    warmup_orders: int,
    changes: int,
    pause_s: float,
    seed: int,
    keep_logs: Path | None = None,
) -> RigResult:
    with tempfile.TemporaryDirectory(prefix="edgectl-bench-") as tmp:
        workdir = Path(tmp)
        key = Ed25519PrivateKey.generate()
        config = workdir / "station.toml"
        links = [PtyLink(workdir / f"line{n}") for n in range(LINES)]
        lines: list[DartLineSimulator] = []
        children: list[Child] = []
        daemon: Child | None = None
        try:
            for link in links:
                link.open()
            broker, port = start_broker(workdir)
            children.append(broker)
            public_key = encode_public_key(key.public_key())
            config.write_text(station_toml(workdir, port, public_key, idle_poll_ms))
            daemon = Child(
                "daemon",
                [sys.executable, "-m", "edgectl", "run", "--config", str(config)],
                workdir / "daemon.log",
            )
            children.append(daemon)
            # Threads only from here on: both children were forked from a single thread.
            lines = build_lines(line_timing)
            for line, link in zip(lines, links, strict=True):
                line.serve_fd(link.master_fd)
            try:
                order_phase, change_phase = asyncio.run(
                    measure(
                        port,
                        key,
                        lines,
                        daemon,
                        broker,
                        orders=orders,
                        warmup_orders=warmup_orders,
                        changes=changes,
                        pause_s=pause_s,
                        idle_poll_ms=idle_poll_ms,
                        seed=seed,
                    )
                )
            except asyncio.CancelledError:
                raise KeyboardInterrupt from None  # SIGTERM: see measure()
        finally:
            # The daemon first, so it never sees its lines or its broker vanish.
            for child in reversed(children):
                child.stop(STOP_GRACE_S)
            for line in lines:
                line.stop()
            for link in links:
                link.close()
            if keep_logs is not None:
                target = keep_logs / f"idle_poll_{idle_poll_ms}ms"
                target.mkdir(parents=True, exist_ok=True)
                for path in (config, workdir / "mosquitto.conf", *(c.log for c in children)):
                    with contextlib.suppress(OSError):
                        shutil.copy(path, target / path.name)
        assert daemon is not None
        log_events = read_log_events(daemon.log)
    return rig_result(
        idle_poll_ms, line_timing, warmup_orders, order_phase, change_phase, log_events
    )


def rig_result(
    idle_poll_ms: int,
    line_timing: bool,
    warmup_orders: int,
    order_phase: OrderPhase | None,
    change_phase: ChangePhase | None,
    log_events: dict[str, int],
) -> RigResult:
    orders = order_phase.times if order_phase else []
    changes = change_phase.times if change_phase else []
    authorize = spread([t.authorize_s for t in orders])
    authorize_met = None if authorize is None else authorize.p99_s <= TARGET_AUTHORIZE_P99_S
    total = spread([c.total_s for c in changes])
    publish = spread([c.publish_s for c in changes])
    return RigResult(
        idle_poll_ms=idle_poll_ms,
        line_timing=line_timing,
        pumps=PUMPS,
        lines=LINES,
        warmup_orders=warmup_orders if order_phase else 0,
        orders=len(orders),
        order_failures=order_phase.failures if order_phase else {},
        authorize=authorize,
        result=spread([t.result_s for t in orders]),
        cancel_result=spread([t.cancel_s for t in orders]),
        target_authorize_p99_s=TARGET_AUTHORIZE_P99_S,
        authorize_target_met=authorize_met,
        orders_usage=order_phase.usage if order_phase else None,
        changes=len(changes),
        lifts=sum(1 for c in changes if c.lift),
        hang_ups=sum(1 for c in changes if not c.lift),
        change_failures=change_phase.failures if change_phase else 0,
        status_total=total,
        status_poll_wait=spread([c.poll_wait_s for c in changes]),
        status_publish=publish,
        target_status_s=TARGET_STATUS_S,
        status_target_met=None if publish is None else publish.max_s <= TARGET_STATUS_S,
        status_total_within_target=None if total is None else total.max_s <= TARGET_STATUS_S,
        changes_usage=change_phase.usage if change_phase else None,
        daemon_log_events=log_events,
    )


# ======================================================================================
# Reporting
# ======================================================================================
def machine() -> dict[str, Any]:
    mosquitto = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [MOSQUITTO, "-h"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
        mosquitto = out.splitlines()[0] if out else ""
    return {**host_machine(), "mosquitto": mosquitto}


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else "met" if met else "MISSED"


def _row(label: str, s: Spread | None, note: str = "") -> str:
    if s is None:
        return f"  {label:<24}{'-':>9}"
    cells = "".join(f"{v * 1000:9.2f}" for v in (s.p50_s, s.p95_s, s.p99_s, s.max_s, s.mean_s))
    return f"  {label:<24}{cells} ms{'   ' + note if note else ''}"


def _usage(u: Usage | None) -> str:
    if u is None:
        return ""
    return (
        f"  CPU (% of one core)     daemon {u.daemon_pct:.1f}, broker {u.broker_pct:.1f}, "
        f"this process {u.bench_pct:.1f}, rest of the machine {u.other_pct:.1f} "
        f"(over {u.seconds:.0f} s)"
    )


def table(r: RigResult) -> Iterator[str]:
    timing = (
        f"with {BAUD} baud 8O1 and {REPLY_DELAY_S * 1000:.0f} ms think time emulated"
        if r.line_timing
        else "without line-timing emulation"
    )
    yield (
        f"edgectl order latency: {r.pumps} pumps on {r.lines} lines x {r.pumps // r.lines}, "
        f"DART on ptys {timing}, idle_poll_ms = {r.idle_poll_ms}"
    )
    yield (
        "  daemon: `edgectl run` (cloud mode, logging warning); broker: mosquitto on "
        f"{HOST}, TCP_NODELAY on both clients and the broker"
    )
    header = "".join(f"{h:>9}" for h in ("p50", "p95", "p99", "max", "mean"))
    if r.authorize is not None:
        failed = sum(r.order_failures.values())
        yield (
            f"  orders                  {r.orders:9d}      one at a time over the {r.pumps} pumps; "
            f"{r.warmup_orders} warm-up orders not counted; {failed} failed"
        )
        for reason, count in sorted(r.order_failures.items()):
            yield f"    {count:5d}  {reason}"
        yield f"  {'':<24}{header}"
        target = r.target_authorize_p99_s * 1000
        yield _row(
            "publish -> AUTHORIZE",
            r.authorize,
            f"target p99 <= {target:.0f} ms: {_verdict(r.authorize_target_met)}",
        )
        yield _row("publish -> result", r.result)
        yield _row("cancel -> its result", r.cancel_result)
        yield _usage(r.orders_usage)
    if r.status_total is not None:
        yield (
            f"  live status changes     {r.changes:9d}      {r.lifts} lifts, "
            f"{r.hang_ups} hang-ups; {r.change_failures} never arrived"
        )
        yield f"  {'':<24}{header}"
        yield _row("change -> cloud", r.status_total)
        yield _row("  waiting for the poll", r.status_poll_wait)
        target = r.target_status_s * 1000
        yield _row(
            "  pump answer -> cloud",
            r.status_publish,
            f"target max <= {target:.0f} ms: {_verdict(r.status_target_met)}",
        )
        yield (
            "  (the same target counted from the change itself: "
            f"{_verdict(r.status_total_within_target)})"
        )
        yield _usage(r.changes_usage)
    yield from log_rows(r.daemon_log_events)


def log_rows(events: dict[str, int]) -> Iterator[str]:
    """What the daemon logged over the run, most frequent first."""
    yield f"  daemon log lines        {sum(events.values()):9d}      (whole run, shutdown included)"
    for key, count in sorted(events.items(), key=lambda kv: -kv[1]):
        yield f"    {count:5d}  {key}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Pay-at-pump order-to-authorize latency and live pump-state latency "
        "through a real Mosquitto and the real daemon, with 16 simulated DART pumps.",
    )
    parser.add_argument(
        "--orders", type=int, default=1000, help="orders measured per run (1000; 0: none)"
    )
    parser.add_argument(
        "--warmup-orders", type=int, default=PUMPS, help=f"orders not counted ({PUMPS})"
    )
    parser.add_argument(
        "--changes",
        type=int,
        default=200,
        help="nozzle lifts + hang-ups measured per run (200; 0: none)",
    )
    parser.add_argument(
        "--idle-poll-ms",
        default="200,0",
        metavar="MS[,MS...]",
        help="one run per value of the lines' idle_poll_ms, each with a fresh daemon "
        "(default 200,0: the shipped period, then polling idle pumps as fast as possible)",
    )
    parser.add_argument(
        "--pause-ms",
        type=float,
        default=50.0,
        help="random pause of 0..this between two orders (50), and between two nozzle "
        "changes 0..this or 0..idle_poll_ms, whichever is longer",
    )
    parser.add_argument(
        "--line-timing",
        action="store_true",
        help=f"the simulated lines emulate {BAUD} baud 8O1 and a {REPLY_DELAY_S * 1000:.0f} ms "
        "think time (default: none; the order target is set without it)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the pauses (1)")
    parser.add_argument(
        "--logs",
        type=Path,
        metavar="DIR",
        help="keep the configs and the daemon's and the broker's logs here, one folder per run",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        args.idle_poll = [int(v) for v in args.idle_poll_ms.split(",") if v.strip()]
    except ValueError:
        parser.error("--idle-poll-ms takes integers separated by commas, e.g. 200,0")
    if not args.idle_poll or any(not 0 <= v <= 10000 for v in args.idle_poll):
        parser.error("--idle-poll-ms values must be 0..10000")
    if args.orders < 0 or args.changes < 0 or args.warmup_orders < 0 or args.pause_ms < 0:
        parser.error("--orders, --warmup-orders, --changes and --pause-ms must not be negative")
    if args.orders == 0 and args.changes == 0:
        parser.error("nothing to measure: --orders and --changes are both 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path("/proc/self/stat").exists():
        print("order_latency: needs Linux /proc", file=sys.stderr)
        return 1
    # SIGTERM unwinds like Ctrl-C, so the daemon, the broker, the lines and the ptys are closed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    configure(level="warning", fmt="console")
    results: list[RigResult] = []
    try:
        for n, idle_poll_ms in enumerate(args.idle_poll):
            results.append(
                run_rig(
                    idle_poll_ms=idle_poll_ms,
                    line_timing=args.line_timing,
                    orders=args.orders,
                    warmup_orders=args.warmup_orders,
                    changes=args.changes,
                    pause_s=args.pause_ms / 1000,
                    seed=args.seed + n,
                    keep_logs=args.logs,
                )
            )
    except SetupError as exc:
        print(f"order_latency: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("order_latency: interrupted", file=sys.stderr)
        return 130
    if args.json:
        report = {
            "benchmark": "order_latency",
            "machine": machine(),
            "setup": {
                "pumps": PUMPS,
                "lines": LINES,
                "line_timing": (
                    {"baud": BAUD, "parity": "odd", "reply_delay_s": REPLY_DELAY_S}
                    if args.line_timing
                    else None
                ),
                "preset": {"type": "amount", "value": str(PRESET), "currency": CURRENCY},
                "pause_max_s": args.pause_ms / 1000,
                "seed": args.seed,
            },
            "runs": [asdict(r) for r in results],
        }
        print(json.dumps(report, indent=2))
        return 0
    info = machine()
    print(f"machine: {info['nproc']} x {info['cpu']}, Python {info['python']}, {info['mosquitto']}")
    for result in results:
        print()
        print("\n".join(line for line in table(result) if line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
