"""UDP load balancing on the netns driver with real traffic: the provisioner (in this process)
runs an amphora in a namespace, the agent serves UDP listeners with nftables DNAT, and a client
namespace on the bridge talks to a VIP with two backends of each kind: echo servers that answer
their name, and DNS responders that answer A queries with an address of their own.

Proven: ROUND_ROBIN spreads new flows evenly; LEAST_CONNECTIONS sends new flows to the member
with the fewest; SOURCE_IP persistence keeps each client address on one backend; a killed
backend is taken out by the UDP-CONNECT monitor (ICMP port unreachable) and its clients go to
the other (an HTTP monitor on members' monitor ports likewise), and the amphora's heartbeats
(received on the lab's gateway, rolled up as the health service does) show it ERROR; members
added and removed live. LBs are created through the repository (the monitors' 1 s delay is
below the API's 3 s minimum: a short test).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from libs.common.agent_contract import UdpMemberState
from libs.common.domain import commands as c
from libs.common.domain.model import OperatingStatus, Topology
from libs.common.eventstore import PostgresEventStore
from libs.common.heartbeat_codec import Heartbeat, decode
from libs.common.repository import LoadBalancerRepository
from services.health.domain.rollup import LbView, roll_up
from services.provisioner.app import CONFIGURATOR, create_app
from tests import builders as b
from tests.integration.netns.conftest import NetnsProvisioner, beating_settings
from tests.integration.netns.lab import PYTHON, REPO, NetnsLab
from tests.integration.provisioner.test_process_lifecycle import META, wait_status

pytestmark = pytest.mark.netns
UDP_TOOLS = "tests.integration.netns.udp_tools"
# Every flow the tests send leaves from a source port of its own, below the kernel's ephemeral
# range: a port the kernel picked again while an earlier flow's conntrack entry lives would be
# that flow again, which keeps its backend (ROUND_ROBIN would not advance for it).
_SOURCE_PORTS = itertools.count(20000)
KEY = "udp-test-heartbeat-key"


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
    first_port = next(_SOURCE_PORTS)
    for _ in range(count - 1):
        next(_SOURCE_PORTS)
    argv = ["ask", "--host", host, "--port", str(port), "--count", str(count)]
    argv += ["--timeout", "0.5", "--first-port", str(first_port)]
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


@dataclass
class Heartbeats:
    """Heartbeats of the test's amphorae, received on the lab's gateway address."""

    sock: socket.socket

    def latest(self, amphora_id: str) -> Heartbeat | None:
        """The newest heartbeat of ``amphora_id`` among those waiting (the rest dropped)."""
        found = None
        while True:
            try:
                datagram = self.sock.recv(65536)
            except BlockingIOError:
                return found
            beat = decode(datagram, KEY.encode())
            if beat.id == amphora_id:
                found = beat


@pytest.fixture
async def udp_provisioner(
    pg_dsn: str, nats_url: str, tmp_path: Path, lab: NetnsLab
) -> AsyncIterator[tuple[NetnsProvisioner, Heartbeats]]:
    """The netns provisioner whose amphorae beat every 0.2 s to a socket of this test."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = beating_settings(pg_dsn, nats_url, tmp_path, lab, KEY, port)
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    running = NetnsProvisioner(app, settings.state_dir)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        await lab.attach_client(running.driver)
        receiver.bind((lab.network.gateway, port))
        receiver.setblocking(False)
        yield running, Heartbeats(receiver)
    finally:
        receiver.close()
        driver = running.driver
        for handle in await driver.list():
            await driver.delete(handle.amphora_id)
        await runner.cleanup()
        with contextlib.suppress(Exception):
            await driver.remove_network(lab.network.name)


async def reported(
    heartbeats: Heartbeats,
    repo: LoadBalancerRepository,
    lb_id: str,
    amphora_id: str,
    wanted: dict[str, OperatingStatus],
) -> None:
    """Until the amphora's heartbeat rolls up to ``wanted`` statuses (bounded)."""
    deadline = time.monotonic() + 10
    while True:
        view = LbView.of(await repo.load(lb_id))
        beat = heartbeats.latest(amphora_id)
        if view is not None and beat is not None:
            statuses = roll_up(view, beat)
            if all(statuses.get(k) == v for k, v in wanted.items()):
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"heartbeats never showed {wanted}: last {beat}")
        await asyncio.sleep(0.2)


