"""Where one local stack keeps its files, which parts it runs, and whether its processes run.

Every file of a stack lives under its state dir (``.state`` by default, ``.state-cluster`` for
the cluster stack): the chosen ports, the layout (``layout.json``: every supervised part, how
to probe it and how to recognise its process), the supervisord configuration, pid file and
socket, the restart counts of its event listener, the per-deployment secrets and one log per
part. ``fulcrum status`` and ``fulcrum down`` read the layout, so they serve either stack.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

from deploy.local.supervision import Program
from libs.common.errors import FulcrumError

# The services of every stack (a cluster runs replicas of each).
SERVICES: Final = ("api", "provisioner", "health", "housekeeping")


class StackError(FulcrumError):
    """The stack cannot start or be reached; the message is one line for the user."""


@dataclass(frozen=True)
class Part:
    """One supervised process of a stack as ``up``, ``status`` and ``down`` see it.

    ``probe``: its readiness, an ``http://`` URL answering 200 or a ``postgresql://`` DSN
    accepting a connection; ``marker``: a substring of its command line (tells it from a
    process that reused its pid); servers start before the services and stop after them.
    """

    name: str
    marker: str
    probe: str
    server: bool = False
    stop_signal: str = "TERM"


@dataclass
class StackLayout:
    """What one stack runs: its parts in start order, the DSN ``status`` reads facts from, and
    the address lines ``status`` prints."""

    kind: str
    parts: list[Part]
    database_dsn: str
    addresses: list[str] = field(default_factory=list)
    # Network namespaces of amphora hosts are named with these (``down`` deletes them).
    netns_prefixes: list[str] = field(default_factory=list)

    @property
    def servers(self) -> tuple[str, ...]:
        return tuple(part.name for part in self.parts if part.server)

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(part.name for part in self.parts if not part.server)

    def save(self, path: Path) -> None:
        """Write it (0600: a probe may hold a password)."""
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> StackLayout:
        """The layout ``up`` saved (StackError when there is none)."""
        try:
            data = json.loads(path.read_text())
            data["parts"] = [Part(**part) for part in data["parts"]]
            return cls(**data)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise StackError(f"no stack layout at {path}") from exc


@dataclass
class StackPlan:
    """One start of a stack, as ``up`` runs it: what supervisord runs, the layout ``status``
    and ``down`` read, where users reach it (``endpoint`` gets the clouds.yaml path)."""

    programs: list[Program]
    layout: StackLayout
    api_url: str
    nats_urls: list[str]
    endpoint: Callable[[Path], str]
    # Once the servers are ready, before the services start (e.g. wait for a primary).
    servers_ready: Callable[[float], None] = lambda deadline: None
    # The CA clients must trust to reach an HTTPS API (written into clouds.yaml); None: HTTP.
    cacert: Path | None = None


@dataclass
class StackPaths:
    """Where one stack keeps its files (all under ``state``)."""

    state: Path

    @property
    def ports(self) -> Path:
        return self.state / "ports.json"

    @property
    def layout(self) -> Path:
        return self.state / "layout.json"

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
    except (OSError, ValueError):
        return None
    return pid if fulcrum_process_alive(pid) else None


def fulcrum_process_alive(pid: int) -> bool:
    """Whether ``pid`` runs a Fulcrum or supervisord command line (a reused pid does not)."""
    try:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if b"supervisor" not in command_line and b"fulcrum" not in command_line:
        return False
    return running(pid)
