"""The ``process`` driver: an amphora is an agent process (and its HAProxy) on this machine.

VIPs are loopback addresses (the embedded default subnet is in 127.0.0.0/8), so nothing is
configured on the host. Each amphora owns ``<state_dir>/<amphora_id>/`` holding its spec, its
certificates, the agent's pid and port files and HAProxy's files. Amphora processes run in
their own session: a restarted provisioner finds them again through ``list``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from libs.common.errors import InfrastructureError
from libs.common.pki import DeploymentCA
from libs.common.private_files import write_private_file
from services.provisioner.drivers import AmphoraHandle, AmphoraSpec

DRIVER_NAME: Final = "process"
_SPEC_FILE: Final = "amphora.json"
_PID_FILE: Final = "agent.pid"
_PORT_FILE: Final = "agent.port"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Our own children are reaped by asyncio's child watcher; a zombie reads as dead here.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class ProcessAmphoraDriver:
    """Runs ``python -m services.amphora`` per amphora, bound to 127.0.0.1 on a free port."""

    name = DRIVER_NAME

    def __init__(
        self,
        state_dir: Path,
        ca: DeploymentCA,
        agent_env: dict[str, str] | None = None,
        boot_timeout: float = 20.0,
        cert_validity_days: int = 30,
        fast_spawn: bool = True,
    ) -> None:
        self._state_dir = state_dir.resolve()
        self._ca = ca
        self._agent_env = agent_env or {}
        self._boot_timeout = boot_timeout
        self._validity = cert_validity_days
        self._state_dir.mkdir(parents=True, exist_ok=True)
        self._zygote = Zygote(self._state_dir) if fast_spawn else None

    def _dir(self, amphora_id: str) -> Path:
        return self._state_dir / amphora_id

    def _running_pid(self, amphora_id: str) -> int | None:
        pid_file = self._dir(amphora_id) / _PID_FILE
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def _handle(self, amphora_id: str) -> AmphoraHandle | None:
        directory = self._dir(amphora_id)
        pid = self._running_pid(amphora_id)
        if pid is None:
            return None
        try:
            spec = json.loads((directory / _SPEC_FILE).read_text())
            port = int((directory / _PORT_FILE).read_text())
        except (OSError, ValueError):
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
        # Key generation and synced writes, off the event loop other amphorae share.
        await asyncio.to_thread(self._write_identity, spec, directory)
        env = {
            **self._agent_env,
            "FULCRUM_AMPHORA_AMPHORA_ID": spec.amphora_id,
            "FULCRUM_AMPHORA_LB_ID": spec.lb_id or "",
            "FULCRUM_AMPHORA_BIND_HOST": "127.0.0.1",
            "FULCRUM_AMPHORA_BIND_PORT": "0",
            "FULCRUM_AMPHORA_STATE_DIR": str(directory),
            "FULCRUM_AMPHORA_CA_CERT": str(self._ca.cert_path),
            "FULCRUM_AMPHORA_SERVER_CERT": str(directory / "server.pem"),
            "FULCRUM_AMPHORA_SERVER_KEY": str(directory / "server.key"),
        }
        pid = await self._spawn(env, directory / "agent.log")
        # The agent writes agent.pid itself, once it holds the amphora's agent lock.
        deadline = time.monotonic() + self._boot_timeout
        while time.monotonic() < deadline:
            handle = self._handle(spec.amphora_id)
            if handle is not None:
                return handle
            if not _alive(pid) and self._running_pid(spec.amphora_id) is None:
                break  # it died, and no earlier agent of this amphora runs either
            await asyncio.sleep(0.005)
        tail = (directory / "agent.log").read_text(errors="replace")[-2000:]
        await self.delete(spec.amphora_id)
        raise InfrastructureError(f"amphora {spec.amphora_id} did not start: {tail.strip()}")

    def _write_identity(self, spec: AmphoraSpec, directory: Path) -> None:
        """The amphora's directory, server certificate and key, and spec record (blocking)."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / _PORT_FILE).unlink(missing_ok=True)
        issued = self._ca.issue_server_cert(
            spec.amphora_id, [spec.amphora_id, "127.0.0.1"], self._validity
        )
        write_private_file(directory / "server.pem", issued.cert_pem, mode=0o644)
        write_private_file(directory / "server.key", issued.key_pem)
        expiration = issued.not_after.isoformat()
        record = {"lb_id": spec.lb_id, "role": spec.role, "cert_expiration": expiration}
        (directory / _SPEC_FILE).write_text(json.dumps(record))

    async def _spawn(self, env: dict[str, str], log: Path) -> int:
        """Start an agent with ``env``: forked by the zygote when it can, else a new Python."""
        if self._zygote is not None:
            try:
                return await self._zygote.spawn(env, log)
            except OSError as exc:
                logging.getLogger(__name__).warning("zygote unavailable (%s); plain start", exc)
        with open(log, "ab") as out:  # noqa: ASYNC230 (local, instant)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.amphora",
                env={**os.environ, **env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        return proc.pid

    async def prepare(self) -> None:
        """Start the zygote now, so that the first amphora boots fast too."""
        if self._zygote is not None:
            try:
                await self._zygote.ensure_running()
            except OSError as exc:
                logging.getLogger(__name__).warning("zygote unavailable (%s)", exc)

    async def close(self) -> None:
        """Stop the zygote (amphorae keep running)."""
        if self._zygote is not None:
            self._zygote.stop()

    async def delete(self, amphora_id: str) -> None:
        """SIGTERM the agent (it stops HAProxy), SIGKILL after 10 s; kill an HAProxy that a
        dead agent left running; remove its directory."""
        pid = self._running_pid(amphora_id)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            for _ in range(500):  # up to 10 s
                if not _alive(pid):
                    break
                await asyncio.sleep(0.02)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        directory = self._dir(amphora_id)
        _kill_orphaned_haproxy(directory)
        if directory.exists():
            await asyncio.to_thread(_remove_tree, directory)

    def _amphora_ids(self) -> list[str]:
        """Every amphora with a directory here (dot dirs are the zygote's and such)."""
        return [
            d.name
            for d in sorted(self._state_dir.iterdir())
            if d.is_dir() and not d.name.startswith(".")
        ]

    async def list(self) -> list[AmphoraHandle]:
        handles = (self._handle(amphora_id) for amphora_id in self._amphora_ids())
        return [handle for handle in handles if handle is not None]

    async def leftovers(self) -> Sequence[str]:
        return [a for a in self._amphora_ids() if self._handle(a) is None]


def _kill_orphaned_haproxy(directory: Path) -> None:
    """SIGKILL the HAProxy (master and workers: its own session) that an agent which died left
    running, still bound to the VIP: its pid file is in ``directory`` and its command line
    names the directory (a reused pid does not)."""
    try:
        pid = int((directory / "haproxy.pid").read_text())
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if str(directory).encode() in command_line:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def _remove_tree(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


class Zygote:
    """The ``services.amphora.zygote`` process: started on first use, reused across restarts
    of the provisioner (found by its socket), stopped by ``stop``. The zygote that serves the
    socket writes ``zygote.pid`` itself, so a race of two starts leaves one, the one named."""

    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir / ".zygote"
        path = str(self._dir / "zygote.sock")
        if len(path) > 90:  # AF_UNIX paths are short
            digest = hashlib.sha256(path.encode()).hexdigest()[:16]
            path = f"{tempfile.gettempdir()}/fulcrum-zygote-{digest}.sock"
        self.socket_path = path
        self._lock = asyncio.Lock()

    async def spawn(self, env: dict[str, str], log: Path) -> int:
        """Fork an agent; raises OSError when no zygote can be reached or started."""
        request = (json.dumps({"env": env, "log": str(log)}) + "\n").encode()
        try:
            return await self._ask(request)
        except OSError:
            async with self._lock:
                await self._start()
            return await self._ask(request)

    async def _ask(self, request: bytes) -> int:
        reader, writer = await asyncio.open_unix_connection(self.socket_path)
        try:
            writer.write(request)
            await writer.drain()
            reply = json.loads(await asyncio.wait_for(reader.readline(), 10))
        except (ValueError, TimeoutError) as exc:
            raise OSError(f"zygote answered badly: {exc}") from exc
        finally:
            writer.close()
        if "pid" not in reply:
            raise OSError(f"zygote refused: {reply.get('error')}")
        return int(reply["pid"])

    async def ensure_running(self) -> None:
        async with self._lock:
            await self._start()

    async def _start(self) -> None:
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_unix_connection(self.socket_path)
            writer.close()
            return  # another task started it meanwhile
        self._dir.mkdir(parents=True, exist_ok=True)
        with open(self._dir / "zygote.log", "ab") as out:  # noqa: ASYNC230 (local, instant)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.amphora.zygote",
                self.socket_path,
                str(self._dir / "zygote.pid"),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        for _ in range(300):  # up to 15 s for its imports
            await asyncio.sleep(0.05)
            if proc.returncode is not None:
                raise OSError(f"zygote exited with {proc.returncode}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_unix_connection(self.socket_path)
                writer.close()
                return
        raise OSError("zygote did not start")

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((self._dir / "zygote.pid").read_text()), signal.SIGTERM)
        with contextlib.suppress(OSError):
            os.unlink(self.socket_path)
