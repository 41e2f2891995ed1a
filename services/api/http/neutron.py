"""The read-only Neutron v2.0 subset clients use to resolve VIP and member subnets.

Networks and subnets are operator configuration (``NetworkSettings``); ports are the VIP ports
of the load balancers the caller can see. Lists honour ``id`` and ``name`` filters (and any
other top-level field), as ``openstack ... --vip-subnet NAME`` and openstacksdk's find calls
need. ``GET /v2.0/{kind}/{id}`` answers Neutron's 404 body for unknown ids.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from libs.common.settings import SubnetConfig

# Returns the VIP ports (Neutron bodies) visible to the request's caller.
PortSource = Callable[[web.Request], "Any"]


def _network_body(subnets: Sequence[SubnetConfig], network_id: str) -> dict[str, Any]:
    members = [s for s in subnets if s.network_id == network_id]
    first = members[0]
    return {
        "id": network_id,
        "name": first.network_name,
        "status": "ACTIVE",
        "admin_state_up": True,
        "shared": True,
        "router:external": True,
        "subnets": [s.id for s in members],
        "project_id": first.project_id,
        "tenant_id": first.project_id,
        "mtu": 1500,
        "availability_zones": [],
        "tags": [],
    }


def subnet_body(subnet: SubnetConfig) -> dict[str, Any]:
    network = ipaddress.ip_network(subnet.cidr, strict=False)
    return {
        "id": subnet.id,
        "name": subnet.name,
        "network_id": subnet.network_id,
        "cidr": subnet.cidr,
        "ip_version": network.version,
        "gateway_ip": subnet.gateway_ip,
        "allocation_pools": [{"start": subnet.allocation_start, "end": subnet.allocation_end}],
        "enable_dhcp": False,
        "dns_nameservers": [],
        "host_routes": [],
        "project_id": subnet.project_id,
        "tenant_id": subnet.project_id,
        "tags": [],
    }


def _matches(body: dict[str, Any], query: web.Request) -> bool:
    for key in set(query.query.keys()) - {"fields", "limit", "marker", "sort_key", "sort_dir"}:
        wanted = query.query.getall(key)
        value = body.get(key)
        if str(value).lower() not in [w.lower() for w in wanted] and value not in wanted:
            return False
    return True


def _fields(body: dict[str, Any], request: web.Request) -> dict[str, Any]:
    fields = request.query.getall("fields", [])
    return {k: v for k, v in body.items() if k in fields} if fields else body


def not_found(kind: str, resource_id: str) -> web.Response:
    label = {"networks": "Network", "subnets": "Subnet", "ports": "Port"}[kind]
    message = f"{label} {resource_id} could not be found."
    return web.json_response(
        {"NeutronError": {"type": f"{label}NotFound", "message": message, "detail": ""}},
        status=404,
    )


def vip_port_body(lb: dict[str, Any]) -> dict[str, Any]:
    """The VIP port of a load balancer body (as the API renders it)."""
    return {
        "id": lb["vip_port_id"],
        "name": f"octavia-lb-{lb['id']}",
        "network_id": lb["vip_network_id"],
        "fixed_ips": [{"subnet_id": lb["vip_subnet_id"], "ip_address": lb["vip_address"]}],
        "device_owner": "Octavia",
        "device_id": f"lb-{lb['id']}",
        "admin_state_up": False,
        "status": "DOWN",
        "project_id": lb["project_id"],
        "tenant_id": lb["project_id"],
        "mac_address": "fa:16:3e:00:00:00",
        "tags": [],
    }


class NeutronApi:
    def __init__(self, subnets: Sequence[SubnetConfig], ports: PortSource) -> None:
        self._subnets = list(subnets)
        self._ports = ports

    def routes(self, prefix: str = "/v2.0") -> list[web.RouteDef]:
        return [
            web.get(f"{prefix}/networks", self.list_networks),
            web.get(f"{prefix}/networks/{{id}}", self.show_network),
            web.get(f"{prefix}/subnets", self.list_subnets),
            web.get(f"{prefix}/subnets/{{id}}", self.show_subnet),
            web.get(f"{prefix}/ports", self.list_ports),
            web.get(f"{prefix}/ports/{{id}}", self.show_port),
        ]

    def _networks(self) -> list[dict[str, Any]]:
        ids = dict.fromkeys(s.network_id for s in self._subnets)
        return [_network_body(self._subnets, n) for n in ids]

    def _subnet_bodies(self) -> list[dict[str, Any]]:
        return [subnet_body(s) for s in self._subnets]

    async def list_networks(self, request: web.Request) -> web.Response:
        found = [_fields(n, request) for n in self._networks() if _matches(n, request)]
        return web.json_response({"networks": found})

    async def show_network(self, request: web.Request) -> web.Response:
        return self._show("networks", self._networks(), request)

    async def list_subnets(self, request: web.Request) -> web.Response:
        found = [_fields(s, request) for s in self._subnet_bodies() if _matches(s, request)]
        return web.json_response({"subnets": found})

    async def show_subnet(self, request: web.Request) -> web.Response:
        return self._show("subnets", self._subnet_bodies(), request)

    async def list_ports(self, request: web.Request) -> web.Response:
        ports = await self._ports(request)
        return web.json_response(
            {"ports": [_fields(p, request) for p in ports if _matches(p, request)]}
        )

    async def show_port(self, request: web.Request) -> web.Response:
        return self._show("ports", await self._ports(request), request)

    def _show(self, kind: str, bodies: list[dict[str, Any]], request: web.Request) -> web.Response:
        wanted = request.match_info["id"]
        for body in bodies:
            if body["id"] == wanted:
                singular = kind[:-1]
                return web.json_response({singular: _fields(body, request)})
        return not_found(kind, wanted)
