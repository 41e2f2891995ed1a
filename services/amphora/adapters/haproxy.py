"""HAProxy, owned by the agent: validated config installs with hitless reloads and rollback,
plus the runtime API (weights, drain, add/del server, `show stat`).

One HAProxy process per amphora, with no master process: a start runs `haproxy -db -f
haproxy.cfg`; a reload starts a new process that takes the listening sockets over from the
serving one (`-x stats.sock`, which the stats socket's `expose-fd listeners` allows) and then
tells it to finish its connections and leave (`-sf <pid>`; the retiring process closes its
idle keep-alive connections after one more answer, `option idle-close-on-response`, and
stops within the config's `hard-stop-after`). No connection is refused or reset on the way.
A serving config without `expose-fd listeners` is reloaded all the same, with a warning: the
new process binds sockets of its own, and connections queued on the old ones may be reset.
A new process that cannot load its file exits before signalling anyone: the serving process
goes on, untouched. Master-worker mode (`-W`) would re-execute the master after every start
and reload, twice the CPU of a load, plus one more process per amphora.

A configuration without a proxy that takes connections (no `frontend` or `listen` section: a
load balancer without listeners, or with only UDP or disabled ones) is installed but runs no
HAProxy, as Octavia's amphora runs none until a listener exists: installing one
stops HAProxy, and the next configuration with a proxy starts it.

A configuration stored for the next reload only (HAProxy serves; the runtime API made its
change) is checked with `haproxy -c`, at once or, with ``check_later``, after ``apply``
returned: it waits as `haproxy.cfg.unchecked` and is installed once the check passed. Whatever
needs the installed file next (any ``apply``, ``stop``, ``discard``) first waits for that
check, so no reload or start ever loads a file that was not checked. A file the later check
refuses is kept as `.failed`, and the next ``apply`` of a file that loads nothing raises
ConfigRejected with HAProxy's output (the caller then pushes with a reload; one that loads
clears it). A configuration without a proxy, pushed with ``check_later`` while HAProxy does
not run (a spare's first, a bare load balancer's), is installed unchecked: nothing ever loads
it, since HAProxy starts only with a configuration that has a proxy, and that one is checked
whole by the start that loads it. (`haproxy -c` costs ~10 ms of CPU.)

Files under the state dir: `haproxy.cfg` (always the last config installed: the one HAProxy
loaded, or one that needs no HAProxy), `.new`, `.unchecked` and `.failed` copies, `stats.sock`
(the runtime API; every pushed config must declare it), `servers-state` (the servers' states,
saved before each reload for a config that loads them), `haproxy.pid` (the serving process's
pid, present exactly while the agent means HAProxy to run: the agent writes it at a start and
after a reload, and removes it when it stops HAProxy) and `haproxy.log` (its stderr).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import logging
import operator
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Collection
from contextlib import suppress
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final

from libs.common.agent_contract import NAME_PATTERN, ServerChange, StatsRow
from libs.common.errors import (
    Conflict,
    DomainError,
    InfrastructureError,
    NotFound,
    TransientError,
    ValidationFailed,
)
from libs.common.private_files import write_private_file
from libs.common.socket_paths import fitting_path
from services.amphora.adapters.daemon_process import DaemonLog, parent_pid, pid_alive, run_tool
from services.amphora.adapters.haproxy_stats import ProcessCpu, StatsSession, unix_exchange

logger = logging.getLogger(__name__)

_LOG_TAIL_CHARS: Final = 8192
_POLL_INTERVAL: Final = 0.02
# How often the stats socket is asked which process serves while a start or reload is under
# way: each answer is cheap, and the caller (a provisioning step) waits for exactly this.
_LOAD_POLL_INTERVAL: Final = 0.005
# How long one such question may wait for an answer (a process that took the socket over but
# died starting never answers).
_ANSWER_PATIENCE: Final = 0.25
_STOP_TIMEOUT: Final = 5.0
# How long a HAProxy that a previous agent left running may take to answer before it is adopted.
_ADOPT_PATIENCE: Final = 2.0
_NAME: Final = re.compile(NAME_PATTERN)
_STATS_SOCKET_LINE: Final = re.compile(r"^\s*stats\s+socket\s+(?:unix@)?(\S+)(.*)$", re.MULTILINE)
_EXPOSES_LISTENERS: Final = re.compile(r"\sexpose-fd\s+listeners\b")
_SERVER_STATE_FILE: Final = re.compile(r"^\s*server-state-file\s+(\S+)\s*$", re.MULTILINE)
_PROXY_SECTION: Final = re.compile(r"^[ \t]*(?:frontend|listen)[ \t]", re.MULTILINE)
_INFO_PID: Final = re.compile(r"^Pid: (\d+)$", re.MULTILINE)
# A server line that runs a check (`check`, `agent-check`, ...): conservative on purpose.
_SERVER_CHECKS: Final = re.compile(r"^[ \t]*(?:default-)?server[ \t].*\bcheck\b", re.MULTILINE)
# The frontends' rows alone (type mask 1): what a quiet heartbeat read asks.
_SHOW_FRONTENDS: Final = "show stat -1 1 -1"


def takes_connections(config: str) -> bool:
    """Whether ``config`` declares a proxy that takes connections (a `frontend` or `listen`
    section); HAProxy runs only for such a configuration."""
    return _PROXY_SECTION.search(config) is not None


# PING health monitors, as Octavia maps them: HAProxy's external check runs this script with
# `<proxy address> <proxy port> <server address> <server port>`; one echo request answered
# within a second keeps the server up. HAProxy gives the script an empty PATH.
_PING_CHECK_SCRIPT: Final = """#!/bin/sh
case "$3" in
  *:*) exec {ping} -6 -q -n -w 1 -c 1 "$3" >/dev/null 2>&1 ;;
  *) exec {ping} -4 -q -n -w 1 -c 1 "$3" >/dev/null 2>&1 ;;
