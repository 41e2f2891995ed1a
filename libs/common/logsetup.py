"""One logging setup for every Fulcrum process, the amphora agent included.

Each ``__main__`` builds its settings, then calls ``configure_logging(settings.log_level,
"<service>")``. Every line then reads ``<timestamp> <LEVEL> <service> <logger> <message>``.
The level comes from ``FULCRUM_<SVC>_LOG_LEVEL`` (``LogLevel`` in each settings class):
DEBUG, INFO, WARNING, ERROR or CRITICAL, in any case.

No third-party logger is quieted: none of those the services use is noisy at INFO. nats-py
logs its connection errors only without callbacks, and ``libs/common/bus.py`` passes its own;
``aiohttp.access`` is the API's access log (``FULCRUM_API_ACCESS_LOG``) and follows the level
like every other logger.

Stdlib and pydantic only: the amphora agent imports this module too.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Final, TextIO

from pydantic import AfterValidator

__all__ = ["LOG_LEVELS", "LogLevel", "configure_logging", "parse_log_level"]

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

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


def configure_logging(level: str, service: str, *, stream: TextIO | None = None) -> None:
    """Send every logger's records at ``level`` and above to ``stream`` (stderr by default)
    as ``<timestamp> <LEVEL> <service> <logger> <message>``.

    Idempotent: a second call replaces the handler the first installed (handlers others
    added are left alone). A bad ``level`` raises ValueError naming
    ``FULCRUM_<SERVICE>_LOG_LEVEL``; nothing is changed then.
    """
    resolved = parse_log_level(level, setting=f"FULCRUM_{service.upper()}_LOG_LEVEL")
    label = service.replace("%", "%%")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {label} %(name)s %(message)s")
    )
    root = logging.getLogger()
    for previous in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(previous)
        previous.close()
    root.addHandler(handler)
    root.setLevel(resolved)
