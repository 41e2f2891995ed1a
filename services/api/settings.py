"""Settings of the API, read from ``FULCRUM_API_*`` environment variables.

Nested models use ``__``: ``FULCRUM_API_POSTGRES__DSN``, ``FULCRUM_API_QUOTA__LOADBALANCER``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from libs.common.domain.model import Topology
from libs.common.logsetup import LogLevel
from libs.common.settings import (
    NatsSettings,
    NetworkSettings,
    PostgresSettings,
    RelaySettings,
    SecretKeysSetting,
    TelemetrySettings,
)

# The project that owns resources when no identity names one (noauth mode).
DEFAULT_PROJECT_ID = "5f2a9c1e3b4d4e6f8a7b9c0d1e2f3a4b"

_QUOTA_LIMIT = Field(default=-1, ge=-1, le=2_000_000_000)


class QuotaDefaults(BaseModel):
    """Per-project limits when a project has no stored quota; -1 means unlimited."""

    loadbalancer: int = _QUOTA_LIMIT
    listener: int = _QUOTA_LIMIT
    pool: int = _QUOTA_LIMIT
    member: int = _QUOTA_LIMIT
    healthmonitor: int = _QUOTA_LIMIT
    l7policy: int = _QUOTA_LIMIT
    l7rule: int = _QUOTA_LIMIT


class ApiSettings(SecretKeysSetting, BaseSettings):
    """Built once in ``__main__`` and passed down."""

    model_config = SettingsConfigDict(
        env_prefix="FULCRUM_API_", env_nested_delimiter="__", extra="ignore"
    )

    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    relay: RelaySettings = Field(default_factory=RelaySettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    network: NetworkSettings = Field(default_factory=NetworkSettings)
    host: str = "127.0.0.1"
    port: int = 9876
    # HTTPS on the tenant-facing port: the operator's certificate chain and key (PEM files).
    # Both empty: plain HTTP.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Operator endpoints (/healthz, /readyz, /metrics) on a listener of their own, plain HTTP
    # at operator_host:operator_port, and not on the tenant-facing port
    # (services/api/http/operator.py). 0: on the tenant-facing port too.
    operator_host: str = "127.0.0.1"
    operator_port: int = Field(default=0, ge=0, le=65535)
    # Threshold of every logger in this process: DEBUG, INFO, WARNING, ERROR or CRITICAL
    # (any case; libs/common/logsetup.py). The access log is at INFO.
    log_level: LogLevel = "INFO"
    # How a request's project and roles are found (services/api/http/context.py): "keystone"
    # (tokens from our Keystone subset, or admin_token), "admin_token" (only the static token),
    # "noauth" (development: X-Project-Id or the default project; always admin) or "testing"
    # (X-Project-Id and X-Roles headers, policy enforced).
    auth_strategy: str = Field(
        default="keystone", pattern="^(keystone|admin_token|noauth|testing)$"
    )
    # Identity (keystone): users, projects and role grants; created with a bootstrap admin
    # (password admin_password) when missing.
    identity_file: Path = Path(".state/identity.yaml")
    admin_password: str = Field(default="", repr=False)
    # Fernet keys of the tokens (services/api/auth/tokens.py), comma-separated, newest first:
    # the first encrypts, all decrypt. Rotate by putting a new key in front (tokens under the
    # old one stay valid until they expire); a key removed from the list invalidates its
    # tokens. Every replica needs the same list.
    token_keys: str = Field(default="", repr=False)
    token_lifetime_hours: float = Field(default=12.0, gt=0)
    # Brute-force guard of password authentication: failures allowed per user and per source
    # address within login_failure_window seconds, then 429 with Retry-After.
    login_failures_per_user: int = Field(default=5, ge=1)
    login_failures_per_address: int = Field(default=20, ge=1)
    login_failure_window: float = Field(default=300.0, gt=0)
    # A static operator token (the CLI's --os-auth-type admin_token); empty = none.
    admin_token: str = ""
    region: str = "RegionOne"
    default_project_id: str = Field(default=DEFAULT_PROJECT_ID, pattern=r"^[0-9a-f]{32}$")
    pagination_max_limit: int = Field(default=1000, ge=1)
    quota: QuotaDefaults = Field(default_factory=QuotaDefaults)
    # Base of the links this API writes (version document, pagination); empty = the request's.
    public_url: str = ""
    provider: str = "amphora"
    # The provisioner's amphora driver (process, netns or docker): what it cannot honour (the
    # process driver: ACTIVE_STANDBY, VIP security groups) is refused here, before anything
    # is written. Empty: not told; everything is accepted.
    amphora_driver: str = Field(default="", pattern="^(|process|netns|docker)$")
    # Whether the provisioner's amphora driver serves UDP listeners (nftables in the amphora's
    # own network namespace: the netns and docker drivers, run as root). False (the process
    # driver): UDP listeners and pools are refused with 501 after every other check.
    udp_dataplane: bool = False
    loadbalancer_topology: Topology = Topology.SINGLE
    # Member addresses no tenant may use (Octavia's [networking] reserved_ips).
    reserved_ips: list[str] = Field(default_factory=lambda: ["169.254.169.254"])
    # Access log lines per request (aiohttp's access logger at INFO).
    access_log: bool = True
