"""The agent launcher the process and netns drivers share: an agent that cannot start is
reported at once with the tail of its log, not after the boot timeout; one that starts is
found running, through the zygote as without it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.common.errors import InfrastructureError
from libs.common.pki import DeploymentCA
from libs.common.private_files import write_private_file
from services.provisioner.drivers import AmphoraHandle
from services.provisioner.drivers.agent_launcher import (
    AgentLauncher,
    agent_environment,
    agent_pid,
    agent_port,
    stop_agent,
)

AMPHORA = "0000000a-0000-0000-0000-000000000001"


@pytest.fixture(params=[True, False], ids=["zygote", "plain"])
async def launcher(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AgentLauncher]:
    launcher = AgentLauncher(tmp_path / "state", boot_timeout=30.0, fast_spawn=request.param)
    await launcher.prepare()
    try:
        yield launcher
    finally:
        await launcher.close()


def running(directory: Path) -> AmphoraHandle | None:
    port = agent_port(directory)
    if agent_pid(directory) is None or port is None:
        return None
    return AmphoraHandle(AMPHORA, None, "test", "", f"https://127.0.0.1:{port}", "127.0.0.1")


async def test_an_agent_that_cannot_start_is_reported_at_once(
    launcher: AgentLauncher, tmp_path: Path
) -> None:
    directory = tmp_path / "state" / AMPHORA
    directory.mkdir(parents=True)
    env = agent_environment(AMPHORA, None, directory, tmp_path / "no-ca.pem", "127.0.0.1", 0)
    started = time.monotonic()
    with pytest.raises(InfrastructureError, match=f"amphora {AMPHORA} did not start"):
        await launcher.launch(AMPHORA, directory, env, lambda: running(directory))
    assert time.monotonic() - started < 15.0  # its death ends the wait, not the timeout


async def test_a_started_agent_is_found_running_and_stops(
    launcher: AgentLauncher, tmp_path: Path
) -> None:
    ca = DeploymentCA.load_or_create(tmp_path / "ca")
    directory = tmp_path / "state" / AMPHORA
    directory.mkdir(parents=True)
    issued = ca.issue_server_cert(AMPHORA, [AMPHORA, "127.0.0.1"], 1)
    write_private_file(directory / "server.pem", issued.cert_pem, mode=0o644)
    write_private_file(directory / "server.key", issued.key_pem)
    env = agent_environment(AMPHORA, None, directory, ca.cert_path, "127.0.0.1", 0)
    handle = await launcher.launch(AMPHORA, directory, env, lambda: running(directory))
    pid = agent_pid(directory)
    try:
        assert pid is not None and handle.agent_url.startswith("https://127.0.0.1:")
    finally:
        if pid is not None:
            assert await stop_agent(pid, 10.0)
    assert agent_pid(directory) is None
