"""The housekeeping service's SQL: job locks and schedule, the queries its jobs run, the purges.

Every job runs under a transaction-scoped advisory lock and records when it last ran in
``housekeeping_runs``, so any number of replicas run each job once per interval. Deleted rows
go in bounded batches so that no purge holds long locks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import asyncpg

from libs.common.streams import StreamCategory

PURGE_BATCH: Final = 5000
# Statuses of a spare that counts towards the pool (no LB).
SPARE_STATUSES: Final = ("BOOTING", "READY")


# --- job lock and schedule ------------------------------------------------------------------


async def try_job_lock(conn: asyncpg.Connection, job: str) -> bool:
    """Take ``job``'s lock for the current transaction; False when another replica holds it."""
    won: bool = await conn.fetchval(
        "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))", f"housekeeping:{job}"
    )
    return won


async def seconds_since_last_run(conn: asyncpg.Connection, job: str) -> float | None:
    """Seconds since any replica last finished ``job`` (None: never)."""
    value: float | None = await conn.fetchval(
        "SELECT extract(epoch FROM clock_timestamp() - last_run)::float8 "
        "FROM housekeeping_runs WHERE job = $1",
        job,
    )
    return value


async def mark_run(conn: asyncpg.Connection, job: str) -> None:
    await conn.execute(
        "INSERT INTO housekeeping_runs (job, last_run) VALUES ($1, clock_timestamp()) "
        "ON CONFLICT (job) DO UPDATE SET last_run = EXCLUDED.last_run",
        job,
    )


# --- spares ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpareRow:
    amphora_id: str
    status: str
    age: float  # seconds since the spare was requested (or booted)
    silent_for: float | None  # seconds since its last heartbeat; None: never heard


async def spare_amphorae(pool: asyncpg.Pool) -> list[SpareRow]:
    """Spares counted in the pool (BOOTING or READY, no LB), oldest first."""
    rows = await pool.fetch(
        "SELECT id, status, extract(epoch FROM clock_timestamp() - created_at)::float8 AS age "
        "FROM amphora_view WHERE lb_id IS NULL AND status = ANY($1::text[]) "
        "ORDER BY created_at, id",
        list(SPARE_STATUSES),
    )
    silent: dict[str, float] = {}
    if rows:
        heard = await pool.fetch(
            "SELECT amphora_id, extract(epoch FROM clock_timestamp() - last_seen)::float8 AS s "
            "FROM amphora_health WHERE amphora_id = ANY($1::text[]) AND last_seen IS NOT NULL",
            [r["id"] for r in rows],
        )
        silent = {r["amphora_id"]: r["s"] for r in heard}
    return [SpareRow(r["id"], r["status"], r["age"], silent.get(r["id"])) for r in rows]


async def lock_spare(conn: asyncpg.Connection, amphora_id: str, statuses: Sequence[str]) -> bool:
    """Lock a spare's row for this transaction if it is still a spare in one of ``statuses``;
    a spare being claimed (its row locked by a create) counts as gone."""
    found = await conn.fetchval(
        "SELECT true FROM amphora_view WHERE id = $1 AND lb_id IS NULL "
        "AND status = ANY($2::text[]) FOR UPDATE SKIP LOCKED",
        amphora_id,
        list(statuses),
    )
    return bool(found)


# --- stranded work --------------------------------------------------------------------------


async def pending_loadbalancer_ids(pool: asyncpg.Pool) -> list[str]:
    """Load balancers in PENDING_*, oldest first."""
    rows = await pool.fetch(
        "SELECT id FROM loadbalancer_view "
        "WHERE body->>'provisioning_status' LIKE 'PENDING\\_%' ORDER BY created_at, id"
    )
    return [r["id"] for r in rows]


# --- certificates ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExpiringCertificate:
    amphora_id: str
    cert_expiration: str
    expires_at: datetime


async def expiring_certificates(pool: asyncpg.Pool, within: float) -> list[ExpiringCertificate]:
    """Working amphorae (READY or ALLOCATED) whose server certificate expires within
    ``within`` seconds, soonest first; ``cert_expiration`` as the view renders it (naive UTC)."""
    rows = await pool.fetch(
        "SELECT id, cert, expires_at FROM ("
        "  SELECT id, body->>'cert_expiration' AS cert,"
        "    (body->>'cert_expiration')::timestamp AT TIME ZONE 'UTC' AS expires_at"
        "  FROM amphora_view"
        "  WHERE status IN ('READY', 'ALLOCATED') AND body->>'cert_expiration' IS NOT NULL"
        ") AS a WHERE expires_at < clock_timestamp() + make_interval(secs => $1) "
        "ORDER BY 3, 1",
        within,
    )
    return [ExpiringCertificate(r["id"], r["cert"], r["expires_at"]) for r in rows]


