"""The bus engine on its own: commands ahead of polls, reopen with backoff, a failed line's
commands failed (not left hanging), reply deadlines, taps. A scripted line stands in for a
driver and the in-memory transport for the wire."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest

from drivers.base import DeviceTimeout, TransportError
from drivers.bus import Backoff, BusEngine, Job, Poll, ReplyDeadline
from drivers.memory_transport import MemoryTransport


class ScriptedLine:
    """A driver in its simplest form: polls are numbered, every hook call is logged."""

    def __init__(self, fail_opens: int = 0, polls: int = 1_000_000) -> None:
        self.log: list[str] = []
        self.fail_opens = fail_opens
        self.polls_left = polls
        self.engine: BusEngine | None = None

    async def bus_open(self) -> None:
        self.log.append("open")
        if self.fail_opens:
            self.fail_opens -= 1
            raise TransportError("no port", device="t")

    def bus_close(self) -> None:
        self.log.append("close")

    def bus_open_failed(self, exc: BaseException) -> None:
        self.log.append("open failed")

    def bus_opened(self, first: bool) -> None:
        self.log.append("opened first" if first else "reopened")

    def bus_lost(self, exc: BaseException) -> None:
        self.log.append(f"lost: {exc}")

    def bus_next(self) -> Poll | float:
        if self.polls_left <= 0:
            return 10.0
        self.polls_left -= 1
        return self._poll()

    async def _poll(self) -> None:
        self.log.append("poll")
        await asyncio.sleep(0.002)

    def bus_abandoned(self, job: Job[Any], exc: BaseException) -> BaseException:
        return DeviceTimeout(f"{job.label}: dropped ({type(exc).__name__}: {exc})")


def engine_for(line: ScriptedLine, **kw: Any) -> BusEngine:
    engine = BusEngine(
        "t", line, reopen=Backoff(0.01, 0.04, random.Random(1)), stopped="stopped", **kw
    )
    line.engine = engine
    return engine


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)


async def stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_backoff_doubles_up_to_its_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(1.0, 5.0, random.Random(7))
    delays = [backoff.next() for _ in range(5)]
    for delay, nominal in zip(delays, (1, 2, 4, 5, 5), strict=True):
        assert 0.8 * nominal <= delay <= 1.2 * nominal
    assert len(set(delays)) == 5  # jittered: never twice the same
    backoff.reset()
    assert 0.8 <= backoff.next() <= 1.2


def test_a_reply_deadline_follows_the_bytes_up_to_its_cap() -> None:
    deadline = ReplyDeadline(1.0, extend_s=0.5, cap=2.0)
    deadline.bytes_arrived(0.2)
    assert deadline.at == 1.0  # bytes early on do not shorten the wait
    deadline.bytes_arrived(0.9)
    assert deadline.at == 1.4
    deadline.bytes_arrived(1.8)
    assert deadline.at == 2.0


async def test_commands_go_ahead_of_the_routine_polls() -> None:
    line = ScriptedLine()
    engine = engine_for(line)
    task = asyncio.create_task(engine.run())
    try:
        await until(lambda: line.log.count("poll") >= 3)

        async def command(name: str) -> str:
            line.log.append(name)
            return name.upper()

        results = await asyncio.gather(
            engine.submit("a", lambda: command("a")), engine.submit("b", lambda: command("b"))
        )
        assert results == ["A", "B"]
        # Both were queued while a poll ran: they go one after the other, before any poll.
        at = line.log.index("a")
        assert line.log[at : at + 2] == ["a", "b"]
        assert line.log[:2] == ["open", "opened first"]
    finally:
        await stop(task)
    assert line.log[-1] == "close"


async def test_a_command_queued_on_an_idle_line_wakes_it() -> None:
    line = ScriptedLine(polls=0)  # nothing due for 10 s
    engine = engine_for(line)
    task = asyncio.create_task(engine.run())
    try:
        await until(lambda: engine.connected)
        await asyncio.sleep(0.01)

        async def answer() -> int:
            return 42

        async with asyncio.timeout(0.5):
            assert await engine.submit("now", answer) == 42
    finally:
        await stop(task)


async def test_a_line_that_will_not_open_is_retried_with_backoff() -> None:
    line = ScriptedLine(fail_opens=3, polls=0)
    engine = engine_for(line)
    loop = asyncio.get_running_loop()
    start = loop.time()
    task = asyncio.create_task(engine.run())
    try:
        await until(lambda: engine.connected)
        # 0.01, 0.02 and 0.04 s, each ±20 %: at least 0.056 s.
        assert loop.time() - start >= 0.056
        assert line.log[:7] == ["open", "open failed"] * 3 + ["open"]
        assert engine.reopen.current_s == 0.04
    finally:
        await stop(task)


async def test_a_failed_line_fails_its_commands_and_is_opened_again() -> None:
    line = ScriptedLine(polls=0)
    engine = engine_for(line, reset_reopen_on_open=True)
    task = asyncio.create_task(engine.run())
    try:
        await until(lambda: engine.connected)
        pulled = asyncio.Event()

        async def unplugged() -> None:
            pulled.set()
            await asyncio.sleep(0.01)
            raise TransportError("unplugged", device="t")

        async def queued() -> None:
            raise AssertionError("never runs: the line failed before its turn")

        first = asyncio.ensure_future(engine.submit("first", unplugged))
        await pulled.wait()
        second = asyncio.ensure_future(engine.submit("second", queued))
        with pytest.raises(DeviceTimeout, match=r"first: dropped \(TransportError: t: unplugged"):
            await first
        with pytest.raises(DeviceTimeout, match=r"second: dropped \(TransportError: t: unplugged"):
            await second
        await until(lambda: "reopened" in line.log)
        lost = line.log.index("lost: t: unplugged")
        assert line.log[lost - 1] == "close" and line.log[lost + 1 :] == ["open", "reopened"]
        assert engine.reopen.current_s == 0.0  # reset by the successful open
    finally:
        await stop(task)


async def test_a_command_that_fails_on_its_own_leaves_the_line_running() -> None:
    line = ScriptedLine(polls=0)
    engine = engine_for(line)
    task = asyncio.create_task(engine.run())
    try:

        async def refused() -> None:
            raise ValueError("no such nozzle")

        with pytest.raises(ValueError, match="no such nozzle"):
            await engine.submit("refused", refused)

        async def fine() -> str:
            return "ok"

        assert await engine.submit("fine", fine) == "ok"
        assert "lost" not in " ".join(line.log) and engine.connected
    finally:
        await stop(task)


async def test_stopping_the_line_fails_what_is_queued_and_running() -> None:
    line = ScriptedLine(polls=0)
    engine = engine_for(line)
    task = asyncio.create_task(engine.run())
    await until(lambda: engine.connected)
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.sleep(10)

    running = asyncio.ensure_future(engine.submit("running", slow))
    await started.wait()
    waiting = asyncio.ensure_future(engine.submit("waiting", slow))
    await asyncio.sleep(0)
    await stop(task)
    with pytest.raises(DeviceTimeout, match=r"running: dropped \(CancelledError"):
        await running
    with pytest.raises(DeviceTimeout, match=r"waiting: dropped \(TransportError: t: stopped"):
        await waiting
    assert not engine.running and line.log[-1] == "close"


async def test_a_command_submitted_from_the_line_task_runs_at_once() -> None:
    line = ScriptedLine(polls=0)
    engine = engine_for(line)
    task = asyncio.create_task(engine.run())
    try:

        async def inner() -> str:
            return "inner"

        async def outer() -> str:
            # A poll (or command) asking the line for more: queueing it would deadlock.
            return "outer+" + await engine.submit("inner", inner)

        assert await engine.submit("outer", outer) == "outer+inner"
    finally:
        await stop(task)


class LineReader:
    """A reader of newline-ended frames, the simplest sans-I/O link layer."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def receive_data(self, data: bytes) -> None:
        self.buffer += data

    def next_item(self) -> tuple[bytes, str] | None:
        end = self.buffer.find(b"\n")
        if end < 0:
            return None
        raw = bytes(self.buffer[: end + 1])
        del self.buffer[: end + 1]
        return raw, raw.decode().strip()

    def clear(self) -> None:
        self.buffer.clear()


