"""A pseudo-terminal pair standing in for a serial line, so simulators can play the device end."""

from __future__ import annotations

import contextlib
import os
import tty
from pathlib import Path
from types import TracebackType

from drivers.base import TransportError


class PtyLink:
    """One pty pair: the simulator owns the master, the daemon opens the slave (or `link`).

    Both ends are raw so nothing the daemon writes is echoed back or cooked by a line
    discipline. The link keeps its own slave descriptor open: without it the master reads
    EIO as soon as the daemon closes the port to reopen it, which a real line never does.
    """

    def __init__(self, link: Path | None = None) -> None:
        self._link = link
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_name: str | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def open(self) -> PtyLink:
        if self._master is not None:
            raise TransportError("pty link is already open", device=self._describe())
        master, slave = os.openpty()
        try:
            # The terminal settings live on the slave, but some platforms keep a
            # separate copy for the master; raw on both is the only safe choice.
            tty.setraw(master)
            tty.setraw(slave)
            slave_name = os.ttyname(slave)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        self._master, self._slave, self._slave_name = master, slave, slave_name
        if self._link is not None:
            self._point_link_at(slave_name)
        return self

    def close(self) -> None:
        """Close both ends and remove the symlink; closing twice is harmless."""
        target = self._slave_name
        self._close_fds()
        if target is not None:
            self._remove_link(target)

    def unplug(self) -> None:
        """Pull the adapter: the daemon's descriptor sees hang-up (EOF on read, EIO on write)
        and the configured port path disappears until `replug()`."""
        self.close()

    def replug(self) -> None:
        """Plug a fresh adapter in: a new pty pair, the symlink pointed at its slave."""
        self._close_fds()
        self.open()

    # -- properties --------------------------------------------------------------------
    @property
    def master_fd(self) -> int:
        if self._master is None:
            raise TransportError("pty link is not open", device=self._describe())
        return self._master

    @property
    def slave_name(self) -> str:
        if self._slave_name is None:
            raise TransportError("pty link is not open", device=self._describe())
        return self._slave_name

    @property
    def link(self) -> Path | None:
        return self._link

    @property
    def is_open(self) -> bool:
        return self._master is not None

    # -- context manager ---------------------------------------------------------------
    def __enter__(self) -> PtyLink:
        if not self.is_open:
            self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = self._slave_name if self._slave_name is not None else "closed"
        return f"PtyLink({state!s}, link={self._link})"

    # -- internals ---------------------------------------------------------------------
    def _describe(self) -> str:
        return str(self._link) if self._link is not None else "pty"

    def _close_fds(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        self._slave_name = None

    def _point_link_at(self, target: str) -> None:
        assert self._link is not None
        # A daemon reopening the port must find either the old target or the new one,
        # never a missing path: build the new symlink aside and rename it into place.
        temp = self._link.with_name(f".{self._link.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        try:
            os.symlink(target, temp)
            os.replace(temp, self._link)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise TransportError(
                f"cannot point {self._link} at {target}: {exc.strerror}", device=str(self._link)
            ) from exc

    def _remove_link(self, target: str) -> None:
        if self._link is None:
            return
        # Remove the path only while it is still our symlink: another simulator may have
        # taken the port over since, and a regular file there was never ours.
        try:
            if os.readlink(self._link) != target:
                return
        except OSError:
            return
        with contextlib.suppress(FileNotFoundError):
            self._link.unlink()
