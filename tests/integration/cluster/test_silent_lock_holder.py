"""A singleton whose lock-holding server goes silent without closing the connection (its host
lost: no reset ever arrives) gives the connection up after its statement timeout and competes
for the lock again, instead of waiting on the dead session for as long as TCP retries.

Frozen here by SIGSTOP of the backend process serving the holder's session.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable

import asyncpg

from libs.common import bus
from libs.common.events import Metadata
from libs.common.events.amphora import AmphoraDeleted
from libs.common.eventstore import PostgresEventStore
from libs.common.outbox import RELAY_LOCK_KEY, OutboxRelay
from libs.common.repository import AmphoraRepository
from libs.common.service import Metrics
from libs.common.settings import RelaySettings
from services.health.adapters.postgres import SCANNER_LOCK_KEY
from services.health.handlers.stale_scan import ScanPolicy, StaleScanner
from tests.integration.conftest import Jet

STATEMENT_TIMEOUT = 1.0
WAIT = 15.0


async def eventually(check: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out after {WAIT} s waiting for {what}"
        await asyncio.sleep(0.05)


async def lock_holder_pid(db: asyncpg.Pool, key: int) -> int | None:
    pid: int | None = await db.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND ((classid::bigint << 32) | objid::bigint) = $1",
        key,
    )
    return pid


async def test_relay_gives_up_a_silent_server_and_takes_the_lock_again(
    db: asyncpg.Pool, pg_dsn: str, jet: Jet
) -> None:
    relay = OutboxRelay(
        pg_dsn,
        bus.JetStreamPublisher(jet.js, jet.settings),
        RelaySettings(poll_interval=0.2),
        statement_timeout=STATEMENT_TIMEOUT,
    )
    task = asyncio.create_task(relay.run())
    frozen: int | None = None
    try:
        await eventually(lambda: relay.active, "the relay to lock")
        frozen = await lock_holder_pid(db, RELAY_LOCK_KEY)
        assert frozen is not None
        os.kill(frozen, signal.SIGSTOP)

        started = time.monotonic()
        await eventually(lambda: not relay.active, "the relay to give the silent server up")
        gave_up_after = time.monotonic() - started
        # Its session (holding the lock) ends once the backend runs again; the relay locks anew.
        os.kill(frozen, signal.SIGCONT)
        frozen = None
        await eventually(lambda: relay.active, "the relay to lock again")
        store = PostgresEventStore(db)
        published = relay.published
        await store.append("amphora-silent", 0, [AmphoraDeleted(amphora_id="x")], Metadata())
        await eventually(lambda: relay.published > published, "the relay to publish again")
        assert gave_up_after < STATEMENT_TIMEOUT + 3.0
    finally:
        if frozen is not None:
            os.kill(frozen, signal.SIGCONT)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_stale_scan_gives_up_a_silent_server_and_takes_the_lock_again(
    db: asyncpg.Pool, pg_dsn: str
) -> None:
    policy = ScanPolicy(
        heartbeat_timeout=0.2, health_check_interval=0.2, failover_threshold=10, stale_grace=1.0
    )
    scanner = StaleScanner(
        pg_dsn,
        AmphoraRepository(PostgresEventStore(db)),
        policy,
        Metrics("health"),
        time.monotonic,
        statement_timeout=STATEMENT_TIMEOUT,
    )
    task = asyncio.create_task(scanner.run())
    frozen: int | None = None
    try:
        await eventually(lambda: scanner.active, "the scanner to lock")
        frozen = await lock_holder_pid(db, SCANNER_LOCK_KEY)
        assert frozen is not None
        os.kill(frozen, signal.SIGSTOP)

        await eventually(lambda: not scanner.active, "the scanner to give the silent server up")
        os.kill(frozen, signal.SIGCONT)
        frozen = None
        await eventually(lambda: scanner.active, "the scanner to lock again")
        holder = await lock_holder_pid(db, SCANNER_LOCK_KEY)
        assert holder is not None
    finally:
        if frozen is not None:
            os.kill(frozen, signal.SIGCONT)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
