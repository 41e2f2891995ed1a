"""The provisioner with the docker driver: LB create, failover and delete through real
containers, the real renderer and agent, and HTTP from the host through the VIP.

LBs are created through the LoadBalancerRepository (as the API does); the relay inside the
provisioner carries the events to its own consumers.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import docker
import pytest
from aiohttp import web

from libs.common.domain import commands as c
from libs.common.domain.model import LoadBalancerState
from libs.common.events import Metadata
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from libs.common.settings import NatsSettings, PostgresSettings, RelaySettings
from services.provisioner.app import DRIVER, create_app
from services.provisioner.drivers.docker import container_name
from services.provisioner.settings import ProvisionerSettings
from tests import builders as b
from tests.integration.docker.conftest import (
    MGMT_NETWORK,
    VIP_NETWORK,
    BackendContainer,
    backend_containers,
    create_test_networks,
    driver_settings,
    wait_http,
)

pytestmark = pytest.mark.docker
META = Metadata(actor="test", project_id=b.PROJECT)
VIP = "198.18.66.20"


@pytest.fixture
async def docker_provisioner(
    pg_dsn: str,
    nats_url: str,
    tmp_path: Path,
    docker_host: str,
    clean_engine: docker.DockerClient,
) -> AsyncIterator[web.Application]:
    """The provisioner app in this process, driver docker; its amphorae removed afterwards."""
    create_test_networks(clean_engine)
    settings = ProvisionerSettings(
        postgres=PostgresSettings(dsn=pg_dsn),
        nats=NatsSettings(url=nats_url, ack_wait=20.0),
        relay=RelaySettings(poll_interval=0.5),
        port=0,
        driver="docker",
        state_dir=tmp_path / "amphorae",
        ca_dir=tmp_path / "ca",
        docker=driver_settings(docker_host),
    )
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield app
    finally:
        driver = app[DRIVER]
        for handle in await driver.list():
            await driver.delete(handle.amphora_id)
        await runner.cleanup()


async def wait_status(
    repo: LoadBalancerRepository, lb_id: str, wanted: str, timeout: float = 60
) -> LoadBalancerState:
    deadline = time.monotonic() + timeout
    while True:
        state = await repo.load(lb_id)
        lb = state.loadbalancer
        if lb is not None and lb.provisioning_status.value == wanted:
            return state
        if time.monotonic() > deadline:
            status = lb.provisioning_status.value if lb else None
            reason = lb.provisioning_error if lb else ""
            raise AssertionError(f"LB is {status} ({reason}), wanted {wanted}")
        await asyncio.sleep(0.05)


async def names_through_vip(count: int) -> Counter[str]:
    return Counter([await asyncio.to_thread(wait_http, f"http://{VIP}/", 5) for _ in range(count)])


def http_lb(backends: list[BackendContainer]) -> c.CreateLoadBalancer:
    lb = b.loadbalancer(VIP)
    pool = b.pool(lb)
    listener = b.listener(lb, 80, default_pool_id=pool.id)
    members = tuple(b.member(pool, be.port, address=be.address) for be in backends)
    return c.CreateLoadBalancer(lb, listeners=(listener,), pools=(pool,), members=members)


async def test_create_failover_delete_with_containers(
    docker_provisioner: web.Application,
    db: asyncpg.Pool,
    clean_engine: docker.DockerClient,
) -> None:
    repo = LoadBalancerRepository(PostgresEventStore(db))
    driver = docker_provisioner[DRIVER]
    with backend_containers(["be0", "be1"], VIP_NETWORK.name) as backends:
        command = http_lb(backends)
        lb_id = command.loadbalancer.id
        started = time.monotonic()
        await repo.execute(lb_id, command, META)
        state = await wait_status(repo, lb_id, "ACTIVE")
        print(f"POST -> ACTIVE with the docker driver: {time.monotonic() - started:.2f} s")
        (first,) = state.amphora_ids
        container = clean_engine.containers.get(container_name(first))
        networks = container.attrs["NetworkSettings"]["Networks"]
        assert networks[VIP_NETWORK.name]["IPAddress"] == VIP
        assert MGMT_NETWORK.name in networks
        assert await names_through_vip(10) == Counter({"be0": 5, "be1": 5})

        # The amphora's container dies: failover builds a new one on the same VIP.
        container.kill()
        await repo.execute(lb_id, c.FailoverLoadBalancer(first, reason="test kill"), META)
        deadline = time.monotonic() + 60
        while (state := await wait_status(repo, lb_id, "ACTIVE")).amphora_ids == (first,):
            assert time.monotonic() < deadline, "no failover"
            await asyncio.sleep(0.1)
        (second,) = state.amphora_ids
        assert second != first
        assert await names_through_vip(10) == Counter({"be0": 5, "be1": 5})
        assert [h.amphora_id for h in await driver.list()] == [second]
        running = clean_engine.containers.list(all=True, filters={"name": container_name(first)})
        assert running == []  # the failed amphora's container is removed

        await repo.execute(lb_id, c.DeleteLoadBalancer(cascade=True), META)
        await wait_status(repo, lb_id, "DELETED")
    assert await driver.list() == []
