"""Autoscaling end to end with real traffic: an ACTIVE_ACTIVE load balancer (netns driver)
whose amphorae's HAProxy are capped by a CPU cgroup each, the provisioner and the health
service in this process, the amphorae's heartbeats feeding the autoscaler. A bounded wrk load
(keep-alive connections, and a new connection per request) above the policy's connection rate
scales the LB out to ``amphora_max``; once the load stops it scales back in to
``amphora_min``; no request fails on the way. A dead amphora is dropped from the
distribution and replaced through the heartbeats."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.common.domain.model import AmphoraBounds
from libs.common.events import loadbalancer as lb_ev
from libs.common.eventstore import PostgresEventStore
from libs.common.service import DB
from services.health.domain.autoscale import ScalingPolicy
from tests.integration.netns.autoscale_lab import AutoscaleRig, autoscale_rig
from tests.integration.netns.lab import NetnsLab, kill_everything_in

pytestmark = pytest.mark.netns

# 2 ms of CPU per 100 ms: one amphora's HAProxy carries a few hundred requests/s at most.
QUOTA = 2_000
POLICY = ScalingPolicy(
    connection_rate_out=30,
    connection_rate_in=5,
    active_connections_out=0,
    cpu_out=0,
    sustain=0.5,
    cooldown=2.0,
    interval=0.1,
)


@pytest.fixture
async def rig(
    pg_dsn: str, nats_url: str, tmp_path: Path, lab: NetnsLab
) -> AsyncIterator[AutoscaleRig]:
    async with autoscale_rig(
        pg_dsn, nats_url, tmp_path, lab, POLICY, quota=QUOTA, drain_timeout=15
    ) as rig:
        yield rig


async def _scalings(rig: AutoscaleRig, lb_id: str) -> list[lb_ev.LoadBalancerScaled]:
    events = await PostgresEventStore(rig.provisioner[DB]).read_stream(f"loadbalancer-{lb_id}")
    return [e.payload for e in events if isinstance(e.payload, lb_ev.LoadBalancerScaled)]


async def test_load_scales_out_then_back_in_without_a_failed_request(rig: AutoscaleRig) -> None:
    lb_id = await rig.create_lb(AmphoraBounds(amphora_min=1, amphora_max=2))
    capping = asyncio.create_task(rig.keep_capping(lb_id))
    try:
        await asyncio.sleep(0.3)
        assert await rig.cap_amphorae(lb_id) >= 1
        url = f"http://{rig.lab.vip()}/"
        keep, close = await asyncio.gather(rig.wrk(url, 8, 4), rig.wrk(url, 8, 8, close=True))
        print(f"keep-alive: {keep.rate:.0f}/s, new connections: {close.rate:.0f}/s")
        scalings = await _scalings(rig, lb_id)
        assert scalings and isinstance(scalings[0], lb_ev.LoadBalancerScaledOut), scalings
        assert scalings[0].amphorae == 2
        assert scalings[0].measurements["connection_rate"] > POLICY.connection_rate_out
        # The agents report their HAProxy's CPU: a capped one uses at most its quota.
        assert 0 < scalings[0].measurements["cpu"] <= 3 * QUOTA / 100_000  # CFS periods
        assert keep.failed == 0, keep.output
        assert close.failed == 0, close.output
        assert keep.requests > 0 and close.requests > 0

        # The heavy load stopped; a light one goes on (two keep-alive connections, a new
        # connection every 0.3 s): back to amphora_min, the drained amphora removed once its
        # keep-alive connections ended, and no request failed meanwhile.
        light = asyncio.create_task(rig.wrk(url, 6, 2))
        fresh: list[dict[str, int]] = []
        while not light.done():
            fresh.append(await asyncio.to_thread(rig.lab.get, url, 1, 2.0))
            await asyncio.sleep(0.3)
        kept_alive = await light
        light_ended = time.time()
        await rig.wait_amphorae(lb_id, 1)
        state = await rig.repo.load(lb_id)
        assert kept_alive.failed == 0 and kept_alive.requests > 0, kept_alive.output
        assert fresh and all(set(answer) == {"b0"} for answer in fresh), fresh
        events = await PostgresEventStore(rig.provisioner[DB]).read_stream(f"loadbalancer-{lb_id}")
        (scaled_in,) = [e for e in events if isinstance(e.payload, lb_ev.LoadBalancerScaledIn)]
        # It was decided (and the drain began) while the light load ran.
        assert scaled_in.occurred_at.timestamp() < light_ended
        assert [h.amphora_id for h in await rig.driver.list()] == list(state.amphora_ids)
        after = await rig.wrk(url, 1, 2)
        assert after.failed == 0 and after.requests > 0, after.output
    finally:
        capping.cancel()


async def test_a_dead_amphora_is_dropped_and_replaced_through_the_heartbeats(
    rig: AutoscaleRig,
) -> None:
    """Kill every process of one of three amphorae: the health service misses its heartbeats
    and fails it over; the failover takes it out of the distribution first, then builds a
    replacement; new connections never reach it after that."""
    lb_id = await rig.create_lb(AmphoraBounds(amphora_min=3, amphora_max=3))
    state = await rig.repo.load(lb_id)
    victim = state.amphora_ids[1]
    namespace = rig.driver.namespace_for(victim)
    distribution = rig.driver.distribution
    assert distribution is not None
    kill_everything_in(namespace)
    killed = time.monotonic()
    while victim in distribution.serving(lb_id):
        assert time.monotonic() - killed < 20, "never dropped"
        await asyncio.sleep(0.05)
    dropped = time.monotonic() - killed
    await rig.wait_amphorae(lb_id, 3, timeout=30)
    state = await rig.repo.load(lb_id)
    assert victim not in state.amphora_ids
    print(f"dead amphora out of the distribution after {dropped:.2f} s")
    load = await rig.wrk(f"http://{rig.lab.vip()}/", 1, 4, close=True)
    assert load.failed == 0 and load.requests > 0, load.output
