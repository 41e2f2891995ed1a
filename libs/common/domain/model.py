"""The LoadBalancer aggregate's state: one load balancer and its whole tree of children.

Children live flat in dicts keyed by id, with parent ids on each child, so that evolve treats
every kind alike. Field names and defaults are Octavia's; everything is frozen.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field


class ProvisioningStatus(StrEnum):
    ACTIVE = "ACTIVE"
    PENDING_CREATE = "PENDING_CREATE"
    PENDING_UPDATE = "PENDING_UPDATE"
    PENDING_DELETE = "PENDING_DELETE"
    DELETED = "DELETED"
    ERROR = "ERROR"


PENDING_STATUSES: Final = frozenset(
    {
        ProvisioningStatus.PENDING_CREATE,
        ProvisioningStatus.PENDING_UPDATE,
        ProvisioningStatus.PENDING_DELETE,
    }
)


class OperatingStatus(StrEnum):
    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    DEGRADED = "DEGRADED"
    ERROR = "ERROR"
    DRAINING = "DRAINING"
    NO_MONITOR = "NO_MONITOR"


class ListenerProtocol(StrEnum):
    TCP = "TCP"
    HTTP = "HTTP"
    HTTPS = "HTTPS"
    TERMINATED_HTTPS = "TERMINATED_HTTPS"
    UDP = "UDP"
    SCTP = "SCTP"
    PROMETHEUS = "PROMETHEUS"


class PoolProtocol(StrEnum):
    TCP = "TCP"
    HTTP = "HTTP"
    HTTPS = "HTTPS"
    PROXY = "PROXY"
    PROXYV2 = "PROXYV2"
    UDP = "UDP"
    SCTP = "SCTP"


class LbAlgorithm(StrEnum):
    ROUND_ROBIN = "ROUND_ROBIN"
    LEAST_CONNECTIONS = "LEAST_CONNECTIONS"
    SOURCE_IP = "SOURCE_IP"
    SOURCE_IP_PORT = "SOURCE_IP_PORT"


class SessionPersistenceType(StrEnum):
    SOURCE_IP = "SOURCE_IP"
    HTTP_COOKIE = "HTTP_COOKIE"
    APP_COOKIE = "APP_COOKIE"


class HealthMonitorType(StrEnum):
    HTTP = "HTTP"
    HTTPS = "HTTPS"
    PING = "PING"
    TCP = "TCP"
    TLS_HELLO = "TLS-HELLO"
    UDP_CONNECT = "UDP-CONNECT"
    SCTP = "SCTP"


class L7Action(StrEnum):
    REJECT = "REJECT"
    REDIRECT_TO_URL = "REDIRECT_TO_URL"
    REDIRECT_TO_POOL = "REDIRECT_TO_POOL"
    REDIRECT_PREFIX = "REDIRECT_PREFIX"


class L7RuleType(StrEnum):
    HOST_NAME = "HOST_NAME"
    PATH = "PATH"
    FILE_TYPE = "FILE_TYPE"
    HEADER = "HEADER"
    COOKIE = "COOKIE"
    SSL_CONN_HAS_CERT = "SSL_CONN_HAS_CERT"
    SSL_VERIFY_RESULT = "SSL_VERIFY_RESULT"
    SSL_DN_FIELD = "SSL_DN_FIELD"


class L7CompareType(StrEnum):
    REGEX = "REGEX"
    STARTS_WITH = "STARTS_WITH"
    ENDS_WITH = "ENDS_WITH"
    CONTAINS = "CONTAINS"
    EQUAL_TO = "EQUAL_TO"


class Topology(StrEnum):
    SINGLE = "SINGLE"
    ACTIVE_STANDBY = "ACTIVE_STANDBY"
    ACTIVE_ACTIVE = "ACTIVE_ACTIVE"


# The autoscaler settings a flavor may set for its ACTIVE_ACTIVE load balancers (names of
# services/health/domain/autoscale.py's ScalingPolicy fields; numbers >= 0).
AUTOSCALE_OVERRIDES: Final = frozenset(
    {
        "connection_rate_out",
        "connection_rate_in",
        "active_connections_out",
        "active_connections_in",
        "cpu_out",
        "cpu_in",
        "sustain",
        "cooldown",
    }
)


class AmphoraBounds(BaseModel):
    """How many amphorae an ACTIVE_ACTIVE load balancer runs: never fewer than
    ``amphora_min`` (what it is built with), never more than ``amphora_max``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    amphora_min: int = Field(ge=1)
    amphora_max: int = Field(ge=1)


