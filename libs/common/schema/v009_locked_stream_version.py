"""Migration 9: ``locked_stream_version(lock_key, stream_id)``, which a guarded append calls
inside its own statement (libs/common/eventstore.py).

It waits for the transaction-scoped advisory lock of ``lock_key``, then reads the stream's
version. Being VOLATILE, its read takes a snapshot of its own after the lock is granted, so
it sees what every earlier holder of the lock committed, although the statement that calls
it took its snapshot before: the lock and the guard's check need no statement of their own.
Executable by the service roles only (nothing is granted to ``PUBLIC``).
"""

from __future__ import annotations

from typing import Final

SQL: Final = """
CREATE OR REPLACE FUNCTION locked_stream_version(lock_key text, stream text) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(lock_key, 0));
    RETURN (SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = stream);
END
$$;

REVOKE ALL ON FUNCTION locked_stream_version(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION locked_stream_version(text, text)
    TO fulcrum_api, fulcrum_provisioner, fulcrum_health, fulcrum_housekeeping;
"""
