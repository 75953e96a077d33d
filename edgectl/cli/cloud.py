"""`edgectl cloud`: the reference cloud tool -- command-signing keys, and commands to a station."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeAlias

from edgectl.errors import EdgectlError

if TYPE_CHECKING:
    from edgectl.cloud.client import Broker, CloudClient, Follower
    from edgectl.cloud.contract import CommandData

EXIT_OK = 0
EXIT_FAILED = 1  # the action could not be done, or the station refused it
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

_GROUP_EPILOG = """\
examples:
  edgectl cloud keygen --id cloud-2026a --out /etc/edgectl-cloud/keys
  edgectl cloud authorize --config /etc/edgectl/station.toml --key cloud-2026a.key \\
      --pump 3 --amount 200.00 --follow
  edgectl cloud follow --broker broker.example.com:8883 --tls --station SH-PD-0017

The station trusts the public keys listed under [[cloud.command_keys]] in its config; several
may be listed at once, so a new key can be rolled out before the old one is withdrawn.

Every action but keygen connects to the station's broker: take everything from the station's
own config (--config), or give --broker and --station; options given override the config.
The tool connects as edgectl-cloud-tool-<random>, never as the station, and asks for each
result on {prefix}/v1/{station}/reply/<random> (MQTT 5 response topic). The station answers on
any response topic; a production broker's ACL should let stations publish only under their own
{prefix}/v1/{station}/#, which this topic is.
exit status: 0 accepted, 1 rejected, no answer in time or no connection, 2 usage error.
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

_SEND_EXIT = """
exit status: 0 accepted, 1 rejected, no answer within --timeout or no connection, 2 usage error.
"""

_AUTHORIZE_EPILOG = (
    """\
examples:
  # pay-at-pump: 200.00 CNY on pump 3, 95 only; print every step until the sale
  edgectl cloud authorize --config station.toml --key keys/cloud-2026a.key \\
      --pump 3 --amount 200.00 --grade 95 --follow

  # prove idempotency: send the same command twice; the second answer is the stored one
  edgectl cloud authorize --config station.toml --key keys/cloud-2026a.key \\
      --pump 3 --volume 20 --cmd-id c-test-1
  edgectl cloud authorize --config station.toml --key keys/cloud-2026a.key \\
      --pump 3 --volume 20 --cmd-id c-test-1

The order id defaults to "o-" + the command id, so the same --cmd-id with the same options
is the same command. The customer must lift a nozzle within --expires-in seconds (default:
the station's authorize_timeout_s). With --follow the order's events are printed until it is
completed (with its sale), expired, cancelled or failed; Ctrl-C stops following.
"""
    + _SEND_EXIT
)

_CANCEL_EPILOG = (
    """\
example:
  edgectl cloud cancel --config station.toml --key keys/cloud-2026a.key --order-id o-88812

Only an order whose fuel has not started flowing can be cancelled.
"""
    + _SEND_EXIT
)

_STOP_EPILOG = (
    """\
example:
  edgectl cloud stop --config station.toml --key keys/cloud-2026a.key --pump 3

Emergency stop: the pump stops whatever it is doing; a fill in progress ends as a sale.
"""
    + _SEND_EXIT
)

_PRICES_EPILOG = (
    """\
examples:
  edgectl cloud prices --config station.toml --key keys/cloud-2026a.key \\
      --grade 92=7.12 --grade 95=7.58
  edgectl cloud prices --config station.toml --key keys/cloud-2026a.key \\
      --grade 92=7.05 --price-set-id ps-2026-11-25 --effective-at 2026-11-25T00:00:00+08:00

Each dispenser takes the prices when it is idle and confirms them on evt/price
(see them with: edgectl cloud follow).
"""
    + _SEND_EXIT
)

_CLEAR_EPILOG = (
    """\
examples:
  edgectl cloud clear --config station.toml --key keys/cloud-2026a.key --order-id o-88812
  edgectl cloud clear --config station.toml --key keys/cloud-2026a.key --sale-id 412

Acknowledges that a sale is paid. Accepted answers: ok, already_cleared, paid_elsewhere.
"""
    + _SEND_EXIT
)

