"""The spare pool: housekeeping decides its size and asks; the provisioner boots, and a new LB
claims a booted spare instead of waiting for a boot. Dead spares are replaced, surplus ones
retired."""

from __future__ import annotations

import os
import signal
from collections import Counter

import aiohttp

from services.housekeeping.settings import OrphansJob, SparesJob
from tests.integration.housekeeping.conftest import (
    META,
    Backend,
    Plant,
    amphora_rows,
    eventually,
    free_port,
    http_lb,
    wait_status,
)


async def ready_spares(plant: Plant) -> set[str]:
    rows = await amphora_rows(plant.db, "READY")
    return {a for a, lb in rows.items() if lb is None}


async def get_names(url: str, count: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            async with session.get(url, headers={"Connection": "close"}) as resp:
                seen[await resp.text()] += 1
    return seen


async def booted_for(plant: Plant, lb_id: str) -> int:
    """AmphoraBooted events of amphorae started for ``lb_id`` (spares boot with no LB)."""
    count: int = await plant.db.fetchval(
        "SELECT count(*) FROM events WHERE event_type = 'AmphoraBooted' "
        "AND data->>'loadbalancer_id' = $1",
        lb_id,
    )
    return count


async def test_with_two_spares_three_creates_in_a_row_go_active_the_first_two_without_a_boot(
    plant: Plant, backends: list[Backend]
) -> None:
    await plant.start_provisioner()
    await plant.start_housekeeping(spares=SparesJob(interval=0.3, pool_size=2))

    async def two_ready() -> bool:
        return len(await ready_spares(plant)) == 2

    await eventually(two_ready, what="two READY spares")
    spares = await ready_spares(plant)
    used: list[str] = []
    for i in range(3):
        vip = f"127.77.80.{10 + i}"
        port = free_port(vip)
        command = http_lb(vip, port, backends[:2])
        lb_id = command.loadbalancer.id
        await plant.repo.execute(lb_id, command, META)
        state = await wait_status(plant.repo, lb_id, "ACTIVE")
        used.append(state.amphora_ids[0])
        assert await get_names(f"http://{vip}:{port}/", 4) == Counter({"b0": 2, "b1": 2})
        if i < 2:
            assert await booted_for(plant, lb_id) == 0  # no boot: a spare was claimed
    assert set(used[:2]) == spares
    await eventually(two_ready, what="the pool refilled to two")
    assert not (await ready_spares(plant)) & set(used)


async def test_a_dead_spare_is_replaced_and_a_smaller_pool_retires_the_surplus(
    plant: Plant,
) -> None:
    await plant.start_provisioner()
    await plant.start_housekeeping(
        spares=SparesJob(interval=0.3, pool_size=2),
        orphans=OrphansJob(interval=0.3, grace=1.0),
    )

    async def two_ready() -> bool:
        return len(await ready_spares(plant)) == 2

    await eventually(two_ready, what="two READY spares")
    first = await ready_spares(plant)
    victim = sorted(first)[0]
    pid = int((plant.provisioner_settings.state_dir / victim / "agent.pid").read_text())
    os.kill(pid, signal.SIGKILL)  # the spare dies: the driver no longer lists it

    async def replaced() -> bool:
        now = await ready_spares(plant)
        return len(now) == 2 and victim not in now

    await eventually(replaced, what="the dead spare replaced")
    assert (await plant.amphorae.load(victim)).status.value == "DELETED"

    plant.jobs.spares._settings.pool_size = 0  # the operator shrinks the pool

    async def none_left() -> bool:
        listed = await plant.driver().list()
        pending = await amphora_rows(plant.db, "BOOTING", "READY", "PENDING_DELETE")
        return not pending and not listed

    await eventually(none_left, what="every spare retired and deleted")
