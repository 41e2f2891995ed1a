"""Nothing stays PENDING_*: stranded work is re-driven, then failed with the reason; an ERROR LB
is repaired by a user update or the admin failover, never by database surgery."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from libs.common.domain import commands as c
from libs.common.streams import StreamId
from services.housekeeping.settings import StrandedJob
from tests import builders as b
from tests.integration.housekeeping.conftest import (
    META,
    Backend,
    Plant,
    count_events,
    free_port,
    http_lb,
    wait_status,
)
from tests.integration.housekeeping.test_spares import get_names

FAST = StrandedJob(interval=0.2, after=1.0, redrives=2)


async def test_a_create_whose_event_was_lost_is_redriven_to_active(
    plant: Plant, backends: list[Backend]
) -> None:
    await plant.start_provisioner()
    await plant.start_housekeeping(stranded=FAST)
    vip = "127.77.81.10"
    port = free_port(vip)
    command = http_lb(vip, port, backends[:1])
    lb_id = command.loadbalancer.id
    # The create is stored but its message never reaches the bus (as if JetStream had lost
    # it): the provisioner never hears of this LB.
    async with plant.db.acquire() as conn, conn.transaction():
        outcome = await plant.repo.execute(lb_id, command, META, conn=conn)
        await conn.execute(
            "DELETE FROM outbox WHERE event_id = ANY($1::uuid[])",
            [e.event_id for e in outcome.envelopes],
        )
    state = await wait_status(plant.repo, lb_id, "ACTIVE", timeout=20)
    assert (
        await count_events(plant.db, "LoadBalancerRedriveRequested", StreamId.loadbalancer(lb_id))
        == 1
    )
    assert len(state.amphora_ids) == 1
    assert await get_names(f"http://{vip}:{port}/", 2) == Counter({"b0": 2})


async def test_stranded_lbs_go_error_with_the_reason_then_update_and_failover_repair_them(
    plant: Plant, backends: list[Backend]
) -> None:
    await plant.start_provisioner()
    repo = plant.repo
    vip_a, vip_b = "127.77.81.20", "127.77.81.21"
    port_a, port_b = free_port(vip_a), free_port(vip_b)
    create_a = http_lb(vip_a, port_a, backends[:1])
    lb_a = create_a.loadbalancer.id
    await repo.execute(lb_a, create_a, META)
    state_a = await wait_status(repo, lb_a, "ACTIVE")

    await plant.stop_provisioner()  # the control plane is down for a long while
    pool = next(iter(state_a.pools.values()))
    await repo.execute(lb_a, c.CreateChild(b.member(pool, backends[1].port)), META)
    create_b = http_lb(vip_b, port_b, backends[:2])
    lb_b = create_b.loadbalancer.id
    await repo.execute(lb_b, create_b, META)
    await plant.start_housekeeping(stranded=FAST)

    error_a = await wait_status(repo, lb_a, "ERROR", timeout=20)
    error_b = await wait_status(repo, lb_b, "ERROR", timeout=20)
    assert error_a.loadbalancer is not None and error_b.loadbalancer is not None
    assert error_a.loadbalancer.provisioning_error.startswith("stranded in PENDING_UPDATE for ")
    assert error_a.loadbalancer.provisioning_error.endswith(" s after 2 attempts")
    assert error_b.loadbalancer.provisioning_error.startswith("stranded in PENDING_CREATE for ")
    for lb_id in (lb_a, lb_b):
        assert (
            await count_events(
                plant.db, "LoadBalancerRedriveRequested", StreamId.loadbalancer(lb_id)
            )
            == 2
        )

    await plant.start_provisioner()  # back: the queued re-drives find nothing pending
    # A user update repairs A: PENDING_UPDATE, and the provisioner applies the whole config.
    await repo.execute(lb_a, c.UpdateLoadBalancer({"name": "repaired"}, datetime.now(UTC)), META)
    await wait_status(repo, lb_a, "ACTIVE")
    seen = await get_names(f"http://{vip_a}:{port_a}/", 4)
    assert seen == Counter({"b0": 2, "b1": 2})  # the member added while it was down serves
    # The admin failover repairs B, which never had an amphora.
    await repo.execute(lb_b, c.FailoverLoadBalancer(reason="repair"), META)
    repaired = await wait_status(repo, lb_b, "ACTIVE")
    assert len(repaired.amphora_ids) == 1
    assert await get_names(f"http://{vip_b}:{port_b}/", 4) == Counter({"b0": 2, "b1": 2})
