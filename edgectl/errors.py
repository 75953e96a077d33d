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
    """A device or its line failed; translated from drivers.base.DriverError at one boundary
    (edgectl/driver_errors.py). `code` is the driver's own ("timeout", "rejected", …)."""

    code = "driver_io"


class LineUnavailableError(DriverIOError):
    """The line itself failed or is down (drivers.base.TransportError)."""

    code = "transport"


class DeviceTimeoutError(DriverIOError):
    """The device did not answer in time (drivers.base.DeviceTimeout)."""

    code = "timeout"


class FrameDecodeError(DriverIOError):
    """Bytes that do not form a valid frame (drivers.base.FrameError)."""

    code = "frame"


class DeviceRefusedError(DriverIOError):
    """The device refused the command (drivers.base.CommandRejected)."""

    code = "rejected"


class StoreError(EdgectlError):
    """The SQLite store cannot be opened, migrated or written.

    The subclasses name the cause; their message is one sentence saying what is wrong and what
    to do. `path` is the store file, `detail` SQLite's or the OS's own words for the log.
    """

    code = "store"

    def __init__(
        self,
        message: str,
        *,
        device: str | None = None,
        code: str | None = None,
        path: object = None,
        detail: str | None = None,
    ):
        super().__init__(message, device=device, code=code)
        self.path = path
        self.detail = detail


class StoreUnwritableError(StoreError):
    """The store cannot take writes now; while running, edgectl holds sales at the pumps and
    refuses authorizations until a write succeeds again."""

    code = "store_unwritable"


class StoreFullError(StoreUnwritableError):
    """The file system holding the store has no space left."""

    code = "store_full"


class StorePermissionError(StoreUnwritableError):
    """The daemon's user may not write the store (permissions, or a read-only file system)."""

    code = "store_permission"


class StoreIOError(StoreUnwritableError):
    """The disk failed to read or write (hardware or file-system error)."""

    code = "store_io"


class StoreBusyError(StoreUnwritableError):
    """Another process holds the store locked."""

    code = "store_busy"


class StoreCorruptError(StoreUnwritableError):
    """The file is damaged, or is not a database at all."""

    code = "store_corrupt"


class StoreForeignError(StoreError):
    """The store, or the -wal beside it, is not this station's own."""

    code = "store_foreign"


class StoreNewerSchemaError(StoreError):
    """The store was written by a newer edgectl."""

    code = "store_newer_schema"


class StoreMissingError(StoreError):
    """No database where one was expected (read-only tools never create one)."""

    code = "store_missing"


class CloudError(EdgectlError):
    code = "cloud"


class IllegalTransition(EdgectlError):
    """A fuelling point was asked to make a transition its state machine does not allow."""

    code = "illegal_transition"

    def __init__(self, state: object, event: object, *, device: str | None = None):
        super().__init__(f"event {event} is not allowed in state {state}", device=device)
        self.state = state
        self.event = event


class IllegalAuthorizationTransition(EdgectlError):
    """An authorization was asked to take a step its lifecycle does not allow
    (forecourt/authorization.py): an ended one moved again, a fuelling one expired…"""

    code = "illegal_authorization_transition"

    def __init__(self, state: object, event: object, *, device: str | None = None):
        state_name = getattr(state, "name", state)
        event_name = getattr(event, "name", event)
        where = f" ({device})" if device else ""
        super().__init__(
            f"authorization event {event_name} is not allowed in state {state_name}{where}",
            device=device,
        )
        self.state = state
        self.event = event


class CommandError(EdgectlError):
    """A station command (authorize, stop, price…) was refused; `code` says why."""

    code = "command"
