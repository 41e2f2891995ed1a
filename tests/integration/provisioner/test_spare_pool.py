"""A warm spare pool: new load balancers take a booted amphora instead of booting one."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg
import pytest

from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from tests.integration.provisioner.conftest import Backend, RunningProvisioner, free_port
from tests.integration.provisioner.test_process_lifecycle import (
    META,
    get_names,
    http_lb,
    wait_status,
)


@pytest.fixture
def spare_pool_size() -> int:
    return 2


async def ready_spares(db: asyncpg.Pool) -> list[str]:
    rows = await db.fetch("SELECT id FROM amphora_view WHERE status = 'READY' ORDER BY id")
    return [r["id"] for r in rows]


async def test_three_creates_with_two_spares_the_first_two_skip_the_boot(
    provisioner: RunningProvisioner, db: asyncpg.Pool, backends: list[Backend]
) -> None:
    for _ in range(400):
        if len(await ready_spares(db)) == 2:
            break
        await asyncio.sleep(0.05)
    spares = set(await ready_spares(db))
    assert len(spares) == 2
    repo = LoadBalancerRepository(PostgresEventStore(db))
    used: list[str] = []
    for i in range(3):
        vip = f"127.77.1.{10 + i}"
        port = free_port(vip)
        command = http_lb(vip, port, backends[:2])
        await repo.execute(command.loadbalancer.id, command, META)
        state = await wait_status(repo, command.loadbalancer.id, "ACTIVE")
        used.append(state.amphora_ids[0])
        assert await get_names(f"http://{vip}:{port}/", 4) == Counter({"b0": 2, "b1": 2})
    assert set(used[:2]) == spares  # taken from the pool, no boot
    # The third came from a refill or its own boot; either way the pool refills to 2.
    for _ in range(400):
        if len(await ready_spares(db)) == 2:
            break
        await asyncio.sleep(0.05)
    assert len(await ready_spares(db)) == 2
