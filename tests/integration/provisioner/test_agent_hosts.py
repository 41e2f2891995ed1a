"""Agent hosts (process driver, ``amphorae_per_process`` > 1): several amphorae in one Python
process, each serving through its own VIP with its own certificate, deleted alone, reported
gone with their host (their HAProxies serving until deleted), and found again by a restarted
driver. Real agents, HAProxy and TLS."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from libs.common.domain import commands as c
from libs.common.domain.decide import decide
from libs.common.domain.evolve import evolve
from libs.common.domain.model import LoadBalancerState
from libs.common.errors import InfrastructureError
from libs.common.pki import DeploymentCA
from libs.common.private_files import write_private_file
from services.provisioner.configurator import Configurator
from services.provisioner.drivers import AmphoraHandle, AmphoraSpec
from services.provisioner.drivers.agent_launcher import (
    AgentHosts,
    AgentLauncher,
    agent_environment,
    alive,
    ask_unix,
    host_socket,
)
from services.provisioner.drivers.process import ProcessAmphoraDriver
from tests import builders as b
from tests.integration.provisioner.conftest import Backend, free_port

PER_HOST = 2


@pytest.fixture
async def ca(tmp_path: Path) -> DeploymentCA:
    return DeploymentCA.load_or_create(tmp_path / "ca")


def hosted_driver(tmp_path: Path, ca: DeploymentCA) -> ProcessAmphoraDriver:
    return ProcessAmphoraDriver(tmp_path / "amphorae", ca, amphorae_per_process=PER_HOST)


@pytest.fixture
async def driver(tmp_path: Path, ca: DeploymentCA) -> AsyncIterator[ProcessAmphoraDriver]:
    driver = hosted_driver(tmp_path, ca)
    try:
        yield driver
    finally:
        for amphora_id in [h.amphora_id for h in await driver.list()] + list(
            await driver.leftovers()
        ):
            await driver.delete(amphora_id)
        await driver.close()


@pytest.fixture
async def configurator(tmp_path: Path, ca: DeploymentCA) -> AsyncIterator[Configurator]:
    configurator = Configurator(ca, tmp_path / "ca")
    try:
        yield configurator
    finally:
        await configurator.close()


def serving(vip: str, port: int, backend: Backend) -> LoadBalancerState:
    """A load balancer whose listener on ``vip:port`` sends everything to ``backend``."""
    lb = b.loadbalancer(vip)
    pool = b.pool(lb)
    command = c.CreateLoadBalancer(
        lb,
        listeners=(b.listener(lb, port, default_pool_id=pool.id),),
        pools=(pool,),
        members=(b.member(pool, backend.port),),
    )
    state = LoadBalancerState()
    for event in decide(command, state):
        state = evolve(state, event)
    return state


async def answer(vip: str, port: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{vip}:{port}/", timeout=aiohttp.ClientTimeout(total=5)) as resp,
    ):
        return await resp.text()


async def refused(vip: str, port: int) -> bool:
    try:
        await answer(vip, port)
    except aiohttp.ClientConnectionError:
        return True
    return False


async def presented_name(ca: DeploymentCA, tmp_path: Path, handle: AmphoraHandle) -> str:
    """The common name of the certificate the agent of ``handle`` presents."""
    cert, key = ca.issue_client_cert("test")
    write_private_file(tmp_path / "client.pem", cert)
    write_private_file(tmp_path / "client.key", key)
    context = ssl.create_default_context(cafile=str(ca.cert_path))
    context.load_cert_chain(tmp_path / "client.pem", tmp_path / "client.key")
    port = int(handle.agent_url.rsplit(":", 1)[1])
    # Verified against the CA and the amphora's id: its own certificate, no other.
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=handle.amphora_id
    )
    try:
        peer = writer.get_extra_info("peercert")
    finally:
        writer.close()
    return str(dict(field[0] for field in peer["subject"])["commonName"])


def haproxy_pid(driver_dir: Path, amphora_id: str) -> int:
    return int((driver_dir / amphora_id / "haproxy.pid").read_text())


async def gone(pid: int) -> bool:
    """Whether ``pid`` ends within 2 s (a killed orphan may wait for init to reap it)."""
    for _ in range(100):
        if not alive(pid):
            return True
        await asyncio.sleep(0.02)
    return False


async def test_amphorae_share_a_host_serve_on_their_own_and_are_deleted_alone(
    driver: ProcessAmphoraDriver,
    configurator: Configurator,
    ca: DeploymentCA,
    backends: list[Backend],
    tmp_path: Path,
) -> None:
    first, second, third = [
        await driver.ensure(AmphoraSpec(amphora_id=f"amp-{n}", lb_id=None)) for n in (1, 2, 3)
    ]
    assert first.compute_id == second.compute_id != third.compute_id  # two to a host
    lbs = [("127.77.3.10", free_port("127.77.3.10")), ("127.77.3.11", free_port("127.77.3.11"))]
    for (vip, port), handle, backend in zip(lbs, (first, second), backends[:2], strict=True):
        await configurator.push(serving(vip, port, backend), handle)
    assert [await answer(vip, port) for vip, port in lbs] == ["b0", "b1"]
    for handle in (first, second, third):
        assert await presented_name(ca, tmp_path, handle) == handle.amphora_id

    first_haproxy = haproxy_pid(tmp_path / "amphorae", "amp-1")
    await driver.delete("amp-1")
    assert not (tmp_path / "amphorae" / "amp-1").exists()
    assert await gone(first_haproxy)
    assert await refused(*lbs[0])
    assert await answer(*lbs[1]) == "b1"  # the other amphora of the host serves on
    assert [h.amphora_id for h in await driver.list()] == ["amp-2", "amp-3"]
    assert await driver.get("amp-2") == second

    # New amphorae go to the newest host with room, then to the room the deleted one left.
    fourth, fifth = [
        await driver.ensure(AmphoraSpec(amphora_id=f"amp-{n}", lb_id=None)) for n in (4, 5)
    ]
    assert (fourth.compute_id, fifth.compute_id) == (third.compute_id, second.compute_id)


async def test_concurrent_boots_fill_hosts_up_to_their_capacity(
    driver: ProcessAmphoraDriver,
) -> None:
    handles = await asyncio.gather(
        *(driver.ensure(AmphoraSpec(amphora_id=f"amp-{n}", lb_id=None)) for n in range(5))
    )
    per_host = Counter(h.compute_id for h in handles)
    assert sorted(per_host.values()) == [1, 2, 2]
    assert sorted(h.amphora_id for h in await driver.list()) == [f"amp-{n}" for n in range(5)]


async def test_a_full_host_says_so_without_reading_the_request_s_settings(
    driver: ProcessAmphoraDriver, tmp_path: Path
) -> None:
    """A placement asks every older host while the newest fills: a full one answers "full"
    at once, whatever the request's settings (reading them took ~1 ms of CPU)."""
    for n in (1, 2):
        await driver.ensure(AmphoraSpec(amphora_id=f"amp-{n}", lb_id=None))
    (host,) = (tmp_path / "amphorae" / ".hosts").iterdir()
    unreadable = {"FULCRUM_AMPHORA_AMPHORA_ID": "amp-3"}  # no certificate: settings refused
    reply = await ask_unix(host_socket(host), {"start": unreadable}, 5.0)
    assert reply["full"] is True, reply
    assert reply["error"] == "no room"


