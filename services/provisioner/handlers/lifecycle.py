"""Load-balancer lifecycle: turns the LB's pending state into running amphorae.

Level-triggered: any event of an LB makes the provisioner look at the LB's *current* state and
finish whatever is pending (create, apply changes, failover, delete). Effects are idempotent by
natural key: an amphora's id derives from the event that asked for it, so a redelivered event or
a restarted provisioner finds the amphora it already started instead of starting a second one.
Every failure ends in ProvisioningFailed with the reason (the LB goes ERROR): never a stall.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import asyncpg

from libs.common.domain import commands as c
from libs.common.domain.evolve import fold
from libs.common.domain.model import LoadBalancerState, ProvisioningStatus
from libs.common.errors import FulcrumError
from libs.common.events import Envelope, Metadata
from libs.common.events import amphora as amp_ev
from libs.common.events import loadbalancer as lb_ev
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import AmphoraRepository, LoadBalancerRepository
from libs.common.streams import StreamId
from services.provisioner.drivers import AmphoraDriver, AmphoraHandle, AmphoraSpec
from services.provisioner.handlers.runtime_changes import ServerOp, plan_member_changes
from services.provisioner.handlers.spares import SparePool

log = logging.getLogger(__name__)

AMPHORA_NAMESPACE: Final = uuid.UUID("7c1e2f34-5a6b-4c8d-9e0f-a1b2c3d4e5f6")
PS = ProvisioningStatus
_SETTLING: Final = (lb_ev.LoadBalancerActivated, lb_ev.ChangesApplied, lb_ev.ProvisioningFailed)

# Pushes the whole rendered config of ``state`` to one amphora of the LB; the LB's other
# amphorae are given for what pairs them (VRRP peers, stick-table peers). See configurator.py.
PushConfig = Callable[[LoadBalancerState, AmphoraHandle, Sequence[AmphoraHandle]], Awaitable[None]]


class RuntimeApplier(Protocol):
    """Applies member changes without a reload (the configurator)."""

    async def rendered(self, state: LoadBalancerState, handle: AmphoraHandle) -> str: ...

    async def apply_runtime(
        self, handle: AmphoraHandle, ops: Sequence[ServerOp], rendered: str
    ) -> None: ...


def roles_for(topology: str) -> tuple[str, ...]:
    """The amphora roles a topology needs."""
    return ("MASTER", "BACKUP") if topology == "ACTIVE_STANDBY" else ("STANDALONE",)


def amphora_id_for(cause_event_id: str, slot: str) -> str:
    """The amphora an event asks for: the same event always names the same amphora."""
    return str(uuid.uuid5(AMPHORA_NAMESPACE, f"{cause_event_id}:{slot}"))


@dataclass(frozen=True)
class PendingWork:
    """What the LB's stream says is left to do, the event that asked for it, and (for
    "apply") the events since the last settlement."""

    kind: str  # "create" | "apply" | "failover" | "delete" | "none"
    cause: Envelope | None = None
    pending: tuple[Envelope, ...] = ()


def pending_work(state: LoadBalancerState, envelopes: list[Envelope]) -> PendingWork:
    """Pure: read the pending step off the state and the events since the last settlement."""
    lb = state.loadbalancer
    if lb is None or lb.provisioning_status not in (
        PS.PENDING_CREATE,
        PS.PENDING_UPDATE,
        PS.PENDING_DELETE,
    ):
        return PendingWork("none")
    if lb.provisioning_status == PS.PENDING_DELETE:
        return PendingWork("delete")
    if lb.provisioning_status == PS.PENDING_CREATE:
        return PendingWork("create", envelopes[0])
    pending: list[Envelope] = []
    for envelope in reversed(envelopes):
        if isinstance(envelope.payload, _SETTLING):
            break
        if isinstance(envelope.payload, lb_ev.LoadBalancerFailoverRequested):
            return PendingWork("failover", envelope)
        if not isinstance(envelope.payload, lb_ev.OperatingStatusChanged):
            pending.append(envelope)
    return PendingWork("apply", pending=tuple(reversed(pending)))


class LifecycleHandler:
    """Finishes pending LB work; used by the consumer and by the start-up reconciliation."""

    def __init__(
        self,
        store: PostgresEventStore,
        driver: AmphoraDriver,
        push_config: PushConfig,
        spares: SparePool | None = None,
        runtime: RuntimeApplier | None = None,
    ) -> None:
        self._store = store
        self._spares = spares
        self._runtime = runtime
        self._lbs = LoadBalancerRepository(store)
        self._amps = AmphoraRepository(store)
        self._driver = driver
        self._push = push_config

    async def handle(self, envelope: Envelope, conn: asyncpg.Connection) -> None:
        """Consumer entry point: serialize on the LB across replicas, then reconcile it."""
        if envelope.category != "loadbalancer":
            return
        await self.reconcile(envelope.aggregate_id, conn, envelope.metadata.caused_by(envelope))

    async def reconcile(self, lb_id: str, conn: asyncpg.Connection, metadata: Metadata) -> None:
        # One provisioner works on one LB at a time, whichever replica got the event.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", lb_id)
        envelopes = await self._store.read_stream(StreamId.loadbalancer(lb_id))
        state = fold(e.payload for e in envelopes)
        work = pending_work(state, envelopes)
        if work.kind == "none":
            return
        log.info("lb %s: %s", lb_id, work.kind)
        try:
            if work.kind == "create":
                assert work.cause is not None
                await self._create(state, work.cause, conn, metadata)
            elif work.kind == "apply":
                await self._apply(state, work.pending, conn, metadata)
            elif work.kind == "failover":
                assert work.cause is not None
                await self._failover(state, work.cause, conn, metadata)
            else:
                await self._delete(state, conn, metadata)
        except FulcrumError as exc:
            reason = f"{work.kind} failed: {exc}"
            log.warning("lb %s: %s", lb_id, reason)
            await self._lbs.execute(lb_id, c.FailProvisioning(reason), metadata, conn=conn)

    async def _start_amphora(
        self,
        state: LoadBalancerState,
        amphora_id: str,
        conn: asyncpg.Connection,
        metadata: Metadata,
        role: str = "STANDALONE",
    ) -> AmphoraHandle:
        lb = state.loadbalancer
        assert lb is not None
        spec = AmphoraSpec(
            amphora_id=amphora_id,
            lb_id=lb.id,
            vip_address=lb.vip_address,
            role=role,
            topology=lb.topology.value,
        )
        handle = await self._driver.ensure(spec)
        record = await self._amps.load(amphora_id)
        if record.version == 0:
            await self._amps.record(
                amphora_id,
                [
                    amp_ev.AmphoraBooted(
                        amphora_id=amphora_id,
                        driver=handle.driver,
                        compute_id=handle.compute_id,
                        agent_url=handle.agent_url,
                        lb_network_ip=handle.lb_network_ip,
                        loadbalancer_id=lb.id,
                        role=role,
                        cert_expiration=handle.cert_expiration,
                        topology=lb.topology.value,
                    )
                ],
                metadata,
                conn=conn,
            )
        return handle

    async def _handles(self, state: LoadBalancerState) -> list[AmphoraHandle]:
        running = {h.amphora_id: h for h in await self._driver.list()}
        return [running[a] for a in state.amphora_ids if a in running]

    async def _push_all(self, state: LoadBalancerState, handles: list[AmphoraHandle]) -> None:
        for handle in handles:
            await self._push(state, handle, handles)

    async def _create(
        self,
        state: LoadBalancerState,
        cause: Envelope,
        conn: asyncpg.Connection,
        metadata: Metadata,
    ) -> None:
        lb = state.loadbalancer
        assert lb is not None
        roles = roles_for(lb.topology.value)
        spare = None
        if roles == ("STANDALONE",) and self._spares:
            spare = await self._spares.claim(conn, lb.id)
        handles: list[AmphoraHandle] = [spare] if spare else []
        try:
            if spare is None:
                for role in roles:
                    amphora_id = amphora_id_for(str(cause.event_id), role)
                    handles.append(
                        await self._start_amphora(state, amphora_id, conn, metadata, role)
                    )
            await self._push_all(state, handles)
        except FulcrumError:
            for handle in handles:  # nothing half-created remains
                await self._driver.delete(handle.amphora_id)
            raise
        amphora_ids = tuple(h.amphora_id for h in handles)
        await self._lbs.execute(lb.id, c.Activate(amphora_ids), metadata, conn=conn)

    async def _apply(
        self,
        state: LoadBalancerState,
        pending: Sequence[Envelope],
        conn: asyncpg.Connection,
        metadata: Metadata,
    ) -> None:
        lb = state.loadbalancer
        assert lb is not None
        handles = await self._handles(state)
        if len(handles) != len(state.amphora_ids) or not handles:
            missing = set(state.amphora_ids) - {h.amphora_id for h in handles}
            raise _Missing(f"amphorae {sorted(missing) or 'none'} are not running")
        if not await self._apply_at_runtime(state, pending, handles):
            await self._push_all(state, handles)
        await self._lbs.execute(lb.id, c.ApplyChanges(), metadata, conn=conn)

    async def _apply_at_runtime(
        self, state: LoadBalancerState, pending: Sequence[Envelope], handles: list[AmphoraHandle]
    ) -> bool:
        """Member-only changes through the runtime API; False when a reload is needed."""
        if self._runtime is None:
            return False
        plans = []
        for handle in handles:
            rendered = await self._runtime.rendered(state, handle)
            ops = plan_member_changes(state, pending, rendered)
            if ops is None:
                return False
            plans.append((handle, ops, rendered))
        for handle, ops, rendered in plans:
            try:
                await self._runtime.apply_runtime(handle, ops, rendered)
            except FulcrumError:
                log.warning("runtime change failed on %s; reloading instead", handle.amphora_id)
                return False
        return True

    async def _failover(
        self,
        state: LoadBalancerState,
        cause: Envelope,
        conn: asyncpg.Connection,
        metadata: Metadata,
    ) -> None:
        """Build the replacement first, serve from it, then delete the failed amphora.

        A replacement takes its predecessor's role; an LB that lost every amphora (or never
        had one) gets a full new set for its topology.

        ACTIVE_STANDBY: nothing is pushed until every replacement runs (its address known), so
        no amphora is ever configured without its peer (the configurator refuses that); until
        then the survivor keeps unicast adverts to its dead peer and the VIP. The survivor is
        pushed first: the replacement's keepalived hears the survivor's adverts from its start
        and, with nopreempt, stays BACKUP (no VIP flap despite its higher priority).
        """
        lb = state.loadbalancer
        assert lb is not None
        assert isinstance(cause.payload, lb_ev.LoadBalancerFailoverRequested)
        requested = cause.payload.amphora_id
        running = {h.amphora_id: h for h in await self._handles(state)}
        # Replace the requested amphora, and any other that no longer runs.
        failed = [a for a in state.amphora_ids if requested in (None, a) or a not in running]
        kept = [running[a] for a in state.amphora_ids if a not in failed]
        taken_roles = {h.role for h in kept}
        replacements: list[AmphoraHandle] = []
        for role in roles_for(lb.topology.value):
            if role in taken_roles:
                continue
            new_id = amphora_id_for(str(cause.event_id), role)
            replacements.append(await self._start_amphora(state, new_id, conn, metadata, role))
        await self._push_all(state, kept + replacements)
        for old in failed:
            await self._retire(old, cause.payload.reason or "failover", conn, metadata)
        amphora_ids = tuple(h.amphora_id for h in kept + replacements)
        await self._lbs.execute(lb.id, c.Activate(amphora_ids), metadata, conn=conn)

    async def _retire(
        self, amphora_id: str, reason: str, conn: asyncpg.Connection, metadata: Metadata
    ) -> None:
        await self._driver.delete(amphora_id)
        record = await self._amps.load(amphora_id)
        if record.version and record.status.value != "DELETED":
            await self._amps.record(
                amphora_id, [amp_ev.AmphoraDeleted(amphora_id=amphora_id)], metadata, conn=conn
            )

    async def _delete(
        self, state: LoadBalancerState, conn: asyncpg.Connection, metadata: Metadata
    ) -> None:
        lb = state.loadbalancer
        assert lb is not None
        for amphora_id in state.amphora_ids:
            await self._retire(amphora_id, "load balancer deleted", conn, metadata)
        await self._lbs.execute(lb.id, c.CompleteDeletion(), metadata, conn=conn)


class _Missing(FulcrumError):
    """An amphora the LB needs does not run (failover or housekeeping will replace it)."""
