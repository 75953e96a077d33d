"""The control executor on simulated pumps: what each command does to a pump, and that a
command which cannot be carried out is an error reply that leaves the simulator running.

The controller's part (authorizing, presets) is played here with DART frames handed to the
pump itself; the daemon plays it in tests/test_sim_control_station.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from drivers.wayne_dart import codec
from drivers.wayne_dart.codec import DCC, DartStatus
from drivers.wayne_dart.sim import DartLineSimulator, SimPump, wait_until
from drivers.wayne_dart.sim_control import (
    ControlledPump,
    CustomerSwitch,
    Reply,
    SimController,
    run_script,
)

PRICES = {1: 745, 2: 793}  # 7.45 and 7.93


@dataclass
class Rig:
    controller: SimController
    north: DartLineSimulator
    south: DartLineSimulator
    seq: dict[int, int]

    def pump(self, number: int) -> SimPump:
        return self.controller.pumps[number].pump

    def command(self, number: int, *items: Any) -> None:
        """The controller's DART command, as it reaches the pump."""
        pump = self.pump(number)
        seq = self.seq[number] = (self.seq.get(number, 0) + 1) % 16
        reply = pump.handle(codec.data(pump.address, seq, *items))
        assert reply is not None and reply.kind is codec.FrameKind.ACK

    def authorize(self, number: int, *presets: Any) -> None:
        self.command(number, *presets, codec.Command(DCC.AUTHORIZE))

    async def ok(self, line: str) -> str:
        reply = await self.controller.handle(line)
        assert reply is not None and reply.ok, (line, reply)
        return reply.line

    async def error(self, line: str, code: str) -> str:
        reply = await self.controller.handle(line)
        assert reply is not None and not reply.ok, (line, reply)
        assert reply.line.startswith(f"error {code} "), reply.line
        return reply.line


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    # Pump 1 and 3 share address 0x50, on two lines, as in config/demo.toml.
    north = DartLineSimulator(
        [SimPump(0x50, PRICES, flow_rate_lps=50.0), SimPump(0x51, PRICES)], name="north"
    )
    south = DartLineSimulator([SimPump(0x50, {1: 710})], name="south")
    controller = SimController(
        [
            ControlledPump(1, north, north.pump(0x50)),
            ControlledPump(2, north, north.pump(0x51)),
            ControlledPump(3, south, south.pump(0x50)),
        ],
        customers=CustomerSwitch([north, south], mean_interval_s=3600, seed=1),
    )
    yield Rig(controller, north, south, {})
    controller.close()
    assert controller.customers is not None
    await controller.customers.aclose()


async def test_a_sale_lift_fill_to_an_amount_hang_up(rig: Rig) -> None:
    assert "lifted state=reset" in await rig.ok("lift 1 1")
    filling = asyncio.create_task(rig.controller.handle("fill 1 amount 20.00 rate 600"))
    await wait_until(rig.pump(1), lambda: rig.pump(1).nozzle_out == 1, 5)
    assert not filling.done()  # a customer waits for the pump's release
    rig.authorize(1)
    reply = await asyncio.wait_for(filling, 10)
    assert reply == Reply(
        "ok pump=1 filled state=filling volume=2.68 amount=20.00", ok=True
    )  # the hand let go at the amount itself: 2.68 L at 7.45
    hung = await rig.ok("hangup 1")
    assert hung == "ok pump=1 hung-up state=completed volume=2.68 amount=20.00"
    await rig.error("wait 1 idle timeout 0.01", "timeout")  # the sale is not taken yet
    rig.command(1, codec.Command(DCC.RESET))  # the controller took it
    await rig.ok("wait 1 idle timeout 1")
    status = await rig.ok("status 1")
    assert "state=reset" in status and "nozzle=1 nozzle-out=no" in status
    assert "totals=1:2.68:20.00,2:0.00:0.00" in status


async def test_a_fill_stops_at_the_preset_when_it_comes_first(rig: Rig) -> None:
    await rig.ok("lift 1 2")
    rig.authorize(1, codec.PresetAmount(1000))  # 10.00
    reply = await rig.ok("fill 1 amount 20.00")
    assert reply == "ok pump=1 filled state=max-reached volume=1.26 amount=10.00"
    # With no mark the customer squeezes until the pump stops the flow.
    await rig.ok("hangup 1")
    rig.command(1, codec.Command(DCC.RESET))
    await rig.ok("lift 1 1")
    rig.authorize(1, codec.PresetVolume(150))
    assert "state=max-reached volume=1.50" in await rig.ok("fill 1")


