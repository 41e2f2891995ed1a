"""The read-only Neutron v2.0 subset clients assume beside Octavia.

``RESOURCES`` is the table of served collections (path, body keys, filterable attributes,
Neutron's not-found text); ``NeutronApi`` answers each from a source: networks and subnets are
operator configuration (``NetworkSettings``), ports are the VIP ports of the load balancers
the caller can see, floating IPs and QoS policies are empty collections (Fulcrum allocates
none). A new collection is one ``NeutronResource`` row in ``RESOURCES`` plus its source in
``NeutronApi``.

Every request needs a valid token (as Neutron behind keystonemiddleware). Lists follow
Neutron: a filter on any attribute of the resource (repeated values OR-ed,
``fixed_ips=ip_address=X`` / ``subnet_id=Y`` on ports), ``fields``, ``sort_key``/``sort_dir``,
``limit``/``marker`` with ``<collection>_links``; a filter on anything else is refused with
Neutron's 400 ``HTTPBadRequest``. ``GET /v2.0/{collection}/{id}`` answers Neutron's 404 body
for unknown ids.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from libs.common.settings import SubnetConfig
from services.api.http.context import request_context
from services.api.http.routing import path_id

Body = dict[str, Any]
# The bodies of one collection visible to the request's caller.
Source = Callable[[web.Request], Awaitable[list[Body]]]
# Returns the VIP ports (Neutron bodies) visible to the request's caller.
PortSource = Source

# Query parameters that are not filters (Neutron's api_common).
_CONTROL_PARAMS: Final = frozenset(
    {"fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse"}
)
_TAG_FILTERS: Final = frozenset({"tags", "tags-any", "not-tags", "not-tags-any"})
_COMMON: Final = (
    "id",
    "name",
    "description",
    "project_id",
    "tenant_id",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
)


@dataclass(frozen=True)
class NeutronResource:
    """One read-only collection: ``GET /v2.0/{path}`` and ``GET /v2.0/{path}/{id}``."""

    path: str  # under /v2.0: "floatingips", "qos/policies"
    collection: str  # the list body's key: "floatingips", "policies"
    member: str  # the show body's key: "floatingip", "policy"
    label: str  # "Floating IP" in "Floating IP <id> could not be found"
    not_found_type: str  # "FloatingIPNotFound"
    attributes: frozenset[str]  # what may be filtered on (and is rendered)
    not_found_period: bool = True  # Neutron's texts end with "." except FloatingIPNotFound

    def not_found(self, resource_id: str) -> web.Response:
        period = "." if self.not_found_period else ""
        message = f"{self.label} {resource_id} could not be found{period}"
        return neutron_error(404, self.not_found_type, message)


def _attributes(*names: str) -> frozenset[str]:
    return frozenset((*_COMMON, *names))


NETWORKS: Final = NeutronResource(
    "networks",
    "networks",
    "network",
    "Network",
    "NetworkNotFound",
    _attributes(
        "admin_state_up",
        "status",
        "subnets",
        "shared",
        "router:external",
        "mtu",
        "availability_zones",
        "availability_zone_hints",
        "port_security_enabled",
        "provider:network_type",
        "provider:physical_network",
        "provider:segmentation_id",
        "qos_policy_id",
        "is_default",
        "ipv4_address_scope",
        "ipv6_address_scope",
        "dns_domain",
        "l2_adjacency",
    ),
)
SUBNETS: Final = NeutronResource(
    "subnets",
    "subnets",
    "subnet",
    "Subnet",
    "SubnetNotFound",
    _attributes(
        "network_id",
        "cidr",
        "ip_version",
        "gateway_ip",
        "allocation_pools",
        "enable_dhcp",
        "dns_nameservers",
        "host_routes",
        "ipv6_ra_mode",
        "ipv6_address_mode",
        "subnetpool_id",
        "segment_id",
        "service_types",
        "dns_publish_fixed_ip",
    ),
)
PORTS: Final = NeutronResource(
    "ports",
    "ports",
    "port",
    "Port",
    "PortNotFound",
    _attributes(
        "network_id",
        "fixed_ips",
        "mac_address",
        "admin_state_up",
        "status",
        "device_id",
        "device_owner",
        "allowed_address_pairs",
        "security_groups",
        "port_security_enabled",
        "qos_policy_id",
        "binding:host_id",
        "binding:vnic_type",
        "binding:vif_type",
        "dns_name",
        "ip_allocation",
        "ip_address_substr",
    ),
)
FLOATING_IPS: Final = NeutronResource(
    "floatingips",
    "floatingips",
    "floatingip",
    "Floating IP",
    "FloatingIPNotFound",
    _attributes(
        "floating_network_id",
        "floating_ip_address",
        "fixed_ip_address",
        "port_id",
        "router_id",
        "status",
        "qos_policy_id",
        "dns_domain",
        "dns_name",
        "port_details",
        "port_forwardings",
    ),
    not_found_period=False,
)
QOS_POLICIES: Final = NeutronResource(
    "qos/policies",
    "policies",
    "policy",
    "QoS policy",
    "QosPolicyNotFound",
    _attributes("shared", "is_default", "rules"),
)
RESOURCES: Final[tuple[NeutronResource, ...]] = (
    NETWORKS,
    SUBNETS,
    PORTS,
    FLOATING_IPS,
    QOS_POLICIES,
)


def neutron_error(status: int, kind: str, message: str) -> web.Response:
    """Neutron's fault body ``{"NeutronError": {"type", "message", "detail"}}``."""
    return web.json_response(
        {"NeutronError": {"type": kind, "message": message, "detail": ""}}, status=status
    )


