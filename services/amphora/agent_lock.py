"""One agent per amphora: the agent lock on ``<state_dir>/agent.lock``, held for the agent's life.

Whoever serves an amphora (an agent process, or an agent host for each amphora it serves) takes
the lock and only then writes its pid to ``agent.pid``; an agent host also writes ``agent.host``
(its control socket's path). A second agent started for the same amphora does not get the lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from libs.common.agent_contract import AGENT_HOST_FILE, AGENT_PID_FILE


def hold_amphora_lock(state_dir: Path, hosted_by: Path | None = None) -> int | None:
    """Take the amphora's agent lock (the returned fd keeps it; another fd of this process does
    not get it either) and write ``agent.pid`` (and ``agent.host`` naming ``hosted_by``); None
    when another live agent holds it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    if hosted_by is not None:
        (state_dir / AGENT_HOST_FILE).write_text(str(hosted_by))
    (state_dir / AGENT_PID_FILE).write_text(str(os.getpid()))
    return fd
