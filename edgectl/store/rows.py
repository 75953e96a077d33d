"""Between the store's columns and values: times as stored, decimals as text, WHERE clauses."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def decimal_or_none(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def text_or_none(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def column_values(values: Mapping[str, Any], cols: tuple[str, ...]) -> tuple[Any, ...]:
    """`values` in column order, as stored: decimals as their text."""
    return tuple(str(values[c]) if isinstance(values[c], Decimal) else values[c] for c in cols)


def as_aware(iso: str) -> datetime:
    """A stored ISO time (Z or an offset; a time without one is UTC) as an aware datetime."""
    moment = datetime.fromisoformat(iso)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def where_clause(*conditions: tuple[str, object]) -> tuple[str, tuple[Any, ...]]:
    """A WHERE clause from (column and operator, value) pairs; None values are left out."""
    used = [(clause, value) for clause, value in conditions if value is not None]
    if not used:
        return "", ()
    where = " WHERE " + " AND ".join(f"{clause} ?" for clause, _ in used)
    return where, tuple(value for _, value in used)


def device_bucket(moment: datetime) -> str:
    """The 10-minute bucket a moment falls in, as device_counts keys it (UTC)."""
    moment = moment.astimezone(UTC)
    start = moment.replace(minute=moment.minute - moment.minute % 10, second=0, microsecond=0)
    return start.isoformat(timespec="seconds").replace("+00:00", "Z")
