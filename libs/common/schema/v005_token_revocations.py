"""Migration 5: revoked Keystone tokens, by audit id (services/api/adapters/revocations.py).

A row refuses every token carrying ``audit_id`` on every API replica; once ``expires_at`` has
passed the token is refused anyway, and the row may be pruned.
"""

from __future__ import annotations

from typing import Final

SQL: Final = """
CREATE TABLE IF NOT EXISTS revoked_tokens (
    audit_id text PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS revoked_tokens_expires_at ON revoked_tokens (expires_at);
"""
