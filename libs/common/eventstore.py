"""The event store: Postgres ``events`` table (insert-only) plus the transactional outbox.

Beside the events, ``snapshots`` caches one folded state per stream (written by the repository
inside an append's transaction); it never changes what ``read_stream`` returns.

``append`` writes events, their outbox rows and an optional caller hook (read-model projection)
in one transaction, and wakes the relay with NOTIFY at commit. An append at a stale
``expected_version`` raises ConcurrencyError and writes nothing.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import asyncpg

from libs.common import subjects
from libs.common.errors import ConcurrencyError
from libs.common.events import Envelope, Event, Metadata, new_envelope, registry

OUTBOX_CHANNEL: Final = "fulcrum_outbox"


# One statement appends the events, writes their outbox rows and wakes the relay: without a
# caller hook an append is a single round trip (a statement is atomic on its own). A guarded
# append (``StreamGuard``) also takes the guard's lock and finds its other stream unmoved, in
# the same statement: ``locked_stream_version`` (schema v009) reads that stream under a
# snapshot of its own, taken once the lock is granted. The appended stream needs no such
# read: a writer that appended to it since the statement's snapshot makes the insert a
# duplicate key.
def _append_sql(guarded: bool) -> str:
    other = " AND (SELECT locked_stream_version($13, $14)) = $15" if guarded else ""
    return f"""
