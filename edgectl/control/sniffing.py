"""Timestamps of the control server's streams (`watch`, `sniff`), ISO 8601 in UTC to the ms.

How a sniffed frame becomes an event is each protocol's own (drivers/sniffing.py and the
`sniff.py` in a driver's folder), found through drivers.registry.
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso_ts(ts: float) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
