"""Wayne DART pumps simulated for `edgectl simulate dart` and `edgectl demo` (found through the
registry): a line of pumps on a pty, random and paying customers, the control session."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from drivers.simulation import DispenserSimulation, LinePlan, ServePlan
from drivers.wayne_dart.codec import DartStatus, from_decimal
from drivers.wayne_dart.sim import (
    Customer,
    DartLineSimulator,
    RandomCustomers,
    SimPump,
    preset_fill,
)
from drivers.wayne_dart.sim_control import (
    ControlledPump,
    ControlSocket,
    CustomerSwitch,
    SimController,
    run_session,
)


def line(plan: LinePlan) -> DartLineSimulator:
    """The line's pumps, with their prices and totals, serving a pty linked at its port."""
    pumps = [
        SimPump(
            pump.address,
            {n: from_decimal(price, pump.price_decimals) for n, price in pump.prices.items()},
            volume_decimals=pump.volume_decimals,
            amount_decimals=pump.amount_decimals,
            price_decimals=pump.price_decimals,
            totals={
                nozzle: (
                    from_decimal(volume, pump.volume_decimals),
                    from_decimal(amount, pump.amount_decimals),
                )
                for nozzle, (volume, amount) in pump.totals.items()
            },
        )
        for pump in plan.pumps
    ]
    sim = DartLineSimulator(
        pumps,
        baud=plan.baud,
        data_bits=plan.bytesize,
        parity=plan.parity,
        stop_bits=plan.stopbits,
        reply_delay_s=plan.reply_delay_s,
        name=plan.name,
    )
    _serve_at(sim, plan.port)
    return sim


def _serve_at(sim: DartLineSimulator, port: Path) -> None:
    port.parent.mkdir(parents=True, exist_ok=True)
    # A symlink there is a previous simulator's; anything else may be a real device.
    if port.exists() and not port.is_symlink():
        raise FileExistsError(f"{port} exists and is not a symlink; not replacing it")
    sim.serve_pty(port)


async def random_customers(
    sim: DartLineSimulator, pumps: Sequence[SimPump] | None, mean_s: float, seed: int | None
) -> None:
    await RandomCustomers(sim, pumps=pumps, mean_interval_s=mean_s, seed=seed).run()


async def paying_customer(pump: SimPump, nozzle: int, rng: random.Random) -> None:
    """The customer who paid in the app: walks to the released pump and fuels."""
    await asyncio.sleep(rng.uniform(1.0, 3.0))  # from the phone to the nozzle
    if pump.status is DartStatus.AUTHORIZED:
        steps = preset_fill(nozzle, wait_s=10.0, react_s=rng.uniform(0.5, 2.0))
        await Customer(pump, steps, name="pay_at_pump").run()


async def serve(
    sims: Sequence[DartLineSimulator],
    plan: ServePlan,
    stop: asyncio.Event,
    emit: Callable[[str], None],
    warn: Callable[[str], None],
) -> int:
    """Run the lines until `stop`: customers, the control socket, a script or the console."""
    customers = CustomerSwitch(sims, mean_interval_s=plan.mean_interval_s, seed=plan.seed)
    controller = SimController(
        [
            ControlledPump(plan.numbers[(sim.name, pump.address)], sim, pump)
            for sim in sims
            for pump in sim.pumps
        ],
        customers=customers,
    )
    socket = ControlSocket(controller, plan.control_socket) if plan.control_socket else None
    status = 0
    try:
        if socket is not None:
            await socket.start()
            emit(f"control socket: {socket.path}")
        if plan.customers == "random":
            customers.set("random")
        emit("simulating; Ctrl-C to stop")
        async with asyncio.TaskGroup() as group:
            session = None
            if plan.script is not None or plan.script_from_stdin or plan.console:
                session = group.create_task(
                    run_session(controller, plan, stop, emit, warn), name="control-session"
                )
            await stop.wait()
            if session is not None:
                session.cancel()
        if session is not None and not session.cancelled():
            status = session.result()
    finally:
        if socket is not None:
            await socket.close()
        controller.close()
        await customers.aclose()
    return status


def simulation() -> DispenserSimulation:
    return DispenserSimulation(
        line=line,
        random_customers=random_customers,
        paying_customer=paying_customer,
        serve=serve,
    )
