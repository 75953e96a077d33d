"""Supervision under systemd (issue 10.3), against a fake systemd: a real datagram socket bound
by the test and given to the daemon as NOTIFY_SOCKET. READY=1 comes once the store answers and
every line and gauge loop runs; STATUS says pumps online and the outbox depth; WATCHDOG=1
comes every half WatchdogSec while the event loop, the store thread and every line make
progress, and stops when one of them is stuck; STOPPING=1 on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import signal
import socket
import statistics
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from drivers.base import Progress
from edgectl import sdnotify
from edgectl.config import load_config
from edgectl.daemon import Daemon
from edgectl.sdnotify import Notifier
from tests.control.clikit import control_config, short_dir
from tests.stationkit import DaemonProcess, rows, start_simulators, until
from tests.tankkit import TANK_TOML
from tests.tankkit import console as tank_console

WATCHDOG_S = 2.0  # so the supervisor's round is 1 s and the store's bound 0.5 s


@dataclass(frozen=True)
class Message:
    at: float  # time.monotonic() when it arrived
    fields: dict[str, str]


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET: every datagram, with its arrival time, read on a
    thread of its own so that a blocked event loop does not delay the clock."""

    def __init__(self, path: Path | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:
            name = f"edgectl-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.sock.bind(str(path))
            self.address = str(path)
        self.sock.settimeout(0.05)
        self.messages: list[Message] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="fake-systemd", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._done.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append(Message(time.monotonic(), fields))

    def close(self) -> None:
        self._done.set()
        self._thread.join(2)
        self.sock.close()

    def env(self, watchdog_s: float | None = WATCHDOG_S) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": self.address}
        if watchdog_s is not None:
            env["WATCHDOG_USEC"] = str(int(watchdog_s * 1_000_000))
        return env

    def with_key(self, key: str) -> list[Message]:
        return [m for m in list(self.messages) if key in m.fields]

    def pings(self, since: float = 0.0) -> list[float]:
        return [m.at for m in self.with_key("WATCHDOG") if m.at >= since]

    def statuses(self) -> list[str]:
        return [m.fields["STATUS"] for m in self.with_key("STATUS")]

    async def wait_for(self, what: str, ok: Callable[[], bool], timeout: float = 20.0) -> None:
        await until(ok, timeout=timeout, what=what)

    async def pings_after(self, since: float, n: int, timeout: float = 10.0) -> list[float]:
        await self.wait_for(f"{n} pings", lambda: len(self.pings(since)) >= n, timeout)
        return self.pings(since)


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    fake = FakeSystemd()
    yield fake
    fake.close()


@pytest.fixture
def site() -> Iterator[Path]:
    """A short directory for the station (its control socket path must stay short)."""
    with short_dir() as tmp:
        yield tmp


@dataclass
class Supervised:
    daemon: Daemon
    task: asyncio.Task[None]
    sims: dict[str, Any]
    at_ready: dict[str, Any]


@contextlib.asynccontextmanager
async def supervised(
    config_path: Path,
    systemd: FakeSystemd,
    monkeypatch: pytest.MonkeyPatch,
    *,
    watchdog_s: float | None = WATCHDOG_S,
    before_run: Callable[[Daemon], None] = lambda daemon: None,
    simulate: bool = True,
) -> AsyncIterator[Supervised]:
    """The daemon in this process, told about the fake systemd as systemd would tell it."""
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    for key, value in systemd.env(watchdog_s).items():
        monkeypatch.setenv(key, value)
    config = load_config(config_path)
    sims = start_simulators(config) if simulate else {}
    daemon = Daemon(config)
    assert daemon.supervisor is not None
    at_ready: dict[str, Any] = {}
    send = daemon.notifier.notify

    def notify(*assignments: str) -> bool:
        if sdnotify.READY in assignments and daemon.supervisor is not None:
            # What was true when READY went out.
            at_ready["parts"] = sorted(daemon.supervisor.parts)
            at_ready["running"] = all(
                p.started.is_set() and p.rounds > 0 for p in daemon.supervisor.parts.values()
            )
        return send(*assignments)

    daemon.notifier.notify = notify  # type: ignore[method-assign]
    before_run(daemon)
    task = asyncio.create_task(daemon.run(install_signals=False))
    try:
        yield Supervised(daemon, task, sims, at_ready)
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)
        for sim in sims.values():
            sim.stop()


