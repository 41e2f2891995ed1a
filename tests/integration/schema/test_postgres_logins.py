"""The logins of ``make up`` on a real Postgres (``deploy/local/postgres_roles.py``): the
server listens on 127.0.0.1 only and asks a password over TCP; its superuser has none (only
its unix socket lets it in); the owner migrates and owns every table, older ones included;
each service logs in with its own password as its own role and holds only its grants."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from deploy.local.embedded import UNSAFE_FAST_SETTINGS, EmbeddedPostgres
from deploy.local.postgres_roles import (
    HBA_RULES,
    OWNER,
    PostgresLogins,
    provision_roles,
    service_role,
    with_login,
)
from deploy.local.state import SERVICES
from libs.common.schema import MIGRATIONS, current_version, upgrade

REFUSED = (asyncpg.PostgresError, asyncpg.InterfaceError)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(tmp_path / "pg", hba=HBA_RULES, settings=UNSAFE_FAST_SETTINGS)
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()


async def test_services_log_in_as_their_roles_and_only_the_socket_trusts_the_superuser(
    server: EmbeddedPostgres, tmp_path: Path
) -> None:
    admin = await asyncpg.connect(server.local_dsn)
    try:
        assert await admin.fetchval("SHOW listen_addresses") == "127.0.0.1"
        # A deployment made before the owner existed: tables owned by the superuser.
        pool = await asyncpg.create_pool(server.local_dsn, min_size=1, max_size=1)
        try:
            await upgrade(pool, MIGRATIONS[:3])
        finally:
            await pool.close()
    finally:
        await admin.close()

    logins = PostgresLogins(tmp_path / "logins", server.dsn)
    await asyncio.to_thread(provision_roles, server.local_dsn, logins)
    await asyncio.to_thread(provision_roles, server.local_dsn, logins)  # idempotent
    assert (tmp_path / "logins" / f"{OWNER}.password").stat().st_mode & 0o777 == 0o600

    for refused in (
        server.dsn,  # the superuser over TCP: it has no password
        with_login(server.dsn, "fulcrum_api", "wrong"),
        with_login(server.dsn, "postgres", logins.password(OWNER)),
    ):
        with pytest.raises(REFUSED):
            await asyncpg.connect(refused)

    owner = await asyncpg.connect(logins.owner_dsn)
    try:
        assert await current_version(owner) == len(MIGRATIONS)
        owners = await owner.fetch(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
        )
        assert [r["tableowner"] for r in owners] == [OWNER]
    finally:
        await owner.close()

    for service in SERVICES:
        conn = await asyncpg.connect(logins.dsn_for(service))
        try:
            assert await conn.fetchval("SELECT current_user") == service_role(service)
            assert not await conn.fetchval(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            )
            await conn.fetchval("SELECT count(*) FROM loadbalancer_view")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM events")
            if service in ("health", "housekeeping"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch("SELECT sealed FROM secrets")
            else:
                await conn.fetch("SELECT sealed FROM secrets")
        finally:
            await conn.close()


async def test_provisioning_waits_for_a_server_that_is_not_up_yet(tmp_path: Path) -> None:
    """The image's ``migrate`` may start before its server takes connections (a Patroni
    member reports healthy before it is a writable primary): it waits, then provisions."""
    pg = EmbeddedPostgres(tmp_path / "pg", settings=UNSAFE_FAST_SETTINGS)  # trusts 127.0.0.1
    pg.start()
    pg.stop()
    logins = PostgresLogins(tmp_path / "logins", pg.dsn)
    provisioning = asyncio.create_task(asyncio.to_thread(provision_roles, pg.dsn, logins, wait=60))
    try:
        await asyncio.sleep(1.5)
        assert not provisioning.done(), provisioning  # refused so far, still waiting
        pg.start()
        await asyncio.wait_for(provisioning, 60)
        owner = await asyncpg.connect(logins.owner_dsn)
        try:
            assert await current_version(owner) == len(MIGRATIONS)
        finally:
            await owner.close()
    finally:
        pg.stop()


async def test_provisioning_does_not_wait_out_a_refused_login(
    server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """A server that answers and refuses the login is a configuration error: no waiting."""
    logins = PostgresLogins(tmp_path / "logins", server.dsn)
    refused = asyncio.create_task(
        asyncio.to_thread(provision_roles, server.dsn, logins, wait=600)  # no password: refused
    )
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncio.wait_for(refused, 30)
