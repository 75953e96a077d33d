"""IFSF dispenser nodes simulated on the network (`edgectl simulate ifsf`, the station tests, the
demo): the pure dispenser model (dispenser.py) behind the node layer (links.py), with
customers, faults and the simulator control language.

Each `SimNode` is one dispenser node: an `IfsfNode` (its TCP server, its link to every CD it
hears, the UDP heartbeat) answering through a `Dispenser` model. `IfsfSimulator` runs several
on one asyncio loop, lets the fuel flow (`tick` every `tick_s`), sends the unsolicited
messages the models make, and plays random or scripted customers.

On loopback the nodes share one UDP heartbeat port (bound to 0.0.0.0, SO_REUSEADDR): a
controller on the same host sends its heartbeat to 127.255.255.255 at that port, which every
node hears (a unicast heartbeat reaches only one of them). They send theirs to the plan's
destinations (the CD's heartbeat port).

Faults: `silent` (no answers, no heartbeat, no unsolicited data: the CD loses the peer after
its missed heartbeats), `refuse` (MS_ACK 7 "device busy" to writes), `drop` (both TCP links
closed; the node opens its own again and takes the CD's new one), `garbage` (random bytes, or
a message its M_Lg frames but nobody can read, on the link to the CD), `power-cycle` (silent,
then back with every FP Closed and the sales kept, as battery-backed dispensers do).

The control language is the DART simulator's (drivers/wayne_dart/sim_commands.py, its parser
reused), PUMP being the station number of a fuelling point, plus `drop PUMP` and
`garbage PUMP [COUNT]`, and the IFSF states for `wait PUMP STATE` (docs/simulator.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Final, TypeVar

import structlog

from drivers.base import DriverError
from drivers.ifsf import codec
from drivers.ifsf.dispenser import (
    DIALECTS,
    Customer,
    CustomerError,
    Dispenser,
    DispenserError,
    DispenserSpec,
    FpSpec,
    FpState,
    FuellingPoint,
    NozzleSpec,
    ProductSpec,
    RandomCustomers,
    normal_fill,
)
from drivers.ifsf.encodings import Lna
from drivers.ifsf.links import IfsfNode, LinkEvent, LinkSettings
from drivers.ifsf.node import PeerHeard, PeerLost, PeerMoved
from drivers.simulation import DispenserSimulation, LinePlan, NetworkPlan, ServePlan
from drivers.wayne_dart import sim_commands as dart_commands
from drivers.wayne_dart.sim_commands import (
    USAGE,
    Accept,
    Answer,
    Command,
    CommandSyntaxError,
    ControlError,
    Customers,
    Fill,
    HangUp,
    Help,
    Lift,
    PowerCycle,
    Price,
    PumpRef,
    Quit,
    Refuse,
    Silent,
    Sleep,
    Status,
    WaitFor,
    WalkAway,
)
from drivers.wayne_dart.sim_control import (
    ControlSocket,
    Reply,
    run_session,
)

log = structlog.get_logger(__name__)

TICK_S: Final = 0.1
CD_SUBNET: Final = 2
DEFAULT_AUTHORIZE_WAIT_S: Final = 60.0
DEFAULT_FILL_TIMEOUT_S: Final = 600.0
DEFAULT_STATE_TIMEOUT_S: Final = 60.0
_FOREVER: Final = 1_000_000_000
_FILLING: Final = frozenset({FpState.STARTED, FpState.FUELLING, FpState.SUSPENDED_FUELLING})


# ======================================================================================
# One node on the network
# ======================================================================================
class SimNode:
    """One simulated dispenser node: the model, its IfsfNode, its faults."""

    def __init__(
        self,
        spec: DispenserSpec,
        settings: LinkSettings,
        *,
        name: str | None = None,
        clock: Callable[[], float] = time.time,
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.clock = clock
        self.model = Dispenser(spec, now=clock())
        # The simulator sends the heartbeat itself, so that a silent node stops sending it.
        self.settings = replace(settings, lnas=(spec.lna,), send_heartbeat=False)
        self.name = name or f"ifsf-{spec.lna}"
        self.node: IfsfNode | None = None
        self.silent = False
        self.garbage_sent = 0
        self.links_dropped = 0
        self._changed = changed
        self._cds: set[Lna] = set()

    @property
    def lna(self) -> Lna:
        return self.model.lna

    @property
    def tcp_port(self) -> int:
        return self.settings.tcp_port

    @property
    def heartbeat_port(self) -> int:
        return self.settings.heartbeat_port

    async def start(self) -> None:
        node = IfsfNode(
            self.settings, name=self.name, on_request=self._on_request, on_event=self._on_event
        )
        await node.start()
        self.node = node
        # Ports chosen by the system stay the node's across a dropped link or a power cycle.
        self.settings = replace(
            self.settings, tcp_port=node.tcp_port, heartbeat_port=node.heartbeat_port
        )

    async def stop(self) -> None:
        node, self.node = self.node, None
        if node is not None:
            await node.stop()

    async def _on_request(self, request: codec.Message) -> Sequence[codec.Message]:
        if self.silent:
            return []
        out = self.model.receive(request, self.clock())
        self._changed()
        return out

    def _on_event(self, event: LinkEvent) -> None:
        if isinstance(event, PeerHeard | PeerMoved) and event.peer.lna.subnet == CD_SUBNET:
            self._cds.add(event.peer.lna)
        elif isinstance(event, PeerLost):
            self._cds.discard(event.peer.lna)
        self.model.set_cd_online(bool(self._cds))

    async def send(self, messages: Sequence[codec.Message]) -> None:
        """Send what the model said (nothing while silent)."""
        if self.silent or self.node is None:
            return
        for message in messages:
            await self.node.send(message)

    def heartbeat(self) -> None:
        if self.silent or self.node is None:
            return
        self.node.set_status(self.lna, self.model.heartbeat_status)
        self.node.send_heartbeat_now()

    # ------------------------------------------------------------------ faults
    async def drop_links(self) -> None:
        """Close both TCP links: the node opens its own again with its backoff, the CD its
        own as it does."""
        self.links_dropped += 1
        if self.node is not None:
            await self.node.drop_links()

    async def garbage(self, count: int, rng: random.Random) -> int:
        """`count` pieces of garbage to every CD: random bytes (which the CD cannot frame:
        it drops its inbound link) and, every other one, a message framed by its M_Lg that
        is not IFSF (which it skips). The number of CDs they went to."""
        node = self.node
        if node is None:
            return 0
        sent = 0
        for cd in sorted(self.model.recipients):
            if not node.is_up(cd):
                continue
            for piece in range(count):
                if piece % 2:
                    data = cd.wire + self.lna.wire + b"\x00\xc0\x00\x03\x01\x21\x00"
                else:
                    data = b"\xff\xff" + rng.randbytes(rng.randint(6, 40))
                await node.send_raw(cd, data)
                self.garbage_sent += 1
            sent += 1
        return sent

    async def power_cycle(self, off_s: float) -> None:
        was_silent = self.silent
        self.silent = True
        self.model.power_cut(self.clock())
        await self.stop()
        try:
            if off_s:
                await asyncio.sleep(off_s)
        finally:
            self.silent = was_silent
            await self.start()


# ======================================================================================
# Several nodes, time, customers
# ======================================================================================
@dataclass(frozen=True, slots=True)
class SimFp:
    """A simulated fuelling point, with the station number control commands use."""

    number: int
    node: SimNode
    fp: int
    sim: IfsfSimulator

    @property
    def point(self) -> FuellingPoint:
        return self.node.model.fps[self.fp]

    # What `edgectl demo` asks of a simulated pump of any protocol (a DART SimPump's names).
    @property
    def address(self) -> int:
        """The station's address of this FP: its node's LNA and the FP in one number, as
        the registry makes it for an IFSF pump of the config (shown 1.1/FP2)."""
        lna = self.node.lna
        return (lna.subnet << 16) | (lna.node << 8) | self.fp

    @property
    def nozzle_out(self) -> int | None:
        return self.point.nozzle_out

    def totals(self, nozzle: int) -> tuple[int, int]:
        """The nozzle's electronic (volume, amount) totals in units of their last decimal."""
        found = self.point.nozzles[nozzle]
        spec = self.node.model.spec
        return (
            int(found.volume_total.scaleb(spec.volume_decimals)),
            int(found.amount_total.scaleb(spec.amount_decimals)),
        )

    def meter_fault(self, nozzle: int, volume: Decimal, amount: Decimal) -> None:
        """The nozzle's electronic totals move by `volume` and `amount` with no sale (a
        faulty meter, or fuel drawn past the controller): what the station's totals check
        is there to catch."""
        found = self.point.nozzles[nozzle]
        found.volume_total += volume
        found.amount_total += amount


