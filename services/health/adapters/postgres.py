"""The health service's SQL: last-seen and stats tables, and the queries its loops run.

``amphora_health`` holds one row per amphora that ever sent a heartbeat (or was held by the
breaker): ``last_seen`` on the database's clock, the highest ``seq`` accepted, and
``failover_stopped`` while the circuit breaker holds the amphora. ``listener_stats`` holds
counters per (listener, amphora), ``member_stats`` per (member, amphora); the API's stats
endpoints sum them per listener, LB, member or amphora. Raw heartbeats are never events: these
tables take batched upserts, one statement per flush, rows in key order so that concurrent
replicas lock rows in the same order.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

import asyncpg

from libs.common.streams import StreamCategory, StreamId
from services.health.domain.breaker import SilentAmphora

SCANNER_LOCK_KEY: Final = 0x46554C484C54  # "FULHLT": one active stale scanner per database


class AmphoraRecord(NamedTuple):
    """What the receiver needs to know of an amphora that may send heartbeats: a row of
    ``_LIVE_AMPHORAE``, whose columns are these fields in this order (the directory reads the
    whole table every second: a row becomes a record in one ``_make``, where building a
    dataclass by column name cost nearly twice as much as fetching the rows)."""

    amphora_id: str
    lb_id: str | None
    status: str
    seq: int


class LastSeen(NamedTuple):
    """One amphora's row of a last-seen flush (a tuple: a thousand are made a second, and
    ``write_last_seen`` sorts and transposes them in C)."""

    amphora_id: str
    age: float  # seconds between receipt and the flush
    seq: int


@dataclass(frozen=True, slots=True)
class StatsDelta:
    listener_id: str
    amphora_id: str
    lb_id: str
    bytes_in: int
    bytes_out: int
    active_connections: int
    total_connections: int
    request_errors: int


@dataclass(frozen=True, slots=True)
class MemberStatsDelta:
    member_id: str
    amphora_id: str
    pool_id: str
    lb_id: str
    bytes_in: int
    bytes_out: int
    active_connections: int
    total_connections: int
    request_errors: int


_LIVE_AMPHORAE: Final = (
    "SELECT v.id, v.lb_id, v.status, coalesce(h.seq, 0) AS seq FROM amphora_view v "
    "LEFT JOIN amphora_health h ON h.amphora_id = v.id WHERE v.status <> 'DELETED'"
)


async def live_amphorae(pool: asyncpg.Pool) -> list[AmphoraRecord]:
    """Every amphora not DELETED, with the highest heartbeat seq accepted so far."""
    make = AmphoraRecord._make
    return [make(row) for row in await pool.fetch(_LIVE_AMPHORAE)]


async def live_amphorae_among(pool: asyncpg.Pool, ids: Collection[str]) -> list[AmphoraRecord]:
    """``live_amphorae`` restricted to ``ids`` (those unknown or DELETED are left out)."""
    rows = await pool.fetch(f"{_LIVE_AMPHORAE} AND v.id = ANY($1::text[])", list(ids))
    return [AmphoraRecord._make(row) for row in rows]


async def revisions(pool: asyncpg.Pool, lb_ids: Sequence[str]) -> dict[str, int]:
    """Each load balancer's ``revision``: its ``loadbalancer`` and ``lbstatus`` stream versions
    summed (absent: no events)."""
    streams = {StreamId.loadbalancer(i): i for i in lb_ids}
    streams |= {StreamId.loadbalancer_status(i): i for i in lb_ids}
    rows = await pool.fetch(
        "SELECT stream_id, max(stream_version) AS version FROM events "
        "WHERE stream_id = ANY($1::text[]) GROUP BY stream_id",
        list(streams),
    )
    out: dict[str, int] = {}
    for row in rows:
        lb_id = streams[row["stream_id"]]
        out[lb_id] = out.get(lb_id, 0) + row["version"]
    return out


async def last_position(pool: asyncpg.Pool) -> int:
    """The highest ``global_position`` in the store (0: none)."""
    position: int | None = await pool.fetchval("SELECT max(global_position) FROM events")
    return position or 0


_CHANGED_SINCE: Final = f"""
SELECT DISTINCT stream_id FROM events
WHERE global_position > $1
  AND (stream_id LIKE '{StreamCategory.LOADBALANCER.prefix}%'
       OR stream_id LIKE '{StreamCategory.LOADBALANCER_STATUS.prefix}%')
