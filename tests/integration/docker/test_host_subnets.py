"""A private engine never puts a bridge on a subnet that an engine killed earlier left behind:
its bridge (DOWN, so without a route, but with its address) or its NAT rule (which would
masquerade, and so break, the new bridge's traffic between containers: VRRP among others)."""

from __future__ import annotations

import secrets
import subprocess
from ipaddress import ip_network

import pytest

from deploy.local.dockerd import networks_in_use, reserved_subnets

pytestmark = pytest.mark.docker

LEFT_BRIDGE_SUBNET = "198.19.250.0/24"
LEFT_RULE_SUBNET = "198.19.251.0/24"


def test_a_left_bridge_and_a_left_nat_rule_keep_their_subnets_from_new_bridges() -> None:
    link = f"flleft{secrets.token_hex(3)}"
    rule = ["POSTROUTING", "-s", LEFT_RULE_SUBNET, "!", "-o", link, "-j", "MASQUERADE"]
    subprocess.run(["ip", "link", "add", link, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "198.19.250.1/24", "dev", link], check=True)
        subprocess.run(["iptables", "-t", "nat", "-A", *rule], check=True)
        used = networks_in_use()
        assert ip_network(LEFT_BRIDGE_SUBNET) in used
        assert ip_network(LEFT_RULE_SUBNET) in used
        candidates = [LEFT_BRIDGE_SUBNET, LEFT_RULE_SUBNET] + [
            f"198.19.{n}.0/24" for n in range(232, 240)
        ]
        with reserved_subnets(candidates, 1) as (chosen,):
            assert chosen not in (LEFT_BRIDGE_SUBNET, LEFT_RULE_SUBNET)
    finally:
        subprocess.run(["iptables", "-t", "nat", "-D", *rule], check=False)
        subprocess.run(["ip", "link", "delete", link], check=False)
