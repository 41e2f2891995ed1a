"""The services' Postgres pool (libs/common/database.py) against a real Postgres."""

from __future__ import annotations

import asyncpg

from libs.common.database import create_pool
from libs.common.events import Metadata
from libs.common.events.amphora import AmphoraDeleted
from libs.common.eventstore import PostgresEventStore
from libs.common.schema import upgrade
from libs.common.settings import PostgresSettings

META = Metadata(correlation_id="c-1", actor="test")


class Statements:
    """A query logger: the text of every statement a connection ran."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def __call__(self, record: asyncpg.connection.LoggedQuery) -> None:
        self.texts.append(record.query)

    def type_lookups(self) -> int:
        """How many of them were asyncpg's catalog lookup of a type it had no codec for."""
        return sum("typeinfo_tree" in text for text in self.texts)


async def append_on(store: PostgresEventStore, conn: asyncpg.Connection, stream: str) -> Statements:
    """Append one event on ``conn`` (as a consumer does, in its transaction); what it ran."""
    statements = Statements()
    conn.add_query_logger(statements)
    try:
        async with conn.transaction():
            await store.append(stream, 0, [AmphoraDeleted(amphora_id="a")], META, conn=conn)
    finally:
        conn.remove_query_logger(statements)
    return statements


async def test_a_pooled_connection_knows_the_appended_array_types_before_its_first_append(
    pg_dsn: str,
) -> None:
    """A new connection would look up the array types an append binds (int4[], uuid[],
    timestamptz[]...) in the catalog on its first append, inside the request (three round
    trips, a recursive catalog query); the pool's connections learn them when opened."""
    pool = await create_pool(PostgresSettings(dsn=pg_dsn, min_pool=2, max_pool=2))
    try:
        await upgrade(pool)
        store = PostgresEventStore(pool)
        plain = await asyncpg.connect(pg_dsn)
        try:
            assert (await append_on(store, plain, "amphora-plain")).type_lookups() > 0
        finally:
            await plain.close()
        async with pool.acquire() as first, pool.acquire() as second:
            for n, conn in enumerate((first, second)):
                assert (await append_on(store, conn, f"amphora-pooled-{n}")).type_lookups() == 0
    finally:
        await pool.close()
