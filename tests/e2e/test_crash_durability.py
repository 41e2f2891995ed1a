"""No acknowledged write is lost: kill -9 of the postmaster in the middle of a burst of creates.

Every create the API answered 201 must still be there once Postgres is back (the embedded
Postgres commits synchronously, with fsync on); creates that got 503 were never acknowledged.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import aiohttp
import asyncpg
import pytest

from tests.e2e.chaos import DEFAULT_SUBNET, pids, wait_ready
from tests.e2e.conftest import Stack, start_stack, stop_stack

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def crash_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("crash")
    running = start_stack(state)
    try:
        yield running
    finally:
        stop_stack(running.proc, state)


async def test_acknowledged_creates_survive_a_postmaster_kill(crash_stack: Stack) -> None:
    stack = crash_stack
    conn = await asyncpg.connect(stack.pg_dsn)
    try:
        assert await conn.fetchval("SHOW fsync") == "on"
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
    finally:
        await conn.close()

    headers = {"X-Auth-Token": stack.secret("admin.token")}
    acknowledged: list[str] = []
    refused: list[int] = []

    async def create(session: aiohttp.ClientSession, i: int) -> None:
        body = {"loadbalancer": {"name": f"durable-{i}", "vip_subnet_id": DEFAULT_SUBNET}}
        try:
            async with session.post(
                f"{stack.api_url}/v2/lbaas/loadbalancers", json=body, headers=headers
            ) as resp:
                if resp.status == 201:
                    acknowledged.append((await resp.json())["loadbalancer"]["id"])
                else:
                    assert resp.status == 503, await resp.text()
                    assert resp.headers["Retry-After"]
                    refused.append(i)
        except aiohttp.ClientError:
            refused.append(i)  # the connection died with the request: never acknowledged

    async with aiohttp.ClientSession() as session:
        tasks = []
        for i in range(120):
            tasks.append(asyncio.create_task(create(session, i)))
            if i == 60:
                # Some creates acknowledged first (a busy box may not have answered any of the
                # 60 sent so far), then the kill lands among the others.
                deadline = time.monotonic() + 30
                while not acknowledged and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                postmaster = pids(stack.state)["postgres"]
                os.kill(postmaster, signal.SIGKILL)
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)
    assert acknowledged and refused, (len(acknowledged), len(refused))
    await wait_ready(stack.state, after={"postgres": postmaster})

    conn = await asyncpg.connect(stack.pg_dsn)
    try:
        stored = {
            row["stream_id"].removeprefix("loadbalancer-")
            for row in await conn.fetch(
                "SELECT stream_id FROM events WHERE event_type = 'LoadBalancerCreated'"
            )
        }
    finally:
        await conn.close()
    lost = set(acknowledged) - stored
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged creates lost"
    async with aiohttp.ClientSession() as session:
        for lb_id in acknowledged:
            async with session.get(
                f"{stack.api_url}/v2/lbaas/loadbalancers/{lb_id}", headers=headers
            ) as resp:
                assert resp.status == 200
