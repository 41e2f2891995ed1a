"""Starting and stopping amphora agents on this host, for the process and netns drivers.

An agent is forked by the zygote (``services.amphora.zygote``: imports done once, ~20 ms of
CPU per agent instead of ~1 s) when it can be reached or started, else started as a new
Python. Each amphora has a directory the agent runs in: the launcher writes nothing there but
the agent's log; the agent writes ``agent.pid`` (once it holds the amphora's agent lock) and
``agent.port`` (once it listens). A forked agent also says on the zygote's connection when it
listens, so the launcher waits for that instead of polling its files (it polls them for a
plain start). Agents run in their own session and outlive the provisioner.

With ``amphorae_per_process`` K > 1, agents run K to a process instead: agent hosts
(``services.amphora.host``, forked from the zygote too), each in ``<state_dir>/.hosts/<name>/``.
A new amphora goes to the newest live host with room, else to a new host; ``agent.pid`` then
names the host, and ``agent.host`` its control socket, through which one amphora is stopped
(``stop_amphora_agent``) while the others keep serving. A restarted provisioner finds the live
hosts in that directory. A host removes its directory when it exits; one that crashed leaves
it, with its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from libs.common.agent_contract import (
    AGENT_HOST_CAPACITY_ENV,
    AGENT_HOST_DIRECTORY_ENV,
    AGENT_HOST_FILE,
    AGENT_HOST_FULL_FILE,
    AGENT_HOST_SOCKET_ENV,
    AGENT_PID_FILE,
)
from libs.common.errors import InfrastructureError
from libs.common.socket_paths import fitting_path
from services.provisioner.drivers import AmphoraHandle

log = logging.getLogger(__name__)

PORT_FILE: Final = "agent.port"
LOG_FILE: Final = "agent.log"
HOSTS_DIR: Final = ".hosts"
_POLL: Final = 0.005
# Longest socket path used as is (AF_UNIX takes 107 bytes).
_MAX_SOCKET_PATH: Final = 90
_STOP_POLL: Final = 0.02
_NO_ROOM: Final = "no agent host has room"
_PLACE_ATTEMPTS: Final = 3


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
        pid = int((directory / AGENT_PID_FILE).read_text())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def agent_port(directory: Path) -> int | None:
    """The port the agent of ``directory`` listens on, once it does."""
    try:
        return int((directory / PORT_FILE).read_text())
    except (OSError, ValueError):
        return None


def hosted_by(directory: Path) -> str | None:
    """The control socket of the agent host serving the amphora of ``directory``, or None
    (an agent process of its own, or none)."""
    try:
        return (directory / AGENT_HOST_FILE).read_text() or None
    except OSError:
        return None


def unix_socket_path(path: Path, prefix: str) -> str:
    """``path``, or one in a short temp dir named after it when too long for AF_UNIX."""
    return str(fitting_path(path, prefix, limit=_MAX_SOCKET_PATH, suffix=".sock"))


async def ask_unix(path: str, request: Mapping[str, object], within: float) -> dict[str, Any]:
    """One JSON line to the unix socket ``path`` and its one-line JSON answer; OSError when
    it cannot be reached or does not answer well within ``within`` s."""
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_unix_connection(path)
            try:
                writer.write((json.dumps(request) + "\n").encode())
                await writer.drain()
                line = await reader.readline()
                if not line:
                    raise ConnectionResetError(f"{path} closed without answering")
                reply = json.loads(line)
            finally:
                writer.close()
    except (ValueError, TimeoutError) as exc:
        raise OSError(f"{path} answered badly: {exc!r}") from exc
    if not isinstance(reply, dict):
        raise OSError(f"{path} answered badly: {reply!r}")
    return reply


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
    """Starts agents (through the zygote of ``state_dir`` unless ``fast_spawn`` is off), each
    in a process of its own or ``amphorae_per_process`` to an agent host, and waits, up to
    ``boot_timeout`` s, until each runs."""

    def __init__(
        self,
        state_dir: Path,
        *,
        boot_timeout: float = 20.0,
        agent_env: Mapping[str, str] | None = None,
        fast_spawn: bool = True,
        amphorae_per_process: int = 1,
    ) -> None:
        if amphorae_per_process < 1:
            raise ValueError(f"amphorae_per_process must be >= 1, not {amphorae_per_process}")
        self._zygote = Zygote(state_dir) if fast_spawn else None
        self._boot_timeout = boot_timeout
        self._agent_env = dict(agent_env or {})
        self._hosts = (
            AgentHosts(state_dir / HOSTS_DIR, amphorae_per_process, self._spawn_host, boot_timeout)
            if amphorae_per_process > 1
            else None
        )

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
        if self._hosts is not None:
            refused = await self._hosts.place(env)
            handle = running()  # also the one an earlier start left serving
            if handle is not None:
                return handle
            raise InfrastructureError(f"amphora {amphora_id} did not start: {refused}")
        pid, forked = await self._spawn({**self._agent_env, **env}, directory / LOG_FILE)
        deadline = time.monotonic() + self._boot_timeout
        if forked is not None:
            await forked.listening(self._boot_timeout)  # or it ended: the loop tells which
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

    async def _spawn(self, env: dict[str, str], log_path: Path) -> tuple[int, Forked | None]:
        """Fork the agent from the zygote when it can, else start a new Python; its pid and,
        when forked, its connection."""
        if self._zygote is not None:
            try:
                forked = await self._zygote.spawn(env, log_path)
                return forked.pid, forked
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
        return proc.pid, None

    async def _spawn_host(self, env: dict[str, str], log_path: Path) -> int:
        pid, forked = await self._spawn({**self._agent_env, **env}, log_path)
        if forked is not None:
            forked.close()  # a host says nothing there: it writes host.pid
        return pid

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


async def stop_amphora_agent(directory: Path, amphora_id: str, grace: float) -> None:
    """Stop whatever serves the amphora of ``directory`` (it stops its HAProxy): its agent
    process (SIGTERM, SIGKILL to its group after ``grace`` s) or, in an agent host, that
    amphora alone. A host that does not confirm within ``grace`` s is left running: killing it
    would take its other amphorae down with it (the caller kills the HAProxy)."""
    pid = agent_pid(directory)
    if pid is None:
        return
    socket_path = hosted_by(directory)
    if socket_path is None:
        if not await stop_agent(pid, grace):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        return
    try:
        reply = await ask_unix(socket_path, {"stop": amphora_id}, grace)
    except OSError as exc:
        reply = {"error": str(exc)}
    if not reply.get("ok") and alive(pid):
        log.warning("agent host %d did not stop amphora %s: %s", pid, amphora_id, reply)


def host_socket(host: Path) -> str:
    """The control socket's path of the agent host whose own dir is ``host``."""
    return unix_socket_path(host / "host.sock", "fulcrum-host")


