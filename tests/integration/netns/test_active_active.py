"""ACTIVE_ACTIVE load balancers on the netns driver, end to end: the provisioner (in this
process) builds ``amphora_min`` amphorae behind one distributor namespace that owns the VIP,
HTTP from the lab's client namespace reaches the backends through every amphora (the
distributor's conntrack marks say which amphora took each connection), a config change
reaches every amphora, killing one amphora fails only the connections it held, the failover
takes it out of the distribution and builds a replacement, and a delete leaves nothing
behind (namespaces, links, nft tables)."""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter

import asyncpg
import pytest

from libs.common.domain import commands as c
from libs.common.domain.model import AmphoraBounds, Topology
from libs.common.errors import ValidationFailed
from libs.common.events import loadbalancer as lb_ev
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from services.provisioner.adapters.netns_distributor import NetnsDistributors
from services.provisioner.drivers.netns import namespace_exists
from tests import builders as b
from tests.integration.netns.conftest import NetnsProvisioner
from tests.integration.netns.lab import NetnsLab, kill_everything_in, namespaces
from tests.integration.netns.test_distributor import Held, _failed_alike
from tests.integration.netns.test_netns_failover import lb_handles
from tests.integration.netns.test_udp import ask, serve, until
from tests.integration.provisioner.test_process_lifecycle import META, wait_status

pytestmark = pytest.mark.netns


def _distribution(prov: NetnsProvisioner) -> NetnsDistributors:
    distribution = prov.driver.distribution
    assert distribution is not None
    return distribution


