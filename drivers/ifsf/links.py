"""IFSF over TCP/IP, the I/O of one node: UDP heartbeat, the two one-way TCP links, requests.

`IfsfNode` runs one IFSF node on asyncio over the sans-I/O `NodeCore` (node.py). It is the
same for a controller (CD) and for a dispenser: the difference is only which LNAs it has and
what its `on_request` handler answers.

The wire, as five open implementations agree (ifsf-over-ip.md §1):
- Every `heartbeat_interval_s` the node sends one 10-byte heartbeat per LNA of its own (its
  IP, the TCP port its server listens on, the LNA, the status byte) to each of
  `heartbeat_destinations` (the subnet broadcast, 255.255.255.255, or a peer's unicast
  address), and listens on `heartbeat_port` for the others'. A peer not heard for
  `missed_heartbeats` intervals is lost.
- Every node runs a TCP server on the port it advertises: what a peer says (requests,
  answers, acks, unsolicited messages) arrives on the connection *the peer* opened to it.
- On hearing a peer, the node opens a client connection to the peer's advertised address and
  sends everything it says to that peer on it, and only there. The connection is opened
  again with jittered, capped backoff whenever it drops, for as long as the peer is heard.
  Several LNAs at one address (a board with one node per nozzle) share one connection.
- A peer whose address is configured (`peer_hosts`: its IP, and maybe its TCP port) is
  taken only from a heartbeat that declares that address (or, declaring 0.0.0.0, comes from
  it). Any other heartbeat for its LNA is counted as unexpected, warned about once per
  address and told to the application as PeerMisplaced; it opens no link.
- Each inbound stream is cut into messages by M_Lg (framing.py). A malformed message is
  counted, reported to `on_error` as a FrameError and skipped; a stream that cannot be framed
  (FramingLost) is dropped, and the peer opens it again. Neither stops the node. Bytes a peer
  sends back on a connection we opened are read the same way (tolerance: one-way is the rule,
  but nothing is lost if a peer does not keep it).

Using it as a controller::

    node = IfsfNode(LinkSettings(lnas=(Lna(2, 1),), tcp_port=4368),
                    on_report=handle_unsolicited, on_event=handle_peer_or_link)
    async with node:                    # or run it as a task: tg.create_task(node.run())
        await node.wait_link(Lna(1, 1), timeout=30)
        reply = await node.read(Lna(1, 1), db.FuellingPoint(1), [0x14])   # ReadReply
        state = reply.values()[0x14]
        await node.command(Lna(1, 1), db.FuellingPoint(1), 0x3E,          # Release_FP
                           items={0x19: 0x01, 0x1E: Lna(2, 1)})            # WriteReply

`read`, `write` and `command` return the typed reply, or raise: `Refused` (a CommandRejected:
MS_ACK not 0 or a data ack not 0, with every code), `DeviceTimeout` (no reply in time),
`TransportError` (no link to the peer, the peer lost, the node stopped), `FrameError` (the
reply came unreadable), `TokensExhausted` (31 requests to one peer already waiting).

Using it as a dispenser::

    async def on_request(request: Message) -> Sequence[Message]:
        # A Read: answer(request, items) (for a wildcard read, one answer per instance with
        # database=<the instance>, then ack(request)); a Write: ack(request, status,
        # data_acks). Return them in the order they go, followed by any unsolicited message
        # the change causes (ack first, then the FP status, as dispensers do). Returning []
        # answers nothing; raising answers MS_ACK 2 (application out of order).
        ...

    node = IfsfNode(LinkSettings(lnas=(Lna(1, 1),), tcp_port=0,
                                 heartbeat_destinations=(("127.0.0.1", cd_hb_port),)),
                    on_request=on_request)
    async with node:
        node.set_status(Lna(1, 1), 0x01)   # heartbeat status byte ("configuration needed")
        await node.send(unsolicited(Lna(1, 1), Lna(2, 1), db.FuellingPoint(1), items))

Faults and life cycle: `stop()` then `start()` again keeps the ports bound the first time and
forgets the peers (they are heard again); `drop_links()` closes every TCP connection while the
node runs (both sides open theirs again); `send_raw(lna, bytes)` sends bytes that need not be a
message (garbage). `LinkSettings(connect=False, send_heartbeat=False)` only listens (a scanner).

Requests are handed to `on_request` one at a time, in the order they arrived, by one task
of the node (so a handler may await; the links keep reading meanwhile). `send` queues a
message for a peer whose link is not up yet (at most `backlog` per link, oldest dropped), so a
dispenser can answer a CD it has not heard yet; it goes once the link opens. `answer`, `ack`
and `unsolicited` (re-exported from node.py) build the messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import random
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import structlog

from drivers.base import (
    LINK_ERROR,
    UNREACHABLE,
    DeviceFault,
    DeviceTimeout,
    DriverError,
    FrameError,
    LineCounters,
    TransportError,
)
from drivers.bus import hand_to_taps
from drivers.ifsf import databases as db
from drivers.ifsf.codec import (
    MAX_M_LG,
    MC_APPLICATION,
    DataItem,
    FramingLost,
    Malformed,
    Message,
    MessageType,
    Read,
    Write,
    encode,
    item,
)
from drivers.ifsf.encodings import Lna
from drivers.ifsf.framing import StreamFramer
from drivers.ifsf.heartbeat import Heartbeat, decode_heartbeat, encode_heartbeat
from drivers.ifsf.node import (
    DEFAULT_CD,
    Misaddressed,
    NodeCore,
    NodeEvent,
    Outcome,
    Peer,
    PeerEvent,
    PeerHeard,
    PeerLost,
    PeerMoved,
    ReadReply,
    Refused,
    Report,
    Request,
    RequestKey,
    Resolved,
    Stray,
    TokensExhausted,
    WriteReply,
    ack,
    answer,
    unsolicited,
)

__all__ = [
    "IfsfNode",
    "LinkDown",
    "LinkEvent",
    "LinkSettings",
    "LinkUp",
    "ReadReply",
    "Refused",
    "TokensExhausted",
    "WriteReply",
    "ack",
    "answer",
    "unsolicited",
]

log = structlog.get_logger(__name__)

Endpoint: TypeAlias = tuple[str, int]
FrameTap: TypeAlias = Callable[[str, bytes, "Message | Malformed | Heartbeat | None", float], None]
HEARTBEAT_PORT = 3486  # IANA ifsf-hb-port; the PetroChina profile uses 3485
STOP_DEADLINE_S = 2.0


@dataclass(frozen=True, slots=True)
class PeerHost:
    """Where the peer `lna` is known to be (the station's config): a heartbeat for it that
    declares another IP, or when `port` is given another TCP port, is not taken as it."""

    lna: Lna
    ip: str
    port: int | None = None

    def at(self, endpoint: Endpoint) -> bool:
        return endpoint[0] == self.ip and (self.port is None or endpoint[1] == self.port)

    def __str__(self) -> str:
        return self.ip if self.port is None else f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """Where a node listens and whom it tells. Port 0 binds a free port (tests, simulators):
    the heartbeat then advertises the port actually bound."""

    lnas: tuple[Lna, ...] = (DEFAULT_CD,)
    tcp_host: str = "0.0.0.0"
    tcp_port: int = 4368
    advertise_ip: str | None = None  # None: the address towards the first destination
    heartbeat_host: str = "0.0.0.0"
    heartbeat_port: int = HEARTBEAT_PORT
    heartbeat_destinations: tuple[Endpoint, ...] = (("255.255.255.255", HEARTBEAT_PORT),)
    heartbeat_interval_s: float = 10.0
    missed_heartbeats: int = 3
    send_heartbeat: bool = True
    connect: bool = True  # False: only listen (a scanner), open no link to the peers heard
    reply_timeout_s: float = 5.0
    connect_timeout_s: float = 3.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    com_sv_mc: int = MC_APPLICATION  # IFSF_MC of requests to COM_SV (PetroChina FS: 2)
    max_length: int = MAX_M_LG
    check_recipient: bool = True
    backlog: int = 64
    # A message whose header came but whose M_Lg bytes do not follow within this time means
    # the framing is lost (garbage read as a header): the connection is closed and opened
    # again, rather than every message after it being taken for the rest of that one.
    partial_timeout_s: float = 2.0
    # Peers whose address is configured: heard only from there (see PeerHost).
    peer_hosts: tuple[PeerHost, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "lnas", tuple(self.lnas))
        object.__setattr__(
            self, "heartbeat_destinations", tuple(tuple(d) for d in self.heartbeat_destinations)
        )
        object.__setattr__(self, "peer_hosts", tuple(self.peer_hosts))
        if len({p.lna for p in self.peer_hosts}) != len(self.peer_hosts):
            raise ValueError("a peer has one configured host")
        if not self.lnas:
            raise ValueError("a node needs at least one LNA")
        for port in (self.tcp_port, self.heartbeat_port):
            if not 0 <= port <= 0xFFFF:
                raise ValueError(f"port {port} is outside 0-65535")
        if min(self.heartbeat_interval_s, self.reply_timeout_s, self.partial_timeout_s) <= 0:
            raise ValueError(
                "heartbeat_interval_s, reply_timeout_s and partial_timeout_s are positive"
            )
        if self.missed_heartbeats < 1:
            raise ValueError("missed_heartbeats is at least 1")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")
        if self.connect_timeout_s <= 0 or self.backlog < 1:
            raise ValueError("connect_timeout_s is positive and backlog at least 1")


@dataclass(frozen=True, slots=True)
class LinkUp:
    """Our connection to a peer's server opened: we can talk to `lnas` at `endpoint`."""

    endpoint: Endpoint
    lnas: tuple[Lna, ...]


@dataclass(frozen=True, slots=True)
class LinkDown:
    """Our connection to a peer's server dropped or could not open (first failure only)."""

    endpoint: Endpoint
    lnas: tuple[Lna, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class PeerMisplaced:
    """A heartbeat for `expected.lna` came from `heard`, not where it is configured: it was
    not taken as that peer (a second node with the same LNA, or the dispenser moved)."""

    heard: Endpoint
    expected: PeerHost

    @property
    def lna(self) -> Lna:
        return self.expected.lna

    def __str__(self) -> str:
        return (
            f"node {self.lna} heard at {self.heard[0]}:{self.heard[1]}, configured at "
            f"{self.expected}"
        )


LinkEvent: TypeAlias = PeerEvent | LinkUp | LinkDown | PeerMisplaced
RequestHandler: TypeAlias = Callable[[Message], Awaitable[Sequence[Message]]]
ReportHandler: TypeAlias = Callable[[Message], None]
EventHandler: TypeAlias = Callable[[LinkEvent], None]
ErrorHandler: TypeAlias = Callable[[DriverError], None]


async def _absent(request: Message) -> Sequence[Message]:
    """A node with no application answers every request MS_ACK 2."""
    return [ack(request, 2)]


def _ignore(_: Any) -> None:
    return None


def local_ip_towards(host: str) -> str:
    """The address this host sends from towards `host` (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            probe.connect((host, 9))
            return str(probe.getsockname()[0])
    except OSError:
        return "0.0.0.0"


def next_backoff(previous_s: float, initial_s: float, max_s: float) -> float:
    """The pause before the next connection attempt: doubling from `initial_s`, capped."""
    return min(max(previous_s * 2, initial_s), max_s)


def jittered(pause_s: float, draw: float) -> float:
    """`pause_s` scaled into its upper half by `draw` in [0, 1), so that nodes that lost a
    peer together do not all knock again at the same moment."""
    return pause_s * (0.5 + draw / 2)


def keep_alive(writer: asyncio.StreamWriter) -> None:
    """TCP keepalive as the ZSY board sets it (30 s idle, probes every 5 s, 3 of them), so a
    peer that vanished without a FIN is noticed even between heartbeats."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


# ---------------------------------------------------------------------------------------
# Our connection to one peer's server
# ---------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Outbound:
    node: IfsfNode
    endpoint: Endpoint
    lnas: set[Lna] = field(default_factory=set)
    writer: asyncio.StreamWriter | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    backlog: deque[bytes] = field(default_factory=deque)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    backoff_s: float = 0.0
    failing: bool = False
    opened: bool = False
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        host, port = self.endpoint
        self.task = self.node._spawn(self._run(), f"out-{host}:{port}")

    def _pause(self) -> float:
        settings = self.node.settings
        self.backoff_s = next_backoff(
            self.backoff_s, settings.backoff_initial_s, settings.backoff_max_s
        )
        return jittered(self.backoff_s, self.node._rng())

    def _down(self, reason: str) -> None:
        if not self.failing:
            self.failing = True
            log.warning("ifsf_link_down", node=self.node.name, peer=self.endpoint, reason=reason)
            self.node._emit(LinkDown(self.endpoint, tuple(sorted(self.lnas)), reason))

    async def _run(self) -> None:
        settings = self.node.settings
        host, port = self.endpoint
        while True:
            try:
                async with asyncio.timeout(settings.connect_timeout_s):
                    reader, writer = await asyncio.open_connection(host, port)
            except (OSError, TimeoutError) as exc:
                self._down(f"cannot connect to {host}:{port}: {exc or 'timed out'}")
                await asyncio.sleep(self._pause())
                continue
            keep_alive(writer)
            self.writer = writer
            self.backoff_s = 0.0
            if self.failing:
                log.info("ifsf_link_up", node=self.node.name, peer=self.endpoint)
            self.failing = False
            if self.opened:
                self.node.counters.reopens += 1
            self.opened = True
            async with self.lock:
                while self.backlog and not writer.is_closing():
                    writer.write(self.backlog.popleft())
            self.connected.set()
            self.node._emit(LinkUp(self.endpoint, tuple(sorted(self.lnas))))
            self.node._notify()
            source = f"{host}:{port} (our link)"
            reason = await self.node._read_stream(reader, source)
            self._close()
            self._down(reason)
            await asyncio.sleep(self._pause())

    def _close(self) -> None:
        self.connected.clear()
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()
        self.node._notify()

    async def send(self, data: bytes, *, queue: bool) -> None:
        writer = self.writer
        if writer is None or writer.is_closing():
            if not queue:
                raise self.node._unreachable(self.endpoint, "the link is not open")
            self._enqueue(data)
            return
        async with self.lock:
            try:
                writer.write(data)
                await writer.drain()
            except OSError as exc:
                self._close()
                if not queue:
                    raise self.node._unreachable(self.endpoint, f"send failed: {exc}") from exc
                # Queued sends wait for the next connection, as when the link was not open:
                # the bytes written may have been lost with the old one.
                log.info(
                    "ifsf_send_requeued", node=self.node.name, peer=self.endpoint, error=str(exc)
                )
                self._enqueue(data)

    def _enqueue(self, data: bytes) -> None:
        if len(self.backlog) >= self.node.settings.backlog:
            self.backlog.popleft()
            log.warning("ifsf_backlog_full", node=self.node.name, peer=self.endpoint)
        self.backlog.append(data)

    def drop(self) -> None:
        """Close the connection now; the link's task sees it end and opens it again."""
        if self.writer is not None:
            self.writer.close()

    async def flush(self, messages: list[bytes]) -> None:
        for data in messages:
            await self.send(data, queue=True)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait([self.task], timeout=STOP_DEADLINE_S)
        self._close()


class _HeartbeatProtocol(asyncio.DatagramProtocol):
    def __init__(self, node: IfsfNode) -> None:
        self.node = node

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.node._heard(data, str(addr[0]))

    def error_received(self, exc: Exception) -> None:
        log.debug("ifsf_heartbeat_socket_error", node=self.node.name, error=str(exc))


# ---------------------------------------------------------------------------------------
# The node
# ---------------------------------------------------------------------------------------
class IfsfNode:
    """One IFSF node on asyncio (see the module's docstring for both uses)."""

    def __init__(
        self,
        settings: LinkSettings,
        *,
        name: str = "ifsf",
        on_request: RequestHandler = _absent,
        on_report: ReportHandler = _ignore,
        on_event: EventHandler = _ignore,
        on_error: ErrorHandler = _ignore,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.name = name
        self.core = NodeCore(
            settings.lnas,
            reply_timeout_s=settings.reply_timeout_s,
            heartbeat_interval_s=settings.heartbeat_interval_s,
            missed_heartbeats=settings.missed_heartbeats,
            check_recipient=settings.check_recipient,
        )
        self.counters = LineCounters()
        self.tcp_port = settings.tcp_port
        self.heartbeat_port = settings.heartbeat_port
        self.advertise_ip = settings.advertise_ip or "0.0.0.0"
        self._on_request = on_request
        self._on_report = on_report
        self._on_event = on_event
        self._on_error = on_error
        self._clock = clock
        self._rng = rng
        self._status: dict[Lna, int] = dict.fromkeys(settings.lnas, 0)
        self._hosts: dict[Lna, PeerHost] = {p.lna: p for p in settings.peer_hosts}
        self._misplaced: set[tuple[Lna, str, int]] = set()  # each warned about once
        self._links: dict[Endpoint, _Outbound] = {}
        self._early: dict[Lna, deque[bytes]] = {}
        self._waiters: dict[RequestKey, asyncio.Future[Outcome]] = {}
        self._requests: asyncio.Queue[Message] = asyncio.Queue()
        self._inbound: set[asyncio.StreamWriter] = set()
        self._serving: set[asyncio.Task[Any]] = set()  # the tasks reading the peers' links
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._running = False
        # Watchers of the wire (`edgectl sniff`): called with ("tx" | "rx", the bytes, the
        # Message, Malformed or Heartbeat they are, or None for garbage sent, clock()) for
        # every message and heartbeat sent or received. Cheap and never raising.
        self.taps: list[FrameTap] = []

    # ------------------------------------------------------------------ life
    @property
    def lnas(self) -> tuple[Lna, ...]:
        return self.settings.lnas

    @property
    def running(self) -> bool:
        return self._running

    async def start(self) -> None:
        """Bind the TCP server and the heartbeat socket and start the node's tasks;
        TransportError if a port cannot be bound. A node started again after `stop` binds
        the ports it had (port 0 in the settings binds a free one the first time only) and
        has forgotten its peers: it hears them again."""
        if self._running:
            return
        settings = self.settings
        self._requests = asyncio.Queue()
        loop = asyncio.get_running_loop()
        try:
            self._server = await asyncio.start_server(
                self._serve, settings.tcp_host, self.tcp_port, reuse_address=True
            )
        except OSError as exc:
            raise self._bind_error("TCP", self.tcp_port, exc) from exc
        self.tcp_port = int(self._server.sockets[0].getsockname()[1])
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.bind((settings.heartbeat_host, self.heartbeat_port))
            sock.setblocking(False)
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _HeartbeatProtocol(self), sock=sock
            )
        except OSError as exc:
            sock.close()
            self._server.close()
            raise self._bind_error("UDP", self.heartbeat_port, exc) from exc
        self._udp = transport
        self.heartbeat_port = int(sock.getsockname()[1])
        if settings.advertise_ip is None:
            if settings.tcp_host not in ("0.0.0.0", ""):
                self.advertise_ip = settings.tcp_host
            elif settings.heartbeat_destinations:
                self.advertise_ip = local_ip_towards(settings.heartbeat_destinations[0][0])
            if self.advertise_ip == "0.0.0.0":
                log.warning(
                    "ifsf_no_advertise_ip",
                    node=self.name,
                    hint="set advertise_ip: peers may not find our TCP server",
                )
        self._running = True
        self._spawn(self._ticker(), "ticker")
        self._spawn(self._serve_requests(), "requests")
        if settings.send_heartbeat:
            self._spawn(self._send_heartbeats(), "heartbeat")
        log.info(
            "ifsf_node_started",
            node=self.name,
            lnas=[str(lna) for lna in self.lnas],
            tcp=f"{self.advertise_ip}:{self.tcp_port}",
            heartbeat_port=self.heartbeat_port,
        )

    async def stop(self) -> None:
        """Close every link and socket; requests still waiting fail with TransportError."""
        if not self._running:
            return
        self._running = False
        if self._server is not None:
            self._server.close()  # no new inbound connection from here on
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            _, stuck = await asyncio.wait(tasks, timeout=STOP_DEADLINE_S)
            if stuck:
                names = sorted(task.get_name() for task in stuck)
                log.error("ifsf_node_stop_stuck", node=self.name, tasks=names)
            self._tasks.difference_update(tasks)
        for link in list(self._links.values()):
            await link.stop()
        self._links.clear()
        await asyncio.sleep(0)  # connections accepted just before the close get their handler
        for writer in list(self._inbound):
            writer.close()
        # Their readers end at the EOF the close gives: wait for them, so that a loop that
        # ends right after does not cancel them (Python 3.11's server callback then logs a
        # CancelledError traceback for each).
        if self._serving:
            await asyncio.wait(list(self._serving), timeout=STOP_DEADLINE_S)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_DEADLINE_S):
                    await self._server.wait_closed()
        if self._udp is not None:
            self._udp.close()
        stopped = TransportError("the node stopped", device=self.name, code="stopped")
        for key, waiter in list(self._waiters.items()):
            self.core.cancel(key)
            if not waiter.done():
                waiter.set_result(stopped)
        self._waiters.clear()
        for lna in list(self.core.peers):
            self.core.forget(lna)
        self._notify()

    async def run(self) -> None:
        """Start, run until cancelled, stop: for a TaskGroup."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> IfsfNode:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def _spawn(self, work: Awaitable[None], what: str) -> asyncio.Task[None]:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug: logged, and the rest of the node goes on
                log.exception("ifsf_task_failed", node=self.name, task=what)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            # A task cancelled before its first step (a stop right after the start) never
            # awaited `work`: close it, or the interpreter warns that it was never awaited.
            if inspect.iscoroutine(work):
                work.close()

        task = asyncio.create_task(guarded(), name=f"{self.name}-{what}")
        self._tasks.add(task)
        task.add_done_callback(done)
        return task

    # ------------------------------------------------------------------ state
    @property
    def peers(self) -> Mapping[Lna, Peer]:
        return self.core.peers

    def is_up(self, lna: Lna) -> bool:
        """The peer is heard and our link to it is open."""
        link = self._link_of(lna)
        return link is not None and link.connected.is_set()

    def set_status(self, lna: Lna, status: int) -> None:
        """The status byte of `lna`'s heartbeat from now on."""
        if lna not in self._status:
            raise ValueError(f"{lna} is not an LNA of this node")
        if not 0 <= status <= 0xFF:
            raise ValueError(f"status {status} does not fit in a byte")
        self._status[lna] = status

    def heartbeats(self) -> list[Heartbeat]:
        """The records this node sends each interval, one per LNA."""
        ip = ipaddress.IPv4Address(self.advertise_ip)
        return [Heartbeat(ip, self.tcp_port, lna, self._status[lna]) for lna in self.lnas]

    def send_heartbeat_now(self) -> None:
        """Send the heartbeats now (as well as on the interval)."""
        if self._udp is None:
            return
        for heartbeat in self.heartbeats():
            data = encode_heartbeat(heartbeat)
            self._tap("tx", data, heartbeat)
            for destination in self.settings.heartbeat_destinations:
                try:
                    self._udp.sendto(data, destination)
                except OSError as exc:
                    log.debug("ifsf_heartbeat_send_failed", node=self.name, error=str(exc))

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _link_of(self, lna: Lna) -> _Outbound | None:
        peer = self.core.peer(lna)
        return None if peer is None else self._links.get(peer.endpoint)

    async def wait_peer(self, lna: Lna, timeout: float) -> Peer:
        """The peer once its heartbeat is heard; TransportError after `timeout` s."""
        try:
            async with asyncio.timeout(timeout):
                while (peer := self.core.peer(lna)) is None:
                    await self._changed.wait()
        except TimeoutError:
            raise self._unreachable(None, f"{lna} not heard within {timeout:g} s", lna) from None
        return peer

    async def wait_link(self, lna: Lna, timeout: float) -> None:
        """Return once our link to the peer is open; TransportError after `timeout` s."""
        try:
            async with asyncio.timeout(timeout):
                while not self.is_up(lna):
                    await self._changed.wait()
        except TimeoutError:
            reason = "not heard" if self.core.peer(lna) is None else "no link"
            raise self._unreachable(None, f"{lna}: {reason} within {timeout:g} s", lna) from None

    # ------------------------------------------------------------------ requests
    async def read(
        self,
        lna: Lna,
        address: db.Address,
        data_ids: Iterable[int],
        *,
        timeout: float | None = None,
        mc: int | None = None,
        originator: Lna | None = None,
    ) -> ReadReply:
        """Read data ids of one database (or of every instance, for a wildcard address)."""
        outcome = await self._request(lna, address, Read(tuple(data_ids)), timeout, mc, originator)
        assert isinstance(outcome, ReadReply)
        return outcome

    async def write(
        self,
        lna: Lna,
        address: db.Address,
        items: Iterable[DataItem] | Mapping[int, Any],
        *,
        timeout: float | None = None,
        mc: int | None = None,
        originator: Lna | None = None,
    ) -> WriteReply:
        """Write items (DataItems, or typed values by data id, encoded as the database
        says) in one message."""
        outcome = await self._request(
            lna, address, Write(_items(address, items)), timeout, mc, originator
        )
        assert isinstance(outcome, WriteReply)
        return outcome

    async def command(
        self,
        lna: Lna,
        address: db.Address,
        command: int,
        *,
        items: Iterable[DataItem] | Mapping[int, Any] = (),
        timeout: float | None = None,
        mc: int | None = None,
        originator: Lna | None = None,
    ) -> WriteReply:
        """A command (a data id with no data: Open_FP 3Ch, Release_FP 3Eh, Clear 1Eh ...),
        after `items` in the same write (the authorise sequence: presets, Log_Noz_Mask,
        Release_Contr_Id, then Release_FP)."""
        body = (*_items(address, items), item(address, command))
        outcome = await self._request(lna, address, Write(body), timeout, mc, originator)
        assert isinstance(outcome, WriteReply)
        return outcome

    async def _request(
        self,
        lna: Lna,
        address: db.Address,
        body: Read | Write,
        timeout: float | None,
        mc: int | None,
        originator: Lna | None,
    ) -> Outcome:
        if not self._running:
            raise TransportError("the node is not running", device=self.name, code="stopped")
        timeout = self.settings.reply_timeout_s if timeout is None else timeout
        started = self._clock()
        await self.wait_link(lna, timeout)
        link = self._link_of(lna)
        assert link is not None
        if mc is None:
            mc = self.settings.com_sv_mc if isinstance(address, db.ComSv) else MC_APPLICATION
        remaining = max(timeout - (self._clock() - started), 0.001)
        message = self.core.request(
            lna, address, body, self._clock(), mc=mc, originator=originator, timeout_s=remaining
        )
        key = (lna, message.token)
        waiter: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiters[key] = waiter
        self._wake.set()
        try:
            wire = encode(message)
            await link.send(wire, queue=False)
            self.counters.frames_sent += 1
            self._tap("tx", wire, message)
            outcome = await waiter
        finally:
            if not waiter.done():  # the send failed, or our caller gave up
                self.core.cancel(key)
            self._waiters.pop(key, None)
        if isinstance(outcome, DriverError):
            if isinstance(outcome, DeviceTimeout):
                self.counters.timeouts += 1
            raise outcome
        return outcome

    async def drop_links(self) -> None:
        """Close every TCP connection, ours and the peers', and keep running (a fault to
        simulate, or a way to start the links afresh): our links open again with their
        backoff, the peers open theirs as they do."""
        for link in list(self._links.values()):
            link.drop()
        for writer in list(self._inbound):
            writer.close()
        await asyncio.sleep(0)

    async def send_raw(self, lna: Lna, data: bytes) -> None:
        """Bytes that need not be a message (fault injection: garbage), on our link to
        `lna`, queued like `send`; TransportError if the peer is not heard."""
        link = self._link_of(lna)
        if link is None:
            raise self._unreachable(None, "not heard", lna)
        await link.send(bytes(data), queue=True)
        self._tap("tx", bytes(data), None)

    async def send(self, message: Message) -> None:
        """Send an answer, an ack or an unsolicited message to `message.recipient` on our
        link to it; queued until the link opens if it is not open (or the peer not heard)."""
        data = encode(message)
        self._tap("tx", data, message)
        link = self._link_of(message.recipient)
        if link is None:
            early = self._early.setdefault(message.recipient, deque(maxlen=self.settings.backlog))
            early.append(data)
            return
        await link.send(data, queue=True)
        self.counters.frames_sent += 1

    # ------------------------------------------------------------------ receiving
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._running:
            writer.close()
            return
        peername = writer.get_extra_info("peername")
        source = f"{peername[0]}:{peername[1]}" if peername else "?"
        serving = asyncio.current_task()
        if serving is not None:
            self._serving.add(serving)
            serving.add_done_callback(self._serving.discard)
        self._inbound.add(writer)
        keep_alive(writer)
        log.info("ifsf_inbound_open", node=self.name, peer=source)
        try:
            reason = await self._read_stream(reader, f"{source} (inbound)")
        finally:
            self._inbound.discard(writer)
            writer.close()
        log.info("ifsf_inbound_closed", node=self.name, peer=source, reason=reason)

    async def _read_stream(self, reader: asyncio.StreamReader, source: str) -> str:
        """Read messages until the stream ends; the reason it ended."""
        framer = StreamFramer(self.settings.max_length)
        loop = asyncio.get_running_loop()
        partial_since: float | None = None  # when the message held incomplete began
        while True:
            deadline = None
            if partial_since is not None:
                deadline = partial_since + self.settings.partial_timeout_s
            try:
                async with asyncio.timeout_at(deadline):
                    data = await reader.read(65536)
            except TimeoutError:  # (an OSError too: caught first)
                held = framer.pending
                self.counters.malformed += 1
                self.counters.resyncs += 1
                reason = (
                    f"an incomplete message: {held} byte(s) held for "
                    f"{self.settings.partial_timeout_s:g} s, its M_Lg never filled"
                )
                self._error(FramingLost(reason, device=source))
                return f"framing lost: {reason}"
            except OSError as exc:
                return f"read failed: {exc}"
            if not data:
                return "closed by the peer"
            try:
                found = framer.feed(data)
            except FramingLost as exc:
                for each in exc.decoded:
                    self._received(each, source)
                self.counters.malformed += 1
                self.counters.resyncs += 1
                self._error(FramingLost(str(exc), device=source))
                return f"framing lost: {exc}"
            if not framer.pending:
                partial_since = None
            elif found or partial_since is None:  # a new message began in these bytes
                partial_since = loop.time()
            for each in found:
                self._received(each, source)

    def _tap(
        self, direction: str, wire: bytes, found: Message | Malformed | Heartbeat | None
    ) -> None:
        hand_to_taps(self.taps, direction, wire, found, self._clock(), self.name)

    def _received(self, found: Message | Malformed, source: str) -> None:
        now = self._clock()
        if self.taps:
            self._tap("rx", found.raw if isinstance(found, Malformed) else encode(found), found)
        if isinstance(found, Malformed):
            self.counters.malformed += 1
            self.counters.garbage_bytes += len(found.raw)
            self._error(FrameError(found.reason, device=source))
            self._handle_all(self.core.receive_malformed(found.raw, now))
            return
        self.counters.frames_received += 1
        self._handle_all(self.core.receive(found, now))

    def _error(self, error: DriverError) -> None:
        log.warning("ifsf_bad_message", node=self.name, error=str(error))
        self._call(self._on_error, error)

    def _handle_all(self, events: Iterable[NodeEvent]) -> None:
        for event in events:
            self._handle(event)

    def _handle(self, event: NodeEvent) -> None:
        match event:
            case Resolved(key=key, outcome=outcome):
                waiter = self._waiters.get(key)
                if waiter is not None and not waiter.done():
                    waiter.set_result(outcome)
            case Request(message=message):
                self._requests.put_nowait(message)
            case Misaddressed(message=message):
                self._reply_later([ack(message, 1)])
            case Report(message=message):
                self._call(self._on_report, message)
                if message.type is MessageType.UNSOLICITED_ACK:
                    self._reply_later([ack(message, 0)])
            case Stray(message=message, reason=reason):
                self.counters.unexpected += 1
                log.info(
                    "ifsf_stray_reply", node=self.name, peer=str(message.originator), reason=reason
                )
            case PeerHeard() | PeerMoved() | PeerLost():
                self._peer_event(event)
            case _:
                self._emit(event)

    def _reply_later(self, messages: list[Message]) -> None:
        async def go() -> None:
            try:
                for message in messages:
                    await self.send(message)
            except DriverError as exc:
                log.warning("ifsf_answer_not_sent", node=self.name, error=str(exc))

        self._spawn(go(), "reply")

    async def _serve_requests(self) -> None:
        while True:
            request = await self._requests.get()
            try:
                replies = await self._on_request(request)
            except Exception:  # the application's bug must not stop the node
                log.exception("ifsf_request_handler_failed", node=self.name)
                replies = [ack(request, 2)]
            try:
                for reply in replies:
                    await self.send(reply)
            except DriverError as exc:  # the link broke: the peer's request times out
                log.warning("ifsf_answer_not_sent", node=self.name, error=str(exc))

    # ------------------------------------------------------------------ peers and time
    def _heard(self, data: bytes, source_ip: str) -> None:
        try:
            heartbeat = decode_heartbeat(data)
        except FrameError as exc:
            self.counters.malformed += 1
            self._error(FrameError(f"not a heartbeat: {exc}", device=source_ip))
            self._tap("rx", data, Malformed(data, f"not a heartbeat: {exc}"))
            return
        self._tap("rx", data, heartbeat)
        if heartbeat.ip == ipaddress.IPv4Address(0):
            # Tolerance: a node that does not know its address is reached where it sent from.
            heartbeat = Heartbeat(
                ipaddress.IPv4Address(source_ip), heartbeat.port, heartbeat.lna, heartbeat.status
            )
        expected = self._hosts.get(heartbeat.lna)
        heard = (str(heartbeat.ip), heartbeat.port)
        if expected is not None and not expected.at(heard):
            self._heard_elsewhere(PeerMisplaced(heard, expected))
            return
        self._handle_all(self.core.heard(heartbeat, self._clock()))
        self._wake.set()

    def _heard_elsewhere(self, event: PeerMisplaced) -> None:
        """Counted each time, warned about once per place, told to the application."""
        self.counters.unexpected += 1
        key = (event.lna, *event.heard)
        if key not in self._misplaced:
            self._misplaced.add(key)
            log.warning(
                "ifsf_heartbeat_unexpected",
                node=self.name,
                peer=str(event.lna),
                heard=f"{event.heard[0]}:{event.heard[1]}",
                configured=str(event.expected),
            )
        self._emit(event)

    def _peer_event(self, event: PeerHeard | PeerMoved | PeerLost) -> None:
        if isinstance(event, PeerMoved | PeerLost):
            old = event.previous if isinstance(event, PeerMoved) else event.peer
            self._detach(old)
        if isinstance(event, PeerHeard | PeerMoved) and self.settings.connect:
            peer = event.peer
            link = self._links.get(peer.endpoint)
            if link is None:
                link = self._links[peer.endpoint] = _Outbound(self, peer.endpoint)
                link.start()
            link.lnas.add(peer.lna)
            early = self._early.pop(peer.lna, ())
            if link.connected.is_set():
                self._spawn(link.flush(list(early)), "early")
            else:
                link.backlog.extend(early)
            log.info("ifsf_peer_heard", node=self.name, peer=str(peer.lna), at=peer.endpoint)
        elif isinstance(event, PeerLost):
            log.warning(
                "ifsf_peer_lost", node=self.name, peer=str(event.peer.lna), missed=event.missed
            )
        self._notify()
        self._emit(event)

    def _detach(self, peer: Peer) -> None:
        link = self._links.get(peer.endpoint)
        if link is None:
            return
        link.lnas.discard(peer.lna)
        if not link.lnas:
            del self._links[peer.endpoint]
            self._spawn(link.stop(), "link-stop")

    def _emit(self, event: LinkEvent) -> None:
        self._call(self._on_event, event)

    def _call(self, callback: Callable[[Any], None], argument: Any) -> None:
        try:
            callback(argument)
        except Exception:  # the application's bug must not stop a link
            log.exception("ifsf_callback_failed", node=self.name, callback=repr(callback))

    async def _ticker(self) -> None:
        while True:
            self._wake.clear()
            deadline = self.core.next_deadline()
            wait = None if deadline is None else max(deadline - self._clock(), 0.0)
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            # that arrives as the wait ends, and the node would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._handle_all(self.core.tick(self._clock()))

    async def _send_heartbeats(self) -> None:
        while True:
            self.send_heartbeat_now()
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    # ------------------------------------------------------------------ errors
    def _unreachable(
        self, endpoint: Endpoint | None, why: str, lna: Lna | None = None
    ) -> TransportError:
        where = f"{endpoint[0]}:{endpoint[1]}" if endpoint else str(lna)
        return TransportError(
            f"IFSF node {where}: {why}",
            device=str(lna) if lna else where,
            code="unreachable",
            fault=DeviceFault(UNREACHABLE, f"IFSF node {where}: {why}"),
        )

    def _bind_error(self, kind: str, port: int, exc: OSError) -> TransportError:
        return TransportError(
            f"cannot listen on {kind} port {port}: {exc}",
            device=self.name,
            errno=exc.errno,
            fault=DeviceFault(LINK_ERROR, f"cannot listen on {kind} port {port}: {exc}"),
        )


def _items(
    address: db.Address, items: Iterable[DataItem] | Mapping[int, Any]
) -> tuple[DataItem, ...]:
    if isinstance(items, Mapping):
        return tuple(item(address, data_id, value) for data_id, value in items.items())
    return tuple(items)
