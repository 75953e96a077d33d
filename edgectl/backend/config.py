"""The ingest worker's settings: one frozen model, from a TOML `[backend]` section and options.

Nothing here is the station's config: the worker runs on the cloud side, holds the command
signing key (the station holds only the public half) and a PostgreSQL DSN.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgectl.backend.verify import DEFAULT_SCHEMAS
from edgectl.cloud.client import Broker
from edgectl.cloud.signing import KEY_ID, InvalidKeyError, load_private_key
from edgectl.errors import ConfigError

__all__ = ["DEFAULT_DSN", "IngestConfig", "load_backend_section", "load_signing_key"]

DEFAULT_DSN: Final = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
_SCHEMA_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_GROUP: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_RAW_SEED_BYTES: Final = 32


@dataclass(frozen=True)
class IngestConfig:
    """Where to read, where to write, how to sign, and the ack / replay rhythm.

    `ack_every` / `ack_interval_s`: a stream is acknowledged once that many messages are
    committed beyond the last ack, or that long after it. `gap_grace_s`: how long a gap may
    stay open before the first `replay` (with several workers, a stream's messages commit a
    little out of order all the time). `replay_interval_s`: the wait before asking again,
    doubled at each try up to 5 minutes. `quiet_s` / `probe_interval_s`: a stream silent for
    `quiet_s` is probed once (replay past its top), and every `probe_interval_s` after (ten
    times that for a stream that never had a message).
    `answer_timeout_s`: an ack the station has not answered by then is sent again.
    `session_expiry_s`: how long the broker keeps a worker's session, and so how long a
    worker that dies for good goes on receiving its share of a shared subscription (Mosquitto
    keeps routing to an offline member): those messages come back only by replay, once the
    session has expired. Restart a dead worker under its client id well within it.
    """

    broker: Broker
    key: Ed25519PrivateKey = field(repr=False)
    key_id: str
    dsn: str = DEFAULT_DSN
    schema: str = "edgectl"
    prefix: str = "edgectl"
    group: str = "edgectl-ingest"
    client_id: str = ""
    session_expiry_s: int = 600
    batch_max: int = 100
    ack_every: int = 200
    ack_interval_s: float = 2.0
    gap_grace_s: float = 2.0
    replay_interval_s: float = 5.0
    quiet_s: float = 10.0
    probe_interval_s: float = 60.0
    answer_timeout_s: float = 15.0
    command_valid_s: float = 600.0
    schemas: Path = DEFAULT_SCHEMAS

    def __post_init__(self) -> None:
        if not _SCHEMA_NAME.fullmatch(self.schema):
            raise ConfigError(
                f"backend.schema: {self.schema!r} is not a plain PostgreSQL name (lower-case "
                "letters, digits and '_', not starting with a digit, at most 63)"
            )
        if not _GROUP.fullmatch(self.group):
            raise ConfigError(f"backend.group: {self.group!r} is not a share name")
        if not KEY_ID.fullmatch(self.key_id):
            raise ConfigError(f"backend.key_id: {self.key_id!r} is not a key id")
        if not self.client_id:
            # A restarted worker should reclaim its session: give a stable id per worker.
            object.__setattr__(
                self, "client_id", f"edgectl-ingest-{socket.gethostname()}-{os.getpid()}"
            )
        for name in ("batch_max", "ack_every", "session_expiry_s"):
            if getattr(self, name) < 1:
                raise ConfigError(f"backend.{name} must be at least 1")
        for name in (
            "ack_interval_s",
            "gap_grace_s",
            "replay_interval_s",
            "quiet_s",
            "probe_interval_s",
            "answer_timeout_s",
            "command_valid_s",
        ):
            value = getattr(self, name)
            if not 0 < value <= 86400:
                raise ConfigError(f"backend.{name} must be between 0 and 86400 seconds")

    def with_options(self, **options: Any) -> IngestConfig:
        """A copy with the options that were given (None: not given)."""
        return replace(self, **{k: v for k, v in options.items() if v is not None})


_TUNABLE: Final = frozenset(
    f.name for f in fields(IngestConfig) if f.name not in ("broker", "key", "key_id")
)


def load_backend_section(path: Path) -> dict[str, Any]:
    """The `[backend]` table of a TOML file, keys checked; values are typed by `IngestConfig`.

    Besides the tunables it may hold `host`, `port`, `tls`, `ca_file`, `cert_file`,
    `key_file` (the broker's), `username`, `password_file`, `signing_key`, `key_id`.
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not TOML: {exc}") from None
    section = document.get("backend")
    if not isinstance(section, dict):
        raise ConfigError(f"{path} has no [backend] section")
    known = _TUNABLE | {
        "host",
        "port",
        "tls",
        "ca_file",
        "cert_file",
        "key_file",
        "username",
        "password_file",
        "signing_key",
        "key_id",
    }
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in [backend]: {', '.join(unknown)}")
    return dict(section)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The command signing key: PEM PKCS8 as `edgectl cloud keygen` writes it, or a file of
    exactly the 32 raw bytes of an Ed25519 seed (what test tooling writes)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidKeyError(f"{path}: cannot read the signing key: {exc.strerror}") from None
    if len(raw) == _RAW_SEED_BYTES and not raw.startswith(b"-----"):
        return Ed25519PrivateKey.from_private_bytes(raw)
    return load_private_key(path)
