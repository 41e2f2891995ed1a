"""Runs one housekeeping job periodically, once per interval across every replica.

Each tick opens a transaction, tries the job's advisory lock (a replica already running it
wins; the others skip), checks ``housekeeping_runs`` that the interval has passed since any
replica last ran it, runs one pass and records the run. The lock is transaction-scoped: a
replica that dies mid-pass frees it at once. A failing pass is logged with its traceback and
retried at the next tick; it never stops the loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Final

import asyncpg

from libs.common.service import Metrics
from services.housekeeping.adapters import postgres

log = logging.getLogger(__name__)

# A replica ticking a little early (timer jitter, clock of another replica) still runs.
_DUE_SLACK: Final = 0.9

Pass = Callable[[], Awaitable[None]]


class JobRunner:
    """``name``'s loop; ``tick`` runs one pass now if this replica may (tests call it)."""

    def __init__(
        self, pool: asyncpg.Pool, name: str, interval: float, run_pass: Pass, metrics: Metrics
    ) -> None:
        self.name = name
        self.interval = interval
        self._pool = pool
        self._run_pass = run_pass
        self._metrics = metrics

    async def tick(self, *, force: bool = False) -> bool:
        """Run one pass unless another replica holds the job or ran it within the interval
        (``force`` skips the interval check); True when this replica ran it."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await postgres.try_job_lock(conn, self.name):
                return False
            since = await postgres.seconds_since_last_run(conn, self.name)
            if not force and since is not None and since < self.interval * _DUE_SLACK:
                return False
            await self._run_pass()
            await postgres.mark_run(conn, self.name)
        self._metrics.inc(f"{self.name}_runs_total")
        return True

    async def run(self) -> None:
        """Tick every ``interval`` until cancelled (first tick after a random fraction of it,
        so that replicas started together do not contend)."""
        await asyncio.sleep(random.uniform(0, min(self.interval, 1.0)))
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                self._metrics.inc(f"{self.name}_failures_total")
                log.exception(
                    "housekeeping job %s failed; retrying in %.1f s", self.name, self.interval
                )
            await asyncio.sleep(self.interval)
