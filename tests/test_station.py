"""The station end to end: daemon, DART driver and simulated pumps over real ptys."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.transport import SerialTransport
from drivers.wayne_dart.codec import DCC, DartStatus
from drivers.wayne_dart.driver import DartLine, DartLineSettings, DartPumpSettings
from drivers.wayne_dart.sim import (
    Customer,
    FillUntil,
    HangUp,
    Lift,
    Release,
    Squeeze,
    WaitAuthorized,
    normal_fill,
    preset_fill,
    walk_away,
    wrong_nozzle,
)
from edgectl.config import load_config
from edgectl.errors import CommandError
from edgectl.forecourt.fuelling_point import FPState
from edgectl.forecourt.sale import AuthorizationSource, AuthorizationState
from edgectl.station import PumpFill
from tests.stationkit import running_station, start_simulators, until, write_config


async def test_auto_mode_sells_and_records_the_sale_before_reset(tmp_path: Path) -> None:
    async with running_station(write_config(tmp_path, mode="auto")) as st:
        visit = await Customer(st.pump(1), normal_fill(2, Decimal("30.00"))).run()
        await until(lambda: len(st.rows("SELECT * FROM sales")) == 1, what="sale recorded")
        sale = st.rows("SELECT * FROM sales")[0]
        assert sale["pump"] == 1 and sale["nozzle"] == 2 and sale["grade"] == "95"
        assert sale["unit_price"] == "7.93" and sale["currency"] == "CNY"
        pump = st.pump(1)
        volume, amount = Decimal(sale["volume"]), Decimal(sale["amount"])
        assert amount == (volume * Decimal("7.93")).quantize(Decimal("0.01"))
        assert Decimal(sale["total_volume_after"]) - Decimal(sale["total_volume_before"]) == volume
        assert pump.totals(2) == (
            int(Decimal(sale["total_volume_after"]) * 100),
            int(Decimal(sale["total_amount_after"]) * 100),
        )
        auth = st.rows("SELECT * FROM authorizations")[0]
        assert auth["source"] == "auto" and auth["state"] == "completed"
        assert auth["sale_id"] == sale["id"] and auth["preset_amount"] == "100.00"
        await until(lambda: pump.status is DartStatus.RESET, what="pump reset")
        await until(lambda: st.service(1).fp.state is FPState.IDLE, what="fp idle")
        assert st.rows(
            "SELECT stream FROM outbox WHERE stream NOT IN ('pump_state', 'prices')"
        ) == [{"stream": "sale"}]
        assert st.rows("SELECT * FROM alarms") == []
        assert visit is not None


async def test_fills_in_progress_run_until_the_sale_is_recorded(tmp_path: Path) -> None:
    """What the tanks have given that no sale accounts for yet: the running fill, numbered,
    gone from the list in the step that records its sale (and that reaches `on_sold`)."""
    async with running_station(write_config(tmp_path, mode="auto"), flow_rate_lps=5.0) as st:
        station, pump = st.daemon.station, st.pump(1)
        sold: list[PumpFill] = []
        station.on_sold = sold.append
        six_litres = [Lift(2), WaitAuthorized(), Squeeze(), FillUntil(volume=Decimal(6))]
        assert station.fills_in_progress() == []

        fill = asyncio.create_task(Customer(pump, [*six_litres, Release(), HangUp()]).run())
        await until(lambda: any(f.volume >= 2 for f in station.fills_in_progress()), what="running")
        (running,) = station.fills_in_progress()
        assert (running.pump, running.number, running.grade) == (1, 1, "95")
        assert running.volume < 6
        await fill
        await until(lambda: len(sold) == 1, what="first sale")
        assert station.fills_in_progress() == []
        (volume,) = (Decimal(r["volume"]) for r in st.rows("SELECT volume FROM sales"))
        assert sold == [PumpFill(1, 1, "95", volume)]
        await until(lambda: pump.status is DartStatus.RESET, what="pump reset")
        assert station.fills_in_progress() == []  # the last fill's volume is not a new one

        await Customer(pump, [*six_litres, Release(), HangUp()]).run()
        await until(lambda: len(sold) == 2, what="second sale")
        assert (sold[1].pump, sold[1].number) == (1, 2)
        assert station.fills_in_progress() == []


async def test_preset_stops_the_sale_at_the_auto_limit(tmp_path: Path) -> None:
    async with running_station(write_config(tmp_path, mode="auto"), flow_rate_lps=50.0) as st:
        await Customer(st.pump(2), preset_fill(1)).run()
        await until(lambda: len(st.rows("SELECT * FROM sales")) == 1, what="sale")
        sale = st.rows("SELECT * FROM sales")[0]
        assert sale["amount"] == "100.00"  # the configured auto preset


async def test_cloud_mode_never_authorizes_on_its_own(tmp_path: Path) -> None:
    async with running_station(write_config(tmp_path, mode="cloud")) as st:
        st.pump(1).lift(1)
        await until(lambda: st.service(1).fp.state is FPState.CALLING, what="calling")
        await asyncio.sleep(0.5)
        assert st.pump(1).status is DartStatus.RESET
        assert st.rows("SELECT * FROM authorizations") == []
        st.pump(1).hang_up()
        await until(lambda: st.service(1).fp.state is FPState.IDLE, what="idle")


async def test_walk_away_and_wrong_nozzle_leave_no_sale(tmp_path: Path) -> None:
    config = write_config(tmp_path, mode="auto", authorize_timeout_s=1)
    async with running_station(config) as st:
        await Customer(st.pump(1), walk_away(1, linger_s=0.3)).run()
        await until(
            lambda: (
                st.rows("SELECT state FROM authorizations WHERE pump = 1")
                and st.rows("SELECT state FROM authorizations WHERE pump = 1")[-1]["state"]
                in ("no_sale", "expired")
            ),
            what="authorization closed without sale",
        )
        await until(lambda: st.pump(1).status is DartStatus.RESET, what="de-authorized")
        assert st.rows("SELECT * FROM sales") == []


async def test_attendant_authorization_is_recorded_first_and_limits_are_enforced(
    tmp_path: Path,
) -> None:
    async with running_station(write_config(tmp_path, mode="attendant")) as st:
        station = st.daemon.station
        with pytest.raises(CommandError) as err:
            await station.authorize(
                1, AuthorizationSource.ATTENDANT, preset_amount=Decimal("99999")
            )
        assert err.value.code == "preset_out_of_limits"
        with pytest.raises(CommandError) as err:
            await station.authorize(9, AuthorizationSource.ATTENDANT)
        assert err.value.code == "unknown_pump"
        auth = await station.authorize(
            2,
            AuthorizationSource.ATTENDANT,
            nozzles=(1,),
            preset_volume=Decimal("2.00"),
            requested_by="tech",
        )
        await until(lambda: st.pump(2).status is DartStatus.AUTHORIZED, what="authorized")
        with pytest.raises(CommandError) as err:
            await station.authorize(2, AuthorizationSource.ATTENDANT)
        assert err.value.code == "pump_busy"
        await Customer(st.pump(2), preset_fill(1)).run()
        await until(lambda: len(st.rows("SELECT * FROM sales")) == 1, what="sale")
        sale = st.rows("SELECT * FROM sales")[0]
        assert sale["volume"] == "2.00" and sale["authorization_id"] == auth.id


async def test_authorization_expires_when_no_nozzle_is_lifted(tmp_path: Path) -> None:
    config = write_config(tmp_path, mode="attendant", authorize_timeout_s=1)
    async with running_station(config) as st:
        await st.daemon.station.authorize(1, AuthorizationSource.ATTENDANT)
        await until(lambda: st.pump(1).status is DartStatus.AUTHORIZED, what="authorized")
        await until(
            lambda: st.rows("SELECT state FROM authorizations")[0]["state"] == "expired",
            timeout=5,
            what="expired",
        )
        await until(lambda: st.pump(1).status is DartStatus.RESET, what="de-authorized")


async def test_reports_from_before_an_authorization_do_not_end_it(tmp_path: Path) -> None:
    """A customer lifting as soon as the last one hung up: the reports of the last sale's
    reset still queued must not end the new authorization as if the pump had dropped it."""
    async with running_station(write_config(tmp_path, mode="auto")) as st:
        for _ in range(3):
            await Customer(st.pump(1), normal_fill(1, Decimal("10.00"), react_s=0.3)).run()
        await until(lambda: len(st.rows("SELECT * FROM sales")) == 3, what="three sales")
        auths = st.rows("SELECT state FROM authorizations")
        assert auths == [{"state": "completed"}] * 3
        assert all(s["authorization_id"] for s in st.rows("SELECT * FROM sales"))


async def test_a_flow_starting_with_the_release_moves_the_authorization_to_fuelling(
    tmp_path: Path,
) -> None:
    """The customer holds the trigger before the release: the pump reports AUTHORIZED and
    FILLING before the station takes its confirmation. The authorization must still follow
    the fill (it stayed `authorized` through it: a flaky CI run of the test below)."""
    async with running_station(write_config(tmp_path, mode="attendant"), flow_rate_lps=2.0) as st:
        await st.quiet()
        pump = st.pump(1)
        pump.lift(1)
        pump.squeeze()
        await st.daemon.station.authorize(1, AuthorizationSource.ATTENDANT)
        await until(lambda: pump.status is DartStatus.FILLING, what="filling")
        await until(
            lambda: st.rows("SELECT state FROM authorizations") == [{"state": "fuelling"}],
            what="the authorization fuelling",
        )
        pump.release()
        pump.hang_up()
        await until(lambda: len(st.rows("SELECT * FROM sales")) == 1, what="the sale")
        assert st.rows("SELECT state FROM authorizations") == [{"state": "completed"}]


async def test_authorize_obeyed_but_unconfirmed_is_withdrawn(tmp_path: Path) -> None:
    """The pump acts on the AUTHORIZE but every answer is lost: the authorization is recorded
    as failed, so the pump must not stay released for anyone to fill unpaid (found by the
    soak test: the pump then also refused every later order as busy)."""
    async with running_station(write_config(tmp_path, mode="attendant")) as st:
        await st.quiet()
        st.sims["l0"].drop_command_replies(0x50, 4)  # the first try and its three retries
        with pytest.raises(CommandError) as err:
            await st.daemon.station.authorize(1, AuthorizationSource.ATTENDANT)
        assert err.value.code == "pump_refused"
        assert st.rows("SELECT state FROM authorizations") == [{"state": "failed"}]
        await until(lambda: st.pump(1).status is DartStatus.RESET, what="withdrawn")
        await until(lambda: st.service(1).fp.state is FPState.IDLE, what="fp idle")
        await st.daemon.station.authorize(1, AuthorizationSource.ATTENDANT)
        await until(lambda: st.pump(1).status is DartStatus.AUTHORIZED, what="authorized again")


async def test_graceful_stop_commits_the_sale_in_progress(tmp_path: Path) -> None:
    async with running_station(write_config(tmp_path, mode="auto"), flow_rate_lps=2.0) as st:
        pump = st.pump(1)
        pump.lift(1)
        await until(lambda: pump.status is DartStatus.AUTHORIZED, what="authorized")
        pump.squeeze()
        await until(lambda: pump.volume > 50, what="fuel flowing")
        pump.release()
        pump.hang_up()
        await st.stop()  # immediately: the sale is being read while we ask to stop
        sales = st.rows("SELECT * FROM sales")
        assert len(sales) == 1 and Decimal(sales[0]["volume"]) > 0


async def test_totals_moved_while_offline_raise_a_missed_sale_alarm(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, mode="auto")
    config = load_config(config_path)
    sims = start_simulators(config)
    try:
        async with running_station(config_path, sims=sims) as st:
            await until(lambda: len(st.rows("SELECT * FROM nozzle_totals")) == 4, what="baseline")
        # While edgectl is down another controller sells 5 L on pump 1 (nozzle 1).
        line_cfg = config.line("l0")
        other = DartLine(
            DartLineSettings(name="other", reply_timeout_s=0.04),
            [DartPumpSettings(address=0x50, nozzles=(1, 2))],
            SerialTransport(line_cfg.port, name="other"),
            lambda event: None,
        )
        task = asyncio.create_task(other.run())
        await until(lambda: other.is_online(0x50), what="other controller online")
        await other.authorize(0x50, nozzles=(1,), preset_volume=Decimal("5.00"))
        await Customer(sims["l0"].pump(0x50), preset_fill(1)).run()
        await other.reset(0x50)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with running_station(config_path, sims=sims) as st2:
            await until(lambda: bool(st2.rows("SELECT * FROM alarms")), what="alarm")
            alarm = st2.rows("SELECT * FROM alarms")[0]
            assert alarm["kind"] == "missed_sale" and alarm["pump"] == 1 and alarm["nozzle"] == 1
            assert "grew by 5.00" in alarm["message"]
            assert st2.rows("SELECT * FROM sales") == []
            assert [
                r["stream"]
                for r in st2.rows(
                    "SELECT stream FROM outbox WHERE stream NOT IN ('pump_state', 'prices')"
                )
            ] == ["alarm"]
    finally:
        for sim in sims.values():
            sim.stop()


async def test_wrong_nozzle_gets_no_fuel(tmp_path: Path) -> None:
    async with running_station(write_config(tmp_path, mode="attendant")) as st:
        await st.daemon.station.authorize(1, AuthorizationSource.ATTENDANT, nozzles=(1,))
        await until(lambda: st.pump(1).status is DartStatus.AUTHORIZED, what="authorized")
        await Customer(st.pump(1), wrong_nozzle(2, linger_s=0.3)).run()
        assert st.pump(1).volume == 0
        assert st.rows("SELECT * FROM sales") == []


async def test_pump_unreachable_at_end_of_sale_is_committed_when_back(tmp_path: Path) -> None:
    async with running_station(write_config(tmp_path, mode="auto"), flow_rate_lps=2.0) as st:
        sim, pump = st.sims["l0"], st.pump(1)
        pump.lift(1)
        await until(lambda: pump.status is DartStatus.AUTHORIZED, what="authorized")
        pump.squeeze()
        await until(lambda: pump.volume > 50, what="fuel flowing")
        sim.set_online(0x50, False)  # the pump's line card dies mid-fill
        pump.release()
        pump.hang_up()
        await until(lambda: not st.service(1).online, what="offline")
        assert st.rows("SELECT * FROM sales") == []
        sim.set_online(0x50, True)
        await until(lambda: len(st.rows("SELECT * FROM sales")) == 1, what="sale after recovery")
        await until(lambda: pump.status is DartStatus.RESET, what="reset after commit")
        assert Decimal(st.rows("SELECT volume FROM sales")[0]["volume"]) * 100 == pump.volume


@pytest.mark.parametrize("line_down", [True, False])
async def test_a_fill_that_ended_unseen_at_the_pump_is_read_and_recorded(
    tmp_path: Path, line_down: bool
) -> None:
    """Fuel flowed, then the pump was reset at its own keypad while the line was down: the
    station finds RESET without having seen FILLING COMPLETED. The fill is still at the pump;
    it was ended as "pump returned to idle without fuel" and the sale never recorded."""
    async with running_station(write_config(tmp_path, mode="auto"), flow_rate_lps=2.0) as st:
        sim, pump = st.sims["l0"], st.pump(1)
        pump.lift(1)
        await until(lambda: pump.status is DartStatus.AUTHORIZED, what="authorized")
        pump.squeeze()
        await until(lambda: pump.volume > 50, what="fuel flowing")
        decider = st.service(1).decider
        await until(
            lambda: decider.auth is not None and decider.auth.state is AuthorizationState.FUELLING,
            what="fuelling seen",
        )
        if line_down:
            sim.set_online(0x50, False)
        pump.release()
        pump.hang_up()
        pump.reset_at_the_pump()
        if line_down:
            await until(lambda: not st.service(1).online, what="offline")
            sim.set_online(0x50, True)
        await until(lambda: len(st.rows("SELECT * FROM sales")) == 1, what="the unseen fill sold")
        assert Decimal(st.rows("SELECT volume FROM sales")[0]["volume"]) * 100 == pump.volume
        assert st.rows("SELECT state FROM authorizations") == [{"state": "completed"}]


def _meters_match_sales(st: object, start: dict[tuple[int, int], int]) -> None:
    """Every nozzle's meter moved by exactly the litres of its recorded sales."""
    for (number, nozzle), before in start.items():
        pump = st.pump(number)  # type: ignore[attr-defined]
        sold = sum(
            Decimal(r["volume"])
            for r in st.rows(  # type: ignore[attr-defined]
                "SELECT volume FROM sales WHERE pump = ? AND nozzle = ?", (number, nozzle)
            )
        )
        moved = Decimal(pump.totals(nozzle)[0] - before) / 100
        assert moved == sold, f"pump {number} nozzle {nozzle}: meter {moved} L, sales {sold} L"


