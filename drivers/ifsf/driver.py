"""IFSF dispensers as a station's dispenser line: the DispenserLine interface over the node.

`IfsfLine` runs one controller node (links.IfsfNode) for the dispensers of one config line and
presents each configured fuelling point as a pump of the line, with the same methods and
events as Wayne DART (drivers/base.py), so the station cannot tell them apart. What the
dispenser says about an FP goes through its `FuellingPointView` (fuelling.py), which decides
what the station hears; this module only asks and commands:

* the link to a dispenser node opens: the node layer's start-up (startup.py: register as a
  recipient of unsolicited data, configure what the profile says, open the Closed FPs, read
  every uncleared transaction), each FP read, the offline sales of the Chinese profiles, then
  PumpOnline and the FP's status;
* `filling_info` Locks and reads the oldest uncleared transaction, `totals` reads the
  nozzle's totals and gives them as of that transaction, `reset` Clears it (after the station
  committed the sale); the next one is reported FILLING_COMPLETED in turn;
* `authorize` is one write: preset (1Bh amount or 1Ch volume), Log_Noz_Mask, Release_Contr_Id
  = our LNA, Release_FP; `stop` is Terminate_FP, `suspend`/`resume` Suspend_FP/Resume_FP;
  `set_prices` writes Prod_Price per product and reads it back as the confirmation;
* a refusal is a CommandRejected whose `code` says why (fuelling.refusal) and whose text is a
  technician's reason; a link that drops marks its pumps offline, and they are learned again
  when it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import structlog

from drivers.base import (
    NO_ANSWER,
    UNREACHABLE,
    WRONG_ADDRESS,
    CommandRejected,
    DeviceFault,
    DeviceTimeout,
    DispenserEvent,
    DispenserStatus,
    DriverError,
    FillingInfo,
    LinkHealth,
    Progress,
    PumpOffline,
    PumpOnline,
    TransportError,
)
from drivers.ifsf import databases as db
from drivers.ifsf import fuelling as f
from drivers.ifsf.codec import Ack, DataItem, Message
from drivers.ifsf.encodings import Lna
from drivers.ifsf.fuelling import FuellingPointView, MissingDetails
from drivers.ifsf.links import (
    IfsfNode,
    LinkDown,
    LinkEvent,
    LinkSettings,
    LinkUp,
    PeerMisplaced,
)
from drivers.ifsf.node import PeerHeard, PeerLost, PeerMoved, ReadReply, Refused
from drivers.ifsf.profiles import GENERIC, Profile
from drivers.ifsf.startup import StartupPlan, start_up

log = structlog.get_logger(__name__)

TERMINATE_FP, SUSPEND_FP, RESUME_FP, RELEASE_FP = 0x3F, 0x40, 0x41, 0x3E
REMOTE_AMOUNT_PREPAY, REMOTE_VOLUME_PRESET = 0x1B, 0x1C
LOG_NOZ_MASK, RELEASE_CONTR_ID = 0x19, 0x1E
PROD_PRICE = 0x02
FP_READ_IDS = (
    f.FP_NB_TRAN_BUFFER_NOT_PAID,
    f.FP_STATE,
    f.FP_LOG_NOZ_STATE,
    f.FP_CURRENT_AMOUNT,
    f.FP_CURRENT_VOLUME,
    f.FP_CURRENT_UNIT_PRICE,
    f.FP_CURRENT_LOG_NOZ,
)
# How often totals are read again when a sale is stored while they are read.
_TOTALS_TRIES = 3
NO_LNA = Lna(0, 0)

EventSink = Callable[[DispenserEvent], None]
HealthListener = Callable[[LinkHealth], None]


# ---------------------------------------------------------------------------------------
# Configuration (built by the registry's factory from the station's config)
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class IfsfNozzle:
    """One of the station's nozzles: the FP's logical nozzle (1-8) and its product's Prod_Nb
    (what a price is written to)."""

    nozzle: int
    logical: int
    product: int


@dataclass(frozen=True, slots=True)
class IfsfPump:
    """One of the station's pumps: a fuelling point (1-4) of the dispenser node `node`."""

    address: int
    node: Lna
    fp: int
    nozzles: tuple[IfsfNozzle, ...]

    def __post_init__(self) -> None:
        if not 1 <= self.fp <= 4:
            raise ValueError(f"pump {self.address}: FP {self.fp} is outside 1-4")
        if not self.nozzles:
            raise ValueError(f"pump {self.address} has no nozzle")