def station(tmp: Path, extra: str = "") -> Path:
    return control_config(tmp, tmp / "control.sock", extra=extra)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry.get("event") == name]


# ---------------------------------------------------------------------- the protocol
def test_a_notification_is_one_datagram_of_assignments(tmp_path: Path) -> None:
    fake = FakeSystemd(tmp_path / "notify")
    try:
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": fake.address})
        assert notifier.enabled and notifier.watchdog_s is None
        assert notifier.notify(sdnotify.READY, sdnotify.status("pumps online 2/2,\noutbox 0"))
        wait_for_thread(lambda: len(fake.messages) == 1)
        assert fake.messages[0].fields == {"READY": "1", "STATUS": "pumps online 2/2, outbox 0"}
        notifier.close()
    finally:
        fake.close()


def test_the_abstract_namespace_is_an_at_sign(systemd: FakeSystemd) -> None:
    assert systemd.address.startswith("@")
    notifier = Notifier.from_environ(systemd.env())
    assert notifier.notify(sdnotify.WATCHDOG)
    wait_for_thread(lambda: len(systemd.messages) == 1)
    assert systemd.messages[0].fields == {"WATCHDOG": "1"}
    assert notifier.watchdog_s == WATCHDOG_S


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier.from_environ({"WATCHDOG_USEC": "30000000"})
    assert not notifier.enabled
    assert notifier.notify(sdnotify.READY) is False
    notifier.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 30.0),  # for us: pid 4242
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "thirty"}, None),
        ({}, None),
    ],
)
def test_the_watchdog_is_for_this_process_only(env: dict[str, str], expected: float | None) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@x", **env}, pid=4242)
    assert notifier.watchdog_s == expected
    notifier.close()


def test_a_receiver_gone_is_logged_once_and_never_raises(tmp_path: Path) -> None:
    fake = FakeSystemd(tmp_path / "notify")
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": fake.address})
    fake.close()
    (tmp_path / "notify").unlink()
    with capture_logs() as logs:
        assert notifier.notify(sdnotify.WATCHDOG) is False
        assert notifier.notify(sdnotify.WATCHDOG) is False
    assert len(events(logs, "notify_failed")) == 1
    notifier.close()


def test_progress_promises_its_next_tick() -> None:
    now = [100.0]
    progress = Progress(round_s=1.0, clock=lambda: now[0])
    assert progress.overdue_s() < 0 and not progress.started.is_set()
    progress.tick(5.0)  # about to wait 5 s
    assert progress.started.is_set()
    now[0] = 105.9
    assert progress.overdue_s() < 0  # a quiet line is not a stuck one
    now[0] = 106.5
    assert progress.overdue_s() == pytest.approx(0.5)


