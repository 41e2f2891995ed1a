"""Wire contract of the amphora agent's HTTPS API, shared by the agent and the provisioner, and
the files and environment through which the process driver starts and finds agents.

Pure module (stdlib and pydantic only, no I/O): the agent imports it without pulling in any
control-plane code. The paths and status codes are described in the agent's package docstring.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from enum import StrEnum
from typing import Final, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

API_VERSION: Final = "1"
API_PREFIX: Final = "/v1"
# The content type of the text bodies the control plane pushes (HAProxy configs, PEM bundles,
# rulesets); the others are JSON.
PUSHED_CONTENT_TYPE: Final = "text/plain"

# In an amphora's state dir: the pid of whoever serves it (its agent process, or its agent host),
# written once the agent lock is held; and, in an agent host, the host's control socket's path.
AGENT_PID_FILE: Final = "agent.pid"
AGENT_HOST_FILE: Final = "agent.host"
# The environment that makes ``python -m services.amphora`` an agent host (its own files' dir,
# its control socket, how many amphorae it serves at most).
AGENT_HOST_ENV_PREFIX: Final = "FULCRUM_AGENT_HOST_"
AGENT_HOST_DIRECTORY_ENV: Final = f"{AGENT_HOST_ENV_PREFIX}DIRECTORY"
AGENT_HOST_SOCKET_ENV: Final = f"{AGENT_HOST_ENV_PREFIX}SOCKET"
AGENT_HOST_CAPACITY_ENV: Final = f"{AGENT_HOST_ENV_PREFIX}CAPACITY"
# In an agent host's own dir: present while the host takes no more amphorae (full or closing),
# so that a placement passes it by without asking.
AGENT_HOST_FULL_FILE: Final = "host.full"

# HAProxy proxy and server names; also keeps runtime-API commands free of separators.
NAME_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,127}$"
# Certificate file names under <state>/certs, given in the URL as <name>.pem.
CERT_NAME_PATTERN: Final = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$"
# One token of a `server` line ("check", "inter", "2s", "weight", "10", "cookie", "s1"...).
_OPTION_TOKEN: Final = re.compile(r"^[A-Za-z0-9_.:/%@=+,-]{1,255}$")
_HOSTNAME: Final = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")


class ServerState(StrEnum):
    """Administrative state of a server, as HAProxy's `set server ... state` names it."""

    READY = "ready"
    DRAIN = "drain"
    MAINT = "maint"


