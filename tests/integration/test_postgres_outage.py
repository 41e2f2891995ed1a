"""The control plane survives Postgres going away and coming back, on a Postgres of each test's own.

The API answers 503 with ``Retry-After`` while the database is down (stopped, or its postmaster
killed) and serves again once it is back, without a restart, losing nothing it acknowledged. A
consumer waits an outage out: every message is handled once afterwards, none dead-lettered,
none redelivered. The stale scan fails over no amphora whose heartbeats could not be written.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from deploy.local.embedded import EmbeddedPostgres
from libs.common import bus, subjects
from libs.common.database import create_pool
from libs.common.events import Envelope, Metadata
from libs.common.events.amphora import AmphoraDeleted
from libs.common.eventstore import PostgresEventStore
from libs.common.schema import upgrade
from libs.common.secretstore import new_key
from libs.common.settings import NatsSettings, PostgresSettings
from services.api.app import create_app as create_api
from services.api.http.errors import DATABASE_UNAVAILABLE, RETRY_AFTER_SECONDS
from services.health.app import SCANNER, UDP_ADDRESS
from services.health.app import create_app as create_health
from tests.integration.api.conftest import SUBNET, Api, Reply, api_settings
from tests.integration.health.conftest import (
    Beating,
    Sender,
    Site,
    create_site,
    health_settings,
)

META = Metadata(correlation_id="outage", actor="test")
EFFECTS_DDL = "CREATE TABLE IF NOT EXISTS effects (event_id uuid, seen_at timestamptz)"
RECOVERY_TIMEOUT = 15.0


class RestartablePostgres:
    """A Postgres of one test that it stops, crashes and starts again (same port and data).

    ``start`` and ``stop`` run on one thread kept for the server's lifetime, so the event loop
    goes on serving meanwhile; one thread, because the postmaster's parent-death signal fires
    when the thread that spawned it ends.
    """

    def __init__(self, state_dir: Path) -> None:
        self.server = EmbeddedPostgres(state_dir)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outage-pg")

    @property
    def dsn(self) -> str:
        return self.server.dsn

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self.server.start)

    async def stop(self) -> None:
        """A fast shutdown: sessions are ended, then new connections are refused."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self.server.stop)

    async def crash(self) -> None:
        """SIGKILL the postmaster, as a crash would, and wait until it is reaped."""
        pid = self.server.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.server.pid is not None:  # polls, and so reaps, the child
            assert time.monotonic() < deadline, "the killed postmaster was not reaped"
            await asyncio.sleep(0.01)

    def close(self) -> None:
        self.server.stop()
        self._thread.shutdown()
        shutil.rmtree(self.server.data_dir, ignore_errors=True)  # ~40 MB; the log stays


@pytest.fixture
async def postgres(tmp_path: Path) -> AsyncIterator[RestartablePostgres]:
    pg = RestartablePostgres(tmp_path / "pg")
    try:
        await pg.start()
        yield pg
    finally:
        pg.close()


