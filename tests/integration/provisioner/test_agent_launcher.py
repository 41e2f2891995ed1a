"""The agent launcher the process and netns drivers share: an agent that cannot start is
reported at once with the tail of its log, not after the boot timeout; one that starts is
found running, through the zygote as without it. An agent the zygote forks says on the
zygote's connection when it listens (its port file is written by then), and one that dies
first closes that connection. A stopped zygote is not started again, and a stop while one is
starting stops that one too: none outlives the driver."""

from __future__ import annotations

import asyncio
import shutil
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
    Zygote,
    agent_environment,
    agent_pid,
    agent_port,
    alive,
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


def identity(tmp_path: Path) -> tuple[Path, Path]:
    """The amphora's directory holding its server certificate and key, and the CA's cert."""
    ca = DeploymentCA.load_or_create(tmp_path / "ca")
    directory = tmp_path / "state" / AMPHORA
    directory.mkdir(parents=True)
    issued = ca.issue_server_cert(AMPHORA, [AMPHORA, "127.0.0.1"], 1)
    write_private_file(directory / "server.pem", issued.cert_pem, mode=0o644)
    write_private_file(directory / "server.key", issued.key_pem)
    return directory, ca.cert_path


async def test_a_forked_agent_says_when_it_listens_and_a_dying_one_hangs_up(
    tmp_path: Path,
) -> None:
    zygote = Zygote(tmp_path / "state")
    directory, ca_cert = identity(tmp_path)
    try:
        env = agent_environment(AMPHORA, None, directory, ca_cert, "127.0.0.1", 0)
        forked = await zygote.spawn(env, directory / "agent.log")
        try:
            started = time.monotonic()
            await forked.listening(30.0)
            assert time.monotonic() - started < 15.0
            assert agent_port(directory) is not None  # written before it said so
            assert agent_pid(directory) == forked.pid
        finally:
            assert await stop_agent(forked.pid, 10.0)
        broken = tmp_path / "broken"
        broken.mkdir()
        env = agent_environment("broken", None, broken, tmp_path / "no-ca.pem", "127.0.0.1", 0)
        dying = await zygote.spawn(env, broken / "agent.log")
        started = time.monotonic()
        await dying.listening(30.0)
        assert time.monotonic() - started < 15.0  # its end closed the connection
        assert agent_port(broken) is None
    finally:
        await zygote.stop()


async def test_no_zygote_outlives_a_stop_even_one_starting_meanwhile(tmp_path: Path) -> None:
    zygote = Zygote(tmp_path / "state")
    starting = asyncio.create_task(zygote.ensure_running())
    await asyncio.sleep(0.01)  # its process is started, its imports under way
    await zygote.stop()
    await starting
    pid = int((tmp_path / "state" / ".zygote" / "zygote.pid").read_text())
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not alive(pid)
    directory, ca_cert = identity(tmp_path)
    env = agent_environment(AMPHORA, None, directory, ca_cert, "127.0.0.1", 0)
    with pytest.raises(OSError, match="stopped"):
        await zygote.spawn(env, directory / "agent.log")
    assert not (tmp_path / "state" / ".zygote" / "zygote.sock").exists()


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
    directory, ca_cert = identity(tmp_path)
    env = agent_environment(AMPHORA, None, directory, ca_cert, "127.0.0.1", 0)
    handle = await launcher.launch(AMPHORA, directory, env, lambda: running(directory))
    pid = agent_pid(directory)
    try:
        assert pid is not None and handle.agent_url.startswith("https://127.0.0.1:")
    finally:
        if pid is not None:
            assert await stop_agent(pid, 10.0)
    assert agent_pid(directory) is None


async def test_an_agent_listens_with_no_thread_beside_its_event_loop(
    launcher: AgentLauncher, tmp_path: Path
) -> None:
    """An agent's start hands nothing to a thread (a thread of its own at every boot cost
    each cold amphora of a burst of creates its start and its pages)."""
    directory, ca_cert = identity(tmp_path)
    env = agent_environment(AMPHORA, None, directory, ca_cert, "127.0.0.1", 0)
    await launcher.launch(AMPHORA, directory, env, lambda: running(directory))
    pid = agent_pid(directory)
    assert pid is not None
    try:
        assert (directory / "ping-check.sh").exists() == (shutil.which("ping") is not None)
        assert [t.name for t in Path(f"/proc/{pid}/task").iterdir()] == [str(pid)]
    finally:
        assert await stop_agent(pid, 10.0)