class _Input(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Output(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class NewServer(_Input):
    """A server added at runtime: `add server <be>/<srv> <address>:<port> <options...>`."""

    address: str
    port: int = Field(ge=1, le=65535)
    options: list[str] = Field(default_factory=list)

    @field_validator("address")
    @classmethod
    def _address_is_ip_or_hostname(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not _HOSTNAME.fullmatch(value):
                raise ValueError("address must be an IP address or a hostname") from None
        return value

    @field_validator("options")
    @classmethod
    def _options_are_plain_tokens(cls, value: list[str]) -> list[str]:
        for token in value:
            if not _OPTION_TOKEN.fullmatch(token):
                raise ValueError(f"server option token {token!r} has forbidden characters")
        return value

    @property
    def endpoint(self) -> str:
        return (
            f"[{self.address}]:{self.port}"
            if ":" in self.address
            else f"{self.address}:{self.port}"
        )


class ServerChange(_Input):
    """Runtime change of one server; applied in the order add, weight, state.

    `delete` stands alone: the server is disabled, its connections are awaited, then deleted.
    An added server is enabled unless `state` says otherwise.
    """

    weight: int | None = Field(default=None, ge=0, le=256)
    state: ServerState | None = None
    add: NewServer | None = None
    delete: bool = False

    @model_validator(mode="after")
    def _one_coherent_change(self) -> Self:
        others = (self.weight, self.state, self.add)
        if self.delete and any(item is not None for item in others):
            raise ValueError("delete cannot be combined with other changes")
        if not self.delete and all(item is None for item in others):
            raise ValueError("give at least one of weight, state, add, delete")
        return self


class ServerChanged(_Output):
    """Answer to a server change: the runtime-API commands that ran, in order."""

    backend: str
    server: str
    commands: list[str]


class NamedServerChange(ServerChange):
    """A ServerChange of the server ``backend``/``server``, one of a RuntimeChanges."""

    backend: str = Field(pattern=NAME_PATTERN)
    server: str = Field(pattern=NAME_PATTERN)


class RuntimeChanges(_Input):
    """Server changes made in order (each as its own ServerChange would be; a refusal stops
    there, the earlier ones stay made), then ``config`` stored for the next reload, as
    `PUT /v1/haproxy/config?reload=false&check_later=true` stores it: a member change, its
    runtime commands and the file that carries them, in one request."""

    changes: list[NamedServerChange]
    config: str = Field(min_length=1)


class RuntimeChangesApplied(_Output):
    """Answer to RuntimeChanges: each change's commands, and the stored config's sha256."""

    changed: list[ServerChanged]
    sha256: str


class AgentInfo(_Output):
    """GET /v1/info. `stats_socket` is the path every pushed config must declare;
    `external_check_command` is the script PING health monitors run (None: this amphora
    cannot ping, and a config with a PING monitor is refused before it is pushed);
    `has_vip_interface` False means /v1/vrrp has nothing to offer (None: ask it)."""

    amphora_id: str
    lb_id: str
    api_version: str
    haproxy_version: str
    haproxy_running: bool
    config_sha256: str | None
    stats_socket: str
    certs_dir: str
    external_check_command: str | None = None
    has_vip_interface: bool | None = None
    # The UDP configuration in force (PUT /v1/udp/config), None: none pushed.
    udp_config_sha256: str | None = None


class ConfigApplied(_Output):
    sha256: str


class CertificateStored(_Output):
    name: str
    sha256: str
    path: str


class ServerCertificate(_Input):
    """PUT /v1/server-certificate body: a CA-signed certificate and its private key (PEM)."""

    cert_pem: str
    key_pem: str


class ServerCertificateRotated(_Output):
    serial: str
    not_after: datetime


class ErrorBody(_Output):
    """Every non-2xx answer of the agent."""

    error: str
    details: str | None = None


StatsRow = dict[str, str | int | None]


# --- VRRP and VIP plumbing (the amphora's VIP interface; keepalived) -------------------------


class VrrpState(StrEnum):
    """What keepalived last reported for the amphora's VRRP instance (its notify script)."""

    MASTER = "MASTER"
    BACKUP = "BACKUP"
    FAULT = "FAULT"
    # Started, no transition reported yet.
    INIT = "INIT"
    # keepalived does not run.
    STOPPED = "STOPPED"


def _ip_address(value: str) -> str:
    return str(ipaddress.ip_address(value))


class VrrpStatus(_Output):
    """GET /v1/vrrp. ``interface`` is None on an amphora without a VIP interface (its VIPs
    need no plumbing, e.g. loopback ones): it then refuses VRRP and VIP requests with 409.
    ``check_script``, ``notify_script`` and ``notify_fifo`` are the paths a pushed
    keepalived.conf must use for its HAProxy check, its ``vrrp_notify_fifo_script`` and its
    ``vrrp_notify_fifo`` (as ``stats_socket`` is for haproxy.cfg)."""

    interface: str | None
    running: bool
    state: VrrpState
    config_sha256: str | None
    check_script: str | None
    notify_script: str | None
    notify_fifo: str | None
    # VIPs present on the interface now (held as MASTER, or plugged for SINGLE).
    addresses: list[str]

    @classmethod
    def without_interface(cls) -> Self:
        """The status of an amphora whose VIPs need no plumbing."""
        return cls(
            interface=None,
            running=False,
            state=VrrpState.STOPPED,
            config_sha256=None,
            check_script=None,
            notify_script=None,
            notify_fifo=None,
            addresses=[],
        )


class VrrpConfig(_Input):
    """PUT /v1/vrrp/config: the complete keepalived.conf and the VIPs it moves (which the
    agent removes from the interface before (re)starting keepalived)."""

    config: str = Field(min_length=1)
    virtual_addresses: list[str] = Field(min_length=1)

    @field_validator("virtual_addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return [_ip_address(item) for item in value]


class VipAddress(_Input):
    """PUT /v1/vip: a VIP the amphora serves alone (SINGLE)."""

    address: str

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return _ip_address(value)


# --- end of the VRRP block -------------------------------------------------------------------


# --- UDP load balancing (the kernel's nftables; services/amphora/adapters/udp.py) ------------


class UdpAlgorithm(StrEnum):
    """How a new flow picks its member (LEAST_CONNECTIONS: from the agent's counts of each
    member's flows in conntrack, refreshed twice a second)."""

    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_CONNECTIONS = "LEAST_CONNECTIONS"
    SOURCE_IP = "SOURCE_IP"
    SOURCE_IP_PORT = "SOURCE_IP_PORT"


class UdpMonitorType(StrEnum):
    """The checks the agent runs on UDP members (an SCTP check needs kernel SCTP)."""

    UDP_CONNECT = "UDP-CONNECT"
    TCP = "TCP"
    HTTP = "HTTP"
    PING = "PING"


class UdpMonitor(_Input):
    """One check every ``delay`` s, answered within ``timeout`` s; ``rise`` successes in a row
    bring a member up, ``fall`` failures in a row take it down."""

    type: UdpMonitorType
    delay: float = Field(gt=0)
    timeout: float = Field(gt=0)
    rise: int = Field(ge=1, le=10)
    fall: int = Field(ge=1, le=10)
    http_method: str = Field(default="GET", pattern=r"^[A-Z]{1,16}$")
    url_path: str = Field(default="/", pattern=r"^/[\x21-\x7e]*$")
    expected_codes: str = Field(default="200", pattern=r"^\d{3}([-,]\d{3})*$")
    http_version: float = 1.0
    domain_name: str | None = Field(default=None, pattern=_HOSTNAME.pattern)


class UdpMember(_Input):
    """A member as the kernel sees it: weight 0 or ``enabled`` False take no new flows."""

    id: str = Field(pattern=NAME_PATTERN)
    address: str
    port: int = Field(ge=1, le=65535)
    weight: int = Field(default=1, ge=0, le=256)
    enabled: bool = True
    monitor_address: str | None = None
    monitor_port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("address", "monitor_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return None if value is None else _ip_address(value)


class UdpListener(_Input):
    """One UDP listener: its VIPs and port, the pool behind it (``members`` empty without one).

    ``persistence_timeout`` (s) set: SOURCE_IP session persistence, a client (its address
    masked with ``persistence_granularity``) keeps its member until that long without a new
    flow."""

    id: str = Field(pattern=NAME_PATTERN)
    pool_id: str | None = Field(default=None, pattern=NAME_PATTERN)
    addresses: list[str] = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    algorithm: UdpAlgorithm = UdpAlgorithm.ROUND_ROBIN
    persistence_timeout: int | None = Field(default=None, ge=1, le=31_536_000)
    persistence_granularity: str | None = None
    members: list[UdpMember] = Field(default_factory=list)
    monitor: UdpMonitor | None = None

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        addresses = [_ip_address(item) for item in value]
        if len({ipaddress.ip_address(a).version for a in addresses}) != 1:
            raise ValueError("a listener's addresses are of one IP family")
        return addresses

    @field_validator("persistence_granularity")
    @classmethod
    def _granularity(cls, value: str | None) -> str | None:
        return None if value is None else _ip_address(value)

    @model_validator(mode="after")
    def _one_family(self) -> Self:
        version = ipaddress.ip_address(self.addresses[0]).version
        for member in self.members:
            if ipaddress.ip_address(member.address).version != version:
                raise ValueError(f"member {member.id} is not of the listener's IP family")
        return self


class UdpConfig(_Input):
    """PUT /v1/udp/config: every UDP listener of the amphora (empty: none)."""

    listeners: list[UdpListener] = Field(default_factory=list)


class UdpMemberState(StrEnum):
    """A member as the heartbeat reports it (Octavia's v3 vocabulary)."""

    UP = "UP"
    DOWN = "DOWN"
    DRAIN = "DRAIN"
    MAINT = "MAINT"
    NO_CHECK = "no check"


class UdpListenerStatus(_Output):
    id: str
    pool_id: str | None
    # member id -> its state; members in the kernel's map are those UP or "no check".
    members: dict[str, UdpMemberState]


class UdpStatus(_Output):
    """GET /v1/udp: the configuration in force and each member's state."""

    config_sha256: str | None
    listeners: list[UdpListenerStatus]


# --- end of the UDP block --------------------------------------------------------------------
