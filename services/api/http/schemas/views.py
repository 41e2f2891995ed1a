"""The bodies the Octavia API answers with, as pydantic models: the OpenAPI document's response
schemas (``RESPONSE_BODIES``), checked against real answers by the tests.

Load balancer tree bodies are the domain models (``libs.common.domain.model``) as the read model
shapes them (``libs.common.readmodel.resource_bodies``): every field but those it drops, with
timestamps as Octavia's text and the relations it adds. Catalog bodies are their creation
events (``services.api.domain.catalog``), quota bodies follow ``quota_limits``, amphorae the
read model's ``amphora_body``. Every field is required and no other is allowed: an answer
has exactly these attributes (fewer only when the request names ``fields``).
"""

from __future__ import annotations

from types import GenericAlias
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, create_model

from libs.common.domain import model as domain
from libs.common.domain.amphora import AmphoraStatus
from services.api.adapters.views import STATS_FIELDS
from services.api.domain.catalog import SECTIONS
from services.api.domain.quota_limits import DEPRECATED_ALIASES, QUOTA_RESOURCES

_EXACT: Final = ConfigDict(extra="forbid")


class IdRef(BaseModel):
    """A related resource, by id."""

    model_config = _EXACT
    id: str


def exact_model(
    name: str,
    source: type[BaseModel],
    *,
    drop: tuple[str, ...] = (),
    add: dict[str, Any] | None = None,
    doc: str = "",
) -> type[BaseModel]:
    """``source``'s fields minus ``drop``, plus ``add`` (name -> type), all required, nothing
    else allowed."""
    fields: dict[str, Any] = {
        field: (info.annotation, ...)
        for field, info in source.model_fields.items()
        if field not in drop
    }
    fields.update({field: (annotation, ...) for field, annotation in (add or {}).items()})
    made: type[BaseModel] = create_model(name, __config__=_EXACT, __doc__=doc, **fields)
    return made


def _list_of(item: type[BaseModel]) -> Any:
    """``list[item]`` for a model made at run time."""
    return GenericAlias(list, (item,))


# What every tree body has beyond (or instead of) its domain model's fields.
_COMMON: Final = {
    "created_at": str,
    "updated_at": str | None,
    "tags": list[str],
    "tenant_id": str,
}


def _tree_body(
    source: type[domain.Resource], drop: tuple[str, ...] = (), **add: Any
) -> type[BaseModel]:
    return exact_model(
        source.__name__,
        source,
        drop=drop,
        add={**_COMMON, **add},
        doc=f"Octavia's {source.__name__} body.",
    )


LOADBALANCER: Final = _tree_body(
    domain.LoadBalancer,
    ("topology", "amphora_bounds", "autoscale", "provisioning_error"),
    vip_vnic_type=str,
    additional_vips=list[domain.AdditionalVip],
    vip_sg_ids=list[str],
    listeners=list[IdRef],
    pools=list[IdRef],
)
LISTENER: Final = _tree_body(
    domain.Listener,
    ("loadbalancer_id",),
    loadbalancers=list[IdRef],
    l7policies=list[IdRef],
    sni_container_refs=list[str],
)
POOL: Final = _tree_body(
    domain.Pool,
    ("loadbalancer_id",),
    loadbalancers=list[IdRef],
    listeners=list[IdRef],
    members=list[IdRef],
    healthmonitor_id=str | None,
)
MEMBER: Final = _tree_body(domain.Member, ("pool_id",))
HEALTHMONITOR: Final = _tree_body(domain.HealthMonitor, ("pool_id",), pools=list[IdRef])
L7POLICY: Final = _tree_body(domain.L7Policy, rules=list[IdRef])
L7RULE: Final = _tree_body(domain.L7Rule, ("l7policy_id",))

# The answer to a single-call create (listeners or pools given): children in full.
_L7POLICY_GRAPH: Final = exact_model(
    "L7PolicyGraph", L7POLICY, add={"rules": _list_of(L7RULE)}, doc="An L7 policy with its rules."
)
_LISTENER_GRAPH: Final = exact_model(
    "ListenerGraph",
    LISTENER,
    add={"l7policies": _list_of(_L7POLICY_GRAPH)},
    doc="A listener with its L7 policies in full.",
)
_POOL_GRAPH: Final = exact_model(
    "PoolGraph",
    POOL,
    add={"members": _list_of(MEMBER), "healthmonitor": HEALTHMONITOR | None},
    doc="A pool with its members and health monitor in full.",
)
LOADBALANCER_GRAPH: Final = exact_model(
    "LoadBalancerGraph",
    LOADBALANCER,
    add={"listeners": _list_of(_LISTENER_GRAPH), "pools": _list_of(_POOL_GRAPH)},
    doc="A load balancer created in one call, with its listeners and pools in full.",
)

_CATALOG: Final = {
    section.category: exact_model(
        section.created.__name__.removesuffix("Created"),
        section.created,
        doc=f"Octavia's {section.label.lower()} body.",
    )
    for section in SECTIONS
}

QUOTA: Final = exact_model(
    "Quota",
    BaseModel,
    add={
        "project_id": str,
        **{name: int | None for name in (*QUOTA_RESOURCES, *DEPRECATED_ALIASES)},
        "tenant_id": str,
    },
    doc="A project's limits (-1: unlimited; null in a list: the default applies); "
    "load_balancer and health_monitor repeat loadbalancer and healthmonitor.",
)

