"""Store faults against the real daemon: a store it must refuse (corrupt, another station's, a
foreign -wal, a read-only directory, a full disk) must be refused at start, in one line, with
an exit status other than 0 and nothing changed on disk; a disk that fills up while selling
must leave the daemon running, alarmed, and record the held fill once space returns.

The disks are small tmpfs mounts (we run as root); where mounting is not permitted the cases
that need one are reported as not run."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from chaos.campaign import progress
from chaos.ledger import Figures, Ledger, audit, crashes_in, meters
from drivers.wayne_dart.codec import DartStatus
from drivers.wayne_dart.sim import DartLineSimulator, SimPump, normal_fill
from edgectl.config import load_config
from tests.stationkit import (
    DaemonProcess,
    count_when_ready,
    rows,
    start_simulators,
    station_toml,
)

REFUSE_WITHIN_S = 10.0  # a daemon still running after this has accepted the store


@dataclass
class Station:
    """A config, simulated lines and the daemon, with the store at `store` (which may be on
    another file system than the rest)."""

    dir: Path
    store: Path
    station_id: str = "TEST-01"

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        text = station_toml(self.dir, mode="auto")
        text = text.replace(f'path = "{self.dir / "edgectl.db"}"', f'path = "{self.store}"')
        text = text.replace('id = "TEST-01"', f'id = "{self.station_id}"')
        text += f'\n[control]\nsocket = "{self.dir / "control.sock"}"\n'
        self.config_path = self.dir / "station.toml"
        self.config_path.write_text(text)
        self.config = load_config(self.config_path)
        self.log = self.dir / "daemon.log"
        self.daemon = DaemonProcess(self.config_path, self.log)
        self.sims: dict[str, DartLineSimulator] = {}
        self.pumps: dict[int, SimPump] = {}

    def __enter__(self) -> Station:
        self.sims = start_simulators(self.config)
        for p in self.config.pumps:
            self.pumps[p.number] = self.sims[p.line].pump(p.address)
        return self

    def __exit__(self, *exc: object) -> None:
        self.daemon.cleanup()
        for sim in self.sims.values():
            sim.stop()

    async def online(self, timeout: float = 20.0) -> bool:
        nozzles = sum(len(p.nozzles) for p in self.config.pumps)
        return await wait_for(
            lambda: (
                count_when_ready(self.store, "nozzle_totals") == nozzles
                or self.daemon.exit_status is not None
            ),
            timeout,
        ) and (self.daemon.exit_status is None)

    def refusal(self) -> tuple[int | None, str, str]:
        """Run the daemon once: (exit status or None if it kept running, stderr, stdout)."""
        command = [sys.executable, "-m", "edgectl", "run", "--config", str(self.config_path)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=REFUSE_WITHIN_S)
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
            return None, err, ""
        return done.returncode, done.stderr, done.stdout


async def wait_for(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def snapshot(directory: Path) -> dict[str, str]:
    """Every file beside the store, by content; not the -shm (an index SQLite rebuilds) nor
    the daemon's empty single-instance `.lock`, neither of which holds data."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        for p in sorted(directory.iterdir())
        if p.is_file() and not p.name.endswith(("-shm", ".lock"))
    }


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    names = sorted(set(before) | set(after))
    return [
        f"{n} {'appeared' if n not in before else 'vanished' if n not in after else 'changed'}"
        for n in names
        if before.get(n) != after.get(n)
    ]


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[bool]:
    """A small tmpfs at `path`; yields False (and `path` is a plain directory) when mounting
    is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
            capture_output=True,
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill_up(directory: Path) -> Path:
    """Take every free byte of `directory`'s file system; remove the file to give it back."""
    filler = directory / "filler"
    chunk = b"\0" * (1 << 16)
    with filler.open("wb", buffering=0) as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(chunk)
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 512)
    return filler


def remount(path: Path, options: str) -> bool:
    return subprocess.run(["mount", "-o", f"remount,{options}", str(path)]).returncode == 0


# ------------------------------------------------------------------------------ stores
async def make_store(directory: Path, station_id: str = "TEST-01", *, sales: int = 2) -> Path:
    """A store the real daemon made and sold on, stopped cleanly; returns its path."""
    station = Station(directory, directory / "edgectl.db", station_id)
    with station:
        station.daemon.start()
        for n in range(sales):
            number = 1 + n % len(station.pumps)
            steps = normal_fill(1, Decimal("5.00"), wait_s=30, react_s=0.1)
            await Ledger().serve(number, station.pumps[number], 1, steps, "customer")
        if not await wait_for(lambda: count_when_ready(station.store, "sales") >= 1, 20):
            raise RuntimeError(f"no sales in a new store: see {station.log}")
        station.daemon.terminate()
    return station.store


