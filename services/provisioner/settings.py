"""Settings of the provisioner, read from ``FULCRUM_PROVISIONER_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from libs.common.settings import (
    NatsSettings,
    PostgresSettings,
    RelaySettings,
    TelemetrySettings,
)


class ProvisionerSettings(BaseSettings):
    """Built once in ``__main__`` and passed down."""

    model_config = SettingsConfigDict(
        env_prefix="FULCRUM_PROVISIONER_", env_nested_delimiter="__", extra="ignore"
    )

    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    relay: RelaySettings = Field(default_factory=RelaySettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    host: str = "127.0.0.1"
    port: int = 9877
    driver: str = Field(default="process", pattern="^(process|netns|docker)$")
    # Where amphora processes keep their files (process driver) and where the CA lives.
    state_dir: Path = Path(".state/amphorae")
    ca_dir: Path = Path(".state/ca")
    # Heartbeats: the amphorae send to these health endpoints with this key.
    heartbeat_key: str = ""
    health_endpoints: list[str] = Field(default_factory=list)
    heartbeat_interval: float = 1.0
    # How long a freshly started amphora may take before its agent answers.
    boot_timeout: float = 20.0
    # Consumer parallelism across load balancers (one LB's events are always in order).
    concurrency: int = 8
    # Ready amphorae kept booted so that a new LB skips the boot (0 = none).
    spare_pool_size: int = Field(default=0, ge=0)
    spare_refill_interval: float = 1.0
    # Amphora server certificates' validity.
    cert_validity_days: int = 30
