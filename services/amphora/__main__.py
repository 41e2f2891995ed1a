"""`python -m services.amphora`: build the agent's settings from the environment and serve.

One agent per amphora: the agent holds an exclusive lock on ``<state_dir>/agent.lock`` for its
whole life and only then writes its pid to ``<state_dir>/agent.pid``
(services/amphora/agent_lock.py); a second agent started for the same amphora (a retried boot
whose first attempt did start) exits at once with status 3.

With ``FULCRUM_AGENT_HOST_DIRECTORY`` set it runs an agent host instead (services/amphora/host.py):
many amphorae in this one process.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from libs.common import event_loop
from libs.common.agent_contract import AGENT_HOST_DIRECTORY_ENV
from libs.common.logsetup import configure_logging, set_log_context
from libs.common.telemetry import setup_tracing
from services.amphora.agent_lock import hold_amphora_lock
from services.amphora.app import serve
from services.amphora.host import main as host_main
from services.amphora.settings import SERVICE_NAME, AmphoraSettings

log = logging.getLogger(__name__)

ALREADY_RUNNING_EXIT = 3


def main(listening: Callable[[int], None] | None = None) -> None:
    """Run the agent (or an agent host) of the environment's settings until SIGTERM;
    ``listening`` (an agent, not a host) is called with its port once it accepts connections."""
    if AGENT_HOST_DIRECTORY_ENV in os.environ:
        host_main()
        return
    settings = AmphoraSettings()  # required fields come from FULCRUM_AMPHORA_* variables
    configure_logging(settings.log_level, SERVICE_NAME)
    set_log_context(amphora_id=settings.amphora_id)  # every line of this agent concerns it
    setup_tracing(SERVICE_NAME)  # the exporter from OTEL_TRACES_EXPORTER (default none)
    if hold_amphora_lock(settings.state_dir) is None:
        log.error(
            "another agent already serves amphora %s from %s; exiting",
            settings.amphora_id,
            settings.state_dir,
        )
        sys.exit(ALREADY_RUNNING_EXIT)
    event_loop.run(serve(settings, listening=listening), SERVICE_NAME)


if __name__ == "__main__":
    main()
