"""The outbox relay: publishes committed outbox rows to JetStream, then deletes them.

One relay is active per deployment: it holds a session advisory lock on its own connection;
standbys retry the lock every ``poll_interval``. The active one wakes on LISTEN/NOTIFY (with a
slow poll as a safety net), publishes rows in id order with ``Nats-Msg-Id = event_id``, and
deletes each row only after its PubAck. A crash between publish and delete republishes the
row, which JetStream absorbs (``PubAck.duplicate``) and consumers dedupe by event_id.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final, Protocol

import asyncpg

from libs.common.bus import Published
from libs.common.errors import TransientError
from libs.common.eventstore import OUTBOX_CHANNEL
from libs.common.settings import RelaySettings

log = logging.getLogger(__name__)

RELAY_LOCK_KEY: Final = 0x46554C435255  # "FULCRU": one active relay per database


class Publisher(Protocol):
    async def publish(
        self, subject: str, body: bytes, event_id: str, traceparent: str | None = None
    ) -> Published: ...


class OutboxRelay:
    """Moves outbox rows to the bus. ``published`` and ``duplicates`` count for tests/metrics."""

    def __init__(self, dsn: str, publisher: Publisher, settings: RelaySettings) -> None:
        self._dsn = dsn
        self._publisher = publisher
        self._settings = settings
        self._wake = asyncio.Event()
        self.published = 0
        self.duplicates = 0
        self.active = False

    async def run(self) -> None:
        """Run until cancelled: standby until the lock is won, then relay; never gives up."""
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn)
                await self._standby_until_leader(conn)
                await self._relay(conn)
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("outbox relay: database connection lost (%s); reconnecting", exc)
                await asyncio.sleep(self._settings.poll_interval)
            finally:
                self.active = False
                if conn is not None and not conn.is_closed():
                    await conn.close()

    async def _standby_until_leader(self, conn: asyncpg.Connection) -> None:
        won = await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY)
        while not won:
            await asyncio.sleep(self._settings.poll_interval)
            won = await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY)
        self.active = True
        log.info("outbox relay: active (holding the relay lock)")

    async def _relay(self, conn: asyncpg.Connection) -> None:
        await conn.add_listener(OUTBOX_CHANNEL, self._on_notify)
        backoff = 0.05
        while True:
            self._wake.clear()
            try:
                moved = await self._drain(conn)
                backoff = 0.05
            except TransientError as exc:
                log.warning("outbox relay: NATS unavailable (%s); retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._settings.max_backoff)
                continue
            if moved == self._settings.batch_size:
                continue  # more rows are waiting
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._settings.poll_interval)
            except TimeoutError:
                pass

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _drain(self, conn: asyncpg.Connection) -> int:
        """Publish one batch in id order; each row is deleted right after its PubAck."""
        rows = await conn.fetch(
            "SELECT id, event_id, subject, body::text AS body, traceparent FROM outbox "
            "ORDER BY id LIMIT $1",
            self._settings.batch_size,
        )
        for row in rows:
            result = await self._publisher.publish(
                row["subject"], row["body"].encode(), str(row["event_id"]), row["traceparent"]
            )
            self.published += 1
            self.duplicates += int(result.duplicate)
            await conn.execute("DELETE FROM outbox WHERE id = $1", row["id"])
        return len(rows)
