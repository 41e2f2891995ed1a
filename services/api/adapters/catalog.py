"""Writes of the catalog (flavors, availability zones, their profiles): load the entry's
stream, decide, append with its view row written in the same transaction.

Rules that span entries are checked inside that transaction, under row locks, so concurrent
writers cannot slip past them: an entry's profile must exist (its row is held FOR SHARE until
commit), a profile whose provider or data changes, or that goes, must have no users (its row
is held FOR UPDATE first), an entry a live load balancer refers to cannot go, and flavor
names are unique (a unique index on the view).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Final

import asyncpg

from libs.common.errors import ConcurrencyError, Conflict, ValidationFailed
from libs.common.events import Envelope, Event, Metadata
from libs.common.eventstore import PostgresEventStore
from services.api.domain.catalog import (
    GUARDED_PROFILE_ATTRS,
    PROFILE_OF,
    SECTIONS,
    USERS_OF,
    Entry,
    EntryCommand,
    Section,
    decide,
    evolve,
    fold,
)

CATALOG_TABLES: Final[dict[str, str]] = {s.category: f"{s.category}_view" for s in SECTIONS}


class PostgresCatalog:
    """The catalog's repository: ``execute`` is the only way its entries change."""

    def __init__(self, store: PostgresEventStore) -> None:
        self._store = store

    async def load(self, section: Section, key: str) -> Entry:
        envelopes = await self._store.read_stream(section.stream(key))
        return fold(section, [e.payload for e in envelopes])

    async def execute(
        self, section: Section, key: str, command: EntryCommand, metadata: Metadata
    ) -> Entry:
        """Decide and append; raises the DomainErrors of decide and of the cross-entry rules,
        and Conflict after losing two races for the stream."""
        for attempt in range(2):
            state = await self.load(section, key)
            payloads = decide(section, key, command, state)
            if not payloads:
                return state
            after = state
            for payload in payloads:
                after = evolve(section, after, payload)

            async def project(
                conn: asyncpg.Connection,
                stored: list[Envelope],
                payloads: list[Event] = payloads,
                after: Entry = after,
            ) -> None:
                await _check_rules(conn, section, key, payloads, after)
                await _write_view(conn, section, key, after, stored[0].occurred_at)

            try:
                await self._store.append(
                    section.stream(key), state.version, payloads, metadata, in_transaction=project
                )
            except ConcurrencyError:
                if attempt == 0:
                    continue
                raise Conflict(
                    f"{section.label} {key} is being changed by another request; try again."
                ) from None
            except asyncpg.UniqueViolationError:
                # Only the flavor name index can refuse a view row (ids are unique by stream).
                name = (after.body or {}).get("name")
                raise Conflict(f"A {section.label.lower()} of {name} already exists.") from None
            return after
        raise AssertionError("unreachable")


async def _check_rules(
    conn: asyncpg.Connection,
    section: Section,
    key: str,
    payloads: list[Event],
    after: Entry,
) -> None:
    created = any(isinstance(p, section.created) for p in payloads)
    deleted = after.body is None
    profile = PROFILE_OF.get(section.category)
    if created and profile is not None and section.profile_attr is not None:
        assert after.body is not None
        profile_id = after.body[section.profile_attr]
        exists = await conn.fetchval(
            f"SELECT true FROM {CATALOG_TABLES[profile.category]} WHERE id = $1 FOR SHARE",
            profile_id,
        )
        if not exists:
            raise ValidationFailed(f"{profile_id} is not a valid option for {section.profile_attr}")
    users = USERS_OF.get(section.category)
    if users is not None:
        changed: set[str] = set()
        for payload in payloads:
            if isinstance(payload, section.updated):
                changed |= set(payload.model_dump()["changes"])
        if deleted or changed & GUARDED_PROFILE_ATTRS:
            await conn.execute(
                f"SELECT 1 FROM {CATALOG_TABLES[section.category]} WHERE id = $1 FOR UPDATE", key
            )
            in_use = await conn.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM {CATALOG_TABLES[users.category]} "
                "WHERE profile_id = $1)",
                key,
            )
            if in_use:
                raise Conflict(f"{section.label} {key} is in use and cannot be modified.")
    if deleted and section.lb_attr is not None:
        # Load balancers keep their flavor and zone until purged; only live ones count.
        in_use = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM loadbalancer_view WHERE body->>$1 = $2 "
            "AND body->>'provisioning_status' <> 'DELETED')",
            section.lb_attr,
            key,
        )
        if in_use:
            raise Conflict(f"{section.label} {key} is in use and cannot be modified.")


async def _write_view(
    conn: asyncpg.Connection, section: Section, key: str, after: Entry, occurred_at: datetime
) -> None:
    table = CATALOG_TABLES[section.category]
    if after.body is None:
        await conn.execute(f"DELETE FROM {table} WHERE id = $1", key)
        return
    profile_id = after.body.get(section.profile_attr) if section.profile_attr else None
    await conn.execute(
        f"INSERT INTO {table} (id, profile_id, version, created_at, body) "
        "VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (id) DO UPDATE SET "
        f"profile_id = $2, version = $3, body = $5::jsonb WHERE {table}.version < $3",
        key,
        profile_id,
        after.version,
        occurred_at,
        json.dumps(after.body),
    )