async def test_a_full_host_is_passed_by_until_it_has_room_again(
    driver: ProcessAmphoraDriver, tmp_path: Path
) -> None:
    """A placement does not ask a full host (while a new host starts, every placement asked
    every full one): the host marks itself full, and unmarks itself once it has room."""
    hosts = AgentHosts(tmp_path / "amphorae" / ".hosts", PER_HOST, unused_spawn, 5.0)
    await driver.ensure(AmphoraSpec(amphora_id="amp-1", lb_id=None))
    (host,) = (tmp_path / "amphorae" / ".hosts").iterdir()
    assert list(hosts.live_sockets()) == [host_socket(host)]

    await driver.ensure(AmphoraSpec(amphora_id="amp-2", lb_id=None))
    assert list(hosts.live_sockets()) == []

    await driver.delete("amp-1")
    assert list(hosts.live_sockets()) == [host_socket(host)]


async def unused_spawn(env: dict[str, str], log: Path) -> int:
    raise AssertionError("no host is started here")


async def two_serving_amphorae(
    driver: ProcessAmphoraDriver,
    configurator: Configurator,
    backends: list[Backend],
    vips: tuple[str, str],
) -> tuple[list[AmphoraHandle], list[tuple[str, int]]]:
    """amp-1 and amp-2 booted (in one host), each serving one of ``backends`` on a VIP of
    ``vips``; their handles and (VIP, port) pairs."""
    handles = [await driver.ensure(AmphoraSpec(amphora_id=f"amp-{n}", lb_id=None)) for n in (1, 2)]
    lbs = [(vip, free_port(vip)) for vip in vips]
    for (vip, port), handle, backend in zip(lbs, handles, backends[:2], strict=True):
        await configurator.push(serving(vip, port, backend), handle)
    return handles, lbs


