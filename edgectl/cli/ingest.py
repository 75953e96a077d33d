"""`edgectl cloud ingest`: run the reference backend ingest worker (edgectl/backend).

Kept apart from the station's CLI: only this command imports psycopg, which is the optional
`backend` extra (``pip install 'edgectl[backend]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

from edgectl.cli.cloud import (
    EXIT_FAILED,
    EXIT_OK,
    Subparsers,
    _identifier,
    _key_id,
    _ranged_int,
    _seconds,
    _usage,
    parse_broker_address,
)
from edgectl.errors import EdgectlError

_EPILOG = """\
examples:
  edgectl cloud ingest --broker broker.example.com:8883 --tls --ca ca.pem \\
      --dsn "host=db.example.com dbname=fuel user=ingest" --schema edgectl \\
      --group backend --client-id ingest-1 --key keys/cloud-2026a.key
  edgectl cloud ingest --config backend.toml --client-id ingest-2

Subscribes with $share/{group}/{prefix}/v1/+/evt/#, …/+/result and …/+/reply/#, checks every
message against the contract's schemas, stores it once by msg_id in PostgreSQL (typed tables
sales, orders, alarms, deliveries; every message in events; failures in rejects), keeps a
watermark per station and stream, asks for gaps with a signed replay and acknowledges with a
signed ack only what its transaction committed. Run as many as you like with the same --group
and a different, stable --client-id each (a restarted worker takes its session back).
See docs/mqtt.md, "The reference consumer".