@pytest.mark.parametrize("earlier_sale_on_the_lifted_nozzle", [False, True])
async def test_second_customer_lifting_during_the_read_does_not_take_the_sale(
    tmp_path: Path, earlier_sale_on_the_lifted_nozzle: bool
) -> None:
    """Issue 9.2: the pump's answer to RETURN FILLING INFORMATION held `DC2; DC3 nozzle 1 in;
    DC3 nozzle 2 out`. The sale went to nozzle 2 (matching its earlier sale, so nozzle 1's
    fill was lost at the reset), and auto mode released the lifted nozzle 2 as nozzle 1."""
    async with running_station(write_config(tmp_path, mode="auto"), flow_rate_lps=5.0) as st:
        pump = st.pump(1)
        start = {(1, n): pump.totals(n)[0] for n in (1, 2)}
        expected = 1
        if earlier_sale_on_the_lifted_nozzle:
            await Customer(pump, normal_fill(2, Decimal("2.00"))).run()
            await until(lambda: len(st.rows("SELECT * FROM sales")) == 1, what="first sale")
            await until(lambda: pump.status is DartStatus.RESET, what="reset")
            expected = 2
        pump.lift(1)
        await until(lambda: pump.status is DartStatus.AUTHORIZED, what="nozzle 1 released")
        pump.squeeze()
        await until(lambda: pump.volume >= 250, what="fuel flowing")
        pump.release()
        fill_volume = pump.volume
        pump.lift_after(DCC.RETURN_FILLING_INFORMATION, 2)  # the next customer, mid-read
        pump.hang_up()
        await until(
            lambda: len(st.rows("SELECT * FROM sales")) == expected, what="nozzle 1's sale"
        )
        sale = st.rows("SELECT * FROM sales ORDER BY id DESC LIMIT 1")[0]
        assert sale["nozzle"] == 1 and sale["grade"] == "92"
        assert Decimal(sale["volume"]) == Decimal(fill_volume) / 100
        # The second customer is served on the nozzle they hold, and only on it.
        await until(lambda: pump.status is DartStatus.AUTHORIZED, what="nozzle 2 released")
        auths = st.rows("SELECT nozzles, source FROM authorizations ORDER BY id DESC")
        assert auths[0]["source"] == "auto" and auths[0]["nozzles"] in ("[2]", "2")
        pump.squeeze()
        await until(lambda: pump.volume >= 100, what="second fill flowing")
        pump.release()
        pump.hang_up()
        await until(
            lambda: len(st.rows("SELECT * FROM sales")) == expected + 1, what="second sale"
        )
        await until(lambda: pump.status is DartStatus.RESET, what="reset")
        _meters_match_sales(st, start)
        assert st.rows("SELECT kind FROM alarms") == []


