"""Shared settings models; each service composes them into its own ``BaseSettings``.

Build settings once in ``__main__`` and pass them down: no globals, no stray ``os.environ``.
Secrets every service of a deployment shares are set once, under one deployment-wide name
(``HeartbeatKeySetting``, ``SecretKeysSetting``).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Annotated, Any, Final, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode

HEARTBEAT_KEY_ENV: Final = "FULCRUM_HEARTBEAT_KEY"
SECRET_KEYS_ENV: Final = "FULCRUM_SECRET_KEYS"
DEFAULT_NATS_URL: Final = "nats://127.0.0.1:4222"
# Settings models: each field's docstring is its description (docs/configuration.md).
DOCUMENTED: Final = ConfigDict(use_attribute_docstrings=True)


class HeartbeatKeySetting(BaseModel):
    """Mixin of the settings of services that need the heartbeat key (health, provisioner).

    Read from ``FULCRUM_HEARTBEAT_KEY``; when that is unset, from the service's own
    ``FULCRUM_<SVC>_HEARTBEAT_KEY`` (``validate_by_name`` makes the prefixed field name a
    fallback), so deployments that set the per-service names keep working.
    """

    model_config = ConfigDict(validate_by_name=True, use_attribute_docstrings=True)

    heartbeat_key: str = Field(default="", validation_alias=HEARTBEAT_KEY_ENV)
    """HMAC key of the amphorae's heartbeats: the provisioner hands it to its amphorae, the health
    service checks it. Empty: none (the health service refuses to start).
    """


class SecretKeysSetting(BaseModel):
    """Mixin of the settings of services that need the key manager's sealing keys (api,
    provisioner).

    Read from ``FULCRUM_SECRET_KEYS``; when that is unset, from the service's own
    ``FULCRUM_<SVC>_SECRET_KEYS`` (as for ``HeartbeatKeySetting``).
    """

    model_config = ConfigDict(validate_by_name=True, use_attribute_docstrings=True)

    secret_keys: str = Field(default="", validation_alias=SECRET_KEYS_ENV)
    """Sealing keys of the key manager: URL-safe base64 of 32 bytes each, comma-separated, newest
    first (older ones only decrypt). Empty: no key manager; the API's key manager routes answer
    404 and TLS container references are refused, the provisioner's TERMINATED_HTTPS listeners
    and re-encrypting pools end in ERROR.
    """


class PostgresSettings(BaseModel):
    model_config = DOCUMENTED

    dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    """asyncpg DSN of the event store. For a replicated Postgres (Patroni) list every member and
    ask for the primary:
    postgresql://u:p@h1:5432,h2:5432/fulcrum?target_session_attrs=read-write
    """
    min_pool: int = 1
    """Connections the pool opens at start (the API and the provisioner, unless this is set:
    max_pool). A pooled connection stays open once opened.
    """
    max_pool: int = 10
    """Connections the pool opens at most."""

    def whole_pool_at_start(self) -> PostgresSettings:
        """These settings with ``min_pool`` raised to ``max_pool`` unless ``min_pool`` was set:
        for a service whose bursts would otherwise open connections mid-burst, each paying
        for a new backend and its catalog lookups (~14 ms of Postgres CPU) inside a request."""
        if "min_pool" in self.model_fields_set:
            return self
        return self.model_copy(update={"min_pool": self.max_pool})


class NatsSettings(BaseModel):
    """Where NATS is and how to log in.

    ``servers``: every node's URL (``nats://`` or ``tls://``); from the environment as a JSON
    list or one comma-separated string. ``url`` (one URL, or comma-separated ones) is still
    accepted in its place. Credentials, at most one kind: ``user`` + ``password``, ``token``,
    or ``creds_file`` (a ``.creds`` file holding a user JWT and its nkey seed). TLS: a
    ``tls://`` URL or any ``tls_*`` file turns it on; ``tls_ca_file`` verifies the servers
    (system CAs without it), ``tls_cert_file`` + ``tls_key_file`` present a client certificate.
    """

    model_config = ConfigDict(hide_input_in_errors=True, use_attribute_docstrings=True)

    servers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [DEFAULT_NATS_URL], min_length=1
    )
    """Every NATS node's URL (nats:// or tls://), as a JSON list or comma-separated;
    FULCRUM_<SVC>_NATS__URL is accepted in its place.
    """
    user: str = ""
    """NATS user (with password); at most one kind of credentials: user and password, token, or
    creds_file.
    """
    password: str = Field(default="", repr=False)
    """The NATS user's password."""
    token: str = Field(default="", repr=False)
    """NATS authentication token."""
    creds_file: str = ""
    """A NATS .creds file (user JWT and nkey seed)."""
    tls_ca_file: str = ""
    """CA file verifying the NATS servers (turns TLS on; system CAs without it)."""
    tls_cert_file: str = ""
    """Client certificate presented to NATS (PEM; with tls_key_file)."""
    tls_key_file: str = ""
    """Private key of tls_cert_file (PEM)."""
    stream: str = "FULCRUM_EVENTS"
    """Name of the JetStream stream holding the events."""
    duplicate_window: float = 120.0
    """Seconds within which JetStream drops a republished message with the same Nats-Msg-Id."""
    max_deliver: int = 10
    """Deliveries of one message to a consumer before it is dead-lettered."""
    ack_wait: float = 30.0
    """Seconds a consumer has to acknowledge a message before it is redelivered."""
    max_age_days: float = 7.0
    """Days the stream keeps messages."""
    replicas: int = Field(default=1, ge=1, le=5)
    """Copies of the event stream and of every durable consumer: 3 on a 3-node cluster, so losing
    one node loses nothing.
    """

    @model_validator(mode="before")
    @classmethod
    def _url_is_servers(cls, data: Any) -> Any:
        if isinstance(data, dict) and "url" in data:
            data = dict(data)
            url = data.pop("url")
            data.setdefault("servers", url)
        return data

    @field_validator("servers", mode="before")
    @classmethod
    def _split_servers(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lstrip().startswith("["):
            return json.loads(value)
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _one_kind_of_credentials(self) -> Self:
        kinds = [
            k
            for k, given in (
                ("user/password", bool(self.user or self.password)),
                ("token", bool(self.token)),
                ("creds_file", bool(self.creds_file)),
            )
            if given
        ]
        if len(kinds) > 1:
            raise ValueError(f"NATS credentials: give one of {', '.join(kinds)}, not several")
        if bool(self.user) != bool(self.password):
            raise ValueError("NATS credentials: user and password go together")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("NATS TLS: tls_cert_file and tls_key_file go together")
        return self

    @property
    def url(self) -> str:
        """The servers as one comma-separated string (for messages and CLIs)."""
        return ",".join(self.servers)

    @property
    def tls(self) -> bool:
        """True when the connection must use TLS."""
        return bool(self.tls_ca_file or self.tls_cert_file) or any(
            s.startswith("tls://") for s in self.servers
        )


class TelemetrySettings(BaseModel):
    model_config = DOCUMENTED

    exporter: str = Field(default="none", pattern="^(none|console|otlp)$")
    """Where spans go: none (recorded, not exported), console (printed; debugging only) or otlp (to
    OTEL_EXPORTER_OTLP_ENDPOINT). OTEL_TRACES_EXPORTER, when set, wins.
    """


class RelaySettings(BaseModel):
    model_config = DOCUMENTED

    enabled: bool = True
    """Whether this process runs the outbox relay (publishes appended events to NATS; one relay
    holds the lock at a time).
    """
    batch_size: int = 500
    """Outbox rows published per round."""
    poll_interval: float = 2.0
    """Seconds between outbox polls (a safety net beside LISTEN/NOTIFY), and between a standby
    relay's tries of the lock.
    """
    max_backoff: float = 2.0
    """Longest wait in seconds between retries after a failed publish."""
    stuck_after: float = 30.0
    """Seconds the oldest outbox row may wait before /readyz reports the outbox stuck (unless this
    process's relay published within as long: it is draining a backlog).
    """


class SubnetConfig(BaseModel):
    """An operator-defined subnet whose allocation pool hands out VIP addresses.

    IPv4 or IPv6 (e.g. a /64 of the ULA range fd00::/8): the gateway and both ends of the
    allocation pool lie in ``cidr``. Subnets of one network (``network_id``) are the ones a
    load balancer's ``additional_vips`` may combine, typically one of each family.
    """

    id: str
    name: str
    network_id: str
    network_name: str
    cidr: str
    gateway_ip: str | None = None
    allocation_start: str
    allocation_end: str
    project_id: str = ""

    @model_validator(mode="after")
    def _addresses_in_the_subnet(self) -> SubnetConfig:
        network = ipaddress.ip_network(self.cidr, strict=False)
        start = ipaddress.ip_address(self.allocation_start)
        end = ipaddress.ip_address(self.allocation_end)
        for address in (start, end):
            if address.version != network.version or address not in network:
                raise ValueError(f"allocation pool address {address} is not in {network}")
        if int(start) > int(end):
            raise ValueError(f"allocation pool {start}-{end} is empty")
        if self.gateway_ip is not None:
            gateway = ipaddress.ip_address(self.gateway_ip)
            if gateway.version != network.version or gateway not in network:
                raise ValueError(f"gateway {gateway} is not in {network}")
        return self

    @property
    def ip_version(self) -> int:
        return ipaddress.ip_network(self.cidr, strict=False).version


def default_subnets() -> list[SubnetConfig]:
    """The embedded default: VIPs on loopback (127.77.0.0/16), usable by the process driver."""
    return [
        SubnetConfig(
            id="6a3b9c3e-5f2d-4c1a-9b7e-1f0d2c3b4a51",
            name="public-subnet",
            network_id="0c9a4e2b-8d7f-4f6e-a1b2-3c4d5e6f7a81",
            network_name="public",
            cidr="127.77.0.0/16",
            gateway_ip=None,
            allocation_start="127.77.0.10",
            allocation_end="127.77.255.250",
        )
    ]


class NetworkSettings(BaseModel):
    model_config = DOCUMENTED

    subnets: list[SubnetConfig] = Field(default_factory=default_subnets)
    """The subnets VIPs are allocated from (JSON list of objects: id, name, network_id,
    network_name, cidr, gateway_ip, allocation_start, allocation_end, project_id).
    """