async def make_foreign_wal(directory: Path) -> Path:
    """The -wal of another station's store, as a SIGKILL leaves it (changes not yet folded
    into the main file)."""
    station = Station(directory, directory / "edgectl.db", "OTHER-99")
    with station:
        station.daemon.start()
        steps = normal_fill(1, Decimal("4.00"), wait_s=30, react_s=0.1)
        await Ledger().serve(1, station.pumps[1], 1, steps, "customer")
        if not await wait_for(lambda: count_when_ready(station.store, "sales") >= 1, 20):
            raise RuntimeError(f"no sale in the other station's store: see {station.log}")
        station.daemon.kill()
    wal = directory / "edgectl.db-wal"
    if not wal.exists() or wal.stat().st_size == 0:
        raise RuntimeError("the other station left no -wal")
    return wal


def corrupt_pages(db: Path, rng: random.Random) -> None:
    """Scribble over the headers of pages past the first, as torn writes would: the file
    still says SQLite, its tables no longer hold together."""
    data = bytearray(db.read_bytes())
    size = int.from_bytes(data[16:18], "big") or 65536
    pages = range(1, len(data) // size)
    for page in rng.sample(pages, max(1, len(pages) // 2)):
        data[page * size : page * size + 16] = rng.randbytes(16)
    db.write_bytes(bytes(data))


# ------------------------------------------------------------------------------ the cases
@dataclass
class Outcome:
    case: str
    ok: bool
    detail: str


def refused(case: str, station: Station, before: dict[str, str], cause: tuple[str, ...]) -> Outcome:
    """Start the daemon on a store it must refuse and judge how it did."""
    status, err, _ = station.refusal()
    after = snapshot(station.store.parent)
    problems = []
    if status is None:
        problems.append(f"the daemon started on it (still running after {REFUSE_WITHIN_S:.0f} s)")
    elif status == 0:
        problems.append("exit status 0")
    lines = err.strip().splitlines()
    if "Traceback" in err:
        problems.append("a traceback on stderr")
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr")
    reason = lines[-1] if lines else ""
    if not any(word in reason.lower() for word in cause):
        problems.append(f"the reason names no {' / '.join(cause)}")
    problems += [f"on disk: {c}" for c in changes(before, after)]
    detail = "; ".join(problems) + (f" — said: {reason[:240]!r}" if reason else "")
    return Outcome(case, not problems, detail if problems else reason[:240])


async def refusals(work: Path, rng: random.Random) -> list[Outcome]:
    ours = await make_store(work / "made-ours")
    theirs = await make_store(work / "made-theirs", "OTHER-99", sales=1)
    their_wal = await make_foreign_wal(work / "made-their-wal")
    outcomes: list[Outcome] = []

    def station(case: str, store_dir: Path | None = None) -> Station:
        directory = work / case
        store = (store_dir or directory) / "edgectl.db"
        return Station(directory, store)

    def judge(case: str, st: Station, cause: tuple[str, ...]) -> None:
        outcome = refused(case, st, snapshot(st.store.parent), cause)
        outcomes.append(outcome)
        progress(f"store: {case}: {'ok' if outcome.ok else 'FAILED'}: {outcome.detail}")

    st = station("corrupt")
    shutil.copy(ours, st.store)
    corrupt_pages(st.store, rng)
    judge("corrupt store", st, ("corrupt", "damaged"))

    st = station("not-a-database")
    st.store.write_bytes(rng.randbytes(40_000))
    judge("not a database", st, ("corrupt", "damaged", "not a database"))

    st = station("foreign")
    shutil.copy(theirs, st.store)
    judge("foreign store", st, ("another station", "other-99", "foreign", "not this station"))

    st = station("foreign-wal")
    shutil.copy(ours, st.store)
    shutil.copy(their_wal, st.store.with_name("edgectl.db-wal"))
    judge("foreign -wal", st, ("-wal", "wal"))

    with tmpfs(work / "ro-mount", "4m") as mounted:
        if not mounted:
            outcomes.append(Outcome("read-only directory", False, "not run: mount not permitted"))
        else:
            st = station("read-only", work / "ro-mount")
            shutil.copy(ours, st.store)
            remount(work / "ro-mount", "ro")
            judge("read-only directory", st, ("read-only", "read only", "permission"))

    with tmpfs(work / "full-mount", "4m") as mounted:
        if not mounted:
            outcomes.append(Outcome("full disk at start", False, "not run: mount not permitted"))
        else:
            st = station("full", work / "full-mount")
            shutil.copy(ours, st.store)
            fill_up(work / "full-mount")
            judge("full disk at start", st, ("full", "no space", "space left"))
    return outcomes


async def full_while_selling(work: Path, figures: Figures) -> Outcome:
    """Sell, fill the disk, sell again: the daemon keeps running and alarms, the pump keeps
    the fill, and once space is back the fill is recorded once and selling goes on."""
    case = "full disk while selling"
    mount = work / "selling-mount"
    with tmpfs(mount, "4m") as mounted:
        if not mounted:
            return Outcome(case, False, "not run: mount not permitted")
        station = Station(work / "selling", mount / "edgectl.db")
        ledger = Ledger()
        problems: list[str] = []
        with station:
            pumps = station.pumps
            pump = pumps[1]
            station.daemon.start()
            if not await station.online():
                return Outcome(case, False, f"did not start: {station.log.read_text()[-500:]}")

            def sold() -> int:
                return len(rows(station.store, "SELECT id FROM sales"))

            def customer(amount: str) -> list:  # type: ignore[type-arg]
                return normal_fill(1, Decimal(amount), wait_s=20, react_s=0.1)

            await ledger.serve(1, pump, 1, customer("8.00"), "before")
            await wait_for(lambda: sold() == 1 and pump.status is DartStatus.RESET, 10)
            log_at = station.log.stat().st_size
            steps = [*customer("12.00")]
            fill = asyncio.create_task(ledger.serve(1, pump, 1, steps, "while full"))
            await wait_for(lambda: pump.status is DartStatus.FILLING or fill.done(), 20)
            filler = fill_up(mount)  # the disk fills up while fuel flows
            await fill
            await asyncio.sleep(8)
            during = station.log.read_bytes()[log_at:].decode(errors="replace")
            if station.daemon.exit_status is not None:
                problems.append(f"the daemon exited ({station.daemon.exit_status})")
            if sold() != 1:
                problems.append("a sale was recorded on a full disk (was the disk full?)")
            if pump.status is DartStatus.RESET:
                problems.append("the pump was reset before its fill was recorded")
            alarm_words = ("store_full", "no space", "disk full", "store_unwritable")
            if not any(word in during.lower() for word in alarm_words):
                problems.append("no alarm (store_full / store_unwritable) in the log")
            if len(during.splitlines()) > 400:
                problems.append(f"{len(during.splitlines())} log lines in 8 s: no back-off")
            filler.unlink()
            if not await wait_for(lambda: sold() == 2 and pump.status is DartStatus.RESET, 45):
                problems.append("the held fill was not recorded within 45 s of space returning")
            await ledger.serve(1, pump, 1, customer("6.00"), "after")
            if not await wait_for(lambda: sold() == 3, 15):
                problems.append("no sale after space returned")
            status = station.daemon.terminate() if station.daemon.exit_status is None else None
            if status not in (0, None):
                problems.append(f"SIGTERM: exit status {status}")
            alarms = rows(station.store, "SELECT kind, message, cleared_at FROM alarms")
            store_alarms = [a for a in alarms if "store" in a["kind"] or "disk" in a["message"]]
            if not store_alarms:
                problems.append("no store alarm recorded once space returned")
            elif any(a["cleared_at"] is None for a in store_alarms):
                problems.append("the store alarm was never cleared")
            crashed = crashes_in(station.log.read_text(errors="replace"))
            figures.crashes += len(crashed)
            figures.notes += [f"store: {line}" for line in crashed[:3]]
            sales = rows(station.store, "SELECT * FROM sales")
            audit(figures, ledger, sales, meters(pumps))
        detail = "; ".join(problems) or "kept running, alarmed, recorded the held fill once"
        return Outcome(case, not problems, detail)


async def run(work: Path, seed: int) -> Figures:
    started = time.monotonic()
    rng = random.Random(seed)
    figures = Figures()
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    outcomes = await refusals(work, rng)
    outcome = await full_while_selling(work, figures)
    progress(f"store: {outcome.case}: {'ok' if outcome.ok else 'FAILED'}: {outcome.detail}")
    outcomes.append(outcome)
    figures.store_cases += len(outcomes)
    for o in outcomes:
        if not o.ok:
            figures.store_mishandled += 1
            figures.notes.append(f"store: {o.case}: {o.detail}")
    figures.seconds = time.monotonic() - started
    return figures
