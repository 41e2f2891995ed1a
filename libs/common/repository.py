"""The LoadBalancer repository: load by folding the stream, save by append + projection.

Loading starts from the stream's snapshot (the state folded up to some version, kept in
``snapshots``) and folds only the events after it, so a write costs the same on a stream of ten
events and on one of a hundred thousand. An append that leaves ``snapshot_every`` or more events
after the snapshot writes a new one in its transaction. A snapshot of another shape
(``SNAPSHOT_SCHEMA_VERSION``) is ignored: the state is rebuilt from the events and the next
append replaces it.

A load balancer has two streams: ``loadbalancer-<id>`` (intent and provisioning) and
``lbstatus-<id>`` (the operating statuses health observes, which may change every few seconds for
years). Loading folds both after the snapshot in commit order (``global_position``), the
snapshot and both streams' events after it read in one round trip; ``execute``
appends what ``decide`` returns to the stream it belongs to, and each append checks, under one
lock per load balancer, that the other stream has not moved: the two are written one at a time,
as one stream was. The read model's rows carry ``revision`` (both versions summed).

Every writer (api, provisioner, health, housekeeping) changes a load balancer only through
``execute``: load, ``decide``, append at the loaded version with the read model updated in the
same transaction. A concurrent writer's win makes it reload and retry once; a second loss is
a Conflict (409). A caller that has just loaded the load balancer (``read``, to check a request
before it takes a quota) hands that load to ``execute``, which decides on it instead of loading
again; the append checks its versions like any other load's.

A repository also keeps, for the load balancers it last worked on (``KNOWN_STATES``, the least
recently used dropped first), the newest committed state it has seen: a load's, or an
append's that committed on its own. A load then reads and folds only the events after that
state's versions (a step of a step-by-step create: one or two, where the snapshot's tail held
up to ``SNAPSHOT_EVERY``). What a known state holds is committed, and the events after it are
read every time, so it is never stale: an append inside a caller's transaction, which may
still roll back, leaves the known state as it was.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import asyncpg
from pydantic import ValidationError

from libs.common.domain.amphora import Amphora, evolve_amphora, fold_amphora
from libs.common.domain.commands import Command
from libs.common.domain.decide import decide
from libs.common.domain.evolve import evolve, observe
from libs.common.domain.kinds import CHILD_KINDS
from libs.common.domain.model import PENDING_STATUSES, LoadBalancerState
from libs.common.errors import ConcurrencyError, Conflict
from libs.common.events import Envelope, Event, Metadata
from libs.common.events.loadbalancer import SETTLING
from libs.common.events.loadbalancer_status import LoadBalancerStatusEvent
from libs.common.eventstore import (
    PostgresEventStore,
    StoredSnapshot,
    StreamGuard,
    write_snapshot,
)
from libs.common.readmodel import (
    ViewChanges,
    project_amphora,
    project_loadbalancer,
    view_changes,
)
from libs.common.streams import StreamId


@dataclass(frozen=True)
class Outcome:
    """The state after a command and the envelopes it appended (empty when a no-op)."""

    state: LoadBalancerState
    envelopes: list[Envelope]


CommandFactory = Callable[[LoadBalancerState], Command]

# The shape of a stored LoadBalancerState: bump it whenever the model's JSON changes.
SNAPSHOT_SCHEMA_VERSION: Final = 1
# Events folded on top of a snapshot before an append writes a new one.
SNAPSHOT_EVERY: Final = 32
# Load balancers whose newest committed state a repository keeps.
KNOWN_STATES: Final = 1024
_SETTLING_TYPES: Final = frozenset(event.event_type for event in SETTLING)


def snapshot_of(stream_id: str, state: LoadBalancerState) -> StoredSnapshot:
    """``state`` as a snapshot of ``stream_id`` at ``state.version``."""
    return StoredSnapshot(
        stream_id, state.version, SNAPSHOT_SCHEMA_VERSION, state.model_dump_json()
    )


def state_of(snapshot: StoredSnapshot | None) -> LoadBalancerState | None:
    """The state a snapshot holds, or None when there is none or its shape is not this one."""
    if snapshot is None or snapshot.schema_version != SNAPSHOT_SCHEMA_VERSION:
        return None
    try:
        state = LoadBalancerState.model_validate_json(snapshot.state)
    except ValidationError:
        return None
    return state if state.version == snapshot.stream_version else None


@dataclass(frozen=True)
class Loaded:
    """A load balancer's state as ``LoadBalancerRepository.read`` loaded it, and how many events
    were folded on top of its snapshot."""

    state: LoadBalancerState
    folded: int


@dataclass(frozen=True)
class _Known:
    """A committed state of one load balancer, how many events lie under it on top of the
    stream's snapshot (at most: another writer may have written a newer snapshot), and its
    ``loadbalancer`` events after the last settling one (None: not all of them were read)."""

    state: LoadBalancerState
    folded: int
    unsettled: tuple[Envelope, ...] | None

    def then(self, intent: Sequence[Envelope], observed: Sequence[Envelope]) -> _Known:
        """This state with the events after it (both streams, read back from the store)."""
        return _Known(
            fold_streams(self.state, intent, observed),
            self.folded + len(intent) + len(observed),
            _unsettled(self.unsettled, intent),
        )


def _unsettled(
    before: tuple[Envelope, ...] | None, intent: Sequence[Envelope]
) -> tuple[Envelope, ...] | None:
    """The ``loadbalancer`` events after the last settling one, once ``intent`` (the events
    following ``before``'s) is added."""
    settled = [i for i, e in enumerate(intent) if e.event_type in _SETTLING_TYPES]
    if settled:
        return tuple(intent[settled[-1] + 1 :])
    return None if before is None else (*before, *intent)


class LoadBalancerRepository:
    def __init__(
        self,
        store: PostgresEventStore,
        snapshot_every: int = SNAPSHOT_EVERY,
        known_states: int = KNOWN_STATES,
    ) -> None:
        self._store = store
        self._snapshot_every = snapshot_every
        self._known: OrderedDict[str, _Known] = OrderedDict()
        self._known_states = known_states
        # The LB of every child the known states hold (a child never moves to another LB).
        self._holders: dict[str, str] = {}

    def known(self, lb_id: str) -> LoadBalancerState | None:
        """The newest committed state of the LB this repository has seen, without I/O (None:
        none kept). It may be behind the store: ``read`` it before deciding anything on it
        but what never changes (its project, its children's parents)."""
        known = self._known.get(lb_id)
        return None if known is None else known.state

    def holder(self, resource_id: str) -> str | None:
        """The LB whose known state holds the child ``resource_id`` (or held it: a child
        deleted since may still be indexed), without I/O; None when none does."""
        return self._holders.get(resource_id)

    async def load(self, lb_id: str) -> LoadBalancerState:
        """The folded stream; an unknown id gives the empty state (``loadbalancer is None``)."""
        state, _ = await self._load(lb_id)
        return state

    async def read(self, lb_id: str) -> Loaded:
        """``load``, kept whole for a later ``execute(loaded=...)``."""
        known = await self._fold(lb_id)
        return Loaded(known.state, known.folded)

    async def load_pending(self, lb_id: str) -> tuple[LoadBalancerState, list[Envelope]]:
        """The state and, while the LB is PENDING_*, the ``loadbalancer`` events of its pending
        period (after it last settled, or from its creation), up to the state's version; empty
        otherwise. Costs what the snapshot's tail and the pending period hold, not the history.
        """
        loaded, pending = await self.read_pending(lb_id)
        return loaded.state, pending

    async def read_pending(self, lb_id: str) -> tuple[Loaded, list[Envelope]]:
        """``load_pending``, the load kept whole for a later ``execute(loaded=...)``."""
        known = await self._fold(lb_id)
        state = known.state
        loaded = Loaded(state, known.folded)
        lb = state.loadbalancer
        if lb is None or lb.provisioning_status not in PENDING_STATUSES:
            return loaded, []
        if known.unsettled is not None:
            period = list(known.unsettled)
        else:
            stream_id = StreamId.loadbalancer(lb_id)
            last = await self._store.last_version_of(stream_id, list(_SETTLING_TYPES))
            period = await self._store.read_stream(stream_id, after_version=last)
        return loaded, [e for e in period if e.stream_version <= state.version]

    async def _load(self, lb_id: str) -> tuple[LoadBalancerState, int]:
        """The state and how many events were folded on top of the snapshot."""
        known = await self._fold(lb_id)
        return known.state, known.folded

    async def _fold(self, lb_id: str) -> _Known:
        """The current committed state: the known one with the events after it, else the
        snapshot with the events after it (both streams)."""
        stream_id = StreamId.loadbalancer(lb_id)
        status_id = StreamId.loadbalancer_status(lb_id)
        known = self._known.get(lb_id)
        if known is not None:
            intent, observed = await self._store.read_after(
                stream_id, known.state.version, status_id, known.state.status_version
            )
            return self._remember(lb_id, known.then(intent, observed))
        read = await self._store.read_from_snapshot(
            stream_id, SNAPSHOT_SCHEMA_VERSION, status_id, "status_version"
        )
        base = state_of(read.snapshot)
        intent, observed = read.events, read.beside
        if base is None:
            base = LoadBalancerState()
            if read.snapshot is not None:  # of this shape but unreadable: fold everything
                intent = await self._store.read_stream(stream_id)
                observed = await self._store.read_stream(status_id)
        # The events after the last settling one are all read if the read holds one, or holds
        # the stream from its first event.
        whole = intent[:1] and intent[0].stream_version == 1
        start = _Known(base, 0, () if whole else None)
        return self._remember(lb_id, start.then(intent, observed))

    def _remember(self, lb_id: str, known: _Known) -> _Known:
        """Keep ``known`` (committed) as the LB's state unless one newer is kept already."""
        if known.state.loadbalancer is None:
            return known
        kept = self._known.get(lb_id)
        if kept is None or (
            kept.state.version <= known.state.version
            and kept.state.status_version <= known.state.status_version
        ):
            self._known[lb_id] = known
            self._hold(lb_id, kept, known)
        self._known.move_to_end(lb_id)
        while len(self._known) > self._known_states:
            forgotten, dropped = self._known.popitem(last=False)
            self._hold(forgotten, dropped, None)
        return known

    def _hold(self, lb_id: str, before: _Known | None, after: _Known | None) -> None:
        """Index the children of ``after`` (the LB's known state now, None: forgotten) in
        ``_holders`` instead of those of ``before``."""
        old = _children(before.state) if before is not None else frozenset()
        new = _children(after.state) if after is not None else frozenset()
        for child_id in old - new:
            self._holders.pop(child_id, None)
        for child_id in new - old:
            self._holders[child_id] = lb_id

    async def execute(
        self,
        lb_id: str,
        command: Command | CommandFactory,
        metadata: Metadata,
        *,
        conn: asyncpg.Connection | None = None,
        attempts: int = 2,
        fresh: bool = False,
        loaded: Loaded | None = None,
    ) -> Outcome:
        """Decide and append; raises DomainError from decide, Conflict after lost races.

        ``command`` may be a factory of the loaded state, for commands that depend on it.
        ``fresh``: ``lb_id`` was just made by the caller, so no one else can have written
        either stream: nothing is loaded or guarded (the append still refuses a stream that
        exists, as a Conflict). ``loaded``: the caller's ``read`` of ``lb_id``, decided on in
        a first attempt of its own instead of a load; if either stream has moved since, the
        append refuses it and ``attempts`` more follow on fresh loads.
        """
        # An append outside a caller's transaction has committed once it returns.
        commits = conn is None or not conn.is_in_transaction()
        if fresh:
            attempts = 1
        elif loaded is not None:
            attempts += 1
        for attempt in range(attempts):
            if fresh:
                state, unsnapshotted = LoadBalancerState(), 0
            elif attempt == 0 and loaded is not None:
                state, unsnapshotted = loaded.state, loaded.folded
            else:
                state, unsnapshotted = await self._load(lb_id)
            cmd = command(state) if callable(command) else command
            payloads = decide(cmd, state)
            if not payloads:
                return Outcome(state, [])
            target = _Target.of(lb_id, state, payloads, metadata)
            after = state
            for payload in payloads:
                after = target.step(after, payload)
            snapshot = (
                snapshot_of(StreamId.loadbalancer(lb_id), after)
                if unsnapshotted + len(payloads) >= self._snapshot_every
                else None
            )

            # The view rows that changed ride the append's statement; the rest (VIP claims,
            # rows gone, the snapshot) follow it, when there is any: an append without it is
            # one statement, which commits on its own outside a caller's transaction.
            changes = view_changes(state, after)

            async def project(
                tx: asyncpg.Connection,
                _: list[Envelope],
                changes: ViewChanges = changes,
                snapshot: StoredSnapshot | None = snapshot,
            ) -> None:
                await project_loadbalancer(
                    tx, changes.before, changes.after, changes, upserted=True
                )
                if snapshot is not None:
                    await write_snapshot(tx, snapshot)

            try:
                envelopes = await self._store.append(
                    target.stream,
                    target.version,
                    payloads,
                    target.metadata.owned_by(
                        after.loadbalancer.project_id if after.loadbalancer else None
                    ),
                    in_transaction=project
                    if changes.beyond_upserts or snapshot is not None
                    else None,
                    conn=conn,
                    guard=None
                    if fresh
                    else StreamGuard(
                        StreamId.loadbalancer(lb_id), target.other_stream, target.other_version
                    ),
                    rider=changes.rider(),
                )
            except ConcurrencyError:
                if attempt + 1 < attempts:
                    continue
                raise Conflict(
                    f"Load Balancer {lb_id} is being changed by another request; try again."
                ) from None
            if commits:
                # Under ``after``, on top of the snapshot: none if this append wrote one.
                folded = 0 if snapshot is not None else unsnapshotted + len(payloads)
                self._remember_append(lb_id, state, _Known(after, folded, None), envelopes, fresh)
            return Outcome(after, envelopes)
        raise AssertionError("unreachable")

    def _remember_append(
        self,
        lb_id: str,
        before: LoadBalancerState,
        after: _Known,
        envelopes: list[Envelope],
        fresh: bool,
    ) -> None:
        """Keep ``after``, committed by appending ``envelopes`` to ``before`` (``fresh``: the
        stream's first events); its unsettled events follow the kept ones of ``before``."""
        kept = self._known.get(lb_id)
        unsettled: tuple[Envelope, ...] | None = None
        if fresh:
            unsettled = ()
        elif kept is not None and (kept.state.version, kept.state.status_version) == (
            before.version,
            before.status_version,
        ):
            unsettled = kept.unsettled
        if after.state.version != before.version:  # else the status stream: no intent event
            unsettled = _unsettled(unsettled, envelopes)
        self._remember(lb_id, _Known(after.state, after.folded, unsettled))


def _children(state: LoadBalancerState) -> frozenset[str]:
    """The ids of every child ``state`` holds."""
    return frozenset(child_id for kind in CHILD_KINDS for child_id in getattr(state, kind.key))


def fold_streams(
    base: LoadBalancerState, intent: Sequence[Envelope], observed: Sequence[Envelope]
) -> LoadBalancerState:
    """``base`` with the ``loadbalancer`` events ``intent`` and the ``lbstatus`` events
    ``observed`` applied in commit order (both read back from the store, so positioned)."""
    steps = [(e.global_position or 0, evolve, e.payload) for e in intent]
    steps += [(e.global_position or 0, observe, e.payload) for e in observed]
    state = base
    for _, step, payload in sorted(steps, key=lambda s: s[0]):
        state = step(state, payload)
    return state


@dataclass(frozen=True)
class _Target:
    """Where one append of ``execute`` goes, and the other stream it must find unmoved."""

    stream: StreamId
    version: int
    step: Callable[[LoadBalancerState, Event], LoadBalancerState]
    other_stream: StreamId
    other_version: int
    metadata: Metadata

    @classmethod
    def of(
        cls, lb_id: str, state: LoadBalancerState, payloads: list[Event], metadata: Metadata
    ) -> _Target:
        """The ``lbstatus`` stream for observed statuses, else the ``loadbalancer`` stream; one
        append never mixes them (the caller stamps both with the owner's project)."""
        intent, observed = StreamId.loadbalancer(lb_id), StreamId.loadbalancer_status(lb_id)
        if not all(isinstance(p, LoadBalancerStatusEvent) for p in payloads):
            assert not any(isinstance(p, LoadBalancerStatusEvent) for p in payloads)
            return cls(intent, state.version, evolve, observed, state.status_version, metadata)
        return cls(observed, state.status_version, observe, intent, state.version, metadata)


class AmphoraRepository:
    """Amphora records: appends project ``amphora_view`` in the same transaction."""

    def __init__(self, store: PostgresEventStore) -> None:
        self._store = store

    async def load(self, amphora_id: str) -> Amphora:
        envelopes = await self._store.read_stream(StreamId.amphora(amphora_id))
        return fold_amphora(e.payload for e in envelopes)

    async def record(
        self,
        amphora_id: str,
        payloads: list[Event],
        metadata: Metadata,
        *,
        conn: asyncpg.Connection | None = None,
        loaded: Amphora | None = None,
    ) -> Amphora:
        """Append facts about one amphora; one amphora has one writer (the provisioner).

        ``loaded``: the record as the caller just loaded it, appended after in a first attempt
        of its own instead of a load; if the stream has moved since, the append refuses it
        and the usual attempts follow on fresh loads."""
        attempts = 2 if loaded is None else 3
        for attempt in range(attempts):
            if attempt == 0 and loaded is not None:
                before = loaded
            else:
                before = await self.load(amphora_id)
            after = before
            for payload in payloads:
                after = evolve_amphora(after, payload)

            async def project(
                tx: asyncpg.Connection, stored: list[Envelope], after: Amphora = after
            ) -> None:
                await project_amphora(tx, after, stored[-1].occurred_at)

            try:
                await self._store.append(
                    StreamId.amphora(amphora_id),
                    before.version,
                    payloads,
                    metadata,
                    in_transaction=project,
                    conn=conn,
                )
            except ConcurrencyError:
                if attempt + 1 < attempts:
                    continue
                raise
            return after
        raise AssertionError("unreachable")
