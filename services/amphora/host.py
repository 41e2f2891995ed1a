"""An agent host: up to ``capacity`` amphora agents in one Python process, one event loop.

A forked agent costs ~14 MB of private memory at any fleet size (reference counting copies
every page it touches); in a host, an amphora costs its share of one interpreter plus its own
objects (an aiohttp app, an SSL context, a heartbeat task). Each amphora keeps everything an
agent process has: its state dir, its agent lock (``agent.pid`` names the host's pid), its mTLS
identity and listener, its port file, its HAProxy and its heartbeats. The host also writes
``agent.host`` (its control socket's path) into the directory of each amphora it serves.

The host is started with ``FULCRUM_AGENT_HOST_DIRECTORY`` (its ``host.pid`` and ``host.lock``,
and ``host.full`` while it takes no more amphorae; removed when it exits),
``FULCRUM_AGENT_HOST_SOCKET`` and ``FULCRUM_AGENT_HOST_CAPACITY`` set (``python -m
services.amphora`` then runs a host, not an agent) and takes requests on its unix socket, one
JSON line each, answered with one JSON line:

- ``{"start": {FULCRUM_AMPHORA_* variables}}``: serve one more amphora; answered once its
  listener accepts (``{"ok": true}``) or it failed (``{"error": "..."}``; ``"full": true`` when
  the host has no room or is closing, said before the request's settings are read: another
  host should take it).
- ``{"stop": AMPHORA_ID}``: stop that amphora (its HAProxy stops) and answer ``{"ok": true}``
  once it has; absent is fine.

Settings the start request does not give come from the host's environment (the ones every
agent shares). A host exits once it serves nothing: its last amphora stopped, its first one
was refused, or none came within 30 s of its start. SIGTERM stops every amphora, then the
host. A host never enters a network namespace (that is process-wide): amphorae with one are
refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from libs.common import event_loop
from libs.common.agent_contract import (
    AGENT_HOST_ENV_PREFIX,
    AGENT_HOST_FILE,
    AGENT_HOST_FULL_FILE,
    AGENT_PID_FILE,
)
from libs.common.errors import InfrastructureError
from libs.common.logsetup import LogLevel, configure_logging, set_log_context
from libs.common.telemetry import setup_tracing
from services.amphora.agent_lock import hold_amphora_lock
from services.amphora.app import serve
from services.amphora.settings import SERVICE_NAME, AmphoraSettings

log = logging.getLogger(__name__)

_AMPHORA_PREFIX: Final = "FULCRUM_AMPHORA_"
_CLOSE_GRACE: Final = 5.0
# A host that serves nothing this long after its start exits (its starter went away).
_EMPTY_GRACE: Final = 30.0


class AgentHostSettings(BaseSettings):
    """What the launcher gives a host it starts."""

    model_config = SettingsConfigDict(env_prefix=AGENT_HOST_ENV_PREFIX, extra="ignore")

    directory: Path
    """The host's own files: ``host.pid``, ``host.lock``, ``host.full``."""
    socket: Path
    """Its control socket."""
    capacity: int = Field(ge=1)
    """Amphorae it serves at most."""
    log_level: LogLevel = Field(default="INFO", validation_alias="FULCRUM_AMPHORA_LOG_LEVEL")
    """The agents' log level (every amphora of the host shares it)."""


class Refused(InfrastructureError):
    """A start the host does not take; ``full``: another host may."""

    def __init__(self, reason: str, *, full: bool = False) -> None:
        super().__init__(reason)
        self.full = full


@dataclass
class _Amphora:
    settings: AmphoraSettings
    lock_fd: int
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


def amphora_settings(env: dict[str, str]) -> AmphoraSettings:
    """An amphora's settings: ``env`` (FULCRUM_AMPHORA_* names) over the host's environment."""
    unknown = sorted(k for k in env if not k.startswith(_AMPHORA_PREFIX))
    if unknown:
        raise Refused(f"not amphora settings: {unknown}")
    given: dict[str, Any] = {k.removeprefix(_AMPHORA_PREFIX).lower(): v for k, v in env.items()}
    settings = AmphoraSettings(**given)
    if settings.netns:
        raise Refused("an agent host cannot serve an amphora in a network namespace")
    return settings


