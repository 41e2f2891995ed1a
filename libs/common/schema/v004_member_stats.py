"""Migration 4: traffic counters per member, written only by the health service.

One row per (member, amphora), as ``listener_stats`` holds per (listener, amphora): the byte,
connection and error counters the heartbeats report for the member (summed over the backends
that serve its pool on that amphora) and its connections open now. The API's member stats
endpoint and the health service's member traffic gauges sum them over amphorae.
"""

from __future__ import annotations

from typing import Final

SQL: Final = """
CREATE TABLE IF NOT EXISTS member_stats (
    member_id text NOT NULL,
    amphora_id text NOT NULL,
    pool_id text NOT NULL,
    lb_id text NOT NULL,
    bytes_in bigint NOT NULL DEFAULT 0,
    bytes_out bigint NOT NULL DEFAULT 0,
    active_connections bigint NOT NULL DEFAULT 0,
    total_connections bigint NOT NULL DEFAULT 0,
    request_errors bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (member_id, amphora_id)
);
CREATE INDEX IF NOT EXISTS member_stats_lb_idx ON member_stats (lb_id);
"""
