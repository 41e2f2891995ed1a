"""Start-up reconciliation: finish the LB work a previous provisioner left half-done.

It may have been killed mid-step. Every LB with pending work is reconciled once, in parallel
(bounded), while the consumers already run: per-LB locks serialize the two.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from libs.common.events import Metadata
from services.provisioner.adapters.postgres import pending_loadbalancer_ids
from services.provisioner.handlers.lifecycle import LifecycleHandler

log = logging.getLogger(__name__)

_METADATA = Metadata(actor="provisioner")


async def reconcile_pending(
    pool: asyncpg.Pool, lifecycle: LifecycleHandler, concurrency: int
) -> None:
    """Reconcile every LB with pending work, ``concurrency`` at a time; failures are logged."""
    slots = asyncio.Semaphore(concurrency)

    async def one(lb_id: str) -> None:
        async with slots, pool.acquire() as conn, conn.transaction():
            await lifecycle.reconcile(lb_id, conn, _METADATA)

    results = await asyncio.gather(
        *(one(lb_id) for lb_id in await pending_loadbalancer_ids(pool)),
        return_exceptions=True,
    )
    for error in (r for r in results if isinstance(r, BaseException)):
        log.error("start-up reconciliation failed", exc_info=error)
