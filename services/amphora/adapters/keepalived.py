"""keepalived (VRRP only) owned by the agent: validated configs, reload on change, a clean
start that never leaves a stale VIP behind, and the instance's state as keepalived reports it.

Files under the state dir: ``keepalived.conf`` (the last config keepalived loaded, with
``.new`` / ``.failed`` copies), ``keepalived.vips`` (the VIPs that config moves),
``keepalived.pid`` and ``keepalived-vrrp.pid`` (explicit pid files, so several keepalived
instances, one per amphora namespace, coexist on one host), ``keepalived.log`` (its console),
``vrrp-check.sh`` (exits 0 while HAProxy's serving process lives, or while there is no HAProxy pid
file: the ``track_script``),
``vrrp-notify.sh`` (keepalived's ``vrrp_notify_fifo_script``: one process reading
``vrrp-notify.fifo``, keepalived's ``vrrp_notify_fifo``) and ``vrrp.state`` (the state it last
reported). State changes come through the FIFO, in keepalived's order: a ``notify`` script runs
once per change, concurrently with the others, and under load an earlier one (BACKUP at start)
could finish after a later one (MASTER) and leave the older state written last.

A SIGKILLed keepalived cannot drop its VIP (measured: the VIP stays on the dead master), so
every start first removes the VIPs of the new and of the previous config from the interface.
A running keepalived whose config changes is reloaded (SIGHUP): the VIP stays where it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Final

from libs.common.agent_contract import VrrpState, VrrpStatus
from libs.common.errors import Conflict, InfrastructureError, ValidationFailed
from libs.common.private_files import write_private_file
from services.amphora.adapters.daemon_process import DaemonLog, pid_alive, run_tool
from services.amphora.adapters.vip import VipInterface

logger = logging.getLogger(__name__)

_POLL: Final = 0.02
_STOP_TIMEOUT: Final = 5.0
_LOG_TAIL: Final = 4000

_CHECK_SCRIPT: Final = """#!/bin/sh
# keepalived's track_script: succeeds while HAProxy's serving process lives (not a zombie), and
# while no pid file says one should (the config takes no connections: HAProxy is not run).
pid=$(cat '{pid_file}' 2>/dev/null) || exit 0
[ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || exit 1
set -- $(cat "/proc/$pid/stat" 2>/dev/null)
[ -n "$3" ] && [ "$3" != Z ]
"""

_NOTIFY_SCRIPT: Final = """#!/bin/sh
# keepalived's vrrp_notify_fifo_script, started once by keepalived with its FIFO as the last
# argument: each line is INSTANCE|GROUP, the quoted name, an event, the priority. The events
# MASTER, BACKUP, FAULT and STOP are states; others (MASTER_RX_LOWER_PRI) are not.
# One reader, in keepalived's order: the state file holds the instance's latest state.
for fifo; do :; done
while read -r kind name event priority; do
    [ "$kind" = INSTANCE ] || continue
    case "$event" in
        MASTER|BACKUP|FAULT|STOP)
            printf '%s\\n' "$event" > '{state_file}.'$$
            mv -f '{state_file}.'$$ '{state_file}' ;;
    esac
