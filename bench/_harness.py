"""Shared pieces of the benchmarks: embedded servers, service processes, percentiles.

Not a benchmark itself (``make bench`` skips ``_*.py``).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import asyncpg

from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres
from libs.common.domain.model import Listener, LoadBalancer, Member, Pool

SUBNET = "6a3b9c3e-5f2d-4c1a-9b7e-1f0d2c3b4a51"


@dataclass(frozen=True)
class LbTree:
    """An HTTP load balancer with a listener, its default pool and two members (not stored)."""

    loadbalancer: LoadBalancer
    listener: Listener
    pool: Pool
    members: tuple[Member, ...]


def lb_tree(vip_address: str, now: datetime.datetime) -> LbTree:
    """A fresh ``LbTree`` of project "bench" on ``vip_address``; members on 127.0.0.1:8000-1."""
    common = {"project_id": "bench", "created_at": now}
    lb = LoadBalancer(
        id=str(uuid.uuid4()),
        vip_address=vip_address,
        vip_port_id=str(uuid.uuid4()),
        vip_subnet_id="bench-subnet",
        vip_network_id="bench-network",
        **common,
    )
    pool = Pool(
        id=str(uuid.uuid4()),
        loadbalancer_id=lb.id,
        protocol="HTTP",
        lb_algorithm="ROUND_ROBIN",
        **common,
    )
    listener = Listener(
        id=str(uuid.uuid4()),
        loadbalancer_id=lb.id,
        protocol="HTTP",
        protocol_port=80,
        default_pool_id=pool.id,
        **common,
    )
    members = tuple(
        Member(
            id=str(uuid.uuid4()),
            pool_id=pool.id,
            address="127.0.0.1",
            protocol_port=8000 + n,
            **common,
        )
        for n in range(2)
    )
    return LbTree(lb, listener, pool, members)


def with_application_name(dsn: str, name: str) -> str:
    """``dsn`` whose sessions show as ``name`` in ``pg_stat_activity`` (the benchmarks charge
    each Postgres backend's CPU to the service it serves)."""
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "application_name"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("application_name", name)])))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of seconds, in milliseconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 (loopback)
                if resp.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds ``pid`` has run, every thread (``/proc/<pid>/task/*/schedstat``, in
    nanoseconds: ``stat``'s 10 ms ticks are sampled, and miss or overcharge wake-ups as short
    as a heartbeat's); None when it is gone."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    used = 0
    for task in tasks:
        with suppress(OSError, ValueError, IndexError):
            used += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
    return used / 1e9


async def postgres_roles(dsn: str) -> dict[int, str]:
    """Each Postgres backend's pid -> the service it serves (its application_name), or its
    kind (autovacuum, walwriter ...)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid, coalesce(nullif(application_name, ''), backend_type) AS name "
            "FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return {int(r["pid"]): str(r["name"]) for r in rows}


@dataclass
class Stack:
    """Postgres, NATS and service processes in one temp dir; ``close`` stops them by pid."""

    root: Path
    pg_dsn: str = ""
    nats_url: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)  # service pid -> service name
    # Variables every service started from now on gets as they are (e.g. OTEL_*).
    environment: dict[str, str] = field(default_factory=dict)
    _servers: list[EmbeddedPostgres | EmbeddedNats] = field(default_factory=list)

    def start_infra(self) -> None:
        pg = EmbeddedPostgres(self.root / "pg")
        nats = EmbeddedNats(self.root / "nats")
        self._servers += [pg, nats]
        self.pg_dsn = pg.start()
        self.nats_url = nats.start()

    def server_pids(self) -> list[int | None]:
        """The pids of Postgres (the postmaster) and NATS."""
        return [server.pid for server in self._servers]

    def service(self, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        prefix = f"FULCRUM_{name.upper()}_"
        full = {
            **os.environ,
            **self.environment,
            f"{prefix}POSTGRES__DSN": with_application_name(self.pg_dsn, name),
            f"{prefix}NATS__URL": self.nats_url,
            **{prefix + k: v for k, v in env.items()},
        }
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 (the child owns it)
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], env=full, stdout=log, stderr=log
        )
        self.procs.append(proc)
        self.names[proc.pid] = name
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        try:
            # Amphorae outlive the provisioner. os.walk, not glob: an agent host that ends
            # meanwhile removes its directory, which glob raises on.
            for directory, _, files in os.walk(self.root):
                if "agent.pid" in files:
                    try:
                        os.kill(int((Path(directory) / "agent.pid").read_text()), 15)
                    except (OSError, ValueError):
                        pass
            time.sleep(0.5)
        finally:
            for server in reversed(self._servers):
                server.stop()


@contextmanager
def stack(prefix: str) -> Iterator[Stack]:
    root = Path(__import__("tempfile").mkdtemp(prefix=prefix))
    s = Stack(root)
    try:
        s.start_infra()
        yield s
    finally:
        s.close()
        shutil.rmtree(root, ignore_errors=True)


async def serving(
    session: aiohttp.ClientSession, url: str, want: str | None = None, timeout: float = 30
) -> None:
    """Until ``url`` answers 200 (with the body ``want``, when given), polling every 5 ms on
    new connections; RuntimeError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with session.get(url, headers={"Connection": "close"}) as resp:
                if resp.status == 200 and (want is None or await resp.text() == want):
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} never served {want or ''}")
        await asyncio.sleep(0.005)


BACKEND_CFG = """global
    maxconn 4000
defaults
    mode http
    timeout client 10s
    timeout server 10s
    timeout connect 2s
frontend one
    bind 127.0.0.1:{p1}
    http-request return status 200 content-type text/plain string one
frontend two
    bind 127.0.0.1:{p2}
    http-request return status 200 content-type text/plain string two
frontend three
    bind 127.0.0.1:{p3}
    http-request return status 200 content-type text/plain string three
"""


class Api:
    """The Octavia API of a bench stack (noauth), with the few calls the benchmarks make."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.s = session
        self.base = base

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.s.post(f"{self.base}{path}", json=body) as resp:
            data: dict[str, Any] = await resp.json()
            assert resp.status in (201, 202), data
            return data

    async def wait_active(self, lb_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            async with self.s.get(f"{self.base}/v2/lbaas/loadbalancers/{lb_id}") as resp:
                lb: dict[str, Any] = (await resp.json())["loadbalancer"]
            if lb["provisioning_status"] == "ACTIVE":
                return lb
            if lb["provisioning_status"] == "ERROR" or time.monotonic() > deadline:
                raise RuntimeError(f"LB {lb_id}: {lb['provisioning_status']}")
            await asyncio.sleep(0.005)


def graph(vip: str, port: int, members: list[int]) -> dict[str, Any]:
    """A single-call create body: LB on ``vip``, HTTP listener on ``port``, its default pool
    with a member on 127.0.0.1 at each of ``members``."""
    return {
        "loadbalancer": {
            "vip_subnet_id": SUBNET,
            "vip_address": vip,
            "listeners": [
                {
                    "protocol": "HTTP",
                    "protocol_port": port,
                    "default_pool": {
                        "name": "p",
                        "protocol": "HTTP",
                        "lb_algorithm": "ROUND_ROBIN",
                        "members": [{"address": "127.0.0.1", "protocol_port": m} for m in members],
                    },
                }
            ],
        }
    }


class Vips:
    """Fresh loopback VIPs, 127.77.x.y, one per call of ``next``."""

    def __init__(self) -> None:
        self.n = 10

    def next(self) -> str:
        self.n += 1
        return f"127.77.{self.n // 250}.{self.n % 250 + 2}"


class StatusWatch:
    """Watches many LBs: every ``poll`` seconds one list of the LBs still PENDING_CREATE.

    The list is filtered (``provisioning_status=PENDING_CREATE&fields=id``), so a poll costs
    the API and Postgres what is in flight, not the whole fleet. A watched LB missing from it
    is confirmed with a show of that LB alone: ``wait_active`` returns once it is ACTIVE
    (raises on ERROR or after ``timeout``); any other state (not projected yet, or moved on
    since) keeps it watched.
    """

    PENDING: Final = "PENDING_CREATE"

    def __init__(self, api: Api, poll: float) -> None:
        self._api = api
        self._poll = poll
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self.requests = 0

    async def wait_active(self, lb_id: str, timeout: float = 120) -> None:
        future = self._waiting.setdefault(lb_id, asyncio.get_running_loop().create_future())
        try:
            await asyncio.wait_for(future, timeout)
        finally:
            del self._waiting[lb_id]

    async def run(self) -> None:
        """Poll until cancelled."""
        url = (
            f"{self._api.base}/v2/lbaas/loadbalancers?provisioning_status={self.PENDING}&fields=id"
        )
        while True:
            await asyncio.sleep(self._poll)
            if not self._waiting:
                continue
            async with self._api.s.get(url) as resp:
                self.requests += 1
                pending = {lb["id"] for lb in (await resp.json())["loadbalancers"]}
            left = [i for i, f in self._waiting.items() if i not in pending and not f.done()]
            for lb_id, status in zip(
                left, await asyncio.gather(*(self._status(i) for i in left)), strict=True
            ):
                future = self._waiting.get(lb_id)
                if future is None or future.done():
                    continue
                if status == "ACTIVE":
                    future.set_result(None)
                elif status == "ERROR":
                    future.set_exception(RuntimeError(f"LB {lb_id}: ERROR"))

    async def _status(self, lb_id: str) -> str | None:
        """The LB's provisioning status (None: not found)."""
        url = f"{self._api.base}/v2/lbaas/loadbalancers/{lb_id}?fields=provisioning_status"
        async with self._api.s.get(url) as resp:
            self.requests += 1
            if resp.status == 404:
                return None
            body: dict[str, Any] = await resp.json()
        return str(body["loadbalancer"]["provisioning_status"])


def print_ratios(results: dict[int, tuple[float, int]], goal: float) -> None:
    """A table of requests/s by amphora count, each as a ratio to N times one amphora against
    ``goal``, with the failed requests (``results``: count -> (requests/s, failed))."""
    one = results[1][0]
    print(f"{'amphorae':>8} {'requests/s':>11} {'ratio to N x one':>17} {'failed':>7}")
    for count, (rate, failed) in sorted(results.items()):
        ratio = rate / (count * one) if one else 0.0
        verdict = "" if count == 1 else ("  ok" if ratio >= goal else f"  below {goal}")
        print(f"{count:>8} {rate:>11.0f} {ratio:>17.2f} {failed:>7}{verdict}")
