"""Postgres connection pools and what "unavailable" means (the schema is ``libs.common.schema``).

``database_unavailable`` (from ``_postgres_outage``) tells "Postgres cannot be reached right
now" apart from every other error: the API answers it with 503, consumers wait it out instead
of spending deliveries.
"""

from __future__ import annotations

import asyncpg

from libs.common._postgres_outage import (
    DATABASE_ERRORS,
    connect_or_unavailable,
    database_unavailable,
)
from libs.common.errors import InfrastructureError
from libs.common.settings import PostgresSettings

__all__ = [
    "DATABASE_ERRORS",
    "connect_or_unavailable",
    "create_pool",
    "database_unavailable",
    "ping",
]


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
