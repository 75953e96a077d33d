"""The one error tree of edgectl; library and driver exceptions are translated into it."""

from __future__ import annotations


class EdgectlError(Exception):
    """Root of every error edgectl raises on purpose. `code` is short and machine-readable."""

    code = "edgectl"

    def __init__(self, message: str, *, device: str | None = None, code: str | None = None):
        super().__init__(message)
        self.device = device
        if code is not None:
            self.code = code


class ConfigError(EdgectlError):
    """The configuration is invalid; the message names the key."""

    code = "config"


class DriverIOError(EdgectlError):
    """A device line failed (translated from drivers.base.DriverError)."""

    code = "driver_io"


class DeviceTimeoutError(DriverIOError):
    code = "timeout"


class FrameDecodeError(EdgectlError):
    """Bytes that do not form a valid frame."""

    code = "frame"


class StoreError(EdgectlError):
    """The SQLite store cannot be opened, migrated or written."""

    code = "store"


class CloudError(EdgectlError):
    code = "cloud"


class IllegalTransition(EdgectlError):
    """A fuelling point was asked to make a transition its state machine does not allow."""

    code = "illegal_transition"

    def __init__(self, state: object, event: object, *, device: str | None = None):
        super().__init__(f"event {event} is not allowed in state {state}", device=device)
        self.state = state
        self.event = event


class CommandError(EdgectlError):
    """A station command (authorize, stop, price…) was refused; `code` says why."""

    code = "command"
