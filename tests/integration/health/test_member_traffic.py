"""Member traffic end to end: a real amphora (agent + HAProxy, process driver) reads HAProxy's
server rows into its heartbeats, the health service stores them, and the API's member stats
endpoint and the health service's member gauges show requests through each member."""

from __future__ import annotations

from typing import Any

import aiohttp
import asyncpg
from prometheus_client.core import Metric

from services.health.adapters.traffic_metrics import traffic_families
from tests.integration.api.conftest import MakeApi, make_api  # noqa: F401 (a fixture)
from tests.integration.health.conftest import eventually
from tests.integration.health.test_failover_e2e import (  # noqa: F401 (stack is a fixture)
    Stack,
    create_serving_lb,
    stack,
)
from tests.integration.provisioner.conftest import Backend

VIP = "127.77.3.12"
REQUESTS = 10


def _member_gauges(families: list[Metric], name: str) -> dict[str, float]:
    return {
        s.labels["member_id"]: s.value
        for f in families
        for s in f.samples
        if s.name == f"fulcrum_health_member_{name}"
    }


async def test_requests_through_members_move_their_counters_in_the_api(  # noqa: F811
    stack: Stack,  # noqa: F811
    db: asyncpg.Pool,
    backends: list[Backend],
    make_api: MakeApi,  # noqa: F811
) -> None:
    lb_id, port = await create_serving_lb(stack, backends, VIP)
    state = await stack.repo.load(lb_id)
    pool_id = next(iter(state.pools))
    members = {m.protocol_port: m.id for m in state.members.values()}
    api = await make_api()

    async def stats(member_id: str) -> dict[str, Any]:
        reply = await api.get(f"/v2/lbaas/pools/{pool_id}/members/{member_id}/stats", expect=200)
        return dict(reply.body["stats"])

    before = {member_id: await stats(member_id) for member_id in members.values()}
    async with aiohttp.ClientSession() as http:
        for _ in range(REQUESTS):
            async with http.get(f"http://{VIP}:{port}/", headers={"Connection": "close"}) as resp:
                assert resp.status == 200
                await resp.read()
    hits = {members[backend.port]: backend.hits for backend in backends if backend.port in members}
    assert sum(hits.values()) == REQUESTS and all(hits.values()), hits

    async def counted() -> bool:
        now = {member_id: await stats(member_id) for member_id in members.values()}
        return all(
            now[m]["total_connections"] - before[m]["total_connections"] >= hits[m]
            for m in members.values()
        )

    await eventually(counted, timeout=15.0, what="member counters in the API")
    for member_id, served in hits.items():
        now = await stats(member_id)
        assert now["total_connections"] - before[member_id]["total_connections"] == served
        assert now["bytes_out"] > before[member_id]["bytes_out"]  # the responses
        assert now["bytes_in"] > before[member_id]["bytes_in"]  # the requests
        assert now["request_errors"] == 0 and now["active_connections"] == 0

    families = list(await traffic_families(db, "fulcrum_health"))
    connections = _member_gauges(families, "connections")
    assert {m: connections[m] for m in members.values()} == {
        m: float((await stats(m))["total_connections"]) for m in members.values()
    }
