"""VIP security groups enforced inside netns amphorae, with real traffic: a load balancer with
``vip_sg_ids`` lets in only what its groups' ingress rules allow (source prefix and port), a
rule added to a group opens it live (the provisioner's security-group consumer pushes the
amphora's nft filter again), and emptying ``vip_sg_ids`` removes the filter.

The client namespace holds two addresses (the lab's client and a second one) so one source is
allowed and the other refused; HTTP listeners on ports 80 and 81 serve the same backends.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from libs.common.domain import commands as c
from libs.common.domain.model import Topology
from libs.common.events import Metadata
from libs.common.events.security_group import SecurityGroupRule
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from services.api.adapters.security_groups import PostgresSecurityGroups
from services.api.domain.policy import RequestContext
from services.api.domain.security_groups import SecurityGroupAdministration
from services.provisioner.rendering.security_groups import render_sg_ruleset
from tests import builders as b
from tests.integration.netns.conftest import NetnsProvisioner
from tests.integration.netns.lab import PYTHON, REPO, NetnsLab
from tests.integration.provisioner.test_process_lifecycle import META, wait_status

pytestmark = pytest.mark.netns

ADMIN = RequestContext(project_id=b.PROJECT, roles=frozenset({"admin"}), is_admin=True)
SG_META = Metadata(actor="test", project_id=b.PROJECT)
# One HTTP request from ``source`` (bound) in the client namespace: prints the answer's body
# or "error:<why>".
_FETCH = """
import socket, sys
source, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    s = socket.create_connection((host, port), timeout=0.7, source_address=(source, 0))
    s.sendall(b"GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    print(data.split(b"\\r\\n\\r\\n", 1)[-1].decode().strip() or "empty")
except OSError as exc:
    print(f"error:{type(exc).__name__}")
"""


def fetch(lab: NetnsLab, source: str, host: str, port: int) -> str:
    result = subprocess.run(
        ["ip", "netns", "exec", lab.client_ns, PYTHON, "-c", _FETCH, source, host, str(port)],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=REPO,
    )
    return result.stdout.strip() or f"error:{result.stderr.strip()[-200:]}"


async def until(lab: NetnsLab, source: str, host: str, port: int, ok: bool) -> str:
    """Until a request from ``source`` is answered (``ok``) or refused (bounded, 20 s)."""
    deadline = time.monotonic() + 20
    while True:
        seen = await asyncio.to_thread(fetch, lab, source, host, port)
        if seen.startswith("error:") != ok:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"{source} -> {host}:{port} still {seen}")
        await asyncio.sleep(0.2)


async def test_groups_filter_the_vip_and_a_rule_added_live_opens_it(
    netns_provisioner: NetnsProvisioner, lab: NetnsLab, db: asyncpg.Pool
) -> None:
    groups = SecurityGroupAdministration(PostgresSecurityGroups(db))
    allowed_source, other_source = lab.client_ip, lab.host(251)
    subprocess.run(
        ["ip", "-n", lab.client_ns, "addr", "add", f"{other_source}/24", "dev", "eth0"],
        check=True,
    )
    group = await groups.create_group(ADMIN, {"name": "web"}, SG_META)
    fields = {
        "security_group_id": group.id,
        "direction": "ingress",
        "protocol": "tcp",
        "port_range_min": 80,
        "port_range_max": 80,
        "remote_ip_prefix": f"{allowed_source}/32",
    }
    await groups.create_rule(ADMIN, fields, SG_META)

    repo = LoadBalancerRepository(PostgresEventStore(db))
    (port,) = await asyncio.to_thread(lab.start_backends, ["b0"])
    vip = lab.vip(0)
    lb = b.loadbalancer(vip, topology=Topology.SINGLE, vip_sg_ids=(group.id,))
    pool = b.pool(lb)
    listeners = (
        b.listener(lb, 80, default_pool_id=pool.id),
        b.listener(lb, 81, default_pool_id=pool.id),
    )
    member = b.member(pool, port, address=lab.client_ip)
    command = c.CreateLoadBalancer(lb, listeners=listeners, pools=(pool,), members=(member,))
    await repo.execute(lb.id, command, META)
    await wait_status(repo, lb.id, "ACTIVE")

    # The allowed source on the allowed port gets through; another source, or another port,
    # is dropped (a timeout: nothing answers, not even a reset).
    assert await until(lab, allowed_source, vip, 80, ok=True) == "b0"
    assert fetch(lab, other_source, vip, 80) == "error:TimeoutError"
    assert fetch(lab, allowed_source, vip, 81) == "error:TimeoutError"

    # A rule added to the group opens port 81 to the allowed source only, without a change
    # of the load balancer (its status stays ACTIVE).
    await groups.create_rule(ADMIN, {**fields, "port_range_min": 81, "port_range_max": 81}, SG_META)
    started = time.monotonic()
    assert await until(lab, allowed_source, vip, 81, ok=True) == "b0"
    print(f"rule added -> port 81 open after {time.monotonic() - started:.2f} s")
    assert fetch(lab, other_source, vip, 81) == "error:TimeoutError"
    assert (await repo.load(lb.id)).loadbalancer.provisioning_status.value == "ACTIVE"  # type: ignore[union-attr]

    # No groups any more: the filter goes with the next configuration push.
    update = c.UpdateLoadBalancer(changes={"vip_sg_ids": []}, now=datetime.now(UTC))
    await repo.execute(lb.id, update, META)
    await wait_status(repo, lb.id, "ACTIVE")
    assert await until(lab, other_source, vip, 80, ok=True) == "b0"

    await repo.execute(lb.id, c.DeleteLoadBalancer(cascade=True), META)
    await wait_status(repo, lb.id, "DELETED")


async def test_every_kind_of_rule_is_accepted_by_nft_in_a_namespace(tmp_path: Path) -> None:
    """The agent's adapter applies a ruleset with every rule shape (ports, ICMP type and
    code, other protocols, IPv6) atomically in a fresh namespace, then replaces it."""
    namespace = f"fsg{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        rules = [
            SecurityGroupRule(
                id=str(i), security_group_id="g", project_id="p", created_at="t", **fields
            )
            for i, fields in enumerate(
                [
                    {"direction": "ingress", "ethertype": "IPv4"},
                    {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                     "port_range_min": 80, "port_range_max": 90,
                     "remote_ip_prefix": "198.18.0.0/24"},
                    {"direction": "ingress", "ethertype": "IPv4", "protocol": "udp",
                     "port_range_min": 53, "port_range_max": 53},
                    {"direction": "ingress", "ethertype": "IPv4", "protocol": "sctp",
                     "port_range_min": 9, "port_range_max": 9},
                    {"direction": "ingress", "ethertype": "IPv4", "protocol": "icmp",
                     "port_range_min": 8, "port_range_max": 0},
                    {"direction": "ingress", "ethertype": "IPv4", "protocol": "gre"},
                    {"direction": "ingress", "ethertype": "IPv6", "protocol": "ipv6-icmp",
                     "port_range_min": 128, "remote_ip_prefix": "fd00::/64"},
                    {"direction": "ingress", "ethertype": "IPv6", "protocol": "112"},
                ]
            )
        ]  # fmt: skip
        script = tmp_path / "apply.py"
        script.write_text(
            "import asyncio, sys\n"
            "from services.amphora.adapters.nftables import Nftables, default_nft_binary\n"
            "from services.amphora.adapters.security_groups import VipSecurityGroups\n"
            "groups = VipSecurityGroups(Nftables(default_nft_binary()))\n"
            "asyncio.run(groups.apply(sys.stdin.read()))\n"
        )

        def apply(text: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["ip", "netns", "exec", namespace, PYTHON, str(script)],
                input=text, capture_output=True, text=True, timeout=30, cwd=REPO,
            )  # fmt: skip

        def table() -> str:
            return subprocess.run(
                ["ip", "netns", "exec", namespace, "nft", "list", "table", "inet", "fulcrum_sg"],
                capture_output=True, text=True, timeout=30,
            ).stdout  # fmt: skip

        done = apply(render_sg_ruleset(["198.18.9.200", "fd00::5"], rules))
        assert done.returncode == 0, done.stderr
        listed = table()
        assert "tcp dport 80-90" in listed and "icmp type echo-request" in listed
        assert listed.count("accept") >= len(rules) and "drop" in listed
        done = apply(render_sg_ruleset(["198.18.9.200"], rules[:1]))
        assert done.returncode == 0, done.stderr
        assert "dport" not in table()
        assert apply(render_sg_ruleset(["198.18.9.200"], None)).returncode == 0
        assert table() == ""
    finally:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
