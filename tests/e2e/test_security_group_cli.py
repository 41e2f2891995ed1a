"""The real ``openstack`` CLI's security group commands against ``fulcrum up``: group and rule
create, list, show and delete through the Neutron subset, and ``loadbalancer create
--vip-sg-id`` refused up front on the stack's process driver (its amphorae cannot filter)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.e2e.conftest import Stack, cloud_cli

pytestmark = pytest.mark.timeout(600)


def shell(out: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {k: v.strip('"') for k, v in pairs}


async def test_security_group_commands(stack: Stack) -> None:
    cli = cloud_cli(stack, "fulcrum")
    # Separate runs, for their exit status, each started as soon as it can be: a group that
    # does not exist, and a VIP security group the process driver cannot enforce.
    missing_run = asyncio.create_task(
        cli("security", "group", "show", "no-such-group", check=False)
    )
    async with cli.session() as session:
        group = shell(
            (
                await session(
                    "security", "group", "create", "web", "--description", "front", "-f", "shell"
                )
            ).out
        )
        assert group["name"] == "web" and group["description"] == "front"
        refusal = asyncio.create_task(
            cli(
                "loadbalancer",
                "create",
                "--name",
                "sg-lb",
                "--vip-subnet",
                "public-subnet",
                "--vip-sg-id",
                "web",
                check=False,
            )
        )
        rule = shell(
            (
                await session(
                    "security",
                    "group",
                    "rule",
                    "create",
                    "--ingress",
                    "--protocol",
                    "tcp",
                    "--dst-port",
                    "80:81",
                    "--remote-ip",
                    "198.18.0.0/24",
                    "web",
                    "-f",
                    "shell",
                )
            ).out
        )
        assert rule["protocol"] == "tcp" and rule["remote_ip_prefix"] == "198.18.0.0/24"
        assert (rule["port_range_min"], rule["port_range_max"]) == ("80", "81")
        assert rule["security_group_id"] == group["id"]

        groups = (await session("security", "group", "list", "-f", "json")).json()
        assert isinstance(groups, list)
        assert [g["Name"] for g in groups if g["ID"] == group["id"]] == ["web"]
        rules = (await session("security", "group", "rule", "list", "web", "-f", "json")).json()
        assert isinstance(rules, list)
        assert sorted(r["Direction"] for r in rules) == ["egress", "egress", "ingress"]
        shown = json.loads((await session("security", "group", "show", "web", "-f", "json")).out)
        assert shown["id"] == group["id"] and len(shown["rules"]) == 3

        refused = await refusal
        assert refused.code != 0
        assert "VIP security groups cannot be enforced by the process amphora driver" in refused.err
        listed = (await session("loadbalancer", "list", "-f", "json")).json()
        assert isinstance(listed, list) and "sg-lb" not in [lb["name"] for lb in listed]

        missing = await missing_run
        assert missing.code != 0
        await session("security", "group", "rule", "delete", rule["id"])
        await session("security", "group", "delete", "web")
        groups = (await session("security", "group", "list", "-f", "json")).json()
        assert isinstance(groups, list) and group["id"] not in [g["ID"] for g in groups]
