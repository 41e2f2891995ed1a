"""Postgres connection pools and what "unavailable" means (the schema is ``libs.common.schema``).

``database_unavailable`` (from ``_postgres_outage``) tells "Postgres cannot be reached right
now" apart from every other error: the API answers it with 503, consumers wait it out instead
of spending deliveries.
"""

from __future__ import annotations

from typing import Final

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


# Arrays the event store binds: asyncpg looks each array type up in the catalog on the first
# statement of a connection that binds it (three round trips and a recursive catalog query,
# ~7 ms on a fresh backend); done when the connection opens, not in a request.
_ARRAY_TYPES: Final = "SELECT $1::int4[], $2::int8[], $3::uuid[], $4::timestamptz[]"


async def _learn_array_types(conn: asyncpg.Connection) -> None:
    """Pool ``init``: prepare a statement binding ``_ARRAY_TYPES``, so this connection knows
    their codecs before any request needs them."""
    await conn.prepare(_ARRAY_TYPES)


async def create_pool(settings: PostgresSettings) -> asyncpg.Pool:
    """A pool (jsonb comes back as text: the API sends stored bodies as they are) of
    ``min_pool`` connections at start, up to ``max_pool``, each kept open once opened and
    taught the array types the event store binds (``_learn_array_types``).

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
            init=_learn_array_types,
            # Never closed for being idle (asyncpg closes them after 300 s): the next burst
            # would open them again, a new backend and its catalog lookups each.
            max_inactive_connection_lifetime=0,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise InfrastructureError(f"cannot reach Postgres: {exc}") from exc
    assert pool is not None
    return pool


async def ping(pool: asyncpg.Pool) -> None:
    """One round trip on a pooled connection (raises what the pool or the server raises)."""
    await pool.fetchval("SELECT 1")
