"""Events of the ``loadbalancer-<id>`` stream: the LB and every child it owns.

The payloads own their stored shape: creation events carry a ``*Snapshot`` of each resource,
updates a ``*Changes`` whose set fields alone are stored, both defined here and mapped field by
field to the domain model (libs/common/domain/stored.py), so the domain can change without
changing what is stored. Statuses change only through these events and, for the operating
statuses health observes, through those of ``loadbalancer_status``.

Schema history: v2 of every ``*Updated`` event (LoadBalancerUpdated and the six child kinds')
carries the update time in ``updated_at`` beside typed ``changes``; v1 kept it inside
``changes``, an untyped dict (upcast below).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Final

from pydantic import Field

from libs.common.events._payload import Changes, Stored
from libs.common.events._registry import Event, registry


class SessionPersistenceSnapshot(Stored):
    """A pool's session persistence."""

    type: str
    cookie_name: str | None = None
    persistence_timeout: int | None = None
    persistence_granularity: str | None = None


class ResourceSnapshot(Stored):
    """Fields every resource of the tree has."""

    id: str
    project_id: str
    name: str
    description: str
    admin_state_up: bool
    provisioning_status: str
    operating_status: str
    tags: tuple[str, ...]
    created_at: datetime
    updated_at: datetime | None


class ResourceChanges(Changes):
    """Fields every resource of the tree has that an update may change."""

    name: str | None = None
    description: str | None = None
    admin_state_up: bool | None = None
    provisioning_status: str | None = None
    operating_status: str | None = None
    tags: tuple[str, ...] | None = None


class AdditionalVipSnapshot(Stored):
    """A load balancer's VIP beyond the primary one."""

    subnet_id: str
    ip_address: str


class AmphoraBoundsSnapshot(Stored):
    """How many amphorae an ACTIVE_ACTIVE load balancer runs: at least ``amphora_min``, at
    most ``amphora_max``."""

    amphora_min: int
    amphora_max: int


class LoadBalancerSnapshot(ResourceSnapshot):
    """A load balancer as stored in the events that create it."""

    vip_address: str
    vip_port_id: str
    vip_subnet_id: str
    vip_network_id: str
    vip_qos_policy_id: str | None
    vip_sg_ids: tuple[str, ...] | None
    # Optional, left out while empty: LBs without any store exactly what v1 stored.
    additional_vips: tuple[AdditionalVipSnapshot, ...] = Field(
        default=(), exclude_if=lambda v: not v
    )
    provider: str
    flavor_id: str | None
    availability_zone: str | None
    topology: str
    # ACTIVE_ACTIVE only, left out otherwise.
    amphora_bounds: AmphoraBoundsSnapshot | None = Field(
        default=None, exclude_if=lambda v: v is None
    )
    # ACTIVE_ACTIVE only: the flavor's autoscaler settings, left out when none.
    autoscale: dict[str, float] = Field(default_factory=dict, exclude_if=lambda v: not v)
    provisioning_error: str


class ListenerSnapshot(ResourceSnapshot):
    """A listener as stored in the events that create it."""

    loadbalancer_id: str
    protocol: str
    protocol_port: int
    connection_limit: int
    default_pool_id: str | None
    default_tls_container_ref: str | None
    sni_container_refs: tuple[str, ...]
    insert_headers: dict[str, str]
    timeout_client_data: int
    timeout_member_connect: int
    timeout_member_data: int
    timeout_tcp_inspect: int
    allowed_cidrs: tuple[str, ...] | None
    tls_ciphers: str | None
    tls_versions: tuple[str, ...] | None
    alpn_protocols: tuple[str, ...] | None
    client_ca_tls_container_ref: str | None
    client_authentication: str
    client_crl_container_ref: str | None
    hsts_max_age: int | None
    hsts_include_subdomains: bool
    hsts_preload: bool


class PoolSnapshot(ResourceSnapshot):
    """A pool as stored in the events that create it."""

    loadbalancer_id: str
    protocol: str
    lb_algorithm: str
    session_persistence: SessionPersistenceSnapshot | None
    tls_enabled: bool
    tls_container_ref: str | None
    ca_tls_container_ref: str | None
    crl_container_ref: str | None
    tls_ciphers: str | None
    tls_versions: tuple[str, ...] | None
    alpn_protocols: tuple[str, ...] | None


