"""Who logs in to Postgres: the schema's owner, which runs the migrations, and one role per
service (created and granted by migration 4, ``libs/common/schema/v004_service_roles.py``),
each with its own password, kept 0600 in one directory.

``provision`` runs once the server answers and before any service starts: as the superuser it
gives ``fulcrum_owner`` and the service roles a login and their password, makes the owner own
the database and every object of its ``public`` schema, then upgrades the schema as the
owner. Services then connect with ``dsn_for(service)``: no service is a superuser or owns a
table, so each holds only its grants.

``HBA_RULES``: the server's ``pg_hba.conf`` for ``make up``: its unix socket (a 0700 directory
of the state dir) trusts whoever can reach it, TCP on 127.0.0.1 asks a password
(scram-sha-256), and no other address is let in.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from deploy.local.ports import LOOPBACK
from deploy.local.state import SERVICES
from libs.common.database import DATABASE_ERRORS, connect_or_unavailable, database_unavailable
from libs.common.private_files import kept_secret
from libs.common.schema import upgrade

__all__ = [
    "HBA_RULES",
    "OWNER",
    "PostgresLogins",
    "provision",
    "provision_roles",
    "service_role",
    "with_login",
]

OWNER: Final = "fulcrum_owner"
# The image's ``migrate`` command waits this long for a primary (compose starts it once the
# servers answer their health checks, which a Patroni member does before it is writable).
_MIGRATE_WAIT: Final = 120.0
_RETRY_INTERVAL: Final = 1.0
HBA_RULES: Final = f"local all all trust\nhost all all {LOOPBACK}/32 scram-sha-256\n"


def service_role(service: str) -> str:
    """The role ``service`` (``api``, ``provisioner`` ...) connects as."""
    return f"fulcrum_{service}"


def with_login(dsn: str, user: str, password: str) -> str:
    """``dsn`` (single or multi-host URL) logging in as ``user`` with ``password``."""
    parts = urlsplit(dsn)
    hosts = parts.netloc.rsplit("@", 1)[-1]
    login = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return urlunsplit(parts._replace(netloc=f"{login}@{hosts}"))


def _on_host(dsn: str, host: str, port: int) -> str:
    """``dsn`` (single or multi-host URL) with its hosts replaced by ``host``:``port``."""
    parts = urlsplit(dsn)
    login, _, _ = parts.netloc.rpartition("@")
    address = f"[{host}]" if ":" in host else host
    netloc = f"{login}@{address}:{port}" if login else f"{address}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresLogins:
    """The owner's and each service's password (``<role>.password`` under ``directory``) and
    the DSNs built from ``server_dsn`` (any DSN of the server and database: its login is
    replaced)."""

    def __init__(self, directory: Path, server_dsn: str) -> None:
        self.directory = Path(directory)
        self.server_dsn = server_dsn

    def password(self, role: str) -> str:
        return kept_secret(self.directory / f"{role}.password")

    def dsn_for(self, service: str) -> str:
        """The DSN ``service`` connects with (its own role)."""
        role = service_role(service)
        return with_login(self.server_dsn, role, self.password(role))

    @property
    def owner_dsn(self) -> str:
        return with_login(self.server_dsn, OWNER, self.password(OWNER))


async def provision(
    admin: asyncpg.Connection, logins: PostgresLogins, services: Iterable[str]
) -> None:
    """On ``admin`` (a superuser's connection to the deployment's database): logins for the
    owner and ``services``' roles, the database and its ``public`` objects owned by the owner;
    then the schema upgraded as the owner (which creates the service roles' grants)."""
    roles = [OWNER, *(service_role(service) for service in services)]
    for role in roles:
        exists = await admin.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", role)
        verb = "ALTER" if exists else "CREATE"
        statement = await admin.fetchval(
            f"SELECT format('{verb} ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
            "PASSWORD %L', $1::text, $2::text)",
            role,
            logins.password(role),
        )
        await admin.execute(statement)
    database = await admin.fetchval("SELECT current_database()")
    await admin.execute(f'ALTER DATABASE "{database}" OWNER TO {OWNER}')
    await admin.execute(f"ALTER SCHEMA public OWNER TO {OWNER}")
    await admin.execute(_ADOPT_PUBLIC_OBJECTS)
    # The owner migrates on the server ``admin`` reached: with a multi-host DSN another host,
    # a standby yet to replay the login just made, would refuse its password.
    reached = await admin.fetchrow("SELECT host(inet_server_addr()), inet_server_port()")
    owner_dsn = logins.owner_dsn
    if reached is not None and reached[0] is not None:
        owner_dsn = _on_host(owner_dsn, reached[0], reached[1])
    owner = await asyncpg.create_pool(owner_dsn, min_size=1, max_size=1)
    try:
        await upgrade(owner)
    finally:
        await owner.close()


# Tables, views, sequences and functions of ``public`` made before the owner existed (a
# deployment older than migration 4) become the owner's, so its migrations may alter them.
_ADOPT_PUBLIC_OBJECTS: Final = f"""
DO $$
DECLARE
    item record;
BEGIN
    FOR item IN
        SELECT c.relname AS name, c.relkind AS kind FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm', 'S', 'p')
          AND pg_get_userbyid(c.relowner) <> '{OWNER}'
          AND NOT (c.relkind = 'S' AND EXISTS (
              SELECT FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))
    LOOP
        EXECUTE format('ALTER %s %I OWNER TO {OWNER}',
                       CASE item.kind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                                      WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
                       item.name);
    END LOOP;
    FOR item IN
        SELECT p.oid::regprocedure AS signature FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> '{OWNER}'
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO {OWNER}', item.signature);
    END LOOP;
END
$$;
"""


def provision_roles(admin_dsn: str, logins: PostgresLogins, wait: float = 0.0) -> None:
    """``provision`` for every service, connecting to ``admin_dsn`` (blocking). For up to
    ``wait`` seconds a server that cannot be reached, is starting, or has no primary yet (a
    Patroni cluster electing one) is waited for and the whole provisioning, which is
    idempotent, run again; any other error, or an outage past ``wait``, raises."""

    async def run() -> None:
        admin = await connect_or_unavailable(admin_dsn)
        try:
            await provision(admin, logins, SERVICES)
        finally:
            await admin.close()

    async def run_when_available() -> None:
        deadline = time.monotonic() + wait
        while True:
            try:
                await run()
                return
            except DATABASE_ERRORS as exc:
                if not database_unavailable(exc) or time.monotonic() >= deadline:
                    raise
                print(
                    f"postgres_roles: Postgres not available yet ({exc}); retrying", file=sys.stderr
                )
                await asyncio.sleep(_RETRY_INTERVAL)

    asyncio.run(run_when_available())


def main(argv: list[str]) -> int:
    """``python -m deploy.local.postgres_roles ADMIN_DSN SERVER_DSN PASSWORD_DIRECTORY``: the
    control-plane image's ``migrate`` command."""
    if len(argv) != 3:
        print(
            "usage: python -m deploy.local.postgres_roles ADMIN_DSN SERVER_DSN PASSWORD_DIR",
            file=sys.stderr,
        )
        return 2
    provision_roles(argv[0], PostgresLogins(Path(argv[2]), argv[1]), wait=_MIGRATE_WAIT)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
