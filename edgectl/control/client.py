"""The CLI's side of the control socket: one request and its answer, or a stream of events."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from edgectl.control import protocol
from edgectl.errors import EdgectlError

CALL_TIMEOUT_S = 30.0  # longer than the daemon's own limit on an action


class DaemonNotRunning(EdgectlError):
    """Nothing answers on the control socket."""

    code = "not_running"

    def __init__(self, path: Path) -> None:
        super().__init__(f"edgectl is not running (no daemon at {path})")
        self.path = path


class ControlError(EdgectlError):
    """The daemon answered with an error, or the exchange itself failed."""

    code = "control"


class ControlClient:
    """A connection to the daemon's control socket. Use as a context manager."""

    def __init__(self, path: Path, *, timeout: float = CALL_TIMEOUT_S) -> None:
        self.path = path
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            self._sock.close()
            raise DaemonNotRunning(path) from None
        except PermissionError:
            self._sock.close()
            raise ControlError(
                f"permission denied on {path}: run as root or as a member of the socket's group",
                code="permission",
            ) from None
        except OSError as exc:
            self._sock.close()
            raise ControlError(
                f"cannot reach the daemon at {path}: {exc.strerror or exc}"
            ) from None
        self._file: BinaryIO = self._sock.makefile("rb")

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def call(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        """Send one request and return its result; an error answer raises `ControlError`."""
        request_id = next(self._ids)
        self._send(protocol.encode_request(request_id, op, args or {}))
        return self._result(self._receive())

    def stream(self, op: str, args: Mapping[str, Any] | None = None) -> ControlStream:
        """Start a streaming op; its first answer is `.result`, then iterate for events."""
        request_id = next(self._ids)
        self._send(protocol.encode_request(request_id, op, args or {}))
        result = self._result(self._receive())
        self._sock.settimeout(None)  # a quiet line may send nothing for a long time
        return ControlStream(self, result)

    # ------------------------------------------------------------------ plumbing
    def _send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise ControlError(f"lost the daemon at {self.path}: {exc.strerror or exc}") from None

    def _receive(self) -> dict[str, Any]:
        try:
            line = self._file.readline(protocol.MAX_LINE * 64)
        except TimeoutError:
            raise ControlError(
                f"the daemon did not answer within {self.timeout:g} s", code="timeout"
            ) from None
        except OSError as exc:
            raise ControlError(f"lost the daemon at {self.path}: {exc.strerror or exc}") from None
        if not line:
            raise ControlError("the daemon closed the connection", code="closed")
        return protocol.parse_reply(line)

    @staticmethod
    def _result(message: Mapping[str, Any]) -> Any:
        if message.get("ok"):
            return message.get("result")
        error = message.get("error") or {}
        raise ControlError(
            str(error.get("message") or "the daemon refused the request"),
            code=str(error.get("code") or "control"),
        )


class ControlStream:
    """Events of a streaming op; iteration ends when the daemon ends the stream."""

    def __init__(self, client: ControlClient, result: Any) -> None:
        self.client = client
        self.result = result
        self.end_reason: str | None = None

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                message = self.client._receive()
            except ControlError as exc:
                if exc.code == "closed":
                    self.end_reason = "the daemon closed the connection"
                    return
                raise
            if "event" in message:
                yield message["event"]
            elif "end" in message:
                self.end_reason = str(message["end"])
                return
            elif message.get("ok") is False:
                ControlClient._result(message)
