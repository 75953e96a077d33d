"""Test kit: a real Mosquitto broker on a free local port, with TLS material and passwords.

The broker persists its sessions and queued QoS 1 messages in its own directory (every second,
and on a clean stop), so `restart()` keeps what a real broker keeps.
"""

from __future__ import annotations

import base64
import datetime as dt
import getpass
import hashlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None
)

HOST = "127.0.0.1"
_START_TIMEOUT_S = 10.0


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Certificates:
    """PEM files of a throw-away CA, a server certificate for 127.0.0.1 / localhost, and a
    client certificate, all signed by that CA."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(directory: Path, *, client_name: str = "edgectl-test") -> Certificates:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgectl test CA")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        name: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName]
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            _builder(subject, ca_name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    server_cert, server_key = leaf(
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))],
    )
    client_cert, client_key = leaf(client_name, ExtendedKeyUsageOID.CLIENT_AUTH, [])

    certs = Certificates(
        ca_file=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )
    certs.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    certs.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    certs.client_cert.write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    for path, key in ((certs.server_key, server_key), (certs.client_key, client_key)):
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
    return certs


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )


# --------------------------------------------------------------------------- passwords


def write_password_file(path: Path, users: Mapping[str, str]) -> Path:
    """A Mosquitto 2 password file (PBKDF2-SHA512, the "$7$" format mosquitto_passwd writes)."""
    iterations = 101
    lines = []
    for user, password in users.items():
        salt = os.urandom(12)
        digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
        salt_b64 = base64.b64encode(salt).decode()
        digest_b64 = base64.b64encode(digest).decode()
        lines.append(f"{user}:$7${iterations}${salt_b64}${digest_b64}\n")
    path.write_text("".join(lines), encoding="utf-8")
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------- the broker


class MosquittoBroker:
    """One Mosquitto process on 127.0.0.1 and a free port, kept across restarts."""

    def __init__(
        self,
        directory: Path,
        *,
        tls: bool = False,
        require_certificate: bool = False,
        password_file: Path | None = None,
        acl_file: Path | None = None,
    ) -> None:
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = MOSQUITTO
        self.directory = directory / "mosquitto"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = _free_port()
        self.tls = tls
        self.require_certificate = require_certificate
        self.password_file = password_file
        self.acl_file = acl_file
        self.certs = make_certificates(self.directory / "certs") if tls else None
        self.conf_path = self.directory / "mosquitto.conf"
        self.log_path = self.directory / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    # -- life cycle

    def start(self) -> None:
        if self.running:
            raise RuntimeError("the broker is already running")
        self.conf_path.write_text(self._conf(), encoding="utf-8")
        self._process = subprocess.Popen(
            [self.binary, "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._wait_listening()

    def stop(self) -> None:
        """SIGTERM: Mosquitto saves its persistence file and closes every connection."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: no goodbye and no final save: what changed in the last second is lost."""
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.running:
            self.stop()
        self._process = None

    # -- internals

    def _end(self, sig: signal.Signals) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()
        self._process = None

    def _wait_listening(self) -> None:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                err = process.stderr.read().decode(errors="replace") if process.stderr else ""
                self._process = None
                raise RuntimeError(
                    f"mosquitto exited with {process.returncode}: {err.strip()}\n{self.log}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self._end(signal.SIGKILL)
                    raise RuntimeError(
                        f"mosquitto did not listen on {self.host}:{self.port}\n{self.log}"
                    ) from None
                time.sleep(0.02)

    def _conf(self) -> str:
        lines = [
            "per_listener_settings false",
            # Running as root, Mosquitto would drop to user "mosquitto", who cannot write here.
            f"user {getpass.getuser()}",
            "set_tcp_nodelay true",
            "persistence true",
            f"persistence_location {self.directory}/",
            "persistence_file mosquitto.db",
            # Saved every second and on SIGTERM; saving on every change would cost ~2 ms per
            # message and make latency measurements meaningless.
            "autosave_interval 1",
            # The tests' cloud side reads in the test's own event loop, one packet per wakeup
            # (aiomqtt), and falls behind a fast station; past 1000 queued QoS 1 messages
            # Mosquitto would drop the rest for it, as if the station had lost them. Not 0 (no
            # limit): Mosquitto 2.0.11 then drops a client whose QoS 1 PUBLISH the ACL denied.
            "max_queued_messages 1000000",
            f"log_dest file {self.log_path}",
            "log_type all",
            "log_timestamp true",
        ]
        anonymous = self.password_file is None and not self.require_certificate
        lines.append(f"allow_anonymous {'true' if anonymous else 'false'}")
        if self.password_file is not None:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        lines.append(f"listener {self.port} {self.host}")
        if self.certs is not None:
            lines += [
                f"cafile {self.certs.ca_file}",
                f"certfile {self.certs.server_cert}",
                f"keyfile {self.certs.server_key}",
                f"require_certificate {'true' if self.require_certificate else 'false'}",
            ]
            if self.require_certificate and self.password_file is None:
                # The client certificate is the identity; no username/password needed.
                lines.append("use_identity_as_username true")
        return "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port