class IfsfSimulator:
    """Dispenser nodes on one loop: the flow of fuel, heartbeats, customers.

    `numbers` maps (node LNA, FP) to the station number a fuelling point is known by; by
    default FPs are numbered 1, 2, ... in the order of the nodes and their FPs.
    """

    def __init__(
        self,
        specs: Sequence[DispenserSpec],
        settings: Sequence[LinkSettings],
        *,
        name: str = "ifsf",
        heartbeat_interval_s: float = 10.0,
        tick_s: float = TICK_S,
        numbers: dict[tuple[Lna, int], int] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(specs) != len(settings):
            raise ValueError("one LinkSettings per node")
        lnas = [spec.lna for spec in specs]
        if len(set(lnas)) != len(lnas):
            raise ValueError("two simulated nodes share an LNA")
        self.name = name
        self.clock = clock
        self.tick_s = tick_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self._event = asyncio.Event()
        self.nodes = [
            SimNode(spec, s, clock=clock, changed=self._notify)
            for spec, s in zip(specs, settings, strict=True)
        ]
        self.fps: list[SimFp] = []
        count = 0
        for node in self.nodes:
            for fp in node.model.fps:
                count += 1
                number = count if numbers is None else numbers[(node.lna, fp)]
                self.fps.append(SimFp(number, node, fp, self))
        self.customers: dict[int, Customer] = {}  # by FP station number
        self.random: dict[Lna, RandomCustomers] = {}
        self._outbox: dict[Lna, list[codec.Message]] = {}  # said outside a tick, sent by the next
        self._tasks: list[asyncio.Task[None]] = []
        self.running = False

    # ------------------------------------------------------------------ life
    async def start(self) -> None:
        started: list[SimNode] = []
        try:
            for node in self.nodes:
                await node.start()
                started.append(node)
        except BaseException:
            for node in started:
                await node.stop()
            raise
        self.running = True
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._ticker(), name=f"{self.name}-tick"),
            loop.create_task(self._heartbeats(), name=f"{self.name}-heartbeat"),
        ]
        for node in self.nodes:
            log.info(
                "ifsf_sim_node",
                node=str(node.lna),
                tcp=node.tcp_port,
                heartbeat_port=node.heartbeat_port,
                fps=len(node.model.fps),
            )

    async def stop(self) -> None:
        self.running = False
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for node in self.nodes:
            await node.stop()

    async def __aenter__(self) -> IfsfSimulator:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def describe(self) -> list[str]:
        """Where each node is and which pumps it has, a line each (after `start`)."""
        lines = []
        for node in self.nodes:
            pumps = ", ".join(f"pump {f.number} = FP {f.fp}" for f in self.fps if f.node is node)
            nozzles = sum(len(p.nozzles) for p in node.model.fps.values())
            lines.append(
                f"{self.name}: node {node.lna} at {node.settings.tcp_host}:{node.tcp_port}, "
                f"heartbeat port {node.heartbeat_port}, {node.model.dialect.name}: "
                f"{pumps} ({nozzles} nozzles)"
            )
        return lines

    def _notify(self) -> None:
        self._event.set()

    async def changed(self, timeout: float) -> None:
        """Until something happens at a node (a tick, a request), at most `timeout`."""
        self._event.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), max(timeout, 0.0))

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await self.changed(min(left, self.tick_s * 2))
        return True

    # ------------------------------------------------------------------ time
    async def _ticker(self) -> None:
        while True:
            try:
                await self.tick()
            except DriverError as exc:  # a link broke under a send: the next tick goes on
                log.warning("ifsf_sim_tick_failed", error=str(exc))
            await asyncio.sleep(self.tick_s)

    async def tick(self) -> None:
        now = self.clock()
        for node in self.nodes:
            out = self._outbox.pop(node.lna, []) + node.model.tick(now)
            crowd = self.random.get(node.lna)
            if crowd is not None:
                out += crowd.tick(now)
            for fp in [f for f in self.fps if f.node is node]:
                customer = self.customers.get(fp.number)
                if customer is not None:
                    out += customer.tick(now)
                    if customer.done:
                        del self.customers[fp.number]
            await node.send(out)
        self._notify()

    async def _heartbeats(self) -> None:
        while True:
            for node in self.nodes:
                node.heartbeat()
            await asyncio.sleep(self._interval(self.nodes[0]) if self.nodes else 1.0)

    def _interval(self, node: SimNode) -> float:
        """The plan's interval, unless a CD wrote another into COM_SV (whole seconds)."""
        written = node.model.heartbeat_interval
        return (
            self.heartbeat_interval_s if written == node.model.spec.heartbeat_interval else written
        )

    # ------------------------------------------------------------------ customers
    @property
    def pumps(self) -> tuple[SimFp, ...]:
        return tuple(self.fps)

    def pump(self, address: int) -> SimFp:
        """The FP at a station address (`SimFp.address`)."""
        found = next((f for f in self.fps if f.address == address), None)
        if found is None:
            raise KeyError(f"no simulated FP at address {address:#x}")
        return found

    def set_random(
        self,
        on: bool,
        *,
        mean_interval_s: float = 20.0,
        seed: int | None = None,
        fps: Collection[SimFp] | None = None,
    ) -> None:
        """Random customers at every node (with `fps`: at those FPs only), or none (those
        at a pump walk away)."""
        if on:
            now = self.clock()
            for index, node in enumerate(self.nodes):
                allowed = None if fps is None else {f.fp for f in fps if f.node is node}
                if node.lna not in self.random and allowed != set():
                    self.random[node.lna] = RandomCustomers(
                        node.model,
                        now,
                        mean_interval_s=mean_interval_s,
                        seed=None if seed is None else seed + index,
                        fps=allowed,
                    )
            return
        crowds, self.random = self.random, {}
        now = self.clock()
        for lna, crowd in crowds.items():
            node = next(n for n in self.nodes if n.lna == lna)
            for fp in crowd.at:
                point = node.model.fps[fp]
                with contextlib.suppress(DispenserError):
                    said = node.model.let_go(fp, now)
                    if point.nozzle_out is not None:
                        said += node.model.hang_up(fp, now)
                    # The CD is told on the next tick (the sale ended: it reads it).
                    self._outbox.setdefault(node.lna, []).extend(said)

    def play(self, fp: SimFp, steps: Sequence[Any]) -> Customer:
        """A scripted customer (dispenser.py's steps) at `fp`, advanced by the ticker."""
        customer = Customer(fp.node.model, fp.fp, list(steps), self.clock())
        self.customers[fp.number] = customer
        return customer


