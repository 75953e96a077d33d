"""The signing test vector of docs/mqtt.md: the station's code accepts it, and the canonical
bytes come out the same when derived by the doc's rules alone, without Python's json module."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgectl.cloud import contract, signing

DOCS = Path(__file__).resolve().parents[2] / "docs"
VECTOR = json.loads((DOCS / "test-vectors" / "command-signature.json").read_text("utf-8"))


def canonical(value: Any) -> str:
    """docs/mqtt.md, "The signature", rule by rule."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)  # digits, a leading '-' when negative; no '+', no leading zeros
    if isinstance(value, str):
        return '"' + "".join(_char(c) for c in value) + '"'
    if isinstance(value, list):
        return "[" + ",".join(canonical(item) for item in value) + "]"
    if isinstance(value, dict):
        # Keys in order of their Unicode code points (Python compares str that way).
        keys = sorted(value, key=lambda k: [ord(c) for c in k])
        return "{" + ",".join(canonical(k) + ":" + canonical(value[k]) for k in keys) + "}"
    raise TypeError(f"{type(value).__name__} has no canonical form (no floats in commands)")


_SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _char(c: str) -> str:
    if c in _SHORT:
        return _SHORT[c]
    if ord(c) < 0x20:
        return f"\\u{ord(c):04x}"  # lower-case hex
    return c  # everything else as itself, written in UTF-8: no \\u escapes for non-ASCII


def test_the_station_accepts_the_vector() -> None:
    key = signing.parse_public_key(VECTOR["public_key"])
    assert signing.verify_command(VECTOR["command"], {VECTOR["key_id"]: key}) == VECTOR["key_id"]
    parsed = contract.parse_command(
        json.dumps(VECTOR["command"], ensure_ascii=False).encode(),
        command_type="prices",
        station=VECTOR["command"]["station"],
        now=None,
        clock_skew_s=30,
    )
    assert any(not price.grade.isascii() for price in parsed.data.prices)  # type: ignore[union-attr]


def test_the_canonical_bytes_follow_the_documented_rules() -> None:
    body = {k: v for k, v in VECTOR["command"].items() if k != "sig"}
    derived = canonical(body).encode("utf-8")
    assert derived == bytes.fromhex(VECTOR["canonical_utf8_hex"])
    assert derived.decode("utf-8") == VECTOR["canonical_text"]
    assert derived == signing.canonical_json(body)
    # Checked with the key alone, not through the station's code.
    raw = base64.b64decode(VECTOR["public_key"], validate=True)
    Ed25519PublicKey.from_public_bytes(raw).verify(base64.b64decode(VECTOR["sig"]), derived)


def test_the_signature_is_standard_padded_base64() -> None:
    sig = VECTOR["sig"]
    assert re.fullmatch(r"[A-Za-z0-9+/]{86}==", sig)
    # The seed is public (a test key): signing again gives the same signature (Ed25519 is
    # deterministic), so the vector is what the doc's recipe produces.
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTOR["seed_hex"]))
    body = {k: v for k, v in VECTOR["command"].items() if k != "sig"}
    assert base64.b64encode(key.sign(canonical(body).encode())).decode() == sig
    urlsafe = sig.replace("+", "-").replace("/", "_")
    assert urlsafe != sig  # this vector tells the two alphabets apart
    bad = {**VECTOR["command"], "sig": urlsafe}
    with pytest.raises(signing.SignatureError):
        signing.verify_command(
            bad, {VECTOR["key_id"]: signing.parse_public_key(VECTOR["public_key"])}
        )


@pytest.mark.parametrize(
    "text",
    ['quote " and backslash \\', "tab\tnew line\n", "\x01\x1f\x7f", "é 柴油 €", "a/b", "\u2028"],
)
def test_the_rules_agree_with_the_code_on_awkward_text(text: str) -> None:
    body = {"data": {"grade": text, "pump": 3, "ok": True, "none": None, "list": [1, -2]}}
    assert canonical(body).encode("utf-8") == signing.canonical_json(body)


def test_the_doc_shows_the_vector() -> None:
    text = (DOCS / "mqtt.md").read_text("utf-8")
    assert "test-vectors/command-signature.json" in text
    assert VECTOR["public_key"] in text
    assert VECTOR["sig"] in text
    assert VECTOR["canonical_text"] in text
