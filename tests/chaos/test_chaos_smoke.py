"""`make chaos` in miniature, so the harness does not rot: a few seeded SIGKILL rounds of the
real daemon in auto and in cloud mode at once, then the same audit as the full run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chaos.campaign import Campaign
from tests.mqttkit import MOSQUITTO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

SEED = 20261202


async def test_a_few_kill_rounds_lose_nothing_and_sell_once(tmp_path: Path) -> None:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    quick = {"patience_s": 8, "max_uptime_s": 2.5, "authorize_timeout_s": 8}
    campaigns = [
        Campaign(f"smoke-{mode}", mode, tmp_path / mode, SEED, **quick)
        for mode in ("auto", "cloud")
    ]
    auto, cloud = await asyncio.gather(*(c.run(rounds=2) for c in campaigns))
    for figures in (auto, cloud):
        assert (figures.rounds, figures.kills) == (2, 2)
        assert figures.failed == [], figures.notes
        assert figures.sales >= 8  # at least the last customer at every pump, DART and IFSF
    assert cloud.orders_accepted >= 4