# ======================================================================================
# The control language
# ======================================================================================
@dataclass(frozen=True, slots=True)
class Drop:
    pump: PumpRef


@dataclass(frozen=True, slots=True)
class Garbage:
    pump: PumpRef
    count: int = 1


IFSF_WAIT_STATES: Final[tuple[str, ...]] = (
    "inoperative",
    "closed",
    "idle",
    "calling",
    "authorised",
    "started",
    "suspended-started",
    "fuelling",
    "suspended-fuelling",
    "payable",
    "paid",
    "nozzle-out",
    "offline",
)
# The DART names `wait` also takes, as the IFSF states they mean.
_DART_WAITS: Final[dict[str, str]] = {
    "reset": "idle",
    "authorized": "authorised",
    "filling": "fuelling",
    "suspended": "suspended-fuelling",
    "completed": "payable",
    "max-reached": "payable",
    "switched-off": "closed",
}


@dataclass(frozen=True, slots=True)
class WaitForState:
    pump: PumpRef
    state: str
    timeout_s: Decimal | None = None


IfsfCommand = Command | Drop | Garbage | WaitForState
IFSF_USAGE: Final = (
    *(u for u in USAGE if not u.startswith("wait PUMP")),
    f"wait PUMP {'|'.join(IFSF_WAIT_STATES)} [timeout S]",
    "drop PUMP",
    "garbage PUMP [COUNT]",
)
_C = TypeVar("_C", bound=Command)
_BLANKS = re.compile(r"[ \t\r\n\f\v]+", re.ASCII)


