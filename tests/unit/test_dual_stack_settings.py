"""Dual-stack settings: the API's IPv6 VIP subnets, and netns networks (the IPv6 subnet's
rules and each address's IPv6 twin)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from libs.common.settings import SubnetConfig
from services.provisioner.settings import NetnsNetworkSettings

BASE: dict[str, Any] = {
    "name": "ds",
    "subnet": "198.18.40.0/24",
    "gateway": "198.18.40.1",
    "ip_range": "198.18.40.0/25",
}


def test_an_address_twin_sits_at_the_same_offset_of_subnet6() -> None:
    network = NetnsNetworkSettings(
        **BASE, subnet6="fd12:3456:789a:1::/64", gateway6="fd12:3456:789a:1::1"
    )
    assert network.address6_of("198.18.40.5") == "fd12:3456:789a:1::5"
    assert network.address6_of("198.18.40.250") == "fd12:3456:789a:1::fa"
    assert NetnsNetworkSettings(**BASE).address6_of("198.18.40.5") is None


@pytest.mark.parametrize(
    "fields",
    [
        {"subnet6": "fd12:3456:789a:1::/64"},  # without gateway6
        {"gateway6": "fd12:3456:789a:1::1"},  # without subnet6
        {"subnet6": "2001:db8::/64", "gateway6": "2001:db8::1"},  # not ULA
        {"subnet6": "fd12:3456:789a::/48", "gateway6": "fd12:3456:789a::1"},  # not a /64
        {"subnet6": "fd12:3456:789a:1::/64", "gateway6": "fd12:3456:789a:2::1"},  # outside
    ],
)
def test_subnet6_must_be_a_ula_64_with_its_gateway(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        NetnsNetworkSettings(**BASE, **fields)


SUBNET: dict[str, Any] = {
    "id": "s6",
    "name": "v6",
    "network_id": "n",
    "network_name": "public",
    "cidr": "fd12:3456:789a:1::/64",
    "gateway_ip": "fd12:3456:789a:1::1",
    "allocation_start": "fd12:3456:789a:1::10",
    "allocation_end": "fd12:3456:789a:1::ffff",
}


def test_an_ipv6_vip_subnet_is_accepted() -> None:
    assert SubnetConfig(**SUBNET).ip_version == 6


@pytest.mark.parametrize(
    "fields",
    [
        {"allocation_start": "198.18.0.10"},  # other family
        {"allocation_end": "fd12:3456:789a:2::ffff"},  # outside the subnet
        {"allocation_start": "fd12:3456:789a:1::ffff", "allocation_end": "fd12:3456:789a:1::10"},
        {"gateway_ip": "fd00::1"},  # gateway outside
        {"cidr": "not-a-cidr"},
    ],
)
def test_a_vip_subnet_whose_addresses_do_not_fit_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SubnetConfig(**(SUBNET | fields))