# Octavia's VALID_LISTENER_POOL_PROTOCOL_MAP.
LISTENER_POOL_PROTOCOLS: Final[dict[str, frozenset[str]]] = {
    "HTTP": frozenset({"HTTP", "PROXY", "PROXYV2"}),
    "HTTPS": frozenset({"HTTPS", "PROXY", "PROXYV2", "TCP"}),
    "TCP": frozenset({"HTTP", "HTTPS", "PROXY", "PROXYV2", "TCP"}),
    "TERMINATED_HTTPS": frozenset({"HTTP", "PROXY", "PROXYV2"}),
    "UDP": frozenset({"UDP"}),
    "SCTP": frozenset({"SCTP"}),
    "PROMETHEUS": frozenset(),
}

DEFAULT_TIMEOUT_CLIENT_DATA: Final = 50000
DEFAULT_TIMEOUT_MEMBER_CONNECT: Final = 5000
DEFAULT_TIMEOUT_MEMBER_DATA: Final = 50000
DEFAULT_TIMEOUT_TCP_INSPECT: Final = 0


class Resource(BaseModel):
    """Fields every Octavia resource has; subclasses add their own."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    project_id: str
    name: str = ""
    description: str = ""
    admin_state_up: bool = True
    provisioning_status: ProvisioningStatus = ProvisioningStatus.PENDING_CREATE
    operating_status: OperatingStatus = OperatingStatus.OFFLINE
    tags: tuple[str, ...] = ()
    created_at: datetime
    updated_at: datetime | None = None

    def updated(self, changes: dict[str, Any]) -> Any:
        """A copy with ``changes`` applied and validated (same type as ``self``)."""
        return type(self).model_validate({**self.model_dump(), **changes})


class SessionPersistence(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    type: SessionPersistenceType
    cookie_name: str | None = None
    persistence_timeout: int | None = None
    persistence_granularity: str | None = None


class AdditionalVip(BaseModel):
    """A VIP beyond the primary one (API v2.26+): another subnet of the same network."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    subnet_id: str
    ip_address: str


class LoadBalancer(Resource):
    vip_address: str
    vip_port_id: str
    vip_subnet_id: str
    vip_network_id: str
    vip_qos_policy_id: str | None = None
    vip_sg_ids: tuple[str, ...] | None = None
    # Left out of dumps while empty: states of LBs without any dump as before the field.
    additional_vips: tuple[AdditionalVip, ...] = Field(default=(), exclude_if=lambda v: not v)
    provider: str = "amphora"
    flavor_id: str | None = None
    availability_zone: str | None = None
    topology: Topology = Topology.SINGLE
    # ACTIVE_ACTIVE only (left out of dumps otherwise).
    amphora_bounds: AmphoraBounds | None = Field(default=None, exclude_if=lambda v: v is None)
    # ACTIVE_ACTIVE only: the flavor's autoscaler settings (AUTOSCALE_OVERRIDES; left out of
    # dumps when empty).
    autoscale: dict[str, float] = Field(default_factory=dict, exclude_if=lambda v: not v)
    # Why the last provisioning step failed (Fulcrum's addition; empty when none).
    provisioning_error: str = ""

    def all_vips(self) -> tuple[str, ...]:
        """Every address the LB serves on: the primary VIP first, then the additional ones."""
        return (self.vip_address, *(vip.ip_address for vip in self.additional_vips))


class Listener(Resource):
    loadbalancer_id: str
    protocol: ListenerProtocol
    protocol_port: int
    connection_limit: int = -1
    default_pool_id: str | None = None
    default_tls_container_ref: str | None = None
    sni_container_refs: tuple[str, ...] = ()
    insert_headers: dict[str, str] = Field(default_factory=dict)
    timeout_client_data: int = DEFAULT_TIMEOUT_CLIENT_DATA
    timeout_member_connect: int = DEFAULT_TIMEOUT_MEMBER_CONNECT
    timeout_member_data: int = DEFAULT_TIMEOUT_MEMBER_DATA
    timeout_tcp_inspect: int = DEFAULT_TIMEOUT_TCP_INSPECT
    allowed_cidrs: tuple[str, ...] | None = None
    tls_ciphers: str | None = None
    tls_versions: tuple[str, ...] | None = None
    alpn_protocols: tuple[str, ...] | None = None
    client_ca_tls_container_ref: str | None = None
    client_authentication: str = "NONE"
    client_crl_container_ref: str | None = None
    hsts_max_age: int | None = None
    hsts_include_subdomains: bool = False
    hsts_preload: bool = False


