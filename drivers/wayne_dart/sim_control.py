"""Carries out the DART simulator's control commands on running simulators, from a script,
a console or a Unix socket, so a staging backend can play the customers of a sale.

`sim_commands` turns a line into a command; this module acts on the pumps. Every command
gets one reply line, `ok …` or `error <code> <message>`; a failed command changes nothing
else and never stops the simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Final, Literal, Protocol

import structlog

from drivers.simulation import ServePlan
from drivers.wayne_dart.codec import DartStatus, from_decimal, to_decimal
from drivers.wayne_dart.sim import DartLineSimulator, RandomCustomers, SimPump, wait_until
from drivers.wayne_dart.sim_commands import (
    MAX_LINE,
    USAGE,
    Accept,
    Answer,
    Command,
    CommandSyntaxError,
    ControlError,
    Customers,
    Fill,
    HangUp,
    Help,
    Lift,
    PowerCycle,
    Price,
    PumpRef,
    Quit,
    Refuse,
    Silent,
    Sleep,
    Status,
    WaitFor,
    WaitState,
    WalkAway,
    parse_command,
)

log = structlog.get_logger(__name__)

# Bounds a command waits when it names none.
DEFAULT_AUTHORIZE_WAIT_S: Final = 60.0  # `fill`: the customer gives up after a minute
DEFAULT_FILL_TIMEOUT_S: Final = 600.0  # `fill`: no fill takes longer than ten minutes
DEFAULT_STATE_TIMEOUT_S: Final = 60.0  # `wait PUMP STATE`

_STATE_NAMES: Final = {
    DartStatus.NOT_PROGRAMMED: "not-programmed",
    DartStatus.RESET: "reset",
    DartStatus.AUTHORIZED: "authorized",
    DartStatus.FILLING: "filling",
    DartStatus.FILLING_COMPLETED: "completed",
    DartStatus.MAX_REACHED: "max-reached",
    DartStatus.SWITCHED_OFF: "switched-off",
    DartStatus.SUSPENDED: "suspended",
}
_RELEASED: Final = frozenset({DartStatus.AUTHORIZED, DartStatus.FILLING})
_IN_FILL: Final = frozenset({DartStatus.FILLING, DartStatus.SUSPENDED})
_FOREVER: Final = 1_000_000_000  # NAKs for `refuse` without a count


def state_name(status: DartStatus) -> str:
    return _STATE_NAMES.get(status, status.name.lower())


@dataclass(frozen=True, slots=True)
class ControlledPump:
    """A simulated pump, with the number the station's config gives it and its line."""

    number: int
    line: DartLineSimulator
    pump: SimPump


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply line, and whether the command asked to end its session."""

    line: str
    ok: bool
    quit: bool = False


class CustomerSwitch:
    """Random customers on every simulated line, switched on and off at run time."""

    def __init__(
        self,
        sims: Sequence[DartLineSimulator],
        *,
        mean_interval_s: float = 20.0,
        seed: int | None = None,
    ) -> None:
        self.sims = tuple(sims)
        self.mean_interval_s = mean_interval_s
        self.seed = seed
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def mode(self) -> str:
        return "random" if self._tasks else "none"

    def set(self, mode: Literal["random", "none"]) -> None:
        """Switch them on or off (on the running loop). A customer at a pump when they are
        switched off leaves with the nozzle back in its holster."""
        if mode == "random" and not self._tasks:
            self._tasks = [
                asyncio.get_running_loop().create_task(
                    RandomCustomers(
                        sim,
                        mean_interval_s=self.mean_interval_s,
                        seed=None if self.seed is None else self.seed + index,
                    ).run(),
                    name=f"customers-{sim.name}",
                )
                for index, sim in enumerate(self.sims)
            ]
        elif mode == "none":
            for task in self._tasks:
                task.cancel()
            self._tasks = []

    async def aclose(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass
class _PumpRun:
    """What the controller keeps per pump while it runs."""

    fills: set[asyncio.Task[str]] = field(default_factory=set)
    back_online: asyncio.TimerHandle | None = None


class SimController:
    """The executor: carries out parsed commands on the pumps of running simulators.

    Pumps are named by their configured number (or, where unambiguous, their address).
    Commands from several sessions may run at once; each session runs its own in order.
    Runs on one asyncio loop; the pumps themselves are thread-safe.
    """

    def __init__(
        self,
        pumps: Sequence[ControlledPump],
        *,
        customers: CustomerSwitch | None = None,
    ) -> None:
        numbers = [p.number for p in pumps]
        if len(set(numbers)) != len(numbers):
            raise ValueError("two controlled pumps share a number")
        self.pumps = {p.number: p for p in sorted(pumps, key=lambda p: p.number)}
        self.customers = customers
        self._runs = {number: _PumpRun() for number in self.pumps}

    # ------------------------------------------------------------------ entry points
    async def handle(self, text: str) -> Reply | None:
        """The reply to one line of text; None for a blank or comment line."""
        try:
            command = parse_command(text)
            if command is None:
                return None
            done = await self.execute(command)
        except ControlError as exc:
            return Reply(exc.reply(), ok=False)
        return Reply(f"ok {done}", ok=True, quit=isinstance(command, Quit))

    async def execute(self, command: Command) -> str:
        """Carry out `command`; its `ok` text, or ControlError."""
        if isinstance(command, Lift):
            return self._lift(command)
        if isinstance(command, Fill):
            return await self._fill(command)
        if isinstance(command, HangUp):
            return self._hang_up(command)
        if isinstance(command, WalkAway):
            return self._walk_away(command)
        if isinstance(command, Refuse):
            return self._refuse(command)
        if isinstance(command, Accept):
            target = self._pump(command.pump)
            target.line.stop_refusing(target.pump.address)
            return f"pump={target.number} refusing=0"
        if isinstance(command, Silent):
            return self._silent(command)
        if isinstance(command, Answer):
            return self._answer(command)
        if isinstance(command, Sleep):
            await asyncio.sleep(float(command.seconds))
            return f"waited={command.seconds}"
        if isinstance(command, WaitFor):
            return await self._wait_for(command)
        if isinstance(command, Status):
            return "; ".join(self._status(p) for p in self._chosen(command.pump))
        if isinstance(command, Price):
            return "; ".join(self._prices(p) for p in self._chosen(command.pump))
        if isinstance(command, PowerCycle):
            return await self._power_cycle(command)
        if isinstance(command, Customers):
            if self.customers is None:
                raise ControlError("unavailable", "these simulators have no random customers")
            self.customers.set(command.mode)
            return f"customers={self.customers.mode}"
        if isinstance(command, Help):
            return "commands: " + " | ".join(USAGE)
        return "bye"  # Quit: the session ends it

    def close(self) -> None:
        """Cancel what is still scheduled (pumps coming back from `silent SECONDS`)."""
        for run in self._runs.values():
            if run.back_online is not None:
                run.back_online.cancel()
                run.back_online = None
            for task in run.fills:
                task.cancel()

    # ------------------------------------------------------------------ commands
    def _lift(self, command: Lift) -> str:
        target = self._pump(command.pump)
        pump = target.pump
        if command.nozzle not in pump.nozzles:
            raise ControlError(
                "unknown_nozzle",
                f"pump {target.number} has no nozzle {command.nozzle} "
                f"(nozzles: {', '.join(map(str, pump.nozzles))})",
            )
        out = pump.nozzle_out
        if out is not None:
            raise ControlError("wrong_state", f"pump {target.number}: nozzle {out} is already out")
        try:
            pump.lift(command.nozzle)
        except ValueError as exc:  # lifted by a random customer meanwhile
            raise ControlError("wrong_state", f"pump {target.number}: {exc}") from None
        return (
            f"pump={target.number} nozzle={command.nozzle} lifted state={state_name(pump.status)}"
        )

    async def _fill(self, command: Fill) -> str:
        target = self._pump(command.pump)
        pump = target.pump
        volume = self._raw(command.volume, pump.volume_decimals, "volume")
        amount = self._raw(command.amount, pump.amount_decimals, "amount")
        if pump.nozzle_out is None:
            raise ControlError(
                "wrong_state", f"pump {target.number}: no nozzle is out (lift one first)"
            )
        if pump.squeezed:
            raise ControlError("wrong_state", f"pump {target.number} is being filled already")
        if pump.status in _IN_FILL and (
            (volume is not None and pump.volume >= volume)
            or (amount is not None and pump.amount >= amount)
        ):
            raise ControlError(
                "wrong_state", f"pump {target.number}: the fill is past that already"
            )
        # Run as its own task so that `walkaway` on another session can end it.
        task = asyncio.get_running_loop().create_task(
            self._filling(target, command, volume, amount), name=f"fill-{target.number}"
        )
        fills = self._runs[target.number].fills
        fills.add(task)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # our own session is being cancelled
                raise ControlError(
                    "walked_away", f"pump {target.number}: the customer walked away"
                ) from None
            task.cancel()
            raise
        finally:
            fills.discard(task)

    async def _filling(
        self, target: ControlledPump, command: Fill, volume: int | None, amount: int | None
    ) -> str:
        pump = target.pump
        wait_s = _seconds(command.wait_s, DEFAULT_AUTHORIZE_WAIT_S)
        released = await wait_until(
            pump, lambda: pump.status in _RELEASED or pump.nozzle_out is None, wait_s
        )
        if pump.nozzle_out is None:
            raise ControlError("wrong_state", f"pump {target.number}: the nozzle was hung up")
        if not released:
            raise ControlError(
                "not_authorized",
                f"pump {target.number} was not authorized within {wait_s:g} s "
                f"(state {state_name(pump.status)})",
            )
        if command.rate_l_per_min is not None:
            pump.set_flow_rate(float(command.rate_l_per_min) / 60)
        pump.squeeze(stop_volume=volume, stop_amount=amount)
        try:
            if pump.status is DartStatus.AUTHORIZED:
                raise ControlError(
                    "nozzle_not_allowed",
                    f"pump {target.number}: no fuel flows from nozzle {pump.nozzle_out} "
                    "(the authorization does not allow it)",
                )
            timeout_s = _seconds(command.timeout_s, DEFAULT_FILL_TIMEOUT_S)
            ended = await wait_until(
                pump,
                lambda: not pump.squeezed or pump.status not in _IN_FILL,
                timeout_s,
                wake=pump.seconds_until,
            )
        finally:
            pump.release()
        if not ended:
            raise ControlError(
                "timeout",
                f"pump {target.number}: still filling after {timeout_s:g} s "
                f"({self._figures(target)}); the trigger is let go",
            )
        return (
            f"pump={target.number} filled state={state_name(pump.status)} {self._figures(target)}"
        )

    def _hang_up(self, command: HangUp) -> str:
        target = self._pump(command.pump)
        if target.pump.nozzle_out is None:
            raise ControlError("wrong_state", f"pump {target.number}: no nozzle is out")
        target.pump.release()
        target.pump.hang_up()
        return f"pump={target.number} hung-up state={state_name(target.pump.status)} " + (
            self._figures(target)
        )

    def _walk_away(self, command: WalkAway) -> str:
        """The customer gives up, whatever the sale's stage: a `fill` under way (waiting for
        the release, or flowing) ends with `error walked_away`, the trigger is let go and
        the nozzle goes back. Fuel taken stays a sale; an authorization without fuel is
        left for the controller to time out or cancel. Nobody at the pump: nothing to do."""
        target = self._pump(command.pump)
        for task in list(self._runs[target.number].fills):
            task.cancel()
        was_out = target.pump.nozzle_out is not None
        target.pump.release()
        target.pump.hang_up()
        left = "walked-away" if was_out else "nobody-there"
        return f"pump={target.number} {left} state={state_name(target.pump.status)} " + (
            self._figures(target)
        )

    def _refuse(self, command: Refuse) -> str:
        target = self._pump(command.pump)
        address = target.pump.address
        target.line.stop_refusing(address)
        target.line.nak_data_frames(address, command.count or _FOREVER)
        shown = "all" if command.count is None else str(command.count)
        return f"pump={target.number} refusing={shown}"

    def _silent(self, command: Silent) -> str:
        target = self._pump(command.pump)
        run = self._runs[target.number]
        if run.back_online is not None:
            run.back_online.cancel()
            run.back_online = None
        target.pump.set_online(False)
        if command.seconds is None:
            return f"pump={target.number} silent=until-answer"

        def answer() -> None:
            run.back_online = None
            target.pump.set_online(True)
            log.info("dart_sim_pump_answers", pump=target.number)

        run.back_online = asyncio.get_running_loop().call_later(float(command.seconds), answer)
        return f"pump={target.number} silent={command.seconds}s"

    def _answer(self, command: Answer) -> str:
        target = self._pump(command.pump)
        run = self._runs[target.number]
        if run.back_online is not None:
            run.back_online.cancel()
            run.back_online = None
        target.pump.set_online(True)
        return f"pump={target.number} online=yes"

    async def _wait_for(self, command: WaitFor) -> str:
        target = self._pump(command.pump)
        timeout_s = _seconds(command.timeout_s, DEFAULT_STATE_TIMEOUT_S)
        reached = _state_test(target.pump, command.state)
        if not await wait_until(target.pump, reached, timeout_s):
            raise ControlError(
                "timeout",
                f"pump {target.number} not {command.state} within {timeout_s:g} s "
                f"(state {state_name(target.pump.status)})",
            )
        return f"pump={target.number} {command.state} state={state_name(target.pump.status)}"

    async def _power_cycle(self, command: PowerCycle) -> str:
        target = self._pump(command.pump)
        off_s = _seconds(command.seconds, 0.0)
        pump = target.pump
        was_online = pump.online
        pump.set_online(False)
        try:
            if off_s:
                await asyncio.sleep(off_s)
            pump.power_cycle()
        finally:
            pump.set_online(was_online)
        return f"pump={target.number} power-cycled off={off_s:g}s"

    # ------------------------------------------------------------------ reports
    def _status(self, target: ControlledPump) -> str:
        pump, line = target.pump, target.line
        out = pump.nozzle_out
        totals = ",".join(
            f"{n}:{self._volume(pump, t[0])}:{self._amount(pump, t[1])}"
            for n in pump.nozzles
            for t in (pump.totals(n),)
        )
        return (
            f"pump={target.number} address=0x{pump.address:02X} line={line.name} "
            f"state={state_name(pump.status)} nozzle={out if out is not None else pump.selected} "
            f"nozzle-out={'yes' if out is not None else 'no'} "
            f"squeezed={'yes' if pump.squeezed else 'no'} {self._figures(target)} "
            f"online={'yes' if pump.online else 'no'} "
            f"refusing={_shown_count(line.refusing(pump.address))} totals={totals}"
        )

    def _prices(self, target: ControlledPump) -> str:
        pump = target.pump
        prices = ",".join(
            f"{n}:{to_decimal(pump.price(n), pump.price_decimals)}" for n in pump.nozzles
        )
        return f"pump={target.number} prices={prices}"

    def _figures(self, target: ControlledPump) -> str:
        pump = target.pump
        return f"volume={self._volume(pump, pump.volume)} amount={self._amount(pump, pump.amount)}"

    @staticmethod
    def _volume(pump: SimPump, raw: int) -> Decimal:
        return to_decimal(raw, pump.volume_decimals)

    @staticmethod
    def _amount(pump: SimPump, raw: int) -> Decimal:
        return to_decimal(raw, pump.amount_decimals)

    # ------------------------------------------------------------------ lookups
    def _pump(self, ref: PumpRef) -> ControlledPump:
        if ref.number is not None:
            found = self.pumps.get(ref.number)
            if found is None:
                raise ControlError(
                    "unknown_pump", f"no pump {ref.number} (pumps: {self._numbers()})"
                )
            return found
        matches = [p for p in self.pumps.values() if p.pump.address == ref.address]
        if not matches:
            raise ControlError(
                "unknown_pump", f"no pump at address {ref} (pumps: {self._numbers()})"
            )
        if len(matches) > 1:
            where = ", ".join(f"pump {p.number} on {p.line.name}" for p in matches)
            raise ControlError(
                "unknown_pump", f"address {ref} is {where}: name the pump by its number"
            )
        return matches[0]

    def _chosen(self, ref: PumpRef | None) -> list[ControlledPump]:
        return list(self.pumps.values()) if ref is None else [self._pump(ref)]

    def _numbers(self) -> str:
        return ", ".join(str(n) for n in self.pumps) or "none"

    @staticmethod
    def _raw(value: Decimal | None, decimals: int, what: str) -> int | None:
        if value is None:
            return None
        try:
            return from_decimal(value, decimals)
        except ValueError:
            raise ControlError(
                "bad_number", f"{what} {value} has more than the pump's {decimals} decimals"
            ) from None


def _state_test(pump: SimPump, state: WaitState) -> Callable[[], bool]:
    if state == "idle":
        return lambda: pump.nozzle_out is None and pump.status is DartStatus.RESET
    if state == "nozzle-out":
        return lambda: pump.nozzle_out is not None
    if state == "offline":
        return lambda: not pump.online
    wanted = next(s for s, name in _STATE_NAMES.items() if name == state)
    return lambda: pump.status is wanted


def _seconds(value: Decimal | None, default: float) -> float:
    return default if value is None else float(value)


def _shown_count(count: int) -> str:
    return "all" if count >= _FOREVER // 2 else str(count)


# ======================================================================================
# Sessions: a script, the console, the control socket
# ======================================================================================
class CommandHandler(Protocol):
    """What a session drives: one reply per line (SimController; the IFSF simulator's)."""

    async def handle(self, text: str) -> Reply | None: ...


@dataclass(frozen=True, slots=True)
class ScriptEnd:
    """How a script ended: all run (or `quit`), or the line number of its first error."""

    ok: bool
    failed_line: int | None = None
    reply: str | None = None


async def run_script(
    controller: CommandHandler,
    lines: Iterable[str] | AsyncIterator[str],
    emit: Callable[[str], Awaitable[None] | None],
    *,
    stop_on_error: bool = True,
) -> ScriptEnd:
    """Run `lines` one after another, handing each reply to `emit`; stop at the first error
    (with `stop_on_error`) or at `quit`."""
    number = 0
    async for text in _aiter(lines):
        number += 1
        reply = await controller.handle(text)
        if reply is None:
            continue
        shown = emit(reply.line)
        if shown is not None:
            await shown
        if not reply.ok and stop_on_error:
            return ScriptEnd(False, number, reply.line)
        if reply.quit:
            break
    return ScriptEnd(True)


async def run_session(
    controller: CommandHandler,
    plan: ServePlan,
    stop: asyncio.Event,
    emit: Callable[[str], None],
    warn: Callable[[str], None],
    *,
    command: str = "simulate dart",
) -> int:
    """The plan's script, then the console if asked for; sets `stop` when the simulator is
    done. The exit status: 1 when the script failed (said through `warn`, named as
    `command`), else 0."""
    try:
        if plan.script is not None or plan.script_from_stdin:
            name = "stdin" if plan.script is None else str(plan.script_name)
            lines = stream_lines(sys.stdin) if plan.script is None else plan.script
            end = await run_script(controller, lines, emit)
            if not end.ok:
                warn(f"{command}: {name}:{end.failed_line}: {end.reply}")
                return 1
            if plan.keep_running and not plan.console:
                await asyncio.Event().wait()  # until Ctrl-C or SIGTERM
        if plan.console:
            await run_script(controller, stream_lines(sys.stdin), emit, stop_on_error=False)
        return 0
    finally:
        stop.set()


async def _aiter(lines: Iterable[str] | AsyncIterator[str]) -> AsyncIterator[str]:
    if isinstance(lines, AsyncIterator):
        async for line in lines:
            yield line
    else:
        for line in lines:
            yield line


async def stream_lines(stream: IO[str]) -> AsyncIterator[str]:
    """Lines of a blocking text stream (stdin: a terminal, a pipe or a file), read on a
    daemon thread so that a simulator stopping never waits for its console's next line."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        try:
            for line in stream:
                loop.call_soon_threadsafe(queue.put_nowait, line)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log.warning("dart_sim_console_read_failed", error=str(exc))
        finally:
            with contextlib.suppress(RuntimeError):  # the loop may be closed by now
                loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="dart-sim-console", daemon=True).start()
    while (line := await queue.get()) is not None:
        yield line


class ControlSocket:
    """The control protocol on a Unix socket (mode 0600): one session per connection, a
    reply line per command line; `quit` closes that connection only."""

    def __init__(self, controller: CommandHandler, path: Path) -> None:
        self.controller = controller
        self.path = path
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        _clear_stale_socket(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Made 0600 from the start: the umask covers the moment between bind() and chmod().
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._session, path=str(self.path), limit=MAX_LINE * 2
            )
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        log.info("dart_sim_control_socket", path=str(self.path))

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._sessions):
            task.cancel()
        for task in list(self._sessions):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._sessions.add(task)
        try:
            while True:
                try:
                    raw = await reader.readline()
                except ValueError:  # a line past the limit: answer, then hang up
                    refusal = CommandSyntaxError(
                        "too_long", f"a command line is at most {MAX_LINE} characters"
                    )
                    writer.write(refusal.reply().encode() + b"\n")
                    await writer.drain()
                    break
                if not raw:
                    break
                reply = await self.controller.handle(raw.decode("utf-8", "replace"))
                if reply is None:
                    continue
                writer.write(reply.line.encode() + b"\n")
                await writer.drain()
                if reply.quit:
                    break
        except (ConnectionError, BrokenPipeError):
            pass  # the client went away; the simulator goes on
        finally:
            if task is not None:
                self._sessions.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, BrokenPipeError):
                await writer.wait_closed()


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket a dead simulator left; refuse one still served or any other file."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody answers: left by a simulator that died
        return
    finally:
        probe.close()
    raise FileExistsError(f"{path} is in use by a running simulator")