"""


async def changed_loadbalancers(pool: asyncpg.Pool, since: int) -> set[str]:
    """The load balancers with events (in either of their streams) past position ``since``;
    reads only those events (the position's index)."""
    rows = await pool.fetch(_CHANGED_SINCE, since)
    return {StreamId.parse(r["stream_id"]).aggregate_id for r in rows}


_WRITE_LAST_SEEN: Final = """
WITH input AS (
    SELECT a AS amphora_id, clock_timestamp() - make_interval(secs => g) AS last_seen, s AS seq
    FROM unnest($1::text[], $2::float8[], $3::bigint[]) AS u(a, g, s)
), released AS (
    SELECT h.amphora_id FROM amphora_health h JOIN input USING (amphora_id)
    WHERE h.failover_stopped
), upserted AS (
    INSERT INTO amphora_health (amphora_id, last_seen, seq, failover_stopped)
    SELECT amphora_id, last_seen, seq, false FROM input ORDER BY amphora_id
    ON CONFLICT (amphora_id) DO UPDATE SET
        last_seen = greatest(amphora_health.last_seen, EXCLUDED.last_seen),
        seq = greatest(amphora_health.seq, EXCLUDED.seq),
        failover_stopped = false,
        stopped_at = NULL
)
SELECT amphora_id FROM released
"""


async def write_last_seen(pool: asyncpg.Pool, rows: Sequence[LastSeen]) -> list[str]:
    """Upsert last-seen times (receipt time on the database's clock) and seqs in one statement;
    releases amphorae the breaker held. Returns the released ids."""
    if not rows:
        return []
    ids, ages, seqs = zip(*sorted(rows), strict=True)  # by amphora id: ids are distinct
    released = await pool.fetch(_WRITE_LAST_SEEN, ids, ages, seqs)
    return [r["amphora_id"] for r in released]


_ADD_STATS: Final = """
INSERT INTO listener_stats (listener_id, amphora_id, lb_id, bytes_in, bytes_out,
                            active_connections, total_connections, request_errors)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                     $6::bigint[], $7::bigint[], $8::bigint[])
ORDER BY 1, 2
ON CONFLICT (listener_id, amphora_id) DO UPDATE SET
    lb_id = EXCLUDED.lb_id,
    bytes_in = coalesce(listener_stats.bytes_in, 0) + EXCLUDED.bytes_in,
    bytes_out = coalesce(listener_stats.bytes_out, 0) + EXCLUDED.bytes_out,
    active_connections = EXCLUDED.active_connections,
    total_connections = coalesce(listener_stats.total_connections, 0)
                        + EXCLUDED.total_connections,
    request_errors = coalesce(listener_stats.request_errors, 0) + EXCLUDED.request_errors
"""


async def add_stats(pool: asyncpg.Pool, rows: Sequence[StatsDelta]) -> None:
    """Add deltas to each (listener, amphora) row and set its active connections; rows must
    have distinct keys (one statement cannot update a row twice)."""
    if not rows:
        return
    await pool.execute(
        _ADD_STATS,
        [r.listener_id for r in rows],
        [r.amphora_id for r in rows],
        [r.lb_id for r in rows],
        [r.bytes_in for r in rows],
        [r.bytes_out for r in rows],
        [r.active_connections for r in rows],
        [r.total_connections for r in rows],
        [r.request_errors for r in rows],
    )


_ADD_MEMBER_STATS: Final = """
INSERT INTO member_stats (member_id, amphora_id, pool_id, lb_id, bytes_in, bytes_out,
                          active_connections, total_connections, request_errors)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
                     $7::bigint[], $8::bigint[], $9::bigint[])
ORDER BY 1, 2
ON CONFLICT (member_id, amphora_id) DO UPDATE SET
    pool_id = EXCLUDED.pool_id,
    lb_id = EXCLUDED.lb_id,
    bytes_in = member_stats.bytes_in + EXCLUDED.bytes_in,
    bytes_out = member_stats.bytes_out + EXCLUDED.bytes_out,
    active_connections = EXCLUDED.active_connections,
    total_connections = member_stats.total_connections + EXCLUDED.total_connections,
    request_errors = member_stats.request_errors + EXCLUDED.request_errors
"""


async def add_member_stats(pool: asyncpg.Pool, rows: Sequence[MemberStatsDelta]) -> None:
    """Add deltas to each (member, amphora) row and set its active connections; rows must
    have distinct keys."""
    if not rows:
        return
    await pool.execute(
        _ADD_MEMBER_STATS,
        [r.member_id for r in rows],
        [r.amphora_id for r in rows],
        [r.pool_id for r in rows],
        [r.lb_id for r in rows],
        [r.bytes_in for r in rows],
        [r.bytes_out for r in rows],
        [r.active_connections for r in rows],
        [r.total_connections for r in rows],
        [r.request_errors for r in rows],
    )


async def try_scanner_lock(conn: asyncpg.Connection) -> bool:
    """Take the session lock of the one active scanner; held until ``conn`` closes."""
    won: bool = await conn.fetchval("SELECT pg_try_advisory_lock($1)", SCANNER_LOCK_KEY)
    return won


_SILENT: Final = """
SELECT v.id, v.lb_id,
       extract(epoch FROM clock_timestamp() - h.last_seen)::float8 AS silent_for,
       extract(epoch FROM clock_timestamp() - v.created_at)::float8 AS age,
       coalesce(h.failover_stopped, false) AS stopped,
       l.body->>'provisioning_status' AS lb_status
FROM amphora_view v
LEFT JOIN amphora_health h ON h.amphora_id = v.id
LEFT JOIN loadbalancer_view l ON l.id = v.lb_id
WHERE v.status = 'ALLOCATED' AND ($3::text[] IS NULL OR v.id = ANY($3::text[]))
  AND CASE WHEN h.last_seen IS NULL
           THEN v.created_at < clock_timestamp() - make_interval(secs => $2)
           ELSE h.last_seen < clock_timestamp() - make_interval(secs => $1) END
ORDER BY v.id
"""


async def silent_amphorae(
    conn: asyncpg.Connection,
    silent_after: float,
    never_heard_after: float,
    among: Collection[str] | None = None,
) -> list[SilentAmphora]:
    """ALLOCATED amphorae silent past ``silent_after`` s, or never heard and booted more than
    ``never_heard_after`` s ago; only those in ``among`` when given."""
    ids = None if among is None else list(among)
    rows = await conn.fetch(_SILENT, silent_after, never_heard_after, ids)
    return [
        SilentAmphora(
            amphora_id=r["id"],
            lb_id=r["lb_id"],
            silent_for=r["silent_for"],
            age=r["age"],
            stopped=r["stopped"],
            lb_status=r["lb_status"],
        )
        for r in rows
    ]


async def mark_stopped(conn: asyncpg.Connection, amphora_ids: Sequence[str]) -> int:
    """Hold amphorae from failover (the breaker); returns how many were not held already."""
    if not amphora_ids:
        return 0
    rows = await conn.fetch(
        "INSERT INTO amphora_health (amphora_id, failover_stopped, stopped_at) "
        "SELECT a, true, clock_timestamp() FROM unnest($1::text[]) AS u(a) ORDER BY a "
        "ON CONFLICT (amphora_id) DO UPDATE SET failover_stopped = true, "
        "stopped_at = coalesce(amphora_health.stopped_at, EXCLUDED.stopped_at) "
        "WHERE NOT amphora_health.failover_stopped RETURNING amphora_id",
        sorted(amphora_ids),
    )
    return len(rows)
