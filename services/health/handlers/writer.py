"""Batched writes of last-seen times and listener stats: the receiver only touches dicts.

Every ``flush_interval`` the batches are swapped out and written with one statement each
(``adapters.postgres``). A batch whose write fails is merged back into the next one: last-seen
keeps the newest receipt, stats deltas add up, so a database hiccup loses no counter.
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from libs.common.database import DATABASE_ERRORS
from libs.common.heartbeat_codec import Heartbeat
from libs.common.service import Metrics
from services.health.adapters import postgres
from services.health.adapters.postgres import LastSeen, StatsDelta

log = logging.getLogger(__name__)


class HealthWriter:
    def __init__(self, pool: asyncpg.Pool, metrics: Metrics, flush_interval: float) -> None:
        self._pool = pool
        self._metrics = metrics
        self._interval = flush_interval
        self._seen: dict[str, tuple[float, int]] = {}
        # (listener_id, amphora_id) -> [rx, tx, conns, totconns, ereq], and -> lb_id
        self._stats: dict[tuple[str, str], list[int]] = {}
        self._stats_lb: dict[tuple[str, str], str] = {}

    def seen(self, amphora_id: str, seq: int, received_at: float) -> None:
        """Record a sign of life (``received_at`` on the monotonic clock)."""
        self._seen[amphora_id] = (received_at, seq)

    def add_stats(self, lb_id: str, amphora_id: str, heartbeat: Heartbeat) -> None:
        """Accumulate the heartbeat's listener deltas; active connections keep the latest."""
        stats = self._stats
        for listener_id, report in heartbeat.listeners.items():
            s = report.stats
            key = (listener_id, amphora_id)
            entry = stats.get(key)
            if entry is None:
                stats[key] = [s.rx, s.tx, s.conns, s.totconns, s.ereq]
                self._stats_lb[key] = lb_id
            else:
                entry[0] += s.rx
                entry[1] += s.tx
                entry[2] = s.conns
                entry[3] += s.totconns
                entry[4] += s.ereq

    async def flush(self) -> None:
        """Write what has accumulated; on failure keep it for the next flush and re-raise."""
        seen, self._seen = self._seen, {}
        stats, self._stats = self._stats, {}
        stats_lb, self._stats_lb = self._stats_lb, {}
        now = time.monotonic()
        try:
            released = await postgres.write_last_seen(
                self._pool,
                [LastSeen(a, max(0.0, now - at), seq) for a, (at, seq) in seen.items()],
            )
        except BaseException:
            self._restore(seen, stats, stats_lb)
            raise
        self._metrics.inc("last_seen_rows_total", len(seen))
        if released:
            self._metrics.inc("amphorae_released_total", len(released))
            log.info("heartbeats resumed: %d amphorae released from the breaker", len(released))
        try:
            await postgres.add_stats(
                self._pool,
                [
                    StatsDelta(lid, aid, stats_lb[(lid, aid)], rx, tx, conns, tot, ereq)
                    for (lid, aid), (rx, tx, conns, tot, ereq) in stats.items()
                ],
            )
        except BaseException:
            self._restore({}, stats, stats_lb)
            raise
        self._metrics.inc("stats_rows_total", len(stats))
        self._metrics.inc("flushes_total")

    def _restore(
        self,
        seen: dict[str, tuple[float, int]],
        stats: dict[tuple[str, str], list[int]],
        stats_lb: dict[tuple[str, str], str],
    ) -> None:
        for amphora_id, value in seen.items():
            newer = self._seen.get(amphora_id)
            if newer is None or newer[0] < value[0]:
                self._seen[amphora_id] = value
        for key, old in stats.items():
            new = self._stats.get(key)
            if new is None:
                self._stats[key] = old
                self._stats_lb[key] = stats_lb[key]
            else:
                new[0] += old[0]
                new[1] += old[1]
                new[3] += old[3]
                new[4] += old[4]

    async def run(self) -> None:
        """Flush every interval until cancelled, then once more. A flush under way is shielded:
        cancelling it midway could leave it unknown whether its deltas were added."""
        try:
            while True:
                await asyncio.sleep(self._interval)
                await asyncio.shield(self._flush_logged())
        finally:
            await self._flush_logged()

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except DATABASE_ERRORS:
            self._metrics.inc("flush_errors_total")
            log.exception("health writer: flush failed; retrying with the next batch")
