"""systemd's notification protocol (sd_notify(3)): one datagram of `KEY=value` lines to
$NOTIFY_SOCKET. Plain sockets, no library: the protocol is a sendto() and a few variables.

`Notifier.from_environ()` reads what systemd gives a Type=notify service: NOTIFY_SOCKET (a
path, or `@name` in the abstract namespace), WATCHDOG_USEC (the unit's WatchdogSec=) and
WATCHDOG_PID (the one process the watchdog is for). Without NOTIFY_SOCKET it is off and every
call is a no-op, so the daemon runs the same from a shell.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Final

from edgectl.logs import get_logger

READY: Final = "READY=1"
STOPPING: Final = "STOPPING=1"
WATCHDOG: Final = "WATCHDOG=1"
_STATUS_MAX: Final = 400  # systemctl shows one line; the datagram stays far below any limit


def status(text: str) -> str:
    """A STATUS= assignment: one line, whatever `text` holds."""
    line = " ".join(text.split())
    return f"STATUS={line[:_STATUS_MAX]}"


class Notifier:
    """Sends notifications to systemd. Never raises: supervision must not stop the station."""

    def __init__(self, address: str | None, *, watchdog_s: float | None = None) -> None:
        """`address` as in NOTIFY_SOCKET (None: off); `watchdog_s` the watchdog's timeout
        (None: no watchdog)."""
        self.address = address
        self.watchdog_s = watchdog_s
        self.log = get_logger(part="sdnotify")
        self._sock: socket.socket | None = None
        self._target = ""
        self._failing = False
        if address is None:
            return
        if address.startswith("@"):
            self._target = "\0" + address[1:]  # Linux's abstract namespace
        elif address.startswith("/"):
            self._target = address
        else:
            # systemd also knows vsock: addresses, for virtual machines; not a station PC's case.
            self.log.warning("notify_socket_unsupported", address=address)
            self.address = None
            return
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, *, pid: int | None = None
    ) -> Notifier:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        return cls(address, watchdog_s=_watchdog_s(env, os.getpid() if pid is None else pid))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=value` assignments in one datagram; whether it was sent."""
        if self._sock is None or not assignments:
            return False
        try:
            self._sock.sendto("\n".join(assignments).encode(), self._target)
        except OSError as exc:
            # Nobody listening (systemd gone, a test's socket closed) or its queue full:
            # logged once, sent again next time.
            if not self._failing:
                self._failing = True
                self.log.warning(
                    "notify_failed", address=self.address, error=exc.strerror or str(exc)
                )
            return False
        if self._failing:
            self._failing = False
            self.log.info("notify_sent_again", address=self.address)
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_s(env: Mapping[str, str], pid: int) -> float | None:
    """WATCHDOG_USEC in seconds when the watchdog is on for process `pid`, as
    sd_watchdog_enabled(3) decides it; else None."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    watched = env.get("WATCHDOG_PID")
    if watched:
        try:
            if int(watched) != pid:
                return None  # set for another process: the one that started us, say
        except ValueError:
            return None
    return usec / 1_000_000