def parse_command(text: str) -> IfsfCommand | None:
    """One line of the IFSF simulator's control language: the DART simulator's (its parser
    does the work), plus `drop`, `garbage` and the IFSF states of `wait`. Raises only
    CommandSyntaxError."""
    if len(text) > dart_commands.MAX_LINE:
        return dart_commands.parse_command(text)  # refused as too long
    words = [w for w in _BLANKS.split(text.split("#", 1)[0]) if w]
    verb = words[0].lower() if words else ""
    if verb == "drop":
        return Drop(_borrowed(f"accept {' '.join(words[1:])}", Accept, "drop PUMP").pump)
    if verb == "garbage":
        refuse = _borrowed(f"refuse {' '.join(words[1:])}", Refuse, "garbage PUMP [COUNT]")
        return Garbage(refuse.pump, refuse.count or 1)
    if verb == "wait" and len(words) in (3, 5):
        state = _DART_WAITS.get(words[2].lower(), words[2].lower())
        if state in IFSF_WAIT_STATES:
            words[2] = "idle"  # a state the DART parser knows; the rest it checks
            parsed = _borrowed(" ".join(words), WaitFor, IFSF_USAGE[-3])
            return WaitForState(parsed.pump, state, parsed.timeout_s)
        raise CommandSyntaxError(
            "syntax", f"unknown state {words[2][:32]!r}; one of {', '.join(IFSF_WAIT_STATES)}"
        )
    return dart_commands.parse_command(text)


