"""Starting and stopping amphora agents on this host, for the process and netns drivers.

An agent is forked by the zygote (``services.amphora.zygote``: imports done once, ~0.1 s per
agent instead of ~1 s) when it can be reached or started, else started as a new Python. Each
amphora has a directory the agent runs in: the launcher writes nothing there but the agent's
log; the agent writes ``agent.pid`` (once it holds the amphora's agent lock) and
``agent.port`` (once it listens). Agents run in their own session and outlive the provisioner.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from libs.common.errors import InfrastructureError
from services.provisioner.drivers import AmphoraHandle

log = logging.getLogger(__name__)

PID_FILE: Final = "agent.pid"
PORT_FILE: Final = "agent.port"
LOG_FILE: Final = "agent.log"
_POLL: Final = 0.005
_STOP_POLL: Final = 0.02


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, not reaped yet, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def agent_pid(directory: Path) -> int | None:
    """The pid of the agent running in ``directory``, or None."""
    try:
        pid = int((directory / PID_FILE).read_text())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def agent_port(directory: Path) -> int | None:
    """The port the agent of ``directory`` listens on, once it does."""
    try:
        return int((directory / PORT_FILE).read_text())
    except (OSError, ValueError):
        return None


def agent_environment(
    amphora_id: str,
    lb_id: str | None,
    directory: Path,
    ca_cert: Path,
    bind_host: str,
    bind_port: int,
) -> dict[str, str]:
    """The settings every agent of this host gets (server certificate and key are in its
    directory); drivers add their own."""
    return {
        "FULCRUM_AMPHORA_AMPHORA_ID": amphora_id,
        "FULCRUM_AMPHORA_LB_ID": lb_id or "",
        "FULCRUM_AMPHORA_BIND_HOST": bind_host,
        "FULCRUM_AMPHORA_BIND_PORT": str(bind_port),
        "FULCRUM_AMPHORA_STATE_DIR": str(directory),
        "FULCRUM_AMPHORA_CA_CERT": str(ca_cert),
        "FULCRUM_AMPHORA_SERVER_CERT": str(directory / "server.pem"),
        "FULCRUM_AMPHORA_SERVER_KEY": str(directory / "server.key"),
    }


class AgentLauncher:
    """Starts agents (through the zygote of ``state_dir`` unless ``fast_spawn`` is off) and
    waits, up to ``boot_timeout`` s, until each runs."""

    def __init__(
        self,
        state_dir: Path,
        *,
        boot_timeout: float = 20.0,
        agent_env: Mapping[str, str] | None = None,
        fast_spawn: bool = True,
    ) -> None:
        self._zygote = Zygote(state_dir) if fast_spawn else None
        self._boot_timeout = boot_timeout
        self._agent_env = dict(agent_env or {})

    async def launch(
        self,
        amphora_id: str,
        directory: Path,
        env: Mapping[str, str],
        running: Callable[[], AmphoraHandle | None],
    ) -> AmphoraHandle:
        """Start the agent of ``directory`` with ``env`` and return ``running()`` once it is
        not None; raises InfrastructureError (with the agent log's tail) when the agent dies
        first or the boot timeout passes. The caller removes what the amphora left."""
        pid = await self._spawn({**self._agent_env, **env}, directory / LOG_FILE)
        deadline = time.monotonic() + self._boot_timeout
        while time.monotonic() < deadline:
            handle = running()
            if handle is not None:
                return handle
            if not alive(pid) and agent_pid(directory) is None:
                break  # it died, and no earlier agent of this amphora runs either
            await asyncio.sleep(_POLL)
        try:
            tail = (directory / LOG_FILE).read_text(errors="replace")[-2000:]
        except OSError:
            tail = ""
        raise InfrastructureError(f"amphora {amphora_id} did not start: {tail.strip()}")

    async def _spawn(self, env: dict[str, str], log_path: Path) -> int:
        """Fork the agent from the zygote when it can, else start a new Python."""
        if self._zygote is not None:
            try:
                return await self._zygote.spawn(env, log_path)
            except OSError as exc:
                log.warning("zygote unavailable (%s); plain start", exc)
        with open(log_path, "ab") as out:  # noqa: ASYNC230 (local, instant)
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
                log.warning("zygote unavailable (%s)", exc)

    async def close(self) -> None:
        """Stop the zygote (agents keep running) and wait, bounded, until it is gone."""
        if self._zygote is not None:
            await self._zygote.stop()


async def stop_agent(pid: int, grace: float) -> bool:
    """SIGTERM the agent (it stops its HAProxy and keepalived) and wait up to ``grace`` s;
    whether it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        await asyncio.sleep(_STOP_POLL)
    return not alive(pid)


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

    async def spawn(self, env: dict[str, str], log_path: Path) -> int:
        """Fork an agent; raises OSError when no zygote can be reached or started."""
        request = (json.dumps({"env": env, "log": str(log_path)}) + "\n").encode()
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

    async def stop(self) -> None:
        """SIGTERM the zygote and wait, up to 2 s, until it is gone; absent is fine."""
        try:
            pid: int | None = int((self._dir / "zygote.pid").read_text())
        except (OSError, ValueError):
            pid = None
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(OSError):
            os.unlink(self.socket_path)
        for _ in range(100):
            if pid is None or not alive(pid):
                break
            await asyncio.sleep(_STOP_POLL)
        await asyncio.sleep(0.05)  # lets the loop's child watcher record its exit