async def test_a_fill_whose_identity_another_sale_holds_is_kept_at_the_pump(
    tmp_path: Path,
) -> None:
    """Never reset a pump before its fill is committed: when a different sale already holds
    the fill's identity (same nozzle totals), the fill is not on record, so the pump is held
    with it and a critical alarm says why — raised once, not on every retry."""
    async with running_station(write_config(tmp_path, mode="auto"), flow_rate_lps=5.0) as st:
        pump = st.pump(1)
        pump.lift(1)
        await until(lambda: pump.status is DartStatus.AUTHORIZED, what="released")
        pump.squeeze()
        await until(lambda: pump.volume >= 200, what="fuel flowing")
        pump.release()
        pump.ignore_commands(DCC.RETURN_FILLING_INFORMATION)  # the fill cannot be read yet
        pump.hang_up()
        total_after = (Decimal(pump.totals(1)[0]) / 100).quantize(Decimal("0.01"))
        db = __import__("sqlite3").connect(st.config.store.path)
        with db:
            db.execute(
                "INSERT INTO sales (uid, pump, nozzle, grade, volume, amount, unit_price,"
                " currency, ended_at, recorded_at) VALUES (?, 1, 1, '92', '0.50', '3.95',"
                " '7.89', 'CNY', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
                (f"P1-N1-T{total_after}",),
            )
        db.close()
        pump.ignore_commands()
        await until(
            lambda: st.rows("SELECT kind FROM alarms WHERE kind = 'sale_conflict'"),
            what="conflict alarm",
        )
        await asyncio.sleep(1.0)
        assert pump.status is DartStatus.FILLING_COMPLETED  # the fill is still at the pump
        assert len(st.rows("SELECT * FROM alarms WHERE kind = 'sale_conflict'")) == 1
        assert len(st.rows("SELECT * FROM sales")) == 1
