"""Security groups in Postgres: each write loads the group's stream, decides, and appends its
events with the read models (``securitygroup_view``, ``securitygroup_rule_view``) in the same
transaction; reads come from those views.

A group a live load balancer refers to (``vip_sg_ids``) cannot go: the check runs inside the
deleting transaction.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime
from typing import Any

import asyncpg

from libs.common.domain.security_group import SecurityGroup, evolve, fold
from libs.common.errors import ConcurrencyError
from libs.common.events import Envelope, Metadata
from libs.common.eventstore import PostgresEventStore
from libs.common.streams import StreamId
from services.api.domain.security_groups import (
    Decision,
    NeutronRefusal,
    group_body,
    group_in_use,
    rule_body,
)


class PostgresSecurityGroups:
    """The repository of groups (``SecurityGroupRepository``) and their read queries."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._store = PostgresEventStore(pool)

    async def load(self, group_id: str) -> SecurityGroup:
        envelopes = await self._store.read_stream(StreamId.security_group(group_id))
        return fold(e.payload for e in envelopes)

    async def execute(
        self, group_id: str, decide: Decision, metadata: Metadata, *, deleting: bool = False
    ) -> SecurityGroup:
        for attempt in range(2):
            state = await self.load(group_id)
            payloads = decide(state)
            if not payloads:
                return state
            after = state
            for payload in payloads:
                after = evolve(after, payload)

            async def project(
                conn: asyncpg.Connection,
                stored: list[Envelope],
                after: SecurityGroup = after,
            ) -> None:
                if deleting:
                    await _refuse_in_use(conn, group_id)
                await _write_views(conn, group_id, after, stored[0])

            try:
                await self._store.append(
                    StreamId.security_group(group_id),
                    state.version,
                    payloads,
                    metadata.owned_by(after.project_id or state.project_id or None),
                    in_transaction=project,
                )
            except ConcurrencyError:
                if attempt == 0:
                    continue
                raise NeutronRefusal(
                    409,
                    "SecurityGroupConflict",
                    f"Error security group {group_id} is being changed by another request "
                    "while attempting the operation.",
                ) from None
            return after
        raise AssertionError("unreachable")

    async def group_of_rule(self, rule_id: str) -> str | None:
        value = await self._pool.fetchval(
            "SELECT security_group_id FROM securitygroup_rule_view WHERE id = $1", rule_id
        )
        return str(value) if value is not None else None

    async def group_bodies(self, project_id: str | None) -> list[dict[str, Any]]:
        """Every group (of ``project_id`` when given), oldest first."""
        return await self._bodies("securitygroup_view", project_id)

    async def rule_bodies(self, project_id: str | None) -> list[dict[str, Any]]:
        return await self._bodies("securitygroup_rule_view", project_id)

    async def _bodies(self, table: str, project_id: str | None) -> list[dict[str, Any]]:
        where = "" if project_id is None else "WHERE project_id = $1"
        args = [] if project_id is None else [project_id]
        rows = await self._pool.fetch(
            f"SELECT body FROM {table} {where} ORDER BY created_at, id", *args
        )
        return [json.loads(r["body"]) for r in rows]

    async def existing(self, group_ids: Collection[str], project_id: str | None) -> set[str]:
        """Those of ``group_ids`` that exist (in ``project_id`` when given)."""
        rows = await self._pool.fetch(
            "SELECT id FROM securitygroup_view WHERE id = ANY($1::text[]) "
            "AND ($2::text IS NULL OR project_id = $2)",
            list(group_ids),
            project_id,
        )
        return {str(r["id"]) for r in rows}


async def _refuse_in_use(conn: asyncpg.Connection, group_id: str) -> None:
    in_use = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM loadbalancer_view WHERE body->'vip_sg_ids' ? $1 "
        "AND body->>'provisioning_status' <> 'DELETED')",
        group_id,
    )
    if in_use:
        raise group_in_use(group_id)


async def _write_views(
    conn: asyncpg.Connection, group_id: str, after: SecurityGroup, first: Envelope
) -> None:
    await conn.execute("DELETE FROM securitygroup_rule_view WHERE security_group_id = $1", group_id)
    if not after.exists:
        await conn.execute("DELETE FROM securitygroup_view WHERE id = $1", group_id)
        return
    await conn.execute(
        "INSERT INTO securitygroup_view (id, project_id, version, created_at, body) "
        "VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (id) DO UPDATE "
        "SET version = $3, body = $5::jsonb WHERE securitygroup_view.version < $3",
        group_id,
        after.project_id,
        after.version,
        first.occurred_at,
        json.dumps(group_body(after)),
    )
    await conn.executemany(
        "INSERT INTO securitygroup_rule_view (id, security_group_id, project_id, created_at, "
        "body) VALUES ($1, $2, $3, $4::timestamptz, $5::jsonb)",
        [
            (r.id, group_id, r.project_id, _utc(r.created_at), json.dumps(rule_body(r)))
            for r in after.rules
        ],
    )


def _utc(neutron_time: str) -> datetime:
    return datetime.fromisoformat(neutron_time.replace("Z", "+00:00"))
