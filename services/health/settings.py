"""Settings of the health service, read from ``FULCRUM_HEALTH_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from libs.common.heartbeat_codec import MAX_DATAGRAM
from libs.common.logsetup import LogLevel
from libs.common.settings import (
    HeartbeatKeySetting,
    NatsSettings,
    PostgresSettings,
    RelaySettings,
    TelemetrySettings,
)


class HealthSettings(HeartbeatKeySetting, BaseSettings):
    """Built once in ``__main__`` and passed down. ``heartbeat_key`` (FULCRUM_HEARTBEAT_KEY)
    must be set: a health service that cannot authenticate heartbeats refuses to start
    (``app.check_settings``)."""

    model_config = SettingsConfigDict(
        env_prefix="FULCRUM_HEALTH_", env_nested_delimiter="__", extra="ignore"
    )

    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    relay: RelaySettings = Field(default_factory=RelaySettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    # HTTP: /healthz, /readyz and /metrics.
    host: str = "127.0.0.1"
    port: int = Field(default=9878, ge=0, le=65535)
    # Threshold of every logger in this process: DEBUG, INFO, WARNING, ERROR or CRITICAL
    # (any case; libs/common/logsetup.py).
    log_level: LogLevel = "INFO"
    # Heartbeats arrive here (port 0: any free port, for tests).
    udp_host: str = "127.0.0.1"
    udp_port: int = Field(default=5555, ge=0, le=65535)
    # An ALLOCATED amphora silent this long (seconds) is failed over: three missed beats at the
    # agents' default 1 s interval. A SINGLE LB's outage is this, less the time since the last
    # beat, plus the scan period and a rebuild (~0.25 s): up to ~3.5 s by default, 1.7 s with
    # 0.5 s beats and a 1.5 s timeout (bench/bench_failover.py); lower both where the network
    # and the agents allow.
    heartbeat_timeout: float = Field(default=3.0, gt=0)
    # Period of the stale scan (bounds how late past the timeout a dead amphora is seen).
    health_check_interval: float = Field(default=0.25, gt=0)
    # Stale amphorae at once that stop all failovers (0: no breaker).
    failover_threshold: int = Field(default=0, ge=0)
    # Extra time a booted amphora gets for its first heartbeat before it counts as silent.
    stale_grace: float = Field(default=10.0, ge=0)
    # Period of the batched last-seen and stats writes.
    flush_interval: float = Field(default=0.25, gt=0)
    # How often cached amphora records and LB states are checked against the store.
    refresh_interval: float = Field(default=1.0, gt=0)
    max_datagram: int = Field(default=MAX_DATAGRAM, gt=64)
    # Kernel receive buffer of the UDP socket (bytes): absorbs bursts between loop turns.
    udp_receive_buffer: int = Field(default=4 * 1024 * 1024, ge=0)
    # Load balancers whose operating statuses are recorded concurrently.
    status_writers: int = Field(default=4, ge=1)
