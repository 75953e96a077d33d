"""`edgectl cloud`: the reference cloud tool -- command-signing keys, and commands to a station."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

from edgectl.errors import EdgectlError

EXIT_OK = 0
EXIT_FAILED = 1  # the action could not be done; one line on stderr says why

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

_GROUP_EPILOG = """\
examples:
  edgectl cloud keygen --id cloud-2026a --out /etc/edgectl-cloud/keys

The station trusts the public keys listed under [[cloud.command_keys]] in its config; several
may be listed at once, so a new key can be rolled out before the old one is withdrawn.
"""

_KEYGEN_EPILOG = """\
example:
  edgectl cloud keygen --id cloud-2026a --out keys/
    writes keys/cloud-2026a.key  the private signing key (PEM PKCS8, mode 0600): keep it
                                 on the cloud side, never on a station
           keys/cloud-2026a.pub  the public key (base64, one line)
    and prints the [[cloud.command_keys]] block to paste into each station's config.

Existing files are never overwritten.
exit status: 0 written, 1 could not write the pair, 2 usage error.
"""


def register(subparsers: Subparsers) -> None:
    """Add `cloud` and its actions to the `edgectl` parser."""
    parser = subparsers.add_parser(
        "cloud",
        help="reference cloud tool: signing keys, signed commands to a station",
        description=(
            "Act as the cloud towards a station: make the key pair that signs commands,\n"
            "and send signed commands over the station's MQTT broker."
        ),
        epilog=_GROUP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="cloud_action", metavar="ACTION", required=True)
    for add_action in _ACTIONS:
        add_action(actions)


def _key_id(text: str) -> str:
    from edgectl.cloud.signing import KEY_ID

    if not KEY_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a valid key id (1..64 letters, digits, '.', '_' or '-')"
        )
    return text


def _add_keygen(actions: Subparsers) -> None:
    parser = actions.add_parser(
        "keygen",
        help="make an Ed25519 key pair for signing commands",
        description="Make an Ed25519 key pair that signs the commands sent to stations.",
        epilog=_KEYGEN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--id",
        dest="key_id",
        required=True,
        type=_key_id,
        metavar="KEYID",
        help="key id, carried by every command it signs (e.g. cloud-2026a)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="directory for the two files (default: the current directory)",
    )
    parser.set_defaults(func=run_keygen)


# Each action adds its own subcommand under `cloud`; new actions append here.
_ACTIONS: tuple[Callable[[Subparsers], None], ...] = (_add_keygen,)


def run_keygen(args: argparse.Namespace) -> int:
    from edgectl.cloud.signing import generate_key_pair, load_public_key

    try:
        private_path, public_path = generate_key_pair(args.out, args.key_id)
        public_key = public_path.read_text(encoding="ascii").strip()
        load_public_key(public_key)  # what the station will do with it
    except (EdgectlError, OSError) as exc:
        return _fail("keygen", str(exc))
    print(f"private key: {private_path}  (mode 0600; signs commands, keep it secret)")
    print(f"public key:  {public_path}")
    print()
    print("Paste into each station's config, below its [cloud] section:")
    print()
    print("[[cloud.command_keys]]")
    print(f'id = "{args.key_id}"')
    print(f'public_key = "{public_key}"')
    return EXIT_OK


def _fail(action: str, message: str) -> int:
    print(f"edgectl cloud {action}: {message}", file=sys.stderr)
    return EXIT_FAILED
