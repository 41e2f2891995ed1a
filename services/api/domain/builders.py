"""Domain resources from validated input: ids, defaults, timestamps and owner filled in.

Input dicts hold only what the client sent (``exclude_unset`` dumps, JSON values); absent
attributes take the domain model's defaults, which are Octavia's. Pure.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, TypeVar

from libs.common.domain.model import (
    DEFAULT_TIMEOUT_CLIENT_DATA,
    DEFAULT_TIMEOUT_MEMBER_CONNECT,
    DEFAULT_TIMEOUT_MEMBER_DATA,
    DEFAULT_TIMEOUT_TCP_INSPECT,
    AmphoraBounds,
    HealthMonitor,
    L7Policy,
    L7Rule,
    Listener,
    ListenerProtocol,
    LoadBalancer,
    Member,
    OperatingStatus,
    Pool,
    Resource,
)
from services.api.domain import rules

R = TypeVar("R", bound=Resource)

# On PUT, an explicit null resets these attributes to their defaults ...
_RESETS: Final[dict[str, Any]] = {
    "name": "",
    "description": "",
    "tags": [],
    "connection_limit": -1,
    "timeout_client_data": DEFAULT_TIMEOUT_CLIENT_DATA,
    "timeout_member_connect": DEFAULT_TIMEOUT_MEMBER_CONNECT,
    "timeout_member_data": DEFAULT_TIMEOUT_MEMBER_DATA,
    "timeout_tcp_inspect": DEFAULT_TIMEOUT_TCP_INSPECT,
    "insert_headers": {},
    "sni_container_refs": [],
    "client_authentication": "NONE",
    "hsts_include_subdomains": False,
    "hsts_preload": False,
    "weight": 1,
    "backup": False,
    "max_retries_down": 3,
    "invert": False,
    "tls_enabled": False,
}
# ... and on these it means "no change" (they cannot be unset).
_KEEP_ON_NULL: Final = frozenset(
    {
        "admin_state_up",
        "lb_algorithm",
        "delay",
        "timeout",
        "max_retries",
        "type",
        "compare_type",
        "value",
        "action",
        "position",
    }
)


def _data(model: type[R], fields: dict[str, Any]) -> dict[str, Any]:
    """The client's attributes the model knows, without nulls (the model's defaults apply)."""
    known = model.model_fields
    return {k: v for k, v in fields.items() if v is not None and k in known}


def update_changes(given: dict[str, Any]) -> dict[str, Any]:
    """A PUT body as changes: nulls reset or are dropped, as Octavia treats them."""
    changes: dict[str, Any] = {}
    for name, value in given.items():
        if value is None:
            if name in _KEEP_ON_NULL:
                continue
            changes[name] = _RESETS.get(name)
        else:
            changes[name] = value
    return changes


def new_loadbalancer(
    fields: dict[str, Any],
    *,
    lb_id: str,
    project_id: str,
    vip: dict[str, Any],
    provider: str,
    topology: str,
    now: datetime,
    amphora_bounds: AmphoraBounds | None = None,
    autoscale: dict[str, float] | None = None,
) -> LoadBalancer:
    data = _data(LoadBalancer, fields)
    for name in (
        "amphora_bounds",
        "autoscale",
        "vip_address",
        "vip_port_id",
        "vip_subnet_id",
        "vip_network_id",
        "additional_vips",
        "project_id",
    ):
        data.pop(name, None)
    return LoadBalancer(
        **data,
        **vip,
        id=lb_id,
        project_id=project_id,
        provider=provider,
        topology=topology,
        amphora_bounds=amphora_bounds,
        autoscale=autoscale or {},
        created_at=now,
    )


def new_listener(
    fields: dict[str, Any], *, listener_id: str, lb_id: str, project_id: str, now: datetime
) -> Listener:
    data = _data(Listener, fields)
    if data.get("protocol") == ListenerProtocol.TERMINATED_HTTPS.value:
        data.setdefault("tls_versions", rules.DEFAULT_TLS_VERSIONS)
        data.setdefault("alpn_protocols", rules.DEFAULT_ALPN_PROTOCOLS)
        data.setdefault("tls_ciphers", rules.DEFAULT_TLS_CIPHERS)
    data.update(id=listener_id, loadbalancer_id=lb_id, project_id=project_id, created_at=now)
    return Listener(**data)


def new_pool(
    fields: dict[str, Any], *, pool_id: str, lb_id: str, project_id: str, now: datetime
) -> Pool:
    data = _data(Pool, fields)
    data.update(id=pool_id, loadbalancer_id=lb_id, project_id=project_id, created_at=now)
    return Pool(**data)


def new_member(
    fields: dict[str, Any],
    *,
    member_id: str,
    pool_id: str,
    project_id: str,
    monitored: bool,
    now: datetime,
) -> Member:
    """A pool without a health monitor reports its members NO_MONITOR (Octavia)."""
    data = _data(Member, fields)
    data.update(id=member_id, pool_id=pool_id, project_id=project_id, created_at=now)
    if not monitored:
        data["operating_status"] = OperatingStatus.NO_MONITOR
    return Member(**data)


def new_healthmonitor(
    fields: dict[str, Any], *, hm_id: str, pool_id: str, project_id: str, now: datetime
) -> HealthMonitor:
    data = _data(HealthMonitor, fields)
    data.update(id=hm_id, pool_id=pool_id, project_id=project_id, created_at=now)
    hm = HealthMonitor(**data)
    defaults = rules.normalized_healthmonitor(hm)
    return hm.updated(defaults) if defaults else hm


def new_l7policy(
    fields: dict[str, Any],
    *,
    policy_id: str,
    listener_id: str,
    project_id: str,
    position: int,
    now: datetime,
) -> L7Policy:
    settled = rules.settle_l7policy({}, _data(L7Policy, fields))
    settled = {k: v for k, v in settled.items() if v is not None}
    settled.update(
        id=policy_id,
        listener_id=listener_id,
        project_id=project_id,
        position=position,
        created_at=now,
    )
    return L7Policy(**settled)


def new_l7rule(
    fields: dict[str, Any], *, rule_id: str, policy_id: str, project_id: str, now: datetime
) -> L7Rule:
    data = _data(L7Rule, fields)
    data.update(id=rule_id, l7policy_id=policy_id, project_id=project_id, created_at=now)
    return L7Rule(**data)
