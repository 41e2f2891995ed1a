"""Settings of the provisioner, read from ``FULCRUM_PROVISIONER_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from libs.common.settings import (
    NatsSettings,
    PostgresSettings,
    RelaySettings,
    TelemetrySettings,
)


class DockerNetworkSettings(BaseModel):
    """A docker network the docker driver attaches amphorae to (created when missing).

    Every subnet must lie in 198.18.0.0/15 on the machines of this project. ``ip_range`` is
    where docker picks dynamic addresses; keep the VIPs the API hands out outside it.
    """

    name: str
    subnet: str
    gateway: str | None = None
    ip_range: str | None = None


class DockerDriverSettings(BaseModel):
    """The ``docker`` driver: amphorae are containers of ``image`` on one engine."""

    # DOCKER_HOST of the engine; None: the environment's DOCKER_HOST or the default socket.
    host: str | None = None
    image: str = "fulcrum/amphora:latest"
    # Label value separating deployments that share an engine (list() sees only its own).
    deployment: str = "fulcrum"
    agent_port: int = 9443
    # The agent is reached on its address in this network: the provisioner must be attached
    # to it (compose) or run on the engine's host (its bridges are routed there).
    mgmt_network: DockerNetworkSettings = Field(
        default_factory=lambda: DockerNetworkSettings(
            name="fulcrum-lb-mgmt", subnet="198.18.65.0/24", gateway="198.18.65.1"
        )
    )
    # VIP networks: a VIP belongs to the network whose subnet contains it.
    vip_networks: list[DockerNetworkSettings] = Field(
        default_factory=lambda: [
            DockerNetworkSettings(
                name="fulcrum-vip",
                subnet="198.18.64.0/24",
                gateway="198.18.64.1",
                ip_range="198.18.64.128/25",
            )
        ]
    )
    # Bound on one engine API call (image pulls are never done).
    api_timeout: float = 60.0


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
    # The docker driver's engine, image and networks (FULCRUM_PROVISIONER_DOCKER__*).
    docker: DockerDriverSettings = Field(default_factory=DockerDriverSettings)
