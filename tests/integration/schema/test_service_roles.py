"""The service roles of migration 4 on a real Postgres: each service's role may do what its
service does and no more (``SET ROLE`` as each, then the statements it must and must not be
allowed)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from libs.common.schema import upgrade

ROLES = ("fulcrum_api", "fulcrum_provisioner", "fulcrum_health", "fulcrum_housekeeping")
SECRET_TABLES = ("secrets", "secret_containers", "secret_container_refs")


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=1)
    try:
        await upgrade(pool)
        yield pool
    finally:
        await pool.close()


async def _as(conn: asyncpg.Connection, role: str, sql: str, *args: object) -> object:
    """``sql`` run as ``role`` in a transaction that is rolled back."""
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(f"SET LOCAL ROLE {role}")
        return await conn.fetch(sql, *args)
    finally:
        await tx.rollback()


_INSERT_EVENT = (
    "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, "
    "data, metadata, occurred_at) VALUES ($1, 1, $2, 'AmphoraDeleted', 1, '{}', '{}', now())"
)


async def test_every_role_appends_events_and_none_may_change_or_remove_them(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(_INSERT_EVENT, "amphora-kept", uuid.uuid4())
        for role in ROLES:
            await _as(conn, role, _INSERT_EVENT, f"amphora-{role}", uuid.uuid4())
            assert await _as(conn, role, "SELECT count(*) FROM events")
            for statement in (
                "UPDATE events SET event_type = 'Forged'",
                "DELETE FROM events",
                "TRUNCATE events",
                "INSERT INTO schema_migrations (version, name) VALUES (99, 'x')",
                "DELETE FROM schema_migrations",
                "CREATE TABLE planted (id int)",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await _as(conn, role, statement)
        with pytest.raises(asyncpg.RaiseError, match="insert-only"):
            await conn.execute("TRUNCATE events")  # not even the owner
        assert await conn.fetchval("SELECT count(*) FROM events") == 1


async def test_only_the_api_and_the_provisioner_read_sealed_secrets(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for table in SECRET_TABLES:
            for role in ("fulcrum_api", "fulcrum_provisioner"):
                await _as(conn, role, f"SELECT * FROM {table}")
            for role in ("fulcrum_health", "fulcrum_housekeeping"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await _as(conn, role, f"SELECT * FROM {table}")


async def test_services_write_what_they_keep(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await _as(
            conn,
            "fulcrum_health",
            "INSERT INTO amphora_health (amphora_id, last_seen) VALUES ('a1', now())",
        )
        await _as(conn, "fulcrum_housekeeping", "DELETE FROM dead_letters")
        await _as(conn, "fulcrum_housekeeping", "DELETE FROM processed_messages")
        await _as(conn, "fulcrum_api", "DELETE FROM outbox")
        assert await _as(conn, "fulcrum_provisioner", "SELECT max(version) FROM schema_migrations")


async def test_every_role_and_no_other_takes_a_guarded_appends_lock(pool: asyncpg.Pool) -> None:
    """``locked_stream_version`` (migration 9), which every guarded append calls."""
    locked = "SELECT locked_stream_version('loadbalancer-x', 'lbstatus-x')"
    async with pool.acquire() as conn:
        for role in ROLES:
            assert await _as(conn, role, locked) == [(0,)]
        stranger = f"stranger_{uuid.uuid4().hex}"  # roles outlive the test's database
        await conn.execute(f"CREATE ROLE {stranger} NOLOGIN")
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await _as(conn, stranger, locked)
        finally:
            await conn.execute(f"DROP ROLE {stranger}")
