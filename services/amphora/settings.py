"""Settings of the amphora agent, read from `FULCRUM_AMPHORA_*` environment variables."""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from libs.common.logsetup import LogLevel
from services.amphora.adapters.nftables import default_nft_binary


def default_haproxy_binary() -> Path:
    return Path(shutil.which("haproxy") or "/usr/sbin/haproxy")


def _default_keepalived_binary() -> Path:
    return Path(shutil.which("keepalived") or "/usr/sbin/keepalived")


class AmphoraSettings(BaseSettings):
    """Everything the agent needs; built once in `__main__` and passed down.

    With `bind_port=0` the kernel picks the port, and the agent writes it to `port_file`
    (default `<state_dir>/agent.port`, replaced atomically once the listener accepts).
    """

    model_config = SettingsConfigDict(
        env_prefix="FULCRUM_AMPHORA_", env_nested_delimiter="__", extra="ignore"
    )

    amphora_id: str
    # Threshold of every logger in the agent: DEBUG, INFO, WARNING, ERROR or CRITICAL
    # (any case; libs/common/logsetup.py).
    log_level: LogLevel = "INFO"
    lb_id: str
    bind_host: str = "127.0.0.1"
    bind_port: int = Field(default=9443, ge=0, le=65535)
    port_file: Path | None = None
    state_dir: Path
    haproxy_bin: Path = Field(default_factory=default_haproxy_binary)
    # nftables' CLI, for UDP listeners (services/amphora/adapters/nftables.py).
    nft_bin: Path = Field(default_factory=default_nft_binary)
    ca_cert: Path
    server_cert: Path
    server_key: Path
    # Seconds the agent waits at start for those files to load (the docker driver copies them
    # into the container while the agent boots); 0: they must be there.
    cert_wait: float = Field(default=0.0, ge=0)
    # Bound on starting HAProxy or waiting for a reloaded worker.
    reload_timeout: float = Field(default=10.0, gt=0)
    # Bound on waiting for a disabled server's connections to end before `del server`.
    drain_timeout: float = Field(default=30.0, gt=0)
    # Heartbeats to the health service (services/amphora/heartbeat.py): on when both the key
    # and the endpoints ("host:port", a JSON list in the environment) are set; one without the
    # other is refused at start.
    heartbeat_key: str = ""
    health_endpoints: list[str] = Field(default_factory=list)
    # Seconds between beats (Octavia's default); the health service's default timeout is three.
    heartbeat_interval: float = Field(default=1.0, gt=0)

    # --- VIP interface and VRRP (services/amphora/adapters/{vip,keepalived}.py) ---
    # The interface that carries the VIPs (set by drivers whose amphorae own one, e.g. netns's
    # "eth0"); None: VIPs need no plumbing here, and the VRRP/VIP endpoints answer 409.
    vip_interface: str | None = None
    keepalived_bin: Path = Field(default_factory=_default_keepalived_binary)
    # Bound on waiting for a started keepalived to report its first state.
    vrrp_settle_timeout: float = Field(default=5.0, ge=0)
    # A network namespace (/run/netns/<name>) the agent enters before anything else (the netns
    # driver's amphorae; services/amphora/adapters/netns.py). None: stay where started.
    netns: str | None = None
    # --- end of the VRRP block ---

    @property
    def effective_port_file(self) -> Path:
        return self.port_file or self.state_dir / "agent.port"