def _network_body(subnets: Sequence[SubnetConfig], network_id: str) -> Body:
    members = [s for s in subnets if s.network_id == network_id]
    first = members[0]
    return {
        "id": network_id,
        "name": first.network_name,
        "description": "",
        "status": "ACTIVE",
        "admin_state_up": True,
        "shared": True,
        "router:external": True,
        "subnets": [s.id for s in members],
        "project_id": first.project_id,
        "tenant_id": first.project_id,
        "mtu": 1500,
        "availability_zones": [],
        "availability_zone_hints": [],
        "port_security_enabled": True,
        "qos_policy_id": None,
        "is_default": False,
        "ipv4_address_scope": None,
        "ipv6_address_scope": None,
        "tags": [],
    }


def subnet_body(subnet: SubnetConfig) -> Body:
    network = ipaddress.ip_network(subnet.cidr, strict=False)
    return {
        "id": subnet.id,
        "name": subnet.name,
        "description": "",
        "network_id": subnet.network_id,
        "cidr": subnet.cidr,
        "ip_version": network.version,
        "gateway_ip": subnet.gateway_ip,
        "allocation_pools": [{"start": subnet.allocation_start, "end": subnet.allocation_end}],
        "enable_dhcp": False,
        "dns_nameservers": [],
        "host_routes": [],
        "ipv6_ra_mode": None,
        "ipv6_address_mode": None,
        "subnetpool_id": None,
        "service_types": [],
        "project_id": subnet.project_id,
        "tenant_id": subnet.project_id,
        "tags": [],
    }


def vip_port_body(lb: Body) -> Body:
    """The VIP port of a load balancer body (as the API renders it), as Octavia creates it:
    ``octavia-lb-<id>``, owned by ``Octavia``, administratively down (it only holds the IP)."""
    fixed_ips = [{"subnet_id": lb["vip_subnet_id"], "ip_address": lb["vip_address"]}]
    fixed_ips += [
        {"subnet_id": extra["subnet_id"], "ip_address": extra["ip_address"]}
        for extra in lb.get("additional_vips") or ()
        if extra.get("ip_address")
    ]
    return {
        "id": lb["vip_port_id"],
        "name": f"octavia-lb-{lb['id']}",
        "description": "",
        "network_id": lb["vip_network_id"],
        "fixed_ips": fixed_ips,
        "device_owner": "Octavia",
        "device_id": f"lb-{lb['id']}",
        "admin_state_up": False,
        "status": "DOWN",
        "project_id": lb["project_id"],
        "tenant_id": lb["project_id"],
        "mac_address": "fa:16:3e:00:00:00",
        "allowed_address_pairs": [],
        "security_groups": [],
        "port_security_enabled": True,
        "qos_policy_id": lb.get("vip_qos_policy_id"),
        "binding:vnic_type": lb.get("vip_vnic_type") or "normal",
        "tags": [],
    }


def _lowered(values: Sequence[str]) -> set[str]:
    return {v.lower() for v in values}


def _value_matches(value: Any, wanted: Sequence[str]) -> bool:
    if isinstance(value, list):
        return any(_value_matches(v, wanted) for v in value)
    if isinstance(value, bool) or value is None:
        return str(value).lower() in _lowered(wanted)
    return str(value) in wanted


def _fixed_ips_match(port: Body, wanted: Sequence[str]) -> bool:
    """``fixed_ips=ip_address=X&fixed_ips=subnet_id=Y``: one fixed IP meets every key."""
    criteria: dict[str, set[str]] = {}
    for spec in wanted:
        key, _, value = spec.partition("=")
        criteria.setdefault(key, set()).add(value)
    return any(
        all(str(ip.get(key)) in values for key, values in criteria.items())
        for ip in port.get("fixed_ips", [])
    )