class Pool(Resource):
    loadbalancer_id: str
    protocol: PoolProtocol
    lb_algorithm: LbAlgorithm
    session_persistence: SessionPersistence | None = None
    tls_enabled: bool = False
    tls_container_ref: str | None = None
    ca_tls_container_ref: str | None = None
    crl_container_ref: str | None = None
    tls_ciphers: str | None = None
    tls_versions: tuple[str, ...] | None = None
    alpn_protocols: tuple[str, ...] | None = None


class Member(Resource):
    pool_id: str
    address: str
    protocol_port: int
    weight: int = 1
    backup: bool = False
    subnet_id: str | None = None
    monitor_address: str | None = None
    monitor_port: int | None = None
    vnic_type: str = "normal"


class HealthMonitor(Resource):
    pool_id: str
    type: HealthMonitorType
    delay: int
    timeout: int
    max_retries: int
    max_retries_down: int = 3
    http_method: str | None = None
    url_path: str | None = None
    expected_codes: str | None = None
    http_version: float | None = None
    domain_name: str | None = None


class L7Policy(Resource):
    listener_id: str
    action: L7Action
    position: int
    redirect_pool_id: str | None = None
    redirect_url: str | None = None
    redirect_prefix: str | None = None
    redirect_http_code: int | None = None


class L7Rule(Resource):
    l7policy_id: str
    type: L7RuleType
    compare_type: L7CompareType
    value: str
    key: str | None = None
    invert: bool = False


class LoadBalancerState(BaseModel):
    """The whole aggregate. ``version`` is the ``loadbalancer`` stream version it was folded up
    to, ``status_version`` the ``lbstatus`` stream version (health's observed statuses)."""

    model_config = ConfigDict(frozen=True)

    version: int = 0
    # Left out while 0: a state without observed statuses stores what it stored before.
    status_version: int = Field(default=0, exclude_if=lambda v: not v)
    loadbalancer: LoadBalancer | None = None
    listeners: dict[str, Listener] = Field(default_factory=dict)
    pools: dict[str, Pool] = Field(default_factory=dict)
    members: dict[str, Member] = Field(default_factory=dict)
    healthmonitors: dict[str, HealthMonitor] = Field(default_factory=dict)
    l7policies: dict[str, L7Policy] = Field(default_factory=dict)
    l7rules: dict[str, L7Rule] = Field(default_factory=dict)
    amphora_ids: tuple[str, ...] = ()

    @property
    def revision(self) -> int:
        """Grows by one with every event of either stream: the read model's row version."""
        return self.version + self.status_version

    # Derived relations (pure, computed on demand).
    def pool_members(self, pool_id: str) -> list[Member]:
        return [m for m in self.members.values() if m.pool_id == pool_id]

    def pool_healthmonitor(self, pool_id: str) -> HealthMonitor | None:
        return next((h for h in self.healthmonitors.values() if h.pool_id == pool_id), None)

    def pool_listeners(self, pool_id: str) -> list[Listener]:
        """Listeners that use the pool as default pool or through a REDIRECT_TO_POOL policy."""
        via_policy = {
            p.listener_id for p in self.l7policies.values() if p.redirect_pool_id == pool_id
        }
        return [
            li
            for li in self.listeners.values()
            if li.default_pool_id == pool_id or li.id in via_policy
        ]

    def shown_pool_listeners(self, pool_id: str) -> list[Listener]:
        """The listeners Octavia shows for a pool: those using it as default pool, and those
        with an enabled policy that has at least one rule and redirects to it."""
        ruled = {r.l7policy_id for r in self.l7rules.values()}
        via_policy = {
            p.listener_id
            for p in self.l7policies.values()
            if p.redirect_pool_id == pool_id and p.admin_state_up and p.id in ruled
        }
        return [
            li
            for li in self.listeners.values()
            if li.default_pool_id == pool_id or li.id in via_policy
        ]

    def listener_policies(self, listener_id: str) -> list[L7Policy]:
        return sorted(
            (p for p in self.l7policies.values() if p.listener_id == listener_id),
            key=lambda p: p.position,
        )

    def policy_rules(self, policy_id: str) -> list[L7Rule]:
        return sorted(
            (r for r in self.l7rules.values() if r.l7policy_id == policy_id),
            key=lambda r: (r.created_at, r.id),
        )
