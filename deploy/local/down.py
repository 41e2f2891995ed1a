"""``fulcrum down``: stop a local stack and its amphorae.

``down`` stops ``up`` (which stops supervisord, which stops the services before NATS and
Postgres); when ``up`` is gone it stops supervisord; when supervisord is gone too it stops the
parts it left, by the pids its event listener recorded. The amphorae go last, by the pids the
process driver wrote, and with them the network namespaces of the cluster's amphora hosts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from deploy.local.state import StackError, StackLayout, StackPaths, pid_alive, running
from deploy.local.supervision import read_restarts


def run_down(state_dir: str) -> int:
    """``fulcrum down``: stop the stack under ``state_dir`` (``up`` first, or its supervisord
    when ``up`` is gone) and the amphorae; 0 also when nothing was running."""
    paths = StackPaths(Path(state_dir).resolve())
    stopped = False
    for pid_file in (paths.state / "fulcrum.pid", paths.supervisor_pid):
        pid = pid_alive(pid_file)
        if pid is None:
            continue
        os.kill(pid, signal.SIGTERM)
        for _ in range(1200):  # up to 120 s
            if pid_alive(pid_file) != pid:
                break
            time.sleep(0.1)
        else:
            print(f"fulcrum down: pid {pid} ignored SIGTERM for 120 s; SIGKILL", file=sys.stderr)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        print(f"fulcrum down: stopped pid {pid} ({pid_file.name})")
        stopped = True
    stopped = _stop_orphaned_parts(paths) or stopped
    stopped = _stop_orphaned_postgres(paths) or stopped
    release_amphorae(paths)
    (paths.state / "ready").unlink(missing_ok=True)
    if not stopped:
        print(f"fulcrum down: nothing running under {paths.state}")
    return 0


def _stop_orphaned_parts(paths: StackPaths) -> bool:
    """Stop the parts a dead supervisord left running (their last pids, as its event listener
    recorded them, checked against each part's command line): services first, then the
    servers, each in reverse start order. True when there were any."""
    if pid_alive(paths.supervisor_pid) is not None:
        return False
    try:
        layout = StackLayout.load(paths.layout)
    except StackError:
        return False
    found = False
    counts = read_restarts(paths.restarts)
    for part in reversed(layout.parts):  # the servers come first in the layout
        pid = int(counts.get(part.name, {}).get("pid") or 0)
        try:
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes() if pid else b""
        except OSError:
            continue
        if part.marker.encode() not in command_line or not running(pid):
            continue
        found = True
        os.kill(pid, signal.Signals[f"SIG{part.stop_signal}"])
        for _ in range(300):  # up to 30 s
            if not running(pid):
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        print(f"fulcrum down: stopped {part.name} (pid {pid}), left by a dead supervisord")
    return found


def _stop_orphaned_postgres(paths: StackPaths) -> bool:
    """A cluster's Postgres members still running once their Patroni is gone (a Patroni killed
    hard leaves its Postgres running): killed. True when there were any."""
    try:
        cluster = StackLayout.load(paths.layout).kind == "cluster"
    except StackError:
        return False
    if not cluster or pid_alive(paths.supervisor_pid) is not None:
        return False
    from deploy.local.cluster import running_patroni

    patroni = running_patroni(paths)
    killed = False
    for name in patroni.member_names:
        pid = patroni.postmaster_pid(name)
        try:  # its own command line names its data dir: not a process that reused the pid
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes() if pid else b""
        except OSError:
            continue
        if pid is None or str(patroni.data_dir(name)).encode() not in command_line:
            continue
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        killed = True
        print(f"fulcrum down: stopped Postgres {name} (pid {pid}), left by a dead Patroni")
    return killed


def release_amphorae(paths: StackPaths) -> None:
    """Stop the stack's amphorae, and delete its amphora hosts' network namespaces."""
    stop_amphorae(paths.state)
    try:
        prefixes = StackLayout.load(paths.layout).netns_prefixes
    except StackError:
        return
    if prefixes:
        from deploy.local.cluster_hosts import remove_namespaces

        removed = remove_namespaces(prefixes)
        if removed:
            print(f"fulcrum down: deleted network namespaces {', '.join(removed)}")


def _names_a_zygote(pid_file: Path) -> bool:
    """Whether ``pid_file`` names a running zygote (not a pid reused since)."""
    try:
        command_line = Path(f"/proc/{int(pid_file.read_text())}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    return b"services.amphora.zygote" in command_line


def stop_amphorae(state: Path, timeout: float = 15.0) -> None:
    """Stop every amphora the process driver started under ``state``, and the zygotes (its
    own, and each amphora host's of a cluster, which a provisioner replica may have started
    while another stopped them): SIGTERM by pid (an agent stops its HAProxy), then SIGKILL of
    the session of any still running after ``timeout`` seconds."""
    pids = []
    amphorae = state / "amphorae"
    zygotes = [f for f in amphorae.glob("**/.zygote/zygote.pid") if _names_a_zygote(f)]
    for pid_file in [*amphorae.glob("*/agent.pid"), *zygotes]:
        try:
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            continue
        pids.append(pid)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if running(pid)]
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)  # agents lead their own session, HAProxy with them
