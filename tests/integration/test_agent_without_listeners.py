"""An amphora agent whose configuration takes no connections runs no HAProxy (real agent, real
HAProxy, mutual TLS on loopback): readiness, stats, idempotence, validation, the start once a
listener exists, the stop once the last goes, and keepalived's track script in each state."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest

from services.amphora.adapters.keepalived import _CHECK_SCRIPT
from services.provisioner.adapters.agent_client import AgentRejected, AmphoraAgentClient
from tests.integration.test_amphora_agent import (
    VIP,
    Agent,
    agent_client,
    free_port,
    get_once,
    launch_agent,
    make_pki,
    pid_alive,
    shut_down,
)


def idle_config(stats_socket: str, extra: str = "") -> str:
    """Global and defaults only: what the provisioner renders for an LB without listeners."""
    return (
        "global\n"
        f"    stats socket {stats_socket} mode 600 level admin\n"
        "    hard-stop-after 5s\n"
        f"{extra}"
        "defaults\n"
        "    mode http\n"
        "    timeout connect 2s\n"
        "    timeout client 10s\n"
        "    timeout server 10s\n"
    )


def serving_config(stats_socket: str, port: int) -> str:
    return idle_config(stats_socket) + (
        f"frontend fe\n    bind {VIP}:{port}\n"
        "    http-request return status 200 content-type text/plain string up\n"
    )


def track_script(agent: Agent, directory: Path) -> Path:
    """keepalived's track script as the agent writes it, for this agent's HAProxy pid file."""
    script = directory / "vrrp-check.sh"
    script.write_text(_CHECK_SCRIPT.format(pid_file=agent.state_dir / "haproxy.pid"))
    script.chmod(0o755)
    return script


def tracked_ok(script: Path) -> bool:
    return subprocess.run([str(script)], timeout=10, check=False).returncode == 0


async def ready_detail(agent: Agent, tls: ssl.SSLContext) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{agent.url}/readyz", ssl=tls) as response,
    ):
        body = await response.json()
        return response.status, body["checks"]["haproxy"]["detail"]


def refuses(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((VIP, port)) != 0


async def haproxy_gone(pid: int) -> bool:
    for _ in range(100):
        if not pid_alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_haproxy_runs_only_while_the_config_takes_connections(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = ssl.create_default_context(cafile=str(pki.ca_cert))
    tls.check_hostname = False
    tls.load_cert_chain(pki.path("client.pem"), pki.path("client.key"))
    agent = launch_agent(pki, tmp_path / "amphora")
    script = track_script(agent, tmp_path)
    try:
        async with agent_client(pki, agent) as client:
            await _exercise(client, agent, tls, script)
    finally:
        shut_down(agent)


async def _exercise(
    client: AmphoraAgentClient, agent: Agent, tls: ssl.SSLContext, script: Path
) -> None:
    stats_socket = (await client.info()).stats_socket
    port = free_port(VIP)
    pid_file = agent.state_dir / "haproxy.pid"

    # No listener: installed and reported, but no HAProxy runs; ready, no stats, tracked OK.
    idle = idle_config(stats_socket)
    digest = await client.apply_config(idle)
    info = await client.info()
    assert (info.haproxy_running, info.config_sha256) == (False, digest)
    assert await client.get_config() == idle
    assert not pid_file.exists()
    assert await ready_detail(agent, tls) == (
        200,
        "the configuration has no proxy taking connections; HAProxy not needed",
    )
    assert await client.stats() == []
    assert tracked_ok(script)
    assert await client.apply_config(idle) == digest  # the same text again: a no-op
    assert not (await client.info()).haproxy_running

    # A config that does not pass `haproxy -c` is refused although nothing would load it.
    with pytest.raises(AgentRejected):
        await client.apply_config(idle_config(stats_socket, "    no-such-keyword 1\n"))
    assert await client.get_config() == idle

    # The first listener starts HAProxy; it serves, and the track script sees it live.
    await client.apply_config(serving_config(stats_socket, port))
    assert (await client.info()).haproxy_running
    assert await get_once(port) == "up"
    first_master = int(pid_file.read_text())
    assert tracked_ok(script)
    assert any(row.get("pxname") == "fe" for row in await client.stats())

    # The last listener gone: HAProxy stops, the VIP port closes, the agent stays ready.
    await client.apply_config(idle)
    assert await haproxy_gone(first_master)
    assert refuses(port)
    assert not pid_file.exists()
    info = await client.info()
    assert (info.haproxy_running, info.config_sha256) == (False, digest)
    assert (await ready_detail(agent, tls))[0] == 200
    assert tracked_ok(script)

    # With a listener again HAProxy runs; killed, the track script fails (keepalived's FAULT).
    await client.apply_config(serving_config(stats_socket, port))
    assert await get_once(port) == "up"
    master = int(pid_file.read_text())
    os.kill(master, signal.SIGKILL)
    assert await haproxy_gone(master)
    assert not tracked_ok(script)
