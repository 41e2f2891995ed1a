"""Member changes go through HAProxy's runtime API: no reload, no dropped request."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import aiohttp
import asyncpg

from libs.common.domain import commands as c
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from services.provisioner.app import CONFIGURATOR
from tests import builders as b
from tests.integration.provisioner.conftest import Backend, RunningProvisioner, free_port
from tests.integration.provisioner.test_process_lifecycle import (
    META,
    get_names,
    http_lb,
    wait_status,
)


async def worker_pids(
    provisioner: RunningProvisioner, repo: LoadBalancerRepository, lb_id: str
) -> set[int]:
    state = await repo.load(lb_id)
    handles = [h for h in await provisioner.driver.list() if h.amphora_id in state.amphora_ids]
    client = provisioner.app[CONFIGURATOR].client(handles[0])
    return {row["pid"] for row in await client.stats() if row.get("pid")}


async def agent_requests(
    provisioner: RunningProvisioner, repo: LoadBalancerRepository, lb_id: str
) -> list[tuple[str, str]]:
    """The (method, path) of every request the provisioner sends to the LB's agent from now
    on (its client, spied on)."""
    state = await repo.load(lb_id)
    handle = next(h for h in await provisioner.driver.list() if h.amphora_id in state.amphora_ids)
    client = provisioner.app[CONFIGURATOR].client(handle)
    sent: list[tuple[str, str]] = []
    send = client._request

    async def spied(method: str, path: str, **options: Any) -> bytes:
        sent.append((method, path))
        return await send(method, path, **options)

    client._request = spied  # type: ignore[method-assign]
    return sent


async def steady_load(
    url: str, stop: asyncio.Event, results: Counter[str], running: asyncio.Event
) -> None:
    """Requests back to back (half keep-alive, half new connections) until ``stop``, while
    ``running`` is set; bounded."""
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        n = 0
        while not stop.is_set() and time.monotonic() < deadline:
            await running.wait()
            headers = {"Connection": "close"} if n % 2 else {}
            try:
                async with session.get(url, headers=headers) as resp:
                    results["ok" if resp.status == 200 else f"http {resp.status}"] += 1
                    await resp.read()
            except aiohttp.ClientError as exc:
                results[type(exc).__name__] += 1
            n += 1


async def test_member_add_weight_disable_remove_without_reload_or_drops(
    provisioner: RunningProvisioner, db: asyncpg.Pool, backends: list[Backend]
) -> None:
    repo = LoadBalancerRepository(PostgresEventStore(db))
    vip, port = "127.77.2.10", free_port("127.77.2.10")
    command = http_lb(vip, port, backends[:1])
    lb_id = command.loadbalancer.id
    await repo.execute(lb_id, command, META)
    state = await wait_status(repo, lb_id, "ACTIVE")
    pool = next(iter(state.pools.values()))
    pids = await worker_pids(provisioner, repo, lb_id)
    url = f"http://{vip}:{port}/"

    stop, running, results = asyncio.Event(), asyncio.Event(), Counter[str]()
    running.set()
    load = asyncio.ensure_future(steady_load(url, stop, results, running))
    try:
        added = b.member(pool, backends[1].port)
        requests = await agent_requests(provisioner, repo, lb_id)
        started = time.perf_counter()
        await repo.execute(lb_id, c.CreateChild(added), META)
        await wait_status(repo, lb_id, "ACTIVE")
        live_after = time.perf_counter() - started
        # The runtime change and the config that carries it: one request to the agent.
        assert requests == [("POST", "/haproxy/servers")]
        # Paused: requests interleaved one for one with the load's would all land on one
        # slot of the round robin, and miss the member just added.
        running.clear()
        seen = await get_names(url, 10)
        running.set()
        assert set(seen) == {"b0", "b1"}, seen

        now = b.member(pool, 1).created_at
        await repo.execute(lb_id, c.UpdateChild("members", added.id, {"weight": 3}, now), META)
        await wait_status(repo, lb_id, "ACTIVE")
        # Paused: requests interleaved one for one with the load would sample every other
        # slot of the weighted rotation, and could see 1:1 where it serves 3:1.
        running.clear()
        seen = await get_names(url, 40)
        running.set()
        assert seen["b1"] >= 2 * seen["b0"] > 0, seen

        first = next(iter(m for m in state.members.values()))
        change = {"admin_state_up": False}
        await repo.execute(lb_id, c.UpdateChild("members", first.id, change, now), META)
        await wait_status(repo, lb_id, "ACTIVE")
        assert set(await get_names(url, 6)) == {"b1"}

        await repo.execute(
            lb_id, c.UpdateChild("members", first.id, {"admin_state_up": True}, now), META
        )
        await wait_status(repo, lb_id, "ACTIVE")
        await repo.execute(lb_id, c.DeleteChild("members", added.id), META)
        await wait_status(repo, lb_id, "ACTIVE")
        assert set(await get_names(url, 4)) == {"b0"}
    finally:
        stop.set()
        running.set()
        await load
    assert await worker_pids(provisioner, repo, lb_id) == pids  # never reloaded
    assert results["ok"] > 50 and set(results) == {"ok"}, results
    print(f"member add -> live: {live_after * 1000:.0f} ms")