def _borrowed(line: str, kind: type[_C], usage: str) -> _C:
    try:
        parsed = dart_commands.parse_command(line)
    except CommandSyntaxError as exc:
        if exc.code == "syntax":
            raise CommandSyntaxError("syntax", f"usage: {usage}") from None
        raise
    assert isinstance(parsed, kind)
    return parsed


def _state_name(state: FpState) -> str:
    return state.name.lower().replace("_", "-")


class IfsfController:
    """Carries out control commands on a running IfsfSimulator, one reply line each."""

    def __init__(
        self, sim: IfsfSimulator, *, mean_interval_s: float = 20.0, seed: int | None = None
    ) -> None:
        self.sim = sim
        self.mean_interval_s = mean_interval_s
        self.seed = seed
        self.rng = random.Random(seed)
        self._fills: dict[int, set[asyncio.Task[str]]] = {fp.number: set() for fp in sim.fps}
        self._back: dict[int, asyncio.TimerHandle] = {}

    async def handle(self, text: str) -> Reply | None:
        try:
            command = parse_command(text)
            if command is None:
                return None
            done = await self.execute(command)
        except ControlError as exc:
            return Reply(exc.reply(), ok=False)
        return Reply(f"ok {done}", ok=True, quit=isinstance(command, Quit))

    def close(self) -> None:
        for handle in self._back.values():
            handle.cancel()
        self._back.clear()
        for tasks in self._fills.values():
            for task in tasks:
                task.cancel()

    async def execute(self, command: IfsfCommand) -> str:
        match command:
            case Lift(pump=pump, nozzle=nozzle):
                fp = self._fp(pump)
                await self._act(fp, lambda now: fp.node.model.lift(fp.fp, nozzle, now))
                return f"pump={fp.number} nozzle={nozzle} lifted {self._figures(fp)}"
            case Fill():
                return await self._fill(command)
            case HangUp(pump=pump):
                fp = self._fp(pump)
                if fp.point.nozzle_out is None:
                    raise ControlError("wrong_state", f"pump {fp.number}: no nozzle is out")
                await self._act(fp, lambda now: fp.node.model.hang_up(fp.fp, now))
                return f"pump={fp.number} hung-up {self._figures(fp)}"
            case WalkAway(pump=pump):
                fp = self._fp(pump)
                for task in list(self._fills[fp.number]):
                    task.cancel()
                self.sim.customers.pop(fp.number, None)
                was_out = fp.point.nozzle_out is not None
                await self._act(fp, lambda now: self._leave(fp, now))
                left = "walked-away" if was_out else "nobody-there"
                return f"pump={fp.number} {left} {self._figures(fp)}"
            case Refuse(pump=pump, count=count):
                fp = self._fp(pump)
                fp.node.model.refuse(count or _FOREVER)
                return f"pump={fp.number} node={fp.node.lna} refusing={count or 'all'}"
            case Accept(pump=pump):
                fp = self._fp(pump)
                fp.node.model.refuse(0)
                return f"pump={fp.number} node={fp.node.lna} refusing=0"
            case Silent(pump=pump, seconds=seconds):
                return self._silent(self._fp(pump), seconds)
            case Answer(pump=pump):
                fp = self._fp(pump)
                self._answer(fp)
                return f"pump={fp.number} node={fp.node.lna} online=yes"
            case Sleep(seconds=seconds):
                await asyncio.sleep(float(seconds))
                return f"waited={seconds}"
            case WaitFor(pump=pump, state=state, timeout_s=timeout_s):
                mapped = _DART_WAITS.get(state, state)
                return await self._wait(WaitForState(pump, mapped, timeout_s))
            case WaitForState():
                return await self._wait(command)
            case Status(pump=pump):
                return "; ".join(self._status(fp) for fp in self._chosen(pump))
            case Price(pump=pump):
                return "; ".join(self._prices(fp) for fp in self._chosen(pump))
            case PowerCycle(pump=pump, seconds=seconds):
                fp = self._fp(pump)
                off_s = float(seconds or 0)
                await fp.node.power_cycle(off_s)
                return f"pump={fp.number} node={fp.node.lna} power-cycled off={off_s:g}s"
            case Customers(mode=mode):
                self.sim.set_random(
                    mode == "random", mean_interval_s=self.mean_interval_s, seed=self.seed
                )
                return f"customers={'random' if self.sim.random else 'none'}"
            case Drop(pump=pump):
                fp = self._fp(pump)
                await fp.node.drop_links()
                return f"pump={fp.number} node={fp.node.lna} links-dropped={fp.node.links_dropped}"
            case Garbage(pump=pump, count=count):
                fp = self._fp(pump)
                sent = await fp.node.garbage(count, self.rng)
                if not sent:
                    raise ControlError("unavailable", f"pump {fp.number}: no link to a CD")
                return f"pump={fp.number} node={fp.node.lna} garbage={count} cds={sent}"
            case Help():
                return "commands: " + " | ".join(IFSF_USAGE)
        return "bye"  # Quit: the session ends it

    # ------------------------------------------------------------------ commands
    async def _act(self, fp: SimFp, action: Callable[[float], list[codec.Message]]) -> None:
        try:
            out = action(self.sim.clock())
        except CustomerError as exc:
            raise ControlError("wrong_state", f"pump {fp.number}: {exc}") from None
        await fp.node.send(out)
        self.sim._notify()

    def _leave(self, fp: SimFp, now: float) -> list[codec.Message]:
        model = fp.node.model
        out = model.let_go(fp.fp, now)
        if fp.point.nozzle_out is not None:
            out += model.hang_up(fp.fp, now)
        return out

    async def _fill(self, command: Fill) -> str:
        fp = self._fp(command.pump)
        point = fp.point
        if point.nozzle_out is None:
            raise ControlError(
                "wrong_state", f"pump {fp.number}: no nozzle is out (lift one first)"
            )
        if point.flow is not None:
            raise ControlError("wrong_state", f"pump {fp.number} is being filled already")
        task = asyncio.get_running_loop().create_task(self._filling(fp, command))
        fills = self._fills[fp.number]
        fills.add(task)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                raise ControlError(
                    "walked_away", f"pump {fp.number}: the customer walked away"
                ) from None
            task.cancel()
            raise
        finally:
            fills.discard(task)

    async def _filling(self, fp: SimFp, command: Fill) -> str:
        point, model = fp.point, fp.node.model
        wait_s = float(command.wait_s) if command.wait_s is not None else DEFAULT_AUTHORIZE_WAIT_S
        released = await self.sim.wait_until(
            lambda: point.nozzle_out is None or (point.engaged and point.state in _FILLING), wait_s
        )
        if point.nozzle_out is None:
            raise ControlError("wrong_state", f"pump {fp.number}: the nozzle was hung up")
        if not released:
            raise ControlError(
                "not_authorized",
                f"pump {fp.number} was not authorised within {wait_s:g} s "
                f"(state {_state_name(point.state)})",
            )
        rate = None if command.rate_l_per_min is None else command.rate_l_per_min / 60
        await self._act(
            fp,
            lambda now: model.squeeze(
                fp.fp, now, rate_lps=rate, stop_volume=command.volume, stop_amount=command.amount
            ),
        )
        timeout_s = (
            float(command.timeout_s) if command.timeout_s is not None else DEFAULT_FILL_TIMEOUT_S
        )
        ended = await self.sim.wait_until(
            lambda: point.flow is None or point.state not in _FILLING, timeout_s
        )
        await self._act(fp, lambda now: model.let_go(fp.fp, now))
        if not ended:
            raise ControlError(
                "timeout",
                f"pump {fp.number}: still filling after {timeout_s:g} s ({self._figures(fp)}); "
                "the trigger is let go",
            )
        return f"pump={fp.number} filled {self._figures(fp)}"

    def _silent(self, fp: SimFp, seconds: Decimal | None) -> str:
        self._cancel_back(fp)
        fp.node.silent = True
        if seconds is None:
            return f"pump={fp.number} node={fp.node.lna} silent=until-answer"
        self._back[fp.number] = asyncio.get_running_loop().call_later(
            float(seconds), self._answer, fp
        )
        return f"pump={fp.number} node={fp.node.lna} silent={seconds}s"

    def _answer(self, fp: SimFp) -> None:
        self._cancel_back(fp)
        fp.node.silent = False
        fp.node.heartbeat()

    def _cancel_back(self, fp: SimFp) -> None:
        handle = self._back.pop(fp.number, None)
        if handle is not None:
            handle.cancel()

    async def _wait(self, command: WaitForState) -> str:
        fp = self._fp(command.pump)
        timeout_s = (
            float(command.timeout_s) if command.timeout_s is not None else DEFAULT_STATE_TIMEOUT_S
        )
        reached = _state_test(fp, command.state)
        if not await self.sim.wait_until(reached, timeout_s):
            raise ControlError(
                "timeout",
                f"pump {fp.number} not {command.state} within {timeout_s:g} s "
                f"(state {_state_name(fp.point.state)})",
            )
        return f"pump={fp.number} {command.state} state={_state_name(fp.point.state)}"

    # ------------------------------------------------------------------ reports
    def _figures(self, fp: SimFp) -> str:
        point = fp.point
        return f"state={_state_name(point.state)} volume={point.volume} amount={point.amount}"

    def _status(self, fp: SimFp) -> str:
        point, node = fp.point, fp.node
        out = point.nozzle_out
        totals = ",".join(
            f"{n}:{z.volume_total}:{z.amount_total}" for n, z in sorted(point.nozzles.items())
        )
        unpaid = ",".join(f"{t.seq}:{t.state.name.lower()}" for t in point.unpaid()) or "none"
        return (
            f"pump={fp.number} node={node.lna} fp={fp.fp} tcp={node.tcp_port} "
            f"{self._figures(fp)} nozzle-out={out if out is not None else 'no'} "
            f"unpaid={unpaid} online={'no' if node.silent else 'yes'} "
            f"refusing={_shown_count(node.model.refusing)} "
            f"cds={','.join(map(str, node.model.recipients)) or 'none'} totals={totals}"
        )

    def _prices(self, fp: SimFp) -> str:
        point, model = fp.point, fp.node.model
        prices = ",".join(
            f"{n}:{model.price(z.product, point.fuelling_mode)}"
            for n, z in sorted(point.nozzles.items())
        )
        return f"pump={fp.number} prices={prices}"

    # ------------------------------------------------------------------ lookups
    def _fp(self, ref: PumpRef) -> SimFp:
        numbers = ", ".join(str(f.number) for f in self.sim.fps) or "none"
        if ref.number is None:
            raise ControlError(
                "unknown_pump", f"IFSF fuelling points are named by number (pumps: {numbers})"
            )
        found = next((f for f in self.sim.fps if f.number == ref.number), None)
        if found is None:
            raise ControlError("unknown_pump", f"no pump {ref.number} (pumps: {numbers})")
        return found

    def _chosen(self, ref: PumpRef | None) -> list[SimFp]:
        return list(self.sim.fps) if ref is None else [self._fp(ref)]


