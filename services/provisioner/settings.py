"""Settings of the provisioner, read from ``FULCRUM_PROVISIONER_*`` environment variables."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal, Protocol

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from libs.common.logsetup import LogLevel
from libs.common.settings import (
    DOCUMENTED,
    HeartbeatKeySetting,
    NatsSettings,
    PostgresSettings,
    RelaySettings,
    SecretKeysSetting,
    TelemetrySettings,
)
from services.provisioner.domain.placement import address_share
from services.provisioner.rendering.context import DEFAULT_USER_LOG_FORMAT, LogOffload, LogTarget

_ULA: Final = ipaddress.ip_network("fd00::/8")


class DockerNetworkSettings(BaseModel):
    """A docker network the docker driver attaches amphorae to (created when missing).

    Every subnet must lie in 198.18.0.0/15 on the machines of this project. ``ip_range`` is
    where docker picks dynamic addresses; keep the VIPs the API hands out outside it.
    ``subnet6`` (a /64 of the ULA range fd00::/8, with ``gateway6`` and ``ip_range6`` likewise)
    makes a VIP network dual stack: its IPv6 VIPs are held by the amphorae as /128s.
    """

    model_config = DOCUMENTED

    name: str
    """Docker network name."""
    subnet: str
    """Its subnet (CIDR)."""
    gateway: str | None = None
    """Its gateway address (null: docker's choice)."""
    ip_range: str | None = None
    """Where docker picks dynamic addresses (null: the whole subnet)."""
    subnet6: str | None = None
    """A /64 of fd00::/8 that makes the network dual stack (null: IPv4 only)."""
    gateway6: str | None = None
    """Its IPv6 gateway (null: docker's choice)."""
    ip_range6: str | None = None
    """Where docker picks dynamic IPv6 addresses (null: the whole subnet6)."""

    @model_validator(mode="after")
    def _ula(self) -> DockerNetworkSettings:
        if self.subnet6 is None:
            if self.gateway6 is not None or self.ip_range6 is not None:
                raise ValueError("gateway6 and ip_range6 need subnet6")
            return self
        subnet6 = ipaddress.ip_network(self.subnet6)
        if not (subnet6.version == 6 and subnet6.subnet_of(_ULA) and subnet6.prefixlen == 64):  # type: ignore[arg-type]
            raise ValueError(f"docker subnet6 {subnet6} must be a /64 in {_ULA}")
        for name in ("gateway6", "ip_range6"):
            value = getattr(self, name)
            if value is not None and not ipaddress.ip_network(value).subnet_of(subnet6):  # type: ignore[arg-type]
                raise ValueError(f"{name} {value} must lie in subnet6 {subnet6}")
        return self


class DockerDriverSettings(BaseModel):
    """The ``docker`` driver: amphorae are containers of ``image`` on one engine."""

    model_config = DOCUMENTED

    host: str | None = None
    """DOCKER_HOST of the engine; null: the environment's DOCKER_HOST or the default socket."""
    image: str = "fulcrum/amphora:latest"
    """Amphora image (never pulled: it must be on the engine)."""
    deployment: str = "fulcrum"
    """Label value separating deployments that share an engine (each sees only its own containers).
    """
    agent_port: int = 9443
    """Port of the amphora agent in each container."""
    mgmt_network: DockerNetworkSettings = Field(
        default_factory=lambda: DockerNetworkSettings(
            name="fulcrum-lb-mgmt",
            subnet="198.18.65.0/24",
            gateway="198.18.65.1",
            ip_range="198.18.65.128/25",  # below: static control-plane addresses (compose)
        )
    )
    """The network the agents are reached on: the provisioner must be attached to it (compose) or
    run on the engine's host.
    """
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
    """VIP networks (JSON list of name, subnet, gateway, ip_range): a VIP belongs to the network
    whose subnet contains it.
    """
    api_timeout: float = 60.0
    """Seconds one engine API call may take."""
    distributor_links: str = Field(default="198.19.254.0/24")
    """IPv4 block the point-to-point links between an ACTIVE_ACTIVE distributor and its
    amphora containers are cut from (one /30 per amphora; they live only inside those
    namespaces, so every LB reuses it; it must not overlap the management or a VIP network).
    """

    @model_validator(mode="after")
    def _links_apart_from_the_networks(self) -> DockerDriverSettings:
        check_distributor_links(self.distributor_links, [self.mgmt_network, *self.vip_networks])
        return self


# --- netns driver and VRRP (issue 6 part B) -------------------------------------------------

_NETNS_RANGE: Final = ipaddress.ip_network("198.18.0.0/15")
_NETNS_RANGE6: Final = _ULA


class NetnsNetworkSettings(BaseModel):
    """A VIP network of the ``netns`` driver: one bridge, in its own network namespace.

    ``subnet`` carries both the amphorae' own addresses (taken from ``ip_range``) and the VIPs
    (give the API the rest of the subnet as its VIP pool). ``gateway`` is the host's address
    on the uplink veth into the bridge: the provisioner reaches the agents through it, and the
    amphorae reach the host (health endpoints) through it. Everything lies in 198.18.0.0/15.

    ``subnet6``/``gateway6`` (optional, a /64 of the ULA range fd00::/8) make the network dual
    stack: the uplink holds ``gateway6``, and each amphora's eth0 the address of ``subnet6``
    at its IPv4 address's offset in ``subnet`` (so ``ip_range``'s offsets are the amphorae's
    in ``subnet6`` too: IPv6 VIPs come from the other offsets).
    """

    name: str = Field(pattern=r"^[a-z0-9]{1,10}$")
    subnet: str
    gateway: str
    ip_range: str
    subnet6: str | None = None
    gateway6: str | None = None

    @model_validator(mode="after")
    def _inside_the_allowed_range(self) -> NetnsNetworkSettings:
        subnet = ipaddress.ip_network(self.subnet)
        ip_range = ipaddress.ip_network(self.ip_range)
        gateway = ipaddress.ip_address(self.gateway)
        if subnet.version != 4 or not subnet.subnet_of(_NETNS_RANGE):  # type: ignore[arg-type]
            raise ValueError(f"netns subnet {subnet} must lie in {_NETNS_RANGE}")
        if not ip_range.subnet_of(subnet):  # type: ignore[arg-type]
            raise ValueError(f"ip_range {ip_range} must lie in subnet {subnet}")
        if gateway not in subnet:
            raise ValueError(f"gateway {gateway} must lie in subnet {subnet}")
        if (self.subnet6 is None) != (self.gateway6 is None):
            raise ValueError("subnet6 and gateway6 go together")
        if self.subnet6 is not None and self.gateway6 is not None:
            subnet6 = ipaddress.ip_network(self.subnet6)
            ula = subnet6.version == 6 and subnet6.subnet_of(_NETNS_RANGE6)  # type: ignore[arg-type]
            if not ula or subnet6.prefixlen != 64:
                raise ValueError(f"netns subnet6 {subnet6} must be a /64 in {_NETNS_RANGE6}")
            if ipaddress.ip_address(self.gateway6) not in subnet6:
                raise ValueError(f"gateway6 {self.gateway6} must lie in subnet6 {subnet6}")
        return self

    def address6_of(self, address: str) -> str | None:
        """The IPv6 address at IPv4 ``address``'s offset in ``subnet`` (None: IPv4 only)."""
        if self.subnet6 is None:
            return None
        offset = int(ipaddress.IPv4Address(address)) - int(
            ipaddress.IPv4Network(self.subnet).network_address
        )
        return str(ipaddress.IPv6Network(self.subnet6).network_address + offset)


def _default_netns_networks() -> list[NetnsNetworkSettings]:
    return [
        NetnsNetworkSettings(
            name="fulcrum",
            subnet="198.18.32.0/24",
            gateway="198.18.32.1",
            ip_range="198.18.32.0/25",
        )
    ]


class NetnsDriverSettings(BaseModel):
    """The ``netns`` driver: amphora namespaces ``<namespace_prefix><12 hex of its id>``,
    network namespaces (and the host side of their uplinks) ``<network_prefix><name>``."""

    model_config = DOCUMENTED

    namespace_prefix: str = Field(default="fa-", pattern=r"^[a-z0-9-]{1,12}$")
    """Prefix of amphora network namespaces (<prefix><12 hex of the amphora id>)."""
    network_prefix: str = Field(default="fn-", pattern=r"^[a-z0-9-]{1,5}$")
    """Prefix of VIP network namespaces and of the host side of their uplinks."""
    agent_port: int = Field(default=9443, ge=1, le=65535)
    """Port of the amphora agent in each namespace."""
    networks: list[NetnsNetworkSettings] = Field(
        default_factory=_default_netns_networks, min_length=1
    )
    """VIP networks (JSON list of name, subnet, gateway, ip_range, subnet6, gateway6; all in
    198.18.0.0/15, IPv6 in fd00::/8): a VIP belongs to the network whose subnet contains it;
    spares go to the first.
    """
    command_timeout: float = Field(default=10.0, gt=0)
    """Seconds one `ip` command may take."""
    stop_timeout: float = Field(default=10.0, gt=0)
    """Seconds an agent gets to stop cleanly when its amphora is deleted."""
    distributor_links: str = Field(default="198.19.254.0/24")
    """IPv4 block the point-to-point links between an ACTIVE_ACTIVE distributor and its
    amphorae are cut from (one /30 per amphora; they live only inside those namespaces, so
    every LB reuses it; it must not overlap a VIP network).
    """

    @model_validator(mode="after")
    def _links_apart_from_the_networks(self) -> NetnsDriverSettings:
        check_distributor_links(self.distributor_links, self.networks)
        return self


class _Subnet(Protocol):
    name: str
    subnet: str


def check_distributor_links(block: str, networks: Sequence[_Subnet]) -> None:
    """Raises ValueError unless ``block`` is an IPv4 block of at least a /30 in
    198.18.0.0/15 that overlaps none of ``networks``' subnets."""
    links = ipaddress.ip_network(block)
    inside = links.version == 4 and links.subnet_of(_NETNS_RANGE)  # type: ignore[arg-type]
    if not inside or links.prefixlen > 30:
        raise ValueError(
            f"distributor_links {links} must be an IPv4 block of at least a /30 in {_NETNS_RANGE}"
        )
    for network in networks:
        if links.overlaps(ipaddress.ip_network(network.subnet)):
            raise ValueError(f"distributor_links {links} overlaps network {network.name}")


class VrrpSettings(BaseModel):
    """keepalived for ACTIVE_STANDBY (unicast VRRPv3; see rendering/keepalived.py)."""

    model_config = DOCUMENTED

    # VRRPv3 counts in centiseconds; below 0.1 a busy host's scheduling delays would read as
    # a dead MASTER and move the VIP (the bound on a move is 1 s).
    advert_int: float = Field(default=0.1, ge=0.1, le=0.2, multiple_of=0.01)
    """Seconds between VRRP adverts (0.1 to 0.2, in steps of 0.01): a dead MASTER's VIP moves after
    3 adverts plus a skew, 0.4 s at 0.1 and 0.73 s at 0.2.
    """
    check_interval: int = Field(default=1, ge=1)  # keepalived 2.2.7: whole seconds only
    """Seconds between keepalived's HAProxy checks (whole seconds)."""
    check_fall: int = Field(default=2, ge=1)
    """Failed checks before an amphora gives up MASTER."""
    check_rise: int = Field(default=2, ge=1)
    """Passed checks before an amphora may be MASTER again."""


# --- end of the netns driver and VRRP block ------------------------------------------------


class AmphoraHostSettings(BaseModel):
    """One host amphorae run on (``ProvisionerSettings.hosts``).

    ``netns``: a bridge of its own per VIP network (namespace ``<network_prefix><network>-<name>``)
    joined by its uplink to that network's switch (the network namespace the ``netns`` settings
    describe, whose uplink into this machine holds the gateway); its amphorae take addresses
    from its own slice of each network's ``ip_range``: ``ip_ranges`` (network name -> CIDR), or
    by default an equal share of the range, in the order of the hosts. Cutting its uplink
    (``h-<name>`` in the switch's namespace) is losing the host.
    ``docker``: a private engine at ``docker_host`` (DOCKER_HOST syntax), with the ``docker``
    settings' image and networks.
    """

    name: str = Field(pattern=r"^[a-z0-9]{1,8}$")
    driver: Literal["netns", "docker"] = "netns"
    ip_ranges: dict[str, str] = Field(default_factory=dict)
    docker_host: str | None = None


# Octavia's anti-affinity policies (nova server groups): "hard" refuses to place the two
# amphorae of an ACTIVE_STANDBY LB on one host; "soft" prefers distinct hosts and, with one
# live host left, places them together (degraded, logged, counted) rather than fail.
AntiAffinity = Literal["soft", "hard"]


class ProvisionerSettings(HeartbeatKeySetting, SecretKeysSetting, BaseSettings):
    """Built once in ``__main__`` and passed down."""

    model_config = SettingsConfigDict(
        env_prefix="FULCRUM_PROVISIONER_",
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
    port: int = 9877
    """Port of the probe endpoints."""
    log_level: LogLevel = "INFO"
    """Threshold of every logger in this process: DEBUG, INFO, WARNING, ERROR or CRITICAL, in any
    case.
    """
    driver: str = Field(default="process", pattern="^(process|netns|docker)$")
    """How amphorae run: process (HAProxy processes on this host, loopback VIPs), netns (network
    namespaces; root) or docker (containers).
    """
    state_dir: Path = Path(".state/amphorae")
    """Where amphorae keep their files (process and netns drivers)."""
    ca_dir: Path = Path(".state/ca")
    """The deployment CA that signs amphora certificates (created when missing)."""
    health_endpoints: list[str] = Field(default_factory=list)
    """Health service addresses (host:port, JSON list) the amphorae send heartbeats to."""
    heartbeat_interval: float = 1.0
    """Seconds between an amphora's heartbeats (the health service's default timeout is three)."""
    boot_timeout: float = 20.0
    """Seconds a new amphora may take before its agent answers."""
    concurrency: int = 8
    """Load balancers handled at once (one load balancer's events are always in order)."""
    drain_timeout: float = Field(default=30.0, ge=0)
    """Seconds a scale-in waits for the established connections of a drained ACTIVE_ACTIVE
    amphora to finish before removing it (those still open then fail)."""
    claim_spares: bool = True
    """Whether a new SINGLE load balancer takes a READY spare amphora when there is one (no boot to
    wait for). Housekeeping keeps the spare pool (FULCRUM_HOUSEKEEPING_SPARES__POOL_SIZE).
    """
    spare_pool_size: int = Field(default=0, ge=0)
    """Spares the provisioner's own refill loop keeps, for use without housekeeping (0: the loop is
    off).
    """
    spare_refill_interval: float = 1.0
    """Seconds between rounds of that refill loop."""
    spare_refill_defer: float = Field(default=10.0, ge=0)
    """That refill loop boots no spare while a load balancer created less than this many seconds
    ago is still PENDING_CREATE: creates waiting for an amphora get the CPU first, the pool
    refills after them (0: refill at once, beside the creates).
    """
    maintenance_concurrency: int = Field(default=2, ge=1)
    """Housekeeping's requests (spare boots, certificate rotations, reconciliations) handled at
    once.
    """
    cert_validity_days: int = 30
    """Days an amphora server certificate is valid."""
    amphorae_per_agent_process: int = Field(default=1, ge=1)
    """Process driver: amphora agents per Python process. 1: a process per amphora (~14 MB
    each). K > 1: agent hosts of up to K amphorae each (a few hundred kB each, plus one
    interpreter per host), and a host that dies takes K agents at once (their HAProxies keep
    serving; health fails them over). Only with the process driver and no hosts.
    """
    docker: DockerDriverSettings = Field(default_factory=DockerDriverSettings)
    """The docker driver's engine, image and networks."""
    netns: NetnsDriverSettings = Field(default_factory=NetnsDriverSettings)
    """The netns driver's namespaces and networks."""
    vrrp: VrrpSettings = Field(default_factory=VrrpSettings)
    """keepalived for ACTIVE_STANDBY on amphorae that own a VIP interface."""
    hosts: list[AmphoraHostSettings] = Field(default_factory=list)
    """The hosts amphorae run on (JSON list of name, driver netns|docker, ip_ranges, docker_host),
    e.g. [{"name":"h1"},{"name":"h2"}]. Empty: the driver on this host alone. With hosts, each
    new amphora goes to the least-loaded live host, the two of an ACTIVE_STANDBY load balancer
    to distinct hosts.
    """
    anti_affinity: AntiAffinity = "soft"
    """hard: never place the two amphorae of an ACTIVE_STANDBY load balancer on one host; soft:
    prefer distinct hosts, and with one live host left place them together (logged, counted).
    """
    tenant_log_targets: list[str] = Field(default_factory=list)
    """Syslog targets (host:port, JSON list) that get every amphora's HAProxy access log
    (user_log_format, local0) and notices over UDP.
    """
    admin_log_targets: list[str] = Field(default_factory=list)
    """Syslog targets (host:port, JSON list) that get HAProxy's notices and worse (local1)."""
    connection_logging: bool = True
    """Whether listeners write an access log (Octavia's [haproxy_amphora] connection_logging)."""
    user_log_format: str = Field(default=DEFAULT_USER_LOG_FORMAT, min_length=1)
    """Format of access log lines (Octavia's user_log_format; {{ project_id }} and {{ lb_id }} are
    filled in).
    """
    haproxy_threads: int = Field(default=1, ge=0, le=64)
    """Threads of each amphora's HAProxy (its nbthread). 1, as in Octavia's default amphora
    (one vCPU): a host's amphorae share its cores, and every thread costs memory, a poller and
    a share of each heartbeat's stats read (1 against 2 threads on the 2-core box: 20% less
    HAProxy CPU per idle beat, 3 ms less per start). 0: HAProxy's default, one per CPU it may
    run on.
    """

    @model_validator(mode="after")
    def _log_targets_parse(self) -> ProvisionerSettings:
        self.log_offload  # noqa: B018 (raises ValueError on a malformed target)
        return self

    @model_validator(mode="after")
    def _agent_hosts_need_the_process_driver(self) -> ProvisionerSettings:
        if self.amphorae_per_agent_process > 1 and (self.driver != "process" or self.hosts):
            raise ValueError(
                "amphorae_per_agent_process > 1 needs the process driver on this host alone "
                f"(driver {self.driver!r}, {len(self.hosts)} hosts): a network namespace "
                "or a container holds one agent"
            )
        return self

    @model_validator(mode="after")
    def _hosts_are_distinct(self) -> ProvisionerSettings:
        names = [h.name for h in self.hosts]
        if len(set(names)) != len(names):
            raise ValueError(f"amphora host names must be distinct: {names}")
        networks = {n.name: n for n in self.netns.networks}
        for host in self.hosts:
            for network, cidr in host.ip_ranges.items():
                if network not in networks:
                    raise ValueError(f"host {host.name}: no netns network {network!r}")
                inside = ipaddress.ip_network(networks[network].ip_range)
                if not ipaddress.ip_network(cidr).subnet_of(inside):  # type: ignore[arg-type]
                    raise ValueError(f"host {host.name}: {cidr} is outside {inside}")
        shares = [(h.name, self.address_ranges(h)) for h in self.hosts if h.driver == "netns"]
        for network in networks:
            taken: list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
            for name, ranges in shares:
                mine = ipaddress.ip_network(ranges[network])
                for other, theirs in taken:
                    if mine.overlaps(theirs):
                        raise ValueError(
                            f"hosts {other} and {name} share addresses of {network}: "
                            f"{theirs} and {mine}"
                        )
                taken.append((name, mine))
        return self

    @property
    def log_offload(self) -> LogOffload:
        """Where the amphorae's HAProxy logs go (the targets are checked at start)."""
        return LogOffload(
            tenant_targets=tuple(LogTarget.parse(t) for t in self.tenant_log_targets),
            admin_targets=tuple(LogTarget.parse(t) for t in self.admin_log_targets),
            connection_logging=self.connection_logging,
            user_log_format=self.user_log_format,
        )

    def address_ranges(self, host: AmphoraHostSettings) -> dict[str, str]:
        """A netns host's share of each netns network's ``ip_range`` (network name -> CIDR):
        its ``ip_ranges``, else an equal split among the netns hosts, in their order."""
        netns_hosts = [h.name for h in self.hosts if h.driver == "netns"]
        index = netns_hosts.index(host.name)
        return {
            n.name: host.ip_ranges.get(n.name) or address_share(n.ip_range, len(netns_hosts), index)
            for n in self.netns.networks
        }
