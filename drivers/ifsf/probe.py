"""Finding IFSF dispensers by their heartbeats (`edgectl probe --protocol ifsf`, `edgectl scan
--protocol ifsf`): listen on the UDP heartbeat port(s) a while, list every node heard, and
write the station config for them.

Nothing is sent and no link is opened: every IFSF node says who it is (IP, TCP port, LNA,
status) in its heartbeat every interval (10 s by default), so listening one interval and a
margin hears every node whose heartbeats reach this host. The heartbeat carries no nozzles
or products: only `--read` (`read_nodes`) then links to each dispenser as a controller of
its own LNA (2.127 by default) and reads them, with reads only, for a complete snippet.

Why not an `IfsfNode(LinkSettings(connect=False, send_heartbeat=False))`: a node reports
changes of its peers (heard, moved, status changed, lost), while a probe counts every
heartbeat and every datagram that is none, keeps the address each came from, hears other
controllers too (a node ignores heartbeats of its own LNAs, 2.1 for a CD) and needs no TCP
server. So it reads the datagrams with the node layer's codec (`decode_heartbeat`) on a
socket of its own, bound as the node binds its heartbeat socket.

Beside a running daemon: the socket has SO_REUSEADDR, as the node layer's, so it binds the
port the daemon already holds (Linux lets two sockets share a UDP port when both set it).
Broadcast heartbeats then reach both; a heartbeat sent to this host's own address (unicast,
as the ZSY-style boards send to their configured CD IP) reaches only the socket bound last:
this probe, for as long as it listens. A daemon that bound the port on one address gets
the unicast sent there before any socket on 0.0.0.0 (the most specific socket wins), so on a
shared port the probe binds a socket on each of this host's addresses too (broadcasts still
reach only its 0.0.0.0 one: nothing is counted twice). The probe says when it finds the port
shared, and warns when it would listen long enough for the daemon to count its dispensers
lost.
SO_REUSEPORT is not set: the node layer does not set it (so it adds nothing beside it), and
where both did, Linux would share out unicast heartbeats between the two sockets by hash.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import functools
import ipaddress
import math
import socket
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any

from drivers.base import DriverError, FrameError, TransportError
from drivers.ifsf.encodings import Lna
from drivers.ifsf.heartbeat import STATUS_BITS, decode_heartbeat
from drivers.ifsf.profile_names import PROFILE_NAMES
from drivers.listening import Heard, Listener

if TYPE_CHECKING:
    from drivers.ifsf.profiles import Profile

# The controller LNA `--read` announces and reads as: subnet 2 (controller devices), the last
# node number (1-127), so as not to be the station controller's (2.1 by default).
READ_LNA = Lna(2, 127)
READ_HEARTBEAT_S = 1.0  # `--read` beats this often, so the dispensers connect soon
READ_WAIT_S = 15.0  # for a dispenser's link (it opens it on our heartbeat) and each answer
MARGIN_S = 2.0  # listened beyond one heartbeat interval, for a node whose beat just went by
MAX_SECONDS = 3600.0
DISPENSER_SUBNET = 1
NAMED_BITS = sum(STATUS_BITS)


def _profiles() -> Mapping[str, Profile]:
    from drivers.ifsf.profiles import PROFILES

    return PROFILES


# ------------------------------------------------------------------ what was heard (pure)


@dataclass(slots=True)
class HeardNode:
    """One node heard: as its last heartbeat said, with how often and from where."""

    lna: Lna
    ip: ipaddress.IPv4Address  # advertised; the source address if it advertised 0.0.0.0
    tcp_port: int
    heartbeat_port: int  # the UDP port it was heard on
    source: str  # the datagrams' source address
    status: int
    first_s: float
    last_s: float
    count: int = 1
    statuses: list[int] = field(default_factory=list)  # every status seen, in order

    @property
    def role(self) -> str:
        return self.lna.role or "unknown subnet"

    @property
    def dispenser(self) -> bool:
        return self.lna.subnet == DISPENSER_SUBNET


def status_flags(status: int) -> list[str]:
    """The named bits of a heartbeat status byte (ifsf-over-ip.md §1: one source)."""
    return [name for bit, name in STATUS_BITS.items() if status & bit]


def other_bits(status: int) -> int:
    """Bits no source names (ZSY boards put their FP state in the byte)."""
    return status & ~NAMED_BITS & 0xFF


def describe_status(status: int) -> str:
    """`00 normal`, `01 configuration needed`, `06 other bits 06`."""
    words = status_flags(status)
    if other_bits(status):
        words.append(f"other bits {other_bits(status):02X}")
    return f"{status:02X} " + (", ".join(words) or "normal")


@dataclass(slots=True)
class Tally:
    """The datagrams heard so far, by node; those that are no heartbeat only counted."""

    nodes: dict[tuple[int, Lna, str], HeardNode] = field(default_factory=dict)
    garbage: int = 0
    garbage_from: dict[str, int] = field(default_factory=dict)

    def feed(self, data: bytes, source: str, heartbeat_port: int, now: float) -> None:
        try:
            beat = decode_heartbeat(data)
        except FrameError:
            self.garbage += 1
            self.garbage_from[source] = self.garbage_from.get(source, 0) + 1
            return
        ip = beat.ip if beat.ip != ipaddress.IPv4Address(0) else ipaddress.IPv4Address(source)
        key = (heartbeat_port, beat.lna, str(ip))
        node = self.nodes.get(key)
        if node is None:
            node = self.nodes[key] = HeardNode(
                beat.lna, ip, beat.port, heartbeat_port, source, beat.status, now, now
            )
        else:
            node.count += 1
            node.last_s = now
            node.tcp_port = beat.port
            node.status = beat.status
        if not node.statuses or node.statuses[-1] != beat.status:
            node.statuses.append(beat.status)

    def heard(self) -> list[HeardNode]:
        return sorted(
            self.nodes.values(), key=lambda n: (n.heartbeat_port, n.lna, int(n.ip), n.tcp_port)
        )


@dataclass(frozen=True, slots=True)
class Hearing:
    """One listen: where, how long, what was heard."""

    ports: tuple[int, ...]
    seconds: float
    shared: tuple[int, ...]  # ports another process listens on too
    nodes: tuple[HeardNode, ...]
    garbage: int
    garbage_from: dict[str, int]


# ------------------------------------------------------------------ the network (I/O)


@dataclass(frozen=True, slots=True)
class LocalNetwork:
    """One IPv4 interface of this host."""

    name: str
    interface: ipaddress.IPv4Interface
    broadcast: ipaddress.IPv4Address | None
    loopback: bool


_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_SIOCGIFBRDADDR = 0x8919
_SIOCGIFNETMASK = 0x891B
_IFF_BROADCAST = 0x2
_IFF_LOOPBACK = 0x8


def local_networks() -> list[LocalNetwork]:
    """This host's IPv4 interfaces (Linux ioctls; [] where they are not available)."""
    found = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])

            def ask(code: int, request: bytes = request) -> bytes:
                return fcntl.ioctl(s.fileno(), code, request)

            try:
                address = ipaddress.IPv4Address(ask(_SIOCGIFADDR)[20:24])
                mask = ipaddress.IPv4Address(ask(_SIOCGIFNETMASK)[20:24])
                flags = struct.unpack("H", ask(_SIOCGIFFLAGS)[16:18])[0]
            except OSError:
                continue  # no IPv4 address on it
            broadcast = None
            if flags & _IFF_BROADCAST:
                with contextlib.suppress(OSError):
                    broadcast = ipaddress.IPv4Address(ask(_SIOCGIFBRDADDR)[20:24])
            found.append(
                LocalNetwork(
                    name,
                    ipaddress.IPv4Interface(f"{address}/{mask}"),
                    broadcast,
                    bool(flags & _IFF_LOOPBACK),
                )
            )
    return found


