"""Supervision under systemd: READY once the station runs, a one-line STATUS, and watchdog
pings sent only while the event loop, the store thread and every device loop make progress.

The pings come from a task on the event loop, so a blocked loop sends none. Each round (every
5 s, or half the watchdog's timeout if that is shorter) also asks the store thread for the
outbox depth and requires the answer within half a round, and checks every line's and
gauge's `Progress`: while the store thread is stuck or a line is wedged no ping goes out,
and once none has for the watchdog's whole timeout systemd restarts the daemon. One slow
store call withholds a ping or two, not yet a restart. What is stuck is logged once, and
its recovery once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Final

from drivers.base import Progress
from edgectl import sdnotify
from edgectl.logs import get_logger
from edgectl.sdnotify import Notifier

if TYPE_CHECKING:
    from edgectl.station import Station
    from edgectl.tank_service import TankService

ROUND_S: Final = 5.0  # at most this between rounds: STATUS stays fresh for systemctl status
STORE_THREAD: Final = "store thread"
# A round this late means the loop was blocked (a busy machine delays it by milliseconds).
LOOP_BLOCKED_S: Final = 1.0


class Supervisor:
    """Run `run()` as one of the daemon's tasks, created after every device loop's task."""

    def __init__(
        self,
        notifier: Notifier,
        *,
        parts: Mapping[str, Progress],
        store_call: Callable[[], Awaitable[int]],
        summary: Callable[[], str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`parts`: the device loops to watch, by the name a log gives them; `store_call`: a
        cheap call run on the store thread (the outbox depth, which STATUS shows);
        `summary`: the rest of the STATUS line."""
        self.notifier = notifier
        self.parts = dict(parts)
        self._store_call = store_call
        self._summary = summary
        self._clock = clock
        watchdog_s = notifier.watchdog_s
        # At most half the timeout, as sd_watchdog_enabled(3) advises; the store's answer is
        # awaited for half a round, so pings never come later than 3/4 of the timeout apart.
        self.interval_s = min(watchdog_s / 2, ROUND_S) if watchdog_s else ROUND_S
        self.store_bound_s = self.interval_s / 2
        self.log = get_logger(part="supervisor")
        self.ready = False
        self.pings = 0
        self.stuck: tuple[str, ...] = ()
        self._stuck_since = 0.0
        self._stopping = False
        self._status = ""
        self._depth: int | None = None
        self._probe: asyncio.Task[int | None] | None = None
        self._probe_sent = 0.0

    @property
    def watchdog(self) -> bool:
        return self.notifier.watchdog_s is not None

    async def run(self) -> None:
        try:
            await self._until_started()
            while True:
                started = self._clock()
                await self._round()
                due = started + self.interval_s
                await asyncio.sleep(max(0.0, due - self._clock()))
                late = self._clock() - due
                if late > max(self.interval_s / 2, LOOP_BLOCKED_S):
                    # Told after the fact: while the loop was blocked nothing could be.
                    self.log.error("event_loop_was_blocked", seconds=round(late, 1))
        finally:
            if self._probe is not None:
                self._probe.cancel()

    def stopping(self) -> None:
        """The daemon was told to stop: say so, and leave the STATUS line at that."""
        self._stopping = True
        self.notifier.notify(sdnotify.STOPPING, sdnotify.status("stopping: finishing sales"))

    async def _until_started(self) -> None:
        """READY=1 once every device loop runs and the store thread answers (the store is
        open before the daemon runs at all). No bound: systemd's start timeout is the one."""
        await asyncio.gather(*(progress.started.wait() for progress in self.parts.values()))
        self._depth = await self._ask_store()
        self._status = self._status_line()
        self.notifier.notify(sdnotify.READY, sdnotify.status(self._status))
        self.ready = True
        self.log.info(
            "supervision_ready",
            watchdog_s=self.notifier.watchdog_s,
            interval_s=self.interval_s,
            watched=sorted(self.parts),
        )

    async def _round(self) -> None:
        answered = await self._store_answers()
        stuck = [] if answered else [STORE_THREAD]
        stuck += [name for name, progress in self.parts.items() if progress.overdue_s() > 0]
        self._note(stuck)
        assignments = []
        if self.watchdog and not stuck:
            assignments.append(sdnotify.WATCHDOG)
        line = self._status_line()
        if line != self._status and not self._stopping:
            self._status = line
            assignments.append(sdnotify.status(line))
        if self.notifier.notify(*assignments) and self.watchdog and not stuck:
            self.pings += 1

    async def _store_answers(self) -> bool:
        """Whether the store thread has run a call within `store_bound_s` of its asking; a
        call it has not run yet is waited for, never asked twice."""
        if self._probe is None:
            self._probe = asyncio.create_task(self._ask_store(), name="supervisor-store-probe")
            self._probe_sent = self._clock()
        remaining = self._probe_sent + self.store_bound_s - self._clock()
        if not self._probe.done() and remaining > 0:
            try:
                async with asyncio.timeout(remaining):
                    await asyncio.shield(self._probe)
            except TimeoutError:
                pass
        if not self._probe.done():
            return False
        self._depth = self._probe.result()
        self._probe = None
        return True

    async def _ask_store(self) -> int | None:
        try:
            return await self._store_call()
        except Exception:
            return None  # the thread answered, with an error: it runs; the depth is unknown

    def _note(self, stuck: list[str]) -> None:
        now = self._clock()
        if tuple(stuck) == self.stuck:
            return
        if stuck:
            self.log.error(
                "watchdog_withheld" if self.watchdog else "daemon_part_stuck",
                stuck=stuck,
                overdue_s={
                    name: round(self.parts[name].overdue_s(), 1)
                    for name in stuck
                    if name in self.parts
                },
                hint="systemd restarts the daemon if this lasts the watchdog's timeout"
                if self.watchdog
                else "no watchdog is set for this daemon (WatchdogSec=)",
            )
            if not self.stuck:
                self._stuck_since = now
        else:
            self.log.info(
                "watchdog_resumed" if self.watchdog else "daemon_parts_running",
                was_stuck=list(self.stuck),
                stuck_s=round(now - self._stuck_since, 1),
            )
        self.stuck = tuple(stuck)

    def _status_line(self) -> str:
        depth = "?" if self._depth is None else str(self._depth)
        line = f"{self._summary()}, outbox {depth}"
        if self.stuck:
            line += f"; stuck: {', '.join(self.stuck)}"
        return line


def progress_of(kind: str, devices: Mapping[str, object]) -> dict[str, Progress]:
    """The `Progress` of each device that keeps one, named "<kind> <name>"."""
    found: dict[str, Progress] = {}
    for name, device in devices.items():
        progress = getattr(device, "progress", None)
        if isinstance(progress, Progress):
            found[f"{kind} {name}"] = progress
    return found


def forecourt_summary(station: Station, tanks: TankService | None) -> str:
    """What STATUS says of the forecourt: pumps (and tank gauges) online."""
    online = sum(1 for point in station.points.values() if point.online)
    text = f"pumps online {online}/{len(station.points)}"
    if tanks is not None and tanks.gauges:
        gauges = sum(1 for gauge in tanks.gauges.values() if gauge.is_online)
        text += f", tank gauges online {gauges}/{len(tanks.gauges)}"
    return text
