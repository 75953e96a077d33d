"""structlog set-up: JSON lines for the journal, or readable console output for people."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


# Libraries that log through the standard library. Their records are rendered like ours, one
# JSON object a line; what they call an error is, for these, a fault edgectl already counts,
# alarms and logs in its own words (a Modbus reply cut short, a broker gone), so their
# records are demoted to debug. Anything else (asyncio's own errors) keeps its level.
_DEMOTED = ("pymodbus", "paho", "aiomqtt", "mqtt")


class _LibraryLevels(logging.Filter):
    """Demote the chatty libraries' records to debug, then apply the configured level (the
    root logger lets everything through so a demoted record is judged by its new level)."""

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] in _DEMOTED and record.levelno < logging.CRITICAL:
            record.original_level = record.levelname.lower()
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return record.levelno >= self.threshold


def _library_fields(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    record = event.get("_record")
    if record is not None:
        event["logger"] = record.name
        original = getattr(record, "original_level", None)
        if original is not None:
            event["library_level"] = original
    return event


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Configure structlog once for the process; safe to call again (tests, demo).

    The standard library's loggers (pymodbus, paho, asyncio, ...) go through the same
    renderer to the same stream, so with `fmt = "json"` every line is one JSON object.
    """
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer()
    threshold = _LEVELS.get(level, logging.INFO)
    out = stream or sys.stderr
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                _library_fields,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.stdlib.PositionalArgumentsFormatter(),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    handler.addFilter(_LibraryLevels(threshold))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_edgectl", False):
            root.removeHandler(old)
    handler._edgectl = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    logging.captureWarnings(True)


def get_logger(**context: Any) -> Any:
    return structlog.get_logger().bind(**context)