def network_of(ip: str, networks: Iterable[LocalNetwork]) -> LocalNetwork | None:
    """The interface whose subnet `ip` is on (a heartbeat from it came in there)."""
    address = ipaddress.IPv4Address(ip)
    return next((n for n in networks if address in n.interface.network), None)


def _port_in_use(host: str, port: int) -> bool:
    """Another socket holds `port` (bound without SO_REUSEADDR this bind would fail)."""
    if port == 0:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as test:
        try:
            test.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


class _Heartbeats(asyncio.DatagramProtocol):
    def __init__(self, tally: Tally, port: int, clock: Callable[[], float]) -> None:
        self.tally, self.port, self.clock = tally, port, clock

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.tally.feed(data, str(addr[0]), self.port, self.clock())


class HeartbeatListener:
    """UDP sockets on the heartbeat ports, counting what arrives (async context manager).
    Port 0 binds a free one (tests): `ports` are the ports bound."""

    def __init__(
        self,
        ports: Sequence[int],
        *,
        host: str = "0.0.0.0",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.wanted = tuple(ports)
        self.clock = clock
        self.tally = Tally()
        self.ports: tuple[int, ...] = ()
        self.shared: tuple[int, ...] = ()
        self.started = 0.0
        self._transports: list[asyncio.DatagramTransport] = []

    async def __aenter__(self) -> HeartbeatListener:
        ports, shared = [], []
        try:
            for port in self.wanted:
                if _port_in_use(self.host, port):
                    shared.append(port)
                try:
                    bound = await self._bind(self.host, port)
                except OSError as exc:
                    why = exc.strerror or str(exc)
                    if exc.errno == errno.EADDRINUSE:
                        why += " (held by a process that does not share it)"
                    raise TransportError(
                        f"cannot listen on UDP port {port}: {why}", errno=exc.errno
                    ) from None
                ports.append(bound)
                if port in shared and self.host == "0.0.0.0":
                    await self._bind_each_address(bound)
        except BaseException:
            self._close()
            raise
        self.ports, self.shared = tuple(ports), tuple(shared)
        self.started = self.clock()
        return self

    async def _bind(self, host: str, port: int) -> int:
        """One socket on (host, port), shared as the node layer shares it; the port bound."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.setblocking(False)
            bound = int(sock.getsockname()[1])
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                functools.partial(_Heartbeats, self.tally, bound, self.clock), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        self._transports.append(transport)
        return bound

    async def _bind_each_address(self, port: int) -> None:
        """On a shared port, a socket on each of this host's addresses too: a daemon that
        bound its heartbeat socket to one address gets the unicast heartbeats sent there
        before a socket on 0.0.0.0 would (the kernel hands a datagram to the most specific
        socket), so only one on that address hears them. Broadcasts still come to the
        0.0.0.0 one alone, so nothing is counted twice."""
        for network in local_networks():
            with contextlib.suppress(OSError):
                await self._bind(str(network.interface.ip), port)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._close()

    def _close(self) -> None:
        for transport in self._transports:
            transport.close()
        self._transports.clear()

    def hearing(self) -> Hearing:
        return Hearing(
            self.ports,
            round(self.clock() - self.started, 1),
            self.shared,
            tuple(self.tally.heard()),
            self.tally.garbage,
            dict(self.tally.garbage_from),
        )


# ------------------------------------------------------------------ what the nodes hold (--read)


@dataclass(frozen=True, slots=True)
class ReadProduct:
    """A product as a dispenser node holds it: its Prod_Nb, description and the unit price
    of fuelling mode 1 (None: not readable)."""

    prod_nb: int
    name: str
    price: Decimal | None


@dataclass(frozen=True, slots=True)
class ReadFp:
    """A fuelling point read: the Prod_Nb of each logical nozzle, by logical nozzle."""

    fp: int
    nozzles: Mapping[int, int]


@dataclass(frozen=True, slots=True)
class NodeContents:
    """What `--read` read from one dispenser node; `error` says why it stopped short."""

    fps: tuple[ReadFp, ...] = ()
    products: Mapping[int, ReadProduct] = field(default_factory=dict)  # by Prod_Nb
    error: str | None = None


def _key(node: HeardNode) -> tuple[int, Lna, str]:
    return (node.heartbeat_port, node.lna, str(node.ip))


async def read_nodes(
    nodes: Sequence[HeardNode],
    *,
    controller: Lna = READ_LNA,
    heartbeat_to: Sequence[tuple[str, int | None]] = (),
    wait_s: float = READ_WAIT_S,
    heartbeat_interval_s: float = READ_HEARTBEAT_S,
) -> dict[tuple[int, Lna, str], NodeContents]:
    """Open the IFSF links to each dispenser node as controller `controller`, read its FPs,
    logical nozzles and products (Prod_Nb, description, price in mode 1), and close them.

    Only reads are sent: no Add_Recipient_Addr, no write, no command, so the dispensers are
    left as they were (they drop the link to us when our heartbeat stops). One controller
    node per heartbeat port, beating to `heartbeat_to` ("host", port or None for that
    port) or else to each dispenser's own address on the port it was heard on."""
    from drivers.ifsf.links import IfsfNode, LinkSettings

    found: dict[tuple[int, Lna, str], NodeContents] = {}
    dispensers = [n for n in nodes if n.dispenser]
    for port in sorted({n.heartbeat_port for n in dispensers}):
        here = [n for n in dispensers if n.heartbeat_port == port]
        targets = [(host, to or port) for host, to in heartbeat_to] or [
            (n.source, port) for n in here
        ]
        settings = LinkSettings(
            lnas=(controller,),
            tcp_port=0,
            heartbeat_port=port,
            heartbeat_destinations=tuple(dict.fromkeys(targets)),
            heartbeat_interval_s=heartbeat_interval_s,
            missed_heartbeats=max(3, math.ceil(wait_s / heartbeat_interval_s)),
            reply_timeout_s=min(wait_s, 5.0),
        )
        async with IfsfNode(settings) as link:
            for node in here:
                found[_key(node)] = await _read_node(link, node.lna, wait_s)
    return found


async def _read_node(link: Any, lna: Lna, wait_s: float) -> NodeContents:
    from drivers.ifsf import databases as db

    fps: list[ReadFp] = []
    products: dict[int, ReadProduct] = {}
    step = "the link"
    try:
        await link.wait_link(lna, wait_s)
        step = "C_DAT Nb_FP"
        nb_fp = int((await link.read(lna, db.C_DAT, [0x05])).values()[0x05])
        by_index: dict[int, int] = {}  # PR_ID index: Prod_Nb
        for fp in range(1, min(nb_fp, 4) + 1):
            step = f"FP {fp} Nb_Logical_Nozzle"
            count = int((await link.read(lna, db.FuellingPoint(fp), [0x04])).values()[0x04])
            nozzles: dict[int, int] = {}
            for logical in range(1, min(count, 8) + 1):
                step = f"FP {fp} logical nozzle {logical} PR_Id"
                where = db.LogicalNozzle(fp, logical)
                index = int((await link.read(lna, where, [0x01])).values()[0x01])
                if index not in by_index:
                    step = f"product {index} Prod_Nb"
                    values = (await link.read(lna, db.Product(index), [0x02, 0x03])).values()
                    prod_nb = int(values[0x02])
                    by_index[index] = prod_nb
                    name = str(values.get(0x03) or "").strip()
                    products[prod_nb] = ReadProduct(prod_nb, name, await _price(link, lna, prod_nb))
                nozzles[logical] = by_index[index]
            fps.append(ReadFp(fp, nozzles))
    except (DriverError, KeyError, TypeError, ValueError) as exc:
        return NodeContents(tuple(fps), products, f"reading {step}: {exc or type(exc).__name__}")
    return NodeContents(tuple(fps), products)


async def _price(link: Any, lna: Lna, prod_nb: int) -> Decimal | None:
    """Prod_Price of fuelling mode 1; None where the node has none for it (a price is
    optional: the station sets its own)."""
    from drivers.ifsf import databases as db

    try:
        value = (await link.read(lna, db.ProductPerMode(prod_nb, 1), [0x02])).values().get(0x02)
    except DriverError:
        return None
    return value if isinstance(value, Decimal) and value > 0 else None


# ------------------------------------------------------------------ the config snippet


def profile_for_port(port: int) -> tuple[Profile, str]:
    """The profile a heartbeat port suggests, and what to say of the guess."""
    matching = [p for p in _profiles().values() if p.heartbeat_port == port]
    if not matching:
        return _profiles()["generic"], f"no profile uses port {port}: check the dispensers' dialect"
    names = " or ".join(p.name for p in matching)
    if len(matching) == 1:
        return matching[0], f"port {port} is the {names} profile's"
    return matching[0], f"port {port}: {names} (the heartbeat alone cannot tell)"


def _toml(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _line(key: str, value: str, comment: str = "") -> str:
    text = f"{key} = {value}"
    return f"{text:<28} # {comment}" if comment else text  # a space before "#" however long


TO_FILL = (
    "products (grade id -> Prod_Nb), each pump's nozzles and a [[grades]] entry per grade "
    "(heartbeats do not carry them; `--read` reads them from the dispensers)"
)


def unread(contents: Mapping[tuple[int, Lna, str], NodeContents] | None, node: HeardNode) -> bool:
    """The snippet has placeholders for this node: it was not read, or not completely."""
    found = contents.get(_key(node)) if contents is not None else None
    return found is None or found.error is not None or not found.fps


def config_snippet(
    hearing: Hearing,
    profile: Profile | None = None,
    networks: Sequence[LocalNetwork] | None = None,
    contents: Mapping[tuple[int, Lna, str], NodeContents] | None = None,
) -> str:
    """The TOML of an IFSF line per heartbeat port where dispensers were heard, and a pump
    per dispenser node (numbered from 1); "" if no dispenser was heard. `profile` is the
    one asked for; None: the one each port suggests.

    With `contents` (what `--read` read), each FP read is a pump with its logical nozzles,
    each line has the products and a `[[grades]]` entry stands for each Prod_Nb: the
    snippet is a complete config part. Without it, or for a node not read, the FP count
    is assumed and `products`/`nozzles` are commented placeholders to fill in."""
    dispensers = [n for n in hearing.nodes if n.dispenser]
    if not dispensers:
        return ""
    nets = local_networks() if networks is None else networks
    ports = sorted({n.heartbeat_port for n in dispensers})
    out = [
        f"# IFSF nodes heard on UDP {', '.join(map(str, hearing.ports))} in "
        f"{hearing.seconds:g} s (edgectl probe --protocol ifsf)"
    ]
    if any(unread(contents, n) for n in dispensers):
        out.append(f"# FILL IN before `edgectl config check` passes: {TO_FILL}")
    read = {k: c for k, c in (contents or {}).items() if c.error is None and c.fps}
    products: dict[int, ReadProduct] = {}
    for found in read.values():
        for number, product in sorted(found.products.items()):
            products.setdefault(number, product)
    out += _grades(products)
    for node in hearing.nodes:
        if not node.dispenser:
            out.append(
                f"# also heard: {node.lna} ({node.role}) at {node.ip}:{node.tcp_port}, "
                f"UDP {node.heartbeat_port}: not a pump"
            )
    names = {port: "ifsf" if len(ports) == 1 else f"ifsf_{port}" for port in ports}
    profiles: dict[int, Profile] = {}
    for port in ports:
        chosen, why = (profile, "as asked") if profile else profile_for_port(port)
        profiles[port] = chosen
        controllers = [
            n for n in hearing.nodes if n.lna == chosen.controller_lna and n.heartbeat_port == port
        ]
        lna_note = ""
        if controllers:
            lna_note = f"{chosen.controller_lna} is heard at {controllers[0].ip}: pick a free LNA"
        out += [
            "",
            "[[lines]]",
            _line("name", _toml(names[port])),
            _line("protocol", _toml("ifsf")),
            _line("profile", _toml(chosen.name), f"{' | '.join(PROFILE_NAMES)}; {why}"),
            _line("controller_lna", _toml(str(chosen.controller_lna)), lna_note),
            _line(
                "tcp_port",
                str(chosen.controller_port),
                "this controller's TCP server, advertised in its heartbeat",
            ),
            _line("heartbeat_port", str(port)),
            _heartbeat_to([n for n in dispensers if n.heartbeat_port == port], nets),
            _products(
                sorted(
                    {
                        nb
                        for n in dispensers
                        if n.heartbeat_port == port and _key(n) in read
                        for f in read[_key(n)].fps
                        for nb in f.nozzles.values()
                    }
                ),
                all(_key(n) in read for n in dispensers if n.heartbeat_port == port),
            ),
        ]
    seen: dict[Lna, HeardNode] = {}
    number = 0
    for node in dispensers:
        first = seen.setdefault(node.lna, node)
        status = f"status {describe_status(node.status)}"
        attempt = (contents or {}).get(_key(node))
        fps = read[_key(node)].fps if _key(node) in read else (ReadFp(1, {}),)
        for fp in fps:
            number += 1
            out += [
                "",
                "[[pumps]]",
                _line("number", str(number)),
                _line("line", _toml(names[node.heartbeat_port])),
                _line("node", _toml(str(node.lna)), status),
                _line(
                    "host",
                    _toml(f"{node.ip}:{node.tcp_port}"),
                    "where it was heard: its heartbeat from elsewhere is not taken",
                ),
            ]
            if first is not node:
                out.append(f"# LNA {node.lna} is heard from {first.ip} too: two nodes with one LNA")
            if profiles[node.heartbeat_port].node_per_nozzle:
                out.append("# one node per nozzle: this node is one nozzle; those at one IP")
                out.append("# share a dispenser")
            if fp.nozzles:
                nozzles = ", ".join(f"{n} = {_toml(str(nb))}" for n, nb in fp.nozzles.items())
                out += [
                    _line("fp", str(fp.fp), f"read: the node has {len(fps)} FP(s)"),
                    _line("nozzles", f"{{ {nozzles} }}", "read: logical nozzle = grade (Prod_Nb)"),
                ]
                continue
            if attempt is not None and attempt.error is not None:
                out.append(f"# not read ({attempt.error}): fill in by hand")
            out += [
                _line("fp", "1", "one FP assumed: check the dispenser's FP count (C_DAT Nb_FP)"),
                '# nozzles = { 1 = "92", 2 = "95" }   # edgectl nozzle = logical nozzle 1-8: '
                "fill in",
            ]
    return "\n".join(out) + "\n"


def _grades(products: Mapping[int, ReadProduct]) -> list[str]:
    """A [[grades]] entry per product read, its id the Prod_Nb (rename it to the station's
    grade id, in `products` and the pumps' `nozzles` too)."""
    if not products:
        return []
    out = [
        "",
        "# Grades read from the dispensers, each named after its Prod_Nb: rename an id to the",
        "# station's grade id (here, in the line's products and in the pumps' nozzles alike).",
    ]
    for number, product in sorted(products.items()):
        out += [
            "",
            "[[grades]]",
            _line("id", _toml(str(number)), f"Prod_Nb {number}"),
            _line("name", _toml(product.name or f"product {number}")),
        ]
        if product.price is None:
            out.append(
                '# unit_price = "7.45"        # not read from the dispenser: set the '
                "station's price"
            )
        else:
            out.append(
                _line("unit_price", _toml(str(product.price)), "the dispenser's price (mode 1)")
            )
    return out


def _products(numbers: Sequence[int], complete: bool) -> str:
    """The line's `products`: read (grade id = Prod_Nb), or a placeholder to fill in."""
    if not numbers:
        return (
            '# products = { "92" = 1, "95" = 2 }  # grade id -> the dispenser\'s Prod_Nb: fill in'
        )
    table = "{ " + ", ".join(f"{_toml(str(n))} = {n}" for n in numbers) + " }"
    why = "read: grade id -> Prod_Nb" + ("" if complete else "; add those of the nodes not read")
    return _line("products", table, why)


def _heartbeat_to(nodes: Sequence[HeardNode], networks: Sequence[LocalNetwork]) -> str:
    """Where our heartbeat goes: the broadcast of the interface the dispensers' came in
    on, or their own addresses on loopback or a network without broadcast."""
    targets: list[str] = []
    said: list[str] = []
    for node in nodes:
        net = network_of(node.source, networks)
        if net is None:
            return _line(
                "heartbeat_to",
                '["255.255.255.255"]',
                f"{node.source} is on no subnet of this host: its subnet broadcast, "
                "or the dispensers' addresses",
            )
        if net.loopback or net.broadcast is None:
            target, why = node.source, f"{net.name} has no broadcast: unicast"
        else:
            target, why = str(net.broadcast), f"the broadcast of {net.name}"
        if target not in targets:
            targets.append(target)
        if why not in said:
            said.append(why)
    return _line("heartbeat_to", "[" + ", ".join(map(_toml, targets)) + "]", "; ".join(said))


# ------------------------------------------------------------------ the listener


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UDP port (1-65535)")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time in seconds (0-{MAX_SECONDS:g})")
    return value


def _arguments(group: argparse._ArgumentGroup) -> list[argparse.Action]:
    return [
        group.add_argument(
            "--heartbeat-port",
            type=_port,
            action="append",
            metavar="UDP",
            help="listen on this UDP port (repeatable; default: the profile's, 3486; "
            "scan: every profile's, 3485 and 3486)",
        ),
        group.add_argument(
            "--profile",
            choices=PROFILE_NAMES,
            help="the dispensers' dialect: its heartbeat port, and the snippet's profile",
        ),
        group.add_argument(
            "--seconds",
            type=_seconds,
            metavar="S",
            help="how long to listen (default: one heartbeat interval and 2 s, 12 s)",
        ),
        group.add_argument(
            "--read",
            action="store_true",
            help="then open the IFSF links to each dispenser heard, as a controller, and read "
            "its FPs, logical nozzles and products (Prod_Nb, name, price): only reads are "
            "sent; the snippet is then complete for `edgectl config check`",
        ),
        group.add_argument(
            "--controller-lna",
            type=_lna,
            metavar="S.N",
            help=f"the controller LNA --read uses (default {READ_LNA}: not the station "
            "controller's 2.1; pick one no controller on the site uses)",
        ),
        group.add_argument(
            "--heartbeat-to",
            type=_destination,
            action="append",
            metavar="HOST[:UDP]",
            help="where --read sends its heartbeat (repeatable; default: each dispenser's "
            "address, on the port it was heard on)",
        ),
    ]


def _lna(text: str) -> Lna:
    subnet, dot, node = text.partition(".")
    try:
        if not dot:
            raise ValueError(text)
        return Lna(int(subnet), int(node))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IFSF node address (subnet.node, e.g. 2.127)"
        ) from None


