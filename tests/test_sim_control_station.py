"""Scripted customers against the real daemon: the example pay-at-pump script sells exactly
its amount, locally authorized and through a signed authorize over a real broker; and the
control socket of a running `edgectl simulate dart`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.wayne_dart.sim_control import ControlledPump, SimController, run_script
from tests.cloudkit import TestCloud, cloud_section
from tests.mqttkit import MosquittoBroker
from tests.stationkit import running_station, until, write_config

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "scripts" / "pay-at-pump.sim"
EXAMPLE_REPLIES = ["lifted", "authorized", "filled", "hung-up", "idle", "state=reset"]


def check_example_replies(replies: list[str]) -> None:
    assert len(replies) == len(EXAMPLE_REPLIES), replies
    for reply, word in zip(replies, EXAMPLE_REPLIES, strict=True):
        assert reply.startswith("ok pump=1 ") and word in reply, replies
    assert replies[2].endswith("amount=20.00")


async def test_the_example_script_sells_its_amount_at_a_locally_authorized_pump(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, mode="auto")  # a lifted nozzle is released at once
    async with running_station(config) as st:
        controller = SimController(
            [
                ControlledPump(p.number, st.sims[p.line], st.pump(p.number))
                for p in st.config.pumps
            ]
        )
        replies: list[str] = []
        end = await run_script(controller, EXAMPLE.read_text().splitlines(), replies.append)
        assert end.ok, end
        check_example_replies(replies)
        await until(lambda: bool(st.rows("SELECT * FROM sales")), what="the sale")
        (sale,) = st.rows("SELECT * FROM sales")
        assert (sale["pump"], sale["nozzle"], sale["grade"]) == (1, 1, "92")
        assert sale["amount"] == "20.00" and sale["authorization_id"] is not None


# ------------------------------------------------------------------- edgectl simulate dart
@contextlib.asynccontextmanager
async def simulator(*args: str, ready: str = "simulating") -> AsyncIterator[Simulator]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgectl", "simulate", "dart", *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    sim = Simulator(proc)
    try:
        await sim.read_until(ready)
        yield sim
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


class Simulator:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def read_until(self, marker: str, timeout: float = 30) -> None:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while not any(marker in line for line in self.lines):
                raw = await self.proc.stdout.readline()
                if not raw:
                    err = await self.proc.stderr.read() if self.proc.stderr else b""
                    raise AssertionError(f"simulator ended: {self.lines} {err.decode()}")
                self.lines.append(raw.decode().rstrip("\n"))

    async def finish(self, timeout: float = 60) -> tuple[int, list[str], str]:
        """Its exit status, every reply line it printed, and its stderr."""
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        self.lines += out.decode().splitlines()
        replies = [line for line in self.lines if line.startswith(("ok ", "error "))]
        assert self.proc.returncode is not None
        return self.proc.returncode, replies, err.decode()


@pytest.mark.slow
async def test_pay_at_pump_scripted_customer_and_a_signed_authorize_over_the_broker(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    key = Ed25519PrivateKey.generate()
    config = write_config(
        tmp_path, mode="cloud", authorize_timeout_s=60, extra=cloud_section(mosquitto.port, key)
    )
    async with (
        simulator("--config", str(config), "--script", str(EXAMPLE)) as sim,
        TestCloud(mosquitto.port, "TEST-01", key) as cloud,
        running_station(config, sims={}),  # the simulator process plays the pumps
    ):
        await cloud.wait(lambda: cloud.on("state/online"), what="station online")
        # The scripted customer has the nozzle out and waits for the payment.
        await cloud.wait(
            lambda: [m for m in cloud.on("state/pump/1") if m["data"]["state"] == "calling"],
            what="pump 1 calling",
        )
        order = {
            "order_id": "o-script",
            "pump": 1,
            "preset": {"type": "amount", "value": "50.00"},
            "currency": "CNY",
        }
        result = await cloud.result(await cloud.send("authorize", order))
        assert (result["status"], result["code"]) == ("accepted", "ok")
        completed = await cloud.wait(
            lambda: [e for e in cloud.orders("o-script") if e["status"] == "completed"],
            timeout=60,
            what="the order completed",
        )
        sale = completed[0]["sale"]
        assert sale["amount"] == "20.00" and sale["nozzle"] == 1 and sale["grade"] == "92"
        assert sale["order_id"] == "o-script" and sale["authorized_by"] == "cloud"
        code, replies, err = await sim.finish()
        assert code == 0, err
        check_example_replies(replies)


async def test_a_script_stops_at_its_first_error_with_the_line_number(tmp_path: Path) -> None:
    script = tmp_path / "broken.sim"
    script.write_text("# two lifts of one nozzle\nlift 1 1\n\nlift 1 1\nstatus\n")
    async with simulator(
        "--link", str(tmp_path / "dart"), "--pumps", "0x50", "--script", str(script)
    ) as sim:
        code, replies, err = await sim.finish()
    assert code == 1
    assert [r.split()[0] for r in replies] == ["ok", "error"]
    assert f"{script}:4: error wrong_state" in err


async def test_the_control_socket_serves_sessions_and_survives_a_bad_command(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sim.sock"
    # A socket left by a simulator that died is taken over.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    args = ("--link", str(tmp_path / "dart"), "--pumps", "0x50,0x51", "--control-socket")
    async with simulator(*args, str(path)) as sim:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        reader, writer = await asyncio.open_unix_connection(str(path))

        async def ask(line: str) -> str:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            return (await asyncio.wait_for(reader.readline(), 10)).decode().rstrip("\n")

        assert await ask("lift 2 1") == "ok pump=2 nozzle=1 lifted state=reset"
        assert (await ask("status 0x51")).startswith("ok pump=2 address=0x51 ")
        assert (await ask("bogus 1")).startswith("error unknown_command ")
        assert (await ask("lift 2 1")).startswith("error wrong_state ")
        assert "nozzle-out=yes" in await ask("status 2")  # still running, state kept
        # A second session at the same time; quit ends only that one.
        other_reader, other_writer = await asyncio.open_unix_connection(str(path))
        other_writer.write(b"# hello\nquit\n")
        await other_writer.drain()
        assert await asyncio.wait_for(other_reader.read(), 10) == b"ok bye\n"
        other_writer.close()
        assert (await ask("hangup 2")).startswith("ok pump=2 hung-up ")
        writer.close()
        sim.proc.send_signal(signal.SIGTERM)
        code, _, err = await sim.finish()
    assert code == 0, err
    assert not path.exists()


@pytest.mark.parametrize("mode", ["--control", "--script"])
async def test_stdin_as_console_goes_on_past_errors_and_as_script_stops(
    tmp_path: Path, mode: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgectl", "simulate", "dart",
        "--link", str(tmp_path / "dart"), "--pumps", "0x50", mode, "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(b"lift 1 2\nbogus\nstatus 1\n"), 60)
    replies = [line for line in out.decode().splitlines() if line.startswith(("ok", "error"))]
    if mode == "--control":
        assert proc.returncode == 0, err
        assert [r.split()[0] for r in replies] == ["ok", "error", "ok"]
        assert "nozzle=2 nozzle-out=yes" in replies[2]
    else:
        assert proc.returncode == 1
        assert [r.split()[0] for r in replies] == ["ok", "error"]
        assert "stdin:2: error unknown_command" in err.decode()