esac
"""
_PING_SEARCH_PATH: Final = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"


def write_ping_check(path: Path) -> Path | None:
    """Write the external check script of PING health monitors at ``path`` (mode 0755) and
    return it; None (nothing written) when this amphora has no ``ping`` binary. Not synced:
    every agent's start writes it again, as it does its port file, so a small write on the
    event loop; an fsync, and the thread it was then done in, cost each agent's boot ~3 ms
    of CPU in a burst of creates."""
    ping = shutil.which("ping", path=_PING_SEARCH_PATH)
    if ping is None:
        return None
    write_private_file(
        path, _PING_CHECK_SCRIPT.format(ping=ping).encode(), mode=0o755, durable=False
    )
    return path


# HAProxy's version by binary (path, mtime, size): agents forked by the zygote
# (services/amphora/zygote.py) inherit what it read there and skip a `haproxy -v` each.
_VERSIONS: dict[tuple[str, int, int], str] = {}


def _binary_key(binary: Path) -> tuple[str, int, int] | None:
    try:
        stat = binary.stat()
    except OSError:
        return None
    return (str(binary), stat.st_mtime_ns, stat.st_size)


def _version_of(output: str) -> str:
    first_line = output.splitlines()[0] if output else ""
    return first_line.removeprefix("HAProxy version ").split(" ")[0]


def remember_version(binary: Path) -> None:
    """Run ``binary -v`` now (blocking) and remember its version for later ``prepare`` calls
    in this process and its forks; a failure is left for ``prepare`` to report."""
    key = _binary_key(binary)
    if key is None:
        return
    try:
        done = subprocess.run(  # noqa: S603 (our configured binary)
            [str(binary), "-v"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return
    if done.returncode == 0:
        _VERSIONS[key] = _version_of(done.stdout.strip())


# HAProxy refuses unix socket paths longer than 97 bytes: the sockets' dir, with "/stats.sock"
# after it, stays within that (deep state dirs get a short one, `fitting_path`).
_MAX_SOCKET_DIR: Final = 80


def _socket_dir(state_dir: Path) -> Path:
    """Where the sockets live: the state dir itself, or a short fulcrum-amp-<hash> dir."""
    return fitting_path(state_dir.resolve(), "fulcrum-amp", limit=_MAX_SOCKET_DIR)


class ConfigRejected(ValidationFailed):
    """HAProxy refused a configuration (check or load); the previous one keeps serving."""

    code = "config_rejected"


class HaproxyUnavailable(TransientError):
    """HAProxy's runtime socket did not answer."""


class HaproxyFailed(InfrastructureError):
    """HAProxy could not be brought back to the last good configuration."""


class _LoadFailed(InfrastructureError):
    def __init__(self, output: str) -> None:
        super().__init__(output)
        self.output = output


def _exposes_listeners(config: str) -> bool:
    """Whether ``config``'s stats socket hands its listening sockets to a reload's process
    (`expose-fd listeners`)."""
    return any(_EXPOSES_LISTENERS.search(m.group(2)) for m in _STATS_SOCKET_LINE.finditer(config))


async def _end(process: asyncio.subprocess.Process) -> None:
    """SIGTERM ``process``, SIGKILL after 5 s, and reap it. Signalled only through the handle:
    a reaped child's pid may already be reused."""
    with suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), _STOP_TIMEOUT)
    except TimeoutError:
        with suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def _scalar(value: str) -> str | int | None:
    if value == "":
        return None
    if value.isdigit() or (value.startswith("-") and value[1:].isdigit()):
        return int(value)
    return value


def parse_show_stat(text: str, columns: Collection[str] | None = None) -> list[StatsRow]:
    """Parse `show stat` CSV into dicts; integers become ints, empty fields None. With
    ``columns``, each dict holds only those of them HAProxy sent (a heartbeat reads a dozen of
    its ~130, and converting every one was most of a beat's work).

    Raises ValueError with HAProxy's message when the answer is not a stats table.
    """
    return stat_rows(stat_fields(text, columns))