async def test_receive_takes_the_awaited_frame_and_shows_all_to_the_taps() -> None:
    pipe = MemoryTransport("m", lambda data: b"noise\nreply " + data)
    pipe.split = 3
    engine = BusEngine("t", ScriptedLine(), reopen=Backoff(1, 1), transport=pipe)
    seen: list[tuple[str, bytes, object]] = []
    engine.taps.append(lambda d, wire, item, at: seen.append((d, wire, item)))

    def broken_tap(*_args: object) -> None:
        raise RuntimeError("a tap's own bug")

    engine.taps.append(broken_tap)
    await pipe.open()
    await engine.send(b"42\n", "request 42")
    now = asyncio.get_running_loop().time
    deadline = ReplyDeadline(now() + 0.05, extend_s=0.05, cap=now() + 0.2)
    reply = await engine.receive(
        LineReader(), lambda item: item if item.startswith("reply") else None, deadline
    )
    assert reply == "reply 42"
    assert seen == [
        ("tx", b"42\n", "request 42"),
        ("rx", b"noise\n", "noise"),
        ("rx", b"reply 42\n", "reply 42"),
    ]


async def test_receive_gives_up_at_the_deadline_even_while_bytes_trickle() -> None:
    pipe = MemoryTransport("m", lambda data: b"x" * 200)  # never a whole frame
    pipe.split = 1
    pipe.gap_s = 0.002
    engine = BusEngine("t", ScriptedLine(), reopen=Backoff(1, 1), transport=pipe)
    await pipe.open()
    await engine.send(b"?\n", None)
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = ReplyDeadline(start + 0.01, extend_s=0.01, cap=start + 0.05)
    assert await engine.receive(LineReader(), lambda item: item, deadline) is None
    assert 0.045 <= loop.time() - start < 1.0  # the cap, not the 0.4 s of bytes