class AgentHost:
    """Serves amphorae as tasks of one event loop, up to its capacity."""

    def __init__(self, settings: AgentHostSettings) -> None:
        self._settings = settings
        self._amphorae: dict[str, _Amphora] = {}
        self._closing = False
        self._idle = asyncio.Event()
        self._connections: set[asyncio.Task[Any]] = set()

    async def run(self) -> None:
        """Serve requests until SIGTERM or until the last amphora stopped."""
        settings = self._settings
        settings.directory.mkdir(parents=True, exist_ok=True)
        lock = os.open(settings.directory / "host.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a host directory serves one host
        settings.socket.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(self._connection, str(settings.socket))
        os.chmod(settings.socket, 0o600)
        (settings.directory / "host.pid").write_text(str(os.getpid()))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop_all)
        log.info("agent host %s serving up to %d amphorae", os.getpid(), settings.capacity)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if self._amphorae else _EMPTY_GRACE):
                    await self._idle.wait()
            self._idle.clear()
            if self._closing or not self._amphorae:
                break
        self._closing = True
        self._mark_room()
        server.close()
        settings.socket.unlink(missing_ok=True)
        await self._stop_amphorae()
        if self._connections:  # answers still being written
            await asyncio.wait(self._connections, timeout=_CLOSE_GRACE)
        log.info("agent host %s exits", os.getpid())
        shutil.rmtree(settings.directory, ignore_errors=True)  # its log too: nothing went wrong
        os.close(lock)

    def _stop_all(self) -> None:
        self._closing = True
        self._mark_room()
        self._idle.set()

    def _mark_room(self) -> None:
        """``host.full`` present exactly while this host takes no more amphorae. A placement
        that reads it late only asks a host that answers "full", or starts a host too many."""
        marker = self._settings.directory / AGENT_HOST_FULL_FILE
        if self._closing or len(self._amphorae) >= self._settings.capacity:
            marker.touch()
        else:
            marker.unlink(missing_ok=True)

    async def _stop_amphorae(self) -> None:
        tasks = [a.task for a in self._amphorae.values() if a.task is not None]
        for amphora in self._amphorae.values():
            amphora.stopping.set()
        if tasks:
            await asyncio.wait(tasks)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            line = await reader.readline()
            if line:
                reply = await self._answer(line)
                writer.write((json.dumps(reply) + "\n").encode())
                await writer.drain()
        except OSError:
            pass  # the asker went away
        finally:
            self._connections.discard(task)
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if "start" in request:
                await self._start(dict(request["start"]))
            elif "stop" in request:
                await self._stop(str(request["stop"]))
            else:
                raise Refused(f"unknown request: {sorted(request)}")
        except Refused as exc:
            self._idle.set()  # a host whose first amphora was refused has nothing to serve
            return {"error": str(exc), "full": exc.full}
        except (ValueError, TypeError, KeyError, ValidationError) as exc:
            return {"error": f"bad request: {exc}", "full": False}
        return {"ok": True}

    async def _start(self, env: dict[str, str]) -> None:
        # Before the settings are read (~1 ms of CPU): a placement that read ``host.full`` late
        # still asks a full host.
        if self._closing or len(self._amphorae) >= self._settings.capacity:
            raise Refused("no room", full=True)
        settings = amphora_settings(env)
        if settings.amphora_id in self._amphorae:
            raise Refused(f"amphora {settings.amphora_id} is already served here")
        lock_fd = hold_amphora_lock(settings.state_dir, self._settings.socket)
        if lock_fd is None:
            raise Refused(f"another agent already serves amphora {settings.amphora_id}")
        amphora = _Amphora(settings, lock_fd)
        self._amphorae[settings.amphora_id] = amphora
        self._mark_room()
        listening: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        amphora.task = asyncio.create_task(self._serve(amphora, listening))
        either: set[asyncio.Future[Any]] = {amphora.task, listening}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if listening.done() and listening.exception() is None:
            return
        failure = listening.exception() if listening.done() else "it stopped first"
        listening.cancel()
        raise Refused(f"amphora {settings.amphora_id} did not start: {failure}")

    async def _serve(self, amphora: _Amphora, listening: asyncio.Future[int]) -> None:
        """Serve one amphora until told to stop; a failure before it listens goes to
        ``listening``, later ones to the log (the amphora then is gone, as a dead agent)."""
        settings = amphora.settings
        set_log_context(amphora_id=settings.amphora_id)  # this task's lines concern it
        try:
            await serve(settings, amphora.stopping, listening.set_result)
        except Exception as exc:
            log.exception("amphora agent %s failed", settings.amphora_id)
            if not listening.done():
                listening.set_exception(exc)
        finally:
            # Not served here any more: the pid file goes before the lock is released.
            with contextlib.suppress(OSError):
                (settings.state_dir / AGENT_PID_FILE).unlink()
            with contextlib.suppress(OSError):
                (settings.state_dir / AGENT_HOST_FILE).unlink()
            os.close(amphora.lock_fd)
            del self._amphorae[settings.amphora_id]
            self._mark_room()
            self._idle.set()

    async def _stop(self, amphora_id: str) -> None:
        amphora = self._amphorae.get(amphora_id)
        if amphora is None or amphora.task is None:
            return
        amphora.stopping.set()
        await asyncio.wait({amphora.task})


def main() -> None:
    """Run the host the ``FULCRUM_AGENT_HOST_*`` variables describe."""
    settings = AgentHostSettings()  # from the environment
    configure_logging(settings.log_level, SERVICE_NAME)
    setup_tracing(SERVICE_NAME)
    event_loop.run(AgentHost(settings).run(), SERVICE_NAME)
