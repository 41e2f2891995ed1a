"""Additional VIPs and IPv6 on the netns driver, with real traffic: a dual-stack lab network
(a /24 of 198.18.96.0/19 and a /64 of fd00::/8), backends listening on IPv4 and on IPv6 in
the client namespace, and load balancers whose VIPs are of both families.

SINGLE: every VIP is plugged on the amphora and every one serves (from the client namespace,
and over IPv6 from the root namespace through the uplink); a replacement amphora announces
its IPv6 VIP with an unsolicited neighbour advertisement, so the client's neighbour entry
moves to the new MAC before the client sends anything; an IPv6 member added later and an
HTTP health monitor over IPv6 keep every member serving. ACTIVE_STANDBY with an IPv6 primary
VIP: VRRP runs over the amphorae's IPv6 addresses, the IPv4 VIP rides in
``virtual_ipaddress_excluded``, and a killed MASTER's VIPs move to the BACKUP within the
failover bound, IPv6 clients included (keepalived's unsolicited NA).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import asyncpg
import pytest

from libs.common.agent_contract import VrrpState
from libs.common.domain import commands as c
from libs.common.domain.model import AdditionalVip, Topology
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from tests import builders as b
from tests.integration.netns.conftest import NetnsProvisioner
from tests.integration.netns.lab import NetnsLab, host_addresses, kill_everything_in
from tests.integration.netns.test_netns_failover import (
    created_pair,
    keepalived_conf,
    lb_handles,
    unicast,
    vrrp,
)
from tests.integration.netns.tools import AS_OUTAGE_BOUND
from tests.integration.provisioner.test_process_lifecycle import META, wait_status

pytestmark = pytest.mark.netns

V6_SUBNET_ID = "subnet-v6"
V4_SUBNET_ID = "subnet-v4-b"


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    """A dual-stack lab (overrides the IPv4 one of conftest.py for this module)."""
    lab = NetnsLab.create(dual_stack=True)
    try:
        yield lab
    finally:
        lab.cleanup()
    assert not lab.leftovers(), f"left behind: {lab.leftovers()}"


def url(address: str) -> str:
    return f"http://[{address}]/" if ":" in address else f"http://{address}/"


def mac_of(namespace: str, interface: str = "eth0") -> str:
    out = subprocess.run(
        ["ip", "-n", namespace, "-j", "link", "show", "dev", interface],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return str(json.loads(out)[0]["address"])


def neighbour_mac(namespace: str, address: str) -> str | None:
    """The link-layer address ``namespace`` holds for ``address`` (None: no entry)."""
    out = subprocess.run(
        ["ip", "-n", namespace, "-j", "-6", "neigh", "show", address],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    entries = json.loads(out or "[]")
    return str(entries[0]["lladdr"]) if entries and "lladdr" in entries[0] else None


def root_get(address: str, count: int) -> dict[str, int]:
    """``count`` GETs from the root namespace (the test process), each on a new connection."""
    seen: dict[str, int] = {}
    for _ in range(count):
        with urllib.request.urlopen(url(address), timeout=2) as reply:
            body = reply.read().decode()
        seen[body] = seen.get(body, 0) + 1
    return seen


async def dual_stack_lb(
    lab: NetnsLab, vips: list[tuple[str, str]], topology: Topology
) -> c.CreateLoadBalancer:
    """An HTTP LB on ``vips`` (subnet id, address; the first is the primary) whose members
    are an IPv4 backend ("b4") and an IPv6 backend ("b6") in the client namespace."""
    assert lab.client_ip6 is not None
    (port4,) = await asyncio.to_thread(lab.start_backends, ["b4"], 8081)
    (port6,) = await asyncio.to_thread(lab.start_backends, ["b6"], 8082, lab.client_ip6)
    (_, primary), *extra = vips
    lb = b.loadbalancer(
        primary,
        topology=topology,
        additional_vips=tuple(AdditionalVip(subnet_id=s, ip_address=a) for s, a in extra),
    )
    pool = b.pool(lb)
    listener = b.listener(lb, 80, default_pool_id=pool.id)
    members = (
        b.member(pool, port4, address=lab.client_ip),
        b.member(pool, port6, address=lab.client_ip6),
    )
    return c.CreateLoadBalancer(lb, listeners=(listener,), pools=(pool,), members=members)


async def test_single_serves_on_every_vip_and_announces_its_ipv6_vip_after_failover(
    netns_provisioner: NetnsProvisioner, lab: NetnsLab, db: asyncpg.Pool
) -> None:
    prov = netns_provisioner
    repo = LoadBalancerRepository(PostgresEventStore(db))
    primary, extra4, extra6 = lab.vip(0), lab.vip(1), lab.vip6(0)
    command = await dual_stack_lb(
        lab, [(b.SUBNET, primary), (V6_SUBNET_ID, extra6), (V4_SUBNET_ID, extra4)], Topology.SINGLE
    )
    lb_id = command.loadbalancer.id
    await repo.execute(lb_id, command, META)
    await wait_status(repo, lb_id, "ACTIVE")
    (old,) = await lb_handles(prov, lb_id)
    assert sorted(host_addresses(old.compute_id)) == sorted([primary, extra4])
    assert host_addresses(old.compute_id, "-6") == [extra6]
    started = time.monotonic()
    for address in (primary, extra6, extra4):
        await lab.wait_answers(url(address))
        seen = await asyncio.to_thread(lab.get, url(address), 10)
        assert seen == {"b4": 5, "b6": 5}, (address, seen)
    from_root = await asyncio.to_thread(root_get, extra6, 4)
    assert from_root == {"b4": 2, "b6": 2}
    print(
        f"SINGLE, 3 VIPs (IPv4, IPv6, IPv4), members IPv4 + IPv6: 34 requests in "
        f"{time.monotonic() - started:.2f} s, evenly balanced on each VIP"
    )
    assert neighbour_mac(lab.client_ns, extra6) == mac_of(old.compute_id)

    # A replacement amphora (another MAC) takes the VIPs: its unsolicited NA moves the
    # client's neighbour entry before the client sends a single packet.
    kill_everything_in(old.compute_id)
    await repo.execute(lb_id, c.FailoverLoadBalancer(old.amphora_id, reason="test"), META)
    await wait_status(repo, lb_id, "ACTIVE")
    (new,) = await lb_handles(prov, lb_id)
    assert new.amphora_id != old.amphora_id
    new_mac = mac_of(new.compute_id)
    deadline = time.monotonic() + 2
    while neighbour_mac(lab.client_ns, extra6) != new_mac:
        assert time.monotonic() < deadline, "the client's neighbour entry kept the old MAC"
        await asyncio.sleep(0.02)
    for address in (primary, extra6, extra4):
        seen = await asyncio.to_thread(lab.get, url(address), 4)
        assert seen == {"b4": 2, "b6": 2}, (address, seen)

    # A second IPv6 member joins at runtime, then an HTTP monitor checks all three: HAProxy
    # checks IPv6 members from the amphora's own IPv6 address, and none is taken out.
    state = await repo.load(lb_id)
    (pool,) = state.pools.values()
    assert lab.client_ip6 is not None
    (port,) = await asyncio.to_thread(lab.start_backends, ["b6x"], 8083, lab.client_ip6)
    await repo.execute(lb_id, c.CreateChild(b.member(pool, port, address=lab.client_ip6)), META)
    await wait_status(repo, lb_id, "ACTIVE")
    monitor = b.healthmonitor(pool, "HTTP", delay=1, timeout=1)
    await repo.execute(lb_id, c.CreateChild(monitor), META)
    await wait_status(repo, lb_id, "ACTIVE")
    await asyncio.sleep(2.5)  # two check intervals: a failing check would have taken one out
    for address in (extra6, primary):
        seen = await asyncio.to_thread(lab.get, url(address), 6)
        assert seen == {"b4": 2, "b6": 2, "b6x": 2}, (address, seen)

    await repo.execute(lb_id, c.DeleteLoadBalancer(cascade=True), META)
    await wait_status(repo, lb_id, "DELETED")
    assert await prov.driver.list() == []


async def test_active_standby_with_an_ipv6_vip_fails_over_for_ipv6_clients(
    netns_provisioner: NetnsProvisioner, lab: NetnsLab, db: asyncpg.Pool
) -> None:
    prov = netns_provisioner
    repo = LoadBalancerRepository(PostgresEventStore(db))
    vip6, vip4 = lab.vip6(2), lab.vip(2)
    command = await dual_stack_lb(
        lab, [(V6_SUBNET_ID, vip6), (b.SUBNET, vip4)], Topology.ACTIVE_STANDBY
    )
    master, backup = await created_pair(prov, repo, command)
    assert master.lb_network_ip6 is not None and backup.lb_network_ip6 is not None
    # VRRP speaks the primary VIP's family; the IPv4 VIP moves along, unadvertised.
    conf = keepalived_conf(prov, master)
    assert unicast(conf) == (master.lb_network_ip6, (backup.lb_network_ip6,))
    excluded = conf.split("virtual_ipaddress_excluded {", 1)[1].split("}", 1)[0].split()
    assert excluded == [f"{vip4}/32", "dev", "eth0"]
    assert host_addresses(master.compute_id, "-6") == [vip6]
    assert host_addresses(master.compute_id) == [vip4]
    assert host_addresses(backup.compute_id, "-6") == host_addresses(backup.compute_id) == []
    for address in (vip6, vip4):
        await lab.wait_answers(url(address))
        assert await asyncio.to_thread(lab.get, url(address), 10) == {"b4": 5, "b6": 5}

    prober = lab.start_prober(url(vip6), prov.state_dir.parent)
    await asyncio.sleep(0.5)
    killed_at = time.monotonic()
    kill_everything_in(master.compute_id)
    deadline = time.monotonic() + 5
    while (await vrrp(prov, backup)).state != VrrpState.MASTER:
        assert time.monotonic() < deadline, "the BACKUP never became MASTER"
        await asyncio.sleep(0.02)
    taken_over = time.monotonic() - killed_at
    await asyncio.sleep(1.0)
    seen = await prober.measure(killed_at)
    print(
        f"ACTIVE_STANDBY, IPv6 VIP: BACKUP is MASTER {taken_over:.2f} s after the kill; longest "
        f"IPv6 client gap {seen.longest_gap:.3f} s ({seen.failures} failed, "
        f"{seen.successes} answered)"
    )
    assert seen.longest_gap <= AS_OUTAGE_BOUND, seen
    assert host_addresses(backup.compute_id, "-6") == [vip6]
    assert host_addresses(backup.compute_id) == [vip4]
    assert neighbour_mac(lab.client_ns, vip6) == mac_of(backup.compute_id)
    for address in (vip6, vip4):
        assert await asyncio.to_thread(lab.get, url(address), 4) == {"b4": 2, "b6": 2}
