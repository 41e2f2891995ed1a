"""A load balancer naming security groups on amphorae that cannot filter their VIPs (the
process driver: no namespace of their own) is never left serving unfiltered: when the API was
not told the driver (so it could not refuse), the provisioner's create ends in ERROR with the
reason and nothing runs."""

from __future__ import annotations

import asyncpg

from libs.common.domain import commands as c
from libs.common.events import Metadata
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from services.api.adapters.security_groups import PostgresSecurityGroups
from services.api.domain.policy import RequestContext
from services.api.domain.security_groups import SecurityGroupAdministration
from tests import builders as b
from tests.integration.provisioner.conftest import RunningProvisioner, free_port
from tests.integration.provisioner.test_process_lifecycle import META, wait_status

ADMIN = RequestContext(project_id=b.PROJECT, roles=frozenset({"admin"}), is_admin=True)


async def test_groups_on_a_process_amphora_end_in_error(
    provisioner: RunningProvisioner, db: asyncpg.Pool
) -> None:
    groups = SecurityGroupAdministration(PostgresSecurityGroups(db))
    group = await groups.create_group(ADMIN, {"name": "web"}, Metadata(actor="test"))
    repo = LoadBalancerRepository(PostgresEventStore(db))
    vip = "127.77.0.12"
    lb = b.loadbalancer(vip, vip_sg_ids=(group.id,))
    listener = b.listener(lb, free_port(vip))
    command = c.CreateLoadBalancer(lb, listeners=(listener,))
    await repo.execute(lb.id, command, META)
    state = await wait_status(repo, lb.id, "ERROR")
    assert state.loadbalancer is not None
    assert "cannot filter its VIPs" in state.loadbalancer.provisioning_error
    assert await provisioner.driver.list() == []
