"""ACTIVE_ACTIVE load balancers on the docker driver: the provisioner (in this process) runs two
amphora containers behind a distributor namespace plugged into the docker VIP network's bridge;
HTTP from the host reaches the backend through the VIP over both amphorae (the distributor's
conntrack marks say which one took each connection), a failover replaces a killed container
and drops its namespace name, and a delete leaves no container, namespace name, veth or
distributor namespace behind."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import docker
import pytest

from libs.common.domain import commands as c
from libs.common.domain.model import AmphoraBounds, Topology
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from services.provisioner.app import DRIVER
from services.provisioner.drivers.docker import DockerAmphoraDriver, container_name, namespace_name
from services.provisioner.drivers.netns import namespace_exists
from services.provisioner.drivers.traced import TracedDriver
from tests import builders as b
from tests.integration.docker.conftest import (
    VIP_NETWORK,
    backend_containers,
    create_test_networks,
    vip,
    wait_http,
)
from tests.integration.docker.test_docker_lifecycle import META, running_provisioner, wait_status

pytestmark = pytest.mark.docker
VIP = vip(30)


def _docker_driver(driver: object) -> DockerAmphoraDriver:
    inner = driver.inner if isinstance(driver, TracedDriver) else driver
    assert isinstance(inner, DockerAmphoraDriver)
    return inner


def _marks(distributor_ns: str) -> Counter[int]:
    """TCP connections to the VIP the distributor tracks, by conntrack mark (amphora slot)."""
    out = subprocess.run(
        ["ip", "netns", "exec", distributor_ns, "conntrack", "-L", "-p", "tcp", "-d", VIP],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    marks: Counter[int] = Counter()
    for line in out.splitlines():
        marks[int(next((f[5:] for f in line.split() if f.startswith("mark=")), "0"))] += 1
    return marks


def _flush(distributor_ns: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", distributor_ns, "conntrack", "-F"],
        capture_output=True, check=True, timeout=10,
    )  # fmt: skip


def _bridge_port(namespace: str) -> str:
    return "q" + hashlib.sha256(namespace.encode()).hexdigest()[:12]


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True).returncode == 0


@contextlib.contextmanager
def _namespaces_removed(names: set[str]) -> Iterator[set[str]]:
    """The namespace names the test learns of (added to ``names``) are deleted at the end, also
    when it fails."""
    try:
        yield names
    finally:
        for name in names:
            if namespace_exists(name):
                subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10)


async def _answers(count: int) -> Counter[str]:
    return Counter([await asyncio.to_thread(wait_http, f"http://{VIP}/", 5) for _ in range(count)])


async def test_active_active_spreads_over_containers_fails_over_and_deletes_cleanly(
    pg_dsn: str,
    nats_url: str,
    tmp_path: Path,
    docker_host: str,
    clean_engine: docker.DockerClient,
    db: asyncpg.Pool,
) -> None:
    create_test_networks(clean_engine)
    repo = LoadBalancerRepository(PostgresEventStore(db))
    with (
        _namespaces_removed(set()) as made,
        backend_containers(["be0"], VIP_NETWORK.name) as backends,
    ):
        async with running_provisioner(pg_dsn, nats_url, tmp_path, docker_host) as app:
            driver = _docker_driver(app[DRIVER])
            distribution = driver.distribution
            assert distribution is not None  # the test runs as root
            lb = b.loadbalancer(
                VIP,
                topology=Topology.ACTIVE_ACTIVE,
                amphora_bounds=AmphoraBounds(amphora_min=2, amphora_max=2),
            )
            pool = b.pool(lb)
            listener = b.listener(lb, 80, default_pool_id=pool.id)
            member = b.member(pool, backends[0].port, address=backends[0].address)
            command = c.CreateLoadBalancer(
                lb, listeners=(listener,), pools=(pool,), members=(member,)
            )
            distributor_ns = distribution.namespace_for(lb.id)
            made.add(distributor_ns)
            await repo.execute(lb.id, command, META)
            state = await wait_status(repo, lb.id, "ACTIVE", timeout=60)
            amphorae = state.amphora_ids
            made.update(namespace_name(a) for a in amphorae)
            assert len(amphorae) == 2
            assert sorted(distribution.serving(lb.id)) == sorted(amphorae)
            assert all(namespace_exists(namespace_name(a)) for a in amphorae)
            distributor = distribution.distributor(lb.id)
            assert distributor is not None
            slots = {b.namespace: b.slot for b in distributor.backends if b.serving}
            assert sorted(slots) == sorted(namespace_name(a) for a in amphorae)
            # The VIP is on the amphorae's lo only: the agent plugs nothing on eth1.
            for amphora in amphorae:
                container = clean_engine.containers.get(container_name(amphora))
                eth1 = container.exec_run(["ip", "-4", "-o", "addr", "show", "dev", "eth1"])
                lo = container.exec_run(["ip", "-4", "-o", "addr", "show", "dev", "lo"])
                assert f" {VIP}/" not in eth1.output.decode()
                assert f" {VIP}/32 " in lo.output.decode()

            # New connections spread over both amphorae.
            assert await _answers(30) == Counter({"be0": 30})
            spread = _marks(distributor_ns)
            assert set(spread) == set(slots.values()) and min(spread.values()) >= 3, spread

            # One container dies: the failover replaces it and drops its namespace name.
            victim = amphorae[0]
            clean_engine.containers.get(container_name(victim)).kill()
            await repo.execute(lb.id, c.FailoverLoadBalancer(victim, reason="test kill"), META)
            deadline = time.monotonic() + 60
            while victim in (state := await wait_status(repo, lb.id, "ACTIVE")).amphora_ids:
                assert time.monotonic() < deadline, "no failover"
                await asyncio.sleep(0.1)
            made.update(namespace_name(a) for a in state.amphora_ids)
            assert len(state.amphora_ids) == 2
            assert not namespace_exists(namespace_name(victim))
            assert sorted(distribution.serving(lb.id)) == sorted(state.amphora_ids)
            _flush(distributor_ns)
            assert await _answers(20) == Counter({"be0": 20})
            assert len(_marks(distributor_ns)) == 2

            await repo.execute(lb.id, c.DeleteLoadBalancer(cascade=True), META)
            await wait_status(repo, lb.id, "DELETED")
            assert await driver.list() == []
            ours = [namespace_name(a) for a in {*amphorae, *state.amphora_ids}]
            assert [n for n in (*ours, distributor_ns) if namespace_exists(n)] == []
            assert not _link_exists(_bridge_port(distributor_ns))
            for amphora in {*amphorae, *state.amphora_ids}:
                found = clean_engine.containers.list(all=True, filters={"name": amphora})
                assert found == []
