"""What the simulators' serving threads share: calls made from other threads that must run on
the serving thread (it owns the descriptors), and the pipe that wakes it from poll()."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.base import TransportError


@dataclass
class _Call:
    fn: Callable[[], None]
    done: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None


class ThreadCalls:
    """A wake-up pipe plus a queue of calls for one serving thread.

    The serving thread polls `wake_fd` with its descriptors; when it is readable it calls
    `drain()` then `run_pending()`. Any other thread uses `call(fn)`, which runs `fn` there
    and waits for it (or runs it at once when that thread is not running or is the caller).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.thread: threading.Thread | None = None
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._wake_r = self._wake_w = -1

    @property
    def wake_fd(self) -> int:
        return self._wake_r

    def open(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)

    def close(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 256):
                pass

    def call(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the serving thread and wait for it; its exception is raised here."""
        thread = self.thread
        if thread is None or not thread.is_alive() or threading.current_thread() is thread:
            fn()
            return
        call = _Call(fn)
        self._calls.put(call)
        self.wake()
        if not call.done.wait(10.0):
            raise TransportError(f"the {self.name} thread did not respond", device=self.name)
        if call.error is not None:
            raise call.error

    def run_pending(self) -> None:
        """On the serving thread: run every queued call (also on the way out, so that nobody
        waits forever on a call queued during shutdown)."""
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                call.fn()
            except Exception as exc:  # handed to the waiting caller, who re-raises it
                call.error = exc
            call.done.set()
