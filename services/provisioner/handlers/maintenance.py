"""Housekeeping's requests, carried out: spares booted and retired, certificates rotated, and
the driver reconciled with the amphora store.

Housekeeping decides and appends requests; this consumer is the only place that acts on them,
because only the provisioner touches drivers. Every effect is idempotent by the amphora id
(``ensure`` of a running amphora returns it; ``delete`` of a missing one succeeds), so a
redelivered request does nothing twice. Spare transitions lock the spare's view row first
(adapters/inventory.py), as the create's claim does, so a spare is never claimed and retired
at once.
"""

from __future__ import annotations

import logging
import time
from typing import Final

import asyncpg

from libs.common.domain.amphora import AmphoraStatus
from libs.common.events import Envelope, Metadata
from libs.common.events import amphora as amp_ev
from libs.common.events import housekeeping as hk
from libs.common.eventstore import PostgresEventStore
from libs.common.pki import DeploymentCA
from libs.common.readmodel import cert_time
from libs.common.repository import AmphoraRepository
from libs.common.service import Metrics
from services.provisioner.adapters.agent_client import AgentRejected
from services.provisioner.adapters.inventory import (
    amphora_inventory,
    inventory_row,
    lock_amphora,
    try_lb_lock,
)
from services.provisioner.configurator import Configurator
from services.provisioner.domain.amphora_records import (
    booted,
    certificate_rotated,
    deleted,
    failed,
)
from services.provisioner.domain.reconciliation import (
    InventoryRow,
    judge_driver,
    sees,
    unowned,
)
from services.provisioner.drivers import AmphoraDriver, AmphoraHandle, AmphoraSpec
from services.provisioner.handlers.compensation import describe, gives_up

log = logging.getLogger(__name__)

ACTOR: Final = "provisioner-maintenance"
_SPARE_STATUSES: Final = (AmphoraStatus.BOOTING.value, AmphoraStatus.READY.value)
_ROTATABLE: Final = frozenset({AmphoraStatus.READY, AmphoraStatus.ALLOCATED})