WITH current AS (
    SELECT coalesce(max(stream_version), 0) AS v FROM events WHERE stream_id = $1
), new AS (
    SELECT * FROM unnest($3::int[], $4::uuid[], $5::text[], $6::int[], $7::text[], $8::text[],
                         $9::timestamptz[], $10::text[], $11::text[], $12::text[])
        AS v(stream_version, event_id, event_type, schema_version, data, metadata, occurred_at,
             subject, body, traceparent)
), inserted AS (
    INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version,
                        data, metadata, occurred_at)
    SELECT $1, stream_version, event_id, event_type, schema_version,
           data::jsonb, metadata::jsonb, occurred_at
    FROM new WHERE (SELECT v FROM current) = $2{other}
    RETURNING global_position, stream_version, event_id
), outboxed AS (
    INSERT INTO outbox (event_id, subject, body, traceparent)
    SELECT i.event_id, n.subject,
           jsonb_set(n.body::jsonb, '{{global_position}}', to_jsonb(i.global_position)),
           n.traceparent
    FROM inserted i JOIN new n USING (event_id)
    ORDER BY i.global_position
)
SELECT global_position, pg_notify('{OUTBOX_CHANNEL}', '') FROM inserted ORDER BY stream_version
"""


_APPEND_SQL: Final = _append_sql(guarded=False)
_GUARDED_APPEND_SQL: Final = _append_sql(guarded=True)
_PARAMETER: Final = re.compile(r"\$(\d+)")


@dataclass(frozen=True)
class AppendRider:
    """Writes made in an append's own statement, after its events and outbox rows, and only
    if the append is made: ``ctes`` are CTEs (``name AS (...)``, separated by commas, none
    named as the append's own: current, new, inserted, outboxed) that may read ``inserted``
    (the appended events' rows) and use the parameters $1.. of ``args``."""

    ctes: str
    args: tuple[object, ...]


def _with_rider(sql: str, first_free: int, rider: AppendRider) -> str:
    """``sql`` (an append statement) with ``rider``'s CTEs after its own, their parameters
    numbered from ``first_free``."""
    ctes = _PARAMETER.sub(lambda m: f"${int(m.group(1)) + first_free - 1}", rider.ctes)
    head, tail = sql.rsplit("\n)\nSELECT ", 1)
    return f"{head}\n), {ctes}\nSELECT {tail}"


@dataclass(frozen=True)
class StreamGuard:
    """For an append: wait for every other transaction holding ``lock_key``, then append only
    if ``stream_id`` is still at ``version`` too (else ConcurrencyError). Two streams of one
    aggregate whose appends each guard the other under one key are written one at a time, as
    if they were one stream."""

    lock_key: str
    stream_id: str
    version: int


InTransaction = Callable[[asyncpg.Connection, list[Envelope]], Awaitable[None]]


class EventStore(Protocol):
    """The port every writer and reader of events uses."""

    async def append(
        self,
        stream_id: str,
        expected_version: int,
        payloads: Sequence[Event],
        metadata: Metadata,
        *,
        in_transaction: InTransaction | None = None,
        conn: asyncpg.Connection | None = None,
    ) -> list[Envelope]: ...

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[Envelope]: ...

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[Envelope]: ...


def decode_row(row: asyncpg.Record) -> Envelope:
    """The envelope of an ``events`` row (``data`` and ``metadata`` as JSON text), its payload
    upcast to the current schema."""
    payload = registry().decode(row["event_type"], row["schema_version"], json.loads(row["data"]))
    return Envelope(
        event_id=row["event_id"],
        stream_id=row["stream_id"],
        stream_version=row["stream_version"],
        payload=payload,
        occurred_at=row["occurred_at"],
        metadata=Metadata.from_dict(json.loads(row["metadata"])),
        global_position=row["global_position"],
    )


_COLUMNS: Final = (
    "global_position, stream_id, stream_version, event_id, event_type, schema_version, "
    "data::text AS data, metadata::text AS metadata, occurred_at"
)
_SELECT: Final = f"SELECT {_COLUMNS} FROM events "


# A snapshot (when of the reader's shape) and the events after it of its stream and of a second
# stream folded with it, whose version the snapshot's state records: one round trip.
_FROM_SNAPSHOT_SQL: Final = f"""
WITH snap AS (
    SELECT stream_version, schema_version, state FROM snapshots
    WHERE stream_id = $1 AND schema_version = $3
)
SELECT 0 AS part, NULL::bigint AS global_position, NULL::text AS stream_id, stream_version,
       NULL::uuid AS event_id, NULL::text AS event_type, schema_version, state AS data,
       NULL::text AS metadata, NULL::timestamptz AS occurred_at
FROM snap
UNION ALL
SELECT 1 AS part, {_COLUMNS} FROM events
WHERE stream_id = $1 AND stream_version > coalesce((SELECT stream_version FROM snap), 0)
UNION ALL
SELECT 2 AS part, {_COLUMNS} FROM events
WHERE stream_id = $2
  AND stream_version > coalesce((SELECT (state::jsonb ->> $4)::int FROM snap), 0)
ORDER BY part, stream_version
"""


# The events of two streams after a version of each (a state known to hold both up to them):
# one round trip.
_AFTER_SQL: Final = f"""
SELECT 1 AS part, {_COLUMNS} FROM events WHERE stream_id = $1 AND stream_version > $2
UNION ALL
SELECT 2 AS part, {_COLUMNS} FROM events WHERE stream_id = $3 AND stream_version > $4
ORDER BY part, stream_version
"""


@dataclass(frozen=True)
class SnapshotRead:
    """``read_from_snapshot``'s answer: the snapshot (None: none of that shape) and the events
    after it of its stream (``events``) and of the stream beside it (``beside``)."""

    snapshot: StoredSnapshot | None
    events: list[Envelope]
    beside: list[Envelope]


class PostgresEventStore:
    """EventStore on asyncpg. ``append`` may join a caller's transaction through ``conn``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def append(
        self,
        stream_id: str,
        expected_version: int,
        payloads: Sequence[Event],
        metadata: Metadata,
        *,
        in_transaction: InTransaction | None = None,
        conn: asyncpg.Connection | None = None,
        guard: StreamGuard | None = None,
        rider: AppendRider | None = None,
    ) -> list[Envelope]:
        """Append ``payloads`` after ``expected_version``; raises ConcurrencyError if stale
        (this stream, or the other stream of ``guard``). ``rider``'s writes go in the append's
        statement, made with it or not at all; then ``in_transaction`` runs.

        With ``conn`` in a transaction, the append joins it (a consumer's processed-message
        row, say) behind a savepoint of its own: a failure (a refused append, the hook's error)
        undoes what the append wrote and leaves the transaction usable. A success leaves the
        savepoint unreleased: the caller's commit, or the rollback of a savepoint of its own,
        covers it, and a release would cost one more round trip. Otherwise (no ``conn``, or
        one outside a transaction) the append commits on its own: without ``in_transaction``
        as its one statement (a guard's lock and check included), one round trip; with it in
        a transaction of its own.
        """
        if not payloads:
            return []
        envelopes = [
            new_envelope(stream_id, expected_version + i + 1, p, metadata)
            for i, p in enumerate(payloads)
        ]
        if conn is not None and conn.is_in_transaction():
            savepoint = conn.transaction()
            await savepoint.start()
            try:
                return await self._append_in(
                    conn, expected_version, envelopes, in_transaction, guard, rider
                )
            except BaseException:
                await savepoint.rollback()
                raise
        if conn is not None:
            return await self._append_alone(
                conn, expected_version, envelopes, in_transaction, guard, rider
            )
        async with self._pool.acquire() as own:
            return await self._append_alone(
                own, expected_version, envelopes, in_transaction, guard, rider
            )

    async def _append_alone(
        self,
        conn: asyncpg.Connection,
        expected_version: int,
        envelopes: list[Envelope],
        in_transaction: InTransaction | None,
        guard: StreamGuard | None,
        rider: AppendRider | None,
    ) -> list[Envelope]:
        """``_append_in`` committed on its own on ``conn`` (outside any transaction): the
        append's statement alone, or with ``in_transaction`` in a transaction of its own."""
        if in_transaction is None:
            return await self._append_in(conn, expected_version, envelopes, None, guard, rider)
        async with conn.transaction():
            return await self._append_in(
                conn, expected_version, envelopes, in_transaction, guard, rider
            )

    async def _append_in(
        self,
        conn: asyncpg.Connection,
        expected_version: int,
        envelopes: list[Envelope],
        in_transaction: InTransaction | None,
        guard: StreamGuard | None = None,
        rider: AppendRider | None = None,
    ) -> list[Envelope]:
        """The append's statement (``guard``'s lock and check in it), then the hook, on
        ``conn``."""
        stream_id = envelopes[0].stream_id
        metadata_json = json.dumps(envelopes[0].metadata.as_dict())
        wires = [e.to_wire() for e in envelopes]
        guarded: tuple[str, str, int] | tuple[()] = ()
        if guard is not None:
            guarded = (guard.lock_key, guard.stream_id, guard.version)
        sql = _APPEND_SQL if guard is None else _GUARDED_APPEND_SQL
        carried: tuple[object, ...] = ()
        if rider is not None:
            sql = _with_rider(sql, 13 + len(guarded), rider)
            carried = rider.args
        try:
            positions = await conn.fetch(
                sql,
                stream_id,
                expected_version,
                [e.stream_version for e in envelopes],
                [e.event_id for e in envelopes],
                [e.event_type for e in envelopes],
                [e.schema_version for e in envelopes],
                [json.dumps(w["data"]) for w in wires],
                [metadata_json] * len(envelopes),
                [e.occurred_at for e in envelopes],
                [subjects.event_subject(e.stream_id, e.event_type) for e in envelopes],
                [json.dumps(w) for w in wires],
                [e.metadata.traceparent for e in envelopes],
                *guarded,
                *carried,
            )
        except asyncpg.UniqueViolationError as exc:
            raise ConcurrencyError(stream_id, expected_version) from exc
        if len(positions) != len(envelopes):
            raise ConcurrencyError(stream_id, expected_version)
        stored = [
            _with_position(e, row["global_position"])
            for e, row in zip(envelopes, positions, strict=True)
        ]
        if in_transaction is not None:
            await in_transaction(conn, stored)
        return stored

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[Envelope]:
        """Events of one stream in version order (after ``after_version``)."""
        rows = await self._pool.fetch(
            _SELECT + "WHERE stream_id = $1 AND stream_version > $2 ORDER BY stream_version",
            stream_id,
            after_version,
        )
        return [decode_row(r) for r in rows]

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[Envelope]:
        """Committed events in global order (for rebuilds; live followers use JetStream)."""
        rows = await self._pool.fetch(
            _SELECT + "WHERE global_position > $1 ORDER BY global_position LIMIT $2",
            after_position,
            limit,
        )
        return [decode_row(r) for r in rows]

    async def read_from_snapshot(
        self, stream_id: str, schema_version: int, beside: str, beside_version_key: str
    ) -> SnapshotRead:
        """In one round trip: ``stream_id``'s snapshot if it has the shape ``schema_version``,
        the stream's events after it, and the events of ``beside`` (a second stream folded
        into the same state) after the version the snapshot's state records under
        ``beside_version_key`` (a missing key: 0). Without such a snapshot both streams are
        read whole. Each list is in version order, as ``read_stream`` gives it."""
        rows = await self._pool.fetch(
            _FROM_SNAPSHOT_SQL, stream_id, beside, schema_version, beside_version_key
        )
        snapshot: StoredSnapshot | None = None
        own: list[Envelope] = []
        other: list[Envelope] = []
        for row in rows:
            part = row["part"]
            if part == 0:
                snapshot = StoredSnapshot(
                    stream_id, row["stream_version"], row["schema_version"], row["data"]
                )
            else:
                (own if part == 1 else other).append(decode_row(row))
        return SnapshotRead(snapshot, own, other)

    async def read_after(
        self, stream_id: str, after_version: int, beside: str, beside_after: int
    ) -> tuple[list[Envelope], list[Envelope]]:
        """In one round trip: the events of ``stream_id`` after ``after_version`` and those of
        ``beside`` after ``beside_after``, each list in version order."""
        rows = await self._pool.fetch(_AFTER_SQL, stream_id, after_version, beside, beside_after)
        own = [decode_row(row) for row in rows if row["part"] == 1]
        return own, [decode_row(row) for row in rows if row["part"] == 2]

    async def last_version_of(self, stream_id: str, event_types: Sequence[str]) -> int:
        """The stream version of the latest event of one of ``event_types`` (0: none). Walks
        the stream backwards from its end, so it costs what lies after that event."""
        version: int | None = await self._pool.fetchval(
            "SELECT stream_version FROM events WHERE stream_id = $1 AND event_type = ANY($2) "
            "ORDER BY stream_version DESC LIMIT 1",
            stream_id,
            list(event_types),
        )
        return version or 0

    async def stream_version(self, stream_id: str) -> int:
        version: int = await self._pool.fetchval(
            "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1", stream_id
        )
        return version


@dataclass(frozen=True)
class StoredSnapshot:
    """A stream's state folded up to ``stream_version``, as JSON in shape ``schema_version``."""

    stream_id: str
    stream_version: int
    schema_version: int
    state: str


async def write_snapshot(conn: asyncpg.Connection, snapshot: StoredSnapshot) -> None:
    """Store ``snapshot`` on ``conn`` (an append's transaction); keeps a newer one in place."""
    await conn.execute(
        "INSERT INTO snapshots (stream_id, stream_version, schema_version, state) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT (stream_id) DO UPDATE SET "
        "stream_version = EXCLUDED.stream_version, schema_version = EXCLUDED.schema_version, "
        "state = EXCLUDED.state, taken_at = now() "
        "WHERE snapshots.stream_version <= EXCLUDED.stream_version",
        snapshot.stream_id,
        snapshot.stream_version,
        snapshot.schema_version,
        snapshot.state,
    )


def _with_position(envelope: Envelope, position: int) -> Envelope:
    return Envelope(
        event_id=envelope.event_id,
        stream_id=envelope.stream_id,
        stream_version=envelope.stream_version,
        payload=envelope.payload,
        occurred_at=envelope.occurred_at,
        metadata=envelope.metadata,
        global_position=position,
    )


class InMemoryEventStore:
    """EventStore in a dict, for pure-logic tests; ``in_transaction`` hooks get ``None``."""

    def __init__(self) -> None:
        self._streams: dict[str, list[Envelope]] = {}
        self._all: list[Envelope] = []

    async def append(
        self,
        stream_id: str,
        expected_version: int,
        payloads: Sequence[Event],
        metadata: Metadata,
        *,
        in_transaction: InTransaction | None = None,
        conn: asyncpg.Connection | None = None,
    ) -> list[Envelope]:
        if not payloads:
            return []
        stream = self._streams.setdefault(stream_id, [])
        if len(stream) != expected_version:
            raise ConcurrencyError(stream_id, expected_version)
        stored = [
            _with_position(
                new_envelope(stream_id, expected_version + i + 1, p, metadata),
                len(self._all) + i + 1,
            )
            for i, p in enumerate(payloads)
        ]
        if in_transaction is not None:
            await in_transaction(None, stored)
        stream.extend(stored)
        self._all.extend(stored)
        return stored

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[Envelope]:
        return [e for e in self._streams.get(stream_id, []) if e.stream_version > after_version]

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[Envelope]:
        return [e for e in self._all if (e.global_position or 0) > after_position][:limit]


def new_id() -> str:
    """A fresh resource id (UUID4 text), as Octavia uses."""
    return str(uuid.uuid4())


__all__ = [
    "OUTBOX_CHANNEL",
    "AppendRider",
    "EventStore",
    "InMemoryEventStore",
    "PostgresEventStore",
    "SnapshotRead",
    "StoredSnapshot",
    "decode_row",
    "new_id",
    "write_snapshot",
]