def _destination(text: str) -> tuple[str, int | None]:
    host, colon, port = text.rpartition(":")
    if not colon:
        return (text, None)
    if not host:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST or HOST:UDP")
    return (host, _port(port))


def plan(args: argparse.Namespace, every_port: bool) -> tuple[list[int], float, Profile | None]:
    """The ports to listen on, for how long, and the profile asked for (None: not asked)."""
    known = _profiles()
    profile = known[args.profile] if args.profile else None
    if args.heartbeat_port:
        ports = sorted(set(args.heartbeat_port))
    elif profile is not None:
        ports = [profile.heartbeat_port]
    elif every_port:
        ports = sorted({p.heartbeat_port for p in known.values()})
    else:
        ports = [known["generic"].heartbeat_port]
    used = [profile] if profile else [p for p in known.values() if p.heartbeat_port in ports]
    interval = max(p.heartbeat_interval_s for p in used or [known["generic"]])
    return ports, args.seconds or interval + MARGIN_S, profile


def hint(hearing: Hearing) -> str:
    """What to check when no heartbeat was heard."""
    ports = ", ".join(map(str, hearing.ports))
    known = _profiles()
    others = sorted({p.heartbeat_port for p in known.values()} - set(hearing.ports))
    checks = []
    if others:
        other = next(p for p in known.values() if p.heartbeat_port == others[0])
        checks.append(
            f"the port (the {other.name} profile's is {others[0]}: --profile {other.name}, "
            "or `edgectl scan --protocol ifsf` listens on every profile's)"
        )
    checks += [
        "the CD/FS IP set on the dispensers (a dispenser that sends its heartbeat by unicast "
        "sends it there only)",
        f"that broadcasts reach this host (same subnet and VLAN, no firewall dropping UDP {ports})",
        "a longer --seconds (the dispensers' heartbeat interval may be longer than 10 s)",
    ]
    return "check " + "; ".join(checks)


