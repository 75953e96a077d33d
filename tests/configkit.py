"""Station files for the config loader's tests: one written to a temporary folder, a base
file with fragments replaced, and the ConfigError a file is refused with."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgectl.config import load_config
from edgectl.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "station.toml"
    path.write_text(text, encoding="utf-8")
    return path


def replaced(base: str, *replacements: tuple[str, str]) -> str:
    """`base` with fragments replaced; fails loudly if a fragment is not there once."""
    text = base
    for old, new in replacements:
        assert text.count(old) == 1, f"fragment {old!r} must occur exactly once in the base"
        text = text.replace(old, new)
    return text


def refusal(tmp_path: Path, text: str) -> ConfigError:
    """The error the loader refuses `text` with (a config error, by its code)."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.code == "config"
    return info.value
