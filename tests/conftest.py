"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mqttkit import MOSQUITTO, MosquittoBroker


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A plain Mosquitto broker (anonymous, no TLS) on a free port of 127.0.0.1."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (make installs it: apt-get install mosquitto)")
    with MosquittoBroker(tmp_path) as broker:
        yield broker
