"""UDP load balancing in docker amphorae: the agent's nftables DNAT in the amphora's container
(NET_ADMIN, forwarding set at create) serves a UDP listener with real datagrams from the host
through the VIP, balances new flows over two backend containers, and takes a backend whose
service stopped out of the map when its UDP-CONNECT monitor fails (the container answers ICMP
port unreachable), so every new flow goes to the other one."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import asyncpg
import docker
import pytest
from aiohttp import web
from docker.models.containers import Container

from libs.common.domain import commands as c
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from services.provisioner.drivers.docker import LABEL_DEPLOYMENT
from tests import builders as b
from tests.integration.docker.conftest import DEPLOYMENT, VIP_NETWORK
from tests.integration.docker.engine import AMPHORA_IMAGE
from tests.integration.docker.test_docker_lifecycle import (
    META,
    VIP,
    docker_provisioner,
    wait_status,
)

pytestmark = pytest.mark.docker
__all__ = ["docker_provisioner"]
ECHO_PORT = 9000
LISTENER_PORT = 7
# A UDP server answering its name, in the background of a shell that stays (PID 1), so that
# killing the server leaves the container and its address: datagrams then get ICMP port
# unreachable.
_ECHO = (
    "python3 -c 'import socket\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    f's.bind(("0.0.0.0", {ECHO_PORT}))\n'
    "while True:\n"
    "    data, peer = s.recvfrom(2048)\n"
    '    s.sendto(b"{name}", peer)\n'
    "' & echo $! > /tmp/echo.pid; exec sleep infinity"
)


@contextmanager
def udp_backends(
    client: docker.DockerClient, names: list[str]
) -> Iterator[list[tuple[Container, str]]]:
    """(container, address) of one UDP echo container per name on the test VIP network."""
    started: list[Container] = []
    try:
        for name in names:
            container = client.containers.run(
                AMPHORA_IMAGE,
                entrypoint=["sh", "-c"],
                command=[_ECHO.format(name=name)],
                network=VIP_NETWORK.name,
                labels={LABEL_DEPLOYMENT: DEPLOYMENT, "fulcrum.test": "udp-backend"},
                detach=True,
            )
            started.append(container)
        found = []
        for container in started:
            container.reload()
            networks = container.attrs["NetworkSettings"]["Networks"]
            found.append((container, networks[VIP_NETWORK.name]["IPAddress"]))
        yield found
    finally:
        for container in started:
            container.remove(force=True)


def ask(count: int) -> Counter[str]:
    """Names answering ``count`` new flows (a fresh socket each) to the VIP; "-" for none."""
    seen: Counter[str] = Counter()
    for _ in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1.0)
            sock.connect((VIP, LISTENER_PORT))
            try:
                sock.send(b"who?")
                seen[sock.recv(64).decode()] += 1
            except OSError:
                seen["-"] += 1
    return seen


async def until(wanted: Callable[[Counter[str]], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        seen = await asyncio.to_thread(ask, 10)
        if wanted(seen):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: last 10 flows {dict(seen)}")
        await asyncio.sleep(0.3)


async def test_udp_through_the_vip_balances_and_fails_over_in_containers(
    docker_provisioner: web.Application, db: asyncpg.Pool, clean_engine: docker.DockerClient
) -> None:
    repo = LoadBalancerRepository(PostgresEventStore(db))
    with udp_backends(clean_engine, ["u0", "u1"]) as backends:
        lb = b.loadbalancer(VIP)
        pool = b.pool(lb, "UDP")
        listener = b.listener(lb, LISTENER_PORT, "UDP", default_pool_id=pool.id)
        members = tuple(b.member(pool, ECHO_PORT, address) for _, address in backends)
        monitor = b.healthmonitor(pool, "UDP-CONNECT", delay=1, timeout=1)
        command = c.CreateLoadBalancer(
            lb, listeners=(listener,), pools=(pool,), members=members, healthmonitors=(monitor,)
        )
        await repo.execute(lb.id, command, META)
        await wait_status(repo, lb.id, "ACTIVE")

        await until(lambda seen: set(seen) == {"u0", "u1"}, "both backends answer")
        spread = await asyncio.to_thread(ask, 20)
        print(f"UDP ROUND_ROBIN through a docker amphora over 20 flows: {dict(spread)}")
        assert spread == Counter({"u0": 10, "u1": 10})

        stopped, _ = backends[1]
        stopped.exec_run(["sh", "-c", "kill $(cat /tmp/echo.pid)"])
        started = time.monotonic()
        await until(lambda seen: seen == Counter({"u0": 10}), "u1 taken out of the map")
        print(f"u1's service stopped -> out of the map after {time.monotonic() - started:.2f} s")

        await repo.execute(lb.id, c.DeleteLoadBalancer(cascade=True), META)
        await wait_status(repo, lb.id, "DELETED")
