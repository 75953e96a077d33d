"""Shared pieces of the benchmarks: child processes that die with us, machine load, logs."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

# A benchmark measures the tree it is in, it and its children (`python -m edgectl run`), even
# when the venv's editable install points at another checkout (a second worktree): imported
# before edgectl by every benchmark.
ROOT = Path(__file__).resolve().parent.parent
if sys.path[:1] != [str(ROOT)]:
    sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])]
)

_PR_SET_PDEATHSIG = 1
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class SetupError(Exception):
    """The measurement could not be made; the message says why."""


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the benchmark itself is killed outright."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """A child process in its own session (Ctrl-C is ours to handle), output to a file.

    Only started while this process runs no other thread (see `run_rig`): `preexec_fn` is
    not safe in a process with threads.
    """

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        self._out: IO[bytes] = log.open("wb")
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            self._out.close()
            raise SetupError(f"cannot start {name}: {exc}") from exc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace_s: float) -> None:
        """SIGTERM, then SIGKILL after `grace_s`; always reaped."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            text = self.log.read_text(errors="replace").splitlines()
            return "\n".join(f"  {self.name}| {row}" for row in text[-lines:])
        return ""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (TCP; on loopback the same number is free for UDP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def host_busy_s() -> float:
    """CPU seconds every core of the machine spent busy (all processes), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / _CLK_TCK


def read_log_events(log: Path) -> dict[str, int]:
    """What the daemon logged (at warning and above), counted by level and event name."""
    events: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for row in log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(row)
                key = f"{entry.get('level', '?')} {entry.get('event', '?')}"
            except (ValueError, AttributeError):
                key = "unparsed line"
            events[key] = events.get(key, 0) + 1
    return events


# A forecourt of two grades and `lines` x `pumps_per_line` two-nozzle DART pumps, the shape
# every daemon benchmark measures.
GRADES_TOML = """
[[grades]]
id = "92"
name = "92# Gasoline"
unit_price = "7.45"

[[grades]]
id = "95"
name = "95# Gasoline"
unit_price = "7.93"
"""


def forecourt_toml(workdir: Path, lines: int, pumps_per_line: int, line_keys: str) -> str:
    """[[lines]] (ptys `workdir/line<n>`, 9600 baud odd parity, 50 ms reply timeout, plus
    `line_keys`) and their [[pumps]], numbered from 1 across the lines."""
    parts: list[str] = []
    number = 0
    for n in range(lines):
        parts.append(
            f'\n[[lines]]\nname = "line{n}"\nport = "{workdir / f"line{n}"}"\n'
            'protocol = "wayne_dart"\nbaud = 9600\nparity = "odd"\nreply_timeout_ms = 50\n'
            f"{line_keys}\n"
        )
        for p in range(pumps_per_line):
            number += 1
            parts.append(
                f'\n[[pumps]]\nnumber = {number}\nline = "line{n}"\naddress = 0x{0x50 + p:02X}\n'
                'nozzles = { 1 = "92", 2 = "95" }\n'
            )
    return "".join(parts)


def machine() -> dict[str, Any]:
    """The machine a figure was measured on."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for row in f:
            if row.startswith("model name"):
                model = row.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


# IFSF dispensers: `nodes` nodes 1.1, 1.2, ... of `fps` two-nozzle fuelling points each, on
# one controller line; the grades above as products 1 and 2.
IFSF_CONTROLLER_LNA = "2.1"


def ifsf_forecourt_toml(
    *,
    first_pump: int,
    nodes: int,
    fps: int,
    tcp_port: int,
    heartbeat_port: int,
    heartbeat_to: str,
    line_keys: str = "",
) -> str:
    """An IFSF [[lines]] entry ("ifsf": the controller's TCP port and heartbeat port, its
    heartbeat sent to `heartbeat_to`, plus `line_keys`) and its [[pumps]], numbered from
    `first_pump`: node 1.1 FP 1 first."""
    parts = [
        '\n[[lines]]\nname = "ifsf"\nprotocol = "ifsf"\n'
        f'controller_lna = "{IFSF_CONTROLLER_LNA}"\ntcp_port = {tcp_port}\n'
        f'heartbeat_port = {heartbeat_port}\nheartbeat_to = ["{heartbeat_to}"]\n'
        f'products = {{ "92" = 1, "95" = 2 }}\n{line_keys}\n'
    ]
    number = first_pump
    for node in range(1, nodes + 1):
        for fp in range(1, fps + 1):
            parts.append(
                f'\n[[pumps]]\nnumber = {number}\nline = "ifsf"\nnode = "1.{node}"\nfp = {fp}\n'
                'nozzles = { 1 = "92", 2 = "95" }\n'
            )
            number += 1
    return "".join(parts)
