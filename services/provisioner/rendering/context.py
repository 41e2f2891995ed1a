"""What the amphora, not the load balancer's state, decides about its HAProxy configuration:
socket and file paths, the connection ceiling its fd limit allows, peers and helper commands."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DEFAULT_CONNECTION_LIMIT",
    "DEFAULT_USER_LOG_FORMAT",
    "ListenerTlsFiles",
    "LogOffload",
    "LogTarget",
    "Peer",
    "PoolTlsFiles",
    "RenderContext",
    "maxconn_cap_for_fd_limit",
]

# Octavia's `default_connection_limit`: what a listener with connection_limit -1 gets.
DEFAULT_CONNECTION_LIMIT: Final = 50000
# Sockets HAProxy needs beside two per proxied connection: listeners, health checks, peers,
# the stats socket, resolvers, log targets.
_FD_RESERVE_MAX: Final = 1000
PEER_NAME_PATTERN: Final = r"^[A-Za-z0-9_.-]{1,64}$"
# Octavia's `[haproxy_amphora] user_log_format`: the tenant's access log line.
DEFAULT_USER_LOG_FORMAT: Final = (
    "{{ project_id }} {{ lb_id }} %f %ci %cp %t %{+Q}r %ST %B %U %[ssl_c_verify] "
    "%{+Q}[ssl_c_s_dn] %b %s %Tt %tsc"
)


def maxconn_cap_for_fd_limit(fd_limit: int) -> int:
    """The largest global `maxconn` HAProxy can honour under ``fd_limit`` open files.

    Pass the *hard* RLIMIT_NOFILE of the process that runs HAProxy: HAProxy raises its soft
    limit up to it by itself, and refuses to start when maxconn needs more (each proxied
    connection holds a client and a server socket).
    """
    reserve = min(_FD_RESERVE_MAX, fd_limit // 10)
    return max(1, (fd_limit - reserve) // 2)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Peer(_Frozen):
    """One HAProxy of an ACTIVE_STANDBY pair, for stick-table synchronisation."""

    name: str = Field(pattern=PEER_NAME_PATTERN)
    address: str
    port: int = Field(ge=1, le=65535)


class ListenerTlsFiles(_Frozen):
    """Files the amphora wrote for a TERMINATED_HTTPS listener.

    ``crt_list`` lists the default certificate first, then the SNI ones (PEM with key).
    """

    crt_list: str
    client_ca: str | None = None
    client_crl: str | None = None


class PoolTlsFiles(_Frozen):
    """Files the amphora wrote for a pool that re-encrypts to its members."""

    client_cert: str | None = None
    ca: str | None = None
    crl: str | None = None


class LogTarget(_Frozen):
    """A syslog receiver HAProxy sends to over UDP."""

    host: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,253}$")
    port: int = Field(ge=1, le=65535)

    @classmethod
    def parse(cls, text: str) -> LogTarget:
        """``host:port`` or ``[v6 address]:port``; ValueError otherwise."""
        host, sep, port = text.strip().rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"log target {text!r} is not host:port")
        return cls(host=host.removeprefix("[").removesuffix("]"), port=int(port))

    @property
    def address(self) -> str:
        """The target as HAProxy's `log` directive takes it."""
        return f"udp6@[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class LogOffload(_Frozen):
    """Octavia's log offloading: HAProxy's logs sent from the amphora by syslog (UDP).

    ``tenant_targets`` receive everything on facility local0 (Octavia's user_log_facility):
    one access-log line per connection in ``user_log_format`` (``{{ project_id }}`` and
    ``{{ lb_id }}`` filled in, HTTP-only fields `-` on TCP listeners) and HAProxy's notices.
    ``admin_targets`` receive notices and worse (servers up/down, reloads) on local1.
    ``connection_logging`` false renders `no log`: no access log, as Octavia's option.
    Without any target nothing about logs is rendered.
    """

    tenant_targets: tuple[LogTarget, ...] = ()
    admin_targets: tuple[LogTarget, ...] = ()
    connection_logging: bool = True
    user_log_format: str = Field(default=DEFAULT_USER_LOG_FORMAT, min_length=1)

    @property
    def enabled(self) -> bool:
        return bool(self.tenant_targets or self.admin_targets)


class RenderContext(_Frozen):
    """Amphora-side inputs of ``render_haproxy``; the LB state supplies everything else.

    ``stats_socket`` becomes the worker's `level admin` runtime socket, ``state_dir`` holds
    the server-state file (``<state_dir>/servers-state``, which the agent refreshes with
    `show servers state` before each reload). ``bind_address`` replaces the VIPs (tests).
    ``peers``/``local_peer`` enable stick-table sync; ``external_check_command`` is run by
    PING health monitors. ``listener_tls``/``pool_tls`` are keyed by listener / pool id.
    ``logs``: where HAProxy's logs go (none by default). ``threads``: HAProxy's `nbthread`
    (None: HAProxy's default, one per CPU it may run on).
    """

    stats_socket: str
    state_dir: str
    maxconn_cap: int = Field(ge=1)
    bind_address: str | None = None
    peers: tuple[Peer, ...] = ()
    local_peer: str | None = None
    external_check_command: str | None = None
    hard_stop_after_s: int = Field(default=30, ge=1)
    threads: int | None = Field(default=None, ge=1, le=64)
    default_connection_limit: int = Field(default=DEFAULT_CONNECTION_LIMIT, ge=1)
    stick_table_size: str = Field(default="10k", pattern=r"^[0-9]+[kmg]?$")
    listener_tls: Mapping[str, ListenerTlsFiles] = Field(default_factory=dict)
    pool_tls: Mapping[str, PoolTlsFiles] = Field(default_factory=dict)
    logs: LogOffload = Field(default_factory=LogOffload)

    @model_validator(mode="after")
    def _local_peer_is_a_peer(self) -> RenderContext:
        names = [peer.name for peer in self.peers]
        if len(set(names)) != len(names):
            raise ValueError("peer names must be unique")
        if self.peers and self.local_peer not in names:
            raise ValueError("local_peer must name one of peers")
        if not self.peers and self.local_peer is not None:
            raise ValueError("local_peer needs peers")
        return self

    @property
    def server_state_file(self) -> str:
        return f"{self.state_dir.rstrip('/')}/servers-state"
