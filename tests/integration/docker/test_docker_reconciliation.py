"""Reconciliation with the docker driver: housekeeping asks, the provisioner compares the
containers labelled for its deployment with the amphora store, on a real engine.

Containers of this deployment whose amphora the store does not know (or knows as DELETED) are
removed; an amphora an ACTIVE LB expects but whose container was removed or stopped behind the
provisioner's back is failed over, and the LB serves its VIP again from a new container.
Containers labelled for another deployment on the same engine are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import docker
import docker.errors
import pytest
from aiohttp import web

from libs.common.domain import commands as c
from libs.common.events import amphora as amp_ev
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import AmphoraRepository, LoadBalancerRepository
from services.housekeeping.app import create_app as create_housekeeping
from services.housekeeping.settings import OrphansJob
from services.provisioner.drivers import AmphoraSpec
from services.provisioner.drivers.docker import (
    LABEL_AMPHORA,
    LABEL_DEPLOYMENT,
    DockerAmphoraDriver,
    container_name,
)
from tests.integration.docker.conftest import (
    DEPLOYMENT,
    VIP_NETWORK,
    Pki,
    backend_containers,
    create_test_networks,
    driver_settings,
)
from tests.integration.docker.test_docker_lifecycle import (
    META,
    http_lb,
    names_through_vip,
    running_provisioner,
    wait_status,
)
from tests.integration.housekeeping.conftest import (
    eventually,
    housekeeping_settings,
    serve_app,
    wait_failed_over,
)

pytestmark = pytest.mark.docker
OTHER_DEPLOYMENT = f"{DEPLOYMENT}-other"
# Housekeeping asks often; an unowned container is removed once unowned this long.
ORPHANS = OrphansJob(interval=0.3, grace=1.0)


def remove_other_deployment(client: docker.DockerClient) -> None:
    for container in client.containers.list(
        all=True, filters={"label": f"{LABEL_DEPLOYMENT}={OTHER_DEPLOYMENT}"}
    ):
        container.remove(force=True, v=True)


@pytest.fixture
def other_deployment(clean_engine: docker.DockerClient) -> Iterator[docker.DockerClient]:
    """The engine without containers of the other deployment, before and after the test."""
    remove_other_deployment(clean_engine)
    try:
        yield clean_engine
    finally:
        remove_other_deployment(clean_engine)


@contextlib.asynccontextmanager
async def running_housekeeping(pg_dsn: str, nats_url: str) -> AsyncIterator[web.Application]:
    """The housekeeping service in this process, only its orphan job on."""
    app = create_housekeeping(housekeeping_settings(pg_dsn, nats_url, orphans=ORPHANS))
    runner = await serve_app(app)
    try:
        yield app
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def side_driver(
    docker_host: str, pki: Pki, deployment: str = DEPLOYMENT
) -> AsyncIterator[DockerAmphoraDriver]:
    """A driver of its own on the test engine, as a stray provisioner of ``deployment``."""
    settings = driver_settings(docker_host, deployment=deployment)
    driver = DockerAmphoraDriver(settings, pki.ca, boot_timeout=20)
    try:
        yield driver
    finally:
        await driver.close()


def labelled(client: docker.DockerClient, deployment: str) -> dict[str, str]:
    """Amphora id -> container status of every amphora container labelled for ``deployment``."""
    found = client.containers.list(  # sparse: one call, no inspect of a container being reaped
        all=True,
        sparse=True,
        filters={"label": [f"{LABEL_DEPLOYMENT}={deployment}", LABEL_AMPHORA]},
    )
    return {x.attrs["Labels"][LABEL_AMPHORA]: x.attrs["State"] for x in found}


async def test_orphans_removed_a_removed_amphora_replaced_another_deployment_untouched(
    pg_dsn: str,
    nats_url: str,
    tmp_path: Path,
    docker_host: str,
    pki: Pki,
    db: asyncpg.Pool,
    other_deployment: docker.DockerClient,
) -> None:
    engine = other_deployment
    create_test_networks(engine)
    repo = LoadBalancerRepository(PostgresEventStore(db))
    amphorae = AmphoraRepository(PostgresEventStore(db))
    async with (
        running_provisioner(pg_dsn, nats_url, tmp_path, docker_host),
        side_driver(docker_host, pki) as stray,
        side_driver(docker_host, pki, OTHER_DEPLOYMENT) as other,
    ):
        with backend_containers(["be0", "be1"], VIP_NETWORK.name) as backends:
            command = http_lb(backends)
            lb_id = command.loadbalancer.id
            await repo.execute(lb_id, command, META)
            (serving,) = (await wait_status(repo, lb_id, "ACTIVE")).amphora_ids

            # Another deployment's amphorae on the same engine, unknown to this store: one
            # running, one stopped. Made first, so they are the longest unowned.
            foreign = str(uuid.uuid4())
            await other.ensure(AmphoraSpec(amphora_id=foreign, lb_id=None))
            foreign_stopped = str(uuid.uuid4())
            await other.ensure(AmphoraSpec(amphora_id=foreign_stopped, lb_id=None))
            await asyncio.to_thread(engine.containers.get(container_name(foreign_stopped)).kill)
            foreign_id = engine.containers.get(container_name(foreign)).id
            # This deployment's orphans: a container nobody recorded (a boot whose record was
            # lost), and one of an amphora recorded as DELETED that still runs.
            unknown = str(uuid.uuid4())
            await stray.ensure(AmphoraSpec(amphora_id=unknown, lb_id=None))
            deleted = str(uuid.uuid4())
            handle = await stray.ensure(AmphoraSpec(amphora_id=deleted, lb_id=None))
            booted = amp_ev.AmphoraBooted(
                amphora_id=deleted,
                driver=handle.driver,
                compute_id=handle.compute_id,
                agent_url=handle.agent_url,
                lb_network_ip=handle.lb_network_ip,
            )
            gone = amp_ev.AmphoraDeleted(amphora_id=deleted)
            await amphorae.record(deleted, [booted, gone], META)
            # And a stopped container nobody recorded: not running, yet left on the engine.
            stopped = str(uuid.uuid4())
            await stray.ensure(AmphoraSpec(amphora_id=stopped, lb_id=None))
            await asyncio.to_thread(engine.containers.get(container_name(stopped)).kill)
            assert set(labelled(engine, DEPLOYMENT)) == {serving, unknown, deleted, stopped}
            assert await stray.leftovers() == [stopped]

            async with running_housekeeping(pg_dsn, nats_url):

                async def reaped() -> bool:
                    return set(labelled(engine, DEPLOYMENT)) == {serving}

                await eventually(reaped, 30, "the three orphan containers removed")
                assert labelled(engine, DEPLOYMENT) == {serving: "running"}
                assert (await repo.load(lb_id)).amphora_ids == (serving,)
                assert await names_through_vip(4) == Counter({"be0": 2, "be1": 2})

                # The LB's container is removed behind the provisioner's back; no health
                # service runs here, so only the reconciliation can notice.
                container = engine.containers.get(container_name(serving))
                await asyncio.to_thread(container.remove, force=True)

                failed_over = await wait_failed_over(repo, lb_id, serving, timeout=60)
                (replacement,) = failed_over.amphora_ids
                assert await names_through_vip(10) == Counter({"be0": 5, "be1": 5})
                assert labelled(engine, DEPLOYMENT) == {replacement: "running"}
                record = await amphorae.load(serving)
                assert record.status.value == "DELETED"
                assert "not running" in record.failure_reason

            # Never touched: the other deployment's containers, as they were made.
            assert labelled(engine, OTHER_DEPLOYMENT) == {
                foreign: "running",
                foreign_stopped: "exited",
            }
            assert engine.containers.get(container_name(foreign)).id == foreign_id

            await repo.execute(lb_id, c.DeleteLoadBalancer(cascade=True), META)
            await wait_status(repo, lb_id, "DELETED")
    assert labelled(engine, DEPLOYMENT) == {}


async def test_a_stopped_amphora_container_is_replaced_and_removed(
    pg_dsn: str,
    nats_url: str,
    tmp_path: Path,
    docker_host: str,
    db: asyncpg.Pool,
    clean_engine: docker.DockerClient,
) -> None:
    """A container that exited (still on the engine) counts as missing: failover, and the
    stopped container is removed with its failed amphora."""
    create_test_networks(clean_engine)
    repo = LoadBalancerRepository(PostgresEventStore(db))
    async with running_provisioner(pg_dsn, nats_url, tmp_path, docker_host):
        with backend_containers(["be0", "be1"], VIP_NETWORK.name) as backends:
            command = http_lb(backends)
            lb_id = command.loadbalancer.id
            await repo.execute(lb_id, command, META)
            (serving,) = (await wait_status(repo, lb_id, "ACTIVE")).amphora_ids
            async with running_housekeeping(pg_dsn, nats_url):
                container = clean_engine.containers.get(container_name(serving))
                await asyncio.to_thread(container.stop, timeout=1)

                failed_over = await wait_failed_over(repo, lb_id, serving, timeout=60)
                (replacement,) = failed_over.amphora_ids
                assert await names_through_vip(10) == Counter({"be0": 5, "be1": 5})
                assert labelled(clean_engine, DEPLOYMENT) == {replacement: "running"}
                with pytest.raises(docker.errors.NotFound):
                    clean_engine.containers.get(container_name(serving))
            await repo.execute(lb_id, c.DeleteLoadBalancer(cascade=True), META)
            await wait_status(repo, lb_id, "DELETED")
