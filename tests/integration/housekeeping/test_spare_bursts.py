"""A burst of creates past the spare pool's size: every create goes ACTIVE (those past the pool
boot their own amphorae), and no spare is booted (the provisioner's refill loop) or asked for
(housekeeping) while creates wait; the pool refills after them."""

from __future__ import annotations

import asyncio

import pytest

from libs.common.domain import commands as c
from libs.common.streams import StreamId
from services.housekeeping.settings import SparesJob
from services.provisioner.settings import ProvisionerSettings
from tests import builders as b
from tests.integration.housekeeping.conftest import META, Plant, eventually, wait_status
from tests.integration.housekeeping.test_spares import ready_spares

POOL = 2
BURST = 6


async def burst(plant: Plant, subnet: int) -> tuple[int, int]:
    """BURST bare LBs committed at once, all waited ACTIVE: the global positions of the first
    creation event and of the last activation."""
    lbs = [b.loadbalancer(f"127.77.{subnet}.{10 + i}") for i in range(BURST)]
    start: int = await plant.db.fetchval("SELECT coalesce(max(global_position), 0) FROM events")
    await asyncio.gather(*(plant.repo.execute(lb.id, c.CreateLoadBalancer(lb), META) for lb in lbs))
    await asyncio.gather(*(wait_status(plant.repo, lb.id, "ACTIVE", timeout=60) for lb in lbs))
    activated: int = await plant.db.fetchval(
        "SELECT max(global_position) FROM events WHERE event_type = 'LoadBalancerActivated'"
        " AND stream_id = ANY($1::text[])",
        [str(StreamId.loadbalancer(lb.id)) for lb in lbs],
    )
    assert activated is not None
    return start, activated


async def spare_events_between(plant: Plant, event_type: str, start: int, end: int) -> int:
    """Events of ``event_type`` about spares (no LB) between two global positions."""
    found: int = await plant.db.fetchval(
        "SELECT count(*) FROM events WHERE event_type = $1 AND global_position > $2"
        " AND global_position < $3 AND data->>'loadbalancer_id' IS NULL",
        event_type,
        start,
        end,
    )
    return found


async def pool_full(plant: Plant) -> None:
    async def full() -> bool:
        return len(await ready_spares(plant)) == POOL

    await eventually(full, timeout=30, what=f"{POOL} READY spares")


async def test_the_refill_loop_boots_no_spare_while_a_burst_waits_then_refills(
    plant: Plant,
) -> None:
    await plant.start_provisioner(spare_pool_size=POOL, spare_refill_interval=0.05)
    await pool_full(plant)
    start, activated = await burst(plant, 90)
    assert await spare_events_between(plant, "AmphoraBooted", start, activated) == 0
    await pool_full(plant)


async def test_housekeeping_asks_for_no_spare_while_a_burst_waits_then_refills(
    plant: Plant,
) -> None:
    await plant.start_provisioner()
    await plant.start_housekeeping(spares=SparesJob(interval=0.05, pool_size=POOL))
    await pool_full(plant)
    start, activated = await burst(plant, 91)
    assert await spare_events_between(plant, "SpareAmphoraRequested", start, activated) == 0
    await pool_full(plant)


def test_a_negative_deferral_is_refused() -> None:
    with pytest.raises(ValueError, match="spare_refill_defer"):
        ProvisionerSettings(spare_refill_defer=-1)
    with pytest.raises(ValueError, match="defer"):
        SparesJob(defer=-1)
