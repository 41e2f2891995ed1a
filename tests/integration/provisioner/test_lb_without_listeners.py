"""A load balancer without listeners on the process driver (real agents, real HAProxy): its
amphora (a claimed spare, then a failover's replacement) runs no HAProxy; the first listener
starts HAProxy and serves through the VIP; the last listener deleted stops it again."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import asyncpg
import pytest

from libs.common.domain import commands as c
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from tests import builders as b
from tests.integration.provisioner.conftest import Backend, RunningProvisioner, free_port
from tests.integration.provisioner.test_process_lifecycle import META, get_names, wait_status

VIP = "127.77.0.14"


@pytest.fixture
def spare_pool_size() -> int:
    return 1


async def one_spare(db: asyncpg.Pool, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await db.fetchval("SELECT count(*) FROM amphora_view WHERE status = 'READY'"):
        assert time.monotonic() < deadline, "no spare booted"
        await asyncio.sleep(0.05)


def haproxy_runs(state_dir: Path, amphora_id: str) -> bool:
    """Whether the agent means HAProxy to run (its pid file), after checking that the agent
    has a configuration installed."""
    directory = state_dir / amphora_id
    assert (directory / "haproxy.cfg").exists()
    return (directory / "haproxy.pid").exists()


def refuses(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((VIP, port)) != 0


async def test_haproxy_runs_only_while_the_lb_has_a_listener(
    provisioner: RunningProvisioner, db: asyncpg.Pool, backends: list[Backend]
) -> None:
    repo = LoadBalancerRepository(PostgresEventStore(db))
    state_dir = provisioner.settings.state_dir
    await one_spare(db)
    lb = b.loadbalancer(VIP)
    await repo.execute(lb.id, c.CreateLoadBalancer(lb), META)
    (spare,) = (await wait_status(repo, lb.id, "ACTIVE")).amphora_ids
    assert await db.fetchval("SELECT lb_id FROM amphora_view WHERE id = $1", spare) == lb.id
    assert not haproxy_runs(state_dir, spare)

    await repo.execute(lb.id, c.FailoverLoadBalancer(), META)
    (replacement,) = (await wait_status(repo, lb.id, "ACTIVE")).amphora_ids
    assert replacement != spare
    assert not haproxy_runs(state_dir, replacement)

    port = free_port(VIP)
    pool = b.pool(lb)
    listener = b.listener(lb, port, default_pool_id=pool.id)
    for child in (pool, b.member(pool, backends[0].port), listener):
        await repo.execute(lb.id, c.CreateChild(child), META)
        await wait_status(repo, lb.id, "ACTIVE")
    assert haproxy_runs(state_dir, replacement)
    assert await get_names(f"http://{VIP}:{port}/", 2) == {"b0": 2}

    await repo.execute(lb.id, c.DeleteChild("listeners", listener.id), META)
    await wait_status(repo, lb.id, "ACTIVE")
    assert not haproxy_runs(state_dir, replacement)
    assert refuses(port)

    await repo.execute(lb.id, c.DeleteLoadBalancer(cascade=True), META)
    await wait_status(repo, lb.id, "DELETED")