@pytest.fixture
def no_task_died(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails the test if a background loop of an app died (``tasks.background`` logs it)."""
    caplog.set_level(logging.ERROR, logger="libs.common.tasks")
    yield
    died = [r.getMessage() for r in caplog.records if r.name == "libs.common.tasks"]
    assert not died, died


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = RECOVERY_TIMEOUT
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.1)


async def fetchval(dsn: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


# -- the API -------------------------------------------------------------------------------


@pytest.fixture
async def api(postgres: RestartablePostgres, nats_url: str) -> AsyncIterator[Api]:
    app = create_api(api_settings(postgres.dsn, nats_url, secret_keys=new_key()))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        async with aiohttp.ClientSession() as session:
            yield Api(app, f"http://127.0.0.1:{runner.addresses[0][1]}", session)
    finally:
        await runner.cleanup()


async def create_lb(api: Api) -> Reply:
    return await api.post("/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": SUBNET}})


async def assert_unavailable(api: Api, lb_id: str) -> None:
    octavia = {"faultcode": "Server", "faultstring": DATABASE_UNAVAILABLE, "debuginfo": None}
    replies = {
        "list": await api.get("/v2/lbaas/loadbalancers"),
        "show": await api.get(f"/v2/lbaas/loadbalancers/{lb_id}"),
        "create": await create_lb(api),
        "key manager": await api.get("/v1/secrets"),
    }
    for what, reply in replies.items():
        assert reply.status == 503, (what, reply.status, reply.body)
        assert reply.headers.get("Retry-After") == str(RETRY_AFTER_SECONDS), what
        if what == "key manager":
            assert reply.body == {
                "code": 503,
                "title": "Service Unavailable",
                "description": DATABASE_UNAVAILABLE,
            }
        else:
            assert reply.body == octavia, what


async def created_once_back(api: Api) -> str:
    """POST until the API serves again (bounded); the id of the LB it created."""
    created: list[str] = []

    async def create() -> bool:
        reply = await create_lb(api)
        assert reply.status in (201, 503), (reply.status, reply.body)
        if reply.status == 201:
            created.append(reply.body["loadbalancer"]["id"])
        return bool(created)

    await eventually(create, "the API to create again")
    return created[0]


async def test_api_answers_503_while_postgres_is_down_and_serves_again_without_restart(
    postgres: RestartablePostgres, api: Api, no_task_died: None
) -> None:
    first = (await create_lb(api)).body["loadbalancer"]["id"]

    await postgres.stop()
    await assert_unavailable(api, first)
    await postgres.start()
    second = await created_once_back(api)
    listed = await api.get("/v2/lbaas/loadbalancers", expect=200)
    assert {lb["id"] for lb in listed.body["loadbalancers"]} == {first, second}

    await postgres.crash()
    await assert_unavailable(api, first)
    await postgres.start()  # crash recovery, then ready
    third = await created_once_back(api)
    await api.get(f"/v2/lbaas/loadbalancers/{first}", expect=200)

    # Every acknowledged create is in the events table, and the relay published them all.
    stored = await fetchval(
        postgres.dsn,
        "SELECT array_agg(stream_id) FROM events WHERE event_type = 'LoadBalancerCreated'",
    )
    assert sorted(stored) == sorted(f"loadbalancer-{i}" for i in (first, second, third))

    async def outbox_empty() -> bool:
        return bool(await fetchval(postgres.dsn, "SELECT count(*) FROM outbox") == 0)

    await eventually(outbox_empty, "the relay to publish what was appended after the outage")


# -- consumers -----------------------------------------------------------------------------


async def record_effect(envelope: Envelope, conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO effects (event_id, seen_at) VALUES ($1, clock_timestamp())", envelope.event_id
    )


async def test_a_consumer_waits_out_an_outage_and_handles_each_message_once(
    postgres: RestartablePostgres, nats_url: str, no_task_died: None
) -> None:
    # A short ack_wait and few deliveries: naking through the outage would exhaust them.
    settings = NatsSettings(url=nats_url, ack_wait=2.0, max_deliver=3)
    pool = await create_pool(PostgresSettings(dsn=postgres.dsn, max_pool=10))
    nc = await bus.connect(settings, "outage-test")
    runner: asyncio.Task[None] | None = None
    try:
        await upgrade(pool)
        await pool.execute(EFFECTS_DDL)
        js = nc.jetstream()
        await bus.ensure_stream(js, settings)
        store = PostgresEventStore(pool)  # appended here, published by the test (no relay)
        envelopes = [
            (await store.append(f"amphora-s{s}", v, [AmphoraDeleted(amphora_id=f"{s}")], META))[0]
            for v in range(4)
            for s in range(3)
        ]
        spec = bus.ConsumerSpec("test-outage", [subjects.ALL_EVENTS], record_effect, nak_delay=0.1)
        consumer = bus.ConsumerRunner(js, pool, spec, settings)
        runner = asyncio.create_task(consumer.run())

        async def publish(envelope: Envelope) -> None:
            subject = subjects.event_subject(envelope.stream_id, envelope.event_type)
            body = json.dumps(envelope.to_wire()).encode()
            await js.publish(subject, body, headers={bus.Header.MSG_ID: str(envelope.event_id)})

        async def effects(count: int) -> bool:
            return bool(await pool.fetchval("SELECT count(*) FROM effects") == count)

        for envelope in envelopes[:3]:
            await publish(envelope)
        await eventually(lambda: effects(3), "the consumer to run")

        await postgres.stop()
        for envelope in envelopes[3:]:
            await publish(envelope)
        await js.publish(subjects.event_subject("amphora-p", "AmphoraDeleted"), b"not json")
        await asyncio.sleep(5.0)  # past ack_wait twice, and past every nak delay
        await postgres.start()

        await eventually(lambda: effects(len(envelopes)), "every message to be handled")
        await asyncio.sleep(1.0)  # room for a duplicate to show
        rows = await pool.fetch("SELECT event_id FROM effects")
        assert sorted(r["event_id"] for r in rows) == sorted(e.event_id for e in envelopes)
        assert await pool.fetchval("SELECT count(*) FROM processed_messages") == len(envelopes)
        # Only the poison message is dead-lettered, once the database could take its row.
        reasons = await pool.fetch("SELECT reason FROM dead_letters")
        assert [r["reason"].split(":")[0] for r in reasons] == ["undecodable event"]
        info = await js.consumer_info(settings.stream, spec.name)
        assert info.num_ack_pending == 0
        assert info.num_redelivered == 0  # the outage cost no delivery
    finally:
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        await nc.close()
        await pool.close()


# -- the stale scan ------------------------------------------------------------------------


async def amphora_statuses(pool: asyncpg.Pool, sites: list[Site]) -> dict[str, str]:
    rows = await pool.fetch(
        "SELECT id, status FROM amphora_view WHERE id = ANY($1::text[])",
        [s.amphora_id for s in sites],
    )
    return {r["id"]: r["status"] for r in rows}


async def test_stale_scan_fails_nothing_over_after_a_postgres_restart(
    postgres: RestartablePostgres, nats_url: str, no_task_died: None
) -> None:
    # The writer flushes every 1 s, the scanner reconnects within 0.2 s: a scanner that judged
    # right after reconnecting would read the last-seen times of before the outage.
    settings = health_settings(
        postgres.dsn,
        nats_url,
        heartbeat_timeout=2.0,
        health_check_interval=0.2,
        flush_interval=1.0,
    )
    pool = await create_pool(PostgresSettings(dsn=postgres.dsn, max_pool=5))
    runner: web.AppRunner | None = None
    sender: Sender | None = None
    beating: Beating | None = None
    try:
        await upgrade(pool)
        sites = [await create_site(pool), await create_site(pool)]
        app = create_health(settings)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        sender = Sender(app[UDP_ADDRESS])
        beating = Beating(sender, list(sites)).start()

        async def scanning() -> bool:
            return app[SCANNER].active

        await eventually(scanning, "the scanner to take the lock")
        await asyncio.sleep(2.5)  # past its start-up settle: it judges from now on

        await postgres.stop()
        await asyncio.sleep(3.0)  # longer than heartbeat_timeout: beats arrive, unwritten
        await postgres.start()
        await eventually(scanning, "the scanner to reconnect")
        await asyncio.sleep(3.0)  # its settle, and more scans
        assert set((await amphora_statuses(pool, sites)).values()) == {"ALLOCATED"}
        failed = await pool.fetchval(
            "SELECT count(*) FROM events WHERE event_type = 'AmphoraFailed'"
        )
        assert failed == 0

        # It judges again: an amphora that falls silent now is failed over.
        silent, alive = sites
        beating.sites = [alive]

        async def silent_failed() -> bool:
            statuses = await amphora_statuses(pool, sites)
            return statuses == {silent.amphora_id: "PENDING_DELETE", alive.amphora_id: "ALLOCATED"}

        await eventually(silent_failed, "the silent amphora to fail over")
    finally:
        if beating is not None:
            await beating.stop()
        if sender is not None:
            sender.close()
        if runner is not None:
            await runner.cleanup()
        await pool.close()
