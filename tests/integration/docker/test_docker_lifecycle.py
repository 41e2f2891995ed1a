"""The provisioner with the docker driver: LB create, failover and delete through real
containers, the real renderer and agent, and HTTP from the host through the VIP.

LBs are created through the LoadBalancerRepository (as the API does); the relay inside the
provisioner carries the events to its own consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import docker
import pytest
from aiohttp import web
from docker.models.containers import Container

from libs.common.domain import commands as c
from libs.common.domain.model import LoadBalancerState
from libs.common.errors import InfrastructureError
from libs.common.events import Metadata
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from libs.common.settings import NatsSettings, PostgresSettings, RelaySettings
from services.provisioner.app import DRIVER, create_app
from services.provisioner.drivers.docker import VIP_INTERFACE, container_name
from services.provisioner.settings import ProvisionerSettings
from tests import builders as b
from tests.integration.docker.conftest import (
    MGMT_NETWORK,
    VIP_NETWORK,
    BackendContainer,
    backend_containers,
    create_test_networks,
    driver_settings,
    vip,
    wait_http,
)

pytestmark = pytest.mark.docker
META = Metadata(actor="test", project_id=b.PROJECT)
VIP = vip(20)


@contextlib.asynccontextmanager
async def running_provisioner(
    pg_dsn: str, nats_url: str, state: Path, docker_host: str, **overrides: Any
) -> AsyncIterator[web.Application]:
    """The provisioner app in this process, driver docker; its amphorae removed afterwards."""
    settings = ProvisionerSettings(
        postgres=PostgresSettings(dsn=pg_dsn),
        nats=NatsSettings(url=nats_url, ack_wait=20.0),
        relay=RelaySettings(poll_interval=0.5),
        port=0,
        driver="docker",
        state_dir=state / "amphorae",
        ca_dir=state / "ca",
        **({"docker": driver_settings(docker_host)} | overrides),
    )
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield app
    finally:
        driver = app[DRIVER]
        with contextlib.suppress(InfrastructureError):  # the engine may be the test's subject
            for handle in await driver.list():
                await driver.delete(handle.amphora_id)
        await runner.cleanup()


@pytest.fixture
async def docker_provisioner(
    pg_dsn: str,
    nats_url: str,
    tmp_path: Path,
    docker_host: str,
    clean_engine: docker.DockerClient,
) -> AsyncIterator[web.Application]:
    create_test_networks(clean_engine)
    async with running_provisioner(pg_dsn, nats_url, tmp_path, docker_host) as app:
        yield app


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


def holds_vip(container: Container) -> bool:
    """True when the VIP is an address of the container's VIP interface."""
    result = container.exec_run(["ip", "-4", "-o", "addr", "show", "dev", VIP_INTERFACE])
    return f" {VIP}/32 " in result.output.decode()


def http_lb(backends: list[BackendContainer], **fields: Any) -> c.CreateLoadBalancer:
    lb = b.loadbalancer(VIP, **fields)
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
        assert set(container.attrs["NetworkSettings"]["Networks"]) == {
            MGMT_NETWORK.name,
            VIP_NETWORK.name,
        }
        assert holds_vip(container)  # plugged by the agent when the configurator asked
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


async def test_active_standby_keeps_serving_when_the_master_dies(
    docker_provisioner: web.Application,
    db: asyncpg.Pool,
    clean_engine: docker.DockerClient,
) -> None:
    """keepalived in the containers (unicast VRRP on the VIP network) moves the VIP to the
    BACKUP in the data plane; the control plane replaces the dead MASTER afterwards."""
    repo = LoadBalancerRepository(PostgresEventStore(db))
    with backend_containers(["be0", "be1"], VIP_NETWORK.name) as backends:
        command = http_lb(backends, topology="ACTIVE_STANDBY")
        lb_id = command.loadbalancer.id
        await repo.execute(lb_id, command, META)
        state = await wait_status(repo, lb_id, "ACTIVE")
        assert len(state.amphora_ids) == 2
        containers = [clean_engine.containers.get(container_name(a)) for a in state.amphora_ids]
        # keepalived elects one MASTER (both may hold the VIP for a moment while the first
        # adverts cross).
        deadline = time.monotonic() + 20
        while len(holders := [x for x in containers if holds_vip(x)]) != 1:
            assert time.monotonic() < deadline, f"{len(holders)} amphorae hold the VIP, not 1"
            await asyncio.sleep(0.1)
        (master,) = holders
        (backup,) = [x for x in containers if x.id != master.id]
        assert await names_through_vip(10) == Counter({"be0": 5, "be1": 5})

        master.kill()
        killed = time.monotonic()
        while not holds_vip(backup):
            assert time.monotonic() - killed < 10, "the BACKUP did not take the VIP"
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(wait_http, f"http://{VIP}/", 5) in ("be0", "be1")
        print(f"BACKUP serving the VIP {time.monotonic() - killed:.2f} s after the MASTER died")

        await repo.execute(lb_id, c.DeleteLoadBalancer(cascade=True), META)
        await wait_status(repo, lb_id, "DELETED")


async def test_a_claimed_spare_serves_the_vip(
    pg_dsn: str,
    nats_url: str,
    tmp_path: Path,
    docker_host: str,
    clean_engine: docker.DockerClient,
    db: asyncpg.Pool,
) -> None:
    """A spare boots on the first VIP network without a VIP; the LB that claims it gets its
    VIP plugged there (no container boot on the create path)."""
    create_test_networks(clean_engine)
    repo = LoadBalancerRepository(PostgresEventStore(db))
    async with running_provisioner(
        pg_dsn, nats_url, tmp_path, docker_host, spare_pool_size=1, spare_refill_interval=0.2
    ):
        deadline = time.monotonic() + 60
        while not (spares := await db.fetch("SELECT id FROM amphora_view WHERE status = 'READY'")):
            assert time.monotonic() < deadline, "no spare became READY"
            await asyncio.sleep(0.1)
        with backend_containers(["be0", "be1"], VIP_NETWORK.name) as backends:
            command = http_lb(backends)
            started = time.monotonic()
            await repo.execute(command.loadbalancer.id, command, META)
            state = await wait_status(repo, command.loadbalancer.id, "ACTIVE")
            print(f"POST -> ACTIVE from a spare: {time.monotonic() - started:.2f} s")
            assert state.amphora_ids == (str(spares[0]["id"]),)
            assert await names_through_vip(10) == Counter({"be0": 5, "be1": 5})
            await repo.execute(command.loadbalancer.id, c.DeleteLoadBalancer(cascade=True), META)
            await wait_status(repo, command.loadbalancer.id, "DELETED")


async def test_an_unreachable_engine_puts_the_lb_in_error_with_the_reason(
    pg_dsn: str, nats_url: str, tmp_path: Path, db: asyncpg.Pool
) -> None:
    repo = LoadBalancerRepository(PostgresEventStore(db))
    gone = driver_settings("unix:///nonexistent/fulcrum/docker.sock")
    async with running_provisioner(pg_dsn, nats_url, tmp_path, "", docker=gone) as app:
        command = http_lb([])
        await repo.execute(command.loadbalancer.id, command, META)
        state = await wait_status(repo, command.loadbalancer.id, "ERROR")
        assert state.loadbalancer is not None
        assert "unreachable" in state.loadbalancer.provisioning_error
        with pytest.raises(InfrastructureError):
            await app[DRIVER].list()