async def test_udp_balancing_persistence_failover_and_live_members(
    udp_provisioner: tuple[NetnsProvisioner, Heartbeats], lab: NetnsLab, db: asyncpg.Pool
) -> None:
    prov, heartbeats = udp_provisioner
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
    least_pool = b.pool(lb, "UDP", "LEAST_CONNECTIONS")
    least_listener = b.listener(lb, 8, "UDP", default_pool_id=least_pool.id)
    command = c.CreateLoadBalancer(
        lb,
        listeners=(echo_listener, dns_listener, least_listener),
        pools=(echo_pool, dns_pool, least_pool),
        members=(*echo_members, *dns_members, b.member(least_pool, 9001, client)),
        healthmonitors=(monitor,),
    )
    await repo.execute(lb.id, command, META)
    state = await wait_status(repo, lb.id, "ACTIVE", timeout=45)
    (handle,) = [h for h in await prov.driver.list() if h.lb_id == lb.id]
    # The heartbeat reports the UDP listeners and members: ONLINE and NO_MONITOR roll up.
    await reported(heartbeats, repo, lb.id, handle.amphora_id, {
        echo_listener.id: OperatingStatus.ONLINE,
        dns_listener.id: OperatingStatus.ONLINE,
        echo_members[0].id: OperatingStatus.ONLINE,
        dns_members[0].id: OperatingStatus.NO_MONITOR,
        lb.id: OperatingStatus.ONLINE,
    })  # fmt: skip

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

    # LEAST_CONNECTIONS: 6 flows on u0 (conntrack keeps them 30 s), then u1 joins: the next
    # new flows all go to u1, the member with the fewest.
    assert await asyncio.to_thread(ask, lab, vip, 8, 6) == Counter({"u0": 6})
    await change(repo, lb.id, c.CreateChild(child=b.member(least_pool, 9002, client)))
    # Once the agent has u1 in the map (the change applied, then a count of the flows every
    # 0.5 s), u1 has the fewest; until then new flows still land on u0 and only widen the gap.
    deadline = time.monotonic() + 20
    while (least := await asyncio.to_thread(ask, lab, vip, 8, 4)) != Counter({"u1": 4}):
        if time.monotonic() > deadline:
            status = await prov.app[CONFIGURATOR].client(handle).udp_status()
            raise AssertionError(f"u1 never took the new flows: {dict(least)}; agent: {status}")
        await asyncio.sleep(0.5)
    print(f"UDP LEAST_CONNECTIONS after 6 flows on u0, 4 new flows: {dict(least)}")

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
    await reported(heartbeats, repo, lb.id, handle.amphora_id, {
        echo_members[0].id: OperatingStatus.ERROR,
        echo_members[1].id: OperatingStatus.ONLINE,
        echo_pool.id: OperatingStatus.DEGRADED,
        lb.id: OperatingStatus.DEGRADED,
    })  # fmt: skip

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

    # An HTTP monitor on the DNS pool, through each member's monitor port: d0's answers 200
    # (an HTTP backend), d1's is closed, so d1 goes down and every query goes to d0.
    (http_port,) = await asyncio.to_thread(lab.start_backends, ["h0"], 8181)
    await change(repo, lb.id, _update("members", dns_members[0].id, monitor_port=http_port))
    await change(repo, lb.id, _update("members", dns_members[1].id, monitor_port=8189))
    http_monitor = b.healthmonitor(dns_pool, "HTTP", delay=1, timeout=1)
    await change(repo, lb.id, c.CreateChild(child=http_monitor))
    await until(
        lab, vip, 53, lambda s: s == Counter({answers["d0"]: 10}), "HTTP monitor", dns="a.test"
    )
    status = await prov.app[CONFIGURATOR].client(handle).udp_status()
    states = {m: s for li in status.listeners for m, s in li.members.items()}
    assert states[dns_members[0].id] is UdpMemberState.UP
    assert states[dns_members[1].id] is UdpMemberState.DOWN

    # Deleting the LB removes the amphora and with it the table.
    await repo.execute(lb.id, c.DeleteLoadBalancer(cascade=True), META)
    await wait_status(repo, lb.id, "DELETED")
    assert not [h for h in await prov.driver.list() if h.lb_id == lb.id]
    assert os.path.exists(f"/run/netns/{lab.client_ns}")


def _update(kind: str, child_id: str, **changes: object) -> c.UpdateChild:
    return c.UpdateChild(kind=kind, child_id=child_id, changes=changes, now=datetime.now(UTC))
