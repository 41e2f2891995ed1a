"""What the provisioner reads of security groups: the rules of the groups a load balancer
names (folded from their ``securitygroup-<id>`` streams) and the live load balancers that
name a group (``loadbalancer_view``)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from libs.common.domain.security_group import fold
from libs.common.events.security_group import SecurityGroupRule
from libs.common.eventstore import PostgresEventStore
from libs.common.streams import StreamId


class StoredSecurityGroups:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._store = PostgresEventStore(pool)

    async def rules(self, group_ids: Sequence[str]) -> list[SecurityGroupRule]:
        """Every rule of the groups that exist among ``group_ids`` (a deleted one has none)."""
        found: list[SecurityGroupRule] = []
        for group_id in dict.fromkeys(group_ids):
            envelopes = await self._store.read_stream(StreamId.security_group(group_id))
            found.extend(fold(e.payload for e in envelopes).rules)
        return found

    async def referring(self, conn: asyncpg.Connection, group_id: str) -> list[str]:
        """Ids of the live load balancers whose ``vip_sg_ids`` name ``group_id``."""
        rows = await conn.fetch(
            "SELECT id FROM loadbalancer_view WHERE body->'vip_sg_ids' ? $1 "
            "AND body->>'provisioning_status' <> 'DELETED' ORDER BY id",
            group_id,
        )
        return [str(r["id"]) for r in rows]
