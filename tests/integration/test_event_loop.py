"""Each service, started as its own process (``python -m services.<name>``), runs on the event
loop libs/common/event_loop.py chooses for it, named in its log: uvloop for health, asyncio's
selector loop for the others (uvloop measured no gain there, and it forks subprocesses at a
cost that grows with the parent's heap, which the provisioner and the agent start).

The control-plane services are given a Postgres and a NATS nobody serves (127.0.0.1:1): they
fail at start, after their loop exists. The agent is given certificates that never come and
gives up waiting for them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

UVLOOP = "event loop: uvloop.Loop"
SELECTOR = "event loop: asyncio.unix_events._UnixSelectorEventLoop"


def started_output(module: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", module],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0  # nothing it needs answers: it must not keep running
    return done.stdout + done.stderr


@pytest.mark.parametrize(
    ("service", "loop"),
    [("api", SELECTOR), ("health", UVLOOP), ("housekeeping", SELECTOR), ("provisioner", SELECTOR)],
)
def test_a_control_plane_service_runs_on_its_loop(service: str, loop: str) -> None:
    prefix = f"FULCRUM_{service.upper()}_"
    output = started_output(
        f"services.{service}",
        {
            f"{prefix}POSTGRES__DSN": "postgresql://postgres@127.0.0.1:1/postgres",
            f"{prefix}NATS__URL": "nats://127.0.0.1:1",
            f"{prefix}PORT": "0",
            f"{prefix}LOG_LEVEL": "DEBUG",
            "FULCRUM_API_AUTH_STRATEGY": "noauth",
            "FULCRUM_HEARTBEAT_KEY": "a-key-for-this-test",
        },
    )
    assert loop in output, output[-2000:]


def test_the_amphora_agent_runs_on_the_selector_loop(tmp_path: Path) -> None:
    output = started_output(
        "services.amphora",
        {
            "FULCRUM_AMPHORA_AMPHORA_ID": "amp-1",
            "FULCRUM_AMPHORA_LB_ID": "lb-1",
            "FULCRUM_AMPHORA_STATE_DIR": str(tmp_path),
            "FULCRUM_AMPHORA_BIND_PORT": "0",
            "FULCRUM_AMPHORA_LOG_LEVEL": "DEBUG",
            "FULCRUM_AMPHORA_CA_CERT": str(tmp_path / "ca.pem"),
            "FULCRUM_AMPHORA_SERVER_CERT": str(tmp_path / "server.pem"),
            "FULCRUM_AMPHORA_SERVER_KEY": str(tmp_path / "server.key"),
            "FULCRUM_AMPHORA_CERT_WAIT": "0.5",
        },
    )
    assert SELECTOR in output, output[-2000:]
