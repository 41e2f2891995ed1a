"""The resource kinds the API serves: envelope names, labels and their queryable attributes.

One descriptor per kind keeps naming in one place: the HTTP layer takes envelopes and query
rules from it, the adapters take the view table and column mapping. A child kind of the load
balancer tree wraps its domain descriptor (libs.common.domain.kinds), which gives its key,
label and quota resource.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from libs.common.domain import kinds as domain

AttrType = Literal["str", "bool", "int", "float"]

_COMMON: Final[dict[str, AttrType]] = {
    "id": "str",
    "project_id": "str",
    "name": "str",
    "description": "str",
    "admin_state_up": "bool",
    "provisioning_status": "str",
    "operating_status": "str",
    "created_at": "str",
    "updated_at": "str",
}


@dataclass(frozen=True)
class Kind:
    """A resource kind. ``key`` is the read model's collection name."""

    key: str
    singular: str
    plural: str
    label: str
    # Scalar attributes of the API body: the keys one may filter and sort on.
    attributes: dict[str, AttrType]
    # API attribute -> view column, where a column holds it (faster than the body).
    columns: dict[str, str] = field(default_factory=dict)
    # The list's links key when Octavia does not spell it "<plural>_links".
    links: str = ""
    # The domain descriptor of a child kind of the load balancer tree.
    child: domain.ChildKind | None = None

    @property
    def links_key(self) -> str:
        return self.links or f"{self.plural}_links"


def _attrs(**extra: AttrType) -> dict[str, AttrType]:
    return {**_COMMON, **extra}


def _child(
    child: domain.ChildKind,
    singular: str,
    plural: str,
    attributes: dict[str, AttrType],
    columns: dict[str, str],
) -> Kind:
    return Kind(child.key, singular, plural, child.label, attributes, columns, child=child)


_BASE_COLUMNS: Final = {"id": "id", "project_id": "project_id"}

LOADBALANCER: Final = Kind(
    key="loadbalancer",
    singular="loadbalancer",
    plural="loadbalancers",
    label="Load Balancer",
    attributes=_attrs(
        vip_address="str",
        vip_port_id="str",
        vip_subnet_id="str",
        vip_network_id="str",
        vip_qos_policy_id="str",
        vip_vnic_type="str",
        provider="str",
        flavor_id="str",
        availability_zone="str",
    ),
    columns=_BASE_COLUMNS,
)
LISTENER: Final = _child(
    domain.LISTENER,
    singular="listener",
    plural="listeners",
    attributes=_attrs(
        loadbalancer_id="str",
        protocol="str",
        protocol_port="int",
        connection_limit="int",
        default_pool_id="str",
        default_tls_container_ref="str",
        timeout_client_data="int",
        timeout_member_connect="int",
        timeout_member_data="int",
        timeout_tcp_inspect="int",
        tls_ciphers="str",
        client_ca_tls_container_ref="str",
        client_authentication="str",
        client_crl_container_ref="str",
        hsts_max_age="int",
        hsts_include_subdomains="bool",
        hsts_preload="bool",
    ),
    columns={**_BASE_COLUMNS, "loadbalancer_id": "lb_id"},
)
POOL: Final = _child(
    domain.POOL,
    singular="pool",
    plural="pools",
    attributes=_attrs(
        loadbalancer_id="str",
        protocol="str",
        lb_algorithm="str",
        tls_enabled="bool",
        tls_container_ref="str",
        ca_tls_container_ref="str",
        crl_container_ref="str",
        tls_ciphers="str",
        healthmonitor_id="str",
    ),
    columns={**_BASE_COLUMNS, "loadbalancer_id": "lb_id"},
)
MEMBER: Final = _child(
    domain.MEMBER,
    singular="member",
    plural="members",
    attributes=_attrs(
        address="str",
        protocol_port="int",
        weight="int",
        backup="bool",
        subnet_id="str",
        monitor_address="str",
        monitor_port="int",
        vnic_type="str",
    ),
    columns=_BASE_COLUMNS,
)
HEALTHMONITOR: Final = _child(
    domain.HEALTHMONITOR,
    singular="healthmonitor",
    plural="healthmonitors",
    attributes=_attrs(
        pool_id="str",
        type="str",
        delay="int",
        timeout="int",
        max_retries="int",
        max_retries_down="int",
        http_method="str",
        url_path="str",
        expected_codes="str",
        http_version="float",
        domain_name="str",
    ),
    columns={**_BASE_COLUMNS, "pool_id": "parent_id"},
)
L7POLICY: Final = _child(
    domain.L7POLICY,
    singular="l7policy",
    plural="l7policies",
    attributes=_attrs(
        listener_id="str",
        action="str",
        position="int",
        redirect_pool_id="str",
        redirect_url="str",
        redirect_prefix="str",
        redirect_http_code="int",
    ),
    columns={**_BASE_COLUMNS, "listener_id": "parent_id"},
)
L7RULE: Final = _child(
    domain.L7RULE,
    singular="rule",
    plural="rules",
    attributes=_attrs(
        type="str",
        compare_type="str",
        value="str",
        key="str",
        invert="bool",
    ),
    columns=_BASE_COLUMNS,
)

