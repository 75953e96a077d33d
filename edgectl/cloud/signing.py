"""Ed25519 signatures on cloud commands: canonical JSON, sign, verify, and the key files.

A command is signed by the cloud key `key_id` over the canonical JSON of the command without
its `sig` member (UTF-8, keys sorted, no insignificant white space); the station keeps the
cloud's public keys, several at once so that keys can be rotated. Note that the canonical form
is Python's ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``, not
RFC 8785: another implementation must sort keys by code point and should keep numbers out of
signed commands (money and volumes are decimal strings anyway).

Key files: a private key is PEM PKCS8 (mode 0600); a public key is either the base64 of the
raw 32-byte key on one line (what ``edgectl cloud keygen`` writes and what the station config
holds) or PEM SubjectPublicKeyInfo.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from edgectl.errors import CloudError

__all__ = [
    "KEY_ID",
    "InvalidKeyError",
    "SignatureError",
    "canonical_json",
    "encode_public_key",
    "generate_key_pair",
    "load_private_key",
    "load_public_key",
    "parse_public_key",
    "sign_command",
    "verify_command",
]

KEY_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""What a key id may look like: it names files and appears in every command."""

_RAW_KEY_BYTES: Final = 32
_SIGNATURE_BYTES: Final = 64
_PEM_MARK: Final = "-----BEGIN"
_RAW_KEY_TEXT: Final = re.compile(r"[A-Za-z0-9+/]{43}=")  # base64 of 32 bytes


class SignatureError(CloudError):
    """A command cannot be trusted. `code` is the result code the station answers with:
    "unsigned", "bad_signature" or "unknown_key"."""

    code = "bad_signature"


class InvalidKeyError(CloudError):
    """A key (text or file) is not a usable Ed25519 key."""

    code = "invalid_key"


# --------------------------------------------------------------------------- commands


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    """The exact bytes a signature covers."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_command(
    command: Mapping[str, Any], private_key: Ed25519PrivateKey, key_id: str
) -> dict[str, Any]:
    """A copy of `command` carrying `key_id` and `sig`; an existing `sig` is replaced."""
    body = {name: value for name, value in command.items() if name != "sig"}
    body["key_id"] = key_id
    signature = private_key.sign(canonical_json(body))
    return {**body, "sig": base64.b64encode(signature).decode("ascii")}


def verify_command(command: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey]) -> str:
    """The id of the key that signed `command`; `SignatureError` if it cannot be trusted."""
    sig = command.get("sig")
    key_id = command.get("key_id")
    if sig is None or key_id is None:
        missing = "sig" if sig is None else "key_id"
        raise SignatureError(f"the command is not signed (no {missing})", code="unsigned")
    if not isinstance(key_id, str):
        raise SignatureError("key_id is not a string", code="bad_signature")
    key = keys.get(key_id)
    if key is None:
        raise SignatureError(f"unknown signing key {key_id!r}", code="unknown_key")
    if not isinstance(sig, str):
        raise SignatureError("sig is not a string", code="bad_signature")
    try:
        signature = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("sig is not base64", code="bad_signature") from None
    if len(signature) != _SIGNATURE_BYTES:
        raise SignatureError("sig is not an Ed25519 signature", code="bad_signature")
    body = {name: value for name, value in command.items() if name != "sig"}
    try:
        key.verify(signature, canonical_json(body))
    except (InvalidSignature, TypeError, ValueError, RecursionError):  # not the JSON signed
        raise SignatureError(
            f"the signature does not match key {key_id!r}", code="bad_signature"
        ) from None
    return key_id


# --------------------------------------------------------------------------- keys


def encode_public_key(key: Ed25519PublicKey) -> str:
    """The base64 of the raw 32-byte key: the one-line form used in configs and .pub files."""
    return base64.b64encode(key.public_bytes_raw()).decode("ascii")


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A public key from its one-line base64 form or from PEM text."""
    text = text.strip()
    if text.startswith(_PEM_MARK):
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError) as exc:
            raise InvalidKeyError(f"not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise InvalidKeyError(f"a PEM {type(key).__name__}, not an Ed25519 public key")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKeyError("neither base64 nor PEM") from None
    if len(raw) != _RAW_KEY_BYTES:
        raise InvalidKeyError(
            f"a raw Ed25519 public key is {_RAW_KEY_BYTES} bytes, this base64 holds {len(raw)}"
        )
    return Ed25519PublicKey.from_public_bytes(raw)


def load_public_key(source: str | Path) -> Ed25519PublicKey:
    """A public key from a file (`Path`), or from a string that is either the key itself
    (the one-line base64 form or PEM) or the name of a file holding it."""
    if isinstance(source, str):
        text = source.strip()
        if text.startswith(_PEM_MARK) or _RAW_KEY_TEXT.fullmatch(text):
            return parse_public_key(text)
        source = Path(source)
    return parse_public_key(_read_text(source, "public key"))


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The signing key from a PEM PKCS8 file (unencrypted)."""
    path = Path(path)
    text = _read_text(path, "private key")
    try:
        key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm, UnicodeEncodeError) as exc:
        raise InvalidKeyError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidKeyError(f"{path}: a {type(key).__name__}, not an Ed25519 private key")
    return key


def generate_key_pair(directory: str | Path, key_id: str) -> tuple[Path, Path]:
    """Write a new pair as ``<key_id>.key`` (PEM PKCS8, mode 0600) and ``<key_id>.pub``
    (base64 raw key, one line) in `directory`; never overwrites an existing file."""
    if not KEY_ID.fullmatch(key_id):
        raise InvalidKeyError(
            f"{key_id!r} is not a valid key id (1..64 letters, digits, '.', '_' or '-')"
        )
    directory = Path(directory)
    private_path = directory / f"{key_id}.key"
    public_path = directory / f"{key_id}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise InvalidKeyError(f"{path} already exists; choose another key id or directory")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # Created with 0600 from the start: the key is never readable by others, not even
        # for a moment, whatever the umask.
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(pem)
        with public_path.open("x", encoding="ascii") as f:
            f.write(encode_public_key(key.public_key()) + "\n")
    except OSError as exc:
        raise InvalidKeyError(
            f"cannot write the key pair in {directory}: {exc.strerror or exc}"
        ) from exc
    return private_path, public_path


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise InvalidKeyError(f"{path}: {what} file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a text key file"
        raise InvalidKeyError(f"{path}: cannot read the {what}: {reason or exc}") from None
