"""Failed password attempts in Postgres (``login_failures``): the brute-force counts every API
replica shares, timed by the database's clock so replicas' clocks do not matter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import asyncpg

_RECENT_SQL: Final = """
SELECT scope, age FROM (
    SELECT scope, extract(epoch FROM now() - failed_at)::float8 AS age,
           row_number() OVER (PARTITION BY scope ORDER BY failed_at DESC) AS n
    FROM login_failures
    WHERE scope = ANY($1::bytea[]) AND failed_at > now() - make_interval(secs => $2)
) AS recent
WHERE n <= $3
ORDER BY scope, age
"""
_RECORD_SQL: Final = "INSERT INTO login_failures (scope) SELECT unnest($1::bytea[])"
_PRUNE_SQL: Final = (
    "DELETE FROM login_failures WHERE failed_at <= now() - make_interval(secs => $1)"
)
_CLEAR_SQL: Final = "DELETE FROM login_failures WHERE scope = $1"


class PostgresLoginFailures:
    """``FailureLog`` over ``login_failures``; each failure recorded prunes the rows that left
    the window, so the table holds one window's failures at most."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def recent(
        self, scopes: Sequence[bytes], window: float, most: int
    ) -> Mapping[bytes, Sequence[float]]:
        rows = await self._pool.fetch(_RECENT_SQL, list(scopes), window, most)
        ages: dict[bytes, list[float]] = {}
        for row in rows:
            ages.setdefault(bytes(row["scope"]), []).append(float(row["age"]))
        return ages

    async def record(self, scopes: Sequence[bytes], window: float) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_RECORD_SQL, list(scopes))
            await conn.execute(_PRUNE_SQL, window)

    async def clear(self, scope: bytes) -> None:
        await self._pool.execute(_CLEAR_SQL, scope)
