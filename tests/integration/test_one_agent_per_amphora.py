"""One agent per amphora: a second agent started for the same amphora exits at once.

A boot retried after a killed provisioner may start an agent for an amphora whose first agent
did start; the second must not run beside it (it would heartbeat and serve as a duplicate).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def agent(state_dir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FULCRUM_AMPHORA_AMPHORA_ID": "amp-1",
        "FULCRUM_AMPHORA_LB_ID": "lb-1",
        "FULCRUM_AMPHORA_STATE_DIR": str(state_dir),
        "FULCRUM_AMPHORA_BIND_PORT": "0",
        # The certificates never come: the first agent waits for them, holding the lock.
        "FULCRUM_AMPHORA_CA_CERT": str(state_dir / "ca.pem"),
        "FULCRUM_AMPHORA_SERVER_CERT": str(state_dir / "server.pem"),
        "FULCRUM_AMPHORA_SERVER_KEY": str(state_dir / "server.key"),
        "FULCRUM_AMPHORA_CERT_WAIT": "60",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.amphora"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_a_second_agent_for_the_same_amphora_exits(tmp_path: Path) -> None:
    first = agent(tmp_path)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "agent.pid").exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        assert int((tmp_path / "agent.pid").read_text()) == first.pid
        second = agent(tmp_path)
        out, _ = second.communicate(timeout=20)
        assert second.returncode == 3
        assert b"another agent already serves amphora amp-1" in out
        assert first.poll() is None
        assert int((tmp_path / "agent.pid").read_text()) == first.pid
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        if first.stdout is not None:
            first.stdout.close()
