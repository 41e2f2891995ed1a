"""Batched writes of last-seen times, listener and member stats: the receiver only touches dicts.

Every ``flush_interval`` the batches are swapped out and written with one statement each
(``adapters.postgres``). A batch whose write fails is merged back into the next one: last-seen
keeps the newest receipt, stats deltas add up, so a database hiccup loses no counter.
A stats row that would not change (no traffic since the last write, the same active
connections as last written by this writer) is not written: an idle fleet costs one last-seen
row per heartbeat, not one more per listener and member. Each key is written at least once
per process, so a row another process left behind is brought up to date.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Final

import asyncpg

from libs.common.database import DATABASE_ERRORS
from libs.common.heartbeat_codec import Heartbeat, ListenerStats
from libs.common.service import Metrics
from services.health.adapters import postgres
from services.health.adapters.postgres import LastSeen, MemberStatsDelta, StatsDelta

log = logging.getLogger(__name__)


Key = tuple[str, str]  # (listener or member id, amphora id)


class Deltas:
    """Counters per key: ``[rx, tx, conns, totconns, ereq]`` where every counter but ``conns``
    (the latest count) adds up, with the ids each key is written with."""

    def __init__(self) -> None:
        self.counters: dict[Key, list[int]] = {}
        self.owners: dict[Key, tuple[str, ...]] = {}

    def add(self, key: Key, owners: tuple[str, ...], counters: list[int]) -> None:
        entry = self.counters.get(key)
        if entry is None:
            self.counters[key] = list(counters)
            self.owners[key] = owners
        else:
            for i, value in enumerate(counters):
                entry[i] = value if i == _CONNS else entry[i] + value

    def changing(self, written: dict[Key, int]) -> Deltas:
        """The entries that change their row: any traffic, or active connections other than
        ``written`` (key -> the connections last written; a key absent was never written)."""
        out = Deltas()
        for key, counters in self.counters.items():
            if key not in written or counters[_CONNS] != written[key] or _traffic(counters):
                out.counters[key] = counters
                out.owners[key] = self.owners[key]
        return out

    def merge_older(self, older: Deltas) -> None:
        """Fold in a batch taken before this one (its ``conns`` are older: ours win)."""
        for key, counters in older.counters.items():
            entry = self.counters.get(key)
            if entry is None:
                self.counters[key] = counters
                self.owners[key] = older.owners[key]
            else:
                for i, value in enumerate(counters):
                    if i != _CONNS:
                        entry[i] += value


_CONNS: Final = 2


def _traffic(counters: list[int]) -> bool:
    """Whether any counter that adds up is non-zero."""
    rx, tx, _, totconns, ereq = counters
    return bool(rx or tx or totconns or ereq)


def _note_written(written: dict[Key, int], batch: Deltas) -> None:
    for key, counters in batch.counters.items():
        written[key] = counters[_CONNS]


def _changes_nothing(
    key: Key, counters: list[int], pending: Deltas, written: dict[Key, int]
) -> bool:
    """Whether adding ``counters`` could change no row: no traffic, nothing pending for the
    key, and the active connections already written (an idle listener's every beat)."""
    return (
        not _traffic(counters)
        and key not in pending.counters
        and written.get(key) == counters[_CONNS]
    )


def _counters(s: ListenerStats) -> list[int]:
    return [s.rx, s.tx, s.conns, s.totconns, s.ereq]


class HealthWriter:
    def __init__(self, pool: asyncpg.Pool, metrics: Metrics, flush_interval: float) -> None:
        self._pool = pool
        self._metrics = metrics
        self._interval = flush_interval
        self._seen: dict[str, tuple[float, int]] = {}
        # Per amphora: the receipt time of its latest sign of life, kept across flushes.
        self.heard: dict[str, float] = {}
        # (listener_id, amphora_id), owned by (lb_id,); (member_id, amphora_id) by (pool_id, lb_id)
        self._stats = Deltas()
        self._member_stats = Deltas()
        # key -> active connections last written, for listener and for member rows.
        self._written: dict[Key, int] = {}
        self._member_written: dict[Key, int] = {}
        # Per amphora: the content key of its last heartbeat whose stats changed nothing. The
        # same content again changes nothing either while none of its keys is pending and
        # their written connections stand: only a failed flush (its batch merged back) or a
        # forgotten amphora breaks that, and both forget these.
        self._quiet: dict[str, bytes] = {}

    def forget_gone(self, live: Mapping[str, object]) -> None:
        """Drop what is remembered of amphorae not in ``live`` (by amphora id)."""
        for written in (self._written, self._member_written):
            for key in [k for k in written if k[1] not in live]:
                del written[key]
        for remembered in (self._quiet, self.heard):
            for amphora_id in [a for a in remembered if a not in live]:
                del remembered[amphora_id]

    def seen(self, amphora_id: str, seq: int, received_at: float) -> None:
        """Record a sign of life (``received_at`` on the monotonic clock)."""
        self._seen[amphora_id] = (received_at, seq)
        self.heard[amphora_id] = received_at

    def add_stats(
        self, lb_id: str, amphora_id: str, heartbeat: Heartbeat, content: bytes | None = None
    ) -> None:
        """Accumulate the heartbeat's listener and member deltas; active connections keep the
        latest. A member served by several backends (its pool behind several listeners) counts
        the sum of them. ``content``: the decoder's content key (equal keys, equal stats), so
        an idle amphora's repeated heartbeat is not gone through again."""
        if content is not None and self._quiet.get(amphora_id) == content:
            return
        changed = False
        for listener_id, report in heartbeat.listeners.items():
            key, counters = (listener_id, amphora_id), _counters(report.stats)
            if not _changes_nothing(key, counters, self._stats, self._written):
                self._stats.add(key, (lb_id,), counters)
                changed = True
        members = Deltas()
        for pool_key, pool in heartbeat.pools.items():
            pool_id = pool_key.partition(":")[0]
            for member_id, stats in pool.member_stats.items():
                key = (member_id, amphora_id)
                counters = _counters(stats)
                before = members.counters.get(key)
                if before is not None:
                    counters[_CONNS] += before[_CONNS]
                members.add(key, (pool_id, lb_id), counters)
        for key, counters in members.counters.items():
            if not _changes_nothing(key, counters, self._member_stats, self._member_written):
                self._member_stats.add(key, members.owners[key], counters)
                changed = True
        if changed or content is None:
            self._quiet.pop(amphora_id, None)
        else:
            self._quiet[amphora_id] = content

    async def flush(self) -> None:
        """Write what has accumulated; on failure keep it for the next flush and re-raise."""
        seen, self._seen = self._seen, {}
        stats, self._stats = self._stats, Deltas()
        member_stats, self._member_stats = self._member_stats, Deltas()
        now = time.monotonic()
        try:
            released = await postgres.write_last_seen(
                self._pool,
                [LastSeen(a, max(0.0, now - at), seq) for a, (at, seq) in seen.items()],
            )
        except BaseException:
            self._restore(seen, stats, member_stats)
            raise
        self._metrics.inc("last_seen_rows_total", len(seen))
        if released:
            self._metrics.inc("amphorae_released_total", len(released))
            log.info("heartbeats resumed: %d amphorae released from the breaker", len(released))
        changed = stats.changing(self._written)
        try:
            await postgres.add_stats(
                self._pool,
                [
                    StatsDelta(lid, aid, changed.owners[(lid, aid)][0], *counters)
                    for (lid, aid), counters in changed.counters.items()
                ],
            )
        except BaseException:
            self._restore({}, stats, member_stats)
            raise
        _note_written(self._written, changed)
        self._metrics.inc("stats_rows_total", len(changed.counters))
        changed = member_stats.changing(self._member_written)
        try:
            await postgres.add_member_stats(
                self._pool,
                [
                    MemberStatsDelta(mid, aid, owners[0], owners[1], *counters)
                    for (mid, aid), counters in changed.counters.items()
                    for owners in (changed.owners[(mid, aid)],)
                ],
            )
        except BaseException:
            self._restore({}, Deltas(), member_stats)
            raise
        _note_written(self._member_written, changed)
        self._metrics.inc("member_stats_rows_total", len(changed.counters))
        self._metrics.inc("flushes_total")

    def _restore(
        self, seen: dict[str, tuple[float, int]], stats: Deltas, member_stats: Deltas
    ) -> None:
        self._quiet.clear()  # keys pending again: a repeat may change them (see __init__)
        for amphora_id, value in seen.items():
            newer = self._seen.get(amphora_id)
            if newer is None or newer[0] < value[0]:
                self._seen[amphora_id] = value
        self._stats.merge_older(stats)
        self._member_stats.merge_older(member_stats)

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
