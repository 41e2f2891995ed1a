"""UDP load balancing on the netns driver with real traffic: the provisioner (in this process)
runs an amphora in a namespace, the agent serves UDP listeners with nftables DNAT, and a client
namespace on the bridge talks to a VIP with two backends of each kind: echo servers that answer
their name, and DNS responders that answer A queries with an address of their own.

Proven: ROUND_ROBIN spreads new flows evenly; SOURCE_IP persistence keeps each client address on
one backend; a killed backend is taken out by the UDP-CONNECT monitor (ICMP port unreachable)
and its clients go to the other; members added and removed live. LBs are created through the
repository (the monitors use a 1 s delay, below the API's 3 s minimum, to keep the test short).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime

import asyncpg
import pytest

from libs.common.agent_contract import UdpMemberState
from libs.common.domain import commands as c
from libs.common.domain.model import Topology
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from services.provisioner.app import CONFIGURATOR
from tests import builders as b
from tests.integration.netns.conftest import NetnsProvisioner
from tests.integration.netns.lab import PYTHON, REPO, NetnsLab
from tests.integration.provisioner.test_process_lifecycle import META, wait_status

pytestmark = pytest.mark.netns
UDP_TOOLS = "tests.integration.netns.udp_tools"


def serve(lab: NetnsLab, *argv: str) -> subprocess.Popen[bytes]:
    """A UDP server in the client namespace (killed by the lab's cleanup)."""
    proc = lab.spawn(PYTHON, "-m", UDP_TOOLS, *argv)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    assert line == "ready", f"server did not start: {line}"
    return proc


def ask(
    lab: NetnsLab, host: str, port: int, count: int, source: str = "", dns: str = ""
) -> Counter[str]:
    """``count`` requests from the client namespace, each a new flow; {answer: n}."""
    argv = ["ask", "--host", host, "--port", str(port), "--count", str(count)]
    argv += ["--timeout", "0.5"]
    if source:
        argv += ["--source", source]
    if dns:
        argv += ["--dns", dns]
    result = subprocess.run(
        ["ip", "netns", "exec", lab.client_ns, PYTHON, "-m", UDP_TOOLS, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return Counter({str(k): int(v) for k, v in json.loads(result.stdout).items()})


async def until(
    lab: NetnsLab, host: str, port: int, check: object, what: str, timeout: float = 15.0, **kw: str
) -> Counter[str]:
    """Ask 10 times until ``check(answers)`` holds (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = await asyncio.to_thread(ask, lab, host, port, 10, **kw)
        if check(seen):  # type: ignore[operator]
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: last answers {dict(seen)}")
        await asyncio.sleep(0.2)


async def change(repo: LoadBalancerRepository, lb_id: str, command: c.Command) -> None:
    await repo.execute(lb_id, command, META)
    await wait_status(repo, lb_id, "ACTIVE")


async def test_udp_balancing_persistence_failover_and_live_members(
    netns_provisioner: NetnsProvisioner, lab: NetnsLab, db: asyncpg.Pool
) -> None:
    prov = netns_provisioner
    repo = LoadBalancerRepository(PostgresEventStore(db))
    client = lab.client_ip
    echo = {name: serve(lab, "echo", "--address", client, "--port", str(port), "--name", name)
            for name, port in (("u0", 9001), ("u1", 9002))}  # fmt: skip
    answers = {"d0": lab.host(10), "d1": lab.host(11)}
    for port, name in ((5301, "d0"), (5302, "d1")):
        serve(lab, "dns", "--address", client, "--port", str(port), "--answer", answers[name])

    vip = lab.vip(0)
    lb = b.loadbalancer(vip, topology=Topology.SINGLE)
    echo_pool = b.pool(lb, "UDP")
    dns_pool = b.pool(lb, "UDP")
    echo_listener = b.listener(lb, 7, "UDP", default_pool_id=echo_pool.id)
    dns_listener = b.listener(lb, 53, "UDP", default_pool_id=dns_pool.id)
    echo_members = (b.member(echo_pool, 9001, client), b.member(echo_pool, 9002, client))
    dns_members = (b.member(dns_pool, 5301, client), b.member(dns_pool, 5302, client))
    monitor = b.healthmonitor(echo_pool, "UDP-CONNECT", delay=1, timeout=1)
    command = c.CreateLoadBalancer(
        lb,
        listeners=(echo_listener, dns_listener),
        pools=(echo_pool, dns_pool),
        members=echo_members + dns_members,
        healthmonitors=(monitor,),
    )
    await repo.execute(lb.id, command, META)
    state = await wait_status(repo, lb.id, "ACTIVE", timeout=45)
    (handle,) = [h for h in await prov.driver.list() if h.lb_id == lb.id]

    # ROUND_ROBIN: new flows alternate between the two backends.
    seen = await until(lab, vip, 7, lambda s: sum(s.values()) == 10 and len(s) == 2, "echo")
    spread = await asyncio.to_thread(ask, lab, vip, 7, 40)
    print(f"UDP echo ROUND_ROBIN over 40 flows: {dict(spread)}")
    assert spread == Counter({"u0": 20, "u1": 20})
    dns = await asyncio.to_thread(ask, lab, vip, 53, 40, dns="www.example.test")
    print(f"DNS ROUND_ROBIN over 40 queries: {dict(dns)}")
    assert dns == Counter({answers["d0"]: 20, answers["d1"]: 20})

    # SOURCE_IP persistence: each client address stays on one backend.
    extra = [lab.host(240 + i) for i in range(6)]
    for address in extra:
        subprocess.run(
            ["ip", "-n", lab.client_ns, "addr", "add", f"{address}/32", "dev", "eth0"],
            check=True,
        )
    sticky = {"type": "SOURCE_IP", "persistence_timeout": 60, "persistence_granularity": None}
    await change(repo, lb.id, _update("pools", echo_pool.id, session_persistence=sticky))
    placed: dict[str, str] = {}
    for address in [client, *extra]:
        seen = await asyncio.to_thread(ask, lab, vip, 7, 8, source=address)
        assert len(seen) == 1 and not next(iter(seen)).startswith("error"), (address, seen)
        placed[address] = next(iter(seen))
    print(f"UDP echo SOURCE_IP persistence, 8 flows per client: {placed}")
    assert set(placed.values()) == {"u0", "u1"}  # 7 clients, new ones round-robin

    # Failover: u0 dies; the monitor takes it out, every client now gets u1.
    echo["u0"].send_signal(signal.SIGKILL)
    echo["u0"].wait(5)
    killed = time.monotonic()
    await until(lab, vip, 7, lambda s: s == Counter({"u1": 10}), "failover to u1")
    took = time.monotonic() - killed
    status = await prov.app[CONFIGURATOR].client(handle).udp_status()
    states = {m: s for li in status.listeners for m, s in li.members.items()}
    assert states[echo_members[0].id] is UdpMemberState.DOWN
    assert states[echo_members[1].id] is UdpMemberState.UP
    for address in [client, *extra]:
        assert await asyncio.to_thread(ask, lab, vip, 7, 3, source=address) == Counter({"u1": 3})
    print(f"UDP failover: killed backend out of the map after {took:.2f} s")
    assert took < 10

    # Live members: u2 added takes its share, u1 removed leaves it to u2 alone.
    serve(lab, "echo", "--address", client, "--port", "9003", "--name", "u2")
    u2 = b.member(echo_pool, 9003, client)
    await change(repo, lb.id, c.CreateChild(child=u2))
    await change(repo, lb.id, _update("pools", echo_pool.id, session_persistence=None))
    seen = await until(lab, vip, 7, lambda s: s == Counter({"u1": 5, "u2": 5}), "u2 added")
    await change(repo, lb.id, c.DeleteChild(kind="members", child_id=echo_members[1].id))
    await until(lab, vip, 7, lambda s: s == Counter({"u2": 10}), "u1 removed")
    state = await repo.load(lb.id)
    assert {m.id for m in state.pool_members(echo_pool.id)} == {echo_members[0].id, u2.id}

    # Deleting the LB removes the amphora and with it the table.
    await repo.execute(lb.id, c.DeleteLoadBalancer(cascade=True), META)
    await wait_status(repo, lb.id, "DELETED")
    assert not [h for h in await prov.driver.list() if h.lb_id == lb.id]
    assert os.path.exists(f"/run/netns/{lab.client_ns}")


def _update(kind: str, child_id: str, **changes: object) -> c.UpdateChild:
    return c.UpdateChild(kind=kind, child_id=child_id, changes=changes, now=datetime.now(UTC))