def _state_test(fp: SimFp, state: str) -> Callable[[], bool]:
    point = fp.point
    match state:
        case "idle":
            return lambda: point.state is FpState.IDLE and point.nozzle_out is None
        case "nozzle-out":
            return lambda: point.nozzle_out is not None
        case "offline":
            return lambda: fp.node.silent
        case "payable":
            return lambda: any(t.state.name == "PAYABLE" for t in point.unpaid())
        case "paid":  # the controller cleared every sale of the FP
            return lambda: not point.unpaid()
        case "authorised":
            return lambda: point.state in (FpState.AUTHORISED, FpState.STARTED)
    wanted = FpState[state.upper().replace("-", "_")]
    return lambda: point.state is wanted


def _shown_count(count: int) -> str:
    return "all" if count >= _FOREVER // 2 else str(count)


# ======================================================================================
# Building from a plan; what the registry offers
# ======================================================================================
def network(plan: NetworkPlan) -> IfsfSimulator:
    """The plan's nodes (not started: `start()` or `serve` starts them)."""
    dialect = DIALECTS.get(plan.profile)
    if dialect is None:
        raise ValueError(f"no IFSF profile {plan.profile!r} (profiles: {', '.join(DIALECTS)})")
    specs: list[DispenserSpec] = []
    settings: list[LinkSettings] = []
    numbers: dict[tuple[Lna, int], int] = {}
    for node in plan.nodes:
        pumps = sorted(node.pumps, key=lambda p: p.address)
        if [p.address for p in pumps] != list(range(1, len(pumps) + 1)):
            raise ValueError(f"node 1.{node.node}: its FPs are numbered 1-{len(pumps)}")
        lna = Lna(1, node.node)
        # Prod_Nb of each (FP, nozzle): as given, else one product per unit price.
        prod_nb: dict[tuple[int, int], int] = {}
        prices: dict[int, Decimal] = {}  # Prod_Nb: its price
        by_price: dict[Decimal, int] = {}
        for pump in pumps:
            for nozzle, price in sorted(pump.prices.items()):
                number = node.products.get((pump.address, nozzle))
                if number is None:
                    number = by_price.get(price)
                if number is None:
                    number = max([*node.products.values(), *prices, 0]) + 1
                    by_price[price] = number
                prod_nb[(pump.address, nozzle)] = number
                prices.setdefault(number, price)
        numbers_of = sorted(prices)
        product_specs = tuple(
            ProductSpec(number, f"product {number}", {1: prices[number]}) for number in numbers_of
        )
        fps = tuple(
            FpSpec(
                tuple(
                    NozzleSpec(
                        numbers_of.index(prod_nb[(pump.address, n)]) + 1,
                        *pump.totals.get(n, (Decimal("0.00"), Decimal("0.00"))),
                    )
                    for n in sorted(pump.prices)
                )
            )
            for pump in pumps
        )
        first = pumps[0]
        specs.append(
            DispenserSpec(
                lna,
                fps,
                product_specs,
                dialect=dialect,
                volume_decimals=first.volume_decimals,
                amount_decimals=first.amount_decimals,
                heartbeat_interval=max(1, min(255, round(plan.heartbeat_interval_s))),
            )
        )
        settings.append(
            LinkSettings(
                lnas=(lna,),
                tcp_host=plan.host,
                tcp_port=node.tcp_port,
                advertise_ip=plan.host if plan.host not in ("0.0.0.0", "") else None,
                heartbeat_host="0.0.0.0",
                heartbeat_port=plan.heartbeat_port,
                heartbeat_destinations=tuple(plan.heartbeat_destinations),
                heartbeat_interval_s=plan.heartbeat_interval_s,
                send_heartbeat=False,
            )
        )
        for pump in pumps:
            numbers[(lna, pump.address)] = pump.number
    return IfsfSimulator(
        specs,
        settings,
        name=plan.name,
        heartbeat_interval_s=plan.heartbeat_interval_s,
        numbers=numbers,
    )