class MemberSnapshot(ResourceSnapshot):
    """A member as stored in the events that create it."""

    pool_id: str
    address: str
    protocol_port: int
    weight: int
    backup: bool
    subnet_id: str | None
    monitor_address: str | None
    monitor_port: int | None
    vnic_type: str


class HealthMonitorSnapshot(ResourceSnapshot):
    """A health monitor as stored in the events that create it."""

    pool_id: str
    type: str
    delay: int
    timeout: int
    max_retries: int
    max_retries_down: int
    http_method: str | None
    url_path: str | None
    expected_codes: str | None
    http_version: float | None
    domain_name: str | None


class L7PolicySnapshot(ResourceSnapshot):
    """An L7 policy as stored in the events that create it."""

    listener_id: str
    action: str
    position: int
    redirect_pool_id: str | None
    redirect_url: str | None
    redirect_prefix: str | None
    redirect_http_code: int | None


class L7RuleSnapshot(ResourceSnapshot):
    """An L7 rule as stored in the events that create it."""

    l7policy_id: str
    type: str
    compare_type: str
    value: str
    key: str | None
    invert: bool


class LoadBalancerChanges(ResourceChanges):
    """The fields of a load balancer an update set (only those are stored)."""

    vip_address: str | None = None
    vip_port_id: str | None = None
    vip_subnet_id: str | None = None
    vip_network_id: str | None = None
    vip_qos_policy_id: str | None = None
    vip_sg_ids: tuple[str, ...] | None = None
    additional_vips: tuple[AdditionalVipSnapshot, ...] | None = None
    provider: str | None = None
    flavor_id: str | None = None
    availability_zone: str | None = None
    topology: str | None = None
    amphora_bounds: AmphoraBoundsSnapshot | None = None
    autoscale: dict[str, float] | None = None
    provisioning_error: str | None = None


class ListenerChanges(ResourceChanges):
    """The fields of a listener an update set (only those are stored)."""

    loadbalancer_id: str | None = None
    protocol: str | None = None
    protocol_port: int | None = None
    connection_limit: int | None = None
    default_pool_id: str | None = None
    default_tls_container_ref: str | None = None
    sni_container_refs: tuple[str, ...] | None = None
    insert_headers: dict[str, str] | None = None
    timeout_client_data: int | None = None
    timeout_member_connect: int | None = None
    timeout_member_data: int | None = None
    timeout_tcp_inspect: int | None = None
    allowed_cidrs: tuple[str, ...] | None = None
    tls_ciphers: str | None = None
    tls_versions: tuple[str, ...] | None = None
    alpn_protocols: tuple[str, ...] | None = None
    client_ca_tls_container_ref: str | None = None
    client_authentication: str | None = None
    client_crl_container_ref: str | None = None
    hsts_max_age: int | None = None
    hsts_include_subdomains: bool | None = None
    hsts_preload: bool | None = None


class PoolChanges(ResourceChanges):
    """The fields of a pool an update set (only those are stored)."""

    loadbalancer_id: str | None = None
    protocol: str | None = None
    lb_algorithm: str | None = None
    session_persistence: SessionPersistenceSnapshot | None = None
    tls_enabled: bool | None = None
    tls_container_ref: str | None = None
    ca_tls_container_ref: str | None = None
    crl_container_ref: str | None = None
    tls_ciphers: str | None = None
    tls_versions: tuple[str, ...] | None = None
    alpn_protocols: tuple[str, ...] | None = None


class MemberChanges(ResourceChanges):
    """The fields of a member an update set (only those are stored)."""

    pool_id: str | None = None
    address: str | None = None
    protocol_port: int | None = None
    weight: int | None = None
    backup: bool | None = None
    subnet_id: str | None = None
    monitor_address: str | None = None
    monitor_port: int | None = None
    vnic_type: str | None = None