# --- purge ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Purged:
    """Rows removed by one purge pass, by kind."""

    loadbalancers: int = 0
    listener_stats: int = 0
    member_stats: int = 0
    amphorae: int = 0
    amphora_health: int = 0
    dead_letters: int = 0
    processed_messages: int = 0


async def _delete_in_batches(pool: asyncpg.Pool, sql: str, *args: object) -> int:
    """Run a ``DELETE ... RETURNING 1`` whose selection is LIMITed to PURGE_BATCH until it
    removes fewer than a batch; returns the total."""
    total = 0
    while True:
        removed = len(await pool.fetch(sql, *args, PURGE_BATCH))
        total += removed
        if removed < PURGE_BATCH:
            return total


async def purge_deleted_loadbalancers(pool: asyncpg.Pool, older_than: float) -> list[str]:
    """Remove ``loadbalancer_view`` rows of LBs DELETED more than ``older_than`` s ago (their
    events stay); returns their ids."""
    purged: list[str] = []
    while True:
        rows = await pool.fetch(
            "DELETE FROM loadbalancer_view WHERE id IN ("
            "  SELECT v.id FROM loadbalancer_view v JOIN events e"
            "    ON e.stream_id = $2::text || v.id AND e.event_type = 'LoadBalancerDeleted'"
            "  WHERE v.body->>'provisioning_status' = 'DELETED'"
            "    AND e.recorded_at < clock_timestamp() - make_interval(secs => $1)"
            "  LIMIT $3"
            ") RETURNING id",
            older_than,
            StreamCategory.LOADBALANCER.prefix,
            PURGE_BATCH,
        )
        purged += [r["id"] for r in rows]
        if len(rows) < PURGE_BATCH:
            return purged


async def purge_listener_stats(pool: asyncpg.Pool, lb_ids: Sequence[str]) -> int:
    """Listener stats rows of purged load balancers."""
    return await _purge_stats(pool, "listener_stats", lb_ids)


async def purge_member_stats(pool: asyncpg.Pool, lb_ids: Sequence[str]) -> int:
    """Member stats rows of purged load balancers."""
    return await _purge_stats(pool, "member_stats", lb_ids)


async def _purge_stats(pool: asyncpg.Pool, table: str, lb_ids: Sequence[str]) -> int:
    if not lb_ids:
        return 0
    rows = await pool.fetch(
        f"DELETE FROM {table} WHERE lb_id = ANY($1::text[]) RETURNING 1", list(lb_ids)
    )
    return len(rows)


async def purge_deleted_amphorae(pool: asyncpg.Pool, older_than: float) -> int:
    """Remove ``amphora_view`` rows of amphorae DELETED more than ``older_than`` s ago."""
    return await _delete_in_batches(
        pool,
        "DELETE FROM amphora_view WHERE id IN ("
        "  SELECT a.id FROM amphora_view a JOIN events e"
        "    ON e.stream_id = $2::text || a.id AND e.event_type = 'AmphoraDeleted'"
        "  WHERE a.status = 'DELETED'"
        "    AND e.recorded_at < clock_timestamp() - make_interval(secs => $1)"
        "  LIMIT $3"
        ") RETURNING 1",
        older_than,
        StreamCategory.AMPHORA.prefix,
    )


async def purge_amphora_health(pool: asyncpg.Pool) -> int:
    """Last-seen rows of amphorae that are deleted (or whose record is purged): heartbeats are
    accepted only from live amphorae, so these rows serve nobody."""
    return await _delete_in_batches(
        pool,
        "DELETE FROM amphora_health WHERE amphora_id IN ("
        "  SELECT h.amphora_id FROM amphora_health h WHERE NOT EXISTS ("
        "    SELECT 1 FROM amphora_view v WHERE v.id = h.amphora_id AND v.status <> 'DELETED')"
        "  LIMIT $1"
        ") RETURNING 1",
    )


async def purge_dead_letters(pool: asyncpg.Pool, older_than: float) -> int:
    return await _delete_in_batches(
        pool,
        "DELETE FROM dead_letters WHERE id IN ("
        "  SELECT id FROM dead_letters"
        "  WHERE recorded_at < clock_timestamp() - make_interval(secs => $1) LIMIT $2"
        ") RETURNING 1",
        older_than,
    )


async def purge_processed_messages(pool: asyncpg.Pool, older_than: float) -> int:
    return await _delete_in_batches(
        pool,
        "DELETE FROM processed_messages WHERE ctid IN ("
        "  SELECT ctid FROM processed_messages"
        "  WHERE processed_at < clock_timestamp() - make_interval(secs => $1) LIMIT $2"
        ") RETURNING 1",
        older_than,
    )
