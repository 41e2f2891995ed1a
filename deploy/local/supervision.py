"""Process supervision of the embedded stack, by supervisord (PyPI ``supervisor``).

``render_config`` writes the supervisord configuration of a set of ``Program``s: each is
restarted at once when it dies after running ``startsecs``, restarted with a growing backoff
(1 s, 2 s, ...) when it dies sooner, and given up (state FATAL, logged by supervisord) after
``startretries`` fast crashes in a row. ``SupervisorClient`` reads process states over
supervisord's XML-RPC unix socket. ``listen`` is supervisord's event listener that counts
restarts per program in a JSON file and logs every crash and every give-up.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import time
import xmlrpc.client
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from libs.common.errors import InfrastructureError

__all__ = [
    "Program",
    "ProcessInfo",
    "SupervisorClient",
    "SupervisorUnreachable",
    "listen",
    "read_restarts",
    "render_config",
]

# States of supervisord's process state machine that mean "gave up" or "not running".
FATAL: Final = "FATAL"
RUNNING: Final = "RUNNING"
# Transitions into STARTING from these states are restarts supervisord made on its own.
_RESTART_FROM: Final = frozenset({"EXITED", "BACKOFF"})


class SupervisorUnreachable(InfrastructureError, OSError):
    """supervisord does not answer on its socket (not running, or another state dir)."""


@dataclass(frozen=True)
class Program:
    """One supervised process. ``environment`` is added to supervisord's own environment.

    ``startsecs``: a process that lives this long counts as started, so a later crash is
    restarted at once; ``startretries``: fast crashes in a row before supervisord gives up.
    """

    name: str
    command: Sequence[str]
    log_file: Path
    environment: Mapping[str, str] = field(default_factory=dict)
    priority: int = 100
    stop_signal: str = "TERM"
    stop_wait: float = 15.0
    startsecs: int = 1
    startretries: int = 5
    directory: Path | None = None
    # False: started only when asked (``SupervisorClient.start``), e.g. once its dependencies
    # answer; supervisord restarts it like any other afterwards.
    autostart: bool = True


def _quote_value(value: str) -> str:
    """A value for supervisord's ``environment=``: single-quoted, ``%`` doubled (the config
    file is read with %-interpolation). A value holding a single quote cannot be expressed."""
    if "'" in value or "\n" in value:
        raise ValueError(f"cannot pass {value!r} through supervisord: it holds a quote/newline")
    return "'" + value.replace("%", "%%") + "'"


def _quote_arg(arg: str) -> str:
    if not arg or any(c in arg for c in " \t\"'\\%;#"):
        if '"' in arg or "\n" in arg:
            raise ValueError(f"cannot pass argument {arg!r} through supervisord")
        return '"' + arg.replace("%", "%%") + '"'
    return arg


def render_config(
    *,
    socket_path: str,
    pid_file: Path,
    log_file: Path,
    programs: Sequence[Program],
    restarts_file: Path,
    listener_log: Path,
) -> str:
    """The supervisord configuration (pure): the programs plus the restart-counting listener."""
    lines = [
        "[supervisord]",
        "nodaemon=true",
        f"logfile={log_file}",
        f"pidfile={pid_file}",
        "loglevel=info",
        # Root is expected here (netns and docker drivers); the programs drop nothing.
        "user=root" if os.geteuid() == 0 else "",
        "",
        "[unix_http_server]",
        f"file={socket_path}",
        "chmod=0700",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[eventlistener:restart-counter]",
        f"command={_quote_arg(sys.executable)} -m deploy.local.supervision "
        f"{_quote_arg(str(restarts_file))}",
        "events=PROCESS_STATE",
        "buffer_size=1000",
        f"stderr_logfile={listener_log}",
        "stdout_logfile=NONE",
        "autorestart=true",
        "",
    ]
    for program in programs:
        lines += [
            f"[program:{program.name}]",
            "command=" + " ".join(_quote_arg(arg) for arg in program.command),
            f"priority={program.priority}",
            f"autostart={'true' if program.autostart else 'false'}",
            "autorestart=true",
            f"startsecs={program.startsecs}",
            f"startretries={program.startretries}",
            f"stopsignal={program.stop_signal}",
            f"stopwaitsecs={program.stop_wait:g}",
            "redirect_stderr=true",
            f"stdout_logfile={program.log_file}",
            "stdout_logfile_maxbytes=50MB",
            "stdout_logfile_backups=5",
        ]
        if program.directory is not None:
            lines.append(f"directory={program.directory}")
        if program.environment:
            pairs = ",".join(f"{k}={_quote_value(v)}" for k, v in program.environment.items())
            lines.append(f"environment={pairs}")
        lines.append("")
    return "\n".join(line for line in lines if line is not None) + "\n"


@dataclass(frozen=True)
class ProcessInfo:
    """A program as supervisord sees it; ``uptime`` in seconds (0 when not running)."""

    name: str
    state: str
    pid: int | None
    uptime: float
    description: str

    @property
    def running(self) -> bool:
        return self.state == RUNNING


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    """XML-RPC over a unix socket, every step bounded by ``timeout``."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__()
        self._socket_path = socket_path
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        connection = _UnixConnection(self._socket_path, self._timeout)
        self._connection = (host, connection)  # what Transport.close() closes
        return connection