_FOLLOW_EPILOG = """\
examples:
  edgectl cloud follow --config /etc/edgectl/station.toml
  edgectl cloud follow --broker 127.0.0.1:1883 --station DEMO-001 --json | jq .

Prints the station's results, order / sale / alarm / price events, and its retained pump
states, prices and online state (those first, as the broker holds them), until Ctrl-C.
Messages re-sent after a reconnect (same msg_id) are printed once.
exit status: 0 stopped by Ctrl-C or --duration, 1 no connection or connection lost, 2 usage.
"""

_ID_TEXT: Final = re.compile(r"[!-~]{1,128}")
_STATION_TEXT: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CURRENCY_TEXT: Final = re.compile(r"[A-Z]{3}")
_MAX_VALIDITY_S: Final = 24 * 3600.0


def register(subparsers: Subparsers) -> None:
    """Add `cloud` and its actions to the `edgectl` parser."""
    parser = subparsers.add_parser(
        "cloud",
        help="reference cloud tool: signing keys, signed commands to a station",
        description=(
            "Act as the cloud towards a station: make the key pair that signs commands,\n"
            "send signed commands over the station's MQTT broker, and follow what it reports."
        ),
        epilog=_GROUP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="cloud_action", metavar="ACTION", required=True)
    for add_action in _ACTIONS:
        add_action(actions)


# --------------------------------------------------------------------------- argument types


def _key_id(text: str) -> str:
    from edgectl.cloud.signing import KEY_ID

    if not KEY_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a valid key id (1..64 letters, digits, '.', '_' or '-')"
        )
    return text


def _identifier(text: str) -> str:
    if not _ID_TEXT.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an id (1 to 128 printable ASCII characters, no spaces)"
        )
    return text


def _station_id(text: str) -> str:
    if not _STATION_TEXT.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a station id (1 to 64 letters, digits, '-' or '_')"
        )
    return text


def _currency(text: str) -> str:
    if not _CURRENCY_TEXT.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-4217 code such as CNY")
    return text


def _ranged_int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is not between {lo} and {hi}")
        return value

    return parse


def _seconds(lo: float, hi: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not lo <= value <= hi:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{text} is not between {lo:g} and {hi:g} seconds")
        return value

    return parse


def _positive_decimal(text: str) -> Decimal:
    from edgectl.cloud.contract import ContractError, parse_decimal

    try:
        value = parse_decimal(text, "value")
    except ContractError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a decimal number such as 200.00"
        ) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return value


def _grade_price(text: str) -> tuple[str, Decimal]:
    grade, sep, price = text.partition("=")
    if not sep or not grade:
        raise argparse.ArgumentTypeError(f"{text!r} is not GRADE=PRICE, e.g. 95=7.58")
    return grade, _positive_decimal(price)


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time such as 2026-11-25T00:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no time zone: end it with Z (UTC) or an offset such as +08:00"
        )
    return moment


def parse_broker_address(text: str) -> tuple[str, int | None]:
    host, port_text = text, ""
    if text.startswith("["):  # [::1]:1883
        host, _, rest = text[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise argparse.ArgumentTypeError(f"{text!r} is not HOST[:PORT]")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST[:PORT] (no scheme, no path)")
    if not port_text:
        return host, None
    return host, _ranged_int(1, 65535)(port_text)


# --------------------------------------------------------------------------- parsers


def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group(
        "connection (from the station's config, or given; given options win)"
    )
    where.add_argument("--config", "-c", type=Path, metavar="FILE", help="station TOML file")
    where.add_argument("--broker", type=parse_broker_address, metavar="HOST[:PORT]")
    where.add_argument("--station", type=_station_id, metavar="ID", help="station id")
    where.add_argument("--prefix", metavar="PREFIX", help="topic prefix (default: edgectl)")
    where.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="TLS to the broker (default: as the config says; without one, on when --ca "
        "or --cert is given)",
    )
    where.add_argument("--ca", type=Path, metavar="FILE", help="CA certificate (PEM)")
    where.add_argument("--cert", type=Path, metavar="FILE", help="client certificate (PEM)")
    where.add_argument("--client-key", type=Path, metavar="FILE", help="its private key (PEM)")
    where.add_argument("--username", metavar="NAME")
    where.add_argument("--password", metavar="SECRET", help="visible to other local users")
    where.add_argument("--password-file", type=Path, metavar="FILE", help="password in a file")
    where.add_argument(
        "--json", action="store_true", help="print the station's raw messages, one JSON per line"
    )
    return common


