"""One chaos campaign: the real daemon (`edgectl run`) on simulated DART lines and IFSF
dispenser nodes on loopback that outlive it, customers at every pump, a real broker and a
cloud sending signed orders; SIGKILLs at random moments or line noise; then a clean run that
lets everything settle, and the audit."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chaos.ledger import Figures, Ledger, audit, crashes_in, meters
from drivers.ifsf.dispenser import Fill as IfsfFill
from drivers.ifsf.dispenser import HangUp as IfsfHangUp
from drivers.ifsf.dispenser import Lift as IfsfLift
from drivers.ifsf.dispenser import Pause
from drivers.ifsf.dispenser import Step as IfsfStep
from drivers.wayne_dart.codec import DartStatus
from drivers.wayne_dart.sim import (
    DartLineSimulator,
    FillUntil,
    HangUp,
    Lift,
    Release,
    SimPump,
    Step,
    Wait,
    hang_up_mid_fill,
    normal_fill,
    preset_fill,
    walk_away,
)
from edgectl.config import Config, load_config
from tests.cloudkit import cloud_section
from tests.drivers.ifsf.loopback import free_udp_port
from tests.mqttkit import MosquittoBroker
from tests.soakkit import (
    IFSF_NODES,
    IFSF_NOISE,
    IFSF_PRODUCTS,
    NOISE_ONLY,
    IfsfBooks,
    SoakCloud,
    Target,
    ifsf_line_toml,
    line_faults,
    order_request,
)
from tests.stationkit import (
    GRADES,
    DaemonProcess,
    count_when_ready,
    rows,
    start_simulators,
    station_toml,
)

Mode = Literal["auto", "cloud"]

# What a customer does, and how often. "linger": the nozzle stays lifted a while after the
# preset stopped the flow; "second": as soon as the fill is over, the next customer lifts the
# pump's other nozzle, while the station is still reading the first fill.
AUTO_SCRIPTS = {"fill": 35, "preset": 12, "linger": 18, "second": 18, "walk_away": 7, "mid": 10}
CLOUD_SCRIPTS = {
    "fill": 30,
    "preset": 10,
    "linger": 15,
    "second": 15,
    "walk_away": 8,
    "no_show": 8,
    "cancel": 14,
}
WAIT_S = 25.0  # how long a customer waits with the nozzle out for the pump to be released
KILL_TRIGGERS = {"moment": 6, "fill_end": 2, "sale": 2}


@dataclass
class Tally:
    """What the harness itself counted while the campaign ran."""

    kills: int = 0
    rounds: int = 0
    customers: Counter[str] = field(default_factory=Counter)
    unserved: Counter[str] = field(default_factory=Counter)  # script -> customers left dry
    accepted: set[str] = field(default_factory=set)
    refused: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    died: list[str] = field(default_factory=list)  # daemons that ended without being killed
    errors: list[str] = field(default_factory=list)  # the harness's own failures


class Campaign:
    """One station directory, its simulators, broker, cloud, customers and daemon."""

    def __init__(
        self,
        name: str,
        mode: Mode,
        directory: Path,
        seed: int,
        *,
        patience_s: float = WAIT_S,
        max_uptime_s: float = 4.0,
        authorize_timeout_s: float = 30,
        ifsf: bool = True,
    ) -> None:
        """`ifsf`: an IFSF line of IFSF_NODES (pumps 5-8) besides the two DART lines."""
        self.name = name
        self.patience_s = patience_s
        self.max_uptime_s = max_uptime_s
        self.mode = mode
        self.dir = directory
        self.seed = seed
        self.rng = random.Random(seed)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.broker = MosquittoBroker(self.dir)
        self.key = Ed25519PrivateKey.generate()
        extra = cloud_section(self.broker.port, self.key)
        extra += f'\n[control]\nsocket = "{self.dir / "control.sock"}"\n'
        text = station_toml(
            self.dir,
            mode=mode,
            lines=2,
            pumps_per_line=2,
            authorize_timeout_s=authorize_timeout_s,
            extra=extra,
        )
        self.ifsf: IfsfBooks | None = None
        if ifsf:
            cd_hb, node_hbs = free_udp_port(), [free_udp_port() for _ in IFSF_NODES]
            text += "\n" + ifsf_line_toml(5, cd_hb, node_hbs)
            prices = [GRADES[g] for g in IFSF_PRODUCTS]
            self.ifsf = IfsfBooks(5, cd_hb, node_hbs, prices)
        self.config_path = self.dir / "station.toml"
        self.config_path.write_text(text)
        self.config: Config = load_config(self.config_path)
        self.db = self.config.store.path
        self.log_path = self.dir / "daemon.log"
        self.daemon = DaemonProcess(self.config_path, self.log_path)
        self.ledger = Ledger()
        self.tally = Tally()
        self.closing = asyncio.Event()
        self.sims: dict[str, DartLineSimulator] = {}
        self.pumps: dict[int, SimPump] = {}
        self.cloud: SoakCloud | None = None
        self.stranded: list[int] = []

    # ------------------------------------------------------------------ the whole campaign
    async def run(self, *, rounds: int = 0, noise_s: float = 0.0) -> Figures:
        started = time.monotonic()
        figures = Figures()
        await asyncio.to_thread(self.broker.start)
        self.sims = start_simulators(self.config)
        try:
            for p in self.config.pumps:
                if p.line in self.sims:
                    self.pumps[p.number] = self.sims[p.line].pump(p.address)
                    self.ledger.watch(p.number, self.pumps[p.number])
            if self.ifsf is not None:
                self.ledger.watch_ifsf(self.ifsf)
                await self.ifsf.sim.start()
            async with SoakCloud(self.broker.port, self.config.station.id, self.key) as cloud:
                self.cloud = cloud
                lanes = [
                    asyncio.create_task(self._lane(p.number), name=f"lane-{p.number}")
                    for p in self.config.pumps
                ]
                try:
                    if rounds:
                        await self._kill_rounds(rounds)
                    if noise_s:
                        await self._noise(noise_s)
                    await self._finish(lanes)
                finally:
                    for lane in lanes:
                        lane.cancel()
                    await asyncio.gather(*lanes, return_exceptions=True)
                    self.daemon.cleanup()
                await asyncio.sleep(1)  # the last messages PUBACKed to the station reach us
                self._audit(figures)
        finally:
            for sim in self.sims.values():
                sim.stop()
            if self.ifsf is not None:
                await self.ifsf.sim.stop()
            await asyncio.to_thread(self.broker.stop)
        figures.seconds = time.monotonic() - started
        return figures

    # ------------------------------------------------------------------ faults
    async def _kill_rounds(self, rounds: int) -> None:
        rng = random.Random(self.rng.random())
        for number in range(1, rounds + 1):
            self.daemon.start()
            self.tally.rounds += 1
            trigger = rng.choices(list(KILL_TRIGGERS), list(KILL_TRIGGERS.values()))[0]
            await self._until_kill(trigger, rng)
            status = self.daemon.exit_status
            if status is not None:
                self.tally.died.append(f"round {number}: the daemon exited by itself ({status})")
            else:
                self.daemon.kill()
                self.tally.kills += 1
            if number % 10 == 0:
                sales = max(0, count_when_ready(self.db, "sales"))
                progress(f"{self.name}: round {number}/{rounds}, {sales} sales so far")
            await asyncio.sleep(rng.uniform(0.0, 1.0))

    async def _until_kill(self, trigger: str, rng: random.Random) -> None:
        """Wait for the moment to kill: a random one, just after a fill ends at some pump
        (the station is reading it), or just after a sale is committed (before the reset)."""
        if trigger == "moment":
            await self._alive_for(rng.uniform(0.2, self.max_uptime_s))
        elif trigger == "fill_end":
            mark = time.monotonic()
            await self._alive_until(lambda: self.ledger.fill_ended_at > mark, 8.0)
            await self._alive_for(rng.uniform(0.0, 0.3))
        else:
            sold = max(0, count_when_ready(self.db, "sales"))
            await self._alive_until(
                lambda: count_when_ready(self.db, "sales") > sold, 8.0, every=0.005
            )
            await self._alive_for(rng.uniform(0.0, 0.05))

    async def _alive_for(self, seconds: float) -> None:
        await self._alive_until(lambda: False, seconds)

    async def _alive_until(
        self, predicate: Callable[[], bool], seconds: float, *, every: float = 0.02
    ) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.daemon.exit_status is None:
            if predicate():
                return
            await asyncio.sleep(every)

    async def _noise(self, seconds: float) -> None:
        self.daemon.start()
        await self._online()
        loop = asyncio.get_running_loop()
        rng = random.Random(self.rng.random())
        until_t = loop.time() + seconds
        noise = [line_faults(polled_pumps(self.sims), rng, until_t, self.tally.faults, NOISE_ONLY)]
        if self.ifsf is not None:
            ifsf_rng = random.Random(rng.random())
            counts = self.tally.faults
            noise.append(self.ifsf.faults(self.ifsf.heard, ifsf_rng, until_t, counts, IFSF_NOISE))
        await asyncio.gather(*noise)
        if self.daemon.exit_status is not None:
            self.tally.died.append(f"line noise: the daemon exited ({self.daemon.exit_status})")

    async def _online(self, timeout: float = 20.0) -> None:
        nozzles = sum(len(p.nozzles) for p in self.config.pumps)
        await self._alive_until(
            lambda: count_when_ready(self.db, "nozzle_totals") == nozzles, timeout
        )

    # ------------------------------------------------------------------ the clean ending
    async def _finish(self, lanes: list[asyncio.Task[None]]) -> None:
        """A clean run: customers leave, every pump serves one more customer (a stranded pump
        cannot), the outbox drains, the daemon stops on SIGTERM."""
        if self.daemon.exit_status is not None or self.daemon.proc is None:
            self.daemon.start()
        await self._online()
        self.closing.set()
        progress(f"{self.name}: final clean run, waiting for the last customers")
        done, pending = await asyncio.wait(lanes, timeout=self.patience_s * 3 + 120)
        for lane in done:
            if lane.exception() is not None:
                self.tally.errors.append(f"{lane.get_name()}: {lane.exception()!r}")
        for lane in pending:
            self.tally.errors.append(f"{lane.get_name()}: customers still there at the end")
        progress(f"{self.name}: customers gone, pumps settling")
        await self._settle(30)
        progress(f"{self.name}: one more customer at every pump")
        numbers = [p.number for p in self.config.pumps]
        served = await asyncio.gather(*(self._probe(number) for number in numbers))
        self.stranded = [n for n, ok in zip(numbers, served, strict=True) if not ok]
        await self._settle(30)
        progress(f"{self.name}: outbox draining")
        await self._until(lambda: outbox_depth(self.db) == 0, 60)
        if self.daemon.exit_status is None:
            status = await asyncio.to_thread(self.daemon.terminate)
            if status != 0:
                self.tally.died.append(f"SIGTERM at the end: exit status {status}")
        else:
            self.tally.died.append(f"the final run ended by itself ({self.daemon.exit_status})")

    async def _settle(self, seconds: float) -> None:
        def busy() -> dict[int, tuple[object, ...]]:
            found: dict[int, tuple[object, ...]] = {
                n: (p.status.name, p.nozzle_out)
                for n, p in self.pumps.items()
                if p.status is not DartStatus.RESET or p.nozzle_out is not None
            }
            if self.ifsf is not None:
                found.update({b[0]: b[1:] for b in self.ifsf.busy()})
            return found

        if not await self._until(lambda: not busy(), seconds):
            progress(f"{self.name}: not at rest after {seconds:.0f} s: {busy()}")

    async def _until(self, predicate: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not predicate():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _probe(self, number: int) -> bool:
        """One last customer: False when the pump never sells to them."""
        nozzle = self._nozzles(number)[0]
        rng = random.Random(number)
        if self.mode == "auto":
            with self.ledger.attending(number, f"{self.name}/pump {number} last customer"):
                return bool(await self._serve(number, nozzle, "probe", rng))
        order_id = f"{self.name}-probe-{number}"
        with self.ledger.attending(number, f"order {order_id} (last customer)"):
            for _ in range(3):
                if await self._order(number, order_id, nozzle, Decimal("20.00")):
                    volume = await self._serve(number, nozzle, "probe", rng)
                    await self._order_end(order_id)
                    return bool(volume)
                await asyncio.sleep(10)
        return False

    # ------------------------------------------------------------------ customers
    async def _lane(self, number: int) -> None:
        rng = random.Random(self.rng.random() + number)
        visit = 0
        while not self.closing.is_set():
            visit += 1
            if self.mode == "auto":
                await self._auto_customer(number, visit, rng)
            else:
                await self._cloud_customer(number, visit, rng)
            await asyncio.sleep(rng.uniform(0.2, 1.5))

    async def _auto_customer(self, number: int, visit: int, rng: random.Random) -> None:
        nozzles = self._nozzles(number)
        script = rng.choices(list(AUTO_SCRIPTS), list(AUTO_SCRIPTS.values()))[0]
        nozzle = rng.choice(nozzles)
        self.tally.customers[script] += 1
        token = f"{self.name}/pump {number} visit {visit} ({script})"
        with self.ledger.attending(number, token):
            drawn = await self._serve(number, nozzle, script, rng)
        if not drawn and script != "walk_away":
            self.tally.unserved[script] += 1
        if script == "second":
            await asyncio.sleep(rng.uniform(0.0, 0.08))
            other = next(n for n in nozzles if n != nozzle)
            self.tally.customers["second_lift"] += 1
            with self.ledger.attending(number, f"{token}, the other nozzle"):
                if not await self._serve(number, other, "fill", rng, preset=Decimal(40)):
                    self.tally.unserved["second_lift"] += 1

    async def _cloud_customer(self, number: int, visit: int, rng: random.Random) -> None:
        script = rng.choices(list(CLOUD_SCRIPTS), list(CLOUD_SCRIPTS.values()))[0]
        nozzles = self._nozzles(number)
        nozzle = rng.choice(nozzles)
        order_id = f"{self.name}-{number}-{visit}"
        preset = Decimal(rng.randrange(3000, 15000)) / 100
        lifetime = {"no_show": 3.0, "walk_away": 8.0}.get(script)
        with self.ledger.attending(number, f"order {order_id} ({script})"):
            if not await self._order(number, order_id, nozzle, preset, lifetime_s=lifetime):
                await asyncio.sleep(rng.uniform(0.5, 1.5))
                return
            self.tally.customers[script] += 1
            if script == "cancel":
                await asyncio.sleep(rng.uniform(0.3, 1.5))
                assert self.cloud is not None
                with contextlib.suppress(AssertionError):
                    await self.cloud.ask("cancel", {"order_id": order_id})
            elif script != "no_show":
                drawn = await self._serve(number, nozzle, script, rng, preset=preset)
                if not drawn and script != "walk_away":
                    self.tally.unserved[script] += 1
                if script == "second":
                    # Nobody paid for the other nozzle: lifted, put back when nothing happens.
                    await asyncio.sleep(rng.uniform(0.0, 0.08))
                    other = next(n for n in nozzles if n != nozzle)
                    await self._serve(number, other, "stay", rng)
            await self._order_end(order_id)

    def _nozzles(self, number: int) -> list[int]:
        return sorted(self.config.pump(number).nozzles)

    async def _serve(
        self,
        number: int,
        nozzle: int,
        script: str,
        rng: random.Random,
        *,
        preset: Decimal | None = None,
    ) -> Decimal:
        """One customer of `script` at pump `number`: the litres they drew."""
        if self.ifsf is not None and number in self.ifsf.fps:
            steps = ifsf_steps(script, nozzle, rng, self.patience_s, preset)
            return await self.ledger.serve_ifsf(number, self.ifsf, nozzle, steps)
        pump = self.pumps[number]
        dart = self._steps(script, nozzle, rng, preset=preset)
        return await self.ledger.serve(number, pump, nozzle, dart, script)

    def _steps(
        self, script: str, nozzle: int, rng: random.Random, *, preset: Decimal | None = None
    ) -> list[Step]:
        react = rng.uniform(0.2, 1.2)
        if script == "probe":
            return normal_fill(nozzle, Decimal("3.00"), wait_s=45, react_s=0.2)
        if script == "stay":
            return [Lift(nozzle), Wait(rng.uniform(0.5, 3.0)), HangUp()]
        if script in ("fill", "second"):
            top = preset if preset is not None else Decimal(60)
            amount = (top * Decimal(rng.uniform(0.1, 0.9))).quantize(Decimal("0.01"))
            return normal_fill(nozzle, amount, wait_s=self.patience_s, react_s=react)
        if script == "preset":
            return preset_fill(nozzle, wait_s=self.patience_s, react_s=react)
        if script == "linger":
            steps = preset_fill(nozzle, wait_s=self.patience_s, react_s=react)[:-2]
            assert isinstance(steps[-1], FillUntil)
            return [*steps, Release(), Wait(rng.uniform(1.0, 8.0)), HangUp()]
        if script == "walk_away":
            return walk_away(nozzle, wait_s=self.patience_s, linger_s=rng.uniform(0.5, 3.0))
        if script == "mid":
            return hang_up_mid_fill(
                nozzle, rng.uniform(0.2, 2.0), wait_s=self.patience_s, react_s=react
            )
        raise ValueError(f"no customer script {script!r}")

    async def _order(
        self,
        number: int,
        order_id: str,
        nozzle: int,
        preset: Decimal,
        *,
        lifetime_s: float | None = None,
    ) -> bool:
        """Send a signed authorize; True when the station accepted it."""
        assert self.cloud is not None
        grade = self.config.pump(number).nozzles[nozzle]
        data = order_request(order_id, number, grade, preset, lifetime_s=lifetime_s)
        try:
            result = await self.cloud.ask("authorize", data)
        except AssertionError:
            self.tally.refused["unanswered"] += 1
            return False
        if result["status"] != "accepted":
            self.tally.refused[str(result.get("code"))] += 1
            return False
        self.tally.accepted.add(order_id)
        return True

    async def _order_end(self, order_id: str) -> None:
        assert self.cloud is not None
        cloud = self.cloud
        await self._until(lambda: cloud.final_status(order_id) is not None, 120)

    # ------------------------------------------------------------------ the books
    def _audit(self, figures: Figures) -> None:
        tally = self.tally
        figures.rounds += tally.rounds
        figures.kills += tally.kills
        figures.customers += tally.customers.total()
        figures.unserved += tally.unserved.total()
        if tally.unserved:
            figures.notes.append(f"customers left without fuel, by script: {dict(tally.unserved)}")
        figures.faults += tally.faults.total()
        figures.stranded_pumps += len(self.stranded)
        figures.notes += [f"pump {n} sold nothing to its last customer" for n in self.stranded]
        log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        crashed = crashes_in(log)
        figures.crashes += len(crashed) + len(tally.died)
        figures.harness_errors += len(tally.errors)
        figures.notes += tally.died + crashed[:5] + tally.errors
        sales = rows(self.db, "SELECT * FROM sales ORDER BY id")
        orders = rows(self.db, "SELECT * FROM orders")
        assert self.cloud is not None
        cloud = self.cloud
        metered = meters(self.pumps)
        if self.ifsf is not None:
            metered.update(self.ifsf.meters())
            self._audit_ifsf(figures)
        audit(
            figures,
            self.ledger,
            sales,
            metered,
            published=[m["data"]["sale_id"] for m in cloud.on("evt/sale")],
            orders=orders,
            accepted=tally.accepted,
            cloud_final={o: cloud.final_status(o) for o in tally.accepted},
        )
        figures.notes = [f"{self.name}: {note}" for note in figures.notes]

    def _audit_ifsf(self, figures: Figures) -> None:
        """What only an IFSF dispenser can show: sales the station never cleared from its
        transaction buffer (lost or sold twice the ledger's fills and meters show)."""
        assert self.ifsf is not None
        for number, fp in self.ifsf.fps.items():
            seqs = [t.seq for t in fp.point.unpaid()]
            if seqs:
                figures.uncleared += len(seqs)
                figures.notes.append(f"pump {number}: sales {seqs} left in the dispenser's buffer")


def ifsf_steps(
    script: str, nozzle: int, rng: random.Random, patience_s: float, preset: Decimal | None
) -> list[IfsfStep]:
    """The customer of `script` (those of _steps) at an IFSF fuelling point."""
    if script == "probe":
        return [IfsfLift(nozzle), IfsfFill(amount=Decimal("3.00"), wait_s=45), IfsfHangUp()]
    if script in ("stay", "walk_away"):  # lifted, put back with nothing drawn
        return [IfsfLift(nozzle), Pause(rng.uniform(0.5, 3.0)), IfsfHangUp()]
    if script in ("fill", "second", "mid"):  # "mid": let go at a small amount, hung up
        top = preset if preset is not None else Decimal(60)
        share = rng.uniform(0.02, 0.2) if script == "mid" else rng.uniform(0.1, 0.9)
        amount = (top * Decimal(share)).quantize(Decimal("0.01"))
        return [IfsfLift(nozzle), IfsfFill(amount=amount, wait_s=patience_s), IfsfHangUp()]
    if script in ("preset", "linger"):
        linger = [Pause(rng.uniform(1.0, 8.0))] if script == "linger" else []
        return [IfsfLift(nozzle), IfsfFill(wait_s=patience_s), *linger, IfsfHangUp()]
    raise ValueError(f"no customer script {script!r}")


def polled_pumps(sims: dict[str, DartLineSimulator]) -> Callable[[], list[Target]]:
    """The pumps the station polled since the last call (it talks to them: it has them online)."""
    seen: dict[Target, int] = {}

    def targets() -> list[Target]:
        found = []
        for sim in sims.values():
            for pump in sim.pumps:
                polls = pump.counters.polls
                if polls > seen.get((sim, pump.address), polls):
                    found.append((sim, pump.address))
                seen[(sim, pump.address)] = polls
        return found

    return targets


def outbox_depth(db: Path) -> int:
    try:
        return int(rows(db, "SELECT COUNT(*) AS n FROM outbox")[0]["n"])
    except Exception:  # not created yet, or locked for a moment: not drained
        return -1


_STARTED = time.monotonic()


def progress(message: str) -> None:
    print(f"chaos {time.monotonic() - _STARTED:6.1f} s: {message}", flush=True)
