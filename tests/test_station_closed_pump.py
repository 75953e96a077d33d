"""A pump closed by the site (`edgectl close`): nobody authorizes it, it says so, and it stays
closed across a restart until it is opened (daemon, DART driver and simulated pumps)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.wayne_dart.codec import DartStatus
from drivers.wayne_dart.sim import Customer, normal_fill
from edgectl.config import load_config
from edgectl.errors import CommandError
from edgectl.forecourt.fuelling_point import FPState
from edgectl.forecourt.sale import AuthorizationSource
from tests.stationkit import RunningStation, running_station, start_simulators, until, write_config


def _pump_states(st: RunningStation, pump: int) -> list[str]:
    """The live states of `pump` queued for the cloud (the outbox keeps the newest)."""
    rows = st.rows(
        "SELECT payload FROM outbox WHERE stream = 'pump_state' AND key = ?", (str(pump),)
    )
    return [json.loads(r["payload"])["state"] for r in rows]


async def test_a_closed_pump_is_authorized_by_no_one_and_stays_closed_after_a_restart(
    tmp_path: Path,
) -> None:
    config_path = write_config(tmp_path, mode="auto")
    sims = start_simulators(load_config(config_path))
    try:
        async with running_station(config_path, sims=sims) as st:
            station, pump = st.daemon.station, st.pump(1)
            await st.quiet()
            message = await station.close_pump(1, by="cli:tech", reason="leak on nozzle 2")
            assert message == "pump 1 closed: no authorization until it is opened again"
            assert await station.close_pump(1, by="cli:tech") == (
                f"pump 1 was already closed (since {st.service(1).closed.at})"
            )
            (view, other) = station.snapshot()
            assert (view.state, view.closed) == (FPState.CLOSED, True)
            assert (other.state, other.closed) == (FPState.IDLE, False)
            await until(lambda: _pump_states(st, 1) == ["closed"], what="closed sent")

            # Auto mode leaves a lift on the closed pump alone; the other pump sells.
            pump.lift(2)
            await until(lambda: st.service(1).fp.state is FPState.CALLING, what="calling")
            await asyncio.sleep(0.5)
            assert pump.status is DartStatus.RESET
            assert station.snapshot()[0].state is FPState.CLOSED
            with pytest.raises(CommandError) as refused:
                await station.authorize(1, AuthorizationSource.ATTENDANT)
            assert refused.value.code == "pump_closed"
            assert st.rows("SELECT * FROM authorizations WHERE pump = 1") == []
            pump.hang_up()
            await Customer(st.pump(2), normal_fill(1, Decimal("5.00"))).run()
            await until(lambda: len(st.rows("SELECT * FROM sales")) == 1, what="pump 2 sells")
            assert station.authorization_outcomes[("attendant", "refused")] == 1

        # A restart keeps it closed (the flag is in the store).
        async with running_station(config_path, sims=sims) as st:
            station, pump = st.daemon.station, st.pump(1)
            await until(lambda: st.service(1).fp.state is FPState.IDLE, what="idle")
            closed = st.service(1).closed
            assert closed is not None and closed.by == "cli:tech"
            assert closed.reason == "leak on nozzle 2"
            assert station.snapshot()[0].state is FPState.CLOSED
            with pytest.raises(CommandError) as refused:
                await station.authorize(1, AuthorizationSource.ATTENDANT)
            assert refused.value.code == "pump_closed"

            # Opened, a customer already calling is served at once.
            pump.lift(2)
            await until(lambda: st.service(1).fp.state is FPState.CALLING, what="calling")
            assert await station.open_pump(1, by="cli:tech") == "pump 1 open again"
            assert await station.open_pump(1, by="cli:tech") == "pump 1 was not closed"
            await until(lambda: pump.status is DartStatus.AUTHORIZED, what="served once open")
            await until(lambda: "closed" not in _pump_states(st, 1), what="open sent")
            pump.hang_up()
            await station.stop_pump(1)
            await until(lambda: pump.status is DartStatus.RESET, what="stopped")

        async with running_station(config_path, sims=sims) as st:
            assert st.service(1).closed is None  # opening is durable too
    finally:
        for sim in sims.values():
            sim.stop()


async def test_closing_during_a_fill_lets_it_end_then_shows_closed(tmp_path: Path) -> None:
    async with running_station(write_config(tmp_path, mode="auto"), flow_rate_lps=2.0) as st:
        station, pump = st.daemon.station, st.pump(1)
        pump.lift(1)
        await until(lambda: pump.status is DartStatus.AUTHORIZED, what="authorized")
        pump.squeeze()
        await until(lambda: st.service(1).fp.state is FPState.FUELLING, what="fuelling")
        message = await station.close_pump(1, by="cli:tech")
        assert "the authorization or fill under way goes on to its end" in message
        assert station.snapshot()[0].state is FPState.FUELLING
        await until(lambda: pump.volume > 30, what="fuel flowing")
        pump.release()
        pump.hang_up()
        await until(lambda: len(st.rows("SELECT * FROM sales")) == 1, what="the sale")
        await until(lambda: station.snapshot()[0].state is FPState.CLOSED, what="closed")
        assert st.rows("SELECT state FROM authorizations") == [{"state": "completed"}]
