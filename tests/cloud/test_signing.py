"""Command signatures: canonical form, sign/verify, every refusal, rotation, key files."""

from __future__ import annotations

import base64
import copy
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgectl.cloud.signing import (
    InvalidKeyError,
    SignatureError,
    canonical_json,
    encode_public_key,
    generate_key_pair,
    load_private_key,
    load_public_key,
    parse_public_key,
    sign_command,
    verify_command,
)
from edgectl.errors import CloudError

COMMAND: dict[str, Any] = {
    "schema": "edgectl/v1/cmd/authorize",
    "cmd_id": "c-20261124-000123",
    "station": "SH-PD-0017",
    "issued_at": "2026-11-24T10:20:00.000Z",
    "expires_at": "2026-11-24T10:21:00.000Z",
    "data": {
        "order_id": "o-88812",
        "pump": 3,
        "preset": {"type": "amount", "value": "200.00"},
        "currency": "CNY",
        "note": "加油站",
    },
}


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": {"d": [1, 2], "c": "é"}}) == (
        '{"a":{"c":"é","d":[1,2]},"b":1}'.encode()
    )


def test_canonical_form_does_not_depend_on_key_order() -> None:
    shuffled = json.loads(json.dumps(COMMAND))
    shuffled = dict(reversed(list(shuffled.items())))
    shuffled["data"] = dict(reversed(list(shuffled["data"].items())))
    assert list(shuffled) != list(COMMAND)
    assert canonical_json(shuffled) == canonical_json(COMMAND)


def test_round_trip(key: Ed25519PrivateKey) -> None:
    signed = sign_command(COMMAND, key, "cloud-2026a")
    assert signed["key_id"] == "cloud-2026a"
    assert len(base64.b64decode(signed["sig"])) == 64
    assert "sig" not in COMMAND  # the input is left alone
    assert verify_command(signed, {"cloud-2026a": key.public_key()}) == "cloud-2026a"


def test_signed_command_survives_the_wire(key: Ed25519PrivateKey) -> None:
    signed = sign_command(COMMAND, key, "k1")
    # Whatever the sender's key order and spacing, the receiver verifies the parsed object.
    wire = json.dumps(signed, indent=2, ensure_ascii=True).encode()
    assert verify_command(json.loads(wire), {"k1": key.public_key()}) == "k1"


def test_resigning_replaces_the_signature(key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    signed = sign_command(sign_command(COMMAND, other, "old"), key, "new")
    assert verify_command(signed, {"new": key.public_key()}) == "new"


def _tampered(signed: dict[str, Any], path: tuple[str, ...], value: object) -> dict[str, Any]:
    changed = copy.deepcopy(signed)
    target = changed
    for name in path[:-1]:
        target = target[name]
    target[path[-1]] = value
    return changed


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("data", "preset", "value"), "2000.00"),
        (("data", "pump"), 4),
        (("expires_at",), "2026-11-24T11:21:00.000Z"),
        (("station",), "SH-PD-0018"),
        (("extra",), True),
    ],
)
def test_tampered_payload_is_a_bad_signature(
    key: Ed25519PrivateKey, path: tuple[str, ...], value: object
) -> None:
    signed = sign_command(COMMAND, key, "k1")
    with pytest.raises(SignatureError) as info:
        verify_command(_tampered(signed, path, value), {"k1": key.public_key()})
    assert info.value.code == "bad_signature"
    assert isinstance(info.value, CloudError)


def test_tampered_signature(key: Ed25519PrivateKey) -> None:
    signed = sign_command(COMMAND, key, "k1")
    raw = bytearray(base64.b64decode(signed["sig"]))
    raw[0] ^= 0x01
    for sig in (base64.b64encode(bytes(raw)).decode(), "not base64!", "AAAA", 42):
        with pytest.raises(SignatureError) as info:
            verify_command({**signed, "sig": sig}, {"k1": key.public_key()})
        assert info.value.code == "bad_signature", sig


def test_signature_from_another_key(key: Ed25519PrivateKey) -> None:
    forged = sign_command(COMMAND, Ed25519PrivateKey.generate(), "k1")
    with pytest.raises(SignatureError) as info:
        verify_command(forged, {"k1": key.public_key()})
    assert info.value.code == "bad_signature"


