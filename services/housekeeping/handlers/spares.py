"""The spare-pool job: asks the provisioner for spares, retires surplus and stuck ones, and
replaces spares that died.

Requests go through the amphora's own stream (SpareAmphoraRequested is idempotent by the new
id); retirements and failures are appended under the spare's row lock, so a spare a create is
claiming at that moment is left alone. No spare is requested while creates wait for their
amphorae (``SparesJob.defer``): a burst past the pool's size boots its own, and the pool refills
at the first run after it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Final

import asyncpg

from libs.common.events import Event, Metadata
from libs.common.events import amphora as amp_ev
from libs.common.events import housekeeping as hk
from libs.common.readmodel import creates_waiting
from libs.common.repository import AmphoraRepository
from libs.common.service import Metrics
from services.housekeeping.adapters import postgres
from services.housekeeping.domain.spares import Spare, SparePlan, plan_spares
from services.housekeeping.settings import SparesJob

log = logging.getLogger(__name__)

META: Final = Metadata(actor="housekeeping")


class SparePoolJob:
    def __init__(
        self,
        pool: asyncpg.Pool,
        amphorae: AmphoraRepository,
        settings: SparesJob,
        metrics: Metrics,
    ) -> None:
        self._pool = pool
        self._amphorae = amphorae
        self._settings = settings
        self._metrics = metrics
        self.ready = 0

    async def run_pass(self) -> None:
        await self.apply(await self.plan())

    async def plan(self) -> SparePlan:
        rows = await postgres.spare_amphorae(self._pool)
        self.ready = sum(1 for r in rows if r.status == "READY")
        spares = [Spare(r.amphora_id, r.status, r.age, r.silent_for) for r in rows]
        return plan_spares(
            spares,
            self._settings.pool_size,
            boot_timeout=self._settings.boot_timeout,
            heartbeat_timeout=self._settings.heartbeat_timeout,
        )

    async def apply(self, plan: SparePlan) -> None:
        for amphora_id, reason in plan.fail:
            failed = amp_ev.AmphoraFailed(amphora_id=amphora_id, reason=reason)
            if await self._append_locked(amphora_id, ["READY"], failed):
                self._metrics.inc("spares_failed_total")
                log.warning("spare %s: %s; replacing it", amphora_id, reason)
        for amphora_id, reason in plan.retire:
            retired = hk.SpareAmphoraRetirementRequested(amphora_id=amphora_id, reason=reason)
            if await self._append_locked(amphora_id, postgres.SPARE_STATUSES, retired):
                self._metrics.inc("spares_retired_total")
                log.info("spare %s: retiring (%s)", amphora_id, reason)
        if plan.request and await self._creates_waiting():
            log.info("spares: %d wanted; asked for once the creates are done", plan.request)
            self._metrics.inc("spares_deferred_total")
            return
        for _ in range(plan.request):
            amphora_id = str(uuid.uuid4())
            size = self._settings.pool_size
            request = hk.SpareAmphoraRequested(amphora_id=amphora_id, reason=f"pool of {size}")
            await self._amphorae.record(amphora_id, [request], META)
            self._metrics.inc("spares_requested_total")
            log.info("spare %s: requested (pool of %d)", amphora_id, size)

    async def _creates_waiting(self) -> bool:
        defer = self._settings.defer
        return defer > 0 and await creates_waiting(self._pool, defer)

    async def _append_locked(
        self, amphora_id: str, statuses: tuple[str, ...] | list[str], event: Event
    ) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await postgres.lock_spare(conn, amphora_id, statuses):
                return False  # claimed or changed since the plan
            await self._amphorae.record(amphora_id, [event], META, conn=conn)
            return True
