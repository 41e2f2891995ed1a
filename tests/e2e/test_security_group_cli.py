"""The real ``openstack`` CLI's security group commands against ``fulcrum up``: group and rule
create, list, show and delete through the Neutron subset, and ``loadbalancer create
--vip-sg-id`` refused up front on the stack's process driver (its amphorae cannot filter)."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Stack, cloud_cli

pytestmark = pytest.mark.timeout(600)


def shell(out: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {k: v.strip('"') for k, v in pairs}


async def test_security_group_commands(stack: Stack) -> None:
    cli = cloud_cli(stack, "fulcrum")
    group = shell(
        (
            await cli("security", "group", "create", "web", "--description", "front", "-f", "shell")
        ).out
    )
    assert group["name"] == "web" and group["description"] == "front"
    rule = shell(
        (
            await cli(
                "security", "group", "rule", "create", "--ingress", "--protocol", "tcp",
                "--dst-port", "80:81", "--remote-ip", "198.18.0.0/24", "web", "-f", "shell",
            )
        ).out
    )  # fmt: skip
    assert rule["protocol"] == "tcp" and rule["remote_ip_prefix"] == "198.18.0.0/24"
    assert (rule["port_range_min"], rule["port_range_max"]) == ("80", "81")
    assert rule["security_group_id"] == group["id"]

    groups = (await cli("security", "group", "list", "-f", "json")).json()
    assert isinstance(groups, list)
    assert [g["Name"] for g in groups if g["ID"] == group["id"]] == ["web"]
    rules = (await cli("security", "group", "rule", "list", "web", "-f", "json")).json()
    assert isinstance(rules, list)
    assert sorted(r["Direction"] for r in rules) == ["egress", "egress", "ingress"]
    shown = json.loads((await cli("security", "group", "show", "web", "-f", "json")).out)
    assert shown["id"] == group["id"] and len(shown["rules"]) == 3

    refused = await cli(
        "loadbalancer", "create", "--name", "sg-lb", "--vip-subnet", "public-subnet",
        "--vip-sg-id", "web", check=False,
    )  # fmt: skip
    assert refused.code != 0
    assert "VIP security groups cannot be enforced by the process amphora driver" in refused.err
    listed = (await cli("loadbalancer", "list", "-f", "json")).json()
    assert isinstance(listed, list) and "sg-lb" not in [lb["name"] for lb in listed]

    missing = await cli("security", "group", "show", "no-such-group", check=False)
    assert missing.code != 0
    await cli("security", "group", "rule", "delete", rule["id"])
    await cli("security", "group", "delete", "web")
    groups = (await cli("security", "group", "list", "-f", "json")).json()
    assert isinstance(groups, list) and group["id"] not in [g["ID"] for g in groups]
