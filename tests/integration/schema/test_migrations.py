"""The schema's migrations against a real Postgres: a fresh database, one made by release
0.1.0 (``release_0_1_0.sql``, frozen), concurrent upgrades, a database newer than the code, and
a further step (a throwaway one, as a real migration 2 would be added)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from libs.common.schema import MIGRATIONS, Migration, SchemaTooNew, current_version, upgrade
from libs.common.schema.migrator import LOCK_KEY
from libs.common.service import base_app, postgres_ctx
from libs.common.settings import PostgresSettings

RELEASE_0_1_0 = Path(__file__).with_name("release_0_1_0.sql").read_text()
REPO = Path(__file__).resolve().parents[3]

TABLES = {
    "events",
    "outbox",
    "processed_messages",
    "dead_letters",
    "loadbalancer_view",
    "listener_view",
    "pool_view",
    "member_view",
    "healthmonitor_view",
    "l7policy_view",
    "l7rule_view",
    "vip_allocations",
    "amphora_view",
    "flavor_view",
    "flavorprofile_view",
    "availabilityzone_view",
    "availabilityzoneprofile_view",
    "quota_view",
    "secrets",
    "secret_containers",
    "secret_container_refs",
    "amphora_health",
    "listener_stats",
    "member_stats",
    "housekeeping_runs",
    "schema_migrations",
    "securitygroup_view",
    "securitygroup_rule_view",
    "snapshots",
    "revoked_tokens",
    "login_failures",
}
# This release's last version and the ledger a database migrated by it holds.
LATEST = len(MIGRATIONS)
LEDGER = [(m.version, m.name) for m in MIGRATIONS]
LATER = LATEST + 1

# What "the same schema" means: columns, indexes, constraints, triggers, views and functions
# of the public schema, each as Postgres describes it.
_SCHEMA_QUERIES = {
    "columns": "SELECT table_name, column_name, ordinal_position, data_type, is_nullable, "
    "column_default FROM information_schema.columns WHERE table_schema = 'public'",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "constraints": "SELECT c.conrelid::regclass::text AS rel, c.conname, "
    "pg_get_constraintdef(c.oid) AS def FROM pg_constraint c "
    "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'public'",
    "triggers": "SELECT tgrelid::regclass::text AS rel, tgname, pg_get_triggerdef(oid) AS def "
    "FROM pg_trigger WHERE NOT tgisinternal",
    "views": "SELECT table_name, view_definition FROM information_schema.views "
    "WHERE table_schema = 'public'",
    "functions": "SELECT p.proname, pg_get_functiondef(p.oid) AS def FROM pg_proc p "
    "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'",
}


async def schema_of(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        name: sorted(tuple(row.values()) for row in await conn.fetch(sql))
        for name, sql in _SCHEMA_QUERIES.items()
    }


async def tables_of(conn: asyncpg.Connection | asyncpg.Pool) -> set[str]:
    rows = await conn.fetch(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    )
    return {r["table_name"] for r in rows}


async def ledger(conn: asyncpg.Connection | asyncpg.Pool) -> list[tuple[int, str]]:
    rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    return [(r["version"], r["name"]) for r in rows]


async def add_event(conn: asyncpg.Connection | asyncpg.Pool) -> None:
    await conn.execute(
        "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, "
        "data, metadata, occurred_at) VALUES ('amphora-a', 1, gen_random_uuid(), "
        "'AmphoraDeleted', 1, '{}', '{}', now())"
    )


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on an empty database (nothing migrated)."""
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


async def test_a_fresh_database_gets_every_table_and_a_second_upgrade_is_one_query(
    pg_dsn: str, pool: asyncpg.Pool
) -> None:
    assert await current_version(pool) == 0
    assert await upgrade(pool) == LATEST
    assert await tables_of(pool) == TABLES
    assert await ledger(pool) == LEDGER
    await add_event(pool)
    with pytest.raises(asyncpg.RaiseError, match="insert-only"):
        await pool.execute("DELETE FROM events")

    queries: list[str] = []

    async def init(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda q: queries.append(q.query))

    async def no_reset(conn: asyncpg.Connection) -> None:
        """As the services' pools: no reset statements on release."""

    applied_at = await pool.fetchval("SELECT applied_at FROM schema_migrations")
    # Another session holds the migration lock: an up-to-date upgrade does not wait for it.
    async with pool.acquire() as holder:
        await holder.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        try:
            async with asyncpg.create_pool(
                pg_dsn, min_size=1, max_size=1, init=init, reset=no_reset
            ) as counted:
                assert await asyncio.wait_for(upgrade(counted), 2.0) == LATEST
        finally:
            await holder.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    assert queries == ["SELECT coalesce(max(version), 0) FROM schema_migrations"]
    assert await pool.fetchval("SELECT applied_at FROM schema_migrations") == applied_at


# Release 0.1.0 created each service's tables when that service first started: a database
# may hold every service's tables, or only those of the services that ever ran.
_ALL_SERVICES = RELEASE_0_1_0
_API_ONLY = RELEASE_0_1_0.split("-- the provisioner service's own tables")[0]