class AgentHosts:
    """The agent hosts of ``directory``, ``capacity`` amphorae each at most."""

    def __init__(
        self,
        directory: Path,
        capacity: int,
        spawn: Callable[[dict[str, str], Path], Awaitable[int]],
        boot_timeout: float,
    ) -> None:
        self._dir = directory
        self._capacity = capacity
        self._spawn = spawn
        self._boot_timeout = boot_timeout
        self._lock = asyncio.Lock()

    async def place(self, env: Mapping[str, str]) -> str | None:
        """Start the amphora ``env`` describes in a live host with room, else in a new one;
        None once it listens, else why it did not start."""
        for _ in range(_PLACE_ATTEMPTS):  # a new host may be filled by concurrent boots
            refused = await self._try_hosts(env)
            if refused != _NO_ROOM:
                return refused
            async with self._lock:  # one new host at a time: concurrent boots fill it together
                refused = await self._try_hosts(env)
                if refused != _NO_ROOM:
                    return refused
                await self._start_host()
        return _NO_ROOM

    async def _try_hosts(self, env: Mapping[str, str]) -> str | None:
        """Start it in the first live host with room (the newest first: the older ones
        filled up before it started); ``_NO_ROOM`` when none has."""
        for socket_path in self.live_sockets():
            try:
                reply = await self._start_in(socket_path, env)
            except (ConnectionError, FileNotFoundError):
                continue  # gone or going
            except OSError as exc:
                return str(exc)  # it took the amphora and did not answer in time
            if reply.get("ok"):
                return None
            if not reply.get("full"):
                return str(reply.get("error"))
        return _NO_ROOM

    async def _start_in(self, socket_path: str, env: Mapping[str, str]) -> dict[str, Any]:
        return await ask_unix(socket_path, {"start": dict(env)}, self._boot_timeout)

    def live_sockets(self) -> Iterator[str]:
        """The control sockets of the live hosts that take amphorae (no ``host.full``), newest
        first; each host is checked as it is reached (a placement stops at the first with
        room: at 40 hosts, checking them all for each amphora cost the provisioner ~1 ms; and
        while a new host started, every placement asked every full host, 590 times in a
        fleet of 300)."""
        try:
            hosts = sorted(self._dir.iterdir(), reverse=True)
        except FileNotFoundError:
            return
        for host in hosts:
            with contextlib.suppress(OSError, ValueError):
                if (host / AGENT_HOST_FULL_FILE).exists():
                    continue
                if alive(int((host / "host.pid").read_text())):
                    yield host_socket(host)

    async def _start_host(self) -> None:
        """A new host, once it serves; InfrastructureError with its log's tail when it dies
        first or the boot timeout passes."""
        host = self._dir / f"{time.time_ns():x}"  # names sort by age
        host.mkdir(parents=True)
        socket_path = host_socket(host)
        env = {
            AGENT_HOST_DIRECTORY_ENV: str(host),
            AGENT_HOST_SOCKET_ENV: socket_path,
            AGENT_HOST_CAPACITY_ENV: str(self._capacity),
        }
        pid = await self._spawn(env, host / "host.log")
        deadline = time.monotonic() + self._boot_timeout
        while time.monotonic() < deadline and alive(pid):
            with contextlib.suppress(OSError, ValueError):
                if int((host / "host.pid").read_text()) == pid:
                    return
            await asyncio.sleep(_POLL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        try:
            tail = (host / "host.log").read_text(errors="replace")[-2000:]
        except OSError:
            tail = ""
        raise InfrastructureError(f"agent host did not start: {tail.strip()}")


class Forked:
    """An agent the zygote forked: its pid and the connection on which it says it listens."""

    def __init__(self, pid: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.pid = pid
        self._reader = reader
        self._writer = writer

    async def listening(self, within: float) -> None:
        """Return once the agent says it listens (its port file is written), once it ends
        without saying so, or after ``within`` s; the connection is closed then."""
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(within):
                await self._reader.readline()
        self.close()

    def close(self) -> None:
        self._writer.close()


class Zygote:
    """The ``services.amphora.zygote`` process: started on first use, reused across restarts
    of the provisioner (found by its socket), stopped by ``stop``. The zygote that serves the
    socket writes ``zygote.pid`` itself, so a race of two starts leaves one, the one named."""

    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir / ".zygote"
        self.socket_path = unix_socket_path(self._dir / "zygote.sock", "fulcrum-zygote")
        self._lock = asyncio.Lock()  # held by a start, and by stop
        self._stopped = False  # by stop: no zygote is started after it

    async def spawn(self, env: dict[str, str], log_path: Path) -> Forked:
        """Fork an agent; raises OSError when no zygote can be reached or started."""
        request = {"env": env, "log": str(log_path)}
        try:
            return await self._fork(request)
        except OSError:
            async with self._lock:
                await self._start()
            return await self._fork(request)

    async def _fork(self, request: Mapping[str, object]) -> Forked:
        """The forked child, its connection kept open; OSError when the zygote cannot be
        reached or does not answer with a pid within 10 s."""
        try:
            async with asyncio.timeout(10):
                reader, writer = await asyncio.open_unix_connection(self.socket_path)
                try:
                    writer.write((json.dumps(request) + "\n").encode())
                    await writer.drain()
                    reply = json.loads(await reader.readline() or b"{}")
                except BaseException:
                    writer.close()
                    raise
        except (ValueError, TimeoutError) as exc:
            raise OSError(f"zygote answered badly: {exc!r}") from exc
        if not isinstance(reply, dict) or "pid" not in reply:
            writer.close()
            raise OSError(f"zygote refused: {reply}")
        return Forked(int(reply["pid"]), reader, writer)

    async def ensure_running(self) -> None:
        async with self._lock:
            await self._start()

    async def _start(self) -> None:
        if self._stopped:
            raise OSError("the zygote was stopped (the driver is closing)")
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
        """SIGTERM the zygote and wait, up to 2 s, until it is gone; absent is fine. After it,
        no zygote is started (a boot still under way starts its agent as a new Python): a start
        under way is waited for and its zygote stopped, so none outlives the driver."""
        self._stopped = True
        async with self._lock:
            await self._stop_serving()

    async def _stop_serving(self) -> None:
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
