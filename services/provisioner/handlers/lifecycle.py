"""Load-balancer lifecycle: turns the LB's pending state into running amphorae.

Level-triggered: any event of an LB makes the provisioner look at the LB's *current* state and
finish whatever is pending (create, apply changes, failover, delete; decided in
domain/lifecycle.py), but the events that end a pending period (``LEAVE_NO_WORK``), which
the consumer acks unhandled. Effects are idempotent by natural key: an amphora's id derives from the
event that asked for it, so a redelivered event or a restarted provisioner finds the amphora
it already started instead of starting a second one. Every failure but a lost database
connection ends in ProvisioningFailed with the reason (the LB goes ERROR): never a stall.
Amphorae a failed create or failover started are undone (handlers/compensation.py).

What a build records (the amphorae's boot or allocation, and a create's activation), and a
change's return to ACTIVE (``ApplyChanges``), is written while the configuration is pushed
(or the runtime API changes the members), in a savepoint of the consumer's transaction: it
commits with that transaction, after the push succeeded, and is rolled back when the push
fails. The database round trips then cost nothing on a step's critical path, and no one ever
reads an ACTIVE that the amphorae do not serve yet.

ACTIVE_ACTIVE load balancers run ``amphora_min`` amphorae (or as many as they have) behind
the driver's distributor (``Distribution``), which owns the VIP: each amphora is added
(wired, the VIP on it) before its config is pushed and served once the push succeeded (its
HAProxy runs); a failover first takes the failed amphorae out of the distribution; a delete
removes the distributor first. A scaling (``LoadBalancerScaledOut`` / ``ScaledIn``) builds
the new amphorae that way, or drains the ones going (no new connections; the established
ones finish or ``drain_timeout`` passes), removes them from the distribution and retires
them; then the LB is activated with the amphorae it has.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final, Protocol

import asyncpg

from libs.common.domain import commands as c
from libs.common.domain.amphora import Amphora
from libs.common.domain.model import LoadBalancerState, Topology
from libs.common.errors import FulcrumError, NotImplementedByProvider
from libs.common.events import Envelope, Event, Metadata
from libs.common.events import loadbalancer as lb_ev
from libs.common.eventstore import PostgresEventStore
from libs.common.logsetup import log_context
from libs.common.repository import AmphoraRepository, LoadBalancerRepository, Loaded
from libs.common.telemetry import tracer
from services.provisioner.domain.amphora_records import allocated, booted
from services.provisioner.domain.lifecycle import (
    AmphoraToBuild,
    PendingWork,
    WorkKind,
    amphora_count,
    amphorae_to_build,
    may_use_spare,
    pending_work,
    plan_failover,
    plan_scale,
)
from services.provisioner.domain.runtime_changes import (
    ServerOp,
    needs_reload,
    plan_member_changes,
)
from services.provisioner.drivers import AmphoraDriver, AmphoraHandle, AmphoraSpec, Distribution
from services.provisioner.handlers.compensation import Compensation, describe, gives_up
from services.provisioner.handlers.spares import SparePool

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

# The events that end an LB's PENDING_* period (the provisioner's own last write of a step):
# the LB is ACTIVE or ERROR after each, so none leaves work to do. Whatever asks for work
# after one is an event of the LB's stream too, delivered after it: the consumer acks these
# unhandled (no transaction, no load of the LB).
LEAVE_NO_WORK: Final = frozenset(event.event_type for event in lb_ev.SETTLING)

_WORK_LOCK_SQL: Final = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"


def work_lock(envelope: Envelope) -> str | None:
    """The lock one provisioner holds while it works on an LB, whichever replica got the
    event (the consumer takes it with the event's processed row: ``ConsumerSpec.work_lock``)."""
    return envelope.aggregate_id if envelope.category == "loadbalancer" else None


# Pushes the whole rendered config of ``state`` to one amphora of the LB; the LB's other
# amphorae are given for what pairs them (VRRP peers, stick-table peers). See configurator/.
PushConfig = Callable[[LoadBalancerState, AmphoraHandle, Sequence[AmphoraHandle]], Awaitable[None]]


class RuntimeApplier(Protocol):
    """Applies member changes without a reload (the configurator)."""

    async def rendered(self, state: LoadBalancerState, handle: AmphoraHandle) -> str: ...

    async def apply_runtime(
        self, handle: AmphoraHandle, ops: Sequence[ServerOp], rendered: str
    ) -> None: ...


class LifecycleHandler:
    """Finishes pending LB work; used by the consumer and by the start-up reconciliation."""

    def __init__(
        self,
        store: PostgresEventStore,
        driver: AmphoraDriver,
        push_config: PushConfig,
        compensation: Compensation,
        spares: SparePool | None = None,
        runtime: RuntimeApplier | None = None,
        distribution: Distribution | None = None,
        drain_timeout: float = 30.0,
    ) -> None:
        self._distribution = distribution
        self._drain_timeout = drain_timeout
        self._spares = spares
        self._runtime = runtime
        self._lbs = LoadBalancerRepository(store)
        self._amps = AmphoraRepository(store)
        self._driver = driver
        self._push = push_config
        self._undo = compensation

    async def handle(self, envelope: Envelope, conn: asyncpg.Connection) -> None:
        """Consumer entry point: reconcile the LB, ``conn``'s transaction holding its
        ``work_lock`` already (the consumer took it)."""
        if envelope.category != "loadbalancer":
            return
        metadata = envelope.metadata.caused_by(envelope)
        await self._reconcile_locked(envelope.aggregate_id, conn, metadata)

    async def reconcile(self, lb_id: str, conn: asyncpg.Connection, metadata: Metadata) -> None:
        """Finish the LB's pending work under its work lock, taken on ``conn``."""
        # One provisioner works on one LB at a time, whichever replica got the event.
        await conn.execute(_WORK_LOCK_SQL, lb_id)
        await self._reconcile_locked(lb_id, conn, metadata)

    async def _reconcile_locked(
        self, lb_id: str, conn: asyncpg.Connection, metadata: Metadata
    ) -> None:
        loaded, pending = await self._lbs.read_pending(lb_id)
        state = loaded.state
        work = pending_work(state, pending)
        if work.kind == WorkKind.NONE:
            return
        log.info("lb %s: %s", lb_id, work.kind)
        try:
            with (
                log_context(lb_id=lb_id),
                _tracer.start_as_current_span(f"provision {work.kind}") as span,
            ):
                span.set_attribute("fulcrum.lb_id", lb_id)
                await self._do(work, state, conn, metadata, loaded)
        except Exception as exc:
            if not gives_up(exc):
                raise
            reason = f"{work.kind} failed: {describe(exc)}"
            log.warning("lb %s: %s", lb_id, reason)
            await self._lbs.execute(lb_id, c.FailProvisioning(reason), metadata, conn=conn)

    async def _do(
        self,
        work: PendingWork,
        state: LoadBalancerState,
        conn: asyncpg.Connection,
        metadata: Metadata,
        loaded: Loaded,
    ) -> None:
        """Do ``work``; ``loaded`` (the load ``state`` came from) is what the first write on
        the LB in this transaction, a create's activation or a change's ``ApplyChanges``,
        decides on (``LoadBalancerRepository.execute``)."""
        if work.kind != WorkKind.DELETE:
            self._distribution_of(state)  # ACTIVE_ACTIVE on a driver without: refused first
        if work.kind == WorkKind.CREATE:
            assert work.cause is not None
            await self._create(state, work.cause, conn, metadata, loaded)
        elif work.kind == WorkKind.APPLY:
            await self._apply(state, work.pending, conn, metadata, loaded)
        elif work.kind == WorkKind.FAILOVER:
            assert work.cause is not None
            await self._failover(state, work.cause, conn, metadata)
        elif work.kind == WorkKind.SCALE:
            assert work.cause is not None
            await self._scale(state, work.cause, conn, metadata)
        else:
            await self._delete(state, conn, metadata)

    async def _start_amphora(
        self, state: LoadBalancerState, build: AmphoraToBuild, peers: Sequence[AmphoraHandle]
    ) -> tuple[AmphoraHandle, list[Event], Amphora]:
        """Start one amphora of the LB away from the hosts of its ``peers`` (the LB's other
        amphorae: anti-affinity); with the handle, its boot unless already recorded, and its
        record as loaded here (the boot's append follows it)."""
        lb = state.loadbalancer
        assert lb is not None
        spec = AmphoraSpec(
            amphora_id=build.amphora_id,
            lb_id=lb.id,
            vip_address=lb.vip_address,
            role=build.role,
            topology=lb.topology.value,
            peer_hosts=frozenset(p.host for p in peers if p.host),
        )
        # No span of its own: the driver's ``driver ensure`` span (amphora and LB ids) is it.
        with log_context(amphora_id=build.amphora_id):
            handle = await self._driver.ensure(spec)
        record = await self._amps.load(build.amphora_id)
        if record.version:
            return handle, [], record
        return handle, [booted(handle, lb.id, build.role, lb.topology.value)], record

    async def _build(
        self,
        state: LoadBalancerState,
        builds: Sequence[AmphoraToBuild],
        conn: asyncpg.Connection,
        metadata: Metadata,
        *,
        kept: Sequence[AmphoraHandle] = (),
        spare: AmphoraHandle | None = None,
        activate: Loaded | None = None,
    ) -> list[AmphoraHandle]:
        """Start ``builds``, push the LB to ``kept``, ``spare`` (claimed for it) and them (the
        LB's amphorae, in that order) while recording the new amphorae's boot or allocation
        and (``activate``: the load of the LB to decide on) the LB's activation with these
        amphorae. On a failure to start or
        push, nothing of that is recorded, the amphorae claimed or started here are given up
        (compensation) and the error is raised."""
        lb = state.loadbalancer
        assert lb is not None
        new: list[AmphoraHandle] = []
        unrecorded: dict[str, list[Event]] = {}
        started: dict[str, Amphora] = {}  # the records of the amphorae started here, as loaded
        if spare is not None:
            new.append(spare)
            unrecorded[spare.amphora_id] = [allocated(spare.amphora_id, lb.id)]
        try:
            for build in builds:
                unrecorded[build.amphora_id] = []
                handle, events, record = await self._start_amphora(state, build, [*kept, *new])
                new.append(handle)
                unrecorded[build.amphora_id] = events
                started[build.amphora_id] = record
            handles = [*kept, *new]
            activation = None
            if activate is not None:
                activation = (c.Activate(tuple(h.amphora_id for h in handles)), activate)
            await self._distribute(state, handles, serve=False)
            # An ACTIVE_ACTIVE amphora's config names no other amphora: the kept ones have it.
            active_active = self._distribution_of(state) is not None
            recorded = await self._push_while_recording(
                state,
                new if active_active else handles,
                unrecorded,
                started,
                activation,
                conn,
                metadata,
            )
            await self._distribute(state, handles, serve=True)
        except Exception as exc:
            if gives_up(exc):
                reason = f"build given up: {describe(exc)}"
                await self._undistribute(state, [h.amphora_id for h in new], last=not kept)
                await self._undo.give_up(unrecorded, reason, conn, metadata)
            raise
        recorded.result()  # the push succeeded: a failure to record is no failed build
        return handles

    async def _push_while_recording(
        self,
        state: LoadBalancerState,
        handles: list[AmphoraHandle],
        records: Mapping[str, Sequence[Event]],
        amphora_records: Mapping[str, Amphora],
        activation: tuple[c.Activate, Loaded] | None,
        conn: asyncpg.Connection,
        metadata: Metadata,
    ) -> asyncio.Future[None]:
        """Push the LB to ``handles`` and meanwhile append ``records`` (amphora id -> events;
        after the record ``amphora_records`` holds, where it holds one) and ``activation``
        (``_while_recording``)."""

        async def record() -> None:
            for amphora_id, events in records.items():
                if events:
                    await self._amps.record(
                        amphora_id,
                        list(events),
                        metadata,
                        conn=conn,
                        loaded=amphora_records.get(amphora_id),
                    )
            if activation is not None:
                assert state.loadbalancer is not None
                activate, loaded = activation
                with _tracer.start_as_current_span("activate"):
                    await self._lbs.execute(
                        state.loadbalancer.id, activate, metadata, conn=conn, loaded=loaded
                    )

        return await self._while_recording(self._push_all(state, handles), record, conn)

    @staticmethod
    async def _while_recording(
        effect: Awaitable[None], record: Callable[[], Awaitable[None]], conn: asyncpg.Connection
    ) -> asyncio.Future[None]:
        """Await ``effect`` (what the amphorae do) and meanwhile ``record()`` in a savepoint of
        ``conn``'s transaction, kept only when both succeed: the database round trips overlap
        the effect instead of following it. Raises the effect's error; returns the recording's
        outcome (a done future). A kept savepoint is not released: the transaction's commit
        commits it, and a release would be one more round trip between the effect and the
        commit that makes the step visible."""
        savepoint = conn.transaction()
        started: list[bool] = []

        async def in_savepoint() -> None:
            await savepoint.start()  # here: its round trip overlaps the effect too
            started.append(True)
            await record()

        recording = asyncio.ensure_future(in_savepoint())
        try:
            await effect
        except BaseException:
            await asyncio.gather(recording, return_exceptions=True)
            if started:
                await savepoint.rollback()
            raise
        await asyncio.gather(recording, return_exceptions=True)
        if recording.exception() is not None and started:
            await savepoint.rollback()
        return recording

    def _distribution_of(self, state: LoadBalancerState) -> Distribution | None:
        """The distribution of an ACTIVE_ACTIVE LB (None for the other topologies); raises
        NotImplementedByProvider when the driver has none."""
        lb = state.loadbalancer
        if lb is None or lb.topology != Topology.ACTIVE_ACTIVE:
            return None
        if self._distribution is None:
            raise NotImplementedByProvider(
                f"the {self._driver.name} amphora driver cannot run the ACTIVE_ACTIVE topology"
            )
        return self._distribution

    async def _distribute(
        self, state: LoadBalancerState, handles: Sequence[AmphoraHandle], *, serve: bool
    ) -> None:
        """ACTIVE_ACTIVE: every amphora of ``handles`` behind the distributor (``serve``:
        taking new connections; otherwise only wired, before its config is pushed)."""
        distribution = self._distribution_of(state)
        lb = state.loadbalancer
        if distribution is None or lb is None:
            return
        for handle in handles:
            if serve:
                await distribution.serve(lb.id, lb.vip_address, handle.amphora_id)
            else:
                await distribution.add(lb.id, lb.vip_address, handle.amphora_id)

    async def _undistribute(
        self, state: LoadBalancerState, amphora_ids: Sequence[str], *, last: bool = False
    ) -> None:
        """ACTIVE_ACTIVE: take the amphorae out of the distribution (their connections fail),
        and with ``last`` (no other amphora left) remove the distributor; a failure is logged
        (an amphora's link goes with its namespace anyway)."""
        lb = state.loadbalancer
        if lb is None or lb.topology != Topology.ACTIVE_ACTIVE or self._distribution is None:
            return
        try:
            if last:
                await self._distribution.delete(lb.id)
            for amphora_id in amphora_ids:
                await self._distribution.remove(lb.id, amphora_id)
        except FulcrumError:
            log.exception(
                "lb %s: amphorae %s not taken out of the distribution", lb.id, amphora_ids
            )

    async def _handles(self, state: LoadBalancerState) -> list[AmphoraHandle]:
        found = [await self._driver.get(a) for a in state.amphora_ids]
        return [h for h in found if h is not None]

    async def _push_all(self, state: LoadBalancerState, handles: list[AmphoraHandle]) -> None:
        for handle in handles:
            with (
                log_context(amphora_id=handle.amphora_id),
                _tracer.start_as_current_span("push") as span,
            ):
                span.set_attribute("fulcrum.amphora_id", handle.amphora_id)
                await self._push(state, handle, handles)

    async def _create(
        self,
        state: LoadBalancerState,
        cause: Envelope,
        conn: asyncpg.Connection,
        metadata: Metadata,
        loaded: Loaded,
    ) -> None:
        lb = state.loadbalancer
        assert lb is not None
        spare = await self._claim_spare(state, conn)
        # A spare stands for one STANDALONE amphora.
        taken = ["STANDALONE"] if spare is not None else []
        builds = amphorae_to_build(
            lb.topology.value, str(cause.event_id), taken, count=amphora_count(lb)
        )
        await self._build(state, builds, conn, metadata, spare=spare, activate=loaded)

    async def _claim_spare(
        self, state: LoadBalancerState, conn: asyncpg.Connection
    ) -> AmphoraHandle | None:
        """A READY spare for the LB (SINGLE and ACTIVE_ACTIVE: STANDALONE amphorae), or None."""
        lb = state.loadbalancer
        if self._spares is None or lb is None or not may_use_spare(lb.topology.value):
            return None
        with _tracer.start_as_current_span("claim spare"):
            return await self._spares.claim(conn)

    async def _apply(
        self,
        state: LoadBalancerState,
        pending: Sequence[Envelope],
        conn: asyncpg.Connection,
        metadata: Metadata,
        loaded: Loaded,
    ) -> None:
        lb = state.loadbalancer
        assert lb is not None
        handles = await self._handles(state)
        if len(handles) != len(state.amphora_ids) or not handles:
            missing = set(state.amphora_ids) - {h.amphora_id for h in handles}
            raise _Missing(f"amphorae {sorted(missing) or 'none'} are not running")

        async def change() -> None:
            if not await self._apply_at_runtime(state, pending, handles):
                await self._push_all(state, handles)

        async def settle() -> None:
            with _tracer.start_as_current_span("apply changes"):
                await self._lbs.execute(lb.id, c.ApplyChanges(), metadata, conn=conn, loaded=loaded)

        # The LB's return to ACTIVE is written while the amphorae change, committed after.
        (await self._while_recording(change(), settle, conn)).result()

    async def _apply_at_runtime(
        self, state: LoadBalancerState, pending: Sequence[Envelope], handles: list[AmphoraHandle]
    ) -> bool:
        """Member-only changes through the runtime API; False when a reload is needed (known
        before rendering for any change but a member's: the push renders it then)."""
        if self._runtime is None or needs_reload(pending):
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
        running = {h.amphora_id: h for h in await self._handles(state)}
        plan = plan_failover(
            state,
            cause.payload.amphora_id,
            str(cause.event_id),
            {a: h.role for a, h in running.items()},
        )
        kept = [running[a] for a in plan.kept]
        await self._undistribute(state, plan.failed)
        handles = await self._build(state, plan.build, conn, metadata, kept=kept)
        for old in plan.failed:
            await self._undo.retire(old, conn, metadata)
        amphora_ids = tuple(h.amphora_id for h in handles)
        await self._lbs.execute(lb.id, c.Activate(amphora_ids), metadata, conn=conn)

    async def _scale(
        self,
        state: LoadBalancerState,
        cause: Envelope,
        conn: asyncpg.Connection,
        metadata: Metadata,
    ) -> None:
        """Scale out (claim a spare or build, push, serve the new amphorae) or in (drain,
        remove, retire the newest ones) to the event's count of running amphorae (one that
        stopped running is built over and retired), then activate the LB with them."""
        lb = state.loadbalancer
        assert lb is not None
        assert isinstance(cause.payload, lb_ev.LoadBalancerScaled)
        distribution = self._distribution_of(state)
        assert distribution is not None
        running = {h.amphora_id: h for h in await self._handles(state)}
        ordered = [a for a in state.amphora_ids if a in running]
        plan = plan_scale(ordered, cause.payload.amphorae, str(cause.event_id))
        kept = [running[a] for a in plan.kept]
        builds = list(plan.build)
        spare = await self._claim_spare(state, conn) if builds else None
        if spare is not None:
            builds.pop()
        handles = await self._build(state, builds, conn, metadata, kept=kept, spare=spare)
        for amphora_id in plan.removed:
            await distribution.drain(lb.id, lb.vip_address, amphora_id)
        await self._drained(lb.id, distribution, plan.removed)
        for amphora_id in plan.removed:
            await distribution.remove(lb.id, amphora_id)
            await self._undo.retire(amphora_id, conn, metadata)
        # Amphorae of the LB that do not run any more: built over (in the count), retired.
        gone = [a for a in state.amphora_ids if a not in running]
        await self._undistribute(state, gone)
        for amphora_id in gone:
            await self._undo.retire(amphora_id, conn, metadata)
        amphora_ids = tuple(h.amphora_id for h in handles)
        await self._lbs.execute(lb.id, c.Activate(amphora_ids), metadata, conn=conn)

    async def _drained(
        self, lb_id: str, distribution: Distribution, amphora_ids: Sequence[str]
    ) -> None:
        """Until the drained amphorae hold no established connection, or ``drain_timeout``."""
        deadline = time.monotonic() + self._drain_timeout
        while amphora_ids:
            held = [await distribution.connections(lb_id, a) for a in amphora_ids]
            if not any(held):
                return
            if time.monotonic() >= deadline:
                log.info("lb %s: drain timeout with %d connections left", lb_id, sum(held))
                return
            await asyncio.sleep(0.2)

    async def _delete(
        self, state: LoadBalancerState, conn: asyncpg.Connection, metadata: Metadata
    ) -> None:
        lb = state.loadbalancer
        assert lb is not None
        if lb.topology == Topology.ACTIVE_ACTIVE and self._distribution is not None:
            await self._distribution.delete(lb.id)
        for amphora_id in state.amphora_ids:
            await self._undo.retire(amphora_id, conn, metadata)
        await self._lbs.execute(lb.id, c.CompleteDeletion(), metadata, conn=conn)


class _Missing(FulcrumError):
    """An amphora the LB needs does not run (failover or housekeeping will replace it)."""