@dataclass(frozen=True)
class StatFields:
    """The fields of a `show stat` answer, unconverted: equal for two answers exactly when
    their parsed rows (``stat_rows``) are."""

    names: tuple[str, ...]
    rows: tuple[tuple[str | None, ...], ...]  # None: the row ends before that column


def stat_fields(text: str, columns: Collection[str] | None = None) -> StatFields:
    """The fields of ``columns`` (all with None) in a `show stat` answer; raises as
    ``parse_show_stat``."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError(text.strip() or "empty answer")
    wanted = _wanted_columns(lines[0], None if columns is None else frozenset(columns))
    body = [line for line in lines[1:] if line]
    if any('"' in line for line in body):
        # A field holding a comma comes quoted; without quotes a split is the same, and cheaper.
        table = list(csv.reader(body))
    else:  # split no further than the last column wanted
        table = [line.split(",", wanted.last + 1) for line in body]
    if all(len(values) > wanted.last for values in table):
        return StatFields(wanted.names, tuple(map(wanted.pick, table)))
    rows = tuple(
        tuple(values[index] if index < len(values) else None for index in wanted.indexes)
        for values in table
    )
    return StatFields(wanted.names, rows)


def stat_rows(fields: StatFields) -> list[StatsRow]:
    """The rows of ``fields`` as dicts, as ``parse_show_stat`` returns them."""
    names = fields.names
    return [
        {name: _scalar(value) for name, value in zip(names, row, strict=True) if value is not None}
        for row in fields.rows
    ]


@dataclass(frozen=True)
class _Wanted:
    names: tuple[str, ...]
    indexes: tuple[int, ...]
    last: int  # the highest index (-1: none)
    pick: Callable[[list[str]], tuple[str | None, ...]]  # the fields at ``indexes``


@lru_cache(maxsize=32)
def _wanted_columns(header: str, columns: frozenset[str] | None) -> _Wanted:
    """The header's columns to keep (the header is the same every beat)."""
    kept = [
        (index, key)
        for index, key in enumerate(header[2:].split(","))
        if key and (columns is None or key in columns)
    ]
    indexes = tuple(index for index, _ in kept)
    return _Wanted(
        tuple(key for _, key in kept), indexes, max(indexes, default=-1), _picker(indexes)
    )


def _picker(indexes: tuple[int, ...]) -> Callable[[list[str]], tuple[str | None, ...]]:
    if len(indexes) > 1:
        return operator.itemgetter(*indexes)  # a tuple from C: most of a parse saved

    def pick(values: list[str]) -> tuple[str | None, ...]:
        return tuple(values[index] for index in indexes)

    return pick


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValidationFailed(f"invalid proxy or server name {name!r}")
    return name


def _refusal(command: str, answer: str) -> DomainError:
    message = f"haproxy refused `{command}`: {answer or 'no answer'}"
    if answer.startswith("No such"):
        return NotFound(message, detail=answer)
    return Conflict(message, detail=answer)


_FRONTEND_TYPE: Final = 0  # `show stat` type column
# What tells a quiet answer (``HaproxyDataPlane.heartbeat_stat``) from another.
_QUIET_COLUMNS: Final = frozenset({"type", "status", "scur", "stot"})


@dataclass
class _QuietStat:
    """A full `show stat` answer taken while no frontend had a session open, and its
    frontends' rows (which a later frontends-only answer must equal)."""

    columns: frozenset[str]
    frontends: list[StatsRow]
    rows: list[StatsRow]
    answer: str | None = None
    """The text of a frontends-only answer whose rows were ``frontends``: the same text again
    needs no parsing to be known equal (an idle HAProxy's answer is, byte for byte)."""


@dataclass(frozen=True)
class _LaterCheck:
    """`haproxy -c` of ``file`` running after ``apply`` returned (``check_later``)."""

    task: asyncio.Task[tuple[str, int]]
    file: Path  # `haproxy.cfg.unchecked`, installed once the check passed


