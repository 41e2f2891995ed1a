"""Settings of the amphora agent, read from `FULCRUM_AMPHORA_*` environment variables."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Final

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from libs.common.logsetup import LogLevel
from services.amphora.adapters.nftables import default_nft_binary

# The agent's name in its logs and traces.
SERVICE_NAME: Final = "amphora"


def default_haproxy_binary() -> Path:
    """haproxy on PATH, else /usr/sbin/haproxy."""
    return Path(shutil.which("haproxy") or "/usr/sbin/haproxy")


def _default_keepalived_binary() -> Path:
    """keepalived on PATH, else /usr/sbin/keepalived."""
    return Path(shutil.which("keepalived") or "/usr/sbin/keepalived")


class AmphoraSettings(BaseSettings):
    """Everything the agent needs; built once in `__main__` and passed down.

    With `bind_port=0` the kernel picks the port, and the agent writes it to `port_file`
    (default `<state_dir>/agent.port`, replaced atomically once the listener accepts).
    """

    model_config = SettingsConfigDict(
        env_prefix="FULCRUM_AMPHORA_",
        env_nested_delimiter="__",
        extra="ignore",
        use_attribute_docstrings=True,
    )

    amphora_id: str
    """The amphora this agent serves."""
    log_level: LogLevel = "INFO"
    """Threshold of every logger in the agent: DEBUG, INFO, WARNING, ERROR or CRITICAL, in any
    case.
    """
    lb_id: str
    """The load balancer the amphora serves."""
    bind_host: str = "127.0.0.1"
    """Address of the agent's HTTPS API."""
    bind_port: int = Field(default=9443, ge=0, le=65535)
    """Port of the agent's HTTPS API (0: any free port, written to port_file)."""
    port_file: Path | None = None
    """Where the agent writes its port once it accepts (null: <state_dir>/agent.port)."""
    state_dir: Path
    """The amphora's files: HAProxy configuration, sockets, pid and lock."""
    haproxy_bin: Path = Field(default_factory=default_haproxy_binary)
    """The HAProxy binary."""
    nft_bin: Path = Field(default_factory=default_nft_binary)
    """nftables' CLI, for UDP listeners and security groups."""
    ca_cert: Path
    """CA certificate that verifies the provisioner's client certificate."""
    server_cert: Path
    """The agent's server certificate (PEM)."""
    server_key: Path
    """Its private key (PEM)."""
    cert_wait: float = Field(default=0.0, ge=0)
    """Seconds the agent waits at start for its certificate files to appear (the docker driver
    copies them in while the agent boots); 0: they must be there.
    """
    reload_timeout: float = Field(default=10.0, gt=0)
    """Seconds starting HAProxy or waiting for a reloaded worker may take."""
    drain_timeout: float = Field(default=30.0, gt=0)
    """Seconds a disabled server's connections may take to end before it is removed."""
    heartbeat_key: str = ""
    """HMAC key of the heartbeats; with health_endpoints it turns heartbeats on (one without the
    other refuses the start).
    """
    health_endpoints: list[str] = Field(default_factory=list)
    """Health service addresses (host:port, JSON list) heartbeats go to."""
    heartbeat_interval: float = Field(default=1.0, gt=0)
    """Seconds between heartbeats (the health service's default timeout is three)."""

    vip_interface: str | None = None
    """The interface that carries the VIPs (netns: eth0); null: VIPs need no plumbing here and the
    VRRP/VIP endpoints answer 409.
    """
    keepalived_bin: Path = Field(default_factory=_default_keepalived_binary)
    """The keepalived binary (ACTIVE_STANDBY)."""
    vrrp_settle_timeout: float = Field(default=5.0, ge=0)
    """Seconds a started keepalived may take to report its first state."""
    netns: str | None = None
    """A network namespace (/run/netns/<name>) the agent enters before anything else; null: stay
    where started.
    """
    # --- end of the VRRP block ---

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment: the only sources an agent has (no ``env_file``,
        no ``secrets_dir``). Listed alone, since pydantic-settings walks every field again for
        each source, even an empty one: half of the settings work of an agent's start."""
        return init_settings, env_settings

    @property
    def effective_port_file(self) -> Path:
        return self.port_file or self.state_dir / "agent.port"