KINDS: Final = {
    k.key: k for k in (LOADBALANCER, LISTENER, POOL, MEMBER, HEALTHMONITOR, L7POLICY, L7RULE)
}

# Kinds outside the load balancer tree. Their views have other shapes (no lb_id or parent_id),
# so they are not in KINDS; lists of them go through the same query machinery.
FLAVOR: Final = Kind(
    key="flavor",
    singular="flavor",
    plural="flavors",
    label="Flavor",
    attributes={
        "id": "str",
        "name": "str",
        "description": "str",
        "enabled": "bool",
        "flavor_profile_id": "str",
    },
    columns={"id": "id"},
)
FLAVOR_PROFILE: Final = Kind(
    key="flavorprofile",
    singular="flavorprofile",
    plural="flavorprofiles",
    label="Flavor Profile",
    attributes={"id": "str", "name": "str", "provider_name": "str", "flavor_data": "str"},
    columns={"id": "id"},
    links="flavorprofile_links",
)
AVAILABILITY_ZONE: Final = Kind(
    key="availabilityzone",
    singular="availability_zone",
    plural="availability_zones",
    label="Availability Zone",
    attributes={
        "name": "str",
        "description": "str",
        "enabled": "bool",
        "availability_zone_profile_id": "str",
    },
    # Zones are keyed by name: the view's id column holds it.
    columns={"name": "id", "id": "id"},
)
AVAILABILITY_ZONE_PROFILE: Final = Kind(
    key="availabilityzoneprofile",
    singular="availability_zone_profile",
    plural="availability_zone_profiles",
    label="Availability Zone Profile",
    attributes={
        "id": "str",
        "name": "str",
        "provider_name": "str",
        "availability_zone_data": "str",
    },
    columns={"id": "id"},
    links="availability_zone_profile_links",
)
AMPHORA: Final = Kind(
    key="amphora",
    singular="amphora",
    plural="amphorae",
    label="Amphora",
    attributes={
        "id": "str",
        "loadbalancer_id": "str",
        "compute_id": "str",
        "lb_network_ip": "str",
        "vrrp_ip": "str",
        "ha_ip": "str",
        "vrrp_port_id": "str",
        "ha_port_id": "str",
        "cert_expiration": "str",
        "cert_busy": "bool",
        "role": "str",
        "status": "str",
        "vrrp_interface": "str",
        "vrrp_id": "int",
        "vrrp_priority": "int",
        "cached_zone": "str",
        "image_id": "str",
        "compute_flavor": "str",
        "created_at": "str",
        "updated_at": "str",
        # Not in the body: the owning project of the amphora's load balancer.
        "project_id": "str",
    },
    columns={"id": "id", "project_id": "project_id", "loadbalancer_id": "lb_id"},
)
CATALOG_KINDS: Final = {
    k.key: k for k in (FLAVOR, FLAVOR_PROFILE, AVAILABILITY_ZONE, AVAILABILITY_ZONE_PROFILE)
}
