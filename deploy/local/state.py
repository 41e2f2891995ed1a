"""Where one local stack keeps its files, which parts it runs, and whether its processes run.

Every file of a stack lives under its state dir (``.state`` by default): the chosen ports, the
supervisord configuration, pid file and socket, the restart counts of its event listener, the
per-deployment secrets and one log per part.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from libs.common.errors import FulcrumError

# The supervised parts: the servers start first, the services once the servers are ready.
SERVICES: Final = ("api", "provisioner", "health", "housekeeping")
SERVERS: Final = ("postgres", "nats")


class StackError(FulcrumError):
    """The stack cannot start or be reached; the message is one line for the user."""


@dataclass
class StackPaths:
    """Where one stack keeps its files (all under ``state``)."""

    state: Path

    @property
    def ports(self) -> Path:
        return self.state / "ports.json"

    @property
    def supervisor_conf(self) -> Path:
        return self.state / "supervisord.conf"

    @property
    def supervisor_pid(self) -> Path:
        return self.state / "supervisord.pid"

    @property
    def restarts(self) -> Path:
        return self.state / "restarts.json"

    @property
    def supervisor_socket(self) -> str:
        wanted = self.state / "supervisor.sock"
        if len(str(wanted)) <= 100:  # AF_UNIX paths are short
            return str(wanted)
        digest = hashlib.sha256(str(wanted).encode()).hexdigest()[:16]
        return f"{tempfile.gettempdir()}/fulcrum-supervisor-{digest}.sock"

    def log(self, name: str) -> Path:
        if name == "postgres":
            return self.state / "postgres" / "postgres.log"
        if name == "nats":
            return self.state / "nats" / "nats-server.log"
        return self.state / f"{name}.log"


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def pid_alive(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` when that process still runs a Fulcrum or supervisord
    command line (a reused pid does not count)."""
    try:
        pid = int(pid_file.read_text())
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if b"supervisor" not in command_line and b"fulcrum" not in command_line:
        return None
    return pid if running(pid) else None
