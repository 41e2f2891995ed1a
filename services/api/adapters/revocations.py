"""The shared token revocation list in Postgres (``revoked_tokens``): what one API replica
revokes, every replica refuses from the next request on."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

import asyncpg

_REVOKE_SQL: Final = """
INSERT INTO revoked_tokens (audit_id, expires_at) VALUES ($1, $2)
ON CONFLICT (audit_id) DO NOTHING
"""
_PRUNE_SQL: Final = "DELETE FROM revoked_tokens WHERE expires_at < now() - interval '1 hour'"
_ANY_SQL: Final = "SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE audit_id = ANY($1::text[]))"


class PostgresRevocations:
    """``RevocationList`` over ``revoked_tokens``; rows of expired tokens are pruned on each
    revocation."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def revoke(self, audit_id: str, expires_at: datetime) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_REVOKE_SQL, audit_id, expires_at)
            await conn.execute(_PRUNE_SQL)

    async def any_revoked(self, audit_ids: Sequence[str]) -> bool:
        if not audit_ids:
            return False
        found: bool = await self._pool.fetchval(_ANY_SQL, list(audit_ids))
        return found
