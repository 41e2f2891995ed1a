"""The provisioner's SQL for housekeeping's requests: the amphora inventory and its row locks.

Spare transitions (claim, boot completion, retirement, failure) lock the spare's
``amphora_view`` row first, so a spare is never claimed and retired at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import asyncpg

from services.provisioner.domain.reconciliation import InventoryRow

_INVENTORY: Final = (
    "SELECT a.id, a.status, a.lb_id, l.body->>'provisioning_status' AS lb_status, "
    "coalesce(a.body->>'cached_zone', '') AS host "
    "FROM amphora_view a LEFT JOIN loadbalancer_view l ON l.id = a.lb_id"
)


def _row(record: asyncpg.Record) -> InventoryRow:
    return InventoryRow(
        record["id"], record["status"], record["lb_id"], record["lb_status"], record["host"]
    )


async def amphora_inventory(conn: asyncpg.Connection) -> dict[str, InventoryRow]:
    """Every amphora the store has ever recorded (DELETED included), by id."""
    return {r["id"]: _row(r) for r in await conn.fetch(_INVENTORY)}


async def inventory_row(conn: asyncpg.Connection, amphora_id: str) -> InventoryRow | None:
    record = await conn.fetchrow(_INVENTORY + " WHERE a.id = $1", amphora_id)
    return _row(record) if record is not None else None


async def lock_amphora(
    conn: asyncpg.Connection, amphora_id: str, statuses: Sequence[str], *, skip_locked: bool
) -> bool:
    """Lock the amphora's row for this transaction if its status is one of ``statuses``.

    With ``skip_locked`` a row another transaction holds (a claim in flight) counts as absent.
    """
    wait = " SKIP LOCKED" if skip_locked else ""
    found = await conn.fetchval(
        "SELECT true FROM amphora_view WHERE id = $1 AND status = ANY($2::text[]) FOR UPDATE"
        + wait,
        amphora_id,
        list(statuses),
    )
    return bool(found)


async def try_lb_lock(conn: asyncpg.Connection, lb_id: str) -> bool:
    """Take the LB's work lock for this transaction unless a provisioner holds it.

    The same key as the lifecycle handler's (``hashtextextended(lb_id, 0)``): while it is held
    here, no create, apply or failover of that LB is in flight anywhere.
    """
    won: bool = await conn.fetchval(
        "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))", lb_id
    )
    return won
