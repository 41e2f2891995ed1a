"""The docker driver against a real engine: containers, labels, networks, the agent over mTLS,
and HTTP from the host through the VIP to backend containers."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from ipaddress import ip_address, ip_network
from typing import Any

import docker
import docker.errors
import pytest

from libs.common.errors import InfrastructureError
from services.provisioner.drivers import AmphoraHandle, AmphoraSpec
from services.provisioner.drivers.docker import (
    LABEL_AMPHORA,
    LABEL_LB,
    LABEL_ROLE,
    DockerAmphoraDriver,
    container_name,
)
from tests.integration.docker.conftest import (
    MGMT_NETWORK,
    VIP_NETWORK,
    Pki,
    backend_containers,
    driver_settings,
    vip,
    wait_http,
)

pytestmark = pytest.mark.docker


def spec(vip_address: str | None = None, lb_id: str | None = None) -> AmphoraSpec:
    return AmphoraSpec(
        amphora_id=str(uuid.uuid4()),
        lb_id=lb_id or str(uuid.uuid4()),
        vip_address=vip_address or vip(10),
    )


def haproxy_config(stats_socket: str, vip: str, servers: list[tuple[str, int]]) -> str:
    lines = [
        "global",
        f"    stats socket {stats_socket} mode 600 level admin",
        "    maxconn 1000",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 10s",
        "    timeout server 10s",
        "    option idle-close-on-response",
        "frontend web",
        f"    bind {vip}:80",
        "    default_backend members",
        "backend members",
        "    balance roundrobin",
    ]
    lines += [f"    server m{i} {host}:{port}" for i, (host, port) in enumerate(servers)]
    return "\n".join(lines) + "\n"


async def test_ensure_list_delete(
    driver: DockerAmphoraDriver, clean_engine: docker.DockerClient, pki: Pki
) -> None:
    wanted = spec()
    handle = await driver.ensure(wanted)

    container = clean_engine.containers.get(container_name(wanted.amphora_id))
    assert container.status == "running"
    assert container.labels[LABEL_AMPHORA] == wanted.amphora_id
    assert container.labels[LABEL_LB] == wanted.lb_id
    assert container.labels[LABEL_ROLE] == "STANDALONE"
    assert "NET_ADMIN" in container.attrs["HostConfig"]["CapAdd"]
    networks = container.attrs["NetworkSettings"]["Networks"]
    own = networks[VIP_NETWORK.name]["IPAddress"]  # from docker's range, not the VIP
    assert handle.lb_network_ip == own and ip_address(own) in ip_network(VIP_NETWORK.ip_range or "")
    assert handle.agent_url == f"https://{networks[MGMT_NETWORK.name]['IPAddress']}:9443"
    assert "FULCRUM_AMPHORA_VIP_INTERFACE=eth1" in container.attrs["Config"]["Env"]
    assert handle.compute_id == container.id and handle.driver == "docker"
    assert handle.cert_expiration is not None
    assert await driver.list() == [handle]

    async with pki.agent(handle) as agent:  # mutual TLS, amphora id checked
        info = await agent.info()
    assert info.amphora_id == wanted.amphora_id and info.lb_id == wanted.lb_id

    await driver.delete(wanted.amphora_id)
    assert await driver.list() == []
    with pytest.raises(docker.errors.NotFound):
        clean_engine.containers.get(container_name(wanted.amphora_id))
    await driver.delete(wanted.amphora_id)  # already gone: fine


async def test_ensure_twice_is_one_container(
    driver: DockerAmphoraDriver, clean_engine: docker.DockerClient
) -> None:
    wanted = spec()
    first = await driver.ensure(wanted)
    second = await driver.ensure(wanted)
    assert first == second
    named = clean_engine.containers.list(
        all=True, filters={"name": container_name(wanted.amphora_id)}
    )
    assert len(named) == 1


async def test_prepare_networks_makes_them_before_any_amphora(
    driver: DockerAmphoraDriver, clean_engine: docker.DockerClient
) -> None:
    await driver.prepare_networks()
    await driver.prepare_networks()  # there already: nothing to do
    for network, internal in ((MGMT_NETWORK, True), (VIP_NETWORK, False)):
        found = clean_engine.networks.get(network.name)
        assert found.attrs["Internal"] is internal
        assert [c["Subnet"] for c in found.attrs["IPAM"]["Config"]] == [network.subnet]
    assert await driver.list() == []


async def test_same_name_with_another_spec_is_refused(driver: DockerAmphoraDriver) -> None:
    wanted = spec()
    await driver.ensure(wanted)
    other = AmphoraSpec(wanted.amphora_id, "another-lb", vip_address=vip(10))
    with pytest.raises(InfrastructureError, match="another spec"):
        await driver.ensure(other)


async def test_a_stopped_container_is_replaced(
    driver: DockerAmphoraDriver, clean_engine: docker.DockerClient
) -> None:
    wanted = spec()
    first = await driver.ensure(wanted)
    clean_engine.containers.get(first.compute_id).kill()
    assert await driver.list() == []  # killed: not running
    second = await driver.ensure(wanted)
    assert second.compute_id != first.compute_id
    assert await driver.list() == [second]


async def test_unreachable_engine_is_an_infrastructure_error(pki: Pki) -> None:
    settings = driver_settings("unix:///nonexistent/fulcrum/docker.sock")
    unreachable = DockerAmphoraDriver(settings, pki.ca)
    try:
        with pytest.raises(InfrastructureError, match="unreachable"):
            await unreachable.ensure(spec())
        with pytest.raises(InfrastructureError, match="unreachable"):
            await unreachable.list()
        with pytest.raises(InfrastructureError, match="unreachable"):
            await unreachable.delete(str(uuid.uuid4()))
    finally:
        await unreachable.close()


async def test_missing_image_leaves_nothing_behind(
    docker_host: str, clean_engine: docker.DockerClient, pki: Pki
) -> None:
    settings = driver_settings(docker_host, image="fulcrum/no-such-image:latest")
    missing = DockerAmphoraDriver(settings, pki.ca)
    wanted = spec()
    try:
        with pytest.raises(InfrastructureError, match="make images"):
            await missing.ensure(wanted)
    finally:
        await missing.close()
    assert clean_engine.containers.list(all=True, filters={"name": wanted.amphora_id}) == []


async def test_an_agent_that_cannot_start_is_removed_with_its_log(
    docker_host: str, clean_engine: docker.DockerClient, pki: Pki
) -> None:
    broken = DockerAmphoraDriver(
        driver_settings(docker_host),
        pki.ca,
        agent_env={"FULCRUM_AMPHORA_RELOAD_TIMEOUT": "-1"},  # refused by the agent's settings
        boot_timeout=20,
    )
    wanted = spec()
    try:
        with pytest.raises(InfrastructureError, match="stopped") as failure:
            await broken.ensure(wanted)
    finally:
        await broken.close()
    assert "reload_timeout" in str(failure.value)  # the agent's own log line
    assert clean_engine.containers.list(all=True, filters={"name": wanted.amphora_id}) == []


async def serve_vip(pki: Pki, handle: AmphoraHandle, vip: str, backends: list[Any]) -> None:
    """What the configurator does for SINGLE: plug the VIP, then push the HAProxy config."""
    async with pki.agent(handle) as agent:
        info = await agent.info()
        await agent.plug_vip(vip)
        servers = [(b.address, b.port) for b in backends]
        await agent.apply_config(haproxy_config(info.stats_socket, vip, servers))


async def names_through(vip: str, count: int) -> Counter[str]:
    await asyncio.to_thread(wait_http, f"http://{vip}/", 10)
    return Counter([await asyncio.to_thread(wait_http, f"http://{vip}/", 5) for _ in range(count)])


async def test_http_through_the_vip_and_a_replacement_after_a_kill(
    driver: DockerAmphoraDriver, clean_engine: docker.DockerClient, pki: Pki
) -> None:
    address = vip(12)
    old = spec(vip_address=address)
    first = await driver.ensure(old)
    with backend_containers(["be0", "be1"], VIP_NETWORK.name) as backends:
        await serve_vip(pki, first, address, backends)
        assert await names_through(address, 10) == Counter({"be0": 5, "be1": 5})

        # The amphora dies; its replacement announces the VIP (gratuitous ARP) and serves.
        clean_engine.containers.get(first.compute_id).kill()
        new = spec(vip_address=address, lb_id=old.lb_id)
        second = await driver.ensure(new)
        await serve_vip(pki, second, address, backends)
        assert await names_through(address, 10) == Counter({"be0": 5, "be1": 5})
    await driver.delete(old.amphora_id)
    assert [h.amphora_id for h in await driver.list()] == [new.amphora_id]
