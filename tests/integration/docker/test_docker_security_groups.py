"""VIP security groups inside docker amphorae: the nft filter runs in the amphora's container,
so a source the groups do not allow gets nothing from the VIP, and a rule added to the group
opens it live. Requests come from the host (its address on the VIP network, the gateway)."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import asyncpg
import docker
import pytest
from aiohttp import web

from libs.common.domain import commands as c
from libs.common.events import Metadata
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from services.api.adapters.security_groups import PostgresSecurityGroups
from services.api.domain.policy import RequestContext
from services.api.domain.security_groups import SecurityGroupAdministration
from tests import builders as b
from tests.integration.docker.conftest import VIP_NETWORK, backend_containers, wait_http
from tests.integration.docker.test_docker_lifecycle import (
    META,
    VIP,
    docker_provisioner,
    http_lb,
    wait_status,
)

pytestmark = pytest.mark.docker
ADMIN = RequestContext(project_id=b.PROJECT, roles=frozenset({"admin"}), is_admin=True)
__all__ = ["docker_provisioner"]


def answered(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


async def test_the_container_filters_its_vip_and_a_rule_opens_it_live(
    docker_provisioner: web.Application, db: asyncpg.Pool, clean_engine: docker.DockerClient
) -> None:
    groups = SecurityGroupAdministration(PostgresSecurityGroups(db))
    group = await groups.create_group(ADMIN, {"name": "web"}, Metadata(actor="test"))
    host = VIP_NETWORK.gateway
    assert host is not None
    rule = {
        "security_group_id": group.id,
        "direction": "ingress",
        "protocol": "tcp",
        "port_range_min": 80,
        "port_range_max": 80,
        "remote_ip_prefix": "198.18.0.0/32",  # not the host
    }
    await groups.create_rule(ADMIN, rule, Metadata(actor="test"))
    repo = LoadBalancerRepository(PostgresEventStore(db))
    with backend_containers(["be0"], VIP_NETWORK.name) as backends:
        command = http_lb(backends, vip_sg_ids=(group.id,))
        lb_id = command.loadbalancer.id
        await repo.execute(lb_id, command, META)
        await wait_status(repo, lb_id, "ACTIVE")
        url = f"http://{VIP}/"
        assert not await asyncio.to_thread(answered, url)

        await groups.create_rule(
            ADMIN, {**rule, "remote_ip_prefix": f"{host}/32"}, Metadata(actor="test")
        )
        started = time.monotonic()
        assert await asyncio.to_thread(wait_http, url, 20) == "be0"
        print(f"rule added -> VIP open from the host after {time.monotonic() - started:.2f} s")

        await repo.execute(lb_id, c.DeleteLoadBalancer(cascade=True), META)
        await wait_status(repo, lb_id, "DELETED")