class SupervisorClient:
    """supervisord's XML-RPC interface over its unix socket; every call is bounded by
    ``timeout`` and raises SupervisorUnreachable when nothing answers."""

    def __init__(self, socket_path: str, timeout: float = 3.0) -> None:
        self._socket_path = socket_path
        self._timeout = timeout

    def _proxy(self) -> Any:
        transport = _UnixTransport(self._socket_path, self._timeout)
        return xmlrpc.client.ServerProxy("http://localhost", transport=transport)

    def _call(self, method: str, *args: object) -> Any:
        if not os.path.exists(self._socket_path):
            raise SupervisorUnreachable(f"no supervisor socket at {self._socket_path}")
        try:
            with self._proxy() as proxy:
                return getattr(proxy.supervisor, method)(*args)
        except (OSError, xmlrpc.client.ProtocolError) as exc:
            raise SupervisorUnreachable(
                f"supervisor at {self._socket_path} did not answer: {exc}"
            ) from exc
        except xmlrpc.client.Fault as fault:
            if "SHUTDOWN_STATE" in fault.faultString:
                raise SupervisorUnreachable(
                    f"supervisor at {self._socket_path} is stopping"
                ) from fault
            raise

    def processes(self) -> list[ProcessInfo]:
        """Every program (event listeners included), in supervisord's order."""
        result = []
        for info in self._call("getAllProcessInfo"):
            running = info["statename"] in (RUNNING, "STOPPING")
            result.append(
                ProcessInfo(
                    name=info["name"],
                    state=info["statename"],
                    pid=info["pid"] or None,
                    uptime=float(info["now"] - info["start"]) if running else 0.0,
                    description=info["description"],
                )
            )
        return result

    def pid(self) -> int:
        """supervisord's own pid."""
        return int(self._call("getPID"))

    def start(self, name: str) -> None:
        """Start program ``name`` without waiting for it (already started: no error)."""
        try:
            self._call("startProcess", name, False)
        except xmlrpc.client.Fault as fault:
            if "ALREADY_STARTED" not in fault.faultString:
                raise

    def stop(self, name: str) -> None:
        """Stop program ``name`` (it stays stopped until ``start``), waiting for it to exit."""
        self._call("stopProcess", name, True)

    def shutdown(self) -> None:
        """Stop every program (in reverse priority order), then supervisord itself."""
        self._call("shutdown")


def read_restarts(path: Path) -> dict[str, dict[str, Any]]:
    """The listener's counts: ``{program: {"restarts": n, "crashes": n, "fatal": bool,
    "pid": last pid seen running, ...}}`` (empty before the first event)."""
    try:
        data: dict[str, dict[str, Any]] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


def _parse_tokens(line: str) -> dict[str, str]:
    return dict(token.split(":", 1) for token in line.split() if ":" in token)


def _record(counts: dict[str, dict[str, Any]], event: str, payload: dict[str, str]) -> str | None:
    """Apply one PROCESS_STATE event to ``counts``; return a log line for crashes/give-ups."""
    name = payload.get("processname", "?")
    entry = counts.setdefault(name, {"restarts": 0, "crashes": 0, "fatal": False})
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    if event == "PROCESS_STATE_EXITED" and payload.get("expected") == "0":
        entry["crashes"] += 1
        entry["last_crash"] = now
        return f"{now} {name} (pid {payload.get('pid')}) exited unexpectedly; restarting"
    if event == "PROCESS_STATE_STARTING" and payload.get("from_state") in _RESTART_FROM:
        entry["restarts"] += 1
        entry["fatal"] = False
        return None
    if event == "PROCESS_STATE_BACKOFF":
        entry["crashes"] += 1
        entry["last_crash"] = now
        return f"{now} {name} died while starting; retrying with backoff"
    if event == "PROCESS_STATE_FATAL":
        entry["fatal"] = True
        return f"{now} GAVE UP on {name}: it crashed at start too often in a row (FATAL)"
    if event == "PROCESS_STATE_RUNNING":
        entry["fatal"] = False
        entry["pid"] = int(payload.get("pid", "0")) or None  # for a stop without supervisord
    return None


def _write_atomically(path: Path, data: object) -> None:
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(scratch, path)


def listen(restarts_file: Path, stdin: IO[str], stdout: IO[str], log: IO[str]) -> None:
    """supervisord's event listener protocol: READY, read a header and its payload, count,
    answer OK; forever (supervisord ends it). Counts survive listener restarts (the file)."""
    counts = read_restarts(restarts_file)
    while True:
        stdout.write("READY\n")
        stdout.flush()
        header = stdin.readline()
        if not header:
            return  # supervisord went away
        fields = _parse_tokens(header)
        payload = stdin.read(int(fields.get("len", "0")))
        message = _record(counts, fields.get("eventname", ""), _parse_tokens(payload))
        if message is not None:
            log.write(message + "\n")
            log.flush()
        _write_atomically(restarts_file, counts)
        stdout.write("RESULT 2\nOK")
        stdout.flush()


if __name__ == "__main__":
    listen(Path(sys.argv[1]), sys.stdin, sys.stdout, sys.stderr)
