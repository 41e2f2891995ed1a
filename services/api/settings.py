"""Settings of the API, read from ``FULCRUM_API_*`` environment variables.

Nested models use ``__``: ``FULCRUM_API_POSTGRES__DSN``, ``FULCRUM_API_QUOTA__LOADBALANCER``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, IPvAnyNetwork
from pydantic_settings import BaseSettings, SettingsConfigDict

from libs.common.domain.model import Topology
from libs.common.logsetup import LogLevel
from libs.common.settings import (
    DOCUMENTED,
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

    model_config = DOCUMENTED

    loadbalancer: int = _QUOTA_LIMIT
    """Load balancers a project may have when it has no stored quota (-1: unlimited)."""
    listener: int = _QUOTA_LIMIT
    """Listeners a project may have when it has no stored quota (-1: unlimited)."""
    pool: int = _QUOTA_LIMIT
    """Pools a project may have when it has no stored quota (-1: unlimited)."""
    member: int = _QUOTA_LIMIT
    """Members a project may have when it has no stored quota (-1: unlimited)."""
    healthmonitor: int = _QUOTA_LIMIT
    """Health monitors a project may have when it has no stored quota (-1: unlimited)."""
    l7policy: int = _QUOTA_LIMIT
    """L7 policies a project may have when it has no stored quota (-1: unlimited)."""
    l7rule: int = _QUOTA_LIMIT
    """L7 rules a project may have when it has no stored quota (-1: unlimited)."""


class EventFeedSettings(BaseModel):
    """The live event feed (``GET /v2/fulcrum/events``): how often an open feed reads the
    event store, how many events a read takes at most, the longest silence before a
    ``: keepalive`` comment, and how many feeds one project may hold open at once."""

    model_config = DOCUMENTED

    poll_interval: float = Field(default=0.5, gt=0, le=10)
    """Seconds between an open feed's reads of the event store."""
    page_size: int = Field(default=200, ge=1, le=10_000)
    """Most events one read of the event store takes."""
    keepalive_seconds: float = Field(default=15.0, gt=0, le=15)
    """Longest silence before a ``: keepalive`` comment."""
    max_per_project: int = Field(default=5, ge=1)
    """Feeds one project may hold open at once (more: 429)."""


