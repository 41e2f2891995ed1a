"""Fixtures for the health service: the app running in this process on real Postgres, NATS and
loopback UDP; load balancers and amphorae recorded through the repositories; a heartbeat sender
that speaks the real wire format."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from libs.common import heartbeat_codec as codec
from libs.common.domain import commands as c
from libs.common.domain.model import LoadBalancerState
from libs.common.events import Metadata
from libs.common.events.amphora import AmphoraAllocated, AmphoraBooted
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import AmphoraRepository, LoadBalancerRepository
from libs.common.service import METRICS
from libs.common.settings import NatsSettings, PostgresSettings, RelaySettings
from services.health.app import SCANNER, UDP_ADDRESS, create_app
from services.health.settings import HealthSettings
from tests import builders as b
from tests.integration.provisioner.conftest import backends  # noqa: F401 (a fixture)

KEY = "test-heartbeat-key"
META = Metadata(actor="test", project_id=b.PROJECT)


def health_settings(pg_dsn: str, nats_url: str, **overrides: Any) -> HealthSettings:
    """Fast timings for tests: 1 s timeout, scans every 0.2 s, 1 s boot grace."""
    values: dict[str, Any] = {
        "postgres": PostgresSettings(dsn=pg_dsn),
        "nats": NatsSettings(url=nats_url),
        "relay": RelaySettings(poll_interval=0.5),
        "port": 0,
        "udp_port": 0,
        "heartbeat_key": KEY,
        "heartbeat_timeout": 1.0,
        "health_check_interval": 0.2,
        "stale_grace": 1.0,
        "flush_interval": 0.1,
        "refresh_interval": 0.2,
    }
    return HealthSettings(**(values | overrides))


@dataclass
class RunningHealth:
    app: web.Application
    runner: web.AppRunner

    @property
    def udp(self) -> tuple[str, int]:
        return self.app[UDP_ADDRESS]

    def metric(self, name: str) -> float:
        return self.app[METRICS].value(name)

    @property
    def scanning(self) -> bool:
        return self.app[SCANNER].active

    async def stop(self) -> None:
        await self.runner.cleanup()


StartHealth = Callable[..., Awaitable[RunningHealth]]


@pytest.fixture
async def start_health(pg_dsn: str, nats_url: str) -> AsyncIterator[StartHealth]:
    """Starts health apps (replicas) on the test's database; all are stopped afterwards."""
    started: list[RunningHealth] = []

    async def start(**overrides: Any) -> RunningHealth:
        app = create_app(health_settings(pg_dsn, nats_url, **overrides))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        running = RunningHealth(app, runner)
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            await running.stop()


@dataclass
class Site:
    """An ACTIVE LB (listener -> pool with a monitor -> members m1, m2) with one amphora."""

    lb_id: str
    amphora_id: str
    listener_id: str
    pool_id: str
    member_ids: tuple[str, str]
    create: c.CreateLoadBalancer = field(repr=False)

    def message(
        self, seq: int, *, members: tuple[str, str] = ("UP", "UP"), **overrides: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.amphora_id,
            "seq": seq,
            "ver": 3,
            "listeners": {
                self.listener_id: {
                    "status": "OPEN",
                    "stats": {"rx": 0, "tx": 0, "conns": 0, "totconns": 0, "ereq": 0},
                }
            },
            "pools": {
                f"{self.pool_id}:{self.listener_id}": {
                    "status": "UP" if "UP" in members else "DOWN",
                    "members": dict(zip(self.member_ids, members, strict=True)),
                }
            },
        }
        return body | overrides


_vips = iter(f"127.77.{i // 250}.{10 + i % 250}" for i in range(100_000))


async def create_site(db: asyncpg.Pool, *, spare_first: bool = False) -> Site:
    """Records an LB and its amphora as the provisioner would, through the repositories.
    ``spare_first``: the amphora is recorded as a spare and the LB not yet; `allocate` then
    records both."""
    store = PostgresEventStore(db)
    lbs, amps = LoadBalancerRepository(store), AmphoraRepository(store)
    lb = b.loadbalancer(next(_vips))
    pool = b.pool(lb)
    listener = b.listener(lb, 80, default_pool_id=pool.id)
    m1, m2 = b.member(pool, 8001), b.member(pool, 8002)
    create = c.CreateLoadBalancer(
        lb,
        listeners=(listener,),
        pools=(pool,),
        members=(m1, m2),
        healthmonitors=(b.healthmonitor(pool),),
    )
    amphora_id = str(uuid.uuid4())
    site = Site(lb.id, amphora_id, listener.id, pool.id, (m1.id, m2.id), create)
    booted = AmphoraBooted(
        amphora_id=amphora_id,
        driver="test",
        compute_id="0",
        agent_url="https://127.0.0.1:1",
        loadbalancer_id=None if spare_first else lb.id,
    )
    if spare_first:
        await amps.record(amphora_id, [booted], META)
        return site
    await lbs.execute(lb.id, create, META)
    await amps.record(amphora_id, [booted], META)
    await lbs.execute(lb.id, c.Activate((amphora_id,)), META)
    return site


async def allocate(db: asyncpg.Pool, site: Site) -> None:
    """Record the LB of a ``spare_first`` site and allocate its spare to it."""
    store = PostgresEventStore(db)
    lbs, amps = LoadBalancerRepository(store), AmphoraRepository(store)
    await lbs.execute(site.lb_id, site.create, META)
    allocated = AmphoraAllocated(amphora_id=site.amphora_id, loadbalancer_id=site.lb_id)
    await amps.record(site.amphora_id, [allocated], META)
    await lbs.execute(site.lb_id, c.Activate((site.amphora_id,)), META)


class Sender:
    """Sends heartbeats over loopback UDP with the real codec; seqs grow per amphora."""

    def __init__(self, address: tuple[str, int], key: str = KEY) -> None:
        self.address = address
        self.key = key.encode()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._seq: dict[str, int] = {}

    def next_seq(self, amphora_id: str) -> int:
        self._seq[amphora_id] = self._seq.get(amphora_id, 1000) + 1
        return self._seq[amphora_id]

    def raw(self, datagram: bytes) -> None:
        self._sock.sendto(datagram, self.address)

    def beat(self, site: Site, **options: Any) -> bytes:
        datagram = codec.encode(site.message(self.next_seq(site.amphora_id), **options), self.key)
        self.raw(datagram)
        return datagram

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def senders() -> Iterator[Callable[[tuple[str, int]], Sender]]:
    made: list[Sender] = []

    def make(address: tuple[str, int]) -> Sender:
        made.append(Sender(address))
        return made[-1]

    try:
        yield make
    finally:
        for sender in made:
            sender.close()


@dataclass
class Beating:
    """Keeps sending heartbeats for a set of sites every ``interval`` until stopped."""

    sender: Sender
    sites: list[Site]
    interval: float = 0.1
    options: dict[str, Any] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            for site in self.sites:
                self.sender.beat(site, **self.options)
            await asyncio.sleep(self.interval)

    def start(self) -> Beating:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def load(db: asyncpg.Pool, lb_id: str) -> LoadBalancerState:
    return await LoadBalancerRepository(PostgresEventStore(db)).load(lb_id)


async def count_events(db: asyncpg.Pool, event_type: str, stream_id: str | None = None) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM events WHERE event_type = $1 AND ($2::text IS NULL "
        "OR stream_id = $2)",
        event_type,
        stream_id,
    )
    return count