The options may also come from a [backend] section of a TOML file (--config); options win.
exit status: 0 stopped by SIGTERM or Ctrl-C, 1 cannot start (config, key, database), 2 usage.
"""


def add(actions: Subparsers) -> None:
    parser = actions.add_parser(
        "ingest",
        help="run the reference backend ingest worker (MQTT shared subscription → PostgreSQL)",
        description="Consume every station's messages on a shared subscription into "
        "PostgreSQL, exactly once, with acks and replays (contract 1.1).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", "-c", type=Path, metavar="FILE", help="TOML with [backend]")
    db = parser.add_argument_group("PostgreSQL")
    db.add_argument("--dsn", metavar="DSN", help="libpq connection string (default: the local one)")
    db.add_argument("--schema", metavar="NAME", help="schema of the tables (default edgectl)")
    mqtt = parser.add_argument_group("broker")
    mqtt.add_argument("--broker", type=parse_broker_address, metavar="HOST[:PORT]")
    mqtt.add_argument("--host", metavar="HOST", help="the broker's host (or --broker)")
    mqtt.add_argument("--port", type=_ranged_int(1, 65535), metavar="PORT")
    mqtt.add_argument("--tls", action=argparse.BooleanOptionalAction, default=None)
    mqtt.add_argument("--ca", type=Path, metavar="FILE", help="CA certificate (PEM)")
    mqtt.add_argument("--cert", type=Path, metavar="FILE", help="client certificate (PEM)")
    mqtt.add_argument("--client-key", type=Path, metavar="FILE", help="its private key (PEM)")
    mqtt.add_argument("--username", metavar="NAME")
    mqtt.add_argument("--password-file", type=Path, metavar="FILE")
    mqtt.add_argument("--prefix", metavar="PREFIX", help="topic prefix (default edgectl)")
    mqtt.add_argument("--group", metavar="NAME", help="shared subscription group")
    mqtt.add_argument(
        "--client-id", type=_identifier, metavar="ID", help="stable per worker: its MQTT session"
    )
    mqtt.add_argument(
        "--session-expiry", type=_ranged_int(1, 2**32 - 1), metavar="S", help="default 600"
    )
    sign = parser.add_argument_group("signing acks and replays")
    sign.add_argument("--key", type=Path, metavar="FILE", help="private key from keygen")
    sign.add_argument("--key-id", type=_key_id, metavar="ID", help="default: the file's stem")
    tune = parser.add_argument_group("rhythm")
    tune.add_argument("--batch-max", type=_ranged_int(1, 10000), metavar="N")
    tune.add_argument("--ack-every", type=_ranged_int(1, 10**6), metavar="N")
    tune.add_argument("--ack-interval", type=_seconds(0.01, 86400), metavar="S")
    tune.add_argument("--gap-grace", type=_seconds(0.01, 86400), metavar="S")
    tune.add_argument("--replay-interval", type=_seconds(0.01, 86400), metavar="S")
    tune.add_argument("--quiet", type=_seconds(0.01, 86400), metavar="S")
    tune.add_argument("--probe-interval", type=_seconds(0.01, 86400), metavar="S")
    tune.add_argument("--answer-timeout", type=_seconds(0.01, 86400), metavar="S")
    tune.add_argument(
        "--schemas", type=Path, metavar="DIR", help="the contract's JSON Schemas (docs/schemas)"
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    parser.add_argument("--log-format", default="json", choices=("json", "console"))
    parser.set_defaults(func=run, parser=parser)


def _settings(args: argparse.Namespace) -> Any:
    from edgectl.backend.config import IngestConfig, load_backend_section, load_signing_key
    from edgectl.cloud.client import Broker

    section: dict[str, Any] = load_backend_section(args.config) if args.config else {}

    def pick(option: Any, key: str, default: Any = None) -> Any:
        return option if option is not None else section.get(key, default)

    host, port = args.broker if args.broker is not None else (None, None)
    host = args.host or host or section.get("host")
    if not isinstance(host, str):
        _usage(args, "say where the broker is: --broker HOST[:PORT], --host, or [backend] host")
    tls = bool(pick(args.tls, "tls", bool(args.ca or args.cert)))
    port = args.port or port or section.get("port") or (8883 if tls else 1883)
    password = None
    password_file = pick(args.password_file, "password_file")
    if password_file is not None:
        password = Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
    broker = Broker(
        host=host,
        port=int(port),
        tls=tls,
        ca_file=_path(pick(args.ca, "ca_file")),
        cert_file=_path(pick(args.cert, "cert_file")),
        key_file=_path(pick(args.client_key, "key_file")),
        username=pick(args.username, "username"),
        password=password,
    )
    key_path = _path(pick(args.key, "signing_key"))
    if key_path is None:
        _usage(args, "the worker signs its acks and replays: give --key (or signing_key)")
    key = load_signing_key(key_path)
    key_id = pick(args.key_id, "key_id") or key_path.stem
    tunables = {
        k: v
        for k, v in section.items()
        if k
        not in {
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
    }
    if "schemas" in tunables:
        tunables["schemas"] = Path(tunables["schemas"])
    config = IngestConfig(broker=broker, key=key, key_id=key_id, **tunables)
    return config.with_options(
        dsn=args.dsn,
        schema=args.schema,
        prefix=args.prefix,
        group=args.group,
        client_id=args.client_id,
        session_expiry_s=args.session_expiry,
        batch_max=args.batch_max,
        ack_every=args.ack_every,
        ack_interval_s=args.ack_interval,
        gap_grace_s=args.gap_grace,
        replay_interval_s=args.replay_interval,
        quiet_s=args.quiet,
        probe_interval_s=args.probe_interval,
        answer_timeout_s=args.answer_timeout,
        schemas=args.schemas,
    )


def _path(value: Any) -> Path | None:
    return None if value is None else Path(value)


def run(args: argparse.Namespace) -> int:
    from edgectl.logs import configure

    configure(args.log_level, args.log_format)
    try:
        import psycopg  # noqa: F401  (the optional extra: say so plainly when it is missing)
    except ImportError:
        print(
            "edgectl cloud ingest: psycopg is not installed (pip install 'edgectl[backend]')",
            file=sys.stderr,
        )
        return EXIT_FAILED
    try:
        config = _settings(args)
        from edgectl.backend.worker import IngestWorker

        worker = IngestWorker(config)
    except (EdgectlError, OSError, TypeError) as exc:
        print(f"edgectl cloud ingest: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return asyncio.run(_serve(worker))


async def _serve(worker: Any) -> int:
    import psycopg

    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await worker.run()
    except asyncio.CancelledError:
        return EXIT_OK
    except psycopg.Error as exc:
        print(f"edgectl cloud ingest: PostgreSQL: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    return EXIT_OK
