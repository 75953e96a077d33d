"""Test kit for the control socket and the technician CLI: a station whose control socket lives
in a short temp directory, the daemon in-process or as a child process, the CLI as a child."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.wayne_dart.sim import DartLineSimulator
from edgectl.config import Config, load_config
from edgectl.control import protocol
from edgectl.control.client import ControlClient, DaemonNotRunning
from tests.stationkit import start_simulators, write_config

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a Unix socket path holds at most 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="ec-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def control_config(tmp: Path, socket: Path, *, group: str | None = None, **kw: Any) -> Path:
    """stationkit's station with a [control] section pointing at `socket`."""
    section = f'[control]\nsocket = "{socket}"\n' + (f'group = "{group}"\n' if group else "")
    return write_config(tmp, extra=f"{kw.pop('extra', '')}\n{section}", **kw)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("EDGECTL_CONFIG", "SUDO_USER")}
    env["COLUMNS"] = "200"
    return env


def cli(*args: str, timeout: float = 60) -> Result:
    """`edgectl ARGS…` as a technician runs it, in a child process."""
    done = subprocess.run(
        [sys.executable, "-m", "edgectl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        cwd=ROOT,
    )
    return Result(done.returncode, done.stdout, done.stderr)


async def acli(*args: str, timeout: float = 60) -> Result:
    """The same, without blocking the event loop a daemon in this process runs on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edgectl",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
        cwd=ROOT,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


async def acall(socket: Path, op: str, args: dict[str, Any] | None = None) -> Any:
    """One request to a daemon running in this process's event loop (never block that loop
    with the synchronous ControlClient)."""
    reader, writer = await asyncio.open_unix_connection(str(socket))
    try:
        writer.write(protocol.encode_request(1, op, args or {}))
        await writer.drain()
        async with asyncio.timeout(10):
            reply = protocol.parse_reply(await reader.readline())
    finally:
        writer.close()
    assert reply.get("ok"), reply
    return reply["result"]


async def eventually(predicate: Any, *, timeout: float = 15.0, what: str = "") -> None:
    """Wait for an async predicate to hold."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.1)


@dataclass
class DaemonProcess:
    """`edgectl run` as a child process against simulators running in this process."""

    config_path: Path
    config: Config
    sims: dict[str, DartLineSimulator]
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def socket(self) -> Path:
        return self.config.control.socket

    def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        """Ask the daemon directly (quicker than the CLI, for waiting on conditions)."""
        with ControlClient(self.socket, timeout=5) as client:
            return client.call(op, args)

    def pump_views(self) -> list[dict[str, Any]]:
        views: list[dict[str, Any]] = self.call("pumps")
        return views

    def pump_view(self, number: int) -> dict[str, Any]:
        return next(v for v in self.pump_views() if v["pump"] == number)

    def wait_for(self, predicate: Any, what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if predicate():
                    return
            except DaemonNotRunning:
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"the daemon exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def daemon_process(config_path: Path, **sim_kw: Any) -> Iterator[DaemonProcess]:
    config = load_config(config_path)
    sims = start_simulators(config, **sim_kw)
    log = config_path.with_name("daemon.log")
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgectl", "run", "--config", str(config_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=_env(),
            cwd=ROOT,
        )
    daemon = DaemonProcess(config_path, config, sims, proc, log)
    try:
        daemon.wait_for(
            lambda: all(v["online"] and v["status"] for v in daemon.pump_views()),
            "the daemon's pumps online",
        )
        yield daemon
    finally:
        daemon.stop()
        for sim in sims.values():
            sim.stop()