def _rows(hearing: Hearing) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for n in hearing.nodes:
        ip = str(n.ip) if n.source == str(n.ip) else f"{n.ip} (sent from {n.source})"
        flags = ", ".join(status_flags(n.status)) or "-"
        if other_bits(n.status):
            flags = f"{flags}; other bits {other_bits(n.status):02X}".lstrip("-; ")
        rows.append(
            (
                str(n.lna),
                n.role,
                ip,
                str(n.tcp_port),
                str(n.heartbeat_port),
                f"{n.status:02X}",
                flags,
                str(n.count),
            )
        )
    return rows


def read_notes(
    hearing: Hearing, contents: Mapping[tuple[int, Lna, str], NodeContents] | None
) -> list[str]:
    """What the snippet still needs, and why a node could not be read."""
    dispensers = [n for n in hearing.nodes if n.dispenser]
    said = []
    for node in dispensers:
        found = (contents or {}).get(_key(node))
        if found is not None and found.error is not None:
            said.append(f"{node.lna} at {node.ip} could not be read: {found.error}")
    missing = [n for n in dispensers if unread(contents, n)]
    if missing:
        which = "" if contents is None else f" for {', '.join(str(n.lna) for n in missing)}"
        said.append(
            f"the config snippet is not complete{which}: fill in {TO_FILL}"
            + ("" if contents is not None else " (or probe again with --read)")
        )
    for found in (contents or {}).values():
        if any(p.price is None for p in found.products.values()):
            said.append("a product's price was not read: set its grade's unit_price")
            break
    return said