def test_tampered_key_id(key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    keys = {"k1": key.public_key(), "k2": other.public_key()}
    signed = sign_command(COMMAND, key, "k1")
    # Claiming another known key fails that key's check ...
    with pytest.raises(SignatureError) as info:
        verify_command({**signed, "key_id": "k2"}, keys)
    assert info.value.code == "bad_signature"
    # ... and claiming a key the station does not hold is "unknown_key".
    with pytest.raises(SignatureError) as info:
        verify_command({**signed, "key_id": "k9"}, keys)
    assert info.value.code == "unknown_key"


@pytest.mark.parametrize("missing", ["sig", "key_id"])
def test_unsigned(key: Ed25519PrivateKey, missing: str) -> None:
    signed = sign_command(COMMAND, key, "k1")
    del signed[missing]
    with pytest.raises(SignatureError) as info:
        verify_command(signed, {"k1": key.public_key()})
    assert info.value.code == "unsigned"
    with pytest.raises(SignatureError) as info:
        verify_command(COMMAND, {"k1": key.public_key()})
    assert info.value.code == "unsigned"


def test_key_rotation_either_key_verifies(key: Ed25519PrivateKey) -> None:
    new = Ed25519PrivateKey.generate()
    ring = {"cloud-2026a": key.public_key(), "cloud-2026b": new.public_key()}
    assert verify_command(sign_command(COMMAND, key, "cloud-2026a"), ring) == "cloud-2026a"
    assert verify_command(sign_command(COMMAND, new, "cloud-2026b"), ring) == "cloud-2026b"
    # Once the old key is withdrawn, what it signs is refused.
    with pytest.raises(SignatureError) as info:
        verify_command(sign_command(COMMAND, key, "cloud-2026a"), {"cloud-2026b": new.public_key()})
    assert info.value.code == "unknown_key"


# ------------------------------------------------------------------ keys and files


def test_keygen_files_and_permissions(tmp_path: Path) -> None:
    private_path, public_path = generate_key_pair(tmp_path / "keys", "cloud-2026a")
    assert private_path == tmp_path / "keys" / "cloud-2026a.key"
    assert public_path == tmp_path / "keys" / "cloud-2026a.pub"
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert private_path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    lines = public_path.read_text().splitlines()
    assert len(lines) == 1 and len(base64.b64decode(lines[0], validate=True)) == 32

    private_key = load_private_key(private_path)
    public_key = load_public_key(public_path)
    assert encode_public_key(private_key.public_key()) == lines[0]
    signed = sign_command(COMMAND, private_key, "cloud-2026a")
    assert verify_command(signed, {"cloud-2026a": public_key}) == "cloud-2026a"


def test_keygen_never_overwrites(tmp_path: Path) -> None:
    private_path, _ = generate_key_pair(tmp_path, "k1")
    before = private_path.read_bytes()
    with pytest.raises(InvalidKeyError, match="already exists"):
        generate_key_pair(tmp_path, "k1")
    assert private_path.read_bytes() == before


@pytest.mark.parametrize("key_id", ["", "a b", "../x", "x" * 65])
def test_keygen_refuses_bad_key_id(tmp_path: Path, key_id: str) -> None:
    with pytest.raises(InvalidKeyError, match="not a valid key id"):
        generate_key_pair(tmp_path, key_id)
    assert list(tmp_path.iterdir()) == []


def test_public_key_forms(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    public = key.public_key()
    raw_text = encode_public_key(public)
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    raw_file = tmp_path / "k.pub"
    raw_file.write_text(raw_text + "\n")
    pem_file = tmp_path / "k.pem"
    pem_file.write_text(pem)
    for source in (raw_text, f"  {raw_text}\n", pem, raw_file, pem_file, str(pem_file)):
        assert encode_public_key(load_public_key(source)) == raw_text, source


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not a key", "neither base64 nor PEM"),
        (base64.b64encode(b"\x01" * 31).decode(), "this base64 holds 31"),
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a PEM public key"),
    ],
)
def test_bad_public_key_text(text: str, message: str) -> None:
    with pytest.raises(InvalidKeyError, match=message):
        parse_public_key(text)


def test_public_key_of_another_algorithm_is_refused() -> None:
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(InvalidKeyError, match="not an Ed25519 public key"):
        parse_public_key(pem)


def test_missing_key_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidKeyError, match="public key file not found"):
        load_public_key(tmp_path / "nope.pub")
    with pytest.raises(InvalidKeyError, match="private key file not found"):
        load_private_key(tmp_path / "nope.key")


def test_private_key_file_must_be_ed25519_pem(tmp_path: Path) -> None:
    _, public_path = generate_key_pair(tmp_path, "k1")
    with pytest.raises(InvalidKeyError, match="not an unencrypted PEM private key"):
        load_private_key(public_path)


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_a_message_nested_too_deep_is_a_bad_signature(key: Ed25519PrivateKey, depth: int) -> None:
    # Found by fuzzing: canonical_json raised RecursionError through verify_command.
    nested: list[Any] = []
    for _ in range(depth):
        nested = [nested]
    signed = sign_command(COMMAND, key, "k1")
    with pytest.raises(SignatureError) as info:
        verify_command({**signed, "data": nested}, {"k1": key.public_key()})
    assert info.value.code == "bad_signature"
