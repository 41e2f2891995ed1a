"""What the agent's two daemons (HAProxy, keepalived) share: how they are started, watched,
and how their tools are run.

A daemon runs in a session of its own (signals meant for the agent's process group never reach
it) with stdout and stderr appended to its log file; ``DaemonLog`` reads back what it wrote
since a point, so a failed start or reload reports the daemon's own words.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` (its ``/proc`` stat), or None when ``pid`` is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[-1].split()[1])


async def run_tool(cwd: Path, *argv: str) -> tuple[str, int]:
    """Run a short command to its end: (stdout and stderr stripped, exit status)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return output.decode(errors="replace").strip(), process.returncode or 0


@dataclass(frozen=True)
class DaemonLog:
    """A daemon's log file, read back from an offset; at most ``tail_chars`` are returned."""

    path: Path
    tail_chars: int

    def offset(self) -> int:
        """The current end of the log (0 when there is none yet)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def since(self, offset: int) -> str:
        """The last ``tail_chars`` written after ``offset``, stripped ("" without a log)."""
        try:
            with open(self.path, "rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return text[-self.tail_chars :].strip()

    async def spawn(self, cwd: Path, *argv: str) -> asyncio.subprocess.Process:
        """Start a daemon in its own session with its output appended to this log."""
        log = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            return await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            os.close(log)
