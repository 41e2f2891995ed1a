"""CPU caps for amphorae in the netns tests and benches: a cgroup per amphora limited to
``quota`` microseconds of CPU per ``period`` (cgroup v2 ``cpu.max`` where the cpu controller
is on the unified hierarchy, otherwise the same CFS bandwidth limit through cgroup v1
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), and the HAProxy processes of a namespace put
in one. Needs root."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")


class NoCpuCgroup(RuntimeError):
    """Neither cgroup v2 with the cpu controller nor the cgroup v1 cpu hierarchy is mounted."""


@dataclass(frozen=True)
class CpuCap:
    """A CPU cgroup: processes written to ``procs`` get ``quota`` us of CPU per ``period``."""

    directory: Path
    procs: Path


def cpu_cgroup(name: str, quota: int, period: int) -> CpuCap:
    """A fresh cgroup limited to quota/period of one CPU (v2 ``cpu.max``, else v1 CFS)."""
    controllers = CGROUP_ROOT / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        (CGROUP_ROOT / "cgroup.subtree_control").write_text("+cpu")
        directory = CGROUP_ROOT / name
        directory.mkdir()
        (directory / "cpu.max").write_text(f"{quota} {period}")
        return CpuCap(directory, directory / "cgroup.procs")
    v1 = CGROUP_ROOT / "cpu"
    if not (v1 / "cpu.cfs_quota_us").exists():
        raise NoCpuCgroup(
            f"no CPU cgroup: neither cgroup v2 with the cpu controller at {CGROUP_ROOT} nor "
            f"the cgroup v1 cpu hierarchy at {v1} is mounted"
        )
    directory = v1 / name
    directory.mkdir()
    (directory / "cpu.cfs_period_us").write_text(str(period))
    (directory / "cpu.cfs_quota_us").write_text(str(quota))
    return CpuCap(directory, directory / "cgroup.procs")


def remove_cgroup(cap: CpuCap) -> bool:
    """rmdir once its processes are gone (bounded); whether it is gone."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            cap.directory.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            time.sleep(0.1)
    return False


def cap_haproxy(namespace: str, cap: CpuCap) -> int:
    """Put every HAProxy process of ``namespace`` in ``cap`` (the agent stays uncapped: it
    boots and configures at full speed); how many there are."""
    out = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    capped = 0
    for pid in out.stdout.split():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "haproxy":
                continue
            cap.procs.write_text(pid)
        except OSError:  # gone meanwhile
            continue
        capped += 1
    return capped