done < "$fifo"
"""


class VrrpConfigRejected(ValidationFailed):
    """keepalived refused a configuration (``keepalived -t``); the previous one stays."""

    code = "config_rejected"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class KeepalivedVrrp:
    """One keepalived (``--vrrp``) per amphora, started by the first pushed config."""

    def __init__(
        self,
        binary: Path,
        state_dir: Path,
        interface: VipInterface,
        haproxy_pid_file: Path,
        *,
        settle_timeout: float = 5.0,
    ) -> None:
        self.binary = binary
        self.state_dir = state_dir
        self.interface = interface
        self.haproxy_pid_file = haproxy_pid_file
        self.settle_timeout = settle_timeout
        self.config_path = state_dir / "keepalived.conf"
        self.check_script = state_dir / "vrrp-check.sh"
        self.notify_script = state_dir / "vrrp-notify.sh"
        self.notify_fifo = state_dir / "vrrp-notify.fifo"
        self._vips_file = state_dir / "keepalived.vips"
        self._state_file = state_dir / "vrrp.state"
        self._pid_file = state_dir / "keepalived.pid"
        self._vrrp_pid_file = state_dir / "keepalived-vrrp.pid"
        self._checkers_pid_file = state_dir / "keepalived-checkers.pid"
        self._log = DaemonLog(state_dir / "keepalived.log", _LOG_TAIL)
        self._lock = asyncio.Lock()
        self._child: asyncio.subprocess.Process | None = None
        self._pid: int | None = None

    async def prepare(self) -> None:
        """Write the check and notify scripts; adopt a keepalived a previous agent started."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        check = _CHECK_SCRIPT.format(pid_file=self.haproxy_pid_file)
        notify = _NOTIFY_SCRIPT.format(state_file=self._state_file)
        write_private_file(self.check_script, check.encode(), mode=0o755)
        write_private_file(self.notify_script, notify.encode(), mode=0o755)
        if not self.notify_fifo.is_fifo():
            self.notify_fifo.unlink(missing_ok=True)
            os.mkfifo(self.notify_fifo, 0o600)
        pid = _read_pid(self._pid_file)
        if pid is not None and pid_alive(pid) and self._is_ours(pid):
            self._pid = pid
            logger.info("adopted running keepalived pid=%d", pid)

    def _is_ours(self, pid: int) -> bool:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return any(b"keepalived" in a for a in argv[:1]) and str(self.config_path).encode() in argv

    def is_running(self) -> bool:
        if self._child is not None:
            return self._child.returncode is None
        return self._pid is not None and pid_alive(self._pid)

    def config_text(self) -> str | None:
        try:
            return self.config_path.read_text()
        except FileNotFoundError:
            return None

    def _vips(self) -> list[str]:
        try:
            value = json.loads(self._vips_file.read_text())
        except (OSError, ValueError):
            return []
        return [str(v) for v in value] if isinstance(value, list) else []

    def state(self) -> VrrpState:
        if not self.is_running():
            return VrrpState.STOPPED
        try:
            reported = self._state_file.read_text().strip()
        except FileNotFoundError:
            return VrrpState.INIT
        return VrrpState(reported) if reported in VrrpState.__members__ else VrrpState.INIT

    async def status(self) -> VrrpStatus:
        text = self.config_text()
        return VrrpStatus(
            interface=self.interface.name,
            running=self.is_running(),
            state=self.state(),
            config_sha256=hashlib.sha256(text.encode()).hexdigest() if text else None,
            check_script=str(self.check_script),
            notify_script=str(self.notify_script),
            notify_fifo=str(self.notify_fifo),
            addresses=await self.interface.host_addresses(),
        )

    async def plug_vip(self, address: str) -> None:
        """Hold a VIP without VRRP (SINGLE); refused while keepalived owns the VIPs."""
        async with self._lock:
            if self.is_running():
                raise Conflict("keepalived runs on this amphora: its VIPs move with VRRP")
            await self.interface.plug(address)

    async def unplug_vip(self, address: str) -> None:
        async with self._lock:
            if self.is_running() and address in self._vips():
                raise Conflict("keepalived runs on this amphora: its VIPs move with VRRP")
            await self.interface.unplug(address)

    async def apply(self, text: str, vips: list[str]) -> None:
        """Install ``text`` and run it: reload a running keepalived, else clear the VIPs and
        start one, then wait (bounded) until it reports a state. Same text running: no-op.

        Raises VrrpConfigRejected (with keepalived's output) when ``keepalived -t`` fails,
        InfrastructureError when keepalived does not stay up."""
        async with self._lock:
            if text == self.config_text() and self.is_running():
                return
            candidate = self.config_path.with_suffix(".conf.new")
            candidate.write_text(text)
            output, status = await run_tool(
                self.state_dir, str(self.binary), "-t", "-f", str(candidate)
            )
            if status != 0:
                os.replace(candidate, self.config_path.with_suffix(".conf.failed"))
                raise VrrpConfigRejected("keepalived rejected the configuration", detail=output)
            previous_vips = self._vips()
            os.replace(candidate, self.config_path)
            self._vips_file.write_text(json.dumps(sorted(set(vips))))
            if self.is_running():
                self._signal(signal.SIGHUP)
                logger.info("keepalived reloaded")
                return
            for address in sorted(set(vips) | set(previous_vips)):
                await self.interface.unplug(address)
            await self._start()

    async def _start(self) -> None:
        self._state_file.unlink(missing_ok=True)
        for stale in (self._pid_file, self._vrrp_pid_file, self._checkers_pid_file):
            stale.unlink(missing_ok=True)
        offset = self._log.offset()
        self._child = await self._log.spawn(
            self.state_dir,
            str(self.binary),
            "--vrrp",
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
            "--use-file",
            str(self.config_path),
            "--pid",
            str(self._pid_file),
            "--vrrp_pid",
            str(self._vrrp_pid_file),
            "--checkers_pid",
            str(self._checkers_pid_file),
        )
        self._pid = self._child.pid
        deadline = time.monotonic() + self.settle_timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                raise InfrastructureError(
                    f"keepalived exited at start: {self._log.since(offset) or 'no output'}"
                )
            if self.state() not in (VrrpState.INIT, VrrpState.STOPPED):
                break
            await asyncio.sleep(_POLL)
        logger.info("keepalived pid=%d started, state %s", self._pid, self.state())

    def _signal(self, signum: int) -> None:
        if self._child is not None and self._child.returncode is None:
            self._child.send_signal(signum)
        elif self._pid is not None and pid_alive(self._pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signum)

    async def stop(self) -> None:
        """Stop keepalived (it drops its VIPs; any left are removed) and forget its config."""
        async with self._lock:
            await self._stop_process()
            for address in self._vips():
                with contextlib.suppress(InfrastructureError):
                    await self.interface.unplug(address)
            for path in (self.config_path, self._vips_file, self._state_file):
                path.unlink(missing_ok=True)

    async def shutdown(self) -> None:
        """The agent stops: stop keepalived, keep its config (a restarted agent is told again)."""
        async with self._lock:
            await self._stop_process()

    async def _stop_process(self) -> None:
        if not self.is_running():
            self._child, self._pid = None, None
            return
        child, pid = self._child, self._pid
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT
        while time.monotonic() < deadline:
            if not self.is_running():
                break
            await asyncio.sleep(_POLL)
        if self.is_running():
            for target in (pid, _read_pid(self._vrrp_pid_file)):
                if target is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(target, signal.SIGKILL)
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                await asyncio.wait_for(child.wait(), _STOP_TIMEOUT)
        self._child, self._pid = None, None
        logger.info("keepalived pid=%s stopped", pid)