def _marks(prov: NetnsProvisioner, lb_id: str, vip: str, state: str = "") -> Counter[int]:
    """Connections to the VIP the distributor tracks, by conntrack mark (the amphora's slot);
    ``state``: only those in that TCP state."""
    out = subprocess.run(
        ["ip", "netns", "exec", _distribution(prov).namespace_for(lb_id),
         "conntrack", "-L", "-p", "tcp", "-d", vip],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    marks: Counter[int] = Counter()
    for line in out.splitlines():
        if state and f" {state} " not in line:
            continue
        mark = next((f.split("=")[1] for f in line.split() if f.startswith("mark=")), "0")
        marks[int(mark)] += 1
    return marks


def _flush_conntrack(prov: NetnsProvisioner, lb_id: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", _distribution(prov).namespace_for(lb_id), "conntrack", "-F"],
        capture_output=True, check=True,
    )  # fmt: skip


def _slots(prov: NetnsProvisioner, lb_id: str) -> dict[str, int]:
    """Amphora namespace -> slot, of the amphorae serving."""
    distributor = _distribution(prov).distributor(lb_id)
    assert distributor is not None
    return {b.namespace: b.slot for b in distributor.backends if b.serving}


async def test_active_active_spreads_survives_a_dead_amphora_and_deletes_cleanly(
    netns_provisioner: NetnsProvisioner, lab: NetnsLab, db: asyncpg.Pool
) -> None:
    prov = netns_provisioner
    repo = LoadBalancerRepository(PostgresEventStore(db))
    ports = await asyncio.to_thread(lab.start_backends, ["b0", "b1"])
    vip = lab.vip(0)
    bounds = AmphoraBounds(amphora_min=3, amphora_max=4)
    command = lab.http_lb(vip, ports, Topology.ACTIVE_ACTIVE, amphora_bounds=bounds)
    lb, members = command.loadbalancer, command.members
    await repo.execute(lb.id, command, META)
    state = await wait_status(repo, lb.id, "ACTIVE", timeout=60)
    handles = await lb_handles(prov, lb.id)
    assert len(handles) == 3 and sorted(state.amphora_ids) == sorted(h.amphora_id for h in handles)
    assert sorted(_distribution(prov).serving(lb.id)) == sorted(state.amphora_ids)
    slots = _slots(prov, lb.id)
    assert sorted(slots) == sorted(h.compute_id for h in handles)

    # Every amphora serves through the one VIP; new connections spread over all three.
    url = f"http://{vip}/"
    answers = await asyncio.to_thread(lab.get, url, 60)
    # (each amphora's HAProxy takes its members round robin on its own)
    assert set(answers) == {"b0", "b1"} and sum(answers.values()) == 60, answers
    spread = _marks(prov, lb.id, vip)
    assert set(spread) == set(slots.values()) and min(spread.values()) >= 5, spread

    # A member change reaches every amphora: each serves only b0 now.
    (second,) = [m for m in members if m.protocol_port == ports[1]]
    await repo.execute(lb.id, c.DeleteChild("members", second.id), META)
    await wait_status(repo, lb.id, "ACTIVE")
    _flush_conntrack(prov, lb.id)
    assert await asyncio.to_thread(lab.get, url, 30) == {"b0": 30}
    assert set(_marks(prov, lb.id, vip)) == set(slots.values())

    # Kill one amphora: only the keep-alive connections it held fail.
    _flush_conntrack(prov, lb.id)
    held = Held(lab, 24)
    try:
        assert set(held.first) == {"b0"}, held.first
        victim = handles[0]
        holding = _marks(prov, lb.id, vip, "ESTABLISHED")
        assert sum(holding.values()) == 24 and len(holding) == 3, holding
        kill_everything_in(victim.compute_id)
        await asyncio.sleep(0.2)
        after = held.round()
        assert after.count("b0") == 24 - holding[slots[victim.compute_id]], (after, holding)

        # The failover drops it from the distribution and builds a replacement.
        await repo.execute(lb.id, c.FailoverLoadBalancer(victim.amphora_id, reason="test"), META)
        state = await wait_status(repo, lb.id, "ACTIVE", timeout=60)
        assert victim.amphora_id not in state.amphora_ids and len(state.amphora_ids) == 3
        assert not namespace_exists(victim.compute_id)
        assert sorted(_distribution(prov).serving(lb.id)) == sorted(state.amphora_ids)
        # The survivors' connections are untouched.
        assert _failed_alike(held.round()) == _failed_alike(after)
    finally:
        held.close()
    _flush_conntrack(prov, lb.id)
    assert await asyncio.to_thread(lab.get, url, 45) == {"b0": 45}
    assert len(_marks(prov, lb.id, vip)) == 3

    distributor_ns = _distribution(prov).namespace_for(lb.id)
    await repo.execute(lb.id, c.DeleteLoadBalancer(cascade=True), META)
    await wait_status(repo, lb.id, "DELETED")
    assert await prov.driver.list() == []
    assert not namespace_exists(distributor_ns)
    assert [n for n in namespaces() if n.startswith(f"ft{lab.tag}-")] == []


async def test_scale_out_serves_new_amphorae_and_scale_in_drains_before_removing(
    netns_provisioner: NetnsProvisioner, lab: NetnsLab, db: asyncpg.Pool
) -> None:
    """``LoadBalancerScaledOut`` adds an amphora that takes new connections once configured;
    ``LoadBalancerScaledIn`` drains the newest: its keep-alive connections keep working and
    it takes no new ones until they end, then it is removed and the LB is ACTIVE again."""
    prov = netns_provisioner
    repo = LoadBalancerRepository(PostgresEventStore(db))
    ports = await asyncio.to_thread(lab.start_backends, ["b0"])
    vip = lab.vip()  # where Held connects
    bounds = AmphoraBounds(amphora_min=1, amphora_max=2)
    command = lab.http_lb(vip, ports, Topology.ACTIVE_ACTIVE, amphora_bounds=bounds)
    lb = command.loadbalancer
    await repo.execute(lb.id, command, META)
    state = await wait_status(repo, lb.id, "ACTIVE", timeout=60)
    (first,) = state.amphora_ids
    url = f"http://{vip}/"

    with pytest.raises(ValidationFailed, match="outside the bounds"):
        await repo.execute(lb.id, c.ScaleLoadBalancer(3), META)
    measured = {"connection_rate": 812.5, "cpu": 0.93}
    await repo.execute(lb.id, c.ScaleLoadBalancer(2, measured, "cpu above 0.8"), META)
    state = await wait_status(repo, lb.id, "ACTIVE", timeout=60)
    assert len(state.amphora_ids) == 2 and state.amphora_ids[0] == first
    second = state.amphora_ids[1]
    assert sorted(_distribution(prov).serving(lb.id)) == sorted(state.amphora_ids)
    _flush_conntrack(prov, lb.id)
    assert await asyncio.to_thread(lab.get, url, 40) == {"b0": 40}
    assert len(_marks(prov, lb.id, vip)) == 2
    events = await PostgresEventStore(db).read_stream(f"loadbalancer-{lb.id}")
    (out,) = [e.payload for e in events if isinstance(e.payload, lb_ev.LoadBalancerScaledOut)]
    assert (out.amphorae_before, out.amphorae, out.measurements) == (1, 2, measured)

    # Scale in while connections are held: the newest amphora drains.
    _flush_conntrack(prov, lb.id)
    held = Held(lab, 16)
    try:
        slots = _slots(prov, lb.id)
        draining = slots[prov.driver.namespace_for(second)]
        on_second = _marks(prov, lb.id, vip, "ESTABLISHED")[draining]
        assert on_second > 0, _marks(prov, lb.id, vip)
        await repo.execute(lb.id, c.ScaleLoadBalancer(1, {"cpu": 0.1}, "cpu below 0.3"), META)
        deadline = asyncio.get_running_loop().time() + 20
        while _distribution(prov).serving(lb.id) != (first,):
            assert asyncio.get_running_loop().time() < deadline, "never drained"
            await asyncio.sleep(0.05)
        pending = (await repo.load(lb.id)).loadbalancer
        assert pending is not None and pending.provisioning_status == "PENDING_UPDATE"
        # Every held connection still answers; new ones go to the first amphora only.
        assert held.round() == ["b0"] * 16
        before = _marks(prov, lb.id, vip)
        assert await asyncio.to_thread(lab.get, url, 20) == {"b0": 20}
        after = _marks(prov, lb.id, vip)
        grown = {slot for slot, count in after.items() if count > before[slot]}
        assert grown == {slots[prov.driver.namespace_for(first)]}, (before, after)
    finally:
        held.close()
    state = await wait_status(repo, lb.id, "ACTIVE", timeout=20)
    assert state.amphora_ids == (first,)
    assert not namespace_exists(prov.driver.namespace_for(second))
    assert [h.amphora_id for h in await lb_handles(prov, lb.id)] == [first]
    # What the amphora API lists (its read model): the scaled-in amphora DELETED.
    rows = await db.fetch("SELECT id, status FROM amphora_view WHERE lb_id = $1", lb.id)
    assert {r["id"]: r["status"] for r in rows} == {first: "ALLOCATED", second: "DELETED"}
    events = await PostgresEventStore(db).read_stream(f"loadbalancer-{lb.id}")
    assert [e.event_type for e in events if "Scaled" in e.event_type] == [
        "LoadBalancerScaledOut",
        "LoadBalancerScaledIn",
    ]

    await repo.execute(lb.id, c.DeleteLoadBalancer(cascade=True), META)
    await wait_status(repo, lb.id, "DELETED")
    assert not namespace_exists(_distribution(prov).namespace_for(lb.id))


async def _spares(db: asyncpg.Pool, prov: NetnsProvisioner, count: int) -> list[str]:
    """Until ``count`` spares run (bounded); their ids."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        spares = [h.amphora_id for h in await prov.driver.list() if h.lb_id is None]
        allocated = []
        for amphora_id in spares:
            stream = await PostgresEventStore(db).read_stream(f"amphora-{amphora_id}")
            if any(e.event_type == "AmphoraAllocated" for e in stream):
                allocated.append(amphora_id)
        ready = [a for a in spares if a not in allocated]
        if len(ready) >= count:
            return ready
        assert asyncio.get_running_loop().time() < deadline, f"spares: {ready}"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("netns_spare_pool_size", [1])
async def test_active_active_takes_ready_spares_to_build_and_to_scale_out(
    netns_provisioner: NetnsProvisioner, lab: NetnsLab, db: asyncpg.Pool
) -> None:
    prov = netns_provisioner
    repo = LoadBalancerRepository(PostgresEventStore(db))
    ports = await asyncio.to_thread(lab.start_backends, ["b0"])
    (first_spare,) = await _spares(db, prov, 1)
    bounds = AmphoraBounds(amphora_min=2, amphora_max=3)
    command = lab.http_lb(lab.vip(), ports, Topology.ACTIVE_ACTIVE, amphora_bounds=bounds)
    lb = command.loadbalancer
    await repo.execute(lb.id, command, META)
    state = await wait_status(repo, lb.id, "ACTIVE", timeout=60)
    assert len(state.amphora_ids) == 2 and first_spare in state.amphora_ids
    (second_spare,) = await _spares(db, prov, 1)  # the pool refilled
    await repo.execute(lb.id, c.ScaleLoadBalancer(3, reason="test"), META)
    state = await wait_status(repo, lb.id, "ACTIVE", timeout=60)
    assert state.amphora_ids[-1] == second_spare
    assert sorted(_distribution(prov).serving(lb.id)) == sorted(state.amphora_ids)
    _flush_conntrack(prov, lb.id)
    assert await asyncio.to_thread(lab.get, f"http://{lab.vip()}/", 45) == {"b0": 45}
    assert len(_marks(prov, lb.id, lab.vip())) == 3


async def test_active_active_serves_udp_through_every_amphora(
    netns_provisioner: NetnsProvisioner, lab: NetnsLab, db: asyncpg.Pool
) -> None:
    """A UDP listener on an ACTIVE_ACTIVE LB: each amphora's nftables DNAT serves the flows
    the distributor gives it, replies go back through the distributor."""
    prov = netns_provisioner
    repo = LoadBalancerRepository(PostgresEventStore(db))
    client = lab.client_ip
    for name, port in (("u0", 9001), ("u1", 9002)):
        serve(lab, "echo", "--address", client, "--port", str(port), "--name", name)
    vip = lab.vip()
    lb = b.loadbalancer(
        vip,
        topology=Topology.ACTIVE_ACTIVE,
        amphora_bounds=AmphoraBounds(amphora_min=2, amphora_max=2),
    )
    pool = b.pool(lb, "UDP")
    listener = b.listener(lb, 7, "UDP", default_pool_id=pool.id)
    members = (b.member(pool, 9001, client), b.member(pool, 9002, client))
    command = c.CreateLoadBalancer(lb, listeners=(listener,), pools=(pool,), members=members)
    await repo.execute(lb.id, command, META)
    await wait_status(repo, lb.id, "ACTIVE", timeout=45)
    await until(lab, vip, 7, lambda s: sum(s.values()) == 10, "echo through the VIP")
    answers = await asyncio.to_thread(ask, lab, vip, 7, 40)
    assert set(answers) == {"u0", "u1"} and sum(answers.values()) == 40, answers
    tracked = subprocess.run(
        ["ip", "netns", "exec", _distribution(prov).namespace_for(lb.id),
         "conntrack", "-L", "-p", "udp", "-d", vip],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    marks = {f for line in tracked.splitlines() for f in line.split() if f.startswith("mark=")}
    assert marks == {f"mark={s}" for s in _slots(prov, lb.id).values()}, tracked
