"""Dual-stack netns networks: the IPv6 subnet's rules and each address's IPv6 twin."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

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
