"""`python -m services.amphora`: build the agent's settings from the environment and serve.

One agent per amphora: the agent holds an exclusive lock on ``<state_dir>/agent.lock`` for its
whole life and only then writes its pid to ``<state_dir>/agent.pid``; a second agent started for
the same amphora (a retried boot whose first attempt did start) exits at once with status 3.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sys
from pathlib import Path

from libs.common.logsetup import configure_logging, set_log_context
from libs.common.telemetry import setup_tracing
from services.amphora.app import serve
from services.amphora.settings import AmphoraSettings

log = logging.getLogger(__name__)

ALREADY_RUNNING_EXIT = 3


def hold_amphora_lock(state_dir: Path) -> int | None:
    """Take the amphora's agent lock (the returned fd keeps it) and write ``agent.pid``;
    None when another live agent holds it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    (state_dir / "agent.pid").write_text(str(os.getpid()))
    return fd


def main() -> None:
    settings = AmphoraSettings()  # required fields come from FULCRUM_AMPHORA_* variables
    configure_logging(settings.log_level, "amphora")
    set_log_context(amphora_id=settings.amphora_id)  # every line of this agent concerns it
    setup_tracing("amphora")  # the exporter from OTEL_TRACES_EXPORTER (default none)
    if hold_amphora_lock(settings.state_dir) is None:
        log.error(
            "another agent already serves amphora %s from %s; exiting",
            settings.amphora_id,
            settings.state_dir,
        )
        sys.exit(ALREADY_RUNNING_EXIT)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