def _sending_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    sign = common.add_argument_group("signing and sending")
    sign.add_argument(
        "--key", type=Path, required=True, metavar="FILE", help="private key from keygen"
    )
    sign.add_argument(
        "--key-id", type=_key_id, metavar="ID", help="default: the key file's name without .key"
    )
    sign.add_argument(
        "--cmd-id",
        type=_identifier,
        metavar="ID",
        help="command id (default: a fresh one); the same id again gets the stored result",
    )
    sign.add_argument(
        "--valid-for",
        type=_seconds(1, _MAX_VALIDITY_S),
        default=60.0,
        metavar="S",
        help="the command expires S seconds after it is issued (default 60)",
    )
    sign.add_argument(
        "--timeout",
        type=_seconds(0.1, 3600),
        default=10.0,
        metavar="S",
        help="how long to wait for the station's answer (default 10)",
    )
    return common


def _add_action(
    actions: Subparsers, name: str, help: str, description: str, epilog: str, *, sends: bool
) -> argparse.ArgumentParser:
    parents = [_connection_options()]
    if sends:
        parents.append(_sending_options())
    parser = actions.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        parents=parents,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=_run_action, parser=parser)
    return parser


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


def _add_authorize(actions: Subparsers) -> None:
    parser = _add_action(
        actions,
        "authorize",
        "send a pay-at-pump order: release a pump with a preset",
        "Send a signed pay-at-pump order: the station checks it, records it and releases the "
        "pump with the preset; the customer then lifts a nozzle and fuels.",
        _AUTHORIZE_EPILOG,
        sends=True,
    )
    order = parser.add_argument_group("the order")
    order.add_argument("--pump", type=_ranged_int(1, 99), required=True, metavar="N")
    preset = order.add_mutually_exclusive_group(required=True)
    preset.add_argument("--amount", type=_positive_decimal, metavar="X", help="money preset")
    preset.add_argument("--volume", type=_positive_decimal, metavar="L", help="litres preset")
    order.add_argument(
        "--currency",
        type=_currency,
        metavar="CUR",
        help="ISO-4217 (default: the config's station currency, else CNY)",
    )
    order.add_argument(
        "--grade",
        dest="grades",
        action="append",
        default=[],
        metavar="G",
        help="only this grade may be drawn (repeat for several)",
    )
    order.add_argument(
        "--nozzle",
        dest="nozzles",
        action="append",
        type=_ranged_int(1, 15),
        default=[],
        metavar="N",
        help="only this nozzle may be used (repeat for several)",
    )
    order.add_argument("--order-id", type=_identifier, metavar="ID", help='default: "o-" + cmd id')
    order.add_argument("--payment-method", type=_identifier, metavar="ID", help="e.g. wechat")
    order.add_argument(
        "--expires-in",
        type=_seconds(1, _MAX_VALIDITY_S),
        metavar="S",
        help="the pump waits S seconds for a nozzle lift (default: the station's own timeout)",
    )
    order.add_argument(
        "--follow", action="store_true", help="print the order's events until it is final"
    )


def _add_cancel(actions: Subparsers) -> None:
    parser = _add_action(
        actions,
        "cancel",
        "withdraw an order before fuel flows",
        "Withdraw a pay-at-pump order whose fuel has not started flowing.",
        _CANCEL_EPILOG,
        sends=True,
    )
    parser.add_argument("--order-id", type=_identifier, required=True, metavar="ID")


def _add_stop(actions: Subparsers) -> None:
    parser = _add_action(
        actions,
        "stop",
        "emergency stop of a pump",
        "Emergency stop of one pump, whatever it is doing.",
        _STOP_EPILOG,
        sends=True,
    )
    parser.add_argument("--pump", type=_ranged_int(1, 99), required=True, metavar="N")