class HealthMonitorChanges(ResourceChanges):
    """The fields of a health monitor an update set (only those are stored)."""

    pool_id: str | None = None
    type: str | None = None
    delay: int | None = None
    timeout: int | None = None
    max_retries: int | None = None
    max_retries_down: int | None = None
    http_method: str | None = None
    url_path: str | None = None
    expected_codes: str | None = None
    http_version: float | None = None
    domain_name: str | None = None


class L7PolicyChanges(ResourceChanges):
    """The fields of an L7 policy an update set (only those are stored)."""

    listener_id: str | None = None
    action: str | None = None
    position: int | None = None
    redirect_pool_id: str | None = None
    redirect_url: str | None = None
    redirect_prefix: str | None = None
    redirect_http_code: int | None = None


class L7RuleChanges(ResourceChanges):
    """The fields of an L7 rule an update set (only those are stored)."""

    l7policy_id: str | None = None
    type: str | None = None
    compare_type: str | None = None
    value: str | None = None
    key: str | None = None
    invert: bool | None = None


class LoadBalancerEvent(Event):
    category: ClassVar[str] = "loadbalancer"


class LoadBalancerCreated(LoadBalancerEvent, name="LoadBalancerCreated"):
    """A load balancer (and, for a graph create, its whole tree) was accepted."""

    loadbalancer: LoadBalancerSnapshot
    listeners: tuple[ListenerSnapshot, ...] = ()
    pools: tuple[PoolSnapshot, ...] = ()
    members: tuple[MemberSnapshot, ...] = ()
    healthmonitors: tuple[HealthMonitorSnapshot, ...] = ()
    l7policies: tuple[L7PolicySnapshot, ...] = ()
    l7rules: tuple[L7RuleSnapshot, ...] = ()


class LoadBalancerScaled(LoadBalancerEvent):
    """Base of the scaling events of an ACTIVE_ACTIVE LB: from ``amphorae_before`` to
    ``amphorae`` amphorae (PENDING_UPDATE until the provisioner made it so), because of
    ``measurements`` (what the autoscaler measured per amphora: name -> value) and ``reason``
    (the rule that fired)."""

    amphorae_before: int
    amphorae: int
    measurements: dict[str, float] = Field(default_factory=dict)
    reason: str = ""


class LoadBalancerScaledOut(LoadBalancerScaled, name="LoadBalancerScaledOut"):
    """More amphorae: each is booted, configured and served once its HAProxy runs."""


class LoadBalancerScaledIn(LoadBalancerScaled, name="LoadBalancerScaledIn"):
    """Fewer amphorae: each one going is drained (no new connections; its established ones
    finish or the drain timeout passes), then removed."""


# v2: updated_at beside typed changes (v1: inside an untyped dict); upcast_updated_v1_v2.
class LoadBalancerUpdated(LoadBalancerEvent, name="LoadBalancerUpdated", version=2):
    """Some attributes of the LB changed (it goes PENDING_UPDATE)."""

    changes: LoadBalancerChanges
    updated_at: datetime


class LoadBalancerDeletionRequested(LoadBalancerEvent, name="LoadBalancerDeletionRequested"):
    """The LB (and with cascade every child) went PENDING_DELETE."""

    cascade: bool = False


class LoadBalancerDeleted(LoadBalancerEvent, name="LoadBalancerDeleted"):
    """The amphorae are gone; the LB is DELETED and its VIP free."""


# v2: ``at`` (v1 had no time of the settling); upcast_settled_v1_v2.
class LoadBalancerActivated(LoadBalancerEvent, name="LoadBalancerActivated", version=2):
    """The LB serves on its VIP from these amphorae; every pending child is settled (its
    ``updated_at`` becomes ``at``; absent in events written before it was recorded)."""

    amphora_ids: tuple[str, ...]
    at: datetime | None = None


# v2: ``at``; upcast_settled_v1_v2.
class ChangesApplied(LoadBalancerEvent, name="ChangesApplied", version=2):
    """The config of every pending change runs on the amphorae; pending children settle
    (``updated_at`` becomes ``at``)."""

    at: datetime | None = None


