"""The stranded-work job: re-drives LBs stuck in PENDING_* and fails them when re-drives do
not help, so that nothing stays PENDING_* forever and no database surgery is ever needed.

A re-drive appends LoadBalancerRedriveRequested to the LB's stream: the provisioner's
level-triggered lifecycle consumer reconciles the LB again on any of its events. A give-up is
FailProvisioning through the repository: the LB goes ERROR with the reason, from which the
admin failover API or a user update repairs it. Both are appended only if the LB did not move
since it was judged.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Final

import asyncpg

from libs.common.domain import commands as c
from libs.common.domain.model import LoadBalancerState
from libs.common.errors import Conflict, FulcrumError
from libs.common.events import Metadata
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from libs.common.service import Metrics
from services.housekeeping.adapters import postgres
from services.housekeeping.domain.stranded import Verdict, judge, pending_period
from services.housekeeping.settings import StrandedJob

log = logging.getLogger(__name__)

META: Final = Metadata(actor="housekeeping")


class _Moved(FulcrumError):
    """The LB changed since it was judged: judge it again next time."""


class StrandedWorkJob:
    def __init__(
        self,
        pool: asyncpg.Pool,
        store: PostgresEventStore,
        settings: StrandedJob,
        metrics: Metrics,
    ) -> None:
        self._pool = pool
        self._lbs = LoadBalancerRepository(store)
        self._settings = settings
        self._metrics = metrics

    async def run_pass(self) -> None:
        for lb_id in await postgres.pending_loadbalancer_ids(self._pool):
            try:
                await self.review(lb_id)
            except (_Moved, Conflict):
                continue  # a writer got there first; the next pass looks again

    async def review(self, lb_id: str) -> Verdict | None:
        """Judge one LB and act on the verdict; None when it is not pending."""
        state, pending = await self._lbs.load_pending(lb_id)
        period = pending_period(state, pending)
        if period is None:
            return None
        verdict = judge(
            period,
            datetime.now(UTC),
            after=self._settings.after,
            redrives=self._settings.redrives,
        )
        if verdict.action == "wait":
            return verdict
        command: c.Command
        if verdict.action == "redrive":
            command = c.RedriveProvisioning(verdict.attempt, verdict.pending_seconds)
        else:
            command = c.FailProvisioning(verdict.reason)
        judged = state.version

        def unless_moved(current: LoadBalancerState) -> c.Command:
            if current.version != judged:
                raise _Moved(lb_id)
            return command

        await self._lbs.execute(lb_id, unless_moved, META, attempts=1)
        if verdict.action == "redrive":
            self._metrics.inc("lb_redrives_total")
            log.warning(
                "lb %s: %s for %.0f s; re-drive %d",
                lb_id,
                period.status,
                verdict.pending_seconds,
                verdict.attempt,
            )
        else:
            self._metrics.inc("lb_stranded_failed_total")
            log.error("lb %s: gave up: %s", lb_id, verdict.reason)
        return verdict
