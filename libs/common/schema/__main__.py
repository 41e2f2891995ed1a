"""``python -m libs.common.schema upgrade|version [--dsn DSN]``: migrate a database, or say
which version it is at, without starting a service. The DSN defaults to
``$FULCRUM_POSTGRES_DSN``, then to the settings' default. Exits 1 on a database newer than
this code or one that cannot be reached."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import asyncpg

from libs.common.database import create_pool
from libs.common.errors import InfrastructureError
from libs.common.schema import MIGRATIONS, current_version, upgrade
from libs.common.settings import PostgresSettings


async def _run(command: str, dsn: str) -> str:
    pool = await create_pool(PostgresSettings(dsn=dsn, min_pool=1, max_pool=1))
    try:
        if command == "upgrade":
            return f"schema at version {await upgrade(pool)}"
        found = await current_version(pool)
        return f"schema at version {found} (this release knows up to {len(MIGRATIONS)})"
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m libs.common.schema", description=__doc__)
    parser.add_argument("command", choices=["upgrade", "version"])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("FULCRUM_POSTGRES_DSN", PostgresSettings().dsn),
        help="Postgres to migrate (default: $FULCRUM_POSTGRES_DSN, else the settings' default)",
    )
    args = parser.parse_args(argv)
    try:
        print(asyncio.run(_run(args.command, args.dsn)))
    except (InfrastructureError, asyncpg.PostgresError, OSError) as exc:
        print(f"schema {args.command} failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