class ApiSettings(SecretKeysSetting, BaseSettings):
    """Built once in ``__main__`` and passed down."""

    model_config = SettingsConfigDict(
        env_prefix="FULCRUM_API_",
        env_nested_delimiter="__",
        extra="ignore",
        use_attribute_docstrings=True,
    )

    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    relay: RelaySettings = Field(default_factory=RelaySettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    network: NetworkSettings = Field(default_factory=NetworkSettings)
    host: str = "127.0.0.1"
    """Address the API listens on."""
    port: int = 9876
    """Port the API listens on."""
    tls_cert_file: str = ""
    """HTTPS on the tenant-facing port: the operator's certificate chain (PEM file); empty, with
    tls_key_file empty: plain HTTP."""
    tls_key_file: str = ""
    """The private key of tls_cert_file (PEM file)."""
    operator_host: str = "127.0.0.1"
    """Address of the operator listener (/healthz, /readyz, /metrics; plain HTTP)."""
    operator_port: int = Field(default=0, ge=0, le=65535)
    """Port of the operator listener; the operator endpoints are then not on the tenant-facing
    port. 0: no operator listener, they are on the tenant-facing port."""
    log_level: LogLevel = "INFO"
    """Threshold of every logger in this process (the access log is at INFO): DEBUG, INFO, WARNING,
    ERROR or CRITICAL, in any case.
    """
    auth_strategy: str = Field(
        default="keystone", pattern="^(keystone|admin_token|noauth|testing)$"
    )
    """How a request's project and roles are found: keystone (tokens of the Keystone subset, or
    admin_token), admin_token (only the static token), noauth (development: X-Project-Id or the
    default project; always admin) or testing (X-Project-Id and X-Roles headers, policy
    enforced).
    """
    identity_file: Path = Path(".state/identity.yaml")
    """The Keystone subset's users, projects and role grants (YAML); created with a bootstrap admin
    when missing.
    """
    admin_password: str = Field(default="", repr=False)
    """Password of the bootstrap admin of a new identity_file (keystone: required while the
    file does not exist).
    """
    token_keys: str = Field(default="", repr=False)
    """Fernet keys of the tokens, comma-separated, newest first: the first encrypts, all decrypt.
    Rotate by putting a new key in front (tokens under the old one stay valid until they expire);
    a key removed from the list invalidates its tokens. Every replica needs the same list.
    """
    token_lifetime_hours: float = Field(default=12.0, gt=0)
    """Hours a Keystone token is valid."""
    login_failures_per_user: int = Field(default=5, ge=1)
    """Failed password logins allowed per user within login_failure_window, then 429."""
    login_failures_per_address: int = Field(default=20, ge=1)
    """Failed password logins allowed per source address within login_failure_window, then 429."""
    login_failure_window: float = Field(default=300.0, gt=0)
    """Seconds over which failed password logins are counted (in Postgres, by every replica
    together).
    """
    trusted_proxies: list[IPvAnyNetwork] = Field(default=[])
    """Networks of the reverse proxies in front of the API (JSON list of CIDRs, e.g.
    ["127.0.0.1/32"]): a request from one of them comes from the right-most X-Forwarded-For
    entry not in them (the login throttle counts it, the access log writes it); from any other
    peer X-Forwarded-For is ignored. Empty: every request comes from its peer.
    """
    admin_token: str = ""
    """A static operator token (the CLI's --os-auth-type admin_token); empty: none."""
    region: str = "RegionOne"
    """Region named in the Keystone catalog."""
    default_project_id: str = Field(default=DEFAULT_PROJECT_ID, pattern=r"^[0-9a-f]{32}$")
    """The project that owns resources when no identity names one (noauth)."""
    pagination_max_limit: int = Field(default=1000, ge=1)
    """Most items one list page returns."""
    quota: QuotaDefaults = Field(default_factory=QuotaDefaults)
    """Per-project limits when a project has no stored quota."""
    feed: EventFeedSettings = Field(default_factory=EventFeedSettings)
    """The live event feed."""
    public_url: str = ""
    """Base URL of the links this API writes (version document, pagination); empty: the request's.
    """
    provider: str = "amphora"
    """The load balancer provider (Octavia's amphora provider)."""
    amphora_driver: str = Field(default="", pattern="^(|process|netns|docker)$")
    """The provisioner's amphora driver (process, netns or docker): what it cannot honour (the
    process driver: ACTIVE_STANDBY, VIP security groups) is refused here, before anything is
    written. Empty: not told; everything is accepted.
    """
    udp_dataplane: bool = False
    """Whether the amphora driver serves UDP listeners (nftables in the amphora's own network
    namespace: netns and docker drivers, as root). False: UDP listeners and pools are refused
    with 501 after every other check.
    """
    distributor: bool | None = None
    """Whether the amphora driver can spread an ACTIVE_ACTIVE load balancer's VIP over its
    amphorae (a distributor namespace: the netns driver, and the docker driver when its
    provisioner runs as root). False: ACTIVE_ACTIVE flavors are refused with 501 after every
    other check. Unset: as ``amphora_driver`` says.
    """
    loadbalancer_topology: Topology = Topology.SINGLE
    """Topology of load balancers whose flavor does not set one."""
    amphora_ceiling: int = Field(default=8, ge=1, le=64)
    """The most amphorae an ACTIVE_ACTIVE load balancer may have: flavors' ``amphora_max``
    (and ``amphora_min``) above it are refused with 400; the default ``amphora_max``."""
    reserved_ips: list[str] = Field(default_factory=lambda: ["169.254.169.254"])
    """Member addresses no tenant may use (Octavia's [networking] reserved_ips)."""
    access_log: bool = True
    """Whether every request writes an access log line (at INFO)."""
