"""NATS crashes (SIGKILL) and comes back: the outbox holds every write meanwhile, and the
relay and a consumer recover on their own, delivering each event once and in stream order.

Real servers only: Postgres, ``nats-server -js`` killed by pid and restarted on the same
port and store, the real event store, OutboxRelay and ConsumerRunner.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from deploy.local.embedded import EmbeddedNats
from libs.common import bus
from libs.common.events import Envelope
from libs.common.events.amphora import AmphoraDeleted
from libs.common.eventstore import PostgresEventStore
from libs.common.settings import NatsSettings
from services.api.app import create_app
from tests.integration.api.conftest import SUBNET, api_settings
from tests.integration.test_relay_and_consumers import EFFECTS_DDL, META, Harness, wait_until

STREAMS = 5
PER_STREAM = 6
RECOVERY_BOUND = 30.0  # seconds from the restart until every event is handled


async def stream_ready(url: str) -> NatsSettings:
    settings = NatsSettings(url=url, ack_wait=5.0, max_deliver=3)
    nc = await bus.connect(settings, "setup")
    try:
        await bus.ensure_stream(nc.jetstream(), settings)
    finally:
        await nc.close()
    return settings


def crash(nats: EmbeddedNats) -> None:
    """SIGKILL the server by pid: no goodbye to clients, no flush of its state."""
    pid = nats.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while nats.pid is not None:  # reaped: start() may run again
        assert time.monotonic() < deadline, "nats-server did not die"
        time.sleep(0.01)


async def has_rows(db: asyncpg.Pool, table: str, expected: int) -> bool:
    return bool(await db.fetchval(f"SELECT count(*) FROM {table}") == expected)


async def stream_messages(settings: NatsSettings) -> int:
    nc = await bus.connect(settings, "check")
    try:
        info = await nc.jetstream().stream_info(settings.stream)
    finally:
        await nc.close()
    return int(info.state.messages)


@pytest.fixture
async def harness(
    db: asyncpg.Pool, pg_dsn: str, nats_factory: EmbeddedNats
) -> AsyncIterator[Harness]:
    await db.execute(EFFECTS_DDL)
    settings = await stream_ready(nats_factory.start())
    h = Harness(db, pg_dsn, settings)
    try:
        yield h
    finally:
        await h.close()


async def test_writes_during_a_nats_crash_are_delivered_once_in_order(
    harness: Harness, nats_factory: EmbeddedNats
) -> None:
    db = harness.db
    relay = await harness.relay()
    await harness.consumer()
    before = await append_round(harness.store, version=0)
    await wait_until(lambda: has_rows(db, "effects", STREAMS))  # relay and consumer are live

    crash(nats_factory)
    during: list[Envelope] = []
    for version in range(1, PER_STREAM):
        started = time.monotonic()
        during += await append_round(harness.store, version)
        assert time.monotonic() - started < 2.0  # appends never wait for NATS
        await asyncio.sleep(1.0)  # the relay keeps trying (and failing) to publish meanwhile
    assert await db.fetchval("SELECT count(*) FROM outbox") == len(during)
    assert relay.active

    nats_factory.start()
    restarted = time.monotonic()
    total = len(before) + len(during)
    await wait_until(lambda: has_rows(db, "effects", total), timeout=RECOVERY_BOUND)
    await wait_until(lambda: has_rows(db, "outbox", 0), timeout=5)
    recovery = time.monotonic() - restarted
    await asyncio.sleep(1.0)  # room for a stray redelivery to show up

    rows = await harness.effects()
    assert sorted(str(r["event_id"]) for r in rows) == sorted(
        str(e.event_id) for e in before + during
    )  # each event handled exactly once
    for s in range(STREAMS):
        versions = [r["version"] for r in rows if r["stream_id"] == f"amphora-o{s}"]
        assert versions == list(range(1, PER_STREAM + 1))  # in stream order
    assert await stream_messages(harness.settings) == total  # republishes were absorbed
    assert recovery < RECOVERY_BOUND


async def test_an_idle_consumer_takes_a_new_event_at_once_after_nats_restarts(
    harness: Harness, nats_factory: EmbeddedNats
) -> None:
    """The pull request an idle consumer had waiting is lost with the server: the consumer asks
    again once reconnected, not when that request would have expired (30 s here)."""
    db = harness.db
    await harness.relay()
    await harness.consumer(linger=30.0)
    await append_round(harness.store, version=0)
    await wait_until(lambda: has_rows(db, "effects", STREAMS))
    await asyncio.sleep(0.5)  # idle: its next request waits on the server

    crash(nats_factory)
    nats_factory.start()
    await asyncio.sleep(1.5)  # reconnected (a try every 0.5 s)
    appended = time.monotonic()
    await append_round(harness.store, version=1)
    await wait_until(lambda: has_rows(db, "effects", 2 * STREAMS), timeout=10.0)
    assert time.monotonic() - appended < 3.0


async def append_round(store: PostgresEventStore, version: int) -> list[Envelope]:
    """One event on each of the STREAMS streams, at ``version`` (the expected version)."""
    appended: list[Envelope] = []
    for s in range(STREAMS):
        appended += await store.append(
            f"amphora-o{s}", version, [AmphoraDeleted(amphora_id=f"o{s}-{version}")], META
        )
    return appended


async def test_api_accepts_a_load_balancer_while_nats_is_down(
    pg_dsn: str, nats_factory: EmbeddedNats
) -> None:
    settings = await stream_ready(nats_factory.start())
    runner = web.AppRunner(create_app(api_settings(pg_dsn, settings.url)), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        crash(nats_factory)
        async with aiohttp.ClientSession() as session:
            created = await post_lb(session, base)
            lb_id = created["loadbalancer"]["id"]
            async with session.get(f"{base}/v2/lbaas/loadbalancers/{lb_id}") as resp:
                assert resp.status == 200  # read-your-writes, NATS or not
        conn = await asyncpg.connect(pg_dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM outbox") >= 1
            nats_factory.start()
            deadline = time.monotonic() + RECOVERY_BOUND
            while await conn.fetchval("SELECT count(*) FROM outbox"):
                assert time.monotonic() < deadline, "the API's relay did not drain the outbox"
                await asyncio.sleep(0.1)
            appended = await conn.fetchval("SELECT count(*) FROM events")
        finally:
            await conn.close()
        assert await stream_messages(settings) == appended  # each event on the bus once
    finally:
        await runner.cleanup()


async def post_lb(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    body = {"loadbalancer": {"vip_subnet_id": SUBNET, "name": "during-outage"}}
    async with session.post(f"{base}/v2/lbaas/loadbalancers", json=body) as resp:
        payload: dict[str, Any] = await resp.json()
        assert resp.status == 201, payload
    return payload