def _node_json(n: HeardNode, found: NodeContents | None = None) -> dict[str, Any]:
    read: dict[str, Any] | None = None
    if found is not None:
        read = {
            "error": found.error,
            "fps": [
                {"fp": f.fp, "nozzles": {str(k): v for k, v in f.nozzles.items()}}
                for f in found.fps
            ],
            "products": [
                {
                    "prod_nb": p.prod_nb,
                    "name": p.name,
                    "price": None if p.price is None else str(p.price),
                }
                for p in found.products.values()
            ],
        }
    return {
        "read": read,
        "lna": str(n.lna),
        "role": n.role,
        "ip": str(n.ip),
        "tcp_port": n.tcp_port,
        "heartbeat_port": n.heartbeat_port,
        "source_ip": n.source,
        "status": n.status,
        "status_flags": status_flags(n.status),
        "status_other_bits": other_bits(n.status),
        "statuses_seen": n.statuses,
        "heartbeats": n.count,
    }


def notes(hearing: Hearing, profile: Profile | None) -> list[str]:
    """What a person should read beside the table."""
    said = []
    for port in hearing.shared:
        window = profile or _profiles()["generic"]
        said.append(
            f"UDP {port} is bound by another process too (a running edgectl daemon?): "
            "broadcast heartbeats reach both, but those sent to this host's own address "
            "come to this probe alone while it listens"
        )
        lost_after = window.missed_heartbeats * window.heartbeat_interval_s
        if hearing.seconds >= lost_after:
            said.append(
                f"listening {hearing.seconds:g} s on a shared port: a daemon whose dispensers "
                f"send by unicast counts them lost after {lost_after:g} s"
            )
    if hearing.garbage:
        sources = ", ".join(f"{ip} ({count})" for ip, count in sorted(hearing.garbage_from.items()))
        said.append(f"{hearing.garbage} datagram(s) were not heartbeats, ignored: from {sources}")
    lnas: dict[tuple[int, Lna], list[str]] = {}
    for node in hearing.nodes:
        lnas.setdefault((node.heartbeat_port, node.lna), []).append(str(node.ip))
    for (_, lna), ips in lnas.items():
        if len(ips) > 1:
            said.append(f"LNA {lna} is heard from {' and '.join(ips)}: two nodes with one LNA")
    for node in hearing.nodes:
        if len(node.statuses) > 1:
            went = " -> ".join(f"{s:02X}" for s in node.statuses)
            said.append(f"{node.lna}'s status changed while listening: {went}")
    return said