def _tags_match(body: Body, query: Mapping[str, Sequence[str]]) -> bool:
    tags = set(body.get("tags") or ())

    def wanted(key: str) -> set[str]:
        return {t for value in query.get(key, ()) for t in value.split(",") if t}

    if (every := wanted("tags")) and not every <= tags:
        return False
    if (some := wanted("tags-any")) and not some & tags:
        return False
    if (none_of := wanted("not-tags")) and none_of <= tags:
        return False
    return not ((not_any := wanted("not-tags-any")) and not_any & tags)


def _matches(body: Body, filters: Mapping[str, Sequence[str]]) -> bool:
    for key, wanted in filters.items():
        if key in _TAG_FILTERS:
            continue
        if key == "fixed_ips":
            if not _fixed_ips_match(body, wanted):
                return False
        elif key == "ip_address_substr":
            addresses = [ip.get("ip_address", "") for ip in body.get("fixed_ips", [])]
            if not any(w in a for w in wanted for a in addresses):
                return False
        elif not _value_matches(body.get(key), wanted):
            return False
    return _tags_match(body, filters)


class NeutronApi:
    """Answers every ``RESOURCES`` collection from its source."""

    def __init__(self, subnets: Sequence[SubnetConfig], ports: PortSource) -> None:
        configured = list(subnets)
        network_ids = dict.fromkeys(s.network_id for s in configured)
        networks = [_network_body(configured, n) for n in network_ids]
        subnet_bodies = [subnet_body(s) for s in configured]
        self._sources: dict[str, Source] = {
            NETWORKS.path: _constant(networks),
            SUBNETS.path: _constant(subnet_bodies),
            PORTS.path: ports,
            FLOATING_IPS.path: _constant([]),
            QOS_POLICIES.path: _constant([]),
        }

    async def list_collection(
        self, resource: NeutronResource, request: web.Request
    ) -> web.Response:
        await request_context(request)  # authenticates: 401 without a valid token
        query = request.query
        filters = {k: query.getall(k) for k in query if k not in _CONTROL_PARAMS}
        invalid = sorted(
            k for k in filters if k not in resource.attributes and k not in _TAG_FILTERS
        )
        if invalid:
            message = f"{invalid} is invalid attribute for filtering"
            return neutron_error(400, "HTTPBadRequest", message)
        found = [b for b in await self._sources[resource.path](request) if _matches(b, filters)]
        found = _sorted(found, query.getall("sort_key", []), query.getall("sort_dir", []))
        page, links = _page(found, request, resource)
        payload: Body = {resource.collection: [_fields(b, request) for b in page]}
        if links:
            payload[f"{resource.collection}_links"] = links
        return web.json_response(payload)

    async def show_member(self, resource: NeutronResource, request: web.Request) -> web.Response:
        await request_context(request)
        wanted = path_id(request, "id")
        for body in await self._sources[resource.path](request):
            if body["id"] == wanted:
                return web.json_response({resource.member: _fields(body, request)})
        return resource.not_found(wanted)


def _constant(bodies: list[Body]) -> Source:
    async def source(request: web.Request) -> list[Body]:
        return bodies

    return source


def _fields(body: Body, request: web.Request) -> Body:
    fields = request.query.getall("fields", [])
    return {k: v for k, v in body.items() if k in fields} if fields else body


def _sorted(bodies: list[Body], keys: Sequence[str], dirs: Sequence[str]) -> list[Body]:
    directions = [*dirs, *["asc"] * len(keys)]
    for key, direction in reversed(list(zip(keys, directions[: len(keys)], strict=True))):
        bodies = sorted(
            bodies, key=lambda b: (b.get(key) is None, str(b.get(key))), reverse=direction == "desc"
        )
    return bodies


def _page(
    bodies: list[Body], request: web.Request, resource: NeutronResource
) -> tuple[list[Body], list[dict[str, str]]]:
    marker = request.query.get("marker")
    if marker is not None:
        ids = [b["id"] for b in bodies]
        bodies = bodies[ids.index(marker) + 1 :] if marker in ids else bodies
    limit_text = request.query.get("limit", "")
    if not limit_text.isdigit() or int(limit_text) == 0 or len(bodies) <= int(limit_text):
        return bodies, []
    page = bodies[: int(limit_text)]
    query = {k: v for k, v in request.query.items() if k != "marker"}
    url = request.url.with_query({**query, "marker": page[-1]["id"]})
    return page, [{"rel": "next", "href": str(url)}]
