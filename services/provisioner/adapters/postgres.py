"""The provisioner's read queries (SQL lives in adapters)."""

from __future__ import annotations

import asyncpg


async def pending_loadbalancer_ids(pool: asyncpg.Pool) -> list[str]:
    """Load balancers with unfinished work (PENDING_*), oldest first."""
    rows = await pool.fetch(
        "SELECT id FROM loadbalancer_view "
        "WHERE body->>'provisioning_status' LIKE 'PENDING\\_%' ORDER BY created_at"
    )
    return [r["id"] for r in rows]


async def live_amphorae(pool: asyncpg.Pool) -> dict[str, str | None]:
    """Amphorae the store owns and has not deleted, with their LB ids."""
    rows = await pool.fetch("SELECT id, lb_id FROM amphora_view WHERE status <> 'DELETED'")
    return {r["id"]: r["lb_id"] for r in rows}


async def ready_spare_ids(conn: asyncpg.Connection | asyncpg.Pool) -> list[str]:
    """Spare amphorae (READY, serving no LB), oldest first."""
    rows = await conn.fetch(
        "SELECT id FROM amphora_view WHERE status = 'READY' ORDER BY created_at, id"
    )
    return [r["id"] for r in rows]


async def lock_one_spare(conn: asyncpg.Connection) -> str | None:
    """Lock one READY spare for this transaction; concurrent claimers skip it."""
    amphora_id: str | None = await conn.fetchval(
        "SELECT id FROM amphora_view WHERE status = 'READY' "
        "ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED"
    )
    return amphora_id
