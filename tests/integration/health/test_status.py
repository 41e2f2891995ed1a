"""Operating status from a stream of heartbeats: events on transitions, never per heartbeat."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import asyncpg

from libs.common.domain import commands as c
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from libs.common.streams import StreamId
from tests import builders as b
from tests.integration.health.conftest import (
    META,
    Beating,
    Sender,
    StartHealth,
    count_events,
    create_site,
    eventually,
    load,
)


async def statuses(db: asyncpg.Pool, lb_id: str, *ids: str) -> dict[str, str]:
    state = await load(db, lb_id)
    known = {
        **{lb_id: state.loadbalancer},
        **state.listeners,
        **state.pools,
        **state.members,
    }
    return {i: known[i].operating_status.value for i in ids}  # type: ignore[union-attr]


async def test_member_down_is_member_error_pool_and_lb_degraded_then_online_again(
    db: asyncpg.Pool, start_health: StartHealth, senders: Callable[[tuple[str, int]], Sender]
) -> None:
    site = await create_site(db)
    m1, m2 = site.member_ids
    ids = (site.lb_id, site.listener_id, site.pool_id, m1, m2)
    stream = StreamId.loadbalancer_status(site.lb_id)
    health = await start_health()
    beating = Beating(senders(health.udp), [site]).start()
    try:

        async def are(*wanted: str) -> bool:
            return tuple((await statuses(db, site.lb_id, *ids)).values()) == wanted

        await eventually(lambda: are("ONLINE", "ONLINE", "ONLINE", "ONLINE", "ONLINE"))
        await asyncio.sleep(0.5)  # five more heartbeats, nothing new
        assert await count_events(db, "OperatingStatusChanged", stream) == 1

        beating.options = {"members": ("UP", "DOWN")}
        await eventually(lambda: are("DEGRADED", "ONLINE", "DEGRADED", "ONLINE", "ERROR"))
        await asyncio.sleep(0.5)
        assert await count_events(db, "OperatingStatusChanged", stream) == 2

        beating.options = {}
        await eventually(lambda: are("ONLINE", "ONLINE", "ONLINE", "ONLINE", "ONLINE"))
        await asyncio.sleep(0.5)
        assert await count_events(db, "OperatingStatusChanged", stream) == 3
    finally:
        await beating.stop()

    # The read model the API serves shows it too.
    state = await load(db, site.lb_id)
    body = json.loads(await db.fetchval("SELECT body FROM member_view WHERE id = $1", m2))
    assert body["operating_status"] == "ONLINE"
    changes = [
        json.loads(r["data"])["statuses"]
        for r in await db.fetch(
            "SELECT data::text AS data FROM events WHERE stream_id = $1 "
            "AND event_type = 'OperatingStatusChanged' ORDER BY stream_version",
            stream,
        )
    ]
    assert changes[1] == {site.lb_id: "DEGRADED", site.pool_id: "DEGRADED", m2: "ERROR"}
    assert changes[2] == {site.lb_id: "ONLINE", site.pool_id: "ONLINE", m2: "ONLINE"}
    assert health.metric("status_changes_total") == 3
    # Flaps never lengthen the LB's own stream; each carries the LB's project for tenant feeds.
    assert await count_events(db, "OperatingStatusChanged", StreamId.loadbalancer(site.lb_id)) == 0
    projects = await db.fetch(
        "SELECT DISTINCT metadata->>'project_id' AS p FROM events WHERE stream_id = $1", stream
    )
    assert [r["p"] for r in projects] == [state.loadbalancer.project_id]  # type: ignore[union-attr]


async def test_a_change_by_another_writer_is_picked_up(
    db: asyncpg.Pool, start_health: StartHealth, senders: Callable[[tuple[str, int]], Sender]
) -> None:
    """A member added through the API (and applied) gets its status from the next heartbeats:
    the cache's incremental check (the LBs with events since a few refreshes ago) finds the
    change, with no full check of every cached LB in between."""
    site = await create_site(db)
    health = await start_health()
    sender = senders(health.udp)
    beating = Beating(sender, [site]).start()
    repo = LoadBalancerRepository(PostgresEventStore(db))
    try:
        await eventually(lambda: _member_is(db, site.lb_id, site.member_ids[0], "ONLINE"))
        await eventually(
            lambda: _true(health.metric("status_refreshes_incremental_total") >= 1),
            what="an incremental check of the cache",
        )
        full_checks = health.metric("status_refreshes_full_total")
        state = await load(db, site.lb_id)
        added = b.member(state.pools[site.pool_id], 8003)
        await repo.execute(site.lb_id, c.CreateChild(added), META)
        await asyncio.sleep(0.5)  # PENDING_UPDATE: health records nothing meanwhile
        assert (await load(db, site.lb_id)).members[added.id].operating_status.value == "OFFLINE"
        await repo.execute(site.lb_id, c.ApplyChanges(), META)
        members = dict(zip(site.member_ids, ("UP", "UP"), strict=True)) | {added.id: "DOWN"}
        pools = {f"{site.pool_id}:{site.listener_id}": {"status": "UP", "members": members}}
        beating.options = {"pools": pools}
        await eventually(lambda: _member_is(db, site.lb_id, added.id, "ERROR"))
        assert (await load(db, site.lb_id)).loadbalancer.operating_status.value == "DEGRADED"  # type: ignore[union-attr]
        assert health.metric("status_refreshes_full_total") == full_checks
    finally:
        await beating.stop()


async def _member_is(db: asyncpg.Pool, lb_id: str, member_id: str, status: str) -> bool:
    state = await load(db, lb_id)
    return bool(state.members[member_id].operating_status.value == status)


async def _true(value: bool) -> bool:
    return value
