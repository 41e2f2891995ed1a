"""Shared settings models; each service composes them into its own ``BaseSettings``.

Build settings once in ``__main__`` and pass them down: no globals, no stray ``os.environ``.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class PostgresSettings(BaseModel):
    dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    min_pool: int = 1
    max_pool: int = 10


class NatsSettings(BaseModel):
    url: str = "nats://127.0.0.1:4222"
    stream: str = "FULCRUM_EVENTS"
    # Seconds within which a republished Nats-Msg-Id is absorbed by the server.
    duplicate_window: float = 120.0
    max_deliver: int = 10
    ack_wait: float = 30.0
    max_age_days: float = 7.0
    replicas: int = 1


class TelemetrySettings(BaseModel):
    # "none" records spans without exporting; "console" prints them (debugging only).
    exporter: str = Field(default="none", pattern="^(none|console)$")


class RelaySettings(BaseModel):
    enabled: bool = True
    batch_size: int = 500
    # Safety net beside LISTEN/NOTIFY, and the standby's interval to try the lock.
    poll_interval: float = 2.0
    max_backoff: float = 2.0