def heard(
    hearing: Hearing,
    profile: Profile | None,
    contents: Mapping[tuple[int, Lna, str], NodeContents] | None = None,
) -> Heard:
    """The hearing (and with `contents`, what `--read` read) as the CLI shows it."""
    config = config_snippet(hearing, profile, contents=contents)
    ports = ", ".join(map(str, hearing.ports))
    dispensers = sum(1 for n in hearing.nodes if n.dispenser)
    summary = (
        f"{len(hearing.nodes)} IFSF node(s) heard on UDP {ports} in {hearing.seconds:g} s, "
        f"{dispensers} of them dispensers"
    )
    said = notes(hearing, profile) + read_notes(hearing, contents)
    return Heard(
        count=len(hearing.nodes),
        columns=("LNA", "role", "IP", "TCP port", "UDP", "status", "flags", "heartbeats"),
        rows=_rows(hearing),
        json={
            "protocol": "ifsf",
            "listened": {
                "ports": list(hearing.ports),
                "seconds": hearing.seconds,
                "shared": list(hearing.shared),
            },
            "found": [_node_json(n, (contents or {}).get(_key(n))) for n in hearing.nodes],
            "garbage": {"count": hearing.garbage, "from": hearing.garbage_from},
            "notes": said,
            "config": config,
        },
        config=config,
        summary=summary,
        hint=f"no IFSF heartbeat heard on UDP {ports} in {hearing.seconds:g} s: {hint(hearing)}",
        notes=said,
    )


async def _listen(
    args: argparse.Namespace, every_port: bool, announce: Callable[[str], None]
) -> Heard:
    ports, seconds, profile = plan(args, every_port)
    async with HeartbeatListener(ports) as listener:
        announce(
            f"listening for IFSF heartbeats on UDP {', '.join(map(str, listener.ports))} "
            f"for {seconds:g} s"
        )
        await asyncio.sleep(seconds)
        hearing = listener.hearing()
    contents = None
    if getattr(args, "read", False) and any(n.dispenser for n in hearing.nodes):
        controller = args.controller_lna or READ_LNA
        announce(f"reading the dispensers heard, as controller {controller}")
        contents = await read_nodes(
            hearing.nodes, controller=controller, heartbeat_to=args.heartbeat_to or ()
        )
    return heard(hearing, profile, contents)


def listener() -> Listener:
    return Listener(
        name="ifsf",
        devices="IFSF nodes",
        help="  ifsf    IFSF dispensers on TCP/IP, found by listening for their UDP heartbeats\n"
        "          (3486, or 3485 with --profile petrochina): nothing is sent, no PORT.",
        add_arguments=_arguments,
        listen=_listen,
    )
