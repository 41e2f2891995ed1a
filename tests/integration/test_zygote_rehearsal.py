"""The zygote's rehearsal of an agent (services/amphora/rehearsal.py), in a fresh interpreter
as the zygote runs it: a real agent, real HAProxy, mutual TLS on loopback. Whether it
succeeds or fails, it leaves no thread, event loop, child process or file behind (the zygote
forks after it); a zygote whose rehearsal fails still forks agents."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from services.provisioner.drivers.agent_launcher import Zygote

_REHEARSE_THEN_CHECK = """
import asyncio, os, sys, threading
from services.amphora.rehearsal import rehearse
try:
    rehearse()
    outcome = "done"
except Exception as exc:
    outcome = f"failed: {exc!r}"
assert threading.active_count() == 1, threading.enumerate()
assert asyncio._get_running_loop() is None
try:
    os.waitpid(-1, os.WNOHANG)
    raise AssertionError("a child process is left")
except ChildProcessError:
    pass
print(outcome)
"""


def _rehearse(**env: str) -> str:
    # A short temp dir: HAProxy's sockets are made there when the state dir's path is long.
    with tempfile.TemporaryDirectory(prefix="rehearsal-test-", dir="/tmp") as name:
        return _rehearse_in(Path(name), env)


def _rehearse_in(temp: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _REHEARSE_THEN_CHECK],
        env={**os.environ, "TMPDIR": str(temp), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert list(temp.iterdir()) == []  # its state dir and socket dir are gone
    return done.stdout.strip()


def _broken_haproxy(tmp_path: Path) -> Path:
    """An HAProxy that fails every run, `-v` included: the rehearsed agent's start fails once
    it has run it (a child process) and written its check script."""
    script = tmp_path / "haproxy"
    script.write_text('#!/bin/sh\necho "[ALERT] broken"\nexit 1\n')
    script.chmod(0o755)
    return script


def test_a_rehearsal_leaves_nothing_behind() -> None:
    assert _rehearse() == "done"


def test_a_failed_rehearsal_leaves_nothing_behind_either(tmp_path: Path) -> None:
    outcome = _rehearse(FULCRUM_AMPHORA_HAPROXY_BIN=str(_broken_haproxy(tmp_path)))
    assert outcome.startswith("failed:") and "-v failed" in outcome


async def test_a_zygote_whose_rehearsal_failed_still_forks_agents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FULCRUM_AMPHORA_HAPROXY_BIN", str(_broken_haproxy(tmp_path)))
    zygote = Zygote(tmp_path / "state")
    try:
        forked = await zygote.spawn({}, tmp_path / "agent.log")  # no settings: it exits
        forked.close()
        assert forked.pid > 0
    finally:
        await zygote.stop()
    log = (tmp_path / "state" / ".zygote" / "zygote.log").read_text()
    assert "rehearsal of an agent failed" in log