async def test_a_killed_host_leaves_its_amphorae_gone_and_their_haproxies_serving(
    driver: ProcessAmphoraDriver,
    configurator: Configurator,
    backends: list[Backend],
    tmp_path: Path,
) -> None:
    handles, lbs = await two_serving_amphorae(
        driver, configurator, backends, ("127.77.3.12", "127.77.3.13")
    )
    haproxies = [haproxy_pid(tmp_path / "amphorae", h.amphora_id) for h in handles]

    host_socket = Path((tmp_path / "amphorae" / "amp-1" / "agent.host").read_text())
    os.kill(int(handles[0].compute_id), signal.SIGKILL)
    for _ in range(200):
        if not await driver.list():
            break
        await asyncio.sleep(0.02)
    assert await driver.list() == []
    assert await driver.get("amp-1") is None
    assert sorted(await driver.leftovers()) == ["amp-1", "amp-2"]
    running, left = await driver.list_with_leftovers()
    assert (list(running), sorted(left)) == ([], ["amp-1", "amp-2"])
    assert [await answer(vip, port) for vip, port in lbs] == ["b0", "b1"]

    for handle, pid in zip(handles, haproxies, strict=True):
        await driver.delete(handle.amphora_id)
        assert await gone(pid)
        assert not (tmp_path / "amphorae" / handle.amphora_id).exists()
    assert await driver.leftovers() == []
    host_socket.unlink()  # a killed host cannot remove its socket (here in the temp dir)


async def test_a_stuck_host_is_not_killed_for_one_delete(
    driver: ProcessAmphoraDriver,
    configurator: Configurator,
    backends: list[Backend],
    tmp_path: Path,
) -> None:
    """Its other amphorae would go with it: the deleted one's HAProxy is killed instead."""
    handles, lbs = await two_serving_amphorae(
        driver, configurator, backends, ("127.77.3.14", "127.77.3.15")
    )
    first_haproxy = haproxy_pid(tmp_path / "amphorae", "amp-1")
    host = int(handles[0].compute_id)
    os.kill(host, signal.SIGSTOP)
    try:
        await driver.delete("amp-1")  # waits out the stop timeout
    finally:
        os.kill(host, signal.SIGCONT)
    assert await gone(first_haproxy)
    assert not (tmp_path / "amphorae" / "amp-1").exists()
    assert alive(host)
    assert await answer(*lbs[1]) == "b1"
    assert await driver.list() == [handles[1]]


async def test_a_restarted_driver_finds_the_live_host_and_fills_it(
    driver: ProcessAmphoraDriver, ca: DeploymentCA, tmp_path: Path
) -> None:
    first = await driver.ensure(AmphoraSpec(amphora_id="amp-1", lb_id=None))
    await driver.close()
    restarted = hosted_driver(tmp_path, ca)
    try:
        assert await restarted.list() == [first]
        assert await restarted.ensure(AmphoraSpec(amphora_id="amp-1", lb_id=None)) == first
        second = await restarted.ensure(AmphoraSpec(amphora_id="amp-2", lb_id=None))
        assert second.compute_id == first.compute_id
    finally:
        await restarted.close()


async def test_a_host_refuses_an_amphora_another_agent_serves(
    ca: DeploymentCA, tmp_path: Path
) -> None:
    """One agent per amphora, hosts included: the lock is the amphora's, not the process's."""
    plain = ProcessAmphoraDriver(tmp_path / "amphorae", ca)  # an agent process per amphora
    launcher = AgentLauncher(tmp_path / "amphorae", amphorae_per_process=PER_HOST)
    try:
        handle = await plain.ensure(AmphoraSpec(amphora_id="amp-1", lb_id=None))
        directory = tmp_path / "amphorae" / "amp-1"
        env = agent_environment("amp-1", None, directory, ca.cert_path, "127.0.0.1", 0)
        with pytest.raises(InfrastructureError, match="another agent already serves amphora"):
            await launcher.launch("amp-1", directory, env, lambda: None)
        assert await plain.list() == [handle]
        # The host started for it has nothing to serve: it exits.
        host_pids = tmp_path / "amphorae" / ".hosts"
        for _ in range(250):
            if not list(host_pids.glob("*/host.pid")):
                break
            await asyncio.sleep(0.02)
        assert list(host_pids.glob("*/host.pid")) == []
    finally:
        await launcher.close()
        await plain.delete("amp-1")
        await plain.close()


def test_a_launcher_refuses_fewer_than_one_amphora_per_process(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="amphorae_per_process must be >= 1, not 0"):
        AgentLauncher(tmp_path, amphorae_per_process=0)
