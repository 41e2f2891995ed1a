"""The Keystone and Neutron read subsets with the real ``openstack`` CLI against ``fulcrum up``.

``fulcrum identity`` adds a project and a user, who logs in at once (no restart) and sees its
project; the admin lists users, projects, roles and domains; the member is refused the
admin-only lists (Keystone's 403). The network commands list the VIP port of a load balancer
(by device id and fixed IP), no floating IPs, no QoS policies, the network and the subnet."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from tests.e2e.conftest import VENV_BIN, Cli, CliSession, Stack, cloud_cli

pytestmark = pytest.mark.timeout(300)


def fulcrum_identity(stack: Stack, *args: str) -> None:
    subprocess.run(
        [str(VENV_BIN / "fulcrum"), "identity", "--state-dir", str(stack.state), *args],
        check=True,
        timeout=60,
    )


async def test_identity_command_and_keystone_reads_with_the_real_cli(stack: Stack) -> None:
    fulcrum_identity(stack, "project", "add", "team-a")
    fulcrum_identity(
        stack,
        "user",
        "add",
        "alice",
        "--password",
        "alice-pw",
        "--project",
        "team-a",
        "--role",
        "member",
    )
    admin = cloud_cli(stack, "fulcrum")
    alice = Cli(
        {
            "OS_AUTH_URL": f"{stack.api_url}/v3",
            "OS_USERNAME": "alice",
            "OS_PASSWORD": "alice-pw",
            "OS_PROJECT_NAME": "team-a",
            "OS_USER_DOMAIN_NAME": "Default",
            "OS_PROJECT_DOMAIN_NAME": "Default",
            "OS_REGION_NAME": "RegionOne",
            "OS_IDENTITY_API_VERSION": "3",
            "OS_CLOUD": "",
            "PYTHONWARNINGS": "ignore",
        }
    )
    # A separate run, for its exit status, while the sessions work.
    refusal = asyncio.create_task(alice("user", "list", check=False))
    async with admin.session() as session:
        users = json.loads((await session("user", "list", "-f", "json")).out)
        assert sorted(u["Name"] for u in users) == ["admin", "alice"]
        projects = json.loads((await session("project", "list", "-f", "json")).out)
        assert sorted(p["Name"] for p in projects) == ["admin", "team-a"]
        roles = json.loads((await session("role", "list", "-f", "json")).out)
        assert {"admin", "member", "reader"} <= {r["Name"] for r in roles}
        domains = json.loads((await session("domain", "list", "-f", "json")).out)
        assert [d["Name"] for d in domains] == ["Default"]
        shown = json.loads((await session("user", "show", "alice", "-f", "json")).out)
        assert shown["name"] == "alice" and shown["domain_id"] == "default"
        granted = await session(
            "role", "assignment", "list", "--user", "alice", "--names", "-f", "json"
        )
        assert [(a["Role"], a["Project"]) for a in json.loads(granted.out)] == [
            ("member", "team-a@Default")
        ]

    async with alice.session() as session:
        token = json.loads((await session("token", "issue", "-f", "json")).out)
        team = next(p for p in projects if p["Name"] == "team-a")
        assert token["project_id"] == team["ID"]
        mine = json.loads((await session("project", "list", "--my-projects", "-f", "json")).out)
        assert [p["Name"] for p in mine] == ["team-a"]
        refused = await refusal
        assert refused.code != 0 and "identity:list_users" in refused.err
        assert json.loads((await session("loadbalancer", "list", "-f", "json")).out) == []


async def test_network_reads_with_the_real_cli(stack: Stack) -> None:
    cli = cloud_cli(stack, "fulcrum")
    async with cli.session() as session:
        created = await session(
            "loadbalancer", "create", "--name", "net-lb", "--vip-subnet", "public-subnet",
            "-f", "json",
        )  # fmt: skip
        lb = json.loads(created.out)
        try:
            await session.wait_for_status("loadbalancer", "show", "net-lb")
            await network_reads(session, lb)
        finally:
            await session("loadbalancer", "delete", "--cascade", lb["id"])
            await session.wait_for_status("loadbalancer", "list", "--name", "net-lb", status="")


async def network_reads(cli: CliSession, lb: dict[str, str]) -> None:
    """The Neutron reads of the LB ``lb``'s VIP port, floating IPs, QoS, networks, subnets."""
    ports = json.loads(
        (await cli("port", "list", "--device-id", f"lb-{lb['id']}", "-f", "json")).out
    )
    assert [p["ID"] for p in ports] == [lb["vip_port_id"]]
    assert ports[0]["Fixed IP Addresses"][0]["ip_address"] == lb["vip_address"]
    by_ip = await cli("port", "list", "--fixed-ip", f"ip-address={lb['vip_address']}", "-f", "json")
    assert [p["ID"] for p in json.loads(by_ip.out)] == [lb["vip_port_id"]]
    port = json.loads((await cli("port", "show", lb["vip_port_id"], "-f", "json")).out)
    assert (port["device_owner"], port["name"]) == ("Octavia", f"octavia-lb-{lb['id']}")
    assert json.loads((await cli("floating", "ip", "list", "-f", "json")).out) == []
    listed = await cli(
        "floating", "ip", "list", "--port", lb["vip_port_id"], "--fixed-ip-address",
        lb["vip_address"], "-f", "json",
    )  # fmt: skip
    assert json.loads(listed.out) == []
    qos = await cli("network", "qos", "policy", "list", "-f", "json")
    assert json.loads(qos.out) == []
    networks = json.loads((await cli("network", "list", "-f", "json")).out)
    assert [n["Name"] for n in networks] == ["public"]
    subnets = json.loads((await cli("subnet", "list", "-f", "json")).out)
    assert [s["Name"] for s in subnets] == ["public-subnet"]
