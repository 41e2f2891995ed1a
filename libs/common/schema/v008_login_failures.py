"""Migration 8: failed password attempts (services/api/adapters/login_failures.py), shared by
every API replica.

A row is one failure of one scope: a SHA-256 digest of the user or of the source address (never
the name typed). The API counts a scope's rows within its window; rows older than the window
are pruned as failures are recorded. Only the API's role may touch the table.
"""

from __future__ import annotations

from typing import Final

SQL: Final = """
CREATE TABLE IF NOT EXISTS login_failures (
    scope bytea NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS login_failures_scope_idx ON login_failures (scope, failed_at);
CREATE INDEX IF NOT EXISTS login_failures_failed_at_idx ON login_failures (failed_at);

REVOKE ALL ON login_failures FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON login_failures TO fulcrum_api;
"""
