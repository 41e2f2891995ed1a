"""Operating status from heartbeats: events only on transitions.

Each heartbeat is rolled up against a cached view of its LB (``domain.rollup``), in memory. Only
when the result differs from the recorded statuses is the LB handed to a writer task, which
runs ``RecordOperatingStatuses`` through the LoadBalancerRepository: it reloads the LB, rolls
the latest heartbeat up against the fresh state and appends ``OperatingStatusChanged`` for what
really changed, to the LB's ``lbstatus`` stream. Cached views are checked against the event
store's revisions (both streams' versions) every ``refresh_interval`` and reloaded when another
writer moved the LB on. That check costs what changed, not the fleet: it looks only at the LBs
with events past the store's position of ``_WINDOW`` refreshes ago (positions are taken when an
append runs, not when it commits, so the window lets appends that take up to that long commit
behind a later one); every ``_FULL_EVERY`` seconds, and until the window has filled, it checks
every cached LB.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Container
from dataclasses import dataclass
from typing import Final

import asyncpg

from libs.common.database import DATABASE_ERRORS
from libs.common.domain import commands as c
from libs.common.domain.model import LoadBalancerState
from libs.common.errors import FulcrumError
from libs.common.events import Metadata
from libs.common.heartbeat_codec import Heartbeat
from libs.common.repository import LoadBalancerRepository
from libs.common.service import Metrics
from libs.common.telemetry import current_traceparent, tracer
from services.health.adapters import postgres
from services.health.domain.rollup import LbView, changes, roll_up

log = logging.getLogger(__name__)

# A cached LB no heartbeat asked about for this long is dropped.
_EVICT_AFTER: Final = 120.0
# Refreshes whose positions an incremental check looks back over; seconds between full checks.
_WINDOW: Final = 5
_FULL_EVERY: Final = 60.0


@dataclass(slots=True)
class _Cached:
    view: LbView | None  # None: the LB does not exist (or is DELETED)
    revision: int
    used: float


class StatusRecorder:
    def __init__(
        self,
        pool: asyncpg.Pool,
        repository: LoadBalancerRepository,
        metrics: Metrics,
        *,
        writers: int,
        refresh_interval: float,
    ) -> None:
        self._pool = pool
        self._repo = repository
        self._metrics = metrics
        self._writers = writers
        self._refresh_interval = refresh_interval
        self._cache: dict[str, _Cached] = {}
        # The latest heartbeat whose roll-up differed from the cache, per LB.
        self._pending: dict[str, tuple[str, Heartbeat]] = {}
        # Per amphora: the view and content key of its last heartbeat that changed nothing.
        self._settled: dict[str, tuple[LbView, bytes]] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._tracer = tracer(__name__)
        # The store's position at the start of each of the last _WINDOW refreshes.
        self._positions: deque[int] = deque(maxlen=_WINDOW)
        self._full_at = -math.inf

    def __len__(self) -> int:
        return len(self._cache)

    def observe(
        self, lb_id: str, heartbeat: Heartbeat, now: float, content: bytes | None = None
    ) -> LbView | None:
        """Roll ``heartbeat`` up against the cached LB; queue a write if a status changed.

        Returns the cached view (None while the LB is not loaded yet, or gone). Synchronous
        and free of I/O: it runs for every datagram. ``content`` (the decoder's content key:
        equal keys, equal heartbeats but for ``seq`` and ``cpu``) lets a heartbeat that repeats
        one its amphora sent, rolled up against this same view with no change, skip the roll-up.
        """
        cached = self._cache.get(lb_id)
        if cached is None:
            self._pending[lb_id] = (heartbeat.id, heartbeat)
            self._enqueue(lb_id)
            return None
        cached.used = now
        view = cached.view
        if view is None or not view.recorded or heartbeat.id not in view.amphora_ids:
            return view
        settled = self._settled.get(heartbeat.id)
        if settled is not None and settled[0] is view and settled[1] == content:
            return view  # (a None content never equals a stored key)
        if changes(view, roll_up(view, heartbeat)):
            self._settled.pop(heartbeat.id, None)
            self._pending[lb_id] = (heartbeat.id, heartbeat)
            self._enqueue(lb_id)
        elif content is not None:
            self._settled[heartbeat.id] = (view, content)
        return view

    def forget_amphorae_except(self, known: Container[str]) -> None:
        """Drop what is remembered of amphorae not in ``known`` (by amphora id)."""
        for amphora_id in [a for a in self._settled if a not in known]:
            del self._settled[amphora_id]

    def _enqueue(self, lb_id: str) -> None:
        if lb_id not in self._queued:
            self._queued.add(lb_id)
            self._queue.put_nowait(lb_id)

    async def run(self) -> None:
        """The writer tasks and the cache refresher, until cancelled."""
        async with asyncio.TaskGroup() as group:
            for n in range(self._writers):
                group.create_task(self._write_loop(), name=f"status writer {n}")
            group.create_task(self._refresh_loop(), name="status cache refresh")

    async def _write_loop(self) -> None:
        while True:
            lb_id = await self._queue.get()
            try:
                await self._record(lb_id)
            except (FulcrumError, *DATABASE_ERRORS):
                # The next heartbeat that still differs queues the LB again.
                self._metrics.inc("status_errors_total")
                log.exception("health: recording operating statuses of lb %s failed", lb_id)
                await asyncio.sleep(0.1)
            finally:
                # A heartbeat that arrived meanwhile left its report pending: go again.
                self._queued.discard(lb_id)
                if lb_id in self._pending:
                    self._enqueue(lb_id)

    async def _record(self, lb_id: str) -> None:
        pending = self._pending.pop(lb_id, None)
        if pending is None:
            self._store(lb_id, await self._repo.load(lb_id))
            return
        amphora_id, heartbeat = pending

        def command(state: LoadBalancerState) -> c.RecordOperatingStatuses:
            view = LbView.of(state)
            if view is None or not view.recorded or amphora_id not in view.amphora_ids:
                return c.RecordOperatingStatuses({})
            return c.RecordOperatingStatuses(changes(view, roll_up(view, heartbeat)))

        with self._tracer.start_as_current_span("record operating statuses") as span:
            span.set_attribute("fulcrum.lb_id", lb_id)
            metadata = Metadata(actor="health", traceparent=current_traceparent())
            outcome = await self._repo.execute(lb_id, command, metadata)
        self._store(lb_id, outcome.state)
        if outcome.envelopes:
            self._metrics.inc("status_changes_total", len(outcome.envelopes))
            log.info(
                "lb %s: operating status from amphora %s: %s",
                lb_id,
                amphora_id,
                getattr(outcome.envelopes[0].payload, "statuses", {}),
            )

    def _store(self, lb_id: str, state: LoadBalancerState) -> None:
        self._cache[lb_id] = _Cached(LbView.of(state), state.revision, time.monotonic())

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_interval)
            try:
                await self.refresh()
            except DATABASE_ERRORS:
                log.exception("health: checking cached load balancers failed")

    async def refresh(self) -> None:
        """Drop LBs nobody asked about lately; reload those another writer changed."""
        horizon = time.monotonic() - _EVICT_AFTER
        for lb_id in [k for k, v in self._cache.items() if v.used < horizon]:
            del self._cache[lb_id]
        position = await postgres.last_position(self._pool)
        since = self._positions[0] if len(self._positions) == _WINDOW else None
        self._positions.append(position)
        if not self._cache:
            return
        now = time.monotonic()
        if since is None or now - self._full_at >= _FULL_EVERY:
            self._full_at = now
            candidates = list(self._cache)
            self._metrics.inc("status_refreshes_full_total")
        else:
            changed = await postgres.changed_loadbalancers(self._pool, since)
            candidates = [lb_id for lb_id in changed if lb_id in self._cache]
            self._metrics.inc("status_refreshes_incremental_total")
        if not candidates:
            return
        revisions = await postgres.revisions(self._pool, candidates)
        for lb_id in candidates:
            cached = self._cache.get(lb_id)
            if cached is not None and revisions.get(lb_id, 0) != cached.revision:
                self._enqueue(lb_id)
