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
    DOCUMENTED,
    NatsSettings,
    PostgresSettings,
    RelaySettings,
    TelemetrySettings,
)

DAY = 86400.0


class JobSettings(BaseModel):
    """What every job has: its switch and its period (seconds)."""

    model_config = DOCUMENTED

    enabled: bool = True
    """Whether the job runs."""
    interval: float = Field(default=60.0, gt=0)
    """Seconds between runs of the job."""


class SparesJob(JobSettings):
    """Keep ``pool_size`` spare amphorae (SINGLE LBs claim them at create)."""

    interval: float = Field(default=5.0, gt=0)
    """Seconds between runs of the job."""
    pool_size: int = Field(default=0, ge=0)
    """READY spare amphorae to keep (0: none)."""
    boot_timeout: float = Field(default=120.0, gt=0)
    """Seconds a requested spare may take to boot before it is retired and replaced."""
    heartbeat_timeout: float = Field(default=30.0, ge=0)
    """Seconds a READY spare heard from once may stay silent before it is failed and replaced (0:
    never).
    """
    defer: float = Field(default=10.0, ge=0)
    """No spare is asked for while a load balancer created less than this many seconds ago is
    still PENDING_CREATE: creates waiting for an amphora get the CPU first, the pool refills at
    the first run after them (0: ask at once, the boots then run beside the creates).
    """


class StrandedJob(JobSettings):
    """Re-drive LBs whose PENDING_* outlived ``after`` s; ERROR after ``redrives`` re-drives."""

    interval: float = Field(default=10.0, gt=0)
    """Seconds between runs of the job."""
    after: float = Field(default=60.0, gt=0)
    """Seconds a load balancer may stay PENDING_* before it is driven again."""
    redrives: int = Field(default=3, ge=0)
    """Re-drives before a stranded load balancer is set to ERROR."""


class OrphansJob(JobSettings):
    """Ask the provisioner to reconcile its driver with the store."""

    interval: float = Field(default=60.0, gt=0)
    """Seconds between runs of the job (a pass lists the driver's amphorae and reads the
    store's; an orphan goes one pass after ``grace``, within ``grace`` + two intervals). Each
    pass appends a request to the store for good and reads every amphora's files and row, the
    bulk of an idle provisioner's CPU at 10 s; the job is a backstop: health fails an
    ALLOCATED amphora the driver lost within heartbeat_timeout, a claim skips a spare that
    does not run, and a leak costs memory only.
    """
    grace: float = Field(default=30.0, ge=0)
    """Seconds a running amphora nobody owns is left before it is deleted (covers an amphora booted
    but not yet recorded).
    """


class PurgeJob(JobSettings):
    """Remove read-model and bookkeeping rows past their retention (events stay).

    Tokens are stateless signed tokens: there is nothing of theirs to purge.
    """

    interval: float = Field(default=3600.0, gt=0)
    """Seconds between runs of the job."""
    loadbalancer_retention: float = Field(default=7 * DAY, ge=0)
    """Seconds a deleted load balancer's read-model rows are kept."""
    amphora_retention: float = Field(default=7 * DAY, ge=0)
    """Seconds a deleted amphora's read-model rows are kept."""
    dead_letter_retention: float = Field(default=14 * DAY, ge=0)
    """Seconds dead-lettered messages are kept."""
    processed_message_retention: float = Field(default=8 * DAY, gt=0)
    """Seconds the rows consumers dedupe redeliveries with are kept: longer than the stream keeps
    messages (nats.max_age_days), or a replayed event could be acted on twice.
    """


class CertificatesJob(JobSettings):
    """Rotate amphora server certificates expiring within ``expiry_buffer`` s."""

    interval: float = Field(default=3600.0, gt=0)
    """Seconds between runs of the job."""
    expiry_buffer: float = Field(default=14 * DAY, gt=0)
    """Amphora certificates expiring within this many seconds are rotated."""
    retry_after: float = Field(default=600.0, gt=0)
    """Seconds after which an unanswered rotation request is repeated."""
    ca_cert: Path | None = Path(".state/ca/ca.pem")
    """The deployment CA's certificate (the provisioner's ca_dir/ca.pem), whose expiry is reported
    (/metrics ca_expires_in_seconds); null: not watched.
    """
    ca_warning: float = Field(default=180 * DAY, ge=0)
    """Seconds before the CA's expiry from which a warning is logged."""


class HousekeepingSettings(BaseSettings):
    """Built once in ``__main__`` and passed down."""

    model_config = SettingsConfigDict(
        env_prefix="FULCRUM_HOUSEKEEPING_",
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
    port: int = Field(default=9879, ge=0, le=65535)
    """Port of the probe endpoints."""
    log_level: LogLevel = "INFO"
    """Threshold of every logger in this process: DEBUG, INFO, WARNING, ERROR or CRITICAL, in any
    case.
    """
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