# v2: ``at``; upcast_settled_v1_v2.
class ProvisioningFailed(LoadBalancerEvent, name="ProvisioningFailed", version=2):
    """A step failed: the LB and every pending child go ERROR with ``reason`` (``updated_at``
    becomes ``at``)."""

    reason: str
    at: datetime | None = None


class LoadBalancerFailoverRequested(LoadBalancerEvent, name="LoadBalancerFailoverRequested"):
    """Replace the LB's amphorae (all of them, or only ``amphora_id``)."""

    amphora_id: str | None = None
    reason: str = ""


# v2: updated_at beside typed changes (v1: inside an untyped dict); upcast_updated_v1_v2.
class ChildUpdated(LoadBalancerEvent):
    """Base of the child kinds' update events: ``changes`` of one child at ``updated_at``."""

    changes: Changes
    updated_at: datetime


class ListenerCreated(LoadBalancerEvent, name="ListenerCreated"):
    listener: ListenerSnapshot


class ListenerUpdated(ChildUpdated, name="ListenerUpdated", version=2):
    listener_id: str
    changes: ListenerChanges


class ListenerDeleted(LoadBalancerEvent, name="ListenerDeleted"):
    listener_id: str


class PoolCreated(LoadBalancerEvent, name="PoolCreated"):
    pool: PoolSnapshot
    listener_id: str | None = None


class PoolUpdated(ChildUpdated, name="PoolUpdated", version=2):
    pool_id: str
    changes: PoolChanges


class PoolDeleted(LoadBalancerEvent, name="PoolDeleted"):
    pool_id: str


class MemberAdded(LoadBalancerEvent, name="MemberAdded"):
    member: MemberSnapshot


class MemberUpdated(ChildUpdated, name="MemberUpdated", version=2):
    member_id: str
    changes: MemberChanges


class MemberRemoved(LoadBalancerEvent, name="MemberRemoved"):
    member_id: str


class HealthMonitorCreated(LoadBalancerEvent, name="HealthMonitorCreated"):
    healthmonitor: HealthMonitorSnapshot


class HealthMonitorUpdated(ChildUpdated, name="HealthMonitorUpdated", version=2):
    healthmonitor_id: str
    changes: HealthMonitorChanges


class HealthMonitorDeleted(LoadBalancerEvent, name="HealthMonitorDeleted"):
    healthmonitor_id: str


class L7PolicyCreated(LoadBalancerEvent, name="L7PolicyCreated"):
    l7policy: L7PolicySnapshot


class L7PolicyUpdated(ChildUpdated, name="L7PolicyUpdated", version=2):
    l7policy_id: str
    changes: L7PolicyChanges


class L7PolicyDeleted(LoadBalancerEvent, name="L7PolicyDeleted"):
    l7policy_id: str


class L7RuleCreated(LoadBalancerEvent, name="L7RuleCreated"):
    l7rule: L7RuleSnapshot


class L7RuleUpdated(ChildUpdated, name="L7RuleUpdated", version=2):
    l7rule_id: str
    changes: L7RuleChanges


class L7RuleDeleted(LoadBalancerEvent, name="L7RuleDeleted"):
    l7rule_id: str


def upcast_updated_v1_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v1 -> v2 of every ``*Updated`` event: ``changes.updated_at`` moves to ``updated_at``."""
    changes = dict(data["changes"])
    return {**data, "changes": changes, "updated_at": changes.pop("updated_at")}


for _updated in (
    LoadBalancerUpdated,
    ListenerUpdated,
    PoolUpdated,
    MemberUpdated,
    HealthMonitorUpdated,
    L7PolicyUpdated,
    L7RuleUpdated,
):
    registry().register_upcaster(_updated.event_type, 1, upcast_updated_v1_v2)


def upcast_settled_v1_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v1 -> v2 of the provisioner's status events: no time was recorded (``at`` null)."""
    return {**data, "at": None}


for _settled in (LoadBalancerActivated, ChangesApplied, ProvisioningFailed):
    registry().register_upcaster(_settled.event_type, 1, upcast_settled_v1_v2)


# The events that end a PENDING_* period: the LB is ACTIVE (or ERROR) again after each.
SETTLING: Final = (LoadBalancerActivated, ChangesApplied, ProvisioningFailed)
