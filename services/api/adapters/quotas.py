"""Writes of project quotas: the ``quota-<project_id>`` stream and its ``quota_view`` row,
updated in the append transaction.

``quota_view.body`` holds every canonical resource name with an int or null (the default),
which is what ``QuotaGuard`` reads; a project has a row from its first write on.
"""

from __future__ import annotations

import json

import asyncpg

from libs.common.errors import ConcurrencyError, Conflict
from libs.common.events import Envelope, Metadata
from libs.common.eventstore import PostgresEventStore
from libs.common.streams import StreamId
from services.api.domain.quota_limits import (
    QuotaCommand,
    QuotaState,
    decide,
    evolve,
    fold,
    stored_row,
)


class PostgresQuotaLimits:
    """The quota repository: ``execute`` is the only way a project's stored quota changes."""

    def __init__(self, store: PostgresEventStore) -> None:
        self._store = store

    async def load(self, project_id: str) -> QuotaState:
        envelopes = await self._store.read_stream(StreamId.quota(project_id))
        return fold([e.payload for e in envelopes])

    async def execute(
        self, project_id: str, command: QuotaCommand, metadata: Metadata
    ) -> QuotaState:
        """Decide and append (retrying once after a lost race, then Conflict)."""
        for attempt in range(2):
            state = await self.load(project_id)
            payloads = decide(project_id, command, state)
            if not payloads:
                return state
            after = state
            for payload in payloads:
                after = evolve(after, payload)

            async def project(
                conn: asyncpg.Connection, _: list[Envelope], after: QuotaState = after
            ) -> None:
                await _write_view(conn, project_id, after)

            try:
                await self._store.append(
                    StreamId.quota(project_id),
                    state.version,
                    payloads,
                    metadata,
                    in_transaction=project,
                )
            except ConcurrencyError:
                if attempt == 0:
                    continue
                raise Conflict(
                    f"The quota of project {project_id} is being changed by another request; "
                    "try again."
                ) from None
            return after
        raise AssertionError("unreachable")


async def _write_view(conn: asyncpg.Connection, project_id: str, after: QuotaState) -> None:
    await conn.execute(
        "INSERT INTO quota_view (project_id, version, body) VALUES ($1, $2, $3::jsonb) "
        "ON CONFLICT (project_id) DO UPDATE SET version = $2, body = $3::jsonb "
        "WHERE quota_view.version < $2",
        project_id,
        after.version,
        json.dumps(stored_row(after.limits)),
    )
