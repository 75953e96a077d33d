"""The controller's start-up sequence with one dispenser node, as a coroutine over the node API.

The order is the one the sources show (ifsf-over-ip.md §8: LON IFSFNodeStage, the SINOPEC
header comment, TAG, ZHANG, ZSY), adapted so that it can run again against a dispenser that is
already open (the controller restarted, the dispenser did not):

1. register as a recipient of unsolicited data (COM_SV Add_Recipient_Addr, as the profile
   writes it), and write Heartbeat_Interval if the profile does;
2. read the calculator (Nb_Products, Nb_Fuelling_Modes, Nb_FP);
3. read every FP's state;
4. configure what the profile says the controller owns: the calculator, products, prices per
   fuelling mode, the nozzles' products and the FP settings (configuration is writable only
   while an FP is Inoperative or Closed: a refusal of an open FP is a warning, not a failure);
5. Open_FP for every Closed FP;
6. read every FP's state again;
7. read every Payable or Locked transaction of each FP (TR wildcard FP+20+0000), and the
   offline sales (C8h on `20 21 0000`) where the profile has them.

A refusal of a step the dispenser may legitimately not support (a configuration item, the
recipient registration, the offline read) is collected in `warnings`; a timeout, a lost link or
an unreadable answer ends the sequence with that typed error, for the driver to retry it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from drivers.ifsf import databases as db
from drivers.ifsf.encodings import Lna
from drivers.ifsf.links import IfsfNode
from drivers.ifsf.node import Refused
from drivers.ifsf.profiles import Configure, Profile, RecipientForm

FP_STATE = 0x14
CLOSED = 2
INOPERATIVE = 1
OPEN_FP = 0x3C
PAYABLE, LOCKED = 2, 3
ADD_RECIPIENT = 0x0B
HEARTBEAT_INTERVAL = 0x04
CALCULATOR_IDS = (0x02, 0x03, 0x05)  # Nb_Products, Nb_Fuelling_Modes, Nb_FP
# TR_Seq_Nb, TR_Contr_Id, TR_Amount, TR_Volume, TR_Unit_Price, TR_Log_Noz, TR_Prod_Nb,
# Trans_State: enough to record the sale and to know it again.
TRANSACTION_IDS = (0x01, 0x02, 0x05, 0x06, 0x07, 0x08, 0x0A, 0x15)
MAX_FPS = 4


@dataclass(frozen=True, slots=True)
class ProductSetup:
    """A product of the dispenser: PR_ID 1-8, its Prod_Nb, its price per fuelling mode."""

    pr: int
    prod_nb: int
    prices: Mapping[int, Decimal] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NozzleSetup:
    """A logical nozzle's product (PR_ID), and its meter and physical nozzle if given."""

    fp: int
    nozzle: int
    pr: int
    meter: int | None = None
    physical: int | None = None


@dataclass(frozen=True, slots=True)
class StartupPlan:
    """What the station wants of this dispenser node. `fps` empty: as many as it says
    (Nb_FP). `calculator` and `fp_settings` are written as typed values by data id."""

    fps: tuple[int, ...] = ()
    products: tuple[ProductSetup, ...] = ()
    nozzles: tuple[NozzleSetup, ...] = ()
    calculator: Mapping[int, Any] = field(default_factory=dict)
    fp_settings: Mapping[int, Any] = field(default_factory=dict)
    heartbeat_interval_s: int | None = None
    transaction_ids: tuple[int, ...] = TRANSACTION_IDS


@dataclass(frozen=True, slots=True)
class StoredSale:
    """A Payable or Locked transaction in an FP's buffer, as read back."""

    fp: int
    seq: int
    state: int
    amount: Decimal | None
    volume: Decimal | None
    unit_price: Decimal | None
    nozzle: int | None
    prod_nb: int | None
    controller: Lna | None
    values: Mapping[int, Any]


@dataclass(frozen=True, slots=True)
class StartupResult:
    peer: Lna
    calculator: Mapping[int, Any]
    fp_states: Mapping[int, int]
    opened: tuple[int, ...]
    sales: tuple[StoredSale, ...]
    offline: tuple[Mapping[int, Any], ...]
    warnings: tuple[str, ...]


def _sale(fp: int, address: db.Address, values: Mapping[int, Any]) -> StoredSale:
    seq = values.get(0x01)
    if seq is None and isinstance(address, db.TransactionBuffer):
        seq = address.seq
    return StoredSale(
        fp=fp,
        seq=int(seq or 0),
        state=int(values.get(0x15, 0)),
        amount=values.get(0x05),
        volume=values.get(0x06),
        unit_price=values.get(0x07),
        nozzle=values.get(0x08),
        prod_nb=values.get(0x0A),
        controller=values.get(0x02),
        values=dict(values),
    )


