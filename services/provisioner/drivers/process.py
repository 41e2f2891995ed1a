"""The ``process`` driver: an amphora is an agent process (and its HAProxy) on this machine.

VIPs are loopback addresses (the embedded default subnet is in 127.0.0.0/8), so nothing is
configured on the host. Each amphora owns ``<state_dir>/<amphora_id>/`` holding its spec, its
certificates, the agent's pid and port files and HAProxy's files. Amphora processes run in
their own session: a restarted provisioner finds them again through ``list``.

With ``amphorae_per_process`` K > 1, agents run K to an agent host process (see
``agent_launcher``): an amphora's ``compute_id`` is then its host's pid, which it shares with
up to K - 1 others; ``delete`` stops that amphora alone. A host that dies takes its amphorae's
agents with it: they are no longer listed (``leftovers`` names them, health fails them over
for their missing heartbeats) while their HAProxies keep serving until deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from libs.common.agent_contract import AGENT_PID_FILE
from libs.common.errors import InfrastructureError
from libs.common.pki import DeploymentCA
from libs.common.private_files import write_private_file
from services.provisioner.drivers import AmphoraHandle, AmphoraSpec, Leftovers
from services.provisioner.drivers.agent_launcher import (
    PORT_FILE,
    AgentLauncher,
    Zygote,
    agent_environment,
    alive,
    stop_amphora_agent,
)

__all__ = ["DRIVER_NAME", "ProcessAmphoraDriver", "Zygote"]

DRIVER_NAME: Final = "process"
# An amphora id names a directory of the state dir: never a path elsewhere.
_SAFE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SPEC_FILE: Final = "amphora.json"
_STOP_TIMEOUT: Final = 10.0


class ProcessAmphoraDriver:
    """Runs an agent per amphora (``python -m services.amphora``, or ``amphorae_per_process``
    to an agent host), bound to 127.0.0.1 on a free port."""

    name = DRIVER_NAME

    def __init__(
        self,
        state_dir: Path,
        ca: DeploymentCA,
        agent_env: dict[str, str] | None = None,
        boot_timeout: float = 20.0,
        cert_validity_days: int = 30,
        fast_spawn: bool = True,
        amphorae_per_process: int = 1,
    ) -> None:
        self._state_dir = state_dir.resolve()
        self._ca = ca
        self._validity = cert_validity_days
        self._state_dir.mkdir(parents=True, exist_ok=True)
        self._launcher = AgentLauncher(
            self._state_dir,
            boot_timeout=boot_timeout,
            agent_env=agent_env,
            fast_spawn=fast_spawn,
            amphorae_per_process=amphorae_per_process,
        )

    def _dir(self, amphora_id: str) -> Path:
        return self._state_dir / amphora_id

    def _handle(self, amphora_id: str, live: dict[int, bool] | None = None) -> AmphoraHandle | None:
        """The amphora of ``amphora_id`` if its agent runs and listens, from its files.

        ``live`` remembers, over one walk, which agent pids were found alive: with agent hosts
        many amphorae name one pid, and a liveness check reads ``/proc``."""
        directory = f"{self._state_dir}/{amphora_id}/"  # a str: Path joins cost more here
        try:
            pid = int(_read_small(directory + AGENT_PID_FILE))
            port = int(_read_small(directory + PORT_FILE))
            spec = json.loads(_read_small(directory + _SPEC_FILE))
        except (OSError, ValueError):
            return None
        if live is None:
            live = {}
        if pid not in live:
            live[pid] = alive(pid)
        if not live[pid]:
            return None
        return AmphoraHandle(
            amphora_id=amphora_id,
            lb_id=spec.get("lb_id"),
            driver=DRIVER_NAME,
            compute_id=str(pid),
            agent_url=f"https://127.0.0.1:{port}",
            lb_network_ip="127.0.0.1",
            cert_expiration=spec.get("cert_expiration"),
            role=spec.get("role", "STANDALONE"),
        )

    async def ensure(self, spec: AmphoraSpec) -> AmphoraHandle:
        """Start the agent unless it already runs; waits until it listens."""
        existing = self._handle(spec.amphora_id)
        if existing is not None:
            return existing
        directory = self._dir(spec.amphora_id)
        # Key generation and file writes, off the event loop other amphorae share.
        await asyncio.to_thread(self._write_identity, spec, directory)
        env = agent_environment(
            spec.amphora_id, spec.lb_id, directory, self._ca.cert_path, "127.0.0.1", 0
        )
        try:
            return await self._launcher.launch(
                spec.amphora_id, directory, env, lambda: self._handle(spec.amphora_id)
            )
        except InfrastructureError:
            await self.delete(spec.amphora_id)
            raise

    def _write_identity(self, spec: AmphoraSpec, directory: Path) -> None:
        """The amphora's directory, server certificate and key, and spec record (blocking)."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / PORT_FILE).unlink(missing_ok=True)
        issued = self._ca.issue_server_cert(
            spec.amphora_id, [spec.amphora_id, "127.0.0.1"], self._validity
        )
        write_private_file(directory / "server.pem", issued.cert_pem, mode=0o644, durable=False)
        write_private_file(directory / "server.key", issued.key_pem, durable=False)
        expiration = issued.not_after.isoformat()
        record = {"lb_id": spec.lb_id, "role": spec.role, "cert_expiration": expiration}
        (directory / _SPEC_FILE).write_text(json.dumps(record))

    async def prepare(self) -> None:
        """Start the zygote now, so that the first amphora boots fast too."""
        await self._launcher.prepare()

    async def close(self) -> None:
        """Stop the zygote (amphorae keep running)."""
        await self._launcher.close()

    async def delete(self, amphora_id: str) -> None:
        """Stop the agent (it stops HAProxy; see ``stop_amphora_agent``: SIGKILL after 10 s);
        kill an HAProxy that a dead or stuck agent left running; remove its directory."""
        directory = self._dir(amphora_id)
        await stop_amphora_agent(directory, amphora_id, _STOP_TIMEOUT)
        _kill_orphaned_haproxy(directory)
        if directory.exists():
            await asyncio.to_thread(_remove_tree, directory)

    def _amphora_ids(self) -> list[str]:
        """Every amphora with a directory here (dot dirs are the zygote's and such)."""
        with os.scandir(self._state_dir) as entries:
            return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())

    def _walk(self) -> tuple[list[AmphoraHandle], dict[str, str | None]]:
        """One pass over the state dir: the amphorae that run, and the directories of those
        that do not with the LB their spec names (``list`` and ``Leftovers``)."""
        live: dict[int, bool] = {}
        running: list[AmphoraHandle] = []
        left: dict[str, str | None] = {}
        for amphora_id in self._amphora_ids():
            handle = self._handle(amphora_id, live)
            if handle is None:
                left[amphora_id] = self._spec_lb(amphora_id)
            else:
                running.append(handle)
        return running, left

    def _spec_lb(self, amphora_id: str) -> str | None:
        """The LB the amphora's spec names; None when none, or no spec is readable yet."""
        try:
            spec = json.loads(_read_small(f"{self._state_dir}/{amphora_id}/{_SPEC_FILE}"))
        except (OSError, ValueError):
            return None
        lb_id = spec.get("lb_id") if isinstance(spec, dict) else None
        return lb_id if isinstance(lb_id, str) else None

    async def list(self) -> list[AmphoraHandle]:
        return self._walk()[0]

    async def get(self, amphora_id: str) -> AmphoraHandle | None:
        """Its own files only: no walk over every amphora."""
        return self._handle(amphora_id) if _SAFE_ID.fullmatch(amphora_id) else None

    async def leftovers(self) -> Sequence[str]:
        return list(self._walk()[1])

    async def list_with_leftovers(self) -> tuple[Sequence[AmphoraHandle], Leftovers]:
        """One walk (~20 ms per 1,000 amphorae on the 2-core box), not one each."""
        return self._walk()

    async def reachable_hosts(self) -> None:
        """One host: it sees every amphora it runs."""
        return None


def _kill_orphaned_haproxy(directory: Path) -> None:
    """SIGKILL the HAProxy (its session: the serving process and any check it runs) that an
    agent which died left running, still bound to the VIP: its pid file is in ``directory``
    and its command line names the directory (a reused pid does not). A process a reload
    retired has let its listeners go and ends by the config's `hard-stop-after`."""
    try:
        pid = int((directory / "haproxy.pid").read_text())
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if str(directory).encode() in command_line:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def _read_small(path: str) -> bytes:
    """A small file's bytes, read with one system call (the walk reads three per amphora)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def _remove_tree(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
