"""Finding devices that announce themselves on the network: the shape of each protocol's
listener (`<protocol>/probe.py`, `listener()`), which `edgectl probe` and `edgectl scan` find
through the registry (`registry.listeners()`).

A listener sends nothing and opens no link: it listens a while for the devices' own
announcements (IFSF heartbeats on UDP) and says what it heard: rows for a table, what
`--json` prints, and a config snippet for the station. It never prints; the CLI checks that
the options fit the protocol, prints and sets the exit status.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Heard:
    """What a listener heard: `count` devices (0: nothing), their `rows` under `columns`,
    the `json` of `--json`, the station `config` snippet for them, `notes` a person should
    read beside them, the `summary` line, and the `hint` for when nothing was heard."""

    count: int
    columns: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    json: Any
    config: str
    summary: str
    hint: str
    notes: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Listener:
    """One protocol whose devices are found by listening (`edgectl probe --protocol NAME`).

    `add_arguments` adds its options to the group it is given and returns them (the CLI
    refuses them with a serial protocol); `listen(args, every_port, announce)` listens as
    they say, on every port the protocol's dialects use when `every_port` (`edgectl scan`),
    calls `announce` with what it listens on and for how long (and with anything it does
    after, such as IFSF `--read`), and raises
    TransportError for a port it cannot listen on.
    """

    name: str  # as `--protocol` takes it: "ifsf"
    devices: str  # "IFSF nodes"
    help: str  # what `probe --help` says of it, in a few lines
    add_arguments: Callable[[argparse._ArgumentGroup], Sequence[argparse.Action]]
    listen: Callable[[argparse.Namespace, bool, Callable[[str], None]], Coroutine[Any, Any, Heard]]
