"""Settings of the housekeeping service, read from ``FULCRUM_HOUSEKEEPING_*`` variables.

One nested model per job, each with its ``enabled`` switch and ``interval`` (seconds), e.g.
``FULCRUM_HOUSEKEEPING_SPARES__POOL_SIZE=2`` or ``FULCRUM_HOUSEKEEPING_PURGE__ENABLED=false``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from libs.common.logsetup import LogLevel
from libs.common.settings import (
    NatsSettings,
    PostgresSettings,
    RelaySettings,
    TelemetrySettings,
)

DAY = 86400.0


class JobSettings(BaseModel):
    """What every job has: its switch and its period (seconds)."""

    enabled: bool = True
    interval: float = Field(default=60.0, gt=0)


class SparesJob(JobSettings):
    """Keep ``pool_size`` spare amphorae (SINGLE LBs claim them at create)."""

    interval: float = Field(default=5.0, gt=0)
    pool_size: int = Field(default=0, ge=0)
    # A spare requested this long ago and still not booted is retired and replaced.
    boot_timeout: float = Field(default=120.0, gt=0)
    # A READY spare heard from once and silent this long is failed and replaced (0: never;
    # the health service fails over silent amphorae that serve an LB, not spares).
    heartbeat_timeout: float = Field(default=30.0, ge=0)


class StrandedJob(JobSettings):
    """Re-drive LBs whose PENDING_* outlived ``after`` s; ERROR after ``redrives`` re-drives."""

    interval: float = Field(default=10.0, gt=0)
    after: float = Field(default=60.0, gt=0)
    redrives: int = Field(default=3, ge=0)


class OrphansJob(JobSettings):
    """Ask the provisioner to reconcile its driver with the store."""

    # A running amphora nobody owns is deleted once unowned this long (work in flight is
    # protected by locks as well; this also covers an amphora booted but not yet recorded).
    grace: float = Field(default=30.0, ge=0)


class PurgeJob(JobSettings):
    """Remove read-model and bookkeeping rows past their retention (events stay).

    Tokens are stateless signed tokens: there is nothing of theirs to purge.
    """

    interval: float = Field(default=3600.0, gt=0)
    loadbalancer_retention: float = Field(default=7 * DAY, ge=0)
    amphora_retention: float = Field(default=7 * DAY, ge=0)
    dead_letter_retention: float = Field(default=14 * DAY, ge=0)
    # Consumers dedupe redeliveries and replays with these rows: keep them longer than the
    # stream keeps messages (NatsSettings.max_age_days), far beyond the duplicate window.
    processed_message_retention: float = Field(default=8 * DAY, gt=0)


class CertificatesJob(JobSettings):
    """Rotate amphora server certificates expiring within ``expiry_buffer`` s."""

    interval: float = Field(default=3600.0, gt=0)
    expiry_buffer: float = Field(default=14 * DAY, gt=0)
    # An unanswered request is repeated after this long.
    retry_after: float = Field(default=600.0, gt=0)
    # The deployment CA's certificate (the provisioner's ca_dir/ca.pem), whose expiry is
    # reported (/metrics ca_expires_in_seconds, and a warning within ca_warning s).
    ca_cert: Path | None = Path(".state/ca/ca.pem")
    ca_warning: float = Field(default=180 * DAY, ge=0)


class HousekeepingSettings(BaseSettings):
    """Built once in ``__main__`` and passed down."""

    model_config = SettingsConfigDict(
        env_prefix="FULCRUM_HOUSEKEEPING_", env_nested_delimiter="__", extra="ignore"
    )

    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    relay: RelaySettings = Field(default_factory=RelaySettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    # HTTP: /healthz, /readyz and /metrics.
    host: str = "127.0.0.1"
    port: int = Field(default=9879, ge=0, le=65535)
    # Threshold of every logger in this process: DEBUG, INFO, WARNING, ERROR or CRITICAL
    # (any case; libs/common/logsetup.py).
    log_level: LogLevel = "INFO"
    spares: SparesJob = Field(default_factory=SparesJob)
    stranded: StrandedJob = Field(default_factory=StrandedJob)
    orphans: OrphansJob = Field(default_factory=OrphansJob)
    purge: PurgeJob = Field(default_factory=PurgeJob)
    certificates: CertificatesJob = Field(default_factory=CertificatesJob)

    @model_validator(mode="after")
    def _dedup_outlives_the_stream(self) -> HousekeepingSettings:
        kept = self.nats.max_age_days * DAY
        if self.purge.processed_message_retention <= kept:
            raise ValueError(
                f"purge.processed_message_retention ({self.purge.processed_message_retention:.0f}"
                f" s) must exceed the stream's max age ({kept:.0f} s): a replayed event could "
                "otherwise be acted on twice"
            )
        return self
