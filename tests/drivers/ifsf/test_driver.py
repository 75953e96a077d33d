"""IfsfLine end to end on loopback: the controller node against the network simulator
(drivers/ifsf/sim.py), through the DispenserLine interface the station
uses: authorize, fill, FILLING_COMPLETED, filling_info, totals, reset clears; refusals typed;
a restart with two Payable sales; a link dropped mid-sale, a power cycle; offline sales; and
the real station over it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest
from structlog.testing import capture_logs

from drivers.base import (
    AlarmReport,
    CommandRejected,
    DispenserEvent,
    DispenserStatus,
    FillingInfo,
    FillingReport,
    LinkHealth,
    NozzleReport,
    PumpOffline,
    PumpOnline,
    StatusReport,
)
from drivers.ifsf import databases as db
from drivers.ifsf.codec import Ack, DataItem, Message, Read, Write, item
from drivers.ifsf.dispenser import (
    ACK_NOT_WRITABLE,
    ERROR_PRICE_CHANGED,
    GENERIC,
    MS_BUSY,
    Dialect,
    Dispenser,
    DispenserSpec,
    FpSpec,
    FpState,
    NozzleSpec,
    ProductSpec,
    TrState,
)
from drivers.ifsf.dispenser import PETROCHINA as PETROCHINA_DIALECT
from drivers.ifsf.dispenser import SINOPEC as SINOPEC_DIALECT
from drivers.ifsf.driver import IfsfLine, IfsfLineSettings, IfsfNozzle, IfsfPump
from drivers.ifsf.encodings import Lna
from drivers.ifsf.fuelling import TR_OFFLINE_READ, TR_OFFLINE_REMOVE
from drivers.ifsf.profiles import GENERIC as GENERIC_PROFILE
from drivers.ifsf.profiles import OFFLINE_SALE_IDS, PETROCHINA, SINOPEC, Profile
from drivers.ifsf.sim import IfsfSimulator
from edgectl.cloud.messages import ContractMessages
from edgectl.config import load_config
from edgectl.errors import CommandError, DriverIOError
from edgectl.station import OrderRequest, Station
from edgectl.store.store import Store
from tests.cloudkit import iso
from tests.drivers.ifsf.loopback import free_tcp_port, free_udp_port, loopback_settings

D = Decimal
S = DispenserStatus
CD = Lna(2, 1)
NODE = Lna(1, 3)
PUMP = 0x50  # the station's address of FP 1 (DART's range, for the config of today)


def spec(
    unpaid_limit: int = 2, dialect: Dialect = GENERIC, start_state: FpState = FpState.CLOSED
) -> DispenserSpec:
    return DispenserSpec(
        NODE,
        (
            FpSpec(
                (
                    NozzleSpec(1, D("1000.00"), D("1500.00")),
                    NozzleSpec(2, D("200.00"), D("360.00")),
                )
            ),
        ),
        (ProductSpec(95, "SP95", {1: D("1.500")}), ProductSpec(10, "Diesel", {1: D("1.800")})),
        flow_rate_lps=D("20"),
        unpaid_limit=unpaid_limit,
        dialect=dialect,
        start_state=start_state,
    )


PUMPS = (
    IfsfPump(
        PUMP,
        NODE,
        1,
        (IfsfNozzle(1, logical=1, product=95), IfsfNozzle(2, logical=2, product=10)),
    ),
)


class Sim:
    """The network simulator (drivers/ifsf/sim.py) with one node on loopback, and the
    customer's hand at its FP 1."""

    def __init__(self, model_spec: DispenserSpec, hb: int, cd_hb: int, tcp: int) -> None:
        self.hb = hb
        settings = loopback_settings([NODE], hb, cd_hb, tcp_port=tcp)
        self.simulator = IfsfSimulator(
            [model_spec], [settings], heartbeat_interval_s=0.1, tick_s=0.02
        )
        self.node = self.simulator.nodes[0]

    @property
    def model(self) -> Dispenser:
        return self.node.model

    def now(self) -> float:
        return self.node.clock()

    async def start(self) -> None:
        await self.simulator.start()

    async def stop(self) -> None:
        await self.simulator.stop()

    async def customer(self, nozzle: int, **squeeze: Decimal) -> None:
        """Lift `nozzle`, hold the trigger (until a preset, or `stop_volume`)."""
        await self.node.send(self.model.lift(1, nozzle, self.now()))
        await self.node.send(self.model.squeeze(1, self.now(), **squeeze))

    async def hang_up(self) -> None:
        await self.node.send(self.model.hang_up(1, self.now()))

    def state(self) -> FpState:
        return self.model.fps[1].state


