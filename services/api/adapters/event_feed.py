"""``PostgresFeedReader``: the live event feed's reads of the ``events`` table.

A page is read in one statement, so its rows and the snapshot it reports (``xmax`` and the
transactions then open, from ``pg_current_snapshot()``) belong together: ``FeedCursor`` needs
both to tell a hole that an open transaction will still fill from one that stays.
Only the rows the scope wants carry their body; the others carry their position alone.
"""

from __future__ import annotations

import json
import logging
from typing import Final

import asyncpg

from libs.common.events import UnknownEventType, UnsupportedSchemaVersion
from libs.common.eventstore import decode_row
from services.api.domain.event_feed import FeedScope, StoredRow, StorePage

log = logging.getLogger(__name__)

_PAGE_SQL: Final = """
SELECT e.global_position, e.wanted, e.stream_id, e.stream_version, e.event_id, e.event_type,
       e.schema_version, e.data, e.metadata, e.occurred_at, s.xmax, s.open_then
FROM (SELECT pg_snapshot_xmax(c)::text::bigint AS xmax,
             ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(c) AS x) AS open_then
      FROM pg_current_snapshot() AS c) AS s
CROSS JOIN LATERAL (
    SELECT global_position, stream_id, stream_version, event_id, event_type, schema_version,
           occurred_at, w.wanted,
           CASE WHEN w.wanted THEN data::text END AS data,
           CASE WHEN w.wanted THEN metadata::text END AS metadata
    FROM events,
         LATERAL (SELECT ($2::text IS NULL OR metadata->>'project_id' = $2)
                         AND ($3::text[] IS NULL OR event_type = ANY($3)) AS wanted) AS w
    WHERE global_position > $1
    ORDER BY global_position
    LIMIT $4
) AS e
ORDER BY e.global_position
"""


def _line(row: asyncpg.Record) -> str:
    """The envelope as the bus carries it (docs/events.md), on one line. An event this code
    cannot decode (a type or schema version a newer writer added) is sent as stored."""
    try:
        wire = decode_row(row).to_wire()
    except (UnknownEventType, UnsupportedSchemaVersion):
        log.warning("event feed: %s v%s sent as stored", row["event_type"], row["schema_version"])
        wire = {
            "event_id": str(row["event_id"]),
            "event_type": row["event_type"],
            "schema_version": row["schema_version"],
            "stream_id": row["stream_id"],
            "stream_version": row["stream_version"],
            "occurred_at": row["occurred_at"].isoformat(),
            "metadata": json.loads(row["metadata"]),
            "global_position": row["global_position"],
            "data": json.loads(row["data"]),
        }
    return json.dumps(wire, separators=(",", ":"))


class PostgresFeedReader:
    """Reads pages of events for one feed's scope."""

    def __init__(self, pool: asyncpg.Pool, scope: FeedScope) -> None:
        self._pool = pool
        self._project = scope.project_id
        self._types = sorted(scope.event_types) if scope.event_types is not None else None

    async def newest(self) -> int:
        """The highest position committed now (0 for an empty store)."""
        value: int = await self._pool.fetchval(
            "SELECT coalesce(max(global_position), 0) FROM events"
        )
        return value

    async def page(self, after: int, limit: int) -> StorePage:
        """Up to ``limit`` events after position ``after``, with the snapshot they were read
        in."""
        rows = await self._pool.fetch(_PAGE_SQL, after, self._project, self._types, limit)
        if not rows:
            return StorePage((), 0, frozenset())  # nothing to pass, so no snapshot needed
        return StorePage(
            [
                StoredRow(r["global_position"], r["event_type"], _line(r) if r["wanted"] else None)
                for r in rows
            ],
            rows[0]["xmax"],
            frozenset(rows[0]["open_then"]),
        )
