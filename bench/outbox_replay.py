"""Benchmark: the outbox replay after an outage, against a raw publisher measured in the same run.

A real store is filled, through the store's own API, with the backlog an outage leaves: sales,
and alarms raised and cleared, `--messages` guaranteed messages in all (default 100,000), each
stream numbered 1, 2, 3... Then, on one private Mosquitto (127.0.0.1, a free port, TCP_NODELAY,
no persistence), two publishers send those same messages to the same subscriber:

1. **The floor**: a raw windowed publisher, a child process of its own: aiomqtt at QoS 1 with
   TCP_NODELAY, as many in flight as the daemon may have (its `max_inflight`, cut to the
   broker's Receive Maximum as the daemon's session cuts it), publishing the exact topics and
   bytes the daemon will publish, encoded beforehand: what the broker and the subscriber can
   take, with no store and no encoding behind it.
2. **The daemon**: `python -m edgectl run` on a copy of the store, as a station runs it (16
   simulated DART pumps on two lines at 9600 baud with a 5 ms think time, auto release). It
   starts during the outage: the broker refuses its login until the floor is done, then the
   station's user is added and the broker reloads its password file (SIGHUP), and the daemon's
   next attempt connects and drains its outbox. Meanwhile customers buy fuel at the simulated
   pumps, and their sales are made, recorded and queued by the station as any sale is.

The subscriber (an aiomqtt client in this process, QoS 1) checks every stream: each `seq`
once, in order, none missing. The drain rate is the backlog's messages over the time from the
first of them to arrive to the last, for both publishers alike. docs/mqtt.md says each stream
goes in `seq` order and results, orders and sales go first, so a backlog of alarms does not
hold back a sale: a live sale waits for the backlog's own sales (same stream) and then
overtakes the alarms still waiting. Both are measured: its latency from the moment the
station recorded it (its `ts`) and from the customer's hang-up, to its arrival. The daemon's
VmRSS is sampled from /proc every 0.2 s during the replay, with its VmHWM at the end.

    .venv/bin/python bench/outbox_replay.py                   # 100,000 messages, 3 repeats
    .venv/bin/python bench/outbox_replay.py --quick           # a smoke run: 5,000, 1 repeat
    .venv/bin/python bench/outbox_replay.py --messages 20000 --delivery backend --json

Exits 0 whether or not the targets are met (this is a measurement); 1 when the measurement
could not be set up or did not complete (a process failed or died, a backlog never arrived);
130 when interrupted. A run whose counts or orders are wrong still exits 0 and says so: the
`ok` field of each repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import getpass
import json
import logging
import os
import pickle
import random
import secrets
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
from typing import IO, Any

import aiomqtt
from _kit import (
    GRADES_TOML,
    Child,
    SetupError,
    forecourt_toml,
    host_busy_s,
    machine,
    read_log_events,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.ptylink import PtyLink
from drivers.wayne_dart.codec import DartStatus
from drivers.wayne_dart.sim import Customer, DartLineSimulator, SimPump, normal_fill
from edgectl.cloud import contract
from edgectl.cloud.messages import ContractMessages
from edgectl.cloud.publisher import OutboxPublisher
from edgectl.cloud.signing import encode_public_key
from edgectl.config import CloudConfig
from edgectl.forecourt.sale import Sale
from edgectl.logs import configure
from edgectl.store.store import Store

STATION = "BENCH-01"
PREFIX = "edgectl"
CURRENCY = "CNY"
HOST = "127.0.0.1"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
LINES = 2
PUMPS_PER_LINE = 8
PUMPS = LINES * PUMPS_PER_LINE
BAUD = 9600
REPLY_DELAY_S = 0.005
NOZZLES = {1: 745, 2: 793}  # raw unit prices, 2 decimals: the grades of GRADES_TOML
GRADES = {1: "92", 2: "95"}
FLOW_LPS = 0.6
WINDOW = CloudConfig(host="", client_id="").max_inflight  # the daemon's default in-flight cap
TARGET_RATIO = 0.7
TARGET_RSS_MB = 100.0
SETUP_TIMEOUT_S = 30.0
LIVE_TAIL_S = 15.0  # after the replay: the live sales still on their way
RSS_EVERY_S = 0.2
STOP_GRACE_S = 20.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
# aiomqtt warns of every publish over paho's in-flight cap ("There are 20 pending publish
# calls"): with a window that is every publish.
_QUIET = logging.getLogger("bench.outbox_replay.mqtt")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


# ======================================================================================
# The backlog: a real store, filled through its own API
# ======================================================================================
@dataclass
class Backlog:
    path: Path
    messages: int
    last_seq: dict[str, int]  # stream -> its last seq (a new store: also its count)
    totals: dict[tuple[int, int], tuple[int, int]]  # (pump, nozzle) -> raw totals after
    fill_s: float
    bytes: int  # the store's size


def fill_backlog(path: Path, messages: int, sale_share: float, seed: int) -> Backlog:
    """What an outage of a few hours leaves: sales and alarms (a pump going offline and back,
    raised and cleared), in a random interleaving, timed over the past hours. Written with
    synchronous=OFF, which only makes the fill fast: the rows are what the daemon writes."""
    rng = random.Random(seed)
    sales = round(messages * sale_share)
    alarms = messages - sales
    step = timedelta(milliseconds=100)
    start = datetime.now(UTC) - step * messages - timedelta(minutes=1)
    tick = [0]

    def clock() -> str:
        tick[0] += 1
        return contract.timestamp(start + step * tick[0])

    started = time.perf_counter()
    store = Store(
        path,
        station_id=STATION,
        clock=clock,
        outbox_max_rows=None,
        messages=ContractMessages(),
    )
    totals: dict[tuple[int, int], tuple[int, int]] = {}
    try:
        store.query("PRAGMA synchronous=OFF")
        # An alarm raised and cleared is two messages; an odd count leaves one raised only.
        kinds = ["sale"] * sales + ["flicker"] * (alarms // 2) + ["raised"] * (alarms % 2)
        rng.shuffle(kinds)
        for kind in kinds:
            pump = rng.randint(1, PUMPS)
            if kind == "sale":
                nozzle = rng.choice(sorted(NOZZLES))
                price = Decimal(NOZZLES[nozzle]).scaleb(-2)
                volume = Decimal(rng.randrange(500, 6000)).scaleb(-2)
                amount = (volume * price).quantize(Decimal("0.01"))
                raw_volume, raw_amount = totals.get((pump, nozzle), (0, 0))
                raw_volume += int(volume * 100)
                raw_amount += int(amount * 100)
                totals[(pump, nozzle)] = (raw_volume, raw_amount)
                store.record_sale(
                    Sale(
                        pump=pump,
                        nozzle=nozzle,
                        grade=GRADES[nozzle],
                        volume=volume,
                        amount=amount,
                        unit_price=price,
                        currency=CURRENCY,
                        ended_at=clock(),
                        total_volume_after=Decimal(raw_volume).scaleb(-2),
                        total_amount_after=Decimal(raw_amount).scaleb(-2),
                    )
                )
                continue
            store.raise_alarm(
                "pump_offline", f"pump {pump} is offline: no answer", severity="warning", pump=pump
            )
            if kind == "flicker":
                store.clear_alarm("pump_offline", pump=pump)
        last_seq = {
            str(row["stream"]): int(row["last_seq"])
            for row in store.query("SELECT stream, last_seq FROM outbox_streams WHERE key = ''")
        }
    finally:
        store.close()
    if sum(last_seq.values()) != messages:
        raise SetupError(f"the backlog has {sum(last_seq.values())} messages, not {messages}")
    fill_s = time.perf_counter() - started
    return Backlog(path, messages, last_seq, totals, fill_s, path.stat().st_size)


def backlog_messages(backlog: Backlog) -> list[tuple[str, bytes, bool]]:
    """The backlog as the daemon will publish it: topic, bytes and retain flag of every row, in
    the order its publisher takes them (the store's interleaving of the priority classes),
    made by the publisher's own code. Read from a copy: opening a store writes to it."""
    copy = backlog.path.with_name("floor-copy.db")
    shutil.copy(backlog.path, copy)
    store = Store(copy, station_id=STATION, messages=ContractMessages())
    try:
        publisher = OutboxPublisher(
            session=None,  # type: ignore[arg-type]  # only its topic and payload makers are used
            topics=contract.Topics(PREFIX, STATION),
            station=STATION,
            fetch=None,  # type: ignore[arg-type]
            delete=None,  # type: ignore[arg-type]
            epoch=store.epoch,
        )
        out: list[tuple[str, bytes, bool]] = []
        cursors: dict[int, int] = {}
        while rows := store.outbox_after(cursors, 500):
            for row in rows:
                out.append((publisher.topic_for(row), publisher.payload_for(row), bool(row.retain)))
                cursors[row.priority] = max(cursors.get(row.priority, 0), row.seq)
    finally:
        store.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)
    return out


