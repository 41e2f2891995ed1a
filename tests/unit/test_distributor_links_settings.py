"""``distributor_links`` of the netns and docker drivers: an IPv4 block of at least a /30 in
198.18.0.0/15 that overlaps none of the driver's networks, else the settings are refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.provisioner.settings import DockerDriverSettings, NetnsDriverSettings


def test_the_default_blocks_are_accepted() -> None:
    assert DockerDriverSettings().distributor_links == "198.19.254.0/24"
    assert NetnsDriverSettings().distributor_links == "198.19.254.0/24"


@pytest.mark.parametrize(
    ("block", "why"),
    [
        ("198.18.64.0/26", "overlaps network fulcrum-vip"),  # the default VIP network
        ("198.18.65.128/25", "overlaps network fulcrum-lb-mgmt"),  # the management network
        ("10.0.0.0/24", "must be an IPv4 block"),
        ("198.19.254.0/31", "at least a /30"),
        ("fd00::/64", "must be an IPv4 block"),
    ],
)
def test_a_docker_links_block_must_fit(block: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        DockerDriverSettings(distributor_links=block)


def test_a_netns_links_block_must_fit() -> None:
    with pytest.raises(ValidationError, match="must be an IPv4 block"):
        NetnsDriverSettings(distributor_links="192.0.2.0/24")