async def test_fill_by_volume_and_a_second_fill_goes_on_with_the_same_sale(rig: Rig) -> None:
    await rig.ok("lift 1 1")
    rig.authorize(1)
    assert (await rig.ok("fill 1 volume 1.00")).endswith("volume=1.00 amount=7.45")
    assert (await rig.ok("fill 1 volume 2.00")).endswith("volume=2.00 amount=14.90")
    await rig.error("fill 1 volume 1.50", "wrong_state")  # the fill is past that
    await rig.error("fill 1 amount 20.001", "bad_number")  # the pump has 2 decimals


async def test_fill_without_a_release_gives_up_and_says_so(rig: Rig) -> None:
    await rig.error("fill 1", "wrong_state")  # no nozzle out
    await rig.ok("lift 1 1")
    reply = await rig.error("fill 1 amount 5 wait 0.05", "not_authorized")
    assert "within 0.05 s (state reset)" in reply
    assert rig.pump(1).nozzle_out == 1 and not rig.pump(1).squeezed  # still waiting there


async def test_a_hang_up_elsewhere_ends_a_fill_waiting_for_the_release(rig: Rig) -> None:
    await rig.ok("lift 1 1")
    filling = asyncio.create_task(rig.controller.handle("fill 1 amount 5"))
    await asyncio.sleep(0)
    await rig.ok("hangup 1")  # from another session
    reply = await asyncio.wait_for(filling, 5)
    assert reply is not None and reply.line.startswith("error wrong_state ")
    assert "hung up" in reply.line


async def test_a_nozzle_the_authorization_does_not_allow_gives_no_fuel(rig: Rig) -> None:
    await rig.ok("lift 1 2")
    rig.authorize(1, codec.AllowedNozzles((1,)))
    await rig.error("fill 1 amount 5", "nozzle_not_allowed")
    assert rig.pump(1).status is DartStatus.AUTHORIZED and not rig.pump(1).squeezed


async def test_walkaway_ends_a_waiting_fill_and_hangs_up(rig: Rig) -> None:
    await rig.ok("lift 1 1")
    filling = asyncio.create_task(rig.controller.handle("fill 1 amount 5"))
    await asyncio.sleep(0)  # the fill is waiting for the release
    assert "walked-away state=reset" in await rig.ok("walkaway 1")
    reply = await asyncio.wait_for(filling, 5)
    assert reply is not None and reply.line.startswith("error walked_away ")
    assert rig.pump(1).nozzle_out is None
    assert "nobody-there" in await rig.ok("walkaway 1")  # nobody left to walk away


async def test_walkaway_mid_fill_keeps_what_flowed(rig: Rig) -> None:
    rig.pump(1).set_flow_rate(0.01)
    await rig.ok("lift 1 1")
    rig.authorize(1)
    filling = asyncio.create_task(rig.controller.handle("fill 1 amount 50"))
    await wait_until(rig.pump(1), lambda: rig.pump(1).status is DartStatus.FILLING, 5)
    reply = await rig.ok("walkaway 1")
    assert "walked-away state=completed" in reply
    assert (await asyncio.wait_for(filling, 5)) is not None
    assert rig.pump(1).nozzle_out is None


async def test_a_pump_is_named_by_number_or_by_an_address_only_it_has(rig: Rig) -> None:
    assert (await rig.ok("status 0x51")).startswith("ok pump=2 address=0x51 line=north")
    reply = await rig.error("status 0x50", "unknown_pump")
    assert "pump 1 on north, pump 3 on south" in reply
    await rig.error("lift 7 1", "unknown_pump")
    await rig.error("lift 0x60 1", "unknown_pump")
    await rig.error("lift 3 2", "unknown_nozzle")
    await rig.ok("lift 3 1")
    await rig.error("lift 3 1", "wrong_state")
    await rig.error("hangup 2", "wrong_state")