class MaintenanceHandler:
    """Consumer of housekeeping's requests (and of failures of spares)."""

    def __init__(
        self,
        store: PostgresEventStore,
        driver: AmphoraDriver,
        configurator: Configurator,
        ca: DeploymentCA,
        metrics: Metrics,
        *,
        cert_validity_days: int,
    ) -> None:
        self._amps = AmphoraRepository(store)
        self._driver = driver
        self._configurator = configurator
        self._ca = ca
        self._metrics = metrics
        self._validity = cert_validity_days
        # Running amphorae nobody owns, by id: when this replica first saw each unowned.
        self._unowned_since: dict[str, float] = {}

    async def handle(self, envelope: Envelope, conn: asyncpg.Connection) -> None:
        metadata = Metadata(actor=ACTOR).caused_by(envelope)
        payload = envelope.payload
        match payload:
            case hk.SpareAmphoraRequested():
                await self.boot_spare(payload.amphora_id, conn, metadata)
            case hk.SpareAmphoraRetirementRequested():
                await self.remove_spare(payload.amphora_id, conn, metadata)
            case amp_ev.AmphoraFailed() if payload.loadbalancer_id is None:
                await self.remove_spare(payload.amphora_id, conn, metadata)
            case hk.AmphoraCertificateRotationRequested():
                await self.rotate_certificate(payload, conn, metadata)
            case hk.AmphoraReconciliationRequested():
                await self.reconcile_driver(payload.grace_seconds, conn, metadata)

    # --- spares -------------------------------------------------------------------------

    async def boot_spare(
        self, amphora_id: str, conn: asyncpg.Connection, metadata: Metadata
    ) -> None:
        """Boot a requested spare and record it READY; a failed boot records it deleted."""
        record = await self._amps.load(amphora_id)
        if record.status != AmphoraStatus.BOOTING:
            return  # booted already, or retired before its boot
        try:
            handle = await self._driver.ensure(AmphoraSpec(amphora_id=amphora_id, lb_id=None))
        except Exception as exc:
            if not gives_up(exc):
                raise
            log.warning("spare %s: boot failed: %s", amphora_id, describe(exc))
            await self._driver.delete(amphora_id)
            if await lock_amphora(conn, amphora_id, _SPARE_STATUSES, skip_locked=False):
                await self._amps.record(
                    amphora_id,
                    [
                        failed(amphora_id, f"boot failed: {exc}"),
                        deleted(amphora_id),
                    ],
                    metadata,
                    conn=conn,
                )
            self._metrics.inc("spare_boot_failures_total")
            return
        if not await lock_amphora(conn, amphora_id, [AmphoraStatus.BOOTING], skip_locked=False):
            # Retired while it booted: its retirement (next in this stream) deletes it; do it
            # now as well, in case that request was handled by another replica already.
            await self._driver.delete(amphora_id)
            return
        await self._configurator.warm(handle)  # its claim's push skips the first contact
        await self._amps.record(amphora_id, [booted(handle)], metadata, conn=conn)
        self._metrics.inc("spares_booted_total")
        log.info("spare %s: READY", amphora_id)

    async def remove_spare(
        self, amphora_id: str, conn: asyncpg.Connection, metadata: Metadata
    ) -> None:
        """Delete a spare that was retired or failed (PENDING_DELETE, no LB); idempotent."""
        record = await self._amps.load(amphora_id)
        if record.loadbalancer_id is not None or record.status != AmphoraStatus.PENDING_DELETE:
            return  # an LB's amphora (its LB's failover retires it), or already deleted
        await self._driver.delete(amphora_id)
        await self._configurator.forget(amphora_id)
        await self._amps.record(amphora_id, [deleted(amphora_id)], metadata, conn=conn)
        self._metrics.inc("spares_deleted_total")
        log.info("spare %s: deleted (%s)", amphora_id, record.failure_reason or "retired")

    # --- certificates ---------------------------------------------------------------------

    async def rotate_certificate(
        self,
        request: hk.AmphoraCertificateRotationRequested,
        conn: asyncpg.Connection,
        metadata: Metadata,
    ) -> None:
        """Issue a new server certificate, install it on the agent, record its expiry.

        The agent swaps it for new TLS connections only: HAProxy and open connections are
        untouched. Raises AgentUnavailable (the consumer retries) when the agent is
        unreachable; a refusal is logged and left to housekeeping's next request.
        """
        record = await self._amps.load(request.amphora_id)
        if record.status not in _ROTATABLE or cert_time(record.cert_expiration) != cert_time(
            request.cert_expiration
        ):
            return  # gone, or rotated since the request (the request quotes the rendered time)
        handle = await self._running(request.amphora_id)
        if handle is None:
            log.warning("certificate of %s not rotated: not running", request.amphora_id)
            return
        sans = [record.id, handle.lb_network_ip] if handle.lb_network_ip else [record.id]
        issued = self._ca.issue_server_cert(record.id, sans, self._validity)
        try:
            await self._configurator.client(handle).rotate_server_certificate(
                issued.cert_pem, issued.key_pem
            )
        except AgentRejected as exc:
            log.error("certificate of %s not rotated: %s", record.id, exc)
            self._metrics.inc("cert_rotation_failures_total")
            return
        expiration = issued.not_after.isoformat()
        await self._amps.record(
            record.id,
            [certificate_rotated(record.id, expiration)],
            metadata,
            conn=conn,
        )
        self._metrics.inc("cert_rotations_total")
        log.info("certificate of %s rotated: valid until %s", record.id, expiration)

    # --- reconciliation -------------------------------------------------------------------

    async def reconcile_driver(
        self, grace: float, conn: asyncpg.Connection, metadata: Metadata
    ) -> None:
        """Delete amphorae (running, or left over by the driver) unowned for ``grace`` s; fail
        expected amphorae that do not run.

        The driver is listed before the store is read, so an amphora recorded in between is
        seen as owned. Each verdict is confirmed under the LB's work lock (or the spare's row
        lock) against a fresh look, so work in flight is never mistaken for a leak or a loss.
        With several amphora hosts, only the hosts reachable both before and after the listing
        are judged: an amphora on a host out of sight is not missing.
        """
        before = await self._driver.reachable_hosts()
        handles, leftovers = await self._driver.list_with_leftovers()
        running = {h.amphora_id: h for h in handles}
        after = await self._driver.reachable_hosts()
        visible = None if before is None or after is None else before & after
        inventory = await amphora_inventory(conn)
        verdicts = judge_driver(
            running.keys(),
            leftovers,
            inventory,
            self._unowned_since,
            time.monotonic(),
            grace,
            visible,
        )
        self._unowned_since = verdicts.unowned_since
        for amphora_id in verdicts.reap:
            handle = running.get(amphora_id)
            lb_id = handle.lb_id if handle else leftovers.get(amphora_id)
            await self._reap(amphora_id, lb_id, conn)
        for row in verdicts.missing:
            await self._fail_missing(row, conn, metadata)
        for row in verdicts.missing_spares:
            await self._fail_missing_spare(row, conn, metadata)
        self._metrics.inc("reconciliations_total")

    async def _reap(self, amphora_id: str, lb_id: str | None, conn: asyncpg.Connection) -> None:
        """Delete what the driver has of ``amphora_id`` (running or left over) unless the store
        owns it now; ``lb_id`` is the LB the driver says it serves (a leftover's too: a build
        in flight holds that LB's work lock, and its amphora is recorded when it commits)."""
        async with conn.transaction():
            if lb_id is not None and not await try_lb_lock(conn, lb_id):
                return  # its LB is being worked on: look again next time
            if not unowned(await inventory_row(conn, amphora_id)):
                self._unowned_since.pop(amphora_id, None)
                return
            await self._driver.delete(amphora_id)
        self._unowned_since.pop(amphora_id, None)
        self._metrics.inc("orphans_deleted_total")
        log.warning("amphora %s: deleted, running but owned by no one", amphora_id)

    async def _fail_missing(
        self, row: InventoryRow, conn: asyncpg.Connection, metadata: Metadata
    ) -> None:
        assert row.lb_id is not None
        async with conn.transaction():
            if not await try_lb_lock(conn, row.lb_id):
                return
            fresh = await inventory_row(conn, row.amphora_id)
            if fresh is None or fresh != row or await self._may_still_run(row):
                return
            await self._amps.record(
                row.amphora_id,
                [
                    failed(
                        row.amphora_id,
                        "not running: the driver does not list it",
                        loadbalancer_id=row.lb_id,
                    )
                ],
                metadata,
                conn=conn,
            )
        self._metrics.inc("missing_amphorae_failed_total")
        log.warning("amphora %s of lb %s: not running; failed over", row.amphora_id, row.lb_id)

    async def _fail_missing_spare(
        self, row: InventoryRow, conn: asyncpg.Connection, metadata: Metadata
    ) -> None:
        async with conn.transaction():
            ready = [AmphoraStatus.READY.value]
            if not await lock_amphora(conn, row.amphora_id, ready, skip_locked=True):
                return  # being claimed, or changed since
            if await self._may_still_run(row):
                return
            await self._amps.record(
                row.amphora_id,
                [failed(row.amphora_id, "spare not running")],
                metadata,
                conn=conn,
            )
        log.warning("spare %s: not running; it will be replaced", row.amphora_id)

    async def _may_still_run(self, row: InventoryRow) -> bool:
        """False only when the amphora's host is in sight and does not run it: the fresh look
        a verdict of loss is confirmed with."""
        if not sees(await self._driver.reachable_hosts(), row.host):
            return True
        return await self._running(row.amphora_id) is not None

    async def _running(self, amphora_id: str) -> AmphoraHandle | None:
        return await self._driver.get(amphora_id)


__all__ = ["ACTOR", "MaintenanceHandler"]
