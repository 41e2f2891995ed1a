"""The outbox relay: publishes committed outbox rows to JetStream, then deletes them.

One relay is active per deployment: it holds a session advisory lock on its own connection;
standbys retry the lock every ``poll_interval``. The active one wakes on LISTEN/NOTIFY (with a
slow poll as a safety net), publishes rows with ``Nats-Msg-Id = event_id`` (each event stream
in id order; different streams concurrently), and deletes each row only after its PubAck. A
crash between publish and delete republishes the row, which JetStream absorbs
(``PubAck.duplicate``) and consumers dedupe by event_id.

After a failover (a multi-host DSN with ``target_session_attrs=read-write``) the lock holder's
connection is gone with the old primary: the relay reconnects, to the new primary, and competes
for the lock again. A server that stops answering without closing the connection (its host
lost) is given up after ``statement_timeout`` s on a statement, then likewise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeGuard, TypeVar

import asyncpg

from libs.common._postgres_outage import DATABASE_ERRORS
from libs.common.bus import Published
from libs.common.errors import TransientError
from libs.common.eventstore import OUTBOX_CHANNEL
from libs.common.settings import RelaySettings

log = logging.getLogger(__name__)

RELAY_LOCK_KEY: Final = 0x46554C435255  # "FULCRU": one active relay per database
# Seconds a statement of the relay may take before its server counts as gone.
STATEMENT_TIMEOUT: Final = 30.0


class Publisher(Protocol):
    async def publish(
        self, subject: str, body: bytes, event_id: str, traceparent: str | None = None
    ) -> Published: ...


@dataclass(frozen=True)
class Backlog:
    """Rows waiting in the outbox, and for how many seconds the oldest has waited (None
    when there is none)."""

    rows: int
    oldest_age: float | None


async def backlog(db: asyncpg.Pool | asyncpg.Connection) -> Backlog:
    """The outbox's backlog; the oldest row's age is its event's ``recorded_at`` (the append's
    transaction time), read on the database clock."""
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM outbox) AS rows, "
        "(SELECT extract(epoch FROM now() - e.recorded_at)::float8 FROM outbox o "
        " LEFT JOIN events e ON e.event_id = o.event_id ORDER BY o.id LIMIT 1) AS oldest_age"
    )
    assert row is not None
    return Backlog(rows=row["rows"], oldest_age=row["oldest_age"])


class OutboxRelay:
    """Moves outbox rows to the bus. ``published`` and ``duplicates`` count for tests/metrics;
    ``progressed_at`` is the monotonic time rows were last published and deleted here."""

    def __init__(
        self,
        dsn: str,
        publisher: Publisher,
        settings: RelaySettings,
        *,
        statement_timeout: float = STATEMENT_TIMEOUT,
    ) -> None:
        self._dsn = dsn
        self._statement_timeout = statement_timeout
        self._publisher = publisher
        self._settings = settings
        self._wake = asyncio.Event()
        self.published = 0
        self.duplicates = 0
        self.active = False
        self.progressed_at: float | None = None

    async def run(self) -> None:
        """Run until cancelled: standby until the lock is won, then relay; never gives up."""
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn, command_timeout=self._statement_timeout)
                await self._standby_until_leader(conn)
                await self._relay(conn)
            except asyncio.CancelledError:
                raise
            except DATABASE_ERRORS as exc:
                log.warning("outbox relay: database connection lost (%r); reconnecting", exc)
                await asyncio.sleep(self._settings.poll_interval)
            finally:
                self.active = False
                if conn is not None:
                    conn.terminate()  # at once: a graceful close waits on a server gone silent

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
        """Publish one batch in waves (see ``waves``): a wave's rows are published
        concurrently, the PubAcked ones deleted in one statement, then the next wave goes.
        A failed publish stops the batch after that delete, so no later row of its stream
        is sent before it: each event stream reaches the bus in id order."""
        rows = await conn.fetch(
            "SELECT id, event_id, subject, body::text AS body, traceparent FROM outbox "
            "ORDER BY id LIMIT $1",
            self._settings.batch_size,
        )
        for wave in waves(rows):
            results = await asyncio.gather(
                *(
                    self._publisher.publish(
                        row["subject"],
                        row["body"].encode(),
                        str(row["event_id"]),
                        row["traceparent"],
                    )
                    for row in wave
                ),
                return_exceptions=True,
            )
            acked = [row["id"] for row, r in zip(wave, results, strict=True) if _is_ack(r)]
            for result in results:
                if _is_ack(result):
                    self.published += 1
                    self.duplicates += int(result.duplicate)
            if acked:
                await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", acked)
                self.progressed_at = time.monotonic()
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        return len(rows)


def _is_ack(result: Published | BaseException) -> TypeGuard[Published]:
    return not isinstance(result, BaseException)


class _Row(Protocol):
    def __getitem__(self, key: str) -> Any: ...


RowT = TypeVar("RowT", bound=_Row)


def waves(rows: Sequence[RowT]) -> list[list[RowT]]:
    """Rows (in id order) split into waves: the first row of every event stream (its subject
    without the event type), then the second, and so on; each wave keeps id order."""
    seen: dict[str, int] = {}
    result: list[list[RowT]] = []
    for row in rows:
        stream = row["subject"].rsplit(".", 1)[0]
        index = seen.get(stream, 0)
        seen[stream] = index + 1
        if index == len(result):
            result.append([])
        result[index].append(row)
    return result
