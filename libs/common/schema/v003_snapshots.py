"""Migration 3: snapshots of aggregates (libs/common/repository.py writes and reads them).

One row per stream: the state folded up to ``stream_version``, as JSON text (the order of its
maps survives) in the shape numbered ``schema_version``. A snapshot is a cache of the fold:
``events`` stays the truth (insert-only), and a row whose shape the reader does not know is
ignored and replaced.
"""

from __future__ import annotations

from typing import Final

SQL: Final = """
CREATE TABLE IF NOT EXISTS snapshots (
    stream_id text PRIMARY KEY,
    stream_version int NOT NULL CHECK (stream_version > 0),
    schema_version int NOT NULL,
    state text NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now()
);
"""
