"""The autoscaler in the health service, over real UDP heartbeats: an ACTIVE_ACTIVE load
balancer whose amphora reports more new connections per second than the policy allows gets
``LoadBalancerScaledOut`` (with the measurements) after the sustain time; once the provisioner
activated it with two amphorae and they report little, ``LoadBalancerScaledIn`` after the
cool-down. A SINGLE load balancer, and one whose flavor sets a higher threshold, under the
same load are never scaled."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg

from libs.common import heartbeat_codec as codec
from libs.common.domain import commands as c
from libs.common.domain.model import AmphoraBounds, Topology
from libs.common.events import Envelope
from libs.common.events import loadbalancer as lb_ev
from libs.common.events.amphora import AmphoraBooted
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import AmphoraRepository, LoadBalancerRepository
from services.health.domain.autoscale import ScalingPolicy
from tests import builders as b
from tests.integration.health.conftest import META, Sender, StartHealth, create_site

POLICY = ScalingPolicy(
    connection_rate_out=100,
    connection_rate_in=20,
    active_connections_out=1000,
    active_connections_in=100,
    sustain=0.3,
    cooldown=1.0,
    interval=0.1,
)


async def _booted(amps: AmphoraRepository, lb_id: str) -> str:
    amphora_id = str(uuid.uuid4())
    booted = AmphoraBooted(
        amphora_id=amphora_id,
        driver="test",
        compute_id="0",
        agent_url="https://127.0.0.1:1",
        loadbalancer_id=lb_id,
    )
    await amps.record(amphora_id, [booted], META)
    return amphora_id


def _beat(sender: Sender, amphora_id: str, listener_id: str, totconns: int) -> None:
    stats = {"rx": 0, "tx": 0, "conns": 3, "totconns": totconns, "ereq": 0}
    message: dict[str, Any] = {
        "id": amphora_id,
        "seq": sender.next_seq(amphora_id),
        "ver": 3,
        "listeners": {listener_id: {"status": "OPEN", "stats": stats}},
    }
    sender.raw(codec.encode(message, sender.key))


async def _scaled(store: PostgresEventStore, lb_id: str, count: int) -> list[Envelope]:
    """Until the LB's stream holds ``count`` scaling events (bounded); all of them."""
    deadline = time.monotonic() + 15
    while True:
        events = [
            e
            for e in await store.read_stream(f"loadbalancer-{lb_id}")
            if isinstance(e.payload, lb_ev.LoadBalancerScaled)
        ]
        if len(events) >= count:
            return events
        assert time.monotonic() < deadline, f"{len(events)} scaling events, wanted {count}"
        await asyncio.sleep(0.05)


async def test_heartbeats_scale_an_active_active_lb_out_and_back_in(
    db: asyncpg.Pool, start_health: StartHealth
) -> None:
    store = PostgresEventStore(db)
    lbs, amps = LoadBalancerRepository(store), AmphoraRepository(store)
    lb = b.loadbalancer(
        "127.77.250.9",
        topology=Topology.ACTIVE_ACTIVE,
        amphora_bounds=AmphoraBounds(amphora_min=1, amphora_max=3),
    )
    listener = b.listener(lb, 80)
    await lbs.execute(lb.id, c.CreateLoadBalancer(lb, listeners=(listener,)), META)
    first = await _booted(amps, lb.id)
    await lbs.execute(lb.id, c.Activate((first,)), META)
    # Its flavor asks for more: 150/s is not enough to scale it.
    calm = b.loadbalancer(
        "127.77.250.10",
        topology=Topology.ACTIVE_ACTIVE,
        amphora_bounds=AmphoraBounds(amphora_min=1, amphora_max=3),
        autoscale={"connection_rate_out": 400.0},
    )
    calm_listener = b.listener(calm, 80)
    await lbs.execute(calm.id, c.CreateLoadBalancer(calm, listeners=(calm_listener,)), META)
    calm_amphora = await _booted(amps, calm.id)
    await lbs.execute(calm.id, c.Activate((calm_amphora,)), META)
    single = await create_site(db)
    health = await start_health(autoscale=POLICY)
    sender = Sender(health.udp)
    try:
        # 15 new connections every 0.1 s: 150/s on one amphora, over 100.
        for _ in range(60):
            _beat(sender, first, listener.id, 15)
            _beat(sender, single.amphora_id, single.listener_id, 15)
            _beat(sender, calm_amphora, calm_listener.id, 15)
            await asyncio.sleep(0.1)
            if health.metric("autoscale_scaled_out_total"):
                break
        (out,) = await _scaled(store, lb.id, 1)
        assert isinstance(out.payload, lb_ev.LoadBalancerScaledOut)
        assert (out.payload.amphorae_before, out.payload.amphorae) == (1, 2)
        assert out.payload.measurements["connection_rate"] > 100
        assert out.payload.measurements["active_connections"] == 3
        assert "connection_rate" in out.payload.reason and out.metadata.actor.startswith("health")
        state = await lbs.load(lb.id)
        assert state.loadbalancer is not None
        assert state.loadbalancer.provisioning_status == "PENDING_UPDATE"

        # The provisioner's part: a second amphora, then the LB is ACTIVE with both.
        second = await _booted(amps, lb.id)
        await lbs.execute(lb.id, c.Activate((first, second)), META)
        for _ in range(80):
            for amphora_id in (first, second):
                _beat(sender, amphora_id, listener.id, 0)
            await asyncio.sleep(0.1)
            if health.metric("autoscale_scaled_in_total"):
                break
        events = await _scaled(store, lb.id, 2)
        scaled_in = events[1].payload
        assert isinstance(scaled_in, lb_ev.LoadBalancerScaledIn)
        assert (scaled_in.amphorae_before, scaled_in.amphorae) == (2, 1)
        assert scaled_in.measurements["connection_rate"] < 20
        # Cool-down: at least POLICY.cooldown between the two decisions.
        assert (events[1].occurred_at - events[0].occurred_at).total_seconds() >= 1.0
    finally:
        sender.close()
    for lb_id in (single.lb_id, calm.id):
        untouched = await store.read_stream(f"loadbalancer-{lb_id}")
        assert not [e for e in untouched if isinstance(e.payload, lb_ev.LoadBalancerScaled)]
