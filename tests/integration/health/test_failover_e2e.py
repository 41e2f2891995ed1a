"""Failover end to end: real amphorae (agent + HAProxy processes) beat to a real health service;
killing an amphora's HAProxy, or the whole amphora, with SIGKILL gets the LB a replacement that
serves the VIP again. The provisioner (process driver) and health run in this process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from libs.common.domain import commands as c
from libs.common.domain.model import LoadBalancerState
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from services.provisioner.app import DRIVER
from services.provisioner.app import create_app as create_provisioner
from tests import builders as b
from tests.integration.health.conftest import (
    KEY,
    META,
    RunningHealth,
    StartHealth,
    count_events,
    eventually,
)
from tests.integration.provisioner.conftest import Backend, free_port, provisioner_settings

HEARTBEAT_INTERVAL = 0.2


@dataclass
class Stack:
    health: RunningHealth
    provisioner: web.Application
    state_dir: Path
    repo: LoadBalancerRepository


@pytest.fixture
async def stack(
    pg_dsn: str, nats_url: str, tmp_path: Path, db: asyncpg.Pool, start_health: StartHealth
) -> AsyncIterator[Stack]:
    """Health (1 s timeout) and a provisioner whose amphorae beat to it every 0.2 s."""
    health = await start_health(heartbeat_timeout=1.0, stale_grace=5.0)
    settings = provisioner_settings(pg_dsn, nats_url, tmp_path).model_copy(
        update={
            "heartbeat_key": KEY,
            "health_endpoints": [f"{health.udp[0]}:{health.udp[1]}"],
            "heartbeat_interval": HEARTBEAT_INTERVAL,
        }
    )
    app = create_provisioner(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield Stack(health, app, settings.state_dir, LoadBalancerRepository(PostgresEventStore(db)))
    finally:
        driver = app[DRIVER]
        for handle in await driver.list():
            await driver.delete(handle.amphora_id)
        await runner.cleanup()
        _kill_leftovers(settings.state_dir)


def _kill_leftovers(state_dir: Path) -> None:
    """Processes of amphorae a test killed only in part (their directories may remain)."""
    if not state_dir.exists():
        return
    for pid_file in [*state_dir.glob("*/agent.pid"), *state_dir.glob("*/haproxy.pid")]:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


async def wait_lb(
    repo: LoadBalancerRepository,
    lb_id: str,
    check: object,
    timeout: float = 30.0,
    what: str = "the LB",
) -> LoadBalancerState:
    result: list[LoadBalancerState] = []

    async def ok() -> bool:
        state = await repo.load(lb_id)
        result[:] = [state]
        return bool(check(state))  # type: ignore[operator]

    await eventually(ok, timeout=timeout, what=what)
    return result[0]


def active(state: LoadBalancerState) -> bool:
    lb = state.loadbalancer
    return lb is not None and lb.provisioning_status.value == "ACTIVE"


class Prober:
    """A client sending one request every 10 ms through the VIP; records failures."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.failures: list[float] = []
        self.successes: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=0.5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                at = time.monotonic()
                try:
                    async with session.get(self.url, headers={"Connection": "close"}) as resp:
                        ok = resp.status == 200
                        await resp.read()
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                (self.successes if ok else self.failures).append(at)
                await asyncio.sleep(0.01)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def outage(self) -> float:
        """Seconds from the first failure to the first success after it (0 if none)."""
        if not self.failures:
            return 0.0
        first = self.failures[0]
        back = [s for s in self.successes if s > first]
        return (back[0] if back else time.monotonic()) - first


async def create_serving_lb(stack: Stack, servers: list[Backend], vip: str) -> tuple[str, int]:
    lb = b.loadbalancer(vip)
    pool = b.pool(lb)
    port = free_port(vip)
    listener = b.listener(lb, port, default_pool_id=pool.id)
    members = tuple(b.member(pool, be.port) for be in servers[:2])
    await stack.repo.execute(
        lb.id,
        c.CreateLoadBalancer(lb, listeners=(listener,), pools=(pool,), members=members),
        META,
    )
    await wait_lb(stack.repo, lb.id, active, what="the LB to be ACTIVE")

    def online(state: LoadBalancerState) -> bool:  # heartbeats reach health and roll up
        return all(p.operating_status.value == "ONLINE" for p in state.pools.values())

    await wait_lb(stack.repo, lb.id, online, timeout=10.0, what="heartbeats to mark the pool")
    return lb.id, port


