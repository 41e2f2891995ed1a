"""One logging setup for every Fulcrum process, the amphora agent included.

Each ``__main__`` builds its settings, then calls ``configure_logging(settings.log_level,
"<service>")``. The level comes from ``FULCRUM_<SVC>_LOG_LEVEL`` (``LogLevel`` in each
settings class): DEBUG, INFO, WARNING, ERROR or CRITICAL, in any case.

``FULCRUM_LOG_FORMAT`` (every service, the agent included) chooses the format:

- ``text`` (default): ``<timestamp> <LEVEL> <service> <logger> <message>``, followed by
  `` [request_id=... correlation_id=... lb_id=... amphora_id=...]`` when the line has context;
- ``json``: one object per line with ``timestamp`` (ISO 8601, UTC), ``level``, ``service``,
  ``logger``, ``message``, the context fields it has and ``exception`` (a traceback).

Context: ``log_context(lb_id=...)`` sets fields (``CONTEXT_FIELDS``) for the code it wraps
(contextvars: they follow the task, and tasks it starts); the API middleware sets the request
id, the consumers the correlation id and the aggregate's id, the provisioner the LB and
amphora ids. A filter on the handler puts them on every record.

No third-party logger is quieted: none of those the services use is noisy at INFO. nats-py
logs its connection errors only without callbacks, and ``libs/common/bus.py`` passes its own;
``aiohttp.access`` is the API's access log (``FULCRUM_API_ACCESS_LOG``) and follows the level
like every other logger.

Stdlib and pydantic only: the amphora agent imports this module too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Annotated, Final, TextIO

from pydantic import AfterValidator

__all__ = [
    "CONTEXT_FIELDS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "LogLevel",
    "configure_logging",
    "log_context",
    "parse_log_format",
    "parse_log_level",
    "set_log_context",
]

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS: Final = ("text", "json")
FORMAT_ENV: Final = "FULCRUM_LOG_FORMAT"
CONTEXT_FIELDS: Final = ("request_id", "correlation_id", "lb_id", "amphora_id")

_context: Final[dict[str, ContextVar[str | None]]] = {
    name: ContextVar(f"fulcrum_log_{name}", default=None) for name in CONTEXT_FIELDS
}

# Marks the root handler this module installed, so a second call replaces it.
_HANDLER_NAME: Final = "fulcrum"


def parse_log_level(value: str, setting: str = "log_level") -> str:
    """``value`` as one of ``LOG_LEVELS`` (upper case, surrounding blanks ignored); a
    ValueError naming ``setting`` and the accepted values otherwise."""
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(
            f"{setting} must be one of {', '.join(LOG_LEVELS)} (any case), not {value!r}"
        )
    return level


# A settings field: ``log_level: LogLevel = "INFO"`` accepts "debug" and stores "DEBUG".
LogLevel = Annotated[str, AfterValidator(parse_log_level)]


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Put ``fields`` (names from ``CONTEXT_FIELDS``; None: leave as is) on every line logged
    inside; the previous values come back on exit."""
    tokens = [
        (_context[name], _context[name].set(value)) for name, value in fields.items() if value
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def set_log_context(**fields: str | None) -> None:
    """Like ``log_context`` for the rest of the current task (a request's middleware)."""
    for name, value in fields.items():
        _context[name].set(value)


def _context_of(record: logging.LogRecord) -> dict[str, str]:
    return {n: v for n in CONTEXT_FIELDS if (v := getattr(record, n, None))}


class _ContextFilter(logging.Filter):
    """Copies the current context fields onto each record (fields set by ``extra=`` win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _context.items():
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _context_of(record)
        if not fields:
            return line
        first, newline, rest = line.partition("\n")
        tagged = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{first} [{tagged}]{newline}{rest}"


class _JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
            **_context_of(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def parse_log_format(value: str) -> str:
    """``value`` as one of ``LOG_FORMATS``; a ValueError naming ``FULCRUM_LOG_FORMAT``."""
    chosen = value.strip().lower()
    if chosen not in LOG_FORMATS:
        raise ValueError(f"{FORMAT_ENV} must be one of {', '.join(LOG_FORMATS)}, not {value!r}")
    return chosen


def configure_logging(
    level: str, service: str, *, stream: TextIO | None = None, log_format: str | None = None
) -> None:
    """Send every logger's records at ``level`` and above to ``stream`` (stderr by default)
    in ``log_format`` (by default ``FULCRUM_LOG_FORMAT``, else text; see the module
    docstring), with the context fields of ``log_context``.

    Idempotent: a second call replaces the handler the first installed (handlers others
    added are left alone). A bad ``level`` raises ValueError naming
    ``FULCRUM_<SERVICE>_LOG_LEVEL``, a bad format one naming ``FULCRUM_LOG_FORMAT``;
    nothing is changed then.
    """
    resolved = parse_log_level(level, setting=f"FULCRUM_{service.upper()}_LOG_LEVEL")
    chosen = parse_log_format(
        log_format if log_format is not None else os.environ.get(FORMAT_ENV, "text")
    )
    label = service.replace("%", "%%")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(_ContextFilter())
    if chosen == "json":
        handler.setFormatter(_JsonFormatter(service))
    else:
        handler.setFormatter(
            _TextFormatter(f"%(asctime)s %(levelname)s {label} %(name)s %(message)s")
        )
    root = logging.getLogger()
    for previous in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(previous)
        previous.close()
    root.addHandler(handler)
    root.setLevel(resolved)