async def test_status_and_price_cover_every_pump_on_one_line(rig: Rig) -> None:
    status = await rig.ok("status")
    assert status.count("pump=") == 3 and "\n" not in status
    assert await rig.ok("price") == (
        "ok pump=1 prices=1:7.45,2:7.93; pump=2 prices=1:7.45,2:7.93; pump=3 prices=1:7.10"
    )


async def test_silent_and_answer(rig: Rig) -> None:
    assert await rig.ok("silent 2") == "ok pump=2 silent=until-answer"
    await rig.ok("wait 2 offline timeout 1")
    assert rig.pump(2).handle(codec.poll(0x51)) is None
    await rig.ok("answer 2")
    assert rig.pump(2).online
    # For a while only: it answers again by itself.
    await rig.ok("silent 2 0.05")
    assert not rig.pump(2).online
    await wait_until(rig.pump(2), lambda: rig.pump(2).online, 5)
    await rig.error("wait 2 offline timeout 0.01", "timeout")


async def test_refuse_and_accept(rig: Rig) -> None:
    assert await rig.ok("refuse 1 2") == "ok pump=1 refusing=2"
    assert rig.north.refusing(0x50) == 2
    assert await rig.ok("refuse 1") == "ok pump=1 refusing=all"
    assert "refusing=all" in await rig.ok("status 1")
    await rig.ok("accept 1")
    assert rig.north.refusing(0x50) == 0


async def test_power_cycle_forgets_the_line_layer_and_keeps_the_sale(rig: Rig) -> None:
    await rig.ok("lift 1 1")
    rig.authorize(1)
    await rig.ok("fill 1 amount 7.45")
    seq = rig.seq[1]
    assert await rig.ok("power-cycle 1 0.01") == "ok pump=1 power-cycled off=0.01s"
    assert rig.pump(1).online and rig.pump(1).amount == 745
    # The frame number it executed last is forgotten: the same TX# is a new command now.
    reply = rig.pump(1).handle(codec.data(0x50, seq, codec.Command(DCC.RETURN_STATUS)))
    assert reply is not None and reply.kind is codec.FrameKind.ACK
    assert rig.pump(1).counters.duplicates == 0


async def test_customers_switch_on_and_off(rig: Rig) -> None:
    assert await rig.ok("customers random") == "ok customers=random"
    assert rig.controller.customers is not None and rig.controller.customers.mode == "random"
    assert await rig.ok("customers none") == "ok customers=none"
    without = SimController([])
    reply = await without.handle("customers random")
    assert reply is not None and reply.line.startswith("error unavailable ")


async def test_wait_for_a_state_times_out_with_the_state_it_is_in(rig: Rig) -> None:
    reply = await rig.error("wait 1 filling timeout 0.01", "timeout")
    assert "pump 1 not filling within 0.01 s (state reset)" in reply
    await rig.ok("wait 1 reset timeout 0")
    waiting = asyncio.create_task(rig.controller.handle("wait 1 nozzle-out timeout 5"))
    await asyncio.sleep(0)
    rig.pump(1).lift(2)  # a nozzle change wakes the wait: it is no status change
    reply_ok = await asyncio.wait_for(waiting, 5)
    assert reply_ok is not None and reply_ok.line == "ok pump=1 nozzle-out state=reset"


async def test_a_script_stops_at_its_first_error_with_its_line(rig: Rig) -> None:
    replies: list[str] = []
    script = ["# a comment", "", "lift 1 1", "status 1", "hangup 2", "lift 2 1"]
    end = await run_script(rig.controller, script, replies.append)
    assert (end.ok, end.failed_line) == (False, 5)
    assert end.reply is not None and end.reply.startswith("error wrong_state ")
    assert len(replies) == 3 and rig.pump(2).nozzle_out is None
    # As a console it goes on past an error, and stops at quit.
    replies.clear()
    end = await run_script(
        rig.controller, ["bogus", "lift 2 1", "quit", "lift 3 1"], replies.append,
        stop_on_error=False,
    )  # fmt: skip
    assert end.ok and [r.split()[0] for r in replies] == ["error", "ok", "ok"]
    assert rig.pump(2).nozzle_out == 1 and rig.pump(3).nozzle_out is None