def wait_for_thread(ok: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# ---------------------------------------------------------------------- the daemon, in-process
async def test_ready_once_the_store_answers_and_every_line_and_gauge_runs(
    site: Path, systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = station(site, TANK_TOML.format(port=site / "tls", low=1000))
    held = threading.Event()

    def hold_the_store(daemon: Daemon) -> None:
        # The store thread busy before the daemon starts: nothing the daemon asks of the
        # store (prices, pumps' open authorizations, the tanks' state) can run yet.
        daemon.station._executor.submit(held.wait, 30)

    with tank_console(site, 20_000):
        async with supervised(config, systemd, monkeypatch, before_run=hold_the_store) as run:
            await asyncio.sleep(1.5)
            assert systemd.with_key("READY") == []
            held.set()
            await systemd.wait_for("READY", lambda: bool(systemd.with_key("READY")))
            assert run.at_ready == {"parts": ["gauge tls", "line l0"], "running": True}
            ready = systemd.with_key("READY")[0]
            assert re.fullmatch(
                r"pumps online \d/2, tank gauges online \d/1, outbox \d+", ready.fields["STATUS"]
            ), ready.fields
            assert len(systemd.with_key("READY")) == 1
            # STATUS follows the forecourt: both pumps and the gauge online.
            await systemd.wait_for(
                "STATUS with everything online",
                lambda: any(
                    s.startswith("pumps online 2/2, tank gauges online 1/1, outbox ")
                    for s in systemd.statuses()
                ),
            )


async def test_status_gives_the_outbox_depth(
    site: Path, systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with supervised(station(site), systemd, monkeypatch) as run:
        store = run.daemon.store
        await systemd.wait_for(
            "STATUS with both pumps online",
            lambda: any(s.startswith("pumps online 2/2") for s in systemd.statuses()),
        )
        before = await run.daemon.station.db_quiet(store.outbox_depth)
        for n in range(5):  # rows no cloud link takes away here
            await run.daemon.station.db_quiet(store.queue_event, "alarm", {"n": n})

        def told() -> bool:
            last = re.fullmatch(r"pumps online 2/2, outbox (\d+)", systemd.statuses()[-1])
            depth = rows(store.path, "SELECT COUNT(*) AS n FROM outbox")[0]["n"]
            return last is not None and int(last[1]) == depth >= before + 5

        await systemd.wait_for("STATUS with the outbox's depth", told, timeout=10)


async def test_pings_every_half_watchdog_while_everything_runs(
    site: Path, systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with supervised(station(site), systemd, monkeypatch) as run:
        await systemd.wait_for("READY", lambda: bool(systemd.with_key("READY")))
        pings = await systemd.pings_after(0, 6, timeout=15)
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert 0.8 <= statistics.median(gaps) <= 1.3, gaps
        assert max(gaps) < WATCHDOG_S * 0.9, gaps  # never near systemd's limit
        assert run.daemon.supervisor is not None and run.daemon.supervisor.stuck == ()


async def test_no_watchdog_no_pings_but_ready_and_status(
    site: Path, systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with supervised(station(site), systemd, monkeypatch, watchdog_s=None):
        await systemd.wait_for("READY", lambda: bool(systemd.with_key("READY")))
        await asyncio.sleep(2.0)
        assert systemd.pings() == []


async def test_a_stuck_store_thread_stops_the_pings_and_says_so_once(
    site: Path, systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with supervised(station(site), systemd, monkeypatch) as run:
        await systemd.pings_after(0, 2)
        held = threading.Event()
        with capture_logs() as logs:
            # A store call that does not return: a hung disk, a lock never released.
            stuck = asyncio.ensure_future(run.daemon.station.db_quiet(held.wait, 30))
            wedged_at = time.monotonic()
            await asyncio.sleep(3.5)
            late = systemd.pings(since=wedged_at + 1.0)
            assert late == [], "pings went on with the store thread stuck"
            withheld = events(logs, "watchdog_withheld")
            assert len(withheld) == 1 and withheld[0]["stuck"] == ["store thread"]
            assert "stuck: store thread" in systemd.statuses()[-1]
            held.set()
            await stuck
            await systemd.pings_after(time.monotonic(), 2)
            assert len(events(logs, "watchdog_resumed")) == 1


async def test_a_wedged_line_stops_the_pings(
    site: Path, systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with supervised(station(site), systemd, monkeypatch) as run:
        await systemd.pings_after(0, 2)
        line = run.daemon.lines["l0"]
        progress: Progress = line.progress  # type: ignore[attr-defined]
        progress.round_s = 0.3  # a DART round takes milliseconds; 10 s is for slow devices
        released = asyncio.Event()
        transport = line.transport  # type: ignore[attr-defined]
        read_some = transport.read_some

        async def hung(timeout: float) -> bytes:
            await released.wait()  # an adapter that never answers and never times out
            return b""

        with capture_logs() as logs:
            transport.read_some = hung
            wedged_at = time.monotonic()
            await asyncio.sleep(3.5)
            assert systemd.pings(since=wedged_at + 1.5) == []
            withheld = events(logs, "watchdog_withheld")
            assert len(withheld) == 1 and withheld[0]["stuck"] == ["line l0"], withheld
            transport.read_some = read_some
            released.set()
            await systemd.pings_after(time.monotonic(), 2)
            assert len(events(logs, "watchdog_resumed")) == 1


async def test_a_quiet_line_is_not_a_stuck_one(
    site: Path, systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No adapter at all: the line retries opening its port with growing pauses, each one
    announced, so the pings go on though the line sends nothing."""
    async with supervised(station(site), systemd, monkeypatch, simulate=False) as run:
        progress: Progress = run.daemon.lines["l0"].progress  # type: ignore[attr-defined]
        progress.round_s = 0.3
        with capture_logs() as logs:
            pings = await systemd.pings_after(0, 5, timeout=15)
        assert max(b - a for a, b in itertools.pairwise(pings)) < WATCHDOG_S * 0.9
        assert events(logs, "watchdog_withheld") == []
        assert any(s.startswith("pumps online 0/2") for s in systemd.statuses())


async def test_a_blocked_event_loop_sends_nothing_and_is_told_after(
    site: Path, systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with supervised(station(site), systemd, monkeypatch):
        await systemd.pings_after(0, 2)
        with capture_logs() as logs:
            blocked_at = time.monotonic()
            time.sleep(2.5)  # noqa: ASYNC251 - the point: a synchronous call hogging the loop
            unblocked_at = time.monotonic()
            await systemd.pings_after(unblocked_at, 1)
        assert [t for t in systemd.pings() if blocked_at + 0.1 < t < unblocked_at] == []
        assert len(events(logs, "event_loop_was_blocked")) == 1


async def test_stopping_is_said_when_told_to_stop(
    site: Path, systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with supervised(station(site), systemd, monkeypatch) as run:
        await systemd.wait_for("READY", lambda: bool(systemd.with_key("READY")))
        run.daemon.request_stop()
        await asyncio.wait_for(run.task, 30)
    stopping = systemd.with_key("STOPPING")
    assert len(stopping) == 1 and stopping[0].fields["STATUS"].startswith("stopping")


# ---------------------------------------------------------------------- the daemon, a process
@pytest.mark.slow
async def test_the_daemon_process_notifies_systemd_from_start_to_stop(
    site: Path, systemd: FakeSystemd
) -> None:
    config_path = station(site)
    config = load_config(config_path)
    sims = start_simulators(config)
    daemon = DaemonProcess(config_path, site / "daemon.log", env=systemd.env())
    try:
        began = time.monotonic()
        daemon.start()
        await systemd.wait_for(
            "READY", lambda: bool(systemd.with_key("READY")) or daemon.exit_status is not None
        )
        assert daemon.exit_status is None, daemon.log.read_text()[-2000:]
        ready = systemd.with_key("READY")[0]
        assert config.store.path.exists()  # opened before READY
        assert re.fullmatch(r"pumps online \d/2, outbox \d+", ready.fields["STATUS"])
        assert ready.at - began < 10
        await systemd.wait_for(
            "both pumps online in STATUS",
            lambda: any(s.startswith("pumps online 2/2, outbox ") for s in systemd.statuses()),
        )
        pings = await systemd.pings_after(ready.at, 5, timeout=15)
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert 0.8 <= statistics.median(gaps) <= 1.3 and max(gaps) < WATCHDOG_S * 0.9, gaps
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        await systemd.wait_for("STOPPING", lambda: bool(systemd.with_key("STOPPING")))
        assert await asyncio.to_thread(daemon.proc.wait, 30) == 0
        assert systemd.with_key("STATUS")[-1].fields == {
            "STOPPING": "1",
            "STATUS": "stopping: finishing sales",
        }
    finally:
        daemon.cleanup()
        for sim in sims.values():
            sim.stop()
