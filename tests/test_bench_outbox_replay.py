"""bench/outbox_replay.py still runs: a small backlog drained by the real daemon and by the raw
publisher, every message counted once and in order. No figure is judged here: timing belongs
to the benchmark itself."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("mosquitto", "mosquitto_passwd", "mosquitto_sub")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(
            shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists() for tool in TOOLS
        ),
        reason="mosquitto and mosquitto-clients are not installed (make installs them)",
    ),
]


def test_the_replay_benchmark_completes_with_every_message_once_and_in_order(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "outbox_replay.py"), "--quick",
            "--messages", "2000", "--dir", str(tmp_path), "--json",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["setup"]["messages"] == 2000
    assert sum(report["setup"]["streams"].values()) == 2000
    (run,) = report["repeats"]
    assert run["problems"] == []
    for publisher in ("floor", "daemon"):
        delivered = run[publisher]
        assert delivered["arrived"] == 2000
        assert (delivered["missing"], delivered["duplicates"], delivered["out_of_order"]) == (
            0,
            0,
            0,
        )
        assert delivered["rate"] > 0
    assert run["floor_publisher"]["published"] == 2000
    assert run["live_sales_arrived"] == run["live_sales_made"] == run["live_sales_recorded"]
    assert run["outbox_left"] == 0
    assert run["rss_hwm_mb"] > 0
    assert report["summary"]["ok"] is True
    assert report["summary"]["floor_cpu_us_per_message"] > 0
    assert report["summary"]["daemon_cpu_us_per_message"] > 0
