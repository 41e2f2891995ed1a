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
from tests.integration.cluster.conftest import advisory_lock_holders, eventually
from tests.integration.conftest import Jet

STATEMENT_TIMEOUT = 1.0


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
        (frozen,) = await advisory_lock_holders(db, RELAY_LOCK_KEY)
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
        (frozen,) = await advisory_lock_holders(db, SCANNER_LOCK_KEY)
        os.kill(frozen, signal.SIGSTOP)

        await eventually(lambda: not scanner.active, "the scanner to give the silent server up")
        os.kill(frozen, signal.SIGCONT)
        frozen = None
        await eventually(lambda: scanner.active, "the scanner to lock again")
        assert len(await advisory_lock_holders(db, SCANNER_LOCK_KEY)) == 1
    finally:
        if frozen is not None:
            os.kill(frozen, signal.SIGCONT)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