AMPHORA: Final = exact_model(
    "Amphora",
    BaseModel,
    add={
        "id": str,
        "loadbalancer_id": str | None,
        "compute_id": str,
        "lb_network_ip": str,
        "vrrp_ip": str | None,
        "ha_ip": str | None,
        "vrrp_port_id": None,
        "ha_port_id": None,
        "cert_expiration": str | None,
        "cert_busy": bool,
        "role": str,
        "status": AmphoraStatus,
        "vrrp_interface": None,
        "vrrp_id": int | None,
        "vrrp_priority": int | None,
        "cached_zone": str | None,
        "image_id": None,
        "compute_flavor": str,
        "created_at": str,
        "updated_at": str | None,
    },
    doc="Octavia's amphora body.",
)

STATS: Final = exact_model(
    "Stats",
    BaseModel,
    add=dict.fromkeys(STATS_FIELDS, int),
    doc="Traffic counters summed over the amphorae's reports.",
)
AMPHORA_STATS: Final = exact_model(
    "AmphoraListenerStats",
    STATS,
    add={"id": str, "listener_id": str, "loadbalancer_id": str},
    doc="One listener's counters as one amphora reported them.",
)

NAMED: Final = exact_model(
    "Described",
    BaseModel,
    add={"name": str, "description": str},
    doc="A provider or capability: its name and what it means.",
)

_STATUS: Final = {"id": str, "name": str, "operating_status": str, "provisioning_status": str}
_MONITOR_STATUS: Final = exact_model(
    "HealthMonitorStatus", BaseModel, add={**_STATUS, "type": str}, doc="A monitor's statuses."
)
_MEMBER_STATUS: Final = exact_model(
    "MemberStatus",
    BaseModel,
    add={**_STATUS, "address": str, "protocol_port": int},
    doc="A member's statuses.",
)
_POOL_STATUS: Final = exact_model(
    "PoolStatus",
    BaseModel,
    add={**_STATUS, "health_monitor": _MONITOR_STATUS | None, "members": _list_of(_MEMBER_STATUS)},
    doc="A pool's statuses with its monitor's and members'.",
)
_LISTENER_STATUS: Final = exact_model(
    "ListenerStatus",
    BaseModel,
    add={**_STATUS, "pools": _list_of(_POOL_STATUS)},
    doc="A listener's statuses with its pools'.",
)
_LOADBALANCER_STATUS: Final = exact_model(
    "LoadBalancerStatus",
    BaseModel,
    add={**_STATUS, "listeners": _list_of(_LISTENER_STATUS)},
    doc="A load balancer's statuses with its listeners'.",
)
STATUS_TREE: Final = exact_model(
    "StatusTree",
    BaseModel,
    add={"loadbalancer": _LOADBALANCER_STATUS},
    doc="The status tree of a load balancer.",
)

# Response key (the envelope's one key, singular or plural) -> the model of one item.
RESPONSE_BODIES: Final[dict[str, type[BaseModel]]] = {
    "loadbalancer": LOADBALANCER,
    "loadbalancers": LOADBALANCER,
    "listener": LISTENER,
    "listeners": LISTENER,
    "pool": POOL,
    "pools": POOL,
    "member": MEMBER,
    "members": MEMBER,
    "healthmonitor": HEALTHMONITOR,
    "healthmonitors": HEALTHMONITOR,
    "l7policy": L7POLICY,
    "l7policies": L7POLICY,
    "rule": L7RULE,
    "rules": L7RULE,
    "flavor": _CATALOG["flavor"],
    "flavors": _CATALOG["flavor"],
    "flavorprofile": _CATALOG["flavorprofile"],
    "flavorprofiles": _CATALOG["flavorprofile"],
    "availability_zone": _CATALOG["availabilityzone"],
    "availability_zones": _CATALOG["availabilityzone"],
    "availability_zone_profile": _CATALOG["availabilityzoneprofile"],
    "availability_zone_profiles": _CATALOG["availabilityzoneprofile"],
    "quota": QUOTA,
    "quotas": QUOTA,
    "amphora": AMPHORA,
    "amphorae": AMPHORA,
    "amphora_stats": AMPHORA_STATS,
    "stats": STATS,
    "statuses": STATUS_TREE,
    "providers": NAMED,
    "flavor_capabilities": NAMED,
    "availability_zone_capabilities": NAMED,
}
# Keys whose value is a list although not paged (no links).
LIST_BODIES: Final = frozenset(
    {"amphora_stats", "providers", "flavor_capabilities", "availability_zone_capabilities"}
)

LINK: Final = exact_model(
    "Link", BaseModel, add={"href": str, "rel": str}, doc="A link: its URL and relation."
)
VERSION: Final = exact_model(
    "Version",
    BaseModel,
    add={"id": str, "status": str, "updated": str, "links": _list_of(LINK)},
    doc="One API version (v2.0 ... v2.30; the newest is CURRENT).",
)
VERSIONS: Final = exact_model(
    "Versions",
    BaseModel,
    add={"versions": _list_of(VERSION)},
    doc="The version document on /.",
)