# ======================================================================================
# The floor: a raw windowed publisher, run as a child process (`--floor-publisher`)
# ======================================================================================
class _FloorClient(aiomqtt.Client):
    """aiomqtt, keeping the broker's Receive Maximum from the CONNACK (the daemon's session
    cuts its window to it; so does the floor)."""

    receive_maximum: int | None = None

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None
    ) -> None:
        value = getattr(props, "ReceiveMaximum", None)
        self.receive_maximum = value if isinstance(value, int) and value > 0 else None
        super()._on_connect(client, userdata, flags, rc, props)


async def floor_publish(args: argparse.Namespace) -> dict[str, Any]:
    messages: list[tuple[str, bytes, bool]] = pickle.loads(args.floor_publisher.read_bytes())
    client = _FloorClient(
        HOST,
        args.port,
        identifier=f"bench-floor-{os.getpid()}",
        username=args.user,
        password=args.password,
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=_NODELAY,
        max_inflight_messages=args.window,
        timeout=30.0,
        logger=_QUIET,
    )
    async with client:
        window = min(args.window, client.receive_maximum or args.window)
        await client.subscribe(args.go, qos=1)
        async for _message in client.messages:  # the retained "go": the subscriber is ready
            break
        slots = asyncio.Semaphore(window)

        async def one(topic: str, payload: bytes, retain: bool) -> None:
            try:
                await client.publish(topic, payload, qos=1, retain=retain, timeout=60.0)
            finally:
                slots.release()

        cpu, started = time.process_time(), time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for topic, payload, retain in messages:
                await slots.acquire()
                group.create_task(one(topic, payload, retain))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
    return {
        "published": len(messages),
        "window": window,
        "receive_maximum": client.receive_maximum,
        "seconds": elapsed,
        "cpu_s": cpu,
    }


# ======================================================================================
# The broker, the station, the pumps
# ======================================================================================
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


