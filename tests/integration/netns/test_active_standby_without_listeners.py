"""An ACTIVE_STANDBY load balancer without listeners on the netns driver: neither amphora runs
HAProxy, yet keepalived's track script passes on both, so the pair elects a MASTER that holds
the VIP (as Octavia's pair does before its first listener); the first listener then starts
HAProxy on both and serves through the VIP."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from libs.common.agent_contract import VrrpState
from libs.common.domain import commands as c
from libs.common.domain.model import Topology
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from tests import builders as b
from tests.integration.netns.conftest import NetnsProvisioner
from tests.integration.netns.lab import NetnsLab, host_addresses
from tests.integration.netns.test_netns_failover import lb_handles, wait_vrrp_states
from tests.integration.provisioner.test_process_lifecycle import META, wait_status

pytestmark = pytest.mark.netns


async def test_a_pair_without_listeners_holds_its_vip_and_serves_once_one_exists(
    netns_provisioner: NetnsProvisioner, lab: NetnsLab, db: asyncpg.Pool
) -> None:
    prov = netns_provisioner
    repo = LoadBalancerRepository(PostgresEventStore(db))
    ports = await asyncio.to_thread(lab.start_backends, ["b0"])
    vip = lab.vip(3)
    lb = b.loadbalancer(vip, topology=Topology.ACTIVE_STANDBY)
    await repo.execute(lb.id, c.CreateLoadBalancer(lb), META)
    await wait_status(repo, lb.id, "ACTIVE")
    handles = await lb_handles(prov, lb.id)
    by_role = {h.role: h for h in handles}
    states = await wait_vrrp_states(prov, handles)
    assert states[by_role["MASTER"].amphora_id] == VrrpState.MASTER
    assert host_addresses(by_role["MASTER"].compute_id) == [vip]
    for handle in handles:
        assert (prov.state_dir / handle.amphora_id / "haproxy.cfg").exists()
        assert not (prov.state_dir / handle.amphora_id / "haproxy.pid").exists()

    pool = b.pool(lb)
    for child in (
        pool,
        b.member(pool, ports[0], address=lab.client_ip),
        b.listener(lb, 80, default_pool_id=pool.id),
    ):
        await repo.execute(lb.id, c.CreateChild(child), META)
        await wait_status(repo, lb.id, "ACTIVE")
    for handle in handles:
        assert (prov.state_dir / handle.amphora_id / "haproxy.pid").exists()
    url = f"http://{vip}/"
    await lab.wait_answers(url)
    assert await asyncio.to_thread(lab.get, url, 4) == {"b0": 4}
    assert (await wait_vrrp_states(prov, handles))[by_role["MASTER"].amphora_id] == (
        VrrpState.MASTER
    )

    await repo.execute(lb.id, c.DeleteLoadBalancer(cascade=True), META)
    await wait_status(repo, lb.id, "DELETED")
