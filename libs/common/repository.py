"""The LoadBalancer repository: load by folding the stream, save by append + projection.

Every writer (api, provisioner, health, housekeeping) changes a load balancer only through
``execute``: load, ``decide``, append at the loaded version with the read model updated in the
same transaction. A concurrent writer's win makes it reload and retry once; a second loss is
a Conflict (409).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from libs.common.domain.amphora import Amphora, evolve_amphora, fold_amphora
from libs.common.domain.commands import Command
from libs.common.domain.decide import decide
from libs.common.domain.evolve import fold
from libs.common.domain.model import LoadBalancerState
from libs.common.errors import ConcurrencyError, Conflict
from libs.common.events import Envelope, Event, Metadata
from libs.common.eventstore import PostgresEventStore
from libs.common.readmodel import project_amphora, project_loadbalancer
from libs.common.streams import StreamId


@dataclass(frozen=True)
class Outcome:
    """The state after a command and the envelopes it appended (empty when a no-op)."""

    state: LoadBalancerState
    envelopes: list[Envelope]


CommandFactory = Callable[[LoadBalancerState], Command]


class LoadBalancerRepository:
    def __init__(self, store: PostgresEventStore) -> None:
        self._store = store

    async def load(self, lb_id: str) -> LoadBalancerState:
        """Fold the stream; an unknown id gives the empty state (``loadbalancer is None``)."""
        envelopes = await self._store.read_stream(StreamId.loadbalancer(lb_id))
        return fold(e.payload for e in envelopes)

    async def execute(
        self,
        lb_id: str,
        command: Command | CommandFactory,
        metadata: Metadata,
        *,
        conn: asyncpg.Connection | None = None,
        attempts: int = 2,
    ) -> Outcome:
        """Decide and append; raises DomainError from decide, Conflict after lost races.

        ``command`` may be a factory of the loaded state, for commands that depend on it.
        """
        for attempt in range(attempts):
            state = await self.load(lb_id)
            cmd = command(state) if callable(command) else command
            payloads = decide(cmd, state)
            if not payloads:
                return Outcome(state, [])
            after = fold(payloads, state)

            async def project(
                tx: asyncpg.Connection,
                _: list[Envelope],
                before: LoadBalancerState = state,
                after: LoadBalancerState = after,
            ) -> None:
                await project_loadbalancer(tx, before, after)

            try:
                envelopes = await self._store.append(
                    StreamId.loadbalancer(lb_id),
                    state.version,
                    payloads,
                    metadata,
                    in_transaction=project,
                    conn=conn,
                )
            except ConcurrencyError:
                if attempt + 1 < attempts:
                    continue
                raise Conflict(
                    f"Load Balancer {lb_id} is being changed by another request; try again."
                ) from None
            return Outcome(after, envelopes)
        raise AssertionError("unreachable")


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
    ) -> Amphora:
        """Append facts about one amphora; one amphora has one writer (the provisioner)."""
        for attempt in range(2):
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
                if attempt == 0:
                    continue
                raise
            return after
        raise AssertionError("unreachable")