async def fail_and_replace(
    stack: Stack, lb_id: str, url: str, kill: list[int]
) -> tuple[float, float, str]:
    """SIGKILL ``kill``; wait for a new amphora to serve. Returns (replaced after, outage,
    failed amphora id)."""
    old = (await stack.repo.load(lb_id)).amphora_ids[0]
    prober = Prober(url)
    prober.start()
    await asyncio.sleep(0.3)
    killed_at = time.monotonic()
    for pid in kill:
        os.kill(pid, signal.SIGKILL)
    try:
        await wait_lb(
            stack.repo,
            lb_id,
            lambda s: active(s) and s.amphora_ids and old not in s.amphora_ids,
            what="a replacement amphora",
        )
        replaced = time.monotonic() - killed_at
        await eventually(
            lambda: _served_since(prober, time.monotonic()), timeout=10.0, what="traffic again"
        )
    finally:
        await prober.stop()
    return replaced, prober.outage(), old


async def _served_since(prober: Prober, since: float) -> bool:
    await asyncio.sleep(0.05)
    return any(s >= since for s in prober.successes)


def pid_of(state_dir: Path, amphora_id: str, name: str) -> int:
    return int((state_dir / amphora_id / name).read_text())


async def test_haproxy_killed_gets_a_replacement_serving_the_vip(
    stack: Stack, db: asyncpg.Pool, backends: list[Backend]
) -> None:
    lb_id, port = await create_serving_lb(stack, backends, "127.77.3.10")
    amphora = (await stack.repo.load(lb_id)).amphora_ids[0]
    haproxy = pid_of(stack.state_dir, amphora, "haproxy.pid")
    replaced, outage, old = await fail_and_replace(
        stack, lb_id, f"http://127.77.3.10:{port}/", [haproxy]
    )
    # The agent kept beating without listeners: that is no sign of life.
    assert stack.health.metric("heartbeats_not_serving_total") > 0
    assert await count_events(db, "AmphoraFailed", f"amphora-{old}") == 1
    status = await db.fetchval("SELECT status FROM amphora_view WHERE id = $1", old)
    assert status == "DELETED"
    print(f"\nHAProxy SIGKILL: replacement ACTIVE after {replaced:.2f} s, outage {outage:.2f} s")
    assert replaced < 20.0


async def test_whole_amphora_killed_gets_a_replacement_serving_the_vip(
    stack: Stack, db: asyncpg.Pool, backends: list[Backend]
) -> None:
    lb_id, port = await create_serving_lb(stack, backends, "127.77.3.11")
    amphora = (await stack.repo.load(lb_id)).amphora_ids[0]
    pids = [pid_of(stack.state_dir, amphora, n) for n in ("agent.pid", "haproxy.pid")]
    replaced, outage, old = await fail_and_replace(
        stack, lb_id, f"http://127.77.3.11:{port}/", pids
    )
    assert await count_events(db, "AmphoraFailed", f"amphora-{old}") == 1
    reason = await db.fetchval(
        "SELECT data->>'reason' FROM events WHERE stream_id = $1 AND event_type = 'AmphoraFailed'",
        f"amphora-{old}",
    )
    assert reason.startswith("no heartbeat for")
    print(f"\namphora SIGKILL: replacement ACTIVE after {replaced:.2f} s, outage {outage:.2f} s")
    assert replaced < 20.0
    # The new amphora beats: its pool is ONLINE from its heartbeats.
    state = await wait_lb(
        stack.repo,
        lb_id,
        lambda s: all(p.operating_status.value == "ONLINE" for p in s.pools.values()),
        what="the replacement's heartbeats",
    )
    assert len(state.amphora_ids) == 1