@pytest.mark.parametrize("release_sql", [_ALL_SERVICES, _API_ONLY], ids=["all", "api-only"])
async def test_a_release_0_1_0_database_upgrades_to_the_fresh_schema(
    pool: asyncpg.Pool, release_sql: str
) -> None:
    await upgrade(pool)
    async with pool.acquire() as conn:
        fresh = await schema_of(conn)
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")

        await conn.execute(release_sql)
        assert "schema_applied" in await tables_of(conn)
        await add_event(conn)
        await conn.execute(
            "INSERT INTO vip_allocations VALUES ('subnet-1', '198.18.64.10', 'lb-1')"
        )

    assert await upgrade(pool) == LATEST
    async with pool.acquire() as conn:
        assert await schema_of(conn) == fresh
        assert await tables_of(conn) == TABLES  # schema_applied is gone
        assert await ledger(conn) == LEDGER
        assert await conn.fetchval("SELECT count(*) FROM events") == 1
        assert await conn.fetchval("SELECT lb_id FROM vip_allocations") == "lb-1"
        with pytest.raises(asyncpg.RaiseError, match="insert-only"):
            await conn.execute("UPDATE events SET event_type = 'x'")


async def test_concurrent_upgrades_all_succeed_and_apply_each_step_once(pg_dsn: str) -> None:
    pools = [await asyncpg.create_pool(pg_dsn, min_size=1, max_size=1) for _ in range(4)]
    try:
        versions = await asyncio.gather(*(upgrade(p) for p in pools))
        assert versions == [LATEST] * 4
        assert await ledger(pools[0]) == LEDGER
        assert await tables_of(pools[0]) == TABLES
    finally:
        await asyncio.gather(*(p.close() for p in pools))


async def test_a_database_newer_than_the_code_fails_the_start_with_a_clear_error(
    pg_dsn: str, pool: asyncpg.Pool
) -> None:
    await upgrade(pool)
    await pool.execute(
        "INSERT INTO schema_migrations (version, name) VALUES ($1, 'from later')", LATER
    )

    with pytest.raises(SchemaTooNew, match=f"at version {LATER}, newer than this release knows"):
        await upgrade(pool)

    app = base_app("schema-test")
    app.cleanup_ctx.append(postgres_ctx(PostgresSettings(dsn=pg_dsn, max_pool=2)))
    runner = web.AppRunner(app)
    try:
        with pytest.raises(SchemaTooNew):
            await runner.setup()
    finally:
        await runner.cleanup()
    assert await ledger(pool) == [*LEDGER, (LATER, "from later")]


async def run_cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "libs.common.schema",
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_the_command_upgrades_alone_and_refuses_a_newer_database(
    pg_dsn: str, pool: asyncpg.Pool
) -> None:
    assert await run_cli("version", "--dsn", pg_dsn) == (
        0,
        f"schema at version 0 (this release knows up to {len(MIGRATIONS)})\n",
    )
    assert await run_cli("upgrade", "--dsn", pg_dsn) == (0, f"schema at version {LATEST}\n")
    assert await tables_of(pool) == TABLES

    await pool.execute(
        "INSERT INTO schema_migrations (version, name) VALUES ($1, 'from later')", LATER
    )
    code, out = await run_cli("upgrade", "--dsn", pg_dsn)
    assert code == 1
    assert f"schema upgrade failed: the database schema is at version {LATER}" in out


def with_step(sql: str) -> list[Migration]:
    return [*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "probe", sql)]


async def test_a_further_step_runs_once_on_an_older_database(pool: asyncpg.Pool) -> None:
    await upgrade(pool)
    later = with_step(
        "CREATE TABLE probe (id int PRIMARY KEY); "
        "ALTER TABLE housekeeping_runs ADD COLUMN note text"
    )
    assert await upgrade(pool, later) == LATER
    assert await upgrade(pool, later) == LATER
    assert await ledger(pool) == [*LEDGER, (LATER, "probe")]
    assert "probe" in await tables_of(pool)
    # This release's code, on the database the later one migrated, refuses to start.
    with pytest.raises(SchemaTooNew):
        await upgrade(pool)


async def test_a_fresh_database_runs_every_step_in_order(pool: asyncpg.Pool) -> None:
    later = with_step("ALTER TABLE housekeeping_runs ADD COLUMN note text")
    assert await upgrade(pool, later) == LATER
    assert await ledger(pool) == [*LEDGER, (LATER, "probe")]


async def test_a_failing_step_leaves_nothing_of_itself(pool: asyncpg.Pool) -> None:
    await upgrade(pool)
    broken = with_step("CREATE TABLE half_done (id int); SELECT 1 / 0")
    with pytest.raises(asyncpg.DivisionByZeroError):
        await upgrade(pool, broken)
    assert await current_version(pool) == LATEST
    assert "half_done" not in await tables_of(pool)


@pytest.mark.parametrize(
    "numbering",
    [[2], [1, 3], [1, 1]],
    ids=["not from 1", "gap", "repeat"],
)
async def test_migrations_out_of_order_are_refused_before_any_query(
    pool: asyncpg.Pool, numbering: list[int]
) -> None:
    steps = [Migration(v, f"s{i}", "SELECT 1") for i, v in enumerate(numbering)]
    with pytest.raises(ValueError, match="numbered 1, 2"):
        await upgrade(pool, steps)
    assert await tables_of(pool) == set()