@dataclass(frozen=True, slots=True)
class IfsfLineSettings:
    """One line of IFSF dispensers. `link` is the controller node's (ports, heartbeat, our
    LNA first); `profile` the dialect (profiles.py: how to register, what to configure,
    offline sales); `plans` what the start-up configures on each dispenser node (products,
    prices, nozzles; by default nothing but opening its FPs); `fuelling_mode` the mode whose
    prices `set_prices` writes."""

    name: str
    link: LinkSettings = field(default_factory=LinkSettings)
    profile: Profile = GENERIC
    plans: Mapping[Lna, StartupPlan] = field(default_factory=dict)
    fuelling_mode: int = 1
    retry_s: float = 1.0  # a failed start-up or buffer read is tried again after this
    # An FP released or in a sale that said nothing for this long is read again.
    quiet_s: float = 5.0

    @property
    def controller(self) -> Lna:
        return self.link.lnas[0]


@dataclass
class _Pump:
    spec: IfsfPump
    view: FuellingPointView
    online: bool = False
    learned: bool = False
    refreshing: bool = False
    fault: DeviceFault | None = None
    reported: DeviceFault | bool | None = False  # False: nothing said yet
    heard_at: float = 0.0  # the line's clock when the FP last said something


class IfsfLine:
    """A line of IFSF dispensers: the DispenserLine interface (drivers/base.py)."""

    def __init__(
        self,
        settings: IfsfLineSettings,
        pumps: Sequence[IfsfPump],
        emit: EventSink,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._emit = emit
        self._clock = clock
        self._pumps: dict[int, _Pump] = {}
        self._by_fp: dict[tuple[Lna, int], int] = {}
        for spec in pumps:
            if spec.address in self._pumps:
                raise ValueError(f"pump address {spec.address} is configured twice")
            if (spec.node, spec.fp) in self._by_fp:
                raise ValueError(f"FP {spec.fp} of node {spec.node} is two pumps")
            view = FuellingPointView(
                settings.name,
                spec.address,
                spec.fp,
                {n.nozzle: n.logical for n in spec.nozzles},
            )
            self._pumps[spec.address] = _Pump(spec, view)
            self._by_fp[(spec.node, spec.fp)] = spec.address
        self.node = IfsfNode(
            settings.link,
            name=settings.name,
            on_report=self._on_report,
            on_event=self._on_event,
            clock=clock,
        )
        self.on_health: HealthListener = _no_health
        self.progress = Progress(clock=clock)
        self._tasks: set[asyncio.Task[None]] = set()
        self._learning: dict[Lna, asyncio.Task[None]] = {}
        # Per node, the last heartbeat heard for it from elsewhere than its configured host.
        self._misplaced: dict[Lna, PeerMisplaced] = {}

    # ------------------------------------------------------------------ what is known
    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def counters(self) -> Any:
        return self.node.counters

    def is_online(self, address: int) -> bool:
        return self._pump(address).online

    def last_status(self, address: int) -> DispenserStatus | None:
        return self._pump(address).view.status()

    def pump_fault(self, address: int) -> DeviceFault | None:
        return self._pump(address).fault

    def last_seen(self, address: int) -> float | None:
        """The clock() of the last heartbeat heard from the pump's node (None: not heard)."""
        peer = self.node.peers.get(self._pump(address).spec.node)
        return None if peer is None else peer.last_heard

    def view(self, address: int) -> FuellingPointView:
        """The controller's view of the pump's FP (for status views and tests)."""
        return self._pump(address).view

    def _pump(self, address: int) -> _Pump:
        found = self._pumps.get(address)
        if found is None:
            raise CommandRejected(
                f"no pump at address {address} on IFSF line {self.name}",
                device=self.name,
                code="unknown_pump",
            )
        return found

    def _device(self, pump: _Pump) -> str:
        return f"{self.name}/{pump.spec.node}/FP{pump.spec.fp}"

    def _nodes(self) -> set[Lna]:
        return {p.spec.node for p in self._pumps.values()}

    # ------------------------------------------------------------------ the line task
    async def run(self) -> None:
        """Run the controller node until cancelled: learn each dispenser as its link opens,
        and declare the pumps of a node never heard offline once it could have been."""
        self.progress.tick()
        try:
            await self.node.start()
        except TransportError as exc:
            self.on_health(LinkHealth(self.name, None, exc.fault))
            raise
        self.on_health(LinkHealth(self.name, None, None))
        self._spawn(self._watch_quiet(), f"{self.name}-quiet")
        try:
            link = self.settings.link
            lost_after = link.heartbeat_interval_s * link.missed_heartbeats
            self.progress.tick(lost_after)
            await asyncio.sleep(lost_after)
            for pump in self._pumps.values():
                if not pump.online and not pump.learned:
                    lna = pump.spec.node
                    unheard = f"IFSF node {lna} not heard (no heartbeat)"
                    self._offline(pump, self._unheard(lna, unheard))
            while True:
                self.progress.tick(lost_after)
                await asyncio.sleep(lost_after)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await self.node.stop()

    def _unheard(self, lna: Lna, reason: str) -> DeviceFault:
        """Why the node's pumps are offline while it is not heard: heard elsewhere than its
        configured host, or not at all."""
        misplaced = self._misplaced.get(lna)
        if misplaced is not None:
            return DeviceFault(WRONG_ADDRESS, f"IFSF {misplaced}")
        return DeviceFault(NO_ANSWER, reason)

    def _spawn(self, work: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _emit_all(self, events: Iterable[DispenserEvent]) -> None:
        for event in events:
            self._emit(event)

    # ------------------------------------------------------------------ link events
    def _on_event(self, event: LinkEvent) -> None:
        if isinstance(event, LinkUp):
            for lna in event.lnas:
                self._learn_soon(lna)
        elif isinstance(event, LinkDown):
            for lna in event.lnas:
                self._node_down(lna, DeviceFault(UNREACHABLE, f"IFSF node {lna}: {event.reason}"))
        elif isinstance(event, PeerLost):
            lna = event.peer.lna
            self._node_down(lna, self._unheard(lna, f"IFSF node {lna}: heartbeat not heard"))
        elif isinstance(event, PeerMisplaced):
            self._misplaced[event.lna] = event
            if event.lna in self._nodes() and event.lna not in self.node.peers:
                self._node_down(event.lna, self._unheard(event.lna, str(event)))
        elif isinstance(event, PeerMoved | PeerHeard):
            self._misplaced.pop(event.peer.lna, None)  # heard where it is configured
            if self.node.is_up(event.peer.lna):
                self._learn_soon(event.peer.lna)

    def _learn_soon(self, lna: Lna) -> None:
        if lna not in self._nodes():
            return
        running = self._learning.get(lna)
        if running is not None and not running.done():
            return
        self._learning[lna] = self._spawn(self._learn(lna), f"{self.name}-learn-{lna}")

    def _node_down(self, lna: Lna, fault: DeviceFault) -> None:
        running = self._learning.pop(lna, None)
        if running is not None:
            running.cancel()
        for pump in self._pumps.values():
            if pump.spec.node == lna:
                self._offline(pump, fault)

    def _offline(self, pump: _Pump, fault: DeviceFault) -> None:
        pump.view.link_lost()
        pump.learned = False
        pump.fault = fault
        if pump.online:
            pump.online = False
            log.warning(
                "ifsf_pump_offline", line=self.name, fp=self._device(pump), reason=fault.reason
            )
            self._emit(PumpOffline(self.name, pump.spec.address, fault.reason))
        self._health(pump)

    def _health(self, pump: _Pump) -> None:
        if pump.reported is not False and pump.reported == pump.fault:
            return
        pump.reported = pump.fault
        self.on_health(LinkHealth(self.name, pump.spec.address, pump.fault))

    async def _learn(self, lna: Lna) -> None:
        """The link to `lna` opened: what the dispenser holds, then PumpOnline per FP."""
        pumps = [p for p in self._pumps.values() if p.spec.node == lna]
        while True:
            try:
                await self._start_up(lna, pumps)
            except DriverError as exc:
                log.warning("ifsf_learn_failed", line=self.name, node=str(lna), error=str(exc))
                for pump in pumps:
                    pump.fault = DeviceFault(NO_ANSWER, f"IFSF node {lna}: {exc}")
                    self._health(pump)
                await asyncio.sleep(self.settings.retry_s)
                if not self.node.is_up(lna):
                    return
                continue
            break
        for pump in pumps:
            pump.learned = True
            pump.heard_at = self._clock()
            pump.fault = None
            if not pump.online:
                pump.online = True
                log.info("ifsf_pump_online", line=self.name, fp=self._device(pump))
                self._emit(PumpOnline(self.name, pump.spec.address))
            self._health(pump)
            self._emit_all(pump.view.report())

    async def _start_up(self, lna: Lna, pumps: list[_Pump]) -> None:
        """The node layer's start-up (startup.py: register, configure as the profile says,
        Open_FP, the FP states and every uncleared sale), then what the views need more:
        each FP's nozzles and running figures, and the offline sales."""
        fps = tuple(sorted(p.spec.fp for p in pumps))
        plan = self.settings.plans.get(lna) or StartupPlan()
        plan = replace(plan, fps=plan.fps or fps, transaction_ids=f.TR_READ_IDS)
        profile = self.settings.profile
        # The offline sales are read here, where their FP is known (the result keeps values).
        result = await start_up(self.node, lna, replace(profile, offline_sale_ids=()), plan)
        for warning in result.warnings:
            log.warning("ifsf_startup", line=self.name, node=str(lna), warning=warning)
        for pump in pumps:
            spec, view = pump.spec, pump.view
            reply = await self.node.read(spec.node, db.FuellingPoint(spec.fp), FP_READ_IDS)
            view.fp_values(reply.values())  # the events go out with PumpOnline
            seqs = set()
            for sale in result.sales:
                if sale.fp == spec.fp and sale.seq:
                    seqs.add(sale.seq)
                    view.transaction_values(sale.seq, sale.values, read=f.TR_LOG_NOZ in sale.values)
            view.listing(seqs)
        if profile.offline_sales:
            await self._fetch_offline(lna)

    # ------------------------------------------------------------------ unsolicited
    def _on_report(self, message: Message) -> None:
        address = message.database
        fp = getattr(address, "fp", None)
        found = self._by_fp.get((message.originator, fp)) if fp else None
        if found is None:
            return
        pump = self._pumps[found]
        pump.heard_at = self._clock()
        if not pump.learned:
            pump.view.feed(message)  # learned with the rest; told after PumpOnline
            return
        self._emit_all(pump.view.feed(message))
        self._refresh_soon(pump)

    def _refresh_soon(self, pump: _Pump) -> None:
        """A sale's end the view cannot explain yet: read the buffer (again, until it can)."""
        if pump.refreshing or not pump.view.wants_listing:
            return
        pump.refreshing = True

        async def refresh() -> None:
            try:
                while pump.learned and pump.view.wants_listing:
                    try:
                        await self._list(pump)
                    except DriverError as exc:
                        log.warning(
                            "ifsf_buffer_read_failed",
                            line=self.name,
                            pump=pump.spec.address,
                            error=str(exc),
                        )
                        await asyncio.sleep(self.settings.retry_s)
            finally:
                pump.refreshing = False

        self._spawn(refresh(), f"{self.name}-refresh-{pump.spec.address}")

    async def _watch_quiet(self) -> None:
        """Unsolicited messages can be lost while the link stays up (a dispenser mute for a
        moment drops them): an FP released or in a sale that has said nothing for
        `quiet_s` is read again, and its buffer when the view cannot explain its state."""
        quiet = self.settings.quiet_s
        while True:
            await asyncio.sleep(quiet / 2)
            now = self._clock()
            for pump in self._pumps.values():
                state = pump.view.state
                busy = state == f.AUTHORISED or state in f.IN_SALE or pump.view.wants_listing
                if pump.learned and busy and now - pump.heard_at >= quiet:
                    pump.heard_at = now
                    self._spawn(self._reread(pump), f"{self.name}-reread-{pump.spec.address}")

    async def _reread(self, pump: _Pump) -> None:
        view, spec = pump.view, pump.spec
        as_of = view.generation
        try:
            reply = await self.node.read(spec.node, db.FuellingPoint(spec.fp), FP_READ_IDS)
        except DriverError as exc:
            log.warning("ifsf_reread_failed", line=self.name, pump=spec.address, error=str(exc))
            return
        if pump.learned and view.generation == as_of:  # else newer news came meanwhile
            self._emit_all(view.fp_values(reply.values()))
            self._refresh_soon(pump)

    # ------------------------------------------------------------------ reading
    async def _list(self, pump: _Pump, *, emit: bool = True) -> set[int]:
        """Read every uncleared transaction of the FP (TR wildcard); the seqs listed."""
        spec, view = pump.spec, pump.view
        every = db.TransactionBuffer(spec.fp, 0, every=True)
        as_of = view.generation
        reply = await self.node.read(spec.node, every, f.TR_READ_IDS)
        seqs: set[int] = set()
        events: list[DispenserEvent] = []
        for address, values in _records(reply):
            seq = values.get(f.TR_SEQ_NB) or getattr(address, "seq", 0)
            if not isinstance(seq, int) or not seq:
                continue
            if values.get(f.TR_STATE) not in f.UNCLEARED:
                continue
            seqs.add(seq)
            events += view.transaction_values(seq, values, read=f.TR_LOG_NOZ in values, as_of=as_of)
        events += view.listing(seqs, as_of=as_of)
        if emit:
            self._emit_all(events)
        return seqs

    async def _read_transaction(self, pump: _Pump, seq: int) -> None:
        spec = pump.spec
        address = db.TransactionBuffer(spec.fp, seq)
        as_of = pump.view.generation
        try:
            reply = await self.node.read(spec.node, address, f.TR_READ_IDS)
        except Refused as refused:
            if refused.ms_ack == 6 or refused.data_ack(f.TR_SEQ_NB) == 4:
                # No such transaction any more: cleared meanwhile.
                pump.view.transaction_values(seq, {f.TR_STATE: f.CLEARED})
                return
            raise self._rejected(refused, f"read of transaction {seq:04d}", pump) from refused
        values = reply.values()
        if f.TR_STATE not in values:
            values[f.TR_STATE] = f.CLEARED if not values else f.PAYABLE
        pump.view.transaction_values(seq, values, read=True, as_of=as_of)

    async def _read_fp(self, pump: _Pump) -> None:
        reply = await self.node.read(pump.spec.node, db.FuellingPoint(pump.spec.fp), FP_READ_IDS)
        self._emit_all(pump.view.fp_values(reply.values()))

    def _rejected(self, refused: Refused, what: str, pump: _Pump) -> CommandRejected:
        body = refused.reply.body
        assert isinstance(body, Ack)
        error = f.refusal(
            body, what, refused.request.database, view=pump.view, device=self._device(pump)
        )
        assert error is not None  # a Refused is never a plain ACK
        log.warning(
            "ifsf_refused",
            line=self.name,
            pump=pump.spec.address,
            code=error.code,
            reason=str(error),
        )
        return error

    def _require_online(self, pump: _Pump) -> None:
        if not pump.online:
            reason = pump.fault.reason if pump.fault else "not heard yet"
            raise DeviceTimeout(
                f"pump {pump.spec.address} is offline: {reason}", device=self._device(pump)
            )

    # ------------------------------------------------------------------ DispenserLine
    async def request_status(self, address: int) -> DispenserStatus:
        pump = self._pump(address)
        self._require_online(pump)
        await self._read_fp(pump)
        if pump.view.wants_listing:
            await self._list(pump)
        return pump.view.status() or DispenserStatus.NOT_PROGRAMMED

    async def authorize(
        self,
        address: int,
        *,
        nozzles: Sequence[int] = (),
        preset_volume: Decimal | None = None,
        preset_amount: Decimal | None = None,
    ) -> None:
        """One write: the preset, the nozzles allowed, our LNA as the releaser, Release_FP."""
        pump = self._pump(address)
        self._require_online(pump)
        view = pump.view
        logical = [view.logical_nozzle(n) for n in nozzles] or sorted(view.nozzles.values())
        items: dict[int, Any] = {}
        if preset_amount is not None:
            items[REMOTE_AMOUNT_PREPAY] = preset_amount
        elif preset_volume is not None:
            items[REMOTE_VOLUME_PRESET] = preset_volume
        items[LOG_NOZ_MASK] = db.nozzle_mask(logical)
        items[RELEASE_CONTR_ID] = self.settings.controller
        spec = pump.spec
        try:
            await self.node.command(spec.node, db.FuellingPoint(spec.fp), RELEASE_FP, items=items)
        except Refused as refused:
            if refused.data_ack(RELEASE_FP) in (3, 6):
                # Perhaps the unpaid-buffer limit: the station releases only a pump with
                # nothing to record, so the sales that fill the buffer went unheard. Ask.
                with contextlib.suppress(DriverError):
                    await self._list(pump)
            raise self._rejected(refused, "authorize", pump) from refused

    async def _command(
        self, pump: _Pump, command: int, what: str, items: dict[int, Any] | None = None
    ) -> None:
        spec = pump.spec
        try:
            await self.node.command(
                spec.node, db.FuellingPoint(spec.fp), command, items=items or {}
            )
        except Refused as refused:
            raise self._rejected(refused, what, pump) from refused

    async def stop(self, address: int) -> None:
        """Terminate_FP; nothing to do for an FP with no release or sale under way."""
        pump = self._pump(address)
        self._require_online(pump)
        if pump.view.state in (f.INOPERATIVE, f.CLOSED, f.IDLE):
            return
        try:
            await self._command(pump, TERMINATE_FP, "stop")
        except CommandRejected:
            await self._read_fp(pump)
            if pump.view.state in (f.INOPERATIVE, f.CLOSED, f.IDLE):
                return  # it ended on its own meanwhile
            raise

    async def suspend(self, address: int) -> None:
        pump = self._pump(address)
        self._require_online(pump)
        await self._command(pump, SUSPEND_FP, "suspend")

    async def resume(self, address: int) -> None:
        pump = self._pump(address)
        self._require_online(pump)
        await self._command(pump, RESUME_FP, "resume")

    async def set_prices(self, address: int, prices: Sequence[Decimal]) -> None:
        """Unit prices in the pump's nozzle order, written per product (Prod_Price of the
        fuelling mode) and read back: the dispenser's own figure is the confirmation."""
        pump = self._pump(address)
        self._require_online(pump)
        nozzles = sorted(pump.spec.nozzles, key=lambda n: n.nozzle)
        if len(prices) != len(nozzles):
            raise CommandRejected(
                f"{len(prices)} price(s) for {len(nozzles)} nozzle(s)",
                device=self._device(pump),
                code="invalid_value",
            )
        by_product: dict[int, Decimal] = {}
        for nozzle, price in zip(nozzles, prices, strict=True):
            known = by_product.setdefault(nozzle.product, price)
            if known != price:
                raise CommandRejected(
                    f"product {nozzle.product:08d} given two prices ({known}, {price}):"
                    " its nozzles share one price on an IFSF dispenser",
                    device=self._device(pump),
                    code="price_conflict",
                )
        spec = pump.spec
        for product, price in by_product.items():
            where = db.ProductPerMode(product, self.settings.fuelling_mode)
            what = f"price {price} of product {product:08d}"
            try:
                await self.node.write(spec.node, where, {PROD_PRICE: price})
            except Refused as refused:
                raise self._rejected(refused, what, pump) from refused
            reply = await self.node.read(spec.node, where, [PROD_PRICE])
            shown = reply.values().get(PROD_PRICE)
            if shown != price:
                raise CommandRejected(
                    f"{what} not applied: the dispenser shows {shown}",
                    device=self._device(pump),
                    code="price_not_applied",
                )
        for nozzle, price in zip(nozzles, prices, strict=True):
            pump.view.prices[nozzle.logical] = price

    async def filling_info(self, address: int) -> FillingInfo:
        """The oldest uncleared sale, Locked and read (the station commits it, then resets);
        during a sale, the running figures; at rest with nothing stored, nothing."""
        pump = self._pump(address)
        self._require_online(pump)
        view = pump.view
        if view.state not in f.AT_REST:
            return view.running_info()
        if view.wants_listing or not view.transactions:
            await self._list(pump)
        while (tx := view.next_sale()) is not None:
            if tx.offline:
                return view.take(tx.seq, offline=True)
            if tx.state != f.LOCKED or tx.controller != self.settings.controller:
                await self._lock(pump, tx.seq)
            await self._read_transaction(pump, tx.seq)
            read = view.transactions.get(tx.seq)
            if read is None:
                continue  # cleared meanwhile
            holder = read.controller
            if read.state == f.LOCKED and holder not in (self.settings.controller, NO_LNA, None):
                # Another controller (a POS) is taking this sale's payment: not ours to record.
                raise CommandRejected(
                    f"transaction {tx.seq:04d} is locked by controller {holder}: it is being "
                    "paid there; it is recorded here only once that controller clears or "
                    "unlocks it",
                    device=self._device(pump),
                    code="already_locked",
                )
            return view.take(tx.seq)
        return FillingInfo(Decimal(0), Decimal(0))

    async def _lock(self, pump: _Pump, seq: int) -> None:
        spec = pump.spec
        address = db.TransactionBuffer(spec.fp, seq)
        try:
            await self.node.command(spec.node, address, f.TR_LOCK)
        except Refused as refused:
            # Locked already (by us, before a restart or a lost ack), or cleared meanwhile:
            # the read that follows tells. Anything else is a refusal.
            if refused.ms_ack in (9, 6) or refused.data_ack(f.TR_LOCK) in (3, 4):
                return
            raise self._rejected(refused, f"lock of transaction {seq:04d}", pump) from refused

    async def totals(self, address: int, nozzle: int) -> tuple[Decimal, Decimal]:
        """The nozzle's volume and amount totals, as of the sale in hand if there is one
        (the buffer is read before and after them: a sale stored meanwhile means again)."""
        pump = self._pump(address)
        self._require_online(pump)
        view = pump.view
        logical = view.logical_nozzle(nozzle)
        spec = pump.spec
        where = db.LogicalNozzle(spec.fp, logical)
        for _ in range(_TOTALS_TRIES):
            before = await self._list(pump) if view.in_hand is not None else set()
            reply = await self.node.read(spec.node, where, (f.LN_VOL_TOTAL, f.LN_AMOUNT_TOTAL))
            values = reply.values()
            volume, amount = values.get(f.LN_VOL_TOTAL), values.get(f.LN_AMOUNT_TOTAL)
            if not isinstance(volume, Decimal) or not isinstance(amount, Decimal):
                raise CommandRejected(
                    f"nozzle {nozzle}: the dispenser gave no totals",
                    device=self._device(pump),
                    code="no_totals",
                )
            view.nozzle_totals(logical, values)
            if view.in_hand is None:
                return volume, amount
            if (await self._list(pump)) - before:
                continue  # a sale was stored while the totals were read
            try:
                return view.totals_as_of(logical, (volume, amount))
            except MissingDetails as missing:
                for seq in missing.seqs:
                    await self._read_transaction(pump, seq)
                return view.totals_as_of(logical, (volume, amount))
        raise DeviceTimeout(
            f"nozzle {nozzle}: sales kept being stored while its totals were read",
            device=self._device(pump),
        )

    async def reset(self, address: int) -> DispenserStatus:
        """Clear the sale the station committed (Clear_Transaction). The FP's status goes
        out once this returns, so the station hears the next sale (FILLING_COMPLETED again)
        after its own reset is done."""
        pump = self._pump(address)
        self._require_online(pump)
        view = pump.view
        seq = view.in_hand
        if seq is not None and view.in_hand_offline:
            await self._remove_offline(pump, seq)
        elif seq is not None and seq in view.transactions:
            spec = pump.spec
            what = f"clear of transaction {seq:04d}"
            try:
                await self.node.command(spec.node, db.TransactionBuffer(spec.fp, seq), f.TR_CLEAR)
            except Refused as refused:
                if refused.ms_ack != 6 and refused.data_ack(f.TR_CLEAR) not in (3, 4):
                    raise self._rejected(refused, what, pump) from refused
                await self._read_transaction(pump, seq)  # cleared already, or not?
                if seq in view.transactions:
                    raise self._rejected(refused, what, pump) from refused
            view.cleared(seq)
        asyncio.get_running_loop().call_soon(self._report_later, pump)
        return view.status() or DispenserStatus.RESET

    async def _remove_offline(self, pump: _Pump, seq: int) -> None:
        spec = pump.spec
        where = db.TransactionBuffer(spec.fp, seq)
        try:
            await self.node.write(spec.node, where, [DataItem(f.TR_OFFLINE_REMOVE)])
        except Refused as refused:
            if refused.ms_ack != 6:  # 6: no such offline sale: removed already
                raise self._rejected(refused, f"removal of offline sale {seq:04d}", pump) from (
                    refused
                )
        pump.view.cleared(seq, offline=True)
        await self._fetch_offline(spec.node, told=pump)

    async def _fetch_offline(self, lna: Lna, *, told: _Pump | None = None) -> None:
        """Read the node's next offline sale (C8h on `20 21 0000`: the dispenser gives the
        first one it holds, until it is removed), for the pump of its FP. `told`'s status
        goes out after the reset that asked; any other pump's now."""
        if not self.settings.profile.offline_sales:
            return
        try:
            reply = await self.node.read(lna, db.TransactionBuffer(0, 0), [f.TR_OFFLINE_READ])
        except Refused as refused:
            log.warning(
                "ifsf_offline_read_refused", line=self.name, node=str(lna), error=str(refused)
            )
            return
        for address, values in _records(reply):
            found = self._by_fp.get((lna, getattr(address, "fp", 0)))
            seq = values.get(f.TR_SEQ_NB) or getattr(address, "seq", 0)
            if found is None or not isinstance(seq, int):
                continue
            pump = self._pumps[found]
            events = pump.view.offline_sale(seq, values)
            if pump is not told and pump.learned:
                self._emit_all(events)

    def _report_later(self, pump: _Pump) -> None:
        if pump.online:
            self._emit_all(pump.view.report())


def _records(reply: ReadReply) -> list[tuple[db.Address, dict[int, Any]]]:
    """The answers of a read, each decoded; an unreadable one is left out, not fatal."""
    out = []
    for answer in reply.answers:
        body = answer.body
        items = getattr(body, "items", ())
        out.append((answer.database, f.decode_values(answer.database, items)))
    return out


def _no_health(event: LinkHealth) -> None:
    pass