class Broker:
    """A private Mosquitto that logs users in from a password file, so the station can be
    kept out (the outage) and let in (SIGHUP reloads the file) at a moment of our choosing."""

    def __init__(self, workdir: Path) -> None:
        for tool in (MOSQUITTO, MOSQUITTO_PASSWD):
            if not os.access(tool, os.X_OK):
                raise SetupError(f"{tool} is not installed (apt-get install mosquitto)")
        self.port = free_port()
        self.passwords = workdir / "mosquitto.passwd"
        self.bench_password = secrets.token_hex(8)
        self.station_password = secrets.token_hex(8)
        self._passwd("-c", "bench", self.bench_password)
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            "\n".join(
                [
                    "# Generated by bench/outbox_replay.py",
                    # Running as root, Mosquitto would drop to user "mosquitto".
                    f"user {getpass.getuser()}",
                    "set_tcp_nodelay true",
                    "persistence false",
                    # The subscriber's queue is never cut (the default drops past 1,000): a
                    # slow moment of this process must show as time, not as lost messages.
                    "max_queued_messages 0",
                    "allow_anonymous false",
                    f"password_file {self.passwords}",
                    "log_dest stderr",
                    "log_type error",
                    "log_type warning",
                    f"listener {self.port} {HOST}",
                    "",
                ]
            )
        )
        self.child = Child("mosquitto", [MOSQUITTO, "-c", str(conf)], workdir / "mosquitto.log")
        deadline = time.monotonic() + 10.0
        while True:
            if not self.child.alive():
                raise SetupError(f"mosquitto exited at start\n{self.child.tail()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.child.stop(5.0)
                    raise SetupError(f"mosquitto did not listen on {HOST}:{self.port}") from None
                time.sleep(0.02)

    def _passwd(self, *argv: str) -> None:
        done = subprocess.run(
            [MOSQUITTO_PASSWD, *argv[:-2], "-b", str(self.passwords), *argv[-2:]],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode != 0:
            raise SetupError(f"mosquitto_passwd failed: {done.stderr.strip() or done.stdout}")
        self.passwords.chmod(0o600)

    def let_station_in(self) -> None:
        """The outage ends: the station's user exists from the broker's next reload."""
        self._passwd("station", self.station_password)
        self.child.proc.send_signal(signal.SIGHUP)


def station_toml(
    workdir: Path, port: int, password: str, public_key: str, delivery: str, max_rows: int
) -> str:
    """Two lines of eight two-nozzle pumps released by the station itself (auto), the cloud
    on our broker, reconnecting quickly so the end of the outage is seen at once."""
    parts = [
        f"""\
# Generated by bench/outbox_replay.py
[station]
id = "{STATION}"
currency = "{CURRENCY}"

[store]
path = "{workdir / "edgectl.db"}"

[authorization]
mode = "auto"
auto_preset_amount = "200.00"
authorize_timeout_s = 60

[logging]
# Warning, so the figures are the station's work and not the cost of writing log lines.
level = "warning"
format = "json"

[control]
socket = "{workdir / "control.sock"}"

[cloud]
host = "{HOST}"
port = {port}
tls = false
topic_prefix = "{PREFIX}"
username = "station"
password = "{password}"
reconnect_min_s = 0.05
reconnect_max_s = 0.25
delivery = "{delivery}"
# Over the quota the store thins telemetry (pump states) as each row is queued: not what
# this measures, so the quota is kept above the backlog.
outbox_max_rows = {max_rows}
command_keys = [{{ id = "bench-key", public_key = "{public_key}" }}]

"""
    ]
    parts.append(GRADES_TOML)
    parts.append(forecourt_toml(workdir, LINES, PUMPS_PER_LINE, ""))
    return "".join(parts)


def pump_number(line: int, address: int) -> int:
    """The station's pump number of a simulated pump, as `forecourt_toml` numbers them."""
    return line * PUMPS_PER_LINE + (address - 0x50) + 1


def build_lines(totals: dict[tuple[int, int], tuple[int, int]]) -> list[DartLineSimulator]:
    """The pumps, each with the electronic totals its backlog sales left (so the station sees
    no unrecorded dispensing when they come online), at 9600 baud 8O1 with a 5 ms think time."""
    lines = []
    for n in range(LINES):
        pumps = []
        for p in range(PUMPS_PER_LINE):
            number = pump_number(n, 0x50 + p)
            start = {z: totals[(number, z)] for z in NOZZLES if (number, z) in totals}
            pumps.append(SimPump(0x50 + p, NOZZLES, flow_rate_lps=FLOW_LPS, totals=start))
        lines.append(
            DartLineSimulator(
                pumps, baud=BAUD, parity="odd", reply_delay_s=REPLY_DELAY_S, name=f"line{n}"
            )
        )
    return lines


# ======================================================================================
# The subscriber: every message of the station's streams, checked and timed
# ======================================================================================
@dataclass
class LiveArrival:
    at: float  # Unix time of its arrival
    body: dict[str, Any]
    backlog_left: int  # backlog messages still to come when it arrived: those it overtook


@dataclass
class Streams:
    """What one publisher delivered, stream by stream."""

    backlog: Backlog
    arrived: int = 0  # backlog messages
    first_at: float | None = None
    last_at: float | None = None
    duplicates: int = 0
    out_of_order: int = 0
    other: int = 0  # messages that are not in the sequences (none expected)
    last_seq: dict[str, int] = field(default_factory=dict)
    seen: dict[str, set[int]] = field(default_factory=dict)
    backlog_sales_done_at: float | None = None
    live_sales: list[LiveArrival] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.arrived == self.backlog.messages

    def offer(self, at: float, body: dict[str, Any]) -> None:
        kind = str(body.get("schema", "")).rsplit("/", 1)[-1]
        seq = body.get("seq")
        if kind not in contract.GUARANTEED_STREAMS or not isinstance(seq, int) or seq < 1:
            self.other += 1
            return
        seen = self.seen.setdefault(kind, set())
        if seq in seen:
            self.duplicates += 1
            return
        seen.add(seq)
        if seq != self.last_seq.get(kind, 0) + 1:
            self.out_of_order += 1
        self.last_seq[kind] = max(seq, self.last_seq.get(kind, 0))
        if seq > self.backlog.last_seq.get(kind, 0):
            if kind == "sale":
                left = self.backlog.messages - self.arrived
                self.live_sales.append(LiveArrival(at, body, left))
            else:
                self.other += 1
            return
        self.arrived += 1
        if self.first_at is None:
            self.first_at = at
        self.last_at = at
        if kind == "sale" and len(seen) == self.backlog.last_seq.get("sale", 0):
            self.backlog_sales_done_at = at

    def missing(self) -> int:
        return sum(
            last - len(self.seen.get(kind, set()) & set(range(1, last + 1)))
            for kind, last in self.backlog.last_seq.items()
        )

    def rate(self) -> float | None:
        if self.first_at is None or self.last_at is None or self.arrived < 2:
            return None
        return (self.arrived - 1) / max(1e-9, self.last_at - self.first_at)


class Subscriber:
    """`mosquitto_sub` at QoS 1 on the station's event and result topics, writing every
    message after the time it arrived (`%U`, taken as it was read off the socket). It is C,
    so what is measured is the publishers and not a Python subscriber (which costs more CPU
    per message than the raw publisher and shares the same two cores). Its output is read
    here as it grows and handed to the current `Streams`."""

    def __init__(self, workdir: Path, port: int, password: str) -> None:
        if not os.access(MOSQUITTO_SUB, os.X_OK):
            raise SetupError(
                f"{MOSQUITTO_SUB} is not installed (apt-get install mosquitto-clients)"
            )
        topics = contract.Topics(PREFIX, STATION)
        self.hello_topic = f"bench/{STATION}/hello"
        self.out = workdir / "subscriber.out"
        argv = [
            MOSQUITTO_SUB, "-h", HOST, "-p", str(port), "-V", "mqttv5", "-q", "1",
            "-u", "bench", "-P", password, "-i", f"bench-cloud-{os.getpid()}",
            "-t", f"{topics.base}/evt/+", "-t", topics.result, "-t", self.hello_topic,
            "-F", "%U %t %p",
        ]  # fmt: skip
        self.child = Child("subscriber", argv, self.out)
        self.streams: Streams | None = None
        self.hello = False
        self._file: IO[bytes] | None = None
        self._partial = b""

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def read(self) -> None:
        """Hand on every whole line written since the last call."""
        if self._file is None:
            self._file = self.out.open("rb")
        chunk = self._file.read()
        if not chunk:
            return
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            parts = line.split(b" ", 2)
            try:
                at = float(parts[0])
            except ValueError:
                continue  # a line of mosquitto_sub's own (stderr goes to the same file)
            if len(parts) < 3:
                continue
            if parts[1] == self.hello_topic.encode():
                self.hello = True
                continue
            if self.streams is None:
                continue
            try:
                body = json.loads(parts[2])
            except ValueError:
                self.streams.other += 1
                continue
            self.streams.offer(at, body)

    async def until(self, done: Callable[[], bool], timeout: float, alive: list[Child],
                    what: str) -> None:  # fmt: skip
        """Read on until `done()`; fail early when a process died."""
        deadline = time.monotonic() + timeout
        while True:
            self.read()
            if done():
                return
            for child in (*alive, self.child):
                if not child.alive():
                    raise SetupError(
                        f"{child.name} exited while waiting for {what}\n{child.tail()}"
                    )
            if time.monotonic() > deadline:
                raise SetupError(f"timed out after {timeout:.0f} s waiting for {what}")
            await asyncio.sleep(0.02)


class Control:
    """An MQTT client of ours for the two signals: hello (is the subscriber there?) and go
    (the floor publisher may start), both retained so nobody needs to be first."""

    def __init__(self, port: int, password: str) -> None:
        self.client = aiomqtt.Client(
            HOST,
            port,
            identifier=f"bench-control-{os.getpid()}",
            username="bench",
            password=password,
            protocol=aiomqtt.ProtocolVersion.V5,
            timeout=10.0,
        )

    async def __aenter__(self) -> Control:
        try:
            await self.client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise SetupError(f"cannot connect to the broker: {exc}") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            await self.client.__aexit__(None, None, None)

    async def signal(self, topic: str) -> None:
        await self.client.publish(topic, b"1", qos=1, retain=True)


# ======================================================================================
# Customers: live sales during the replay
# ======================================================================================
class Customers:
    """One customer after another at each pump, arriving at random (`rate` sales/s over the
    site): lift, get released by the station, fill 2-10 CNY, hang up. Each hang-up of a paid
    fill is kept per pump, to time its sale's arrival."""

    def __init__(self, lines: list[DartLineSimulator], rate: float, seed: int) -> None:
        self.pumps = {
            pump_number(n, p.address): p for n, line in enumerate(lines) for p in line.pumps
        }
        self.rate = rate
        self.rng = random.Random(seed)
        self.hung_up: dict[int, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self.fills = 0  # paid fills: a sale each
        self.unpaid = 0  # visits the station never released (not sales)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for number in sorted(self.pumps):
            self._tasks.append(asyncio.create_task(self._serve(number), name=f"pump-{number}"))

    async def stop(self, grace_s: float) -> None:
        """No new customer; those at a pump finish (up to `grace_s`)."""
        self._stop.set()
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(self._tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, number: int) -> None:
        pump = self.pumps[number]
        mean_gap_s = PUMPS / self.rate
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.rng.expovariate(1.0 / mean_gap_s)):
                    await self._stop.wait()
            if self._stop.is_set():
                return
            # The station resets a pump after its sale: the next customer waits for that.
            while pump.status is not DartStatus.RESET or pump.nozzle_out is not None:
                if self._stop.is_set():
                    return
                await asyncio.sleep(0.02)
            nozzle = self.rng.choice(sorted(NOZZLES))
            money = Decimal(self.rng.randrange(200, 1000)).scaleb(-2)
            visit = await Customer(pump, normal_fill(nozzle, money, wait_s=10.0, react_s=0.1)).run()
            if visit.authorized and visit.amount > 0:
                self.hung_up[number].append(time.time())
                self.fills += 1
            else:
                self.unpaid += 1


# ======================================================================================
# /proc
# ======================================================================================
def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _memory_kb(pid: int) -> tuple[int, int]:
    """VmRSS and VmHWM of `pid`, in kB."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for row in f:
            if row.startswith("VmRSS:"):
                rss = int(row.split()[1])
            elif row.startswith("VmHWM:"):
                hwm = int(row.split()[1])
    return rss, hwm


@dataclass
class Cpu:
    """CPU over a phase, in % of one core."""

    seconds: float
    publisher_pct: float  # the floor child, or the daemon
    broker_pct: float
    bench_pct: float
    other_pct: float


class CpuMeter:
    def __init__(self, publisher: int, broker: int) -> None:
        self._pids = (publisher, broker)
        self._start = self._read()

    def _read(self) -> tuple[float, ...]:
        return (
            time.monotonic(),
            _cpu_s(self._pids[0]),
            _cpu_s(self._pids[1]),
            time.process_time(),
            host_busy_s(),
        )

    def done(self) -> Cpu:
        end = self._read()
        wall = max(1e-9, end[0] - self._start[0])
        pub, broker, bench, host = ((end[i] - self._start[i]) / wall * 100 for i in range(1, 5))
        return Cpu(wall, pub, broker, bench, max(0.0, host - pub - broker - bench))


# ======================================================================================
# One repeat
# ======================================================================================
@dataclass
class Spread:
    n: int
    p50_s: float
    p99_s: float
    max_s: float
    mean_s: float


def spread(values: list[float]) -> Spread | None:
    if not values:
        return None
    if len(values) == 1:
        return Spread(1, values[0], values[0], values[0], values[0])
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    median, mean = statistics.median(values), statistics.fmean(values)
    return Spread(len(values), median, cuts[98], max(values), mean)


@dataclass
class Delivered:
    """One publisher's delivery of the backlog, as the subscriber saw it."""

    arrived: int
    missing: int
    duplicates: int
    out_of_order: int
    other: int
    seconds: float  # first backlog message to the last
    rate: float | None  # messages/s over that time


@dataclass
class Repeat:
    floor: Delivered
    floor_publisher: dict[str, Any]  # the child's own figures: window, publish time, CPU
    floor_cpu: Cpu
    daemon: Delivered
    daemon_cpu: Cpu
    ratio: float | None
    connect_to_first_s: float | None  # broker lets the station in -> first backlog message
    backlog_sales_s: float | None  # first backlog message -> the backlog's last sale
    live_sales_made: int
    live_sales_arrived: int
    live_sales_recorded: int  # in the station's store at the end
    # Recorded -> cloud, for a live sale recorded while the backlog's own sales were still
    # going out (it comes after them: one stream, in seq order), and for one recorded after
    # them (it overtakes the rest of the backlog, alarms: sales go first).
    live_behind_backlog_sales: Spread | None
    live_overtaking: Spread | None
    live_overtaking_hang_up: Spread | None  # hang-up -> cloud, the same sales
    live_overtook_median: float | None  # backlog messages still waiting when one arrived
    live_after_replay: int  # live sales that arrived after the whole backlog
    # Each live sale: seconds since the first backlog message, recorded -> cloud, hang-up ->
    # cloud (None when unmatched), backlog messages it overtook (--json only).
    live_samples: list[tuple[float, float, float | None, int]]
    rss_peak_sampled_mb: float  # VmRSS, the highest sample during the replay
    rss_hwm_mb: float  # VmHWM at the end of the replay: the peak over the daemon's life
    outbox_left: int  # backlog rows still waiting in the store at the end (0 expected)
    ok: bool  # every count and order right
    problems: list[str]
    daemon_log_events: dict[str, int] = field(default_factory=dict)


def delivered(streams: Streams) -> Delivered:
    seconds = (
        0.0
        if streams.first_at is None or streams.last_at is None
        else streams.last_at - streams.first_at
    )
    return Delivered(
        arrived=streams.arrived,
        missing=streams.missing(),
        duplicates=streams.duplicates,
        out_of_order=streams.out_of_order,
        other=streams.other,
        seconds=seconds,
        rate=streams.rate(),
    )


async def _pumps_online(db: Path, since: str, daemon: Child) -> None:
    """Every pump answered the daemon and had its totals read (nozzle_totals updated)."""
    import sqlite3

    deadline = time.monotonic() + SETUP_TIMEOUT_S
    while True:
        if not daemon.alive():
            raise SetupError(f"the daemon exited at start\n{daemon.tail()}")
        with contextlib.suppress(sqlite3.Error):
            uri = f"file:{db}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as con:
                row = con.execute(
                    "SELECT COUNT(DISTINCT pump) FROM nozzle_totals WHERE updated_at >= ?",
                    (since,),
                ).fetchone()
            if row and int(row[0]) >= PUMPS:
                return
        if time.monotonic() > deadline:
            raise SetupError(f"the pumps did not all come online in {SETUP_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.1)


async def measure(
    backlog: Backlog,
    broker: Broker,
    sub: Subscriber,
    floor: Child,
    daemon: Child,
    lines: list[DartLineSimulator],
    db: Path,
    started_wall: str,
    *,
    sale_rate: float,
    seed: int,
    timeout_s: float,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)  # see bench/order_latency.py
    alive = [broker.child, daemon]
    try:
        await _pumps_online(db, started_wall, daemon)
        async with Control(broker.port, broker.bench_password) as control:
            await control.signal(sub.hello_topic)
            await sub.until(lambda: sub.hello, SETUP_TIMEOUT_S, alive, "the subscriber")

            # 1. the floor
            floor_streams = sub.streams = Streams(backlog)
            meter = CpuMeter(floor.pid, broker.child.pid)
            await control.signal(f"bench/{STATION}/go")
            await sub.until(lambda: floor_streams.done, timeout_s, alive, "the floor's messages")
            floor_cpu = meter.done()
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(floor.proc.wait, 10.0)

        # 2. the daemon: the outage ends
        streams = sub.streams = Streams(backlog)
        customers = Customers(lines, sale_rate, seed)
        rss_samples: list[int] = []
        sampling = True

        async def sample_rss() -> None:
            while sampling:
                with contextlib.suppress(OSError):
                    rss_samples.append(_memory_kb(daemon.pid)[0])
                await asyncio.sleep(RSS_EVERY_S)

        sampler = asyncio.create_task(sample_rss(), name="rss")
        meter = CpuMeter(daemon.pid, broker.child.pid)
        let_in = time.time()
        broker.let_station_in()
        await sub.until(
            lambda: streams.first_at is not None, SETUP_TIMEOUT_S, alive, "the first message"
        )
        customers.start()
        await sub.until(lambda: streams.done, timeout_s, alive, "the backlog")
        daemon_cpu = meter.done()
        sampling = False
        await sampler
        hwm = _memory_kb(daemon.pid)[1]
        await customers.stop(grace_s=15.0)
        with contextlib.suppress(SetupError):  # a live sale that never came is reported
            await sub.until(
                lambda: len(streams.live_sales) >= customers.fills, LIVE_TAIL_S, alive, "sales"
            )
        return {
            "floor": floor_streams,
            "floor_cpu": floor_cpu,
            "daemon": streams,
            "daemon_cpu": daemon_cpu,
            "let_in": let_in,
            "customers": customers,
            "rss_samples": rss_samples,
            "hwm_kb": hwm,
        }
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def _store_after(db: Path, backlog: Backlog, delivery: str) -> tuple[int, int]:
    """Backlog rows still waiting in the store (with "backend": not yet marked sent), and the
    live sales the station recorded."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
        left = 0
        for stream, last in backlog.last_seq.items():
            sql = "SELECT COUNT(*) FROM outbox WHERE stream = ? AND stream_seq <= ?"
            if delivery == "backend":
                sql += " AND sent_at IS NULL"
            left += int(con.execute(sql, (stream, last)).fetchone()[0])
        sales = int(con.execute("SELECT COUNT(*) FROM sales").fetchone()[0])
    return left, sales - backlog.last_seq.get("sale", 0)


def run_repeat(
    backlog: Backlog,
    payloads: Path,
    *,
    workroot: Path,
    delivery: str,
    sale_rate: float,
    seed: int,
    keep_logs: Path | None,
) -> Repeat:
    timeout_s = 60.0 + backlog.messages / 200
    with tempfile.TemporaryDirectory(dir=workroot, prefix="edgectl-replay-") as tmp:
        workdir = Path(tmp)
        links = [PtyLink(workdir / f"line{n}") for n in range(LINES)]
        lines: list[DartLineSimulator] = []
        children: list[Child] = []
        db = workdir / "edgectl.db"
        config = workdir / "station.toml"
        sub: Subscriber | None = None
        try:
            for link in links:
                link.open()
            broker = Broker(workdir)
            children.append(broker.child)
            sub = Subscriber(workdir, broker.port, broker.bench_password)
            children.append(sub.child)
            floor = Child(
                "floor",
                [
                    sys.executable, __file__, "--floor-publisher", str(payloads),
                    "--port", str(broker.port), "--user", "bench",
                    "--password", broker.bench_password, "--window", str(WINDOW),
                    "--go", f"bench/{STATION}/go",
                ],
                workdir / "floor.log",
            )  # fmt: skip
            children.append(floor)
            shutil.copy(backlog.path, db)
            key = Ed25519PrivateKey.generate()
            config.write_text(
                station_toml(
                    workdir,
                    broker.port,
                    broker.station_password,
                    encode_public_key(key.public_key()),
                    delivery,
                    max(CloudConfig(host="", client_id="").outbox_max_rows, 2 * backlog.messages),
                )
            )
            started_wall = contract.timestamp(datetime.now(UTC))
            daemon = Child(
                "daemon",
                [sys.executable, "-m", "edgectl", "run", "--config", str(config)],
                workdir / "daemon.log",
            )
            children.append(daemon)
            # Threads only from here on: every child was forked from a single thread.
            lines = build_lines(backlog.totals)
            for line, link in zip(lines, links, strict=True):
                line.serve_fd(link.master_fd)
            try:
                got = asyncio.run(
                    measure(
                        backlog,
                        broker,
                        sub,
                        floor,
                        daemon,
                        lines,
                        db,
                        started_wall,
                        sale_rate=sale_rate,
                        seed=seed,
                        timeout_s=timeout_s,
                    )
                )
            except asyncio.CancelledError:
                raise KeyboardInterrupt from None
        finally:
            # The daemon first, so it never sees its lines or its broker vanish.
            for child in reversed(children):
                child.stop(STOP_GRACE_S)
            if sub is not None:
                sub.close()
            for line in lines:
                line.stop()
            for link in links:
                link.close()
            if keep_logs is not None:
                keep_logs.mkdir(parents=True, exist_ok=True)
                for path in (config, workdir / "mosquitto.conf", *(c.log for c in children)):
                    with contextlib.suppress(OSError):
                        shutil.copy(path, keep_logs / path.name)
        outbox_left, recorded = _store_after(db, backlog, delivery)
        log_events = read_log_events(workdir / "daemon.log")
        floor_figures: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError, IndexError):
            floor_figures = json.loads((workdir / "floor.log").read_text().splitlines()[-1])
    return repeat_result(got, floor_figures, outbox_left, recorded, log_events)


def repeat_result(
    got: dict[str, Any],
    floor_figures: dict[str, Any],
    outbox_left: int,
    recorded: int,
    log_events: dict[str, int],
) -> Repeat:
    floor_streams: Streams = got["floor"]
    streams: Streams = got["daemon"]
    customers: Customers = got["customers"]
    floor, daemon = delivered(floor_streams), delivered(streams)
    behind, overtaking, overtaking_hang_up, overtook = [], [], [], []
    after = 0
    samples: list[tuple[float, float, float | None, int]] = []
    for live in streams.live_sales:
        pump = int(live.body["data"]["pump"])
        hung = customers.hung_up.get(pump)
        hang_up_at = hung.popleft() if hung else None
        recorded_at = contract.parse_timestamp(live.body["ts"], "ts").timestamp()
        latency = live.at - recorded_at
        hang_up_s = None if hang_up_at is None else live.at - hang_up_at
        since = live.at - (streams.first_at or live.at)
        samples.append((round(since, 3), round(latency, 4), hang_up_s, live.backlog_left))
        sales_done = streams.backlog_sales_done_at
        if live.backlog_left == 0:
            after += 1
        elif sales_done is not None and recorded_at >= sales_done:
            # Recorded once the backlog's own sales were out: nothing of its stream ahead.
            overtaking.append(latency)
            overtook.append(live.backlog_left)
            if hang_up_s is not None:
                overtaking_hang_up.append(hang_up_s)
        else:
            behind.append(latency)
    problems = []
    for name, d in (("floor", floor), ("daemon", daemon)):
        if d.missing or d.duplicates or d.out_of_order:
            problems.append(
                f"{name}: {d.missing} missing, {d.duplicates} duplicates, "
                f"{d.out_of_order} out of order"
            )
    if len(streams.live_sales) != customers.fills:
        problems.append(f"{customers.fills} live sales made, {len(streams.live_sales)} arrived")
    if recorded != len(streams.live_sales):
        problems.append(f"{recorded} live sales recorded, {len(streams.live_sales)} arrived")
    if outbox_left:
        problems.append(f"{outbox_left} backlog rows still waiting in the store")
    if floor_figures.get("published") != floor_streams.backlog.messages:
        problems.append("the floor publisher did not report its figures")
    rss = got["rss_samples"]
    return Repeat(
        floor=floor,
        floor_publisher=floor_figures,
        floor_cpu=got["floor_cpu"],
        daemon=daemon,
        daemon_cpu=got["daemon_cpu"],
        ratio=daemon.rate / floor.rate if daemon.rate and floor.rate else None,
        connect_to_first_s=None if streams.first_at is None else streams.first_at - got["let_in"],
        backlog_sales_s=(
            None
            if streams.backlog_sales_done_at is None or streams.first_at is None
            else streams.backlog_sales_done_at - streams.first_at
        ),
        live_sales_made=customers.fills,
        live_sales_arrived=len(streams.live_sales),
        live_sales_recorded=recorded,
        live_behind_backlog_sales=spread(behind),
        live_overtaking=spread(overtaking),
        live_overtaking_hang_up=spread(overtaking_hang_up),
        live_overtook_median=statistics.median(overtook) if overtook else None,
        live_after_replay=after,
        live_samples=samples,
        rss_peak_sampled_mb=max(rss, default=0) / 1024,
        rss_hwm_mb=got["hwm_kb"] / 1024,
        outbox_left=outbox_left,
        ok=not problems,
        problems=problems,
        daemon_log_events=log_events,
    )


# ======================================================================================
# Reporting
# ======================================================================================
def _ms(s: Spread | None) -> str:
    if s is None:
        return "-"
    cells = f"p50 {s.p50_s * 1000:.1f} ms, p99 {s.p99_s * 1000:.1f} ms"
    return f"{cells}, max {s.max_s * 1000:.1f} ms (n={s.n})"


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else "met" if met else "MISSED"


def cpu_us_per_message(cpu: Cpu, messages: int) -> float | None:
    """A publisher's CPU over its phase per backlog message, in µs (the daemon's includes
    polling its pumps meanwhile): less at the mercy of the rest of the machine than a rate,
    as long as it does not starve the publisher of a core."""
    return cpu.publisher_pct / 100 * cpu.seconds / messages * 1e6 if messages else None


def cpu_figures(r: Repeat) -> tuple[float | None, float | None, float | None]:
    """µs of CPU per message of the floor and of the daemon, and the floor's over the
    daemon's (above 1: the daemon spends less than aiomqtt)."""
    floor = cpu_us_per_message(r.floor_cpu, r.floor.arrived)
    daemon = cpu_us_per_message(r.daemon_cpu, r.daemon.arrived)
    return floor, daemon, (floor / daemon if floor and daemon else None)


def summary(repeats: list[Repeat]) -> dict[str, Any]:
    def median(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return statistics.median(kept) if kept else None

    ratio = median([r.ratio for r in repeats])
    cpu = [cpu_figures(r) for r in repeats]
    rss = max(max(r.rss_hwm_mb, r.rss_peak_sampled_mb) for r in repeats)
    return {
        "floor_rate": median([r.floor.rate for r in repeats]),
        "daemon_rate": median([r.daemon.rate for r in repeats]),
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "ratio_target_met": None if ratio is None else ratio >= TARGET_RATIO,
        "rss_peak_mb": rss,
        "target_rss_mb": TARGET_RSS_MB,
        "rss_target_met": rss <= TARGET_RSS_MB,
        "live_overtaking_p50_s": median(
            [r.live_overtaking.p50_s if r.live_overtaking else None for r in repeats]
        ),
        "live_overtaking_p99_s": median(
            [r.live_overtaking.p99_s if r.live_overtaking else None for r in repeats]
        ),
        "floor_cpu_us_per_message": median([c[0] for c in cpu]),
        "daemon_cpu_us_per_message": median([c[1] for c in cpu]),
        "cpu_ratio": median([c[2] for c in cpu]),
        "ok": all(r.ok for r in repeats),
    }


def table(backlog: Backlog, repeats: list[Repeat], delivery: str) -> Iterator[str]:
    mix = ", ".join(f"{n} {kind}" for kind, n in sorted(backlog.last_seq.items()))
    yield (
        f"edgectl outbox replay: a backlog of {backlog.messages} guaranteed messages ({mix}), "
        f"delivery = {delivery!r}, {PUMPS} pumps at {BAUD} baud, auto release"
    )
    yield (
        f"  store filled in {backlog.fill_s:.1f} s, {backlog.bytes / 1e6:.1f} MB; broker: "
        f"mosquitto on {HOST}, TCP_NODELAY; in flight: {WINDOW} cut to the broker's Receive "
        "Maximum"
    )
    s = summary(repeats)
    for n, r in enumerate(repeats, 1):
        yield f"  repeat {n}{'' if r.ok else '  PROBLEMS: ' + '; '.join(r.problems)}"
        fp = r.floor_publisher
        yield (
            f"    floor (raw aiomqtt, window {fp.get('window', '?')})  "
            f"{r.floor.rate or 0:9.0f} msgs/s at the subscriber "
            f"({r.floor.seconds:.2f} s); publisher side "
            f"{fp.get('published', 0) / max(1e-9, fp.get('seconds', 0)):.0f} msgs/s, "
            f"CPU: publisher {r.floor_cpu.publisher_pct:.0f} %, broker "
            f"{r.floor_cpu.broker_pct:.0f} %, this process {r.floor_cpu.bench_pct:.0f} %, "
            f"rest {r.floor_cpu.other_pct:.0f} %"
        )
        yield (
            f"    daemon                        {r.daemon.rate or 0:9.0f} msgs/s "
            f"({r.daemon.seconds:.2f} s; first message {r.connect_to_first_s or 0:.2f} s after "
            f"the broker let it in), ratio {r.ratio or 0:.3f}; CPU: daemon "
            f"{r.daemon_cpu.publisher_pct:.0f} %, broker {r.daemon_cpu.broker_pct:.0f} %, this "
            f"process {r.daemon_cpu.bench_pct:.0f} %, rest {r.daemon_cpu.other_pct:.0f} %"
        )
        floor_us, daemon_us, cpu_ratio = cpu_figures(r)
        yield (
            f"    CPU per message  floor {floor_us or 0:.0f} us, daemon {daemon_us or 0:.0f} us "
            f"(floor / daemon {cpu_ratio or 0:.3f})"
        )
        yield (
            f"    checks   floor {r.floor.arrived} arrived, {r.floor.missing} missing, "
            f"{r.floor.duplicates} dup, {r.floor.out_of_order} out of order; daemon "
            f"{r.daemon.arrived} arrived, {r.daemon.missing} missing, {r.daemon.duplicates} dup, "
            f"{r.daemon.out_of_order} out of order; {r.outbox_left} left in the store"
        )
        yield (
            f"    live sales  {r.live_sales_made} made, {r.live_sales_arrived} arrived, "
            f"{r.live_sales_recorded} recorded; the backlog's sales took "
            f"{r.backlog_sales_s or 0:.2f} s"
        )
        yield f"      behind the backlog's sales   {_ms(r.live_behind_backlog_sales)}"
        yield (
            f"      overtaking the rest          {_ms(r.live_overtaking)}; "
            f"{r.live_overtook_median or 0:.0f} backlog messages overtaken (median)"
        )
        yield f"        hang-up -> cloud           {_ms(r.live_overtaking_hang_up)}"
        yield f"      after the replay             {r.live_after_replay}"
        yield (
            f"    daemon RSS   peak sample {r.rss_peak_sampled_mb:.1f} MB, VmHWM "
            f"{r.rss_hwm_mb:.1f} MB"
        )
        for key, count in sorted(r.daemon_log_events.items(), key=lambda kv: -kv[1]):
            yield f"    {count:5d}  {key}"
    yield (
        f"  median of {len(repeats)}: floor {s['floor_rate'] or 0:.0f} msgs/s, daemon "
        f"{s['daemon_rate'] or 0:.0f} msgs/s, ratio {s['ratio'] or 0:.3f} "
        f"(target >= {TARGET_RATIO}: {_verdict(s['ratio_target_met'])})"
    )
    yield (
        f"  CPU per message, median: floor {s['floor_cpu_us_per_message'] or 0:.0f} us, daemon "
        f"{s['daemon_cpu_us_per_message'] or 0:.0f} us (floor / daemon {s['cpu_ratio'] or 0:.3f})"
    )
    p50, p99 = s["live_overtaking_p50_s"], s["live_overtaking_p99_s"]
    if p50 is not None and p99 is not None:
        yield (
            f"  live sales overtaking the backlog: recorded -> cloud p50 {p50 * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms (median of the repeats)"
        )
    yield (
        f"  daemon peak RSS {s['rss_peak_mb']:.1f} MB (target <= {TARGET_RSS_MB:.0f} MB: "
        f"{_verdict(s['rss_target_met'])}); counts and orders "
        f"{'right' if s['ok'] else 'WRONG'}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Outbox replay after an outage: the real daemon draining a backlog to a "
        "private Mosquitto, as a ratio to a raw windowed publisher in the same run.",
    )
    parser.add_argument(
        "--messages", type=int, help="guaranteed messages in the backlog (100000; --quick: 5000)"
    )
    parser.add_argument("--repeats", type=int, help="runs, each with a fresh broker, daemon and "
                        "store (3; --quick: 1)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument(
        "--sale-share", type=float, default=0.1, help="share of sales in the backlog (0.1)"
    )
    parser.add_argument(
        "--sale-rate", type=float, default=4.0, help="live sales per second over the site (4)"
    )
    parser.add_argument("--delivery", choices=("broker", "backend"), default="broker",
                        help='[cloud] delivery (default "broker")')  # fmt: skip
    parser.add_argument(
        "--dir", type=Path, default=Path("/var/tmp"),
        help="where the stores live (/var/tmp: a real disk; /tmp may be a tmpfs)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1, help="seed of the backlog and customers")
    parser.add_argument("--logs", type=Path, metavar="DIR", help="keep configs and logs here")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    # The floor publisher's own process (internal).
    parser.add_argument("--floor-publisher", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--user", help=argparse.SUPPRESS)
    parser.add_argument("--password", help=argparse.SUPPRESS)
    parser.add_argument("--window", type=int, default=WINDOW, help=argparse.SUPPRESS)
    parser.add_argument("--go", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.messages is None:
        args.messages = 5000 if args.quick else 100_000
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.messages < 10 or args.repeats < 1:
        parser.error("--messages must be at least 10 and --repeats at least 1")
    if not 0 < args.sale_share < 1 or args.sale_rate <= 0:
        parser.error("--sale-share must be between 0 and 1, --sale-rate positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.floor_publisher is not None:
        print(json.dumps(asyncio.run(floor_publish(args))), flush=True)
        return 0
    if not Path("/proc/self/stat").exists():
        print("outbox_replay: needs Linux /proc", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    configure(level="warning", fmt="console")
    repeats: list[Repeat] = []
    try:
        if not args.dir.is_dir():
            raise SetupError(f"no directory {args.dir}")
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="edgectl-backlog-") as tmp:
            backlog = fill_backlog(
                Path(tmp) / "backlog.db", args.messages, args.sale_share, args.seed
            )
            payloads = Path(tmp) / "floor.pickle"
            with payloads.open("wb") as f:
                pickle.dump(backlog_messages(backlog), f)
            for n in range(args.repeats):
                repeats.append(
                    run_repeat(
                        backlog,
                        payloads,
                        workroot=args.dir,
                        delivery=args.delivery,
                        sale_rate=args.sale_rate,
                        seed=args.seed + n,
                        keep_logs=None if args.logs is None else args.logs / f"repeat{n + 1}",
                    )
                )
    except SetupError as exc:
        print(f"outbox_replay: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("outbox_replay: interrupted", file=sys.stderr)
        return 130
    if args.json:
        report = {
            "benchmark": "outbox_replay",
            "machine": machine(),
            "setup": {
                "messages": backlog.messages,
                "streams": backlog.last_seq,
                "delivery": args.delivery,
                "window": WINDOW,
                "sale_rate": args.sale_rate,
                "seed": args.seed,
                "store_mb": backlog.bytes / 1e6,
                "fill_s": backlog.fill_s,
            },
            "summary": summary(repeats),
            "repeats": [asdict(r) for r in repeats],
        }
        print(json.dumps(report, indent=2))
        return 0
    info = machine()
    print(f"machine: {info['nproc']} x {info['cpu']}, Python {info['python']}")
    print("\n".join(table(backlog, repeats, args.delivery)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