def _add_prices(actions: Subparsers) -> None:
    parser = _add_action(
        actions,
        "prices",
        "set grade prices, now or at a given time",
        "Send a price set: grade prices now or at --effective-at, applied to each dispenser "
        "when it is idle.",
        _PRICES_EPILOG,
        sends=True,
    )
    parser.add_argument(
        "--grade",
        dest="prices",
        action="append",
        type=_grade_price,
        required=True,
        metavar="G=PRICE",
        help="a grade's unit price, e.g. 95=7.58 (repeat for each grade)",
    )
    parser.add_argument(
        "--price-set-id", type=_identifier, metavar="ID", help='default: "ps-" + cmd id'
    )
    parser.add_argument(
        "--effective-at", type=_moment, metavar="ISO", help="default: now (e.g. 2026-11-25T00:00Z)"
    )
    parser.add_argument(
        "--currency", type=_currency, metavar="CUR", help="default: the config's, else CNY"
    )


def _add_clear(actions: Subparsers) -> None:
    parser = _add_action(
        actions,
        "clear",
        "acknowledge that a sale is paid",
        "Acknowledge that a sale is paid, by its order or by its sale id.",
        _CLEAR_EPILOG,
        sends=True,
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--order-id", type=_identifier, metavar="ID")
    which.add_argument("--sale-id", type=_ranged_int(1, 2**63 - 1), metavar="N")


def _add_follow(actions: Subparsers) -> None:
    parser = _add_action(
        actions,
        "follow",
        "print what the station reports, as it arrives",
        "Print the station's results, events and retained states as they arrive, until Ctrl-C.",
        _FOLLOW_EPILOG,
        sends=False,
    )
    parser.add_argument("--heartbeats", action="store_true", help="also print heartbeats")
    parser.add_argument(
        "--duration",
        type=_seconds(0.1, 10 * 365 * 24 * 3600.0),
        metavar="S",
        help="stop after S seconds (default: until Ctrl-C)",
    )


def _add_ingest(actions: Subparsers) -> None:
    # Its own module: the backend worker is not a station tool, and only it needs psycopg.
    from edgectl.cli import ingest

    ingest.add(actions)


# Each action adds its own subcommand under `cloud`; new actions append here.
_ACTIONS: tuple[Callable[[Subparsers], None], ...] = (
    _add_keygen,
    _add_authorize,
    _add_cancel,
    _add_stop,
    _add_prices,
    _add_clear,
    _add_follow,
    _add_ingest,
)


# --------------------------------------------------------------------------- keygen


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


# --------------------------------------------------------------------------- the other actions


@dataclass(frozen=True)
class _Target:
    """Which broker and station to talk to, resolved from the config and the options."""

    broker: Broker
    station: str
    prefix: str
    currency: str


class _Failed(Exception):
    """Ends an action with exit status 1 and one line on stderr."""


def _run_action(args: argparse.Namespace) -> int:
    action: str = args.cloud_action
    try:
        target = _target(args)
        client = _client(args, target)
        command = _command(args, client, target) if action != "follow" else None
        return asyncio.run(_act(args, client, command))
    except KeyboardInterrupt:
        return EXIT_OK if action == "follow" else EXIT_INTERRUPTED
    except (_Failed, EdgectlError) as exc:
        return _fail(action, str(exc))
    except BrokenPipeError:  # the output was piped into `head` or similar, which has quit
        # Python would complain once more when it flushes stdout on the way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _usage(args: argparse.Namespace, message: str) -> NoReturn:
    parser: argparse.ArgumentParser = args.parser
    parser.error(message)  # exits with status 2


def _target(args: argparse.Namespace) -> _Target:
    from edgectl.cloud.client import Broker
    from edgectl.config import CloudConfig, load_config

    cloud: CloudConfig | None = None
    station: str | None = args.station
    currency = "CNY"
    if args.config is not None:
        config = load_config(args.config)  # ConfigError names the file and the key
        if config.cloud is None:
            raise _Failed(
                f"{args.config} has no [cloud] section: give --broker and --station instead"
            )
        cloud = config.cloud
        station = station or config.station.id
        currency = config.station.currency
    host, port = args.broker if args.broker is not None else (None, None)
    host = host or (cloud.host if cloud else None)
    if host is None or station is None:
        _usage(args, "say where the station is: --config FILE, or --broker HOST and --station ID")
    tls: bool = (
        args.tls if args.tls is not None else (cloud.tls if cloud else bool(args.ca or args.cert))
    )
    if port is None:
        same_tls = cloud is not None and cloud.tls == tls
        port = cloud.port if cloud is not None and same_tls else (8883 if tls else 1883)
    ca_file = args.ca or (cloud.ca_file if cloud else None)
    cert_file = args.cert or (cloud.cert_file if cloud else None)
    key_file = args.client_key or (cloud.key_file if cloud else None)
    if args.cert is not None or args.client_key is not None:
        cert_file, key_file = args.cert, args.client_key
        if cert_file is None or key_file is None:
            _usage(args, "--cert and --client-key go together")
    if not tls:
        if args.ca or args.cert:
            _usage(args, "--ca, --cert and --client-key need TLS (drop --no-tls)")
        ca_file = cert_file = key_file = None
    for path in (ca_file, cert_file, key_file):
        if path is not None and not path.is_file():
            raise _Failed(f"{path}: file not found")
    username = args.username or (cloud.username if cloud else None)
    password = args.password or (cloud.password if cloud else None)
    if args.password_file is not None:
        if args.password is not None:
            _usage(args, "give either --password or --password-file, not both")
        try:
            password = args.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise _Failed(f"cannot read {args.password_file}: {reason or exc}") from None
    if password is not None and username is None:
        _usage(args, "a password needs --username")
    prefix = args.prefix or (cloud.topic_prefix if cloud else "edgectl")
    broker = Broker(
        host=host,
        port=port,
        tls=tls,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        username=username,
        password=password,
    )
    return _Target(broker=broker, station=station, prefix=prefix, currency=currency)


def _client(args: argparse.Namespace, target: _Target) -> CloudClient:
    from edgectl.cloud.client import CloudClient
    from edgectl.cloud.signing import KEY_ID, load_private_key
    from edgectl.errors import ConfigError

    key = key_id = None
    if getattr(args, "key", None) is not None:
        key = load_private_key(args.key)  # InvalidKeyError: one sentence naming the file
        key_id = args.key_id or args.key.stem
        if not KEY_ID.fullmatch(key_id):
            _usage(args, f"the key file's name {key_id!r} is not a key id: give --key-id")
    try:
        return CloudClient(
            target.broker,
            target.station,
            prefix=target.prefix,
            key=key,
            key_id=key_id,
            timeout_s=getattr(args, "timeout", 10.0),
        )
    except ConfigError as exc:  # a --prefix that cannot start a topic (a config's is checked)
        _usage(args, str(exc))


def _command(args: argparse.Namespace, client: CloudClient, target: _Target) -> dict[str, Any]:
    """The signed command, checked against the contract before anything is sent."""
    from edgectl.cloud import contract
    from edgectl.cloud.client import new_cmd_id

    action: str = args.cloud_action
    cmd_id: str = args.cmd_id or new_cmd_id()
    issued_at = datetime.now(UTC)
    data = _data(args, cmd_id, issued_at, target.currency)
    message = client.command(
        action, data, cmd_id=cmd_id, valid_for_s=args.valid_for, issued_at=issued_at
    )
    try:
        contract.parse_command(
            contract.encode(message),
            command_type=action,
            station=target.station,
            now=None,
            clock_skew_s=0,
        )
    except contract.ContractError as exc:
        _usage(args, f"this would not be a valid {action} command: {exc}")
    return message


def _data(args: argparse.Namespace, cmd_id: str, issued_at: datetime, currency: str) -> CommandData:
    from edgectl.cloud import contract

    action: str = args.cloud_action
    derived = cmd_id[2:] if cmd_id.startswith("c-") else cmd_id
    if action == "authorize":
        expires_at = None
        if args.expires_in is not None:
            expires_at = issued_at + timedelta(seconds=args.expires_in)
        return contract.AuthorizeData(
            order_id=args.order_id or f"o-{derived}"[:128],
            pump=args.pump,
            preset_type="amount" if args.amount is not None else "volume",
            preset_value=args.amount if args.amount is not None else args.volume,
            currency=args.currency or currency,
            grades=tuple(args.grades),
            nozzles=tuple(args.nozzles),
            payment_method=args.payment_method,
            expires_at=expires_at,
        )
    if action == "cancel":
        return contract.CancelData(order_id=args.order_id)
    if action == "stop":
        return contract.StopData(pump=args.pump)
    if action == "prices":
        return contract.PricesData(
            price_set_id=args.price_set_id or f"ps-{derived}"[:128],
            currency=args.currency or currency,
            prices=tuple(contract.GradePrice(grade, price) for grade, price in args.prices),
            effective_at=args.effective_at,
        )
    assert action == "clear"
    return contract.ClearData(order_id=args.order_id, sale_id=args.sale_id)


async def _act(
    args: argparse.Namespace, client: CloudClient, command: dict[str, Any] | None
) -> int:
    async with client:
        if command is None:
            return await _follow_station(args, client)
        if args.cloud_action == "authorize" and args.follow:
            order_id = str(command["data"]["order_id"])
            async with client.follow([client.topics.event("order")]) as orders:
                result = await _send(args, client, command)
                if result is None:
                    return EXIT_FAILED
                return await _follow_order(args, orders, order_id, result)
        return EXIT_OK if await _send(args, client, command) is not None else EXIT_FAILED


async def _send(
    args: argparse.Namespace, client: CloudClient, command: dict[str, Any]
) -> dict[str, Any] | None:
    """Send, print the answer; the result's data when accepted, None when rejected."""
    if not args.json:
        print(
            f"{command['schema'].rsplit('/', 1)[-1]} {command['cmd_id']} to station "
            f"{client.station} via {client.broker} (key {command.get('key_id')})",
            flush=True,
        )
    message = await client.request(command)
    _show(args, client.reply_topic, message)
    data = message.get("data") or {}
    return data if data.get("status") == "accepted" else None


async def _follow_order(
    args: argparse.Namespace, orders: Follower, order_id: str, result: Mapping[str, Any]
) -> int:
    from edgectl.cloud.client import FINAL_ORDER_STATUSES

    if result.get("duplicate"):
        if not args.json:
            print(
                f"order {order_id}: this command was carried out before; its events went out "
                "then, so there is nothing more to follow here (try: edgectl cloud follow)"
            )
        return EXIT_OK
    if not args.json:
        print(f"following order {order_id} (Ctrl-C stops following)", flush=True)
    async for topic, message in orders:
        data = message.get("data") or {}
        if data.get("order_id") != order_id:
            continue
        _show(args, topic, message)
        if data.get("status") in FINAL_ORDER_STATUSES:
            break
    return EXIT_OK


async def _follow_station(args: argparse.Namespace, client: CloudClient) -> int:
    filters = client.station_filters(heartbeats=args.heartbeats)
    if not args.json:
        print(
            f"following station {client.station} on {client.broker} "
            f"({client.topics.base}/…); Ctrl-C stops",
            flush=True,
        )

    async def show_all() -> None:
        async with client.follow(filters) as messages:
            async for topic, message in messages:
                _show(args, topic, message)

    if args.duration is None:
        await show_all()
    else:
        try:
            async with asyncio.timeout(args.duration):
                await show_all()
        except TimeoutError:
            pass
    return EXIT_OK


# --------------------------------------------------------------------------- printing


def _show(args: argparse.Namespace, topic: str, message: Mapping[str, Any]) -> None:
    if args.json:
        print(json.dumps(message, ensure_ascii=False, separators=(",", ":")), flush=True)
    else:
        print(describe(topic, message), flush=True)


def describe(topic: str, message: Mapping[str, Any]) -> str:
    """One line for people about one station message. Never raises on an odd message."""
    schema = str(message.get("schema", ""))
    kind = schema.rsplit("/", 1)[-1] if schema.startswith("edgectl/") else ""
    data = message.get("data")
    describer = _DESCRIBERS.get(kind)
    if describer is None or not isinstance(data, Mapping):
        return f"{'':12} {'message':<10} on {topic}: {json.dumps(message, ensure_ascii=False)}"
    ts = str(message.get("ts", ""))
    when = ts[11:23] if len(ts) >= 23 else ts  # HH:MM:SS.mmm, UTC
    try:
        text = describer(data)
    except (TypeError, ValueError, AttributeError):
        text = json.dumps(data, ensure_ascii=False)
    return f"{when:<12} {kind:<10} {text}"


def _result(d: Mapping[str, Any]) -> str:
    text = f"{d.get('status')} ({d.get('code')}): {d.get('message')}"
    refs = [f"cmd {d.get('cmd_id')}", f"{d.get('type')}"]
    if d.get("order_id"):
        refs.append(f"order {d['order_id']}")
    text += f"  [{', '.join(refs)}]"
    if d.get("duplicate"):
        text += "  -- a repeat: the stored answer to this cmd_id; nothing was done again"
    return text


def _sale_summary(d: Mapping[str, Any]) -> str:
    return (
        f"sale {d.get('sale_id')}: pump {d.get('pump')} nozzle {d.get('nozzle')} "
        f"grade {d.get('grade')}, {d.get('volume')} L, {d.get('amount')} {d.get('currency')} "
        f"at {d.get('unit_price')}"
    )


def _order(d: Mapping[str, Any]) -> str:
    preset = d.get("preset") or {}
    unit = "L" if preset.get("type") == "volume" else d.get("currency")
    text = f"order {d.get('order_id')} pump {d.get('pump')}: {d.get('status')}"
    if d.get("status") in ("accepted", "authorized"):
        text += f" (preset {preset.get('value')} {unit})"
    if d.get("reason"):
        text += f" ({d['reason']})"
    if isinstance(d.get("sale"), Mapping):
        text += f" -- {_sale_summary(d['sale'])}"
    return text


def _sale(d: Mapping[str, Any]) -> str:
    text = f"{_sale_summary(d)} (by {d.get('authorized_by')}"
    if d.get("order_id"):
        text += f", order {d['order_id']}"
    return text + ")"


def _alarm(d: Mapping[str, Any]) -> str:
    where = "".join(f" {name} {d[name]}" for name in ("pump", "nozzle") if d.get(name) is not None)
    text = f"#{d.get('alarm_id')} {d.get('severity')} {d.get('kind')}{where}: {d.get('message')}"
    return text + (f" (cleared {d['cleared_at']})" if d.get("cleared_at") else "")


def _grade_prices(prices: Any, currency: Any) -> str:
    items = ", ".join(f"{p.get('grade')} {p.get('unit_price')}" for p in prices or ())
    return f"{items} {currency}"


def _price(d: Mapping[str, Any]) -> str:
    text = f"price set {d.get('price_set_id')} on pump {d.get('pump')}: {d.get('status')}"
    if d.get("reason"):
        text += f" ({d['reason']})"
    return f"{text} -- {_grade_prices(d.get('prices'), d.get('currency'))}"


def _prices(d: Mapping[str, Any]) -> str:
    name = d.get("price_set_id") or "the config's prices"
    return f"in force: {name} -- {_grade_prices(d.get('prices'), d.get('currency'))}"


def _pump_state(d: Mapping[str, Any]) -> str:
    text = f"pump {d.get('pump')}: {d.get('state')}"
    if not d.get("online"):
        return text + " (offline)"
    text += f" ({d.get('status')})"
    if d.get("nozzle"):
        text += f" nozzle {d['nozzle']}{' out' if d.get('nozzle_out') else ''}"
        text += f" grade {d.get('grade')}"
    if d.get("volume") is not None and d.get("state") in ("fuelling", "suspended_fuelling"):
        text += f", {d.get('volume')} L {d.get('amount')}"
    if d.get("order_id"):
        text += f" [order {d['order_id']}]"
    return text


def _online(d: Mapping[str, Any]) -> str:
    return f"station online (edgectl {d.get('version')})" if d.get("online") else "station OFFLINE"


def _heartbeat(d: Mapping[str, Any]) -> str:
    return f"up {d.get('uptime_s')} s, outbox {d.get('outbox_depth')} waiting"


_DESCRIBERS: Final[Mapping[str, Callable[[Mapping[str, Any]], str]]] = {
    "result": _result,
    "order": _order,
    "sale": _sale,
    "alarm": _alarm,
    "price": _price,
    "prices": _prices,
    "pump_state": _pump_state,
    "online": _online,
    "heartbeat": _heartbeat,
}


def _fail(action: str, message: str) -> int:
    print(f"edgectl cloud {action}: {message}", file=sys.stderr)
    return EXIT_FAILED
