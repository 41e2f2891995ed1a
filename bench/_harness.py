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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

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


@dataclass
class Stack:
    """Postgres, NATS and service processes in one temp dir; ``close`` stops them by pid."""

    root: Path
    pg_dsn: str = ""
    nats_url: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _servers: list[EmbeddedPostgres | EmbeddedNats] = field(default_factory=list)

    def start_infra(self) -> None:
        pg = EmbeddedPostgres(self.root / "pg")
        nats = EmbeddedNats(self.root / "nats")
        self._servers += [pg, nats]
        self.pg_dsn = pg.start()
        self.nats_url = nats.start()

    def service(self, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        prefix = f"FULCRUM_{name.upper()}_"
        full = {
            **os.environ,
            f"{prefix}POSTGRES__DSN": self.pg_dsn,
            f"{prefix}NATS__URL": self.nats_url,
            **{prefix + k: v for k, v in env.items()},
        }
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 (the child owns it)
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], env=full, stdout=log, stderr=log
        )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for pid_file in self.root.glob("**/agent.pid"):  # amphorae outlive the provisioner
            try:
                os.kill(int(pid_file.read_text()), 15)
            except (OSError, ValueError):
                pass
        time.sleep(0.5)
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