class HaproxyDataPlane:
    """One HAProxy process per amphora (and, for a while after a reload, the ones retiring),
    started lazily by the first `apply`.

    Config installs, stops and runtime changes are serialized by one lock, so a runtime change
    never lands on a process that a concurrent reload is about to retire.
    """

    def __init__(
        self, binary: Path, state_dir: Path, *, reload_timeout: float, drain_timeout: float
    ) -> None:
        self.binary = binary
        self.state_dir = state_dir
        self.reload_timeout = reload_timeout
        self.drain_timeout = drain_timeout
        self.config_path = state_dir / "haproxy.cfg"
        self.stats_socket = _socket_dir(state_dir) / "stats.sock"
        self.certs_dir = state_dir / "certs"
        # Set by `prepare`; None when PING health monitors cannot run here.
        self.ping_check: Path | None = None
        self._on_load: list[Callable[[], None]] = []
        self._pid_file = state_dir / "haproxy.pid"
        self._log = DaemonLog(state_dir / "haproxy.log", _LOG_TAIL_CHARS)
        self._lock = asyncio.Lock()
        # The serving process: a child of this agent, or (``_pid`` only) one adopted from a
        # previous agent process; and the children a reload retired, until they are gone.
        self._child: asyncio.subprocess.Process | None = None
        self._pid: int | None = None
        self._retiring: list[asyncio.subprocess.Process] = []
        # Whether the serving process's config lets a reload take its listeners over (-x).
        self._exposes_listeners = False
        self._version = ""
        # A check that runs after `apply` returned (check_later), and what one refused.
        self._later: _LaterCheck | None = None
        self._refused_later: str | None = None
        self._installing: asyncio.Task[None] | None = None
        # What the heartbeats read (haproxy_stats): a kept-open session, dropped after every
        # load (it would reach the retired process), and the serving process's CPU reader.
        self._stats = StatsSession(self.stats_socket)
        self._on_load.append(self._stats.close)
        self._cpu: ProcessCpu | None = None
        # The previous `show stat` answer's fields and their rows (``_session_stat``).
        self._last_stat: tuple[StatFields, list[StatsRow]] | None = None
        # ``heartbeat_stat``: its last full answer while it is known quiet, how many loads,
        # stops and runtime changes there were (one during a read makes its answer stale),
        # and whether a server was added at runtime since the last load (it may run checks).
        self._quiet: _QuietStat | None = None
        self._full_frontends: list[StatsRow] | None = None  # of the last full answer
        self._changes = 0
        self._added_at_runtime = False

    @property
    def version(self) -> str:
        return self._version

    async def prepare(self) -> None:
        """Create the state dirs, read HAProxy's version, and adopt a HAProxy left running by a
        previous agent process: its pid file names the process answering on the stats socket,
        or (left by an agent that ran HAProxy in master-worker mode) that process's master,
        which the next reload retires as any other."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.stats_socket.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.certs_dir.mkdir(mode=0o700, exist_ok=True)
        self.ping_check = write_ping_check(self.state_dir / "ping-check.sh")  # no thread
        key = _binary_key(self.binary)
        version = _VERSIONS.get(key) if key is not None else None
        if version is None:
            output, status = await run_tool(self.state_dir, str(self.binary), "-v")
            if status != 0:
                raise HaproxyFailed(f"{self.binary} -v failed: {output}")
            version = _version_of(output)
            if key is not None:
                _VERSIONS[key] = version
        self._version = version
        with suppress(OSError, ValueError, HaproxyUnavailable):
            pid = int(self._pid_file.read_text().strip())
            answering = await self.serving_pid(_ADOPT_PATIENCE) if pid_alive(pid) else None
            if answering is not None and pid in (answering, parent_pid(answering)):
                self._pid = pid
                self._exposes_listeners = _exposes_listeners(self.config_text() or "")
                logger.info("adopted running haproxy pid=%d", pid)

    async def serving_pid(self, patience: float) -> int:
        """The pid of the process answering on the stats socket, asked again for up to
        ``patience`` seconds while none answers; raises HaproxyUnavailable when none did."""
        deadline = time.monotonic() + patience
        while True:
            pid = await self._answering_pid()
            if pid is not None:
                return pid
            if time.monotonic() >= deadline:
                raise HaproxyUnavailable(f"no haproxy answers on {self.stats_socket}")
            await asyncio.sleep(_POLL_INTERVAL)

    def is_running(self) -> bool:
        """Whether the serving process lives."""
        if self._child is not None:
            return self._child.returncode is None
        return self._pid is not None and pid_alive(self._pid)

    def config_text(self) -> str | None:
        try:
            return self.config_path.read_text()
        except FileNotFoundError:
            return None

    def config_sha256(self) -> str | None:
        text = self.config_text()
        return None if text is None else hashlib.sha256(text.encode()).hexdigest()

    def needs_running(self) -> bool:
        """Whether the installed configuration has a proxy to serve (``takes_connections``):
        False with none installed or one that runs no HAProxy."""
        text = self.config_text()
        return text is not None and takes_connections(text)

    async def apply(self, text: str, *, reload: bool = True, check_later: bool = False) -> str:
        """Install `text` as the running config and return its sha256. Idempotent: the same
        text while running (or installed, for one that runs no HAProxy) is a no-op.

        With ``reload=False`` (HAProxy running) the text, validated with `haproxy -c`, only
        becomes the file the next reload loads: the caller has already made the same change
        through the runtime API. A text that takes no connections (``takes_connections``) is
        validated with `haproxy -c`, then HAProxy is stopped and the text installed. Otherwise
        no separate `haproxy -c` runs: the new process validates the file, and one that
        refuses it leaves the serving process serving.

        With ``check_later``, a text stored for the next reload is checked after this returns
        and installed once the check passed (see the module docstring); a refusal is raised by
        the next ``apply`` of a text that loads nothing either. A text that takes no
        connections while HAProxy does not run is installed unchecked: nothing loads it. No
        start or reload ever loads an unchecked file.

        Raises ConfigRejected (with HAProxy's output) when the config lacks the stats socket
        contract, or when HAProxy refuses it (parse errors, bind errors). In every such case
        the previous config stays installed (and serving, if it was). Raises HaproxyFailed
        when even the rollback does not load.
        """
        self._require_stats_socket(text)
        digest = hashlib.sha256(text.encode()).hexdigest()
        serves = takes_connections(text)
        async with self._lock:
            self._changed()
            await self._settle()
            was_running = self.is_running()
            stored_only = not reload and serves and was_running
            refused, self._refused_later = self._refused_later, None
            if refused is not None and (stored_only or not serves):
                raise ConfigRejected(
                    "haproxy rejected the configuration stored earlier without loading it; "
                    "push it again with HAProxy loading it",
                    detail=refused,
                )
            if was_running == serves and self.config_sha256() == digest:
                return digest
            candidate = self.config_path.with_name("haproxy.cfg.new")
            write_private_file(candidate, text.encode(), durable=False)
            if check_later and stored_only:
                unchecked = self.config_path.with_name("haproxy.cfg.unchecked")
                os.replace(candidate, unchecked)
                self._check_later(unchecked)
                return digest
            if check_later and not (serves or was_running):
                os.replace(candidate, self.config_path)  # nothing loads it
            elif not serves:
                await self._check(candidate)
                await self._stop_haproxy()
                os.replace(candidate, self.config_path)
            elif stored_only:
                # Nothing loads this file now: check it, or a later reload would find it bad.
                await self._check(candidate)
                os.replace(candidate, self.config_path)
                return digest
            else:
                await self._load(candidate, text, self.config_text(), was_running)
        for callback in self._on_load:
            callback()
        return digest

    def _check_later(self, file: Path) -> None:
        """Under the lock: start `haproxy -c` on ``file``; settled when done or needed."""
        task = asyncio.create_task(
            run_tool(self.state_dir, str(self.binary), "-c", "-f", str(file))
        )
        later = _LaterCheck(task, file)
        self._later = later

        def settle_when_done(_: asyncio.Task[tuple[str, int]]) -> None:
            async def settle() -> None:
                async with self._lock:
                    if self._later is later:
                        await self._settle()

            if self._later is later:
                self._installing = asyncio.get_running_loop().create_task(settle())

        task.add_done_callback(settle_when_done)

    async def _settle(self) -> None:
        """Under the lock: wait for a later check; install the file it passed, or keep the
        file as `.failed` and remember HAProxy's refusal for the next ``apply``."""
        later, self._later = self._later, None
        if later is None:
            return
        try:
            output, status = await asyncio.shield(later.task)
        except OSError as exc:
            output, status = f"haproxy -c could not run: {exc}", -1
        if status == 0:
            os.replace(later.file, self.config_path)
            return
        os.replace(later.file, self.config_path.with_name("haproxy.cfg.failed"))
        self._refused_later = output
        logger.error("haproxy rejected a configuration checked after it was pushed: %s", output)

    async def _check(self, candidate: Path) -> None:
        """`haproxy -c` on ``candidate``; raises ConfigRejected (the file kept as `.failed`)."""
        output, status = await run_tool(
            self.state_dir, str(self.binary), "-c", "-f", str(candidate)
        )
        if status != 0:
            os.replace(candidate, self.config_path.with_name("haproxy.cfg.failed"))
            raise ConfigRejected("haproxy rejected the configuration", detail=output)

    async def _load(
        self, candidate: Path, text: str, previous: str | None, was_running: bool
    ) -> None:
        """Install ``candidate`` and start or reload HAProxy on it; on a refusal put
        ``previous`` back (serving it again if it was) and raise ConfigRejected."""
        os.replace(candidate, self.config_path)
        try:
            await (self._reload() if was_running else self._start())
        except _LoadFailed as failure:
            failed = self.config_path.with_name("haproxy.cfg.failed")
            write_private_file(failed, text.encode(), durable=False)
            await self._restore(previous, serve_it=was_running)
            raise ConfigRejected(
                "haproxy could not load the configuration", detail=failure.output
            ) from None

    def on_load(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (quick, synchronous) after every start or reload that put a new
        config in service, and after a config that runs no HAProxy was installed."""
        self._on_load.append(callback)

    async def stop(self) -> None:
        """Stop HAProxy (SIGTERM, SIGKILL after 5 s); the config file stays."""
        async with self._lock:
            await self._settle()
            await self._stop_haproxy()
            if self.stats_socket.parent != self.state_dir:
                shutil.rmtree(self.stats_socket.parent, ignore_errors=True)

    async def discard(self) -> None:
        """Stop HAProxy and remove its config; idempotent."""
        async with self._lock:
            await self._settle()
            self._refused_later = None
            await self._stop_haproxy()
            self.config_path.unlink(missing_ok=True)

    def cpu_seconds(self) -> float | None:
        """CPU seconds the serving HAProxy process has run (``ProcessCpu``); None when
        it does not run."""
        pid = self._pid
        if self._cpu is not None and self._cpu.pid != pid:
            self._release_stats()
        if pid is None or not self.is_running():
            return None
        if self._cpu is None:
            self._cpu = ProcessCpu(pid)
        return self._cpu.seconds()

    async def show_stat(self, columns: Collection[str] | None = None) -> list[StatsRow]:
        """All rows of `show stat` (frontends, backends, servers), with every column or only
        ``columns``; none while the installed config runs no HAProxy (raises Conflict while
        none is installed or HAProxy died). Asked through the kept-open stats session. An
        answer whose fields are those of the previous one gives the previous rows, the same
        list (unconverted again: an idle amphora's every beat): callers must not change it."""
        if not self.is_running():  # the installed file is read only then, not every heartbeat
            self._release_stats()
            text = self.config_text()
            if text is not None and not takes_connections(text):
                return []
        wanted = None if columns is None else {*columns, "type", "status"}
        rows = await self._session_stat(wanted)
        if self._stats.reused and any(
            row.get("type") == 0 and row.get("status") == "STOP" for row in rows
        ):
            # A retiring process answered a session opened before a reload: ask the serving one.
            self._stats.close()
            rows = await self._session_stat(wanted)
        if columns is not None and len(wanted or ()) > len(columns):
            return [{k: v for k, v in row.items() if k in columns} for row in rows]
        return rows

    async def heartbeat_stat(self, columns: Collection[str]) -> list[StatsRow]:
        """``show_stat(columns)`` for a heartbeat, whose columns (statuses, weights, counters,
        current sessions; ``scur`` and ``stot`` among them) move only through a session, a
        health check, a load or a runtime change. When its last full answer found no session
        open on any frontend, no server runs a check, and no load, stop or runtime change came
        since, HAProxy is asked for its frontends alone: rows equal to that answer's (the same
        ``stot``: no session began; ``scur`` 0: none is open) prove that nothing else moved,
        and that answer is given again. An answer is taken as quiet only once its frontends
        are those of the full answer before it (a listener with sessions every beat is read
        in full at once, not asked twice); a frontends-only answer whose text is that of one
        found equal is not parsed again. HAProxy is asked at every call either way, so a
        dead or stuck HAProxy shows as it did; raises as ``show_stat``."""
        wanted = frozenset(columns)
        quiet = self._quiet
        if quiet is not None and quiet.columns == wanted and self.is_running():
            answer = await self._session_answer(_SHOW_FRONTENDS)
            if answer == quiet.answer:
                return quiet.rows
            if self._stat_rows(answer, wanted | {"type", "status"}) == quiet.frontends:
                quiet.answer = answer
                return quiet.rows
        changes = self._changes
        rows = await self.show_stat(wanted)
        frontends = [row for row in rows if row.get("type") == _FRONTEND_TYPE]
        settled, self._full_frontends = frontends == self._full_frontends, frontends
        if changes == self._changes and settled:  # else it may predate a change: not quiet
            self._quiet = self._quiet_stat(wanted, frontends, rows)
        else:
            self._quiet = None
        return rows

    def _quiet_stat(
        self, columns: frozenset[str], frontends: list[StatsRow], rows: list[StatsRow]
    ) -> _QuietStat | None:
        """``rows`` (``frontends`` among them) as a quiet answer for ``heartbeat_stat``, or
        None when it cannot be one."""
        if not _QUIET_COLUMNS <= columns or self._added_at_runtime:
            return None
        if not frontends or any(row.get("scur") != 0 for row in frontends):
            return None
        text = self.config_text()
        if text is None or _SERVER_CHECKS.search(text):
            return None
        return _QuietStat(columns, frontends, rows)

    def _changed(self) -> None:
        """A load, stop or runtime change began or ended: the next heartbeat read is a full
        one, and one under way is not kept as quiet (it may have read the retiring process)."""
        self._quiet, self._full_frontends = None, None
        self._changes += 1

    def _loaded(self) -> None:
        """A new process serves: what it loaded carries the servers added at runtime."""
        self._changed()
        self._added_at_runtime = False

    def _release_stats(self) -> None:
        """Close what the heartbeats keep open on this HAProxy (its stats session, its /proc
        files); the next read opens them again."""
        self._changed()
        self._stats.close()
        if self._cpu is not None:
            self._cpu.close()
            self._cpu = None

    async def _session_stat(self, columns: Collection[str] | None) -> list[StatsRow]:
        return self._stat_rows(await self._session_answer("show stat"), columns)

    async def _session_answer(self, command: str) -> str:
        """HAProxy's answer to ``command`` through the kept-open stats session."""
        if not self.is_running():
            raise Conflict("haproxy is not running; push a configuration first")
        try:
            return await self._stats.ask(command)
        except OSError as exc:
            raise HaproxyUnavailable(f"runtime API {self.stats_socket} unreachable: {exc}") from exc

    def _stat_rows(self, answer: str, columns: Collection[str] | None) -> list[StatsRow]:
        """The rows of a `show stat` answer (the previous rows when its fields are the previous
        answer's); raises HaproxyUnavailable when it is not a stats table."""
        try:
            fields = stat_fields(answer, columns)
        except ValueError as exc:
            raise HaproxyUnavailable(f"unexpected show stat answer: {exc}") from exc
        last = self._last_stat
        if last is not None and last[0] == fields:
            return last[1]
        rows = stat_rows(fields)
        self._last_stat = (fields, rows)
        return rows

    async def change_server(self, backend: str, server: str, change: ServerChange) -> list[str]:
        """Apply `change` through the runtime API and return the commands that ran.

        Raises NotFound for an unknown backend/server, Conflict when HAProxy refuses a command
        (earlier commands of the same change stay applied) or when a server being deleted
        still has connections after `drain_timeout` (it then stays in maintenance).
        Runtime changes last until the next reload: the pushed config must carry them too.
        """
        target = f"{_check_name(backend)}/{_check_name(server)}"
        commands: list[str] = []

        async def run(command: str, expected: str = "") -> None:
            answer = (await self._runtime(command)).strip()
            if answer != expected:
                raise _refusal(command, answer)
            commands.append(command)

        async with self._lock:
            self._changed()
            self._added_at_runtime |= change.add is not None
            if change.delete:
                await run(f"disable server {target}")
                await self._await_no_connections(backend, server)
                await run(f"del server {target}", "Server deleted.")
                return commands
            if change.add is not None:
                line = " ".join([f"add server {target}", change.add.endpoint, *change.add.options])
                await run(line, "New server registered.")
                if "check" in change.add.options:
                    await run(f"enable health {target}")
                if "agent-check" in change.add.options:
                    await run(f"enable agent {target}")
                if change.state is None:
                    await run(f"enable server {target}")
            if change.weight is not None:
                await run(f"set weight {target} {change.weight}")
            if change.state is not None:
                await run(f"set server {target} state {change.state}")
        return commands

    # -- process management ------------------------------------------------------------------

    def _require_stats_socket(self, text: str) -> None:
        for match in _STATS_SOCKET_LINE.finditer(text):
            path, options = match.group(1).strip("\"'"), match.group(2)
            if path == str(self.stats_socket) and "level admin" in options:
                return
        raise ConfigRejected(
            "the configuration must declare the agent's runtime socket",
            detail=f"expected in `global`: stats socket {self.stats_socket} mode 600 level admin",
        )

    async def _start(self) -> None:
        """Start HAProxy on the installed file and return once it serves; raises _LoadFailed
        (nothing left running) when it exits or never answers."""
        self._changed()
        offset = self._log.offset()
        child = await self._log.spawn(
            self.state_dir, str(self.binary), "-db", "-f", str(self.config_path)
        )
        # Written at once: an agent that dies now still leaves the orphan findable.
        self._write_pid_file(child.pid)
        try:
            await self._until_serving(child, offset)
        except _LoadFailed:
            self._pid_file.unlink(missing_ok=True)
            raise
        self._child, self._pid = child, child.pid
        self._loaded()
        logger.info("haproxy pid=%d started", child.pid)

    async def _reload(self) -> None:
        """Start a new process on the installed file that takes the listening sockets over
        from the serving one (``-x``, when the serving config exposes them) and retires it
        (``-sf``) once it serves; return when it serves. Raises _LoadFailed when it exits or
        never answers: the serving process then never got the signal and goes on serving.
        The servers' states are saved first for a config that loads them."""
        self._changed()
        serving = self._pid
        assert serving is not None
        await self._save_server_state()
        handover = ["-x", str(self.stats_socket)] if self._exposes_listeners else []
        if not handover:
            logger.warning(
                "reloading haproxy pid=%d without handing its listeners over (its stats socket "
                "lacks `expose-fd listeners`): connections queued on them may be reset",
                serving,
            )
        offset = self._log.offset()
        child = await self._log.spawn(
            self.state_dir,
            str(self.binary),
            "-db",
            "-f",
            str(self.config_path),
            *handover,
            "-sf",
            str(serving),
        )
        await self._until_serving(child, offset)
        if self._child is not None:
            self._retiring.append(self._child)
        self._retiring = [p for p in self._retiring if p.returncode is None]
        self._child, self._pid = child, child.pid
        self._write_pid_file(child.pid)
        self._loaded()

    def _write_pid_file(self, pid: int) -> None:
        """Name ``pid`` in the pid file, replaced whole (keepalived's check reads it at any
        time); not synced: a pid means nothing after a reboot, and a sync would hold up the
        event loop, every amphora of an agent host with it."""
        temporary = self._pid_file.with_name(".haproxy.pid.new")
        temporary.write_text(f"{pid}\n")
        os.replace(temporary, self._pid_file)

    async def _until_serving(self, child: asyncio.subprocess.Process, offset: int) -> None:
        """Wait until ``child`` answers on the stats socket: it has bound every listener of
        its configuration and runs its poll loop. Raises _LoadFailed with HAProxy's words
        (its log since ``offset``) when it exits first, or, killed, after reload_timeout."""
        deadline = time.monotonic() + self.reload_timeout
        while time.monotonic() < deadline:
            if child.returncode is not None:
                raise _LoadFailed(self._log.since(offset))
            if await self._answering_pid() == child.pid:
                self._exposes_listeners = _exposes_listeners(self.config_text() or "")
                return
            await asyncio.sleep(_LOAD_POLL_INTERVAL)
        await _end(child)
        raise _LoadFailed(f"no answer after {self.reload_timeout} s\n{self._log.since(offset)}")

    async def _answering_pid(self) -> int | None:
        """The pid in the `show info` of the process that answers on the stats socket; None
        when none answers within ``_ANSWER_PATIENCE`` (a connection waiting in the socket's
        backlog that no process takes, e.g. one that died starting, counts as no answer)."""
        try:
            answer = await asyncio.wait_for(
                unix_exchange(self.stats_socket, "show info"), _ANSWER_PATIENCE
            )
        except (OSError, TimeoutError):
            return None
        found = _INFO_PID.search(answer)
        return int(found.group(1)) if found is not None else None

    async def _save_server_state(self) -> None:
        """Write `show servers state` to the file the installed config loads servers' states
        from (`server-state-file`), so a reload keeps what checks and the runtime API set;
        nothing for a config that names none. A failed save is logged: the reload goes on,
        its servers starting from the configuration alone."""
        found = _SERVER_STATE_FILE.search(self.config_text() or "")
        if found is None:
            return
        target = Path(found.group(1).strip("\"'"))
        try:
            answer = await unix_exchange(self.stats_socket, "show servers state")
            write_private_file(target, answer.encode(), durable=False)
        except OSError as exc:
            logger.warning("servers' states not saved before a reload: %s", exc)

    async def _restore(self, previous: str | None, *, serve_it: bool) -> None:
        """Put the last good config file back; if it was serving, make sure HAProxy serves it
        (a refused reload left the serving process as it was; start one if it died since)."""
        if previous is None:
            self.config_path.unlink(missing_ok=True)
        else:
            write_private_file(self.config_path, previous.encode(), durable=False)
        if previous is None or not serve_it:
            await self._stop_haproxy()
            return
        if self.is_running():
            return
        try:
            await self._start()
        except _LoadFailed as failure:
            raise HaproxyFailed(
                f"rollback to the last good config failed: {failure.output}"
            ) from None

    async def _stop_haproxy(self) -> None:
        """Stop the serving process and the retiring ones (SIGTERM, SIGKILL after 5 s) and
        remove the pid file."""
        self._release_stats()
        pid, child, retiring = self._pid, self._child, self._retiring
        self._pid, self._child, self._retiring = None, None, []
        await asyncio.gather(*(_end(p) for p in retiring if p.returncode is None))
        if pid is None:
            return
        if child is not None:
            await _end(child)
        elif pid_alive(pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            for _ in range(int(_STOP_TIMEOUT / _POLL_INTERVAL)):
                if not pid_alive(pid):
                    break
                await asyncio.sleep(_POLL_INTERVAL)
            if pid_alive(pid):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._pid_file.unlink(missing_ok=True)
        logger.info("haproxy pid=%d stopped", pid)

    # -- runtime API -------------------------------------------------------------------------

    async def _runtime(self, command: str) -> str:
        if not self.is_running():
            raise Conflict("haproxy is not running; push a configuration first")
        try:
            return await unix_exchange(self.stats_socket, command)
        except OSError as exc:
            raise HaproxyUnavailable(f"runtime API {self.stats_socket} unreachable: {exc}") from exc

    async def _await_no_connections(self, backend: str, server: str) -> None:
        deadline = time.monotonic() + self.drain_timeout
        while True:
            answer = await self._runtime(f"show stat {backend} 4 -1")
            try:
                rows = parse_show_stat(answer)
            except ValueError:
                raise _refusal(f"show stat {backend}", answer.strip()) from None
            current = next((row.get("scur") for row in rows if row.get("svname") == server), None)
            if current is None:
                raise NotFound(f"server {backend}/{server} not found")
            if current == 0:
                return
            if time.monotonic() > deadline:
                raise Conflict(
                    f"server {backend}/{server} still has {current} connections after "
                    f"{self.drain_timeout} s; it stays in maintenance"
                )
            await asyncio.sleep(0.1)
