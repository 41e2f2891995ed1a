"""The explicit mapping between the aggregate's models and the payload types of its events.

Each table maps a domain field to the stored field that holds it. A field renamed in
``model.py`` keeps its stored name by changing only the key here; a test fails when a table
and its model or payload type drift apart. Values cross as plain data (enums as their values),
so what is stored never depends on the domain's classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, Final, TypeVar

from pydantic import BaseModel

from libs.common.domain import model as m
from libs.common.domain.model import Resource
from libs.common.events import Changes
from libs.common.events import loadbalancer as ev

FieldMap = Mapping[str, str]
R = TypeVar("R", bound=Resource)


def _same(names: str) -> dict[str, str]:
    """Fields stored under their domain name."""
    return {name: name for name in names.split()}


_RESOURCE: Final = _same(
    "id project_id name description admin_state_up provisioning_status operating_status tags "
    "created_at updated_at"
)
SESSION_PERSISTENCE: Final = _same("type cookie_name persistence_timeout persistence_granularity")
ADDITIONAL_VIP: Final = _same("subnet_id ip_address")
AMPHORA_BOUNDS: Final = _same("amphora_min amphora_max")
LOADBALANCER: Final = {
    **_RESOURCE,
    **_same(
        "vip_address vip_port_id vip_subnet_id vip_network_id vip_qos_policy_id vip_sg_ids "
        "additional_vips provider flavor_id availability_zone topology amphora_bounds "
        "autoscale provisioning_error"
    ),
}
LISTENER: Final = {
    **_RESOURCE,
    **_same(
        "loadbalancer_id protocol protocol_port connection_limit default_pool_id "
        "default_tls_container_ref sni_container_refs insert_headers timeout_client_data "
        "timeout_member_connect timeout_member_data timeout_tcp_inspect allowed_cidrs "
        "tls_ciphers tls_versions alpn_protocols client_ca_tls_container_ref "
        "client_authentication client_crl_container_ref hsts_max_age hsts_include_subdomains "
        "hsts_preload"
    ),
}
POOL: Final = {
    **_RESOURCE,
    **_same(
        "loadbalancer_id protocol lb_algorithm session_persistence tls_enabled "
        "tls_container_ref ca_tls_container_ref crl_container_ref tls_ciphers tls_versions "
        "alpn_protocols"
    ),
}
MEMBER: Final = {
    **_RESOURCE,
    **_same(
        "pool_id address protocol_port weight backup subnet_id monitor_address monitor_port "
        "vnic_type"
    ),
}
HEALTHMONITOR: Final = {
    **_RESOURCE,
    **_same(
        "pool_id type delay timeout max_retries max_retries_down http_method url_path "
        "expected_codes http_version domain_name"
    ),
}
L7POLICY: Final = {
    **_RESOURCE,
    **_same(
        "listener_id action position redirect_pool_id redirect_url redirect_prefix "
        "redirect_http_code"
    ),
}
L7RULE: Final = {**_RESOURCE, **_same("l7policy_id type compare_type value key invert")}
# Nested types (SessionPersistence: ev.SessionPersistenceSnapshot; AdditionalVip:
# ev.AdditionalVipSnapshot; AmphoraBounds: ev.AmphoraBoundsSnapshot), by the field holding
# one or a tuple of them.
_NESTED: Final[dict[str, FieldMap]] = {
    "session_persistence": SESSION_PERSISTENCE,
    "additional_vips": ADDITIONAL_VIP,
    "amphora_bounds": AMPHORA_BOUNDS,
}
# Fields an update never carries: identity and creation, and the update time (stored beside).
UNCHANGEABLE: Final = frozenset({"id", "project_id", "created_at", "updated_at"})


# domain model -> (field map, snapshot type, changes type)
TABLES: Final[dict[type[Resource], tuple[FieldMap, type[BaseModel], type[Changes]]]] = {
    m.LoadBalancer: (LOADBALANCER, ev.LoadBalancerSnapshot, ev.LoadBalancerChanges),
    m.Listener: (LISTENER, ev.ListenerSnapshot, ev.ListenerChanges),
    m.Pool: (POOL, ev.PoolSnapshot, ev.PoolChanges),
    m.Member: (MEMBER, ev.MemberSnapshot, ev.MemberChanges),
    m.HealthMonitor: (HEALTHMONITOR, ev.HealthMonitorSnapshot, ev.HealthMonitorChanges),
    m.L7Policy: (L7POLICY, ev.L7PolicySnapshot, ev.L7PolicyChanges),
    m.L7Rule: (L7RULE, ev.L7RuleSnapshot, ev.L7RuleChanges),
}


def _out(name: str, value: Any) -> Any:
    """A domain value as plain stored data."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, BaseModel):
        fields = _NESTED[name]
        return {stored: _out(attr, getattr(value, attr)) for attr, stored in fields.items()}
    if isinstance(value, dict) and name in _NESTED:
        fields = _NESTED[name]
        return {fields[k]: _out(k, v) for k, v in value.items() if k in fields}
    if isinstance(value, tuple | list) and name in _NESTED:
        return tuple(_out(name, item) for item in value)
    return value


def _in(name: str, value: Any) -> Any:
    """A stored value as domain data (the domain model validates it)."""
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, dict) and name in _NESTED:
        return {attr: value[stored] for attr, stored in _NESTED[name].items() if stored in value}
    if isinstance(value, tuple | list) and name in _NESTED:
        return tuple(_in(name, item) for item in value)
    return value


def snapshot(resource: Resource) -> Any:
    """The stored snapshot of ``resource`` (a ``*Snapshot`` of its kind)."""
    fields, snapshot_type, _ = TABLES[type(resource)]
    data = {stored: _out(attr, getattr(resource, attr)) for attr, stored in fields.items()}
    return snapshot_type.model_validate(data)


def restored(model: type[R], stored: BaseModel) -> R:
    """The domain ``model`` a stored snapshot describes."""
    fields = TABLES[model][0]
    return model.model_validate({attr: _in(attr, getattr(stored, s)) for attr, s in fields.items()})


def changes(model: type[Resource], given: dict[str, Any]) -> Any:
    """The stored ``*Changes`` of domain ``given``; fields the model lacks are dropped, as the
    model itself ignores them."""
    fields, _, changes_type = TABLES[model]
    data = {
        fields[attr]: _out(attr, value)
        for attr, value in given.items()
        if attr in fields and attr not in UNCHANGEABLE
    }
    return changes_type.model_validate(data)


def applied(model: type[Resource], stored: Changes) -> dict[str, Any]:
    """The domain changes a stored ``*Changes`` sets."""
    fields = TABLES[model][0]
    given = stored.given()
    return {attr: _in(attr, given[s]) for attr, s in fields.items() if s in given}
