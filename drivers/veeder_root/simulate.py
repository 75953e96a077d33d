"""A Veeder-Root TLS console simulated over tank physics, for `edgectl demo` (found through
the registry)."""

from __future__ import annotations

from drivers.simulation import GaugePlan, GaugeSimulation
from drivers.tank_sim import SimTank, TankChart, TankFarm, TankSpec
from drivers.veeder_root.sim import TlsConsole, TlsConsoleSimulator


def console(plan: GaugePlan) -> tuple[TankFarm, TlsConsoleSimulator]:
    """The tanks' physics and the console serving a pty linked at the gauge's port."""
    tanks = [
        SimTank(
            TankSpec(
                t.gauge_tank,
                TankChart.from_points(t.chart),
                product=t.product,
                density15=t.density15,
            ),
            product_l=t.product_l,
        )
        for t in plan.tanks
    ]
    farm = TankFarm(tanks)
    sim = TlsConsoleSimulator(
        TlsConsole(farm, security_code=plan.security_code),
        terminator=plan.terminator,
        etx=plan.etx,
        name=f"tls-{plan.name}",
    )
    sim.serve_pty(plan.port)
    return farm, sim


def simulation() -> GaugeSimulation:
    return GaugeSimulation(console=console)
