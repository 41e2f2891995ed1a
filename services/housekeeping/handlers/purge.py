"""The purge job: removes rows whose retention is over; the events table is never touched.

- ``loadbalancer_view`` rows of LBs DELETED longer than ``loadbalancer_retention`` (lists
  already hide them; GET by id then answers 404), with their ``listener_stats`` and
  ``member_stats`` rows;
- ``amphora_view`` rows of amphorae DELETED longer than ``amphora_retention``;
- ``amphora_health`` rows of deleted amphorae (heartbeats are accepted from live ones only);
- ``dead_letters`` older than ``dead_letter_retention``;
- ``processed_messages`` older than ``processed_message_retention``, which must outlive the
  stream's messages (settings check it), far beyond JetStream's duplicate window.

API tokens are stateless signed tokens (services/api/auth/tokens.py): nothing to purge.
"""

from __future__ import annotations

import dataclasses
import logging

import asyncpg

from libs.common.service import Metrics
from services.housekeeping.adapters import postgres
from services.housekeeping.settings import PurgeJob

log = logging.getLogger(__name__)


class RetentionPurgeJob:
    def __init__(self, pool: asyncpg.Pool, settings: PurgeJob, metrics: Metrics) -> None:
        self._pool = pool
        self._settings = settings
        self._metrics = metrics

    async def run_pass(self) -> None:
        await self.purge()

    async def purge(self) -> postgres.Purged:
        settings, pool = self._settings, self._pool
        lb_ids = await postgres.purge_deleted_loadbalancers(pool, settings.loadbalancer_retention)
        purged = postgres.Purged(
            loadbalancers=len(lb_ids),
            listener_stats=await postgres.purge_listener_stats(pool, lb_ids),
            member_stats=await postgres.purge_member_stats(pool, lb_ids),
            amphorae=await postgres.purge_deleted_amphorae(pool, settings.amphora_retention),
            amphora_health=await postgres.purge_amphora_health(pool),
            dead_letters=await postgres.purge_dead_letters(pool, settings.dead_letter_retention),
            processed_messages=await postgres.purge_processed_messages(
                pool, settings.processed_message_retention
            ),
        )
        counts = dataclasses.asdict(purged)
        for kind, count in counts.items():
            self._metrics.inc(f"purged_{kind}_total", count)
        if any(counts.values()):
            log.info(
                "purged %s", ", ".join(f"{count} {kind}" for kind, count in counts.items() if count)
            )
        return purged
