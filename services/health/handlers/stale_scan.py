"""The stale scan: one active scanner per deployment appends ``AmphoraFailed`` for dead amphorae.

Every replica runs a scanner; the active one holds a session advisory lock on a connection of
its own, and does all its reads and writes on that connection, so a scanner whose connection
(and with it the lock) is gone cannot write. Standbys try the lock every
``health_check_interval``: when the holder dies, Postgres drops its session and a standby takes
over within an interval.

Invariant: amphorae are never judged by last-seen times nobody could refresh. A scanner that
becomes active first waits until ``heartbeat_timeout`` has passed since the later of its
receiver's start and its own connection's establishment. The second covers a database outage
(a Postgres restart ends every session, the scanner's included): the writers could not flush
meanwhile and keep the heartbeats they received (``HealthWriter``), and within that wait they
flush them, with their receipt times, and fresh ones, so a live amphora is seen live again.

After a failover (a multi-host DSN with ``target_session_attrs=read-write``) the holder's
connection is gone with the old primary: the scanner reconnects, to the new primary, and
competes for the lock again. A server that stops answering without closing the connection (its
host lost) is given up after ``statement_timeout`` s on a statement, then likewise.

A scan asks the database only about the amphorae this replica has not heard lately itself
(``unheard``: none, most scans of a live fleet, and the scan runs no query). One heard since
the scan's lateness bound is neither late nor stale: its heartbeat is a sign of life that the
writers put into ``last_seen`` at their next flush, so the database could only list it while
that flush is pending. The directory knows every amphora booted before its last whole load;
one booted since could be left out, so when that load began ``stale_grace`` + the lateness
bound ago or longer (its reloads failing, or this process not running), every scan reads the
whole table again; an amphora heard lately is still not judged from it (``heard``).

A process that did not run for a while (a long scrape, a pause, a starved CPU) finds the
heartbeats that arrived meanwhile still unread in its socket, and their amphorae's receipts old.
So a scan judges no one unless the receiver has read every heartbeat that arrived more than a
scan interval ago (``caught_up``): a live receiver reads them every ``receive_gather``; one that
fell behind is let catch up first.

``AmphoraFailed`` moves the amphora to PENDING_DELETE, so it is never picked twice; the
provisioner consumes the event and fails the LB over. With the circuit breaker tripped
(``domain.breaker``) the stale amphorae are held in ``amphora_health.failover_stopped`` instead,
and the next heartbeat from one releases it (``HealthWriter``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Final

import asyncpg

from libs.common.database import DATABASE_ERRORS, database_unavailable
from libs.common.domain.amphora import AmphoraStatus
from libs.common.errors import FulcrumError
from libs.common.events import Metadata
from libs.common.events.amphora import AmphoraFailed
from libs.common.repository import AmphoraRepository
from libs.common.service import Metrics
from libs.common.telemetry import current_traceparent, tracer
from services.health.adapters import postgres
from services.health.domain.breaker import (
    ScanDecision,
    SilentAmphora,
    decide_failovers,
    suspect_after,
)

log = logging.getLogger(__name__)

# Seconds a statement of the scanner may take before its server counts as gone.
STATEMENT_TIMEOUT: Final = 30.0


@dataclass(frozen=True)
class ScanPolicy:
    heartbeat_timeout: float
    health_check_interval: float
    failover_threshold: int
    stale_grace: float


# ``caught_up(since)``: whether every heartbeat that arrived before ``since`` (monotonic) has
# been read (``UdpReceiver.caught_up``). ``heard`` (a scanner's argument): amphora id -> the
# receipt time (monotonic) of its latest sign of life here (``HealthWriter.heard``).
CaughtUp = Callable[[float], bool]
# ``unheard(before, booted_within)``: the amphorae this replica has not heard since ``before``
# (monotonic), or None when it cannot tell for those booted within ``booted_within`` s
# (``AmphoraDirectory.unheard`` over the writer's receipts).
Unheard = Callable[[float, float], Collection[str] | None]


class StaleScanner:
    """``active`` tells whether this replica holds the scanner lock now."""

    def __init__(
        self,
        dsn: str,
        amphorae: AmphoraRepository,
        policy: ScanPolicy,
        metrics: Metrics,
        receiving_since: Callable[[], float],
        *,
        unheard: Unheard | None = None,
        caught_up: CaughtUp | None = None,
        heard: Mapping[str, float] | None = None,
        statement_timeout: float = STATEMENT_TIMEOUT,
    ) -> None:
        self._dsn = dsn
        self._statement_timeout = statement_timeout
        self._amphorae = amphorae
        self._policy = policy
        self._metrics = metrics
        self._receiving_since = receiving_since
        self._unheard = unheard
        self._caught_up = caught_up
        self._heard = heard
        self.queries = 0  # scans that read the database
        self._tracer = tracer(__name__)
        self.active = False
        self.stopped = 0

    async def run(self) -> None:
        """Standby until the lock is won, then scan; reconnects after losing the database."""
        interval = self._policy.health_check_interval
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn, command_timeout=self._statement_timeout)
                connected_at = time.monotonic()
                await self._standby_until_leader(conn)
                self.active = True
                log.info("stale scan: active (holding the scanner lock)")
                await self._settle(connected_at)
                behind_since: float | None = None
                while True:
                    behind_since = await self._scan_if_caught_up(conn, behind_since)
                    await asyncio.sleep(interval)
            except DATABASE_ERRORS as exc:
                # Only database calls run in the try: an OSError is a failed connect or a
                # statement past its timeout.
                if isinstance(exc, OSError) or database_unavailable(exc):
                    log.warning("stale scan: database unavailable (%r); reconnecting", exc)
                else:
                    log.exception("stale scan: database error; reconnecting")
                await asyncio.sleep(interval)
            finally:
                self.active = False
                if conn is not None:
                    conn.terminate()  # at once: a graceful close waits on a server gone silent

    async def _scan_if_caught_up(
        self, conn: asyncpg.Connection, behind_since: float | None
    ) -> float | None:
        """Scan when every heartbeat that arrived more than a scan interval ago has been read;
        else judge no one. Returns since when the receiver has been behind (None: it is not),
        logging when that begins and ends."""
        now = time.monotonic()
        if self._caught_up is not None and not self._caught_up(
            now - self._policy.health_check_interval
        ):
            if behind_since is None:
                log.warning(
                    "stale scan: heartbeats that arrived a while ago are still unread (this "
                    "process did not run, or cannot keep up): no amphora is judged until read"
                )
            return behind_since or now
        if behind_since is not None:
            log.warning("stale scan: judging again after %.1f s", now - behind_since)
        await self.scan(conn)
        return None

    async def _standby_until_leader(self, conn: asyncpg.Connection) -> None:
        won = await postgres.try_scanner_lock(conn)
        while not won:
            await asyncio.sleep(self._policy.health_check_interval)
            won = await postgres.try_scanner_lock(conn)

    async def _settle(self, connected_at: float) -> None:
        """Wait until ``heartbeat_timeout`` has passed since the receiver's start and since
        ``connected_at`` (see the module's invariant)."""
        since = max(self._receiving_since(), connected_at)
        wait = since + self._policy.heartbeat_timeout - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def scan(self, conn: asyncpg.Connection) -> ScanDecision:
        """One pass on the lock holder's connection: fail the stale, or hold them all."""
        policy = self._policy
        late = suspect_after(policy.heartbeat_timeout)
        among = None
        before = time.monotonic() - late
        if self._unheard is not None:
            among = self._unheard(before, policy.stale_grace + late)
        silent: list[SilentAmphora] = []
        if among is None or among:
            self.queries += 1
            silent = await postgres.silent_amphorae(
                conn, late, policy.stale_grace + late, among=among
            )
        if self._heard is not None:  # heard since: alive, whatever a pending flush left behind
            silent = [a for a in silent if self._heard.get(a.amphora_id, -math.inf) < before]
        decision = decide_failovers(
            silent,
            heartbeat_timeout=policy.heartbeat_timeout,
            stale_grace=policy.stale_grace,
            threshold=policy.failover_threshold,
        )
        if decision.tripped:
            held = await postgres.mark_stopped(conn, [a.amphora_id for a in decision.stop])
            if held:
                self._metrics.inc("breaker_trips_total")
                log.error(
                    "stale scan: %d amphorae silent at once (failover_threshold %d): "
                    "failovers stopped; %d newly held until their heartbeats resume",
                    decision.late,
                    policy.failover_threshold,
                    held,
                )
        failing = {a.amphora_id for a in decision.fail}
        held_now = {a.amphora_id for a in silent if a.stopped} | {
            a.amphora_id for a in decision.stop
        }
        self.stopped = len(held_now - failing)
        for amp in decision.fail:
            try:
                await self._fail(conn, amp.amphora_id, amp.lb_id, amp.silent_for)
            except FulcrumError:
                log.exception("stale scan: recording amphora %s as failed failed", amp.amphora_id)
        return decision

    async def _fail(
        self, conn: asyncpg.Connection, amphora_id: str, lb_id: str | None, silent: float | None
    ) -> None:
        record = await self._amphorae.load(amphora_id)
        if record.status != AmphoraStatus.ALLOCATED or record.loadbalancer_id != lb_id:
            return  # moved on since the scan read it
        reason = (
            f"no heartbeat for {silent:.1f} s" if silent is not None else "never sent a heartbeat"
        )
        with self._tracer.start_as_current_span("amphora failed") as span:
            span.set_attribute("fulcrum.amphora_id", amphora_id)
            metadata = Metadata(actor="health", traceparent=current_traceparent())
            await self._amphorae.record(
                amphora_id,
                [AmphoraFailed(amphora_id=amphora_id, loadbalancer_id=lb_id, reason=reason)],
                metadata,
                conn=conn,
            )
        self._metrics.inc("amphorae_failed_total")
        log.warning("stale scan: amphora %s of lb %s failed: %s", amphora_id, lb_id, reason)
