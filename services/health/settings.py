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
from services.health.domain.autoscale import ScalingPolicy


class HealthSettings(HeartbeatKeySetting, BaseSettings):
    """Built once in ``__main__`` and passed down. ``heartbeat_key`` (FULCRUM_HEARTBEAT_KEY)
    must be set: a health service that cannot authenticate heartbeats refuses to start
    (``app.check_settings``)."""

    model_config = SettingsConfigDict(
        env_prefix="FULCRUM_HEALTH_",
        env_nested_delimiter="__",
        extra="ignore",
        use_attribute_docstrings=True,
    )

    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    relay: RelaySettings = Field(default_factory=RelaySettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    host: str = "127.0.0.1"
    """Address of the probe endpoints (/healthz, /readyz, /metrics)."""
    port: int = Field(default=9878, ge=0, le=65535)
    """Port of the probe endpoints."""
    log_level: LogLevel = "INFO"
    """Threshold of every logger in this process: DEBUG, INFO, WARNING, ERROR or CRITICAL, in any
    case.
    """
    udp_host: str = "127.0.0.1"
    """Address heartbeats arrive on (UDP)."""
    udp_port: int = Field(default=5555, ge=0, le=65535)
    """Port heartbeats arrive on (0: any free port)."""
    heartbeat_timeout: float = Field(default=3.0, gt=0)
    """Seconds an ALLOCATED amphora may stay silent before it is failed over (three missed beats at
    the agents' default 1 s interval). A SINGLE load balancer's outage is this, less the time
    since the last beat, plus the scan period and a rebuild: up to ~3.5 s by default.
    """
    health_check_interval: float = Field(default=0.25, gt=0)
    """Seconds between scans for silent amphorae (bounds how late past the timeout a dead amphora
    is seen).
    """
    failover_threshold: int = Field(default=0, ge=0)
    """Silent amphorae at once that stop all failovers (a circuit breaker; 0: none)."""
    stale_grace: float = Field(default=10.0, ge=0)
    """Extra seconds a booted amphora gets for its first heartbeat before it counts as silent."""
    flush_interval: float = Field(default=0.25, gt=0)
    """Seconds between the batched writes of last-seen times and traffic statistics."""
    refresh_interval: float = Field(default=1.0, gt=0)
    """Seconds between checks of cached amphora records and load balancer states against the store.
    """
    max_datagram: int = Field(default=MAX_DATAGRAM, gt=64)
    """Largest heartbeat datagram accepted (bytes)."""
    udp_receive_buffer: int = Field(default=4 * 1024 * 1024, ge=0)
    """Kernel receive buffer of the UDP socket (bytes): absorbs bursts between loop turns."""
    receive_gather: float = Field(default=0.05, ge=0)
    """Seconds heartbeats gather in the UDP socket's buffer once one is ready, before they are
    read in one batch (0: each as soon as it is ready). The service then wakes once per batch
    instead of once per datagram, whatever the fleet's size; a heartbeat is handled up to this
    late. Must be shorter than health_check_interval, and the receive buffer must hold what
    arrives meanwhile.
    """
    status_writers: int = Field(default=4, ge=1)
    """Load balancers whose operating statuses are recorded concurrently."""
    autoscale: ScalingPolicy = Field(default_factory=ScalingPolicy)
    """When ACTIVE_ACTIVE load balancers scale out and in (thresholds per amphora)."""
