"""IPv6 VIPs in docker amphorae: a dual-stack VIP network (the test's IPv4 /24 plus a ULA /64
derived from it), an LB whose VIP is an IPv6 address of it, and HTTP from the host (the
network's IPv6 gateway) through that VIP to an IPv4 backend container."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import docker
import docker.types
import pytest
from aiohttp import web

from libs.common.domain import commands as c
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from services.provisioner.settings import DockerNetworkSettings
from tests import builders as b
from tests.integration.docker.conftest import (
    MGMT_NETWORK,
    VIP_NETWORK,
    backend_containers,
    create_test_network,
    driver_settings,
    wait_http,
)
from tests.integration.docker.test_docker_lifecycle import (
    META,
    running_provisioner,
    wait_status,
)

pytestmark = pytest.mark.docker

# fd00:c612:<the third octet of the reserved IPv4 /24>::/64: as private to this test process
# as the /24 it is derived from.
_V4 = ipaddress.ip_network(VIP_NETWORK.subnet)
_SUBNET6 = ipaddress.ip_network(f"fd00:c612:{_V4.network_address.packed[2]:x}::/64")
DUAL_STACK = DockerNetworkSettings(
    name=VIP_NETWORK.name,
    subnet=VIP_NETWORK.subnet,
    gateway=VIP_NETWORK.gateway,
    ip_range=VIP_NETWORK.ip_range,
    subnet6=str(_SUBNET6),
    gateway6=str(_SUBNET6[1]),
    ip_range6=str(list(_SUBNET6.subnets(new_prefix=80))[1]),  # the VIPs stay below it
)
VIP6 = str(_SUBNET6[0x20])


@pytest.fixture
async def dual_stack_provisioner(
    pg_dsn: str,
    nats_url: str,
    tmp_path: Path,
    docker_host: str,
    clean_engine: docker.DockerClient,
) -> AsyncIterator[web.Application]:
    """The provisioner on the docker driver with the test VIP network made dual stack (the
    driver creates it; ``clean_engine`` removes it afterwards)."""
    create_test_network(clean_engine, MGMT_NETWORK, internal=True)
    settings = driver_settings(docker_host, vip_networks=[DUAL_STACK])
    async with running_provisioner(pg_dsn, nats_url, tmp_path, docker_host, docker=settings) as app:
        yield app


async def test_an_ipv6_vip_serves_http_from_a_container(
    dual_stack_provisioner: web.Application, db: asyncpg.Pool, clean_engine: docker.DockerClient
) -> None:
    repo = LoadBalancerRepository(PostgresEventStore(db))
    lb = b.loadbalancer(VIP6)
    pool = b.pool(lb)
    listener = b.listener(lb, 80, default_pool_id=pool.id)
    command = c.CreateLoadBalancer(lb, listeners=(listener,), pools=(pool,))
    await repo.execute(lb.id, command, META)
    await wait_status(repo, lb.id, "ACTIVE")
    # The driver made the VIP network dual stack for the amphora; a backend joins it.
    (network,) = clean_engine.networks.list(names=[DUAL_STACK.name])
    assert network.attrs["EnableIPv6"] is True
    with backend_containers(["be6"], DUAL_STACK.name) as (backend,):
        member = b.member(pool, backend.port, address=backend.address)
        await repo.execute(lb.id, c.CreateChild(child=member), META)
        await wait_status(repo, lb.id, "ACTIVE")
        answer = await asyncio.to_thread(wait_http, f"http://[{VIP6}]/", 20)
        assert answer == "be6"
        await repo.execute(lb.id, c.DeleteLoadBalancer(cascade=True), META)
        await wait_status(repo, lb.id, "DELETED")