@dataclass
class Rig:
    sim: Sim
    cd_hb: int
    line: IfsfLine | None = None
    task: asyncio.Task[None] | None = None
    events: list[DispenserEvent] = field(default_factory=list)
    health: list[LinkHealth] = field(default_factory=list)

    async def start_line(
        self,
        *,
        offline_sales: bool = False,
        profile: Profile | None = None,
        pumps: Sequence[IfsfPump] = PUMPS,
    ) -> IfsfLine:
        self.events = []
        if profile is None:
            profile = (
                GENERIC_PROFILE.with_(offline_sale_ids=OFFLINE_SALE_IDS)
                if offline_sales
                else GENERIC_PROFILE
            )
        settings = IfsfLineSettings(
            "ifsf1",
            loopback_settings([CD], self.cd_hb, self.sim.hb, com_sv_mc=profile.com_sv_mc),
            retry_s=0.1,
            quiet_s=0.5,
            profile=profile,
        )
        self.line = IfsfLine(settings, pumps, self.events.append)
        self.line.on_health = self.health.append
        self.task = asyncio.create_task(self.line.run())
        return self.line

    async def stop_line(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    def statuses(self) -> list[DispenserStatus]:
        return [e.status for e in self.events if isinstance(e, StatusReport)]

    async def until(self, what: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not what():
                await asyncio.sleep(0.01)

    async def status(self, status: DispenserStatus, *, after: int = 0) -> int:
        """Wait for a StatusReport of `status` among the events from index `after`."""

        def seen() -> int | None:
            for i, e in enumerate(self.events[after:], start=after):
                if isinstance(e, StatusReport) and e.status is status:
                    return i
            return None

        await self.until(lambda: seen() is not None)
        found = seen()
        assert found is not None
        return found + 1

    async def finish_sale(self) -> tuple[FillingInfo, tuple[Decimal, Decimal]]:
        """What the station does on FILLING_COMPLETED: read, totals, (commit), reset."""
        line = self.line
        assert line is not None
        info = await line.filling_info(PUMP)
        assert info.nozzle is not None
        totals = await line.totals(PUMP, info.nozzle)
        await line.reset(PUMP)
        return info, totals


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    cd_hb, hb = free_udp_port(), free_udp_port()
    sim = Sim(spec(), hb, cd_hb, free_tcp_port())
    await sim.start()
    r = Rig(sim, cd_hb)
    try:
        yield r
    finally:
        await r.stop_line()
        await sim.stop()


async def online(
    r: Rig,
    *,
    offline_sales: bool = False,
    profile: Profile | None = None,
    pumps: Sequence[IfsfPump] = PUMPS,
) -> IfsfLine:
    line = await r.start_line(offline_sales=offline_sales, profile=profile, pumps=pumps)
    await r.until(lambda: line.is_online(PUMP))
    await r.until(lambda: any(isinstance(e, StatusReport) for e in r.events))
    return line


async def test_the_pump_comes_online_opened_and_at_rest(rig: Rig) -> None:
    line = await online(rig)
    assert isinstance(rig.events[0], PumpOnline)
    assert rig.statuses() == [S.RESET]
    assert any(isinstance(e, NozzleReport) and not e.nozzle_out for e in rig.events)
    assert rig.sim.model.fps[1].state is FpState.IDLE  # Open_FP was sent
    assert CD in rig.sim.model.recipients  # registered for unsolicited data
    assert await line.request_status(PUMP) is S.RESET
    assert line.last_seen(PUMP) is not None and line.pump_fault(PUMP) is None


async def test_authorize_fill_record_and_clear(rig: Rig) -> None:
    line = await online(rig)
    await line.set_prices(PUMP, [D("1.459"), D("1.799")])
    assert rig.sim.model.price(1) == D("1.459")
    mark = len(rig.events)
    await line.authorize(PUMP, nozzles=[1], preset_amount=D("14.59"))
    mark = await rig.status(S.AUTHORIZED, after=mark)
    await rig.sim.customer(1)
    mark = await rig.status(S.FILLING, after=mark)
    await rig.status(S.FILLING_COMPLETED, after=mark)
    assert any(isinstance(e, FillingReport) for e in rig.events)
    await rig.sim.hang_up()
    info = await line.filling_info(PUMP)
    assert (info.volume, info.amount, info.nozzle, info.unit_price) == (
        D("10.00"),
        D("14.59"),
        1,
        D("1.459"),
    )
    (tx,) = rig.sim.model.fps[1].transactions.values()
    assert tx.state is TrState.LOCKED and tx.controller == CD
    totals = await line.totals(PUMP, 1)
    assert totals == (D("1010.00"), D("1514.59"))
    mark = len(rig.events)
    assert await line.reset(PUMP) is S.RESET
    assert tx.state is TrState.CLEARED
    await rig.status(S.RESET, after=mark)  # told after the reset returned
    assert await line.filling_info(PUMP) == FillingInfo(D(0), D(0))


async def test_stop_withdraws_a_release_and_does_nothing_at_rest(rig: Rig) -> None:
    line = await online(rig)
    await line.stop(PUMP)  # Idle: nothing sent, nothing refused
    mark = len(rig.events)
    await line.authorize(PUMP, preset_amount=D("20.00"))
    mark = await rig.status(S.AUTHORIZED, after=mark)
    await line.stop(PUMP)  # Terminate_FP
    await rig.status(S.RESET, after=mark)
    assert rig.sim.state() is FpState.IDLE and not rig.sim.model.fps[1].unpaid()


async def test_a_nozzle_lifted_and_hung_up_without_fuel_is_back_at_rest(rig: Rig) -> None:
    line = await online(rig)
    mark = len(rig.events)
    await line.authorize(PUMP, preset_amount=D("20.00"))
    mark = await rig.status(S.AUTHORIZED, after=mark)
    await rig.sim.node.send(rig.sim.model.lift(1, 1, rig.sim.now()))  # Started
    await rig.until(lambda: line.is_online(PUMP) and rig.sim.state() is FpState.STARTED)
    await rig.sim.hang_up()  # no fuel drawn, no sale stored
    await rig.status(S.RESET, after=mark)
    assert rig.sim.state() is FpState.IDLE and not rig.sim.model.fps[1].unpaid()


async def test_a_sale_whose_start_was_never_heard_is_a_sale_not_a_release_unused(
    rig: Rig,
) -> None:
    line = await online(rig)
    mark = len(rig.events)
    await line.authorize(PUMP, preset_amount=D("20.00"))
    mark = await rig.status(S.AUTHORIZED, after=mark)
    rig.sim.node.silent = True  # mute a moment: Started, Fuelling and the figures dropped
    await rig.sim.customer(1, stop_volume=D("2.00"))
    point = rig.sim.model.fps[1]
    await rig.until(lambda: point.flow is None and point.volume == D("2.00"))
    rig.sim.node.silent = False
    await rig.sim.hang_up()  # heard: Idle, then the sale's transaction
    await rig.status(S.FILLING_COMPLETED, after=mark)
    after = [e.status for e in rig.events[mark:] if isinstance(e, StatusReport)]
    assert S.RESET not in after  # never "back to idle without fuel"
    info, _ = await rig.finish_sale()
    assert (info.volume, info.nozzle) == (D("2.00"), 1)


async def test_a_sale_whose_every_message_was_lost_is_read_from_the_quiet_fp(rig: Rig) -> None:
    # Mute while the sale ran and ended: Started, Fuelling, Idle and the transaction are
    # never heard; the link stays up. A released FP that goes quiet is read again.
    line = await online(rig)
    mark = len(rig.events)
    await line.authorize(PUMP, preset_amount=D("20.00"))
    mark = await rig.status(S.AUTHORIZED, after=mark)
    rig.sim.node.silent = True
    await rig.sim.customer(1, stop_volume=D("2.00"))
    point = rig.sim.model.fps[1]
    await rig.until(lambda: point.flow is None and point.volume == D("2.00"))
    await rig.sim.hang_up()
    rig.sim.node.silent = False
    await rig.status(S.FILLING_COMPLETED, after=mark)
    info, _ = await rig.finish_sale()
    assert (info.volume, info.nozzle) == (D("2.00"), 1)


async def test_suspend_and_resume_a_running_sale(rig: Rig) -> None:
    line = await online(rig)
    mark = len(rig.events)
    await line.authorize(PUMP, nozzles=[1], preset_volume=D("30.00"))
    await rig.sim.customer(1, rate_lps=D("2"))
    mark = await rig.status(S.FILLING, after=mark)
    await line.suspend(PUMP)
    mark = await rig.status(S.SUSPENDED, after=mark)
    assert rig.sim.state() is FpState.SUSPENDED_FUELLING
    await line.resume(PUMP)
    mark = await rig.status(S.FILLING, after=mark)
    await line.stop(PUMP)  # the partial sale is payable
    await rig.status(S.FILLING_COMPLETED, after=mark)
    await rig.sim.hang_up()
    info, _ = await rig.finish_sale()
    assert D(0) < info.volume < D("30.00") and info.nozzle == 1


async def test_a_sale_locked_by_another_controller_is_not_recorded_here(rig: Rig) -> None:
    line = await online(rig)
    await line.authorize(PUMP, nozzles=[1], preset_volume=D("5.00"))
    await rig.sim.customer(1)
    await rig.status(S.FILLING_COMPLETED)
    await rig.sim.hang_up()
    (tx,) = rig.sim.model.fps[1].transactions.values()
    tx.state, tx.controller = TrState.LOCKED, Lna(2, 7)  # a POS is taking the payment
    with pytest.raises(CommandRejected) as raised:
        await line.filling_info(PUMP)
    assert raised.value.code == "already_locked"
    assert "locked by controller 2.7" in str(raised.value)


async def test_a_refusal_is_typed_with_the_dispensers_reason(rig: Rig) -> None:
    line = await online(rig)
    rig.sim.model.refuse(1, MS_BUSY)
    with pytest.raises(CommandRejected) as raised:
        await line.authorize(PUMP, preset_amount=D("10.00"))
    assert raised.value.code == "busy"
    assert "device busy" in str(raised.value)
    with pytest.raises(CommandRejected) as raised:
        await line.suspend(PUMP)  # Idle: nothing to suspend
    assert raised.value.code == "refused_in_state"
    assert "Suspend_FP: command refused in this state" in str(raised.value)


async def test_a_release_at_the_unpaid_limit_is_refused_as_such(rig: Rig) -> None:
    await rig.sim.stop()
    rig.sim = Sim(spec(unpaid_limit=1), rig.sim.hb, rig.cd_hb, free_tcp_port())
    await rig.sim.start()
    line = await online(rig)
    await line.authorize(PUMP, nozzles=[2], preset_volume=D("5.00"))
    await rig.sim.customer(2)
    await rig.status(S.FILLING_COMPLETED)
    await rig.sim.hang_up()
    with pytest.raises(CommandRejected) as raised:
        await line.authorize(PUMP, preset_amount=D("10.00"))
    assert raised.value.code == "unpaid_limit"
    assert "1 unpaid sale(s)" in str(raised.value)


async def _new_sim(r: Rig, model_spec: DispenserSpec) -> None:
    """The rig's dispenser replaced by one of `model_spec` (heard on the same port)."""
    await r.sim.stop()
    r.sim = Sim(model_spec, r.sim.hb, r.cd_hb, free_tcp_port())
    await r.sim.start()


async def test_an_ms_ack_no_source_names_is_a_refusal_with_its_number(rig: Rig) -> None:
    # MS_ACK 4 is named by no source (ifsf-over-ip.md §3): a refusal, told by its number.
    line = await online(rig)
    rig.sim.model.refuse(1, 4)
    with pytest.raises(CommandRejected) as raised:
        await line.authorize(PUMP, preset_amount=D("10.00"))
    assert raised.value.code == "refused"
    assert "authorize refused by the dispenser: MS_ACK 4" in str(raised.value)
    assert rig.sim.state() is FpState.IDLE  # not released


async def test_a_price_write_the_dispenser_refuses_is_typed_and_changes_nothing(
    rig: Rig,
) -> None:
    line = await online(rig)
    rig.sim.model.spoil_prices("refuse", ACK_NOT_WRITABLE)
    with pytest.raises(CommandRejected) as raised:
        await line.set_prices(PUMP, [D("1.459"), D("1.799")])
    assert raised.value.code == "not_writable"
    assert "price 1.459 of product 00000095 refused by the dispenser" in str(raised.value)
    assert (rig.sim.model.price(1), rig.sim.model.price(2)) == (D("1.500"), D("1.800"))
    assert D("1.459") not in line.view(PUMP).prices.values()  # not taken for applied
    rig.sim.model.spoil_prices(None)
    await line.set_prices(PUMP, [D("1.459"), D("1.799")])  # taken again once allowed
    assert (rig.sim.model.price(1), rig.sim.model.price(2)) == (D("1.459"), D("1.799"))


async def test_a_price_its_read_back_does_not_show_is_not_applied(rig: Rig) -> None:
    line = await online(rig)
    rig.sim.model.spoil_prices("ignore")  # acked, never taken
    with pytest.raises(CommandRejected) as raised:
        await line.set_prices(PUMP, [D("1.459"), D("1.799")])
    assert raised.value.code == "price_not_applied"
    assert "price 1.459 of product 00000095 not applied: the dispenser shows 1.500" in str(
        raised.value
    )
    assert D("1.459") not in line.view(PUMP).prices.values()


async def test_two_prices_for_one_product_are_a_conflict_and_nothing_is_written(
    rig: Rig,
) -> None:
    one_product = (
        IfsfPump(
            PUMP,
            NODE,
            1,
            (IfsfNozzle(1, logical=1, product=95), IfsfNozzle(2, logical=2, product=95)),
        ),
    )
    line = await online(rig, pumps=one_product)
    received = rig.sim.model.received
    with pytest.raises(CommandRejected) as raised:
        await line.set_prices(PUMP, [D("1.459"), D("1.799")])
    assert raised.value.code == "price_conflict"
    assert "product 00000095 given two prices (1.459, 1.799)" in str(raised.value)
    assert rig.sim.model.received == received  # refused before anything went out
    assert rig.sim.model.price(1) == D("1.500")
    await line.set_prices(PUMP, [D("1.459"), D("1.459")])  # one price for both: fine
    assert rig.sim.model.price(1) == D("1.459")


@pytest.mark.parametrize(
    ("profile", "dialect"),
    [(PETROCHINA, PETROCHINA_DIALECT), (SINOPEC, SINOPEC_DIALECT)],
    ids=["petrochina", "sinopec"],
)
async def test_error_99h_after_a_price_change_confirms_it_and_is_no_alarm(
    rig: Rig, profile: Profile, dialect: Dialect
) -> None:
    await _new_sim(rig, spec(dialect=dialect))
    line = await online(rig, profile=profile)
    view = line.view(PUMP)
    before = view.price_changes_confirmed
    await line.set_prices(PUMP, [D("1.459"), D("1.799")])
    assert (rig.sim.model.price(1), rig.sim.model.price(2)) == (D("1.459"), D("1.799"))
    # One 99h "price change successful" per product, both on FP 1: two confirmations.
    await rig.until(lambda: view.price_changes_confirmed == before + 2)
    assert rig.sim.model.fps[1].errors[ERROR_PRICE_CHANGED].total == 2
    assert not [e for e in rig.events if isinstance(e, AlarmReport)]
    assert line.pump_fault(PUMP) is None
    # The same error path raises an alarm for a real fault: 99h alone is news.
    await rig.sim.node.send(rig.sim.model.fault(1, 0x36, rig.sim.now()))
    await rig.until(lambda: any(isinstance(e, AlarmReport) for e in rig.events))
    (alarm,) = [e for e in rig.events if isinstance(e, AlarmReport)]
    assert alarm.code == 0x36 and view.price_changes_confirmed == before + 2


async def _two_payable_sales(r: Rig, line: IfsfLine) -> None:
    for nozzle, volume in ((1, D("4.00")), (1, D("6.00"))):
        mark = len(r.events)
        await line.authorize(PUMP, nozzles=[nozzle], preset_volume=volume)
        await r.sim.customer(nozzle)
        await r.status(S.FILLING_COMPLETED, after=mark)
        await r.sim.hang_up()
        await r.until(lambda: r.sim.model.fps[1].state is FpState.IDLE)


async def test_after_a_restart_two_payable_sales_are_read_oldest_first(rig: Rig) -> None:
    rig.sim.model.fps[1].last_seq = 9998  # the next sales are 9999 and 0001
    line = await online(rig)
    await _two_payable_sales(rig, line)
    await rig.stop_line()  # the daemon is killed: nothing cleared
    line = await online(rig)
    assert rig.statuses() == [S.FILLING_COMPLETED]
    first, totals = await rig.finish_sale()
    assert (first.volume, totals) == (D("4.00"), (D("1004.00"), D("1506.00")))
    assert rig.sim.model.fps[1].transactions[9999].state is TrState.CLEARED
    mark = await rig.status(S.FILLING_COMPLETED, after=1)  # the next one, told again
    second, totals = await rig.finish_sale()
    assert (second.volume, totals) == (D("6.00"), (D("1010.00"), D("1515.00")))
    await rig.status(S.RESET, after=mark)
    assert not rig.sim.model.fps[1].unpaid()


async def test_a_sale_read_twice_across_a_restart_keeps_its_totals(rig: Rig) -> None:
    line = await online(rig)
    await _two_payable_sales(rig, line)
    info = await line.filling_info(PUMP)
    assert info.nozzle is not None
    before = await line.totals(PUMP, info.nozzle)
    await rig.stop_line()  # killed after the commit, before the clear
    line = await online(rig)
    again = await line.filling_info(PUMP)
    assert again == info
    assert await line.totals(PUMP, 1) == before  # the same identity: recorded once


async def test_a_link_dropped_mid_sale_is_read_back_when_it_returns(rig: Rig) -> None:
    line = await online(rig)
    await line.authorize(PUMP, nozzles=[2], preset_volume=D("9.00"))
    await rig.sim.customer(2, rate_lps=D("3"))
    await rig.status(S.FILLING)
    node = rig.sim.node
    await node.stop()  # the dispenser's node goes away; its FP goes on pouring
    await rig.until(lambda: not line.is_online(PUMP), timeout=5)
    assert any(isinstance(e, PumpOffline) for e in rig.events)
    await rig.until(lambda: rig.sim.state() is FpState.IDLE, timeout=10)
    mark = len(rig.events)
    await node.start()
    await rig.until(lambda: line.is_online(PUMP), timeout=5)
    await rig.status(S.FILLING_COMPLETED, after=mark)
    info, totals = await rig.finish_sale()
    assert (info.volume, info.nozzle) == (D("9.00"), 2)
    assert totals == (D("209.00"), D("376.20"))
    pump_health = [h.fault for h in rig.health if h.address == PUMP]
    assert pump_health[0] is None and pump_health[-1] is None
    assert any(fault is not None and "1.3" in fault.reason for fault in pump_health)


async def test_links_dropped_and_a_power_cycle_lose_no_sale(rig: Rig) -> None:
    line = await online(rig)
    await line.authorize(PUMP, nozzles=[1], preset_volume=D("5.00"))
    await rig.sim.customer(1)
    await rig.status(S.FILLING_COMPLETED)
    await rig.sim.hang_up()
    await rig.sim.node.drop_links()  # both TCP links closed, then opened again
    await rig.sim.node.power_cycle(0.3)  # every FP Closed after it, the sales kept
    await rig.until(lambda: line.is_online(PUMP) and line.view(PUMP).listed, timeout=5)
    await rig.until(lambda: line.last_status(PUMP) is S.FILLING_COMPLETED)
    assert rig.sim.state() is FpState.IDLE  # opened again by the line
    info, totals = await rig.finish_sale()
    assert (info.volume, totals) == (D("5.00"), (D("1005.00"), D("1507.50")))
    assert not rig.sim.model.fps[1].unpaid()


async def test_offline_sales_are_read_recorded_and_removed_one_by_one(rig: Rig) -> None:
    await rig.sim.stop()
    offline = spec(dialect=Dialect("offline", offline_sales=True), start_state=FpState.IDLE)
    rig.sim = Sim(offline, rig.sim.hb, rig.cd_hb, free_tcp_port())
    model = rig.sim.model
    model.set_cd_online(False)  # no controller: the FP serves on its own
    for volume in (D("4.00"), D("6.00")):
        model.lift(1, 1, rig.sim.now())
        model.squeeze(1, rig.sim.now(), stop_volume=volume)
        await rig.until(
            lambda: bool(model.tick(rig.sim.now()) or True) and model.fps[1].flow is None
        )
        model.hang_up(1, rig.sim.now())
    assert len(model.offline) == 2 and not model.fps[1].unpaid()
    await rig.sim.start()
    await online(rig, offline_sales=True)
    assert rig.statuses() == [S.FILLING_COMPLETED]
    first, totals = await rig.finish_sale()
    assert (first.volume, first.amount, first.nozzle) == (D("4.00"), D("6.00"), 1)
    assert totals[0] == D("1004.00")  # the dispenser's own total after it (CDh)
    assert len(model.offline) == 1  # removed (C9h) once the station had it
    mark = await rig.status(S.FILLING_COMPLETED, after=1)
    second, totals = await rig.finish_sale()
    assert (second.volume, totals) == (D("6.00"), (D("1010.00"), D("1515.00")))
    await rig.status(S.RESET, after=mark)
    assert not model.offline


def _sell_offline(r: Rig, volumes: Sequence[Decimal]) -> None:
    """Sales the FP served on its own while no controller was there (kept for C8h)."""
    model = r.sim.model
    model.set_cd_online(False)
    for volume in volumes:
        model.lift(1, 1, r.sim.now())
        model.squeeze(1, r.sim.now(), stop_volume=volume)
        now = r.sim.now()
        while model.fps[1].flow is not None:
            now += 0.1
            model.tick(now)
        model.hang_up(1, now)


def _offline_read_closings(wire: Sequence[tuple[str, Message]]) -> list[db.Address]:
    """The address of the Ack that closed each offline read (C8h), in order."""
    waiting: set[int] = set()
    closings = []
    for direction, message in wire:
        body = message.body
        if direction == "tx" and isinstance(body, Read) and TR_OFFLINE_READ in body.data_ids:
            waiting.add(message.token)
        elif direction == "rx" and isinstance(body, Ack) and message.token in waiting:
            waiting.discard(message.token)
            closings.append(message.database)
    return closings


@pytest.mark.parametrize(
    ("profile", "dialect", "no_more"),
    [
        # ZSY's "no more" ack on `21 20 0000`; IFSF_MC 2 on COM_SV
        (PETROCHINA, PETROCHINA_DIALECT, db.TransactionBuffer(1, 0, every=True)),
        # SINOPEC's on `20 21 0000`; the heartbeat record as the recipient
        (SINOPEC, SINOPEC_DIALECT, db.TransactionBuffer(0, 0)),
    ],
    ids=["petrochina", "sinopec"],
)
async def test_the_chinese_profiles_offline_sales_are_read_recorded_once_and_removed(
    rig: Rig, profile: Profile, dialect: Dialect, no_more: db.Address
) -> None:
    await rig.sim.stop()
    model_spec = spec(dialect=dialect, start_state=FpState.IDLE)
    rig.sim = Sim(model_spec, rig.sim.hb, rig.cd_hb, free_tcp_port())
    _sell_offline(rig, (D("4.00"), D("6.00")))
    model = rig.sim.model
    assert len(model.offline) == 2 and not model.fps[1].unpaid()
    model.set_cd_online(True)
    await rig.sim.start()
    wire: list[tuple[str, Message]] = []

    def tap(direction: str, _raw: bytes, found: object, _at: float) -> None:
        if isinstance(found, Message):
            wire.append((direction, found))

    line = await rig.start_line(profile=profile)
    line.node.taps.append(tap)  # before the line's task runs: the whole start-up is seen
    await rig.until(lambda: line.is_online(PUMP))
    registered = [m for d, m in wire if d == "tx" and isinstance(m.database, db.ComSv)]
    assert registered and {m.mc for m in registered} == {profile.com_sv_mc}
    assert CD in model.recipients
    assert _offline_read_closings(wire) == [no_more]  # closed the dialect's own way
    sold: list[FillingInfo] = []
    for _ in range(2):
        await rig.until(lambda: line.last_status(PUMP) is S.FILLING_COMPLETED)
        info, totals = await rig.finish_sale()
        assert totals[0] == D("1000.00") + sum((s.volume for s in sold), info.volume)
        sold.append(info)
    assert [(s.volume, s.amount, s.nozzle) for s in sold] == [
        (D("4.00"), D("6.00"), 1),
        (D("6.00"), D("9.00"), 1),
    ]
    assert not model.offline  # each removed (C9h) once the station had it
    assert await line.filling_info(PUMP) == FillingInfo(D(0), D(0))  # none given twice
    removals = [
        m.database
        for d, m in wire
        if d == "tx"
        and isinstance(m.body, Write)
        and any(i.data_id == TR_OFFLINE_REMOVE for i in m.body.items)
    ]
    assert removals == [db.TransactionBuffer(1, 1), db.TransactionBuffer(1, 2)]
    assert _offline_read_closings(wire) == [no_more] * 3  # at start, after each removal
    await rig.until(lambda: line.last_status(PUMP) is S.RESET)


async def test_two_nodes_and_two_fps_of_one_node_are_separate_pumps() -> None:
    """Node 1.3 has two FPs (pumps 0x50, 0x51), node 1.4 one (0x52): each sale is reported
    for its own pump, and a node going away takes only its own pumps offline."""
    cd_hb, hb_a, hb_b = free_udp_port(), free_udp_port(), free_udp_port()
    fp = FpSpec((NozzleSpec(1, D("100.00"), D("150.00")),))
    product = (ProductSpec(95, "SP95", {1: D("1.500")}),)
    node_b = Lna(1, 4)
    simulator = IfsfSimulator(
        [
            DispenserSpec(NODE, (fp, fp), product, flow_rate_lps=D("20")),
            DispenserSpec(node_b, (fp,), product, flow_rate_lps=D("20")),
        ],
        [
            loopback_settings([NODE], hb_a, cd_hb, tcp_port=free_tcp_port()),
            loopback_settings([node_b], hb_b, cd_hb, tcp_port=free_tcp_port()),
        ],
        heartbeat_interval_s=0.1,
        tick_s=0.02,
    )
    nozzle = (IfsfNozzle(1, logical=1, product=95),)
    pumps = (
        IfsfPump(0x50, NODE, 1, nozzle),
        IfsfPump(0x51, NODE, 2, nozzle),
        IfsfPump(0x52, node_b, 1, nozzle),
    )
    settings = loopback_settings([CD], cd_hb, hb_a)
    settings = replace(settings, heartbeat_destinations=(("127.0.0.1", hb_a), ("127.0.0.1", hb_b)))
    events: list[DispenserEvent] = []
    line = IfsfLine(IfsfLineSettings("ifsf1", settings, retry_s=0.1), pumps, events.append)
    async with simulator:
        task = asyncio.create_task(line.run())
        try:
            async with asyncio.timeout(5):
                while not all(line.is_online(p.address) for p in pumps):
                    await asyncio.sleep(0.01)
            a, b = simulator.nodes
            for address, node, number in ((0x51, a, 2), (0x52, b, 1)):
                await line.authorize(address, preset_volume=D("2.00"))
                await node.send(node.model.lift(number, 1, node.clock()))
                await node.send(node.model.squeeze(number, node.clock()))
            async with asyncio.timeout(5):
                while not all(line.last_status(p) is S.FILLING_COMPLETED for p in (0x51, 0x52)):
                    await asyncio.sleep(0.01)
            assert line.last_status(0x50) is S.RESET
            for address in (0x51, 0x52):
                info = await line.filling_info(address)
                assert (info.volume, await line.totals(address, 1)) == (
                    D("2.00"),
                    (D("102.00"), D("153.00")),
                )
                await line.reset(address)
            assert not a.model.fps[2].unpaid() and not b.model.fps[1].unpaid()
            await b.stop()
            async with asyncio.timeout(5):
                while line.is_online(0x52):
                    await asyncio.sleep(0.01)
            assert line.is_online(0x50) and line.is_online(0x51)
            offline = [e.pump for e in events if isinstance(e, PumpOffline)]
            assert offline == [0x52]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# ---------------------------------------------------------------------------------------
# Through the real station (edgectl/station.py, unchanged): the cloud cannot tell IFSF from DART
# ---------------------------------------------------------------------------------------
STATION_TOML = """
[station]
id = "IFSF-01"
currency = "CNY"

[store]
path = "{db}"

[authorization]
mode = "cloud"
authorize_timeout_s = 60

[[grades]]
id = "95"
name = "95"
unit_price = "1.500"

[[grades]]
id = "diesel"
name = "diesel"
unit_price = "1.800"

[[lines]]
name = "ifsf1"
port = "{tmp}/unused"
protocol = "wayne_dart"

[[pumps]]
number = 1
line = "ifsf1"
address = {address}
nozzles = {{ 1 = "95", 2 = "diesel" }}
"""


@dataclass
class StationRig:
    rig: Rig
    tmp: Path
    station: Station | None = None
    store: Store | None = None
    task: asyncio.Task[None] | None = None

    async def start(self) -> Station:
        path = self.tmp / "station.toml"
        path.write_text(STATION_TOML.format(db=self.tmp / "edgectl.db", tmp=self.tmp, address=PUMP))
        config = load_config(path)
        self.store = Store(
            config.store.path, station_id=config.station.id, messages=ContractMessages()
        )
        r = self.rig
        settings = IfsfLineSettings(
            "ifsf1", loopback_settings([CD], r.cd_hb, r.sim.hb), retry_s=0.1
        )
        stations: list[Station] = []

        def both(event: DispenserEvent) -> None:
            r.events.append(event)
            stations[0].on_dispenser_event(event)

        r.events = []
        r.line = IfsfLine(settings, PUMPS, both)
        station = Station(config, self.store, {"ifsf1": r.line})
        stations.append(station)
        r.task = asyncio.create_task(r.line.run())
        self.task = asyncio.create_task(station.run())
        self.station = station
        return station

    async def stop(self) -> None:
        for task in (self.task, self.rig.task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.task = self.rig.task = None
        if self.station is not None:
            self.station.close()
        if self.store is not None:
            self.store.close()

    async def sales(self) -> list[dict[str, Any]]:
        assert self.station is not None and self.store is not None
        return await self.station.db(self.store.sales)


@pytest.fixture
async def station_rig(rig: Rig, tmp_path: Path) -> AsyncIterator[StationRig]:
    s = StationRig(rig, tmp_path)
    try:
        yield s
    finally:
        await s.stop()


def _order(order_id: str, amount: str) -> OrderRequest:
    return OrderRequest(
        order_id=order_id,
        cmd_id=f"cmd-{order_id}",
        pump=1,
        preset_type="amount",
        preset_value=D(amount),
        currency="CNY",
        nozzles=(1,),
    )


async def test_a_pay_at_pump_order_is_sold_recorded_then_cleared(station_rig: StationRig) -> None:
    rig = station_rig.rig
    station = await station_rig.start()
    await rig.until(lambda: station.points[1].status is S.RESET)
    await rig.until(lambda: rig.sim.model.price(1) == D("1.500"))  # the station's prices
    await station.start_order(_order("o-1", "15.00"))
    await rig.sim.customer(1)
    await rig.until(lambda: rig.sim.model.fps[1].state is FpState.IDLE)
    await rig.sim.hang_up()
    fp = rig.sim.model.fps[1]
    await rig.until(lambda: bool(fp.transactions) and not fp.unpaid(), timeout=5)
    (sale,) = await station_rig.sales()
    assert (sale["nozzle"], sale["grade"], sale["volume"], sale["amount"]) == (
        1,
        "95",
        "10.00",
        "15.00",
    )
    assert sale["uid"] == "P1-N1-T1010.00" and sale["order_id"] == "o-1"
    assert station_rig.store is not None
    order = await station.db(station_rig.store.order, "o-1")
    assert order is not None and order["status"] == "completed"


async def test_an_expired_order_whose_stop_was_refused_busy_is_withdrawn_later(
    station_rig: StationRig,
) -> None:
    # An IFSF dispenser reports only what changes: nothing new comes after the refusal, so
    # the station must come back to the release itself (a DART pump is polled into it).
    rig = station_rig.rig
    station = await station_rig.start()
    await rig.until(lambda: station.points[1].status is S.RESET)
    soon = iso(datetime.now(UTC) + timedelta(seconds=1.5))
    await station.start_order(replace(_order("o-3", "15.00"), expires_at=soon))
    await rig.until(lambda: rig.sim.state() is FpState.AUTHORISED)
    rig.sim.model.refuse(1, MS_BUSY)  # the Terminate_FP of the expiry is refused
    await rig.until(lambda: rig.sim.model.refusing == 0, timeout=10)
    await rig.until(lambda: rig.sim.state() is FpState.IDLE, timeout=10)
    assert station_rig.store is not None
    order = await station.db(station_rig.store.order, "o-3")
    assert order is not None and order["status"] == "expired"


async def test_a_refused_release_fails_the_order_with_its_reason(station_rig: StationRig) -> None:
    rig = station_rig.rig
    station = await station_rig.start()
    await rig.until(lambda: station.points[1].status is S.RESET)
    rig.sim.model.refuse(5, MS_BUSY)
    with pytest.raises(CommandError) as raised:
        await station.start_order(_order("o-2", "15.00"))
    assert "device busy" in str(raised.value)
    assert station_rig.store is not None
    store = station_rig.store
    order = await station.db(store.order, "o-2")
    assert order is not None and (order["status"], order["reason"]) == ("failed", "pump_refused")
    (auth,) = await station.db(store.query, "SELECT state, reason FROM authorizations")
    assert auth["state"] == "failed"
    assert "authorize refused by the dispenser: device busy; FP 1 is Idle" in auth["reason"]


async def test_sales_left_payable_are_recorded_once_across_restarts(
    station_rig: StationRig,
) -> None:
    rig = station_rig.rig
    line = await online(rig)
    await _two_payable_sales(rig, line)  # sold while no station listened
    await rig.stop_line()
    await station_rig.start()
    fp = rig.sim.model.fps[1]
    await rig.until(lambda: not fp.unpaid(), timeout=10)
    sales = await station_rig.sales()
    assert [(s["volume"], s["uid"]) for s in sales] == [
        ("4.00", "P1-N1-T1004.00"),
        ("6.00", "P1-N1-T1010.00"),
    ]
    await station_rig.stop()
    await station_rig.start()  # again: nothing left to record, nothing twice
    station = station_rig.station
    assert station is not None
    await rig.until(lambda: station.points[1].status is S.RESET)
    assert len(await station_rig.sales()) == 2


def _sold_unheard_by_a_pos(r: Rig) -> None:
    """A POS (2.7) releases FP 1 and its customer starts; the dispenser's messages are lost
    (mute) from here, so the line hears nothing of the sale the FP is about to store."""
    model, now, fp1, pos = r.sim.model, r.sim.now(), db.FuellingPoint(1), Lna(2, 7)
    items = (item(fp1, 0x1C, D("2.00")), item(fp1, 0x1E, pos), DataItem(0x3E))
    r.sim.node.silent = True
    (done, *_) = model.receive(Message(NODE, pos, 1, fp1, Write(items)), now)
    assert isinstance(done.body, Ack) and done.body.status == 0
    model.lift(1, 1, now)
    model.squeeze(1, now)


async def test_an_order_at_the_unpaid_limit_fails_with_that_reason_and_logs_it(
    station_rig: StationRig,
) -> None:
    rig = station_rig.rig
    await _new_sim(rig, spec(unpaid_limit=1))
    station = await station_rig.start()
    await rig.until(lambda: station.points[1].status is S.RESET)
    _sold_unheard_by_a_pos(rig)
    point = rig.sim.model.fps[1]
    await rig.until(lambda: point.flow is None and point.volume == D("2.00"))
    rig.sim.model.hang_up(1, rig.sim.now())
    rig.sim.node.silent = False
    assert len(point.unpaid()) == 1 and station.points[1].status is S.RESET  # unheard
    with capture_logs() as logs, pytest.raises(CommandError) as raised:
        await station.start_order(_order("o-5", "15.00"))
    assert "1 unpaid sale(s), the buffer's limit" in str(raised.value)
    cause = raised.value.__cause__
    assert isinstance(cause, DriverIOError) and cause.code == "unpaid_limit"
    assert rig.sim.state() is FpState.IDLE  # not released
    store = station_rig.store
    assert store is not None
    order = await station.db(store.order, "o-5")
    assert order is not None and (order["status"], order["reason"]) == ("failed", "pump_refused")
    (auth,) = await station.db(store.query, "SELECT state, reason FROM authorizations")
    assert auth["state"] == "failed"
    assert "authorize refused by the dispenser; Release_FP: command not accepted" in auth["reason"]
    assert "1 unpaid sale(s), the buffer's limit: clear them first" in auth["reason"]
    (refused,) = [e for e in logs if e["event"] == "ifsf_refused"]
    assert (refused["code"], refused["pump"]) == ("unpaid_limit", PUMP)
    assert "unpaid sale(s)" in refused["reason"]
    failed = [e for e in logs if e["event"] == "authorize_failed"]
    assert failed and "unpaid sale(s)" in failed[0]["error"]
    # The buffer read that named the reason told the station of the sale: recorded, cleared.
    await rig.until(lambda: not point.unpaid(), timeout=5)
    (sale,) = await station_rig.sales()
    assert (sale["volume"], sale["order_id"]) == ("2.00", None)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("refuse", "pump_not_writable"), ("ignore", "pump_price_not_applied")],
)
async def test_a_price_set_the_dispenser_does_not_take_is_confirmed_failed_with_why(
    station_rig: StationRig, fault: Literal["refuse", "ignore"], reason: str
) -> None:
    rig = station_rig.rig
    station = await station_rig.start()
    await rig.until(lambda: station.points[1].status is S.RESET)
    rig.sim.model.spoil_prices(fault)
    await station.set_prices("ps-1", {"95": D("1.600")})
    store = station_rig.store
    assert store is not None
    query = "SELECT status, reason FROM price_applied WHERE price_set_id = 'ps-1'"
    rows: list[dict[str, Any]] = []

    async def confirmed() -> bool:
        rows[:] = await station.db(store.query, query)
        return bool(rows)

    async with asyncio.timeout(5):
        while not await confirmed():
            await asyncio.sleep(0.02)
    assert [(r["status"], r["reason"]) for r in rows] == [("failed", reason)]
    assert rig.sim.model.price(1) == D("1.500")
