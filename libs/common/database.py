"""Postgres connection pools, the schema every service relies on, and what "unavailable" means.

``migrate`` is idempotent and serialized by an advisory lock, so any number of services may run
it at start. Each table's DDL lives with the module that owns its SQL. ``database_unavailable``
(from ``_postgres_outage``) tells "Postgres cannot be reached right now" apart from every other
error: the API answers it with 503, consumers wait it out instead of spending deliveries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

import asyncpg

from libs.common import bus, eventstore, readmodel
from libs.common._postgres_outage import (
    DATABASE_ERRORS,
    connect_or_unavailable,
    database_unavailable,
)
from libs.common.errors import InfrastructureError
from libs.common.settings import PostgresSettings

__all__ = [
    "DATABASE_ERRORS",
    "MIGRATION_LOCK_KEY",
    "create_pool",
    "database_unavailable",
    "migrate",
    "ping",
]

MIGRATION_LOCK_KEY: Final = 0x46554C4D4947  # "FULMIG"
MIGRATION_LOCK_TIMEOUT: Final = "5s"
# Which sets of DDL (a service's tables) were applied, by the fingerprint of their text.
_APPLIED_DDL: Final = """
CREATE TABLE IF NOT EXISTS schema_applied (
    fingerprint text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
_SCHEMA_PARTS: Final = (eventstore.DDL, bus.DDL, readmodel.DDL)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pooled connections hold no session state (locks are transaction-scoped, LISTEN uses
    dedicated connections), so the default reset round trip on every release is skipped."""


async def create_pool(settings: PostgresSettings) -> asyncpg.Pool:
    """A pool (jsonb comes back as text: the API sends stored bodies as they are).

    Raises InfrastructureError when Postgres cannot be reached at creation. Later, connections
    lost to an outage are re-established on the next acquire; until then acquiring raises an
    error ``database_unavailable`` recognizes.
    """
    try:
        pool = await asyncpg.create_pool(
            settings.dsn,
            min_size=settings.min_pool,
            max_size=settings.max_pool,
            connect=connect_or_unavailable,
            reset=_keep_session,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise InfrastructureError(f"cannot reach Postgres: {exc}") from exc
    assert pool is not None
    return pool


async def ping(pool: asyncpg.Pool) -> None:
    """One round trip on a pooled connection (raises what the pool or the server raises)."""
    await pool.fetchval("SELECT 1")


async def migrate(pool: asyncpg.Pool, extra_ddl: Sequence[str] = ()) -> None:
    """Create or update every table, plus a service's own ``extra_ddl`` (concurrency-safe).

    A set of DDL already applied (its fingerprint is in ``schema_applied``) is skipped: a
    restarting service takes no table lock. Re-running the DDL would: its trigger statements
    queue an exclusive lock on ``events`` behind the transactions of running services, which
    may themselves wait on reads queued behind that lock (a deadlock Postgres cannot see, as
    its last edge is in the client). A lock still not granted after ``MIGRATION_LOCK_TIMEOUT``
    fails the start instead (the supervisor starts the service again), releasing the queue.
    """
    parts = (*_SCHEMA_PARTS, *extra_ddl)
    fingerprint = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT}'")
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(_APPLIED_DDL)
        if await conn.fetchval(
            "SELECT true FROM schema_applied WHERE fingerprint = $1", fingerprint
        ):
            return
        for ddl in parts:
            await conn.execute(ddl)
        await conn.execute(
            "INSERT INTO schema_applied (fingerprint) VALUES ($1) ON CONFLICT DO NOTHING",
            fingerprint,
        )
