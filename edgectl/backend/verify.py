"""Checks a station message against the contract's JSON Schemas (docs/schemas) and its topic.

Pure: bytes and a topic in, a `Verdict` out, no I/O after the schemas are loaded. A message
that fails still tells, when its envelope can be read, which (station, stream, seq) it took:
the worker counts it for contiguity (it came; it is in `rejects`), so one bad message cannot
hold a stream back forever.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from edgectl.cloud.contract import GUARANTEED_STREAMS, SCHEMA_VERSION, STATION_KINDS
from edgectl.errors import ConfigError

__all__ = ["DEFAULT_SCHEMAS", "Verdict", "Verifier"]

# The schemas ship in the source tree beside the contract they describe, not in the package.
DEFAULT_SCHEMAS: Final = Path(__file__).resolve().parents[2] / "docs" / "schemas"

_STATION: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MAX_ERRORS: Final = 3
_GUARANTEED: Final = frozenset(GUARANTEED_STREAMS)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one message is. `reason` is None when it passed; `slot` says whether its
    (station, kind, seq) can be trusted enough to count for contiguity."""

    topic: str
    payload: bytes
    reason: str | None
    body: dict[str, Any] | None = None
    station: str | None = None
    kind: str | None = None
    seq: int | None = None
    msg_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def slot(self) -> bool:
        return (
            self.station is not None
            and self.kind in _GUARANTEED
            and self.seq is not None
            and self.seq >= 1
        )


class Verifier:
    """The validators of every station kind, loaded once from a schema directory."""

    def __init__(self, prefix: str, directory: Path = DEFAULT_SCHEMAS) -> None:
        self.prefix = prefix
        try:
            schemas = {
                path.name.removesuffix(".schema.json"): json.loads(path.read_text("utf-8"))
                for path in sorted(directory.glob("*.schema.json"))
            }
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the contract's schemas in {directory}: {exc}") from None
        missing = [kind for kind in STATION_KINDS if kind not in schemas]
        if missing or "common" not in schemas:
            raise ConfigError(
                f"{directory} does not hold the contract's schemas (missing: "
                f"{', '.join(missing or ['common'])}); give the docs/schemas directory"
            )
        # No retrieval: a $ref that does not resolve among these files fails, never fetches.
        registry: Registry[Any] = Registry().with_resources(
            (s["$id"], Resource.from_contents(s, default_specification=DRAFT202012))
            for s in schemas.values()
        )
        self._validators = {
            kind: Draft202012Validator(
                schemas[kind],
                registry=registry,
                format_checker=Draft202012Validator.FORMAT_CHECKER,
            )
            for kind in STATION_KINDS
        }

    def topic_kind(self, topic: str) -> tuple[str, str] | None:
        """(station, kind) a topic of ours names: evt/<kind>, result, or a reply topic (a
        command's response topic under the station's tree, which carries a result)."""
        head = f"{self.prefix}/{SCHEMA_VERSION}/"
        if not topic.startswith(head):
            return None
        station, _, rest = topic[len(head) :].partition("/")
        if not _STATION.fullmatch(station):
            return None
        if rest.startswith("evt/") and "/" not in rest[4:] and rest[4:]:
            return station, rest[4:]
        if rest == "result" or rest.startswith("reply/"):
            return station, "result"
        return None

    def check(self, topic: str, payload: bytes) -> Verdict:
        where = self.topic_kind(topic)
        if where is None:
            return Verdict(topic, payload, f"not a station message topic of prefix {self.prefix}")
        station, topic_kind = where
        try:
            body = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            return Verdict(topic, payload, f"not UTF-8 JSON: {exc}")
        if not isinstance(body, dict):
            return Verdict(topic, payload, f"a JSON {type(body).__name__}, not an object")
        schema = body.get("schema")
        kind = None
        if isinstance(schema, str) and schema.startswith(f"edgectl/{SCHEMA_VERSION}/"):
            kind = schema.rsplit("/", 1)[-1]
        # The envelope's claims, trusted for contiguity only when they agree with the topic.
        claimed_seq = body.get("seq")
        seq = claimed_seq if type(claimed_seq) is int else None
        msg_id = body.get("msg_id") if isinstance(body.get("msg_id"), str) else None
        same_station = body.get("station") == station
        fields: dict[str, Any] = {
            "body": body,
            "station": station if same_station else None,
            "kind": kind if kind == topic_kind else None,
            "seq": seq,
            "msg_id": msg_id if msg_id is not None and _UUID.fullmatch(msg_id) else None,
        }
        if kind not in self._validators:
            return Verdict(topic, payload, f"schema {schema!r} is not a kind of contract 1.1")
        if kind != topic_kind:
            return Verdict(
                topic, payload, f"a {kind} message on the topic of {topic_kind}", **fields
            )
        if not same_station:
            return Verdict(
                topic, payload, f"station {body.get('station')!r} on {station}'s topic", **fields
            )
        errors = sorted(
            self._validators[kind].iter_errors(body), key=lambda e: list(e.absolute_path)
        )
        if errors:
            text = "; ".join(_describe(e) for e in errors[:_MAX_ERRORS])
            if len(errors) > _MAX_ERRORS:
                text += f"; and {len(errors) - _MAX_ERRORS} more"
            return Verdict(topic, payload, f"fails the {kind} schema: {text}", **fields)
        return Verdict(topic, payload, None, **fields)


def _describe(error: Any) -> str:
    path = "/".join(str(p) for p in error.absolute_path) or "(message)"
    message = str(error.message)
    return f"{path}: {message[:200]}"