class _Sequence:
    def __init__(self, node: IfsfNode, peer: Lna, profile: Profile, plan: StartupPlan) -> None:
        self.node, self.peer, self.profile, self.plan = node, peer, profile, plan
        self.warnings: list[str] = []

    async def tolerate(self, what: str, address: db.Address, items: Mapping[int, Any]) -> bool:
        """A write whose refusal is a warning; whether it was accepted."""
        if not items:
            return True
        try:
            await self.node.write(self.peer, address, items)
        except Refused as refused:
            self.warnings.append(f"{what}: {refused}")
            return False
        return True

    async def register(self) -> None:
        if self.profile.recipient_form is RecipientForm.HEARTBEAT:
            recipient: Any = self.node.heartbeats()[0]
        else:
            recipient = self.node.heartbeats()[0].lna
        mc = self.profile.com_sv_mc
        try:
            await self.node.write(self.peer, db.COM_SV, {ADD_RECIPIENT: recipient}, mc=mc)
            if self.profile.write_heartbeat_interval and self.plan.heartbeat_interval_s:
                interval = {HEARTBEAT_INTERVAL: self.plan.heartbeat_interval_s}
                await self.node.write(self.peer, db.COM_SV, interval, mc=mc)
        except Refused as refused:
            self.warnings.append(
                f"recipient registration (unsolicited data may not come): {refused}"
            )

    async def fp_states(self, fps: Iterable[int]) -> dict[int, int]:
        states = {}
        for fp in fps:
            reply = await self.node.read(self.peer, db.FuellingPoint(fp), [FP_STATE])
            states[fp] = int(reply.values()[FP_STATE])
        return states

    async def configure(self, states: Mapping[int, int]) -> None:
        how = self.profile.configure
        plan = self.plan
        if how is Configure.NOTHING:
            return
        if how is Configure.FULL:
            await self.tolerate("calculator configuration", db.C_DAT, plan.calculator)
        if how in (Configure.PRODUCTS, Configure.FULL):
            for product in plan.products:
                await self.tolerate(
                    f"product {product.pr}", db.Product(product.pr), {0x02: product.prod_nb}
                )
        for product in plan.products:
            for mode, price in sorted(product.prices.items()):
                await self.tolerate(
                    f"price of {product.prod_nb:08d} mode {mode}",
                    db.ProductPerMode(product.prod_nb, mode),
                    {0x02: price},
                )
        if how is not Configure.FULL:
            return
        for nozzle in plan.nozzles:
            items: dict[int, Any] = {0x01: nozzle.pr}
            if nozzle.meter is not None:
                items[0x07] = nozzle.meter
            if nozzle.physical is not None:
                items[0x05] = nozzle.physical
            await self.tolerate(
                f"FP {nozzle.fp} nozzle {nozzle.nozzle}",
                db.LogicalNozzle(nozzle.fp, nozzle.nozzle),
                items,
            )
        for fp in states:
            await self.tolerate(f"FP {fp} settings", db.FuellingPoint(fp), plan.fp_settings)

    async def open(self, states: Mapping[int, int]) -> tuple[int, ...]:
        opened = []
        for fp, state in sorted(states.items()):
            if state == INOPERATIVE:
                self.warnings.append(f"FP {fp} is Inoperative: not opened")
            if state != CLOSED:
                continue
            try:
                await self.node.command(self.peer, db.FuellingPoint(fp), OPEN_FP)
            except Refused as refused:
                self.warnings.append(f"Open_FP of FP {fp}: {refused}")
            else:
                opened.append(fp)
        return tuple(opened)

    async def sales(self, fps: Iterable[int]) -> list[StoredSale]:
        found = []
        for fp in fps:
            every = db.TransactionBuffer(fp, 0, every=True)
            reply = await self.node.read(self.peer, every, self.plan.transaction_ids)
            for address, values in reply.records():
                sale = _sale(fp, address, values)
                if sale.state in (PAYABLE, LOCKED):
                    found.append(sale)
        return found

    async def offline(self) -> list[Mapping[int, Any]]:
        if not self.profile.offline_sales:
            return []
        every = db.TransactionBuffer(0, 0)  # 20 21 0000 (SINOPEC; ZSY answers 21 20 0000)
        try:
            reply = await self.node.read(self.peer, every, [self.profile.offline_sale_ids[0]])
        except Refused as refused:
            self.warnings.append(f"offline sales read: {refused}")
            return []
        return [values for _, values in reply.records()]


async def start_up(node: IfsfNode, peer: Lna, profile: Profile, plan: StartupPlan) -> StartupResult:
    """Run the sequence against the dispenser node `peer`; see the module's docstring."""
    steps = _Sequence(node, peer, profile, plan)
    await steps.register()
    calculator = (await node.read(peer, db.C_DAT, CALCULATOR_IDS)).values()
    fps = plan.fps or tuple(range(1, min(int(calculator.get(0x05, 1)), MAX_FPS) + 1))
    states = await steps.fp_states(fps)
    await steps.configure(states)
    opened = await steps.open(states)
    states = await steps.fp_states(fps)
    sales = await steps.sales(fps)
    offline = await steps.offline()
    return StartupResult(
        peer=peer,
        calculator=calculator,
        fp_states=states,
        opened=opened,
        sales=tuple(sales),
        offline=tuple(offline),
        warnings=tuple(steps.warnings),
    )
