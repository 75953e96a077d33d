"""The controller's start-up sequence against the loopback dispenser node, per profile."""

from __future__ import annotations

from decimal import Decimal

import pytest

from drivers.base import DeviceTimeout
from drivers.ifsf import databases as db
from drivers.ifsf.codec import MC_COMMUNICATION_SERVICE, Write
from drivers.ifsf.heartbeat import Heartbeat
from drivers.ifsf.profiles import GENERIC, PETROCHINA, SINOPEC
from drivers.ifsf.startup import NozzleSetup, ProductSetup, StartupPlan, start_up
from tests.drivers.ifsf.loopback import (
    CD,
    DISPENSER,
    LoopbackDispenser,
    Sale,
    controller_and_dispenser,
)

PLAN = StartupPlan(
    fps=(1,),
    products=(
        ProductSetup(1, 95, {1: Decimal("7.89")}),
        ProductSetup(2, 92, {1: Decimal("7.45"), 2: Decimal("7.55")}),
    ),
    nozzles=(NozzleSetup(1, 1, 1, meter=1), NozzleSetup(1, 2, 2, physical=2)),
    calculator={0x0B: 1},
    fp_settings={0x07: 1},
)
SALES = {
    1: [
        Sale(41, 2, Decimal("100.00"), Decimal("12.67"), Decimal("7.89")),
        Sale(42, 3, Decimal("50.00"), Decimal("6.71"), Decimal("7.45"), nozzle=2),
        Sale(43, 1, Decimal("10.00"), Decimal("1.27"), Decimal("7.89")),  # Cleared
    ]
}


def written(app: LoopbackDispenser) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for message in app.written:
        assert isinstance(message.body, Write)
        out.append((message.database.wire.hex(), tuple(i.data_id for i in message.body.items)))
    return out


async def test_generic_start_up_of_a_closed_dispenser() -> None:
    app = LoopbackDispenser(fp_states={1: 2}, sales=SALES)
    async with controller_and_dispenser(app) as (cd, _):
        result = await start_up(cd, DISPENSER, GENERIC, PLAN)
    assert app.recipients == [CD]
    assert written(app) == [
        ("00", (0x0B,)),  # Add_Recipient_Addr
        ("01", (0x0B,)),  # C_DAT Auth_State_Mode
        ("41", (0x02,)),  # Prod_Nb of product 1, 2
        ("42", (0x02,)),
        ("610000009511", (0x02,)),  # Prod_Price per product and mode
        ("610000009211", (0x02,)),
        ("610000009212", (0x02,)),
        ("2111", (0x01, 0x07)),  # nozzles
        ("2112", (0x01, 0x05)),
        ("21", (0x07,)),  # Default_Fuelling_Mode
        ("21", (0x3C,)),  # Open_FP
    ]
    assert result.opened == (1,)
    assert result.fp_states == {1: 3}
    assert result.calculator == {0x02: 2, 0x03: 1, 0x05: 1}
    assert [(s.seq, s.state, s.amount, s.volume, s.nozzle) for s in result.sales] == [
        (41, 2, Decimal("100.00"), Decimal("12.67"), 1),
        (42, 3, Decimal("50.00"), Decimal("6.71"), 2),
    ]
    assert result.sales[0].unit_price == Decimal("7.89")
    assert result.offline == () and result.warnings == ()


async def test_start_up_again_against_an_open_dispenser() -> None:
    """The controller restarted, the dispenser did not: no Open_FP, configuration refused
    (the FP is open) is a warning, and the unpaid sales are read back."""
    app = LoopbackDispenser(fp_states={1: 3}, sales=SALES)
    async with controller_and_dispenser(app) as (cd, _):
        result = await start_up(cd, DISPENSER, GENERIC, PLAN)
    assert result.opened == ()
    assert ("21", (0x3C,)) not in written(app)
    assert result.fp_states == {1: 3}
    assert [s.seq for s in result.sales] == [41, 42]
    assert len(result.warnings) == 3  # two nozzles and the FP settings
    assert all("not writable" in w for w in result.warnings)


async def test_an_inoperative_fp_is_not_opened_and_says_so() -> None:
    app = LoopbackDispenser(fp_states={1: 1, 2: 2})
    async with controller_and_dispenser(app) as (cd, _):
        result = await start_up(cd, DISPENSER, GENERIC, StartupPlan())
    # No fps in the plan: as many as Nb_FP says (here 1).
    assert result.fp_states == {1: 1}
    assert result.opened == ()
    assert result.warnings == ("FP 1 is Inoperative: not opened",)


async def test_fps_from_the_calculator() -> None:
    app = LoopbackDispenser(fp_states={1: 2, 2: 2})
    app.calculator[0x05] = 2
    async with controller_and_dispenser(app) as (cd, _):
        result = await start_up(cd, DISPENSER, GENERIC, StartupPlan())
    assert result.opened == (1, 2) and result.fp_states == {1: 3, 2: 3}


async def test_sinopec_registers_with_its_heartbeat_record() -> None:
    app = LoopbackDispenser(fp_states={1: 2})
    async with controller_and_dispenser(app) as (cd, _):
        result = await start_up(cd, DISPENSER, SINOPEC, PLAN)
    [recipient] = app.recipients
    assert isinstance(recipient, Heartbeat)
    assert recipient.lna == CD and recipient.port == cd.tcp_port
    # Products and prices, not the calculator, nozzles or FP settings.
    assert [w for w, _ in written(app)] == [
        "00",
        "41",
        "42",
        "610000009511",
        "610000009211",
        "610000009212",
        "21",
    ]
    assert result.offline == ()  # the loopback dispenser has no offline sale


async def test_petrochina_sends_mc_2_to_com_sv_prices_only_and_reads_offline_sales() -> None:
    app = LoopbackDispenser(fp_states={1: 2})
    app.offline = [{0xCA: "20261203", 0xCB: "081500", 0x05: Decimal("30.00")}]
    async with controller_and_dispenser(app, com_sv_mc=PETROCHINA.com_sv_mc) as (cd, _):
        result = await start_up(cd, DISPENSER, PETROCHINA, PLAN)
    com_sv = [m for m in app.written if isinstance(m.database, db.ComSv)]
    assert [m.mc for m in com_sv] == [MC_COMMUNICATION_SERVICE]
    assert app.recipients == [CD]
    assert [w for w, _ in written(app)] == [
        "00",
        "610000009511",
        "610000009211",
        "610000009212",
        "21",
    ]
    assert result.offline == ({0xCA: "20261203", 0xCB: "081500", 0x05: Decimal("30.00")},)


async def test_a_silent_dispenser_ends_the_start_up_with_a_timeout() -> None:
    app = LoopbackDispenser(silent=True)
    async with controller_and_dispenser(app, reply_timeout_s=0.3) as (cd, _):
        with pytest.raises(DeviceTimeout):
            await start_up(cd, DISPENSER, GENERIC, PLAN)


async def test_a_refused_registration_is_a_warning_and_the_sequence_goes_on() -> None:
    app = LoopbackDispenser(fp_states={1: 2}, sales=SALES, refuse_com_sv=6)
    async with controller_and_dispenser(app) as (cd, _):
        result = await start_up(cd, DISPENSER, GENERIC, StartupPlan(fps=(1,)))
    assert app.recipients == []
    [warning] = result.warnings
    assert warning.startswith("recipient registration (unsolicited data may not come)")
    assert "MS_ACK 6" in warning
    assert result.opened == (1,) and [s.seq for s in result.sales] == [41, 42]