def _no_pty(plan: LinePlan) -> Any:
    raise ValueError(f"line {plan.name}: IFSF dispensers are on IP, not on a serial line")


async def random_customers(
    sim: IfsfSimulator, pumps: Sequence[SimFp] | None, mean_s: float, seed: int | None
) -> None:
    """Random customers at the simulator's FPs (all when `pumps` is None) until cancelled;
    each node has its own, arriving every `mean_s` on average."""
    sim.set_random(True, mean_interval_s=mean_s, seed=seed, fps=pumps)
    try:
        await asyncio.Event().wait()
    finally:
        sim.set_random(False)


async def paying_customer(fp: SimFp, nozzle: int, rng: random.Random) -> None:
    """The customer who paid in the app: walks to the released FP and fuels to its preset."""
    await asyncio.sleep(rng.uniform(1.0, 3.0))
    if fp.point.state is FpState.AUTHORISED and fp.point.nozzle_out is None:
        customer = fp.sim.play(fp, normal_fill(nozzle, wait_s=10.0))
        await fp.sim.wait_until(lambda: customer.done, 900.0)


async def serve(
    sims: Sequence[IfsfSimulator],
    plan: ServePlan,
    stop: asyncio.Event,
    emit: Callable[[str], None],
    warn: Callable[[str], None],
) -> int:
    """Run the simulators until `stop`: customers, the control socket, a script or the
    console (the first simulator's; `edgectl simulate ifsf` makes one)."""
    if len(sims) != 1:
        raise ValueError("serve runs one IFSF simulator")
    sim = sims[0]
    if not sim.running:
        await sim.start()
    controller = IfsfController(sim, mean_interval_s=plan.mean_interval_s, seed=plan.seed)
    socket = ControlSocket(controller, plan.control_socket) if plan.control_socket else None
    status = 0
    try:
        if socket is not None:
            await socket.start()
            emit(f"control socket: {socket.path}")
        if plan.customers == "random":
            sim.set_random(True, mean_interval_s=plan.mean_interval_s, seed=plan.seed)
        emit("simulating; Ctrl-C to stop")
        session: asyncio.Task[int] | None = None
        if plan.script is not None or plan.script_from_stdin or plan.console:
            session = asyncio.get_running_loop().create_task(
                run_session(controller, plan, stop, emit, warn, command="simulate ifsf"),
                name="ifsf-control-session",
            )
        await stop.wait()
        if session is not None:
            if not session.done():
                session.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                status = await session
    finally:
        if socket is not None:
            await socket.close()
        controller.close()
        sim.set_random(False)
        await sim.stop()
    return status


def simulation() -> DispenserSimulation:
    return DispenserSimulation(
        line=_no_pty,
        random_customers=random_customers,
        paying_customer=paying_customer,
        serve=serve,
        network=network,
    )
