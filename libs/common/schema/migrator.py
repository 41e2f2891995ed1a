"""Bringing a database to the newest schema: ``upgrade`` and what it records.

``schema_migrations`` holds one row per applied step (version, name, applied_at). ``upgrade``
reads its highest version in one query and returns when that is the newest known. Otherwise
each pending step runs in its own transaction under a transaction-scoped advisory lock,
re-reading the version once it holds the lock, so any number of processes may upgrade at once
and each step runs exactly once. A database recorded at a version this code does not know (a
newer release migrated it) is refused with ``SchemaTooNew``, before anything is written.

Each step sets ``lock_timeout``: a table lock not granted within ``LOCK_TIMEOUT`` fails the
upgrade (and so the start; the supervisor starts the service again) instead of queueing the
running services' statements behind it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import asyncpg

from libs.common.errors import InfrastructureError
from libs.common.schema.migrations import MIGRATIONS, Migration

LOCK_KEY: Final = 0x46554C4D4947  # "FULMIG"
LOCK_TIMEOUT: Final = "5s"

_LEDGER_DDL: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version int PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
_CURRENT_SQL: Final = "SELECT coalesce(max(version), 0) FROM schema_migrations"


class SchemaTooNew(InfrastructureError):
    """The database was migrated past the newest version this code knows."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"the database schema is at version {found}, newer than this release knows "
            f"(up to {known}): run the release that migrated it, or a newer one"
        )
        self.found = found
        self.known = known


async def current_version(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """The highest applied version; 0 when nothing is recorded (or no ledger exists)."""
    try:
        version: int = await conn.fetchval(_CURRENT_SQL)
    except asyncpg.UndefinedTableError:
        return 0
    return version


def _check_order(migrations: Sequence[Migration]) -> int:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, ... in order; got {versions}")
    return len(versions)


def _refuse_newer(found: int, newest: int) -> None:
    if found > newest:
        raise SchemaTooNew(found, newest)


async def upgrade(pool: asyncpg.Pool, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Apply every step of ``migrations`` the database lacks; return the version reached.

    Idempotent and safe to run from several processes at once. Raises SchemaTooNew when the
    database is ahead of ``migrations``; a failing step raises what Postgres raised, leaving
    the steps before it applied and nothing of it.
    """
    newest = _check_order(migrations)
    found = await current_version(pool)
    _refuse_newer(found, newest)
    if found == newest:
        return found
    async with pool.acquire() as conn:
        for step in migrations[found:]:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
                await conn.execute(_LEDGER_DDL)
                found = await current_version(conn)
                _refuse_newer(found, newest)
                if found >= step.version:
                    continue  # another process applied it while this one waited for the lock
                await conn.execute(step.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    step.version,
                    step.name,
                )
    return newest
