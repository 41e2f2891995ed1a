"""VIP placement: which operator subnet a new load balancer lives on and which address it gets.

Subnets are configuration (``NetworkSettings``). The address is the one asked for (it must lie
in the subnet and be free) or the lowest free one of the allocation pool. The projector's
unique ``vip_allocations`` row is the real guard against two LBs racing for one address; a
create that loses a race retries with a random address among the lowest free ones.
"""

from __future__ import annotations

import ipaddress
import random
import uuid
from dataclasses import dataclass
from typing import Final

from libs.common.errors import Conflict, ValidationFailed
from libs.common.settings import NetworkSettings, SubnetConfig
from services.api.domain.ports import AddressBook

# Fulcrum models no Neutron ports: a VIP's port id is derived from its LB id, stably.
VIP_PORT_NAMESPACE: Final = uuid.UUID("3f6c1d2e-8b4a-4e5f-9a7b-0c1d2e3f4a5b")
# After a lost race, the next address is drawn from this many lowest free ones.
CONTENDED_WINDOW: Final = 64


def vip_port_id(lb_id: str) -> str:
    """The id Fulcrum shows as ``vip_port_id`` (the Neutron subset serves the same id)."""
    return str(uuid.uuid5(VIP_PORT_NAMESPACE, f"vip-port:{lb_id}"))


@dataclass(frozen=True)
class VipRequest:
    subnet_id: str | None = None
    network_id: str | None = None
    port_id: str | None = None
    address: str | None = None


def _in_subnet(address: str, subnet: SubnetConfig) -> bool:
    ip = ipaddress.ip_address(address)
    network = ipaddress.ip_network(subnet.cidr, strict=False)
    return ip.version == network.version and ip in network


def resolve_subnet(network: NetworkSettings, request: VipRequest) -> SubnetConfig:
    """The subnet a VIP request designates; raises ValidationFailed (400) otherwise."""
    if request.port_id is not None:
        raise ValidationFailed(
            f"Validation failure: Port {request.port_id} not found. Fulcrum places VIPs by "
            "vip_subnet_id or vip_network_id."
        )
    if request.subnet_id is not None:
        subnet = next((s for s in network.subnets if s.id == request.subnet_id), None)
        if subnet is None:
            raise ValidationFailed(f"Validation failure: Subnet {request.subnet_id} not found.")
        if request.network_id is not None and subnet.network_id != request.network_id:
            raise ValidationFailed(
                f"Validation failure: Subnet {subnet.id} is not in network {request.network_id}."
            )
        return subnet
    if request.network_id is not None:
        subnets = [s for s in network.subnets if s.network_id == request.network_id]
        if not subnets:
            raise ValidationFailed(f"Validation failure: Network {request.network_id} not found.")
        if request.address is not None:
            for subnet in subnets:
                if _in_subnet(request.address, subnet):
                    return subnet
            raise ValidationFailed(
                f"Validation failure: VIP address {request.address} is not in any subnet of "
                f"network {request.network_id}."
            )
        # As Octavia: the first subnet, preferring IPv4.
        return next((s for s in subnets if s.ip_version == 4), subnets[0])
    raise ValidationFailed(
        "Validation failure: VIP must contain one of: vip_port_id, vip_network_id, vip_subnet_id."
    )


@dataclass(frozen=True)
class AdditionalVipRequest:
    """One entry of ``additional_vips``: a subnet, and the address asked for, if any."""

    subnet_id: str
    address: str | None = None
    port_id: str | None = None


def resolve_additional_subnets(
    network: NetworkSettings, primary: SubnetConfig, requests: list[AdditionalVipRequest]
) -> list[SubnetConfig]:
    """The subnets of ``additional_vips``, in order; raises ValidationFailed (400) when one is
    unknown, lies on another network than the primary VIP, or when a subnet is named twice
    (the primary's included): one address per subnet, all on one network, as Octavia."""
    subnets: list[SubnetConfig] = []
    for request in requests:
        subnet = resolve_subnet(
            network, VipRequest(subnet_id=request.subnet_id, port_id=request.port_id)
        )
        if subnet.network_id != primary.network_id:
            raise ValidationFailed(
                "Validation failure: All VIP subnets must belong to the same network."
            )
        subnets.append(subnet)
    ids = [primary.id, *(s.id for s in subnets)]
    if len(set(ids)) != len(ids):
        raise ValidationFailed(
            "Validation failure: Duplicate VIP subnet(s) specified. Only one IP can be bound "
            "per subnet."
        )
    return subnets


class VipAllocator:
    """Chooses addresses for the create use case, which retries on a lost race.

    The projector's unique ``vip_allocations`` row decides races: a create that loses one
    asks again with ``contended=True`` and is offered a random address among the lowest free
    ones, so concurrent creates spread out instead of colliding again. A create is refused
    only when a fresh read of the pool finds no free address.
    """

    def __init__(self, book: AddressBook) -> None:
        self._book = book

    async def check_requested(self, subnet: SubnetConfig, address: str) -> None:
        """Raises ValidationFailed when ``address`` is outside the subnet, Conflict when it is
        the gateway or already allocated."""
        if not _in_subnet(address, subnet):
            raise ValidationFailed(
                f"Validation failure: VIP address {address} is not in subnet {subnet.id}."
            )
        if address == subnet.gateway_ip or await self._book.address_taken(subnet.id, address):
            raise Conflict(f"IP address {address} already allocated in subnet {subnet.id}.")

    async def offer(self, subnet: SubnetConfig, *, contended: bool = False) -> str:
        """The lowest free address of the pool, or (``contended``) one drawn at random from
        the lowest ``CONTENDED_WINDOW`` free ones; Conflict (409) when none is free."""
        reserved = [subnet.gateway_ip] if subnet.gateway_ip else []
        free = await self._book.free_addresses(
            subnet.id,
            subnet.allocation_start,
            subnet.allocation_end,
            reserved,
            CONTENDED_WINDOW if contended else 1,
        )
        if not free:
            raise Conflict(f"No more IP addresses available on subnet {subnet.id}.")
        return random.choice(free) if contended else free[0]

    async def is_taken(self, subnet: SubnetConfig, address: str) -> bool:
        return await self._book.address_taken(subnet.id, address)


def pool_size(subnet: SubnetConfig) -> int:
    """How many addresses the allocation pool spans (the bound on races a create can lose:
    each lost race is an address of the pool taken by another create)."""
    first = ipaddress.ip_address(subnet.allocation_start)
    last = ipaddress.ip_address(subnet.allocation_end)
    return int(last) - int(first) + 1
