"""Two real provisioner processes (process driver, one state directory) share the LB work
through their durable consumers; one is killed with SIGKILL mid-create: every LB ends ACTIVE
on exactly one amphora, and after a reconciliation no amphora agent runs that nobody owns."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg

from deploy.local.ports import free_tcp_port
from libs.common.events import Metadata
from libs.common.events.housekeeping import AmphoraReconciliationRequested
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from libs.common.streams import StreamId
from tests import builders as b
from tests.integration.cluster.nats_fixtures import (  # noqa: F401 (fixtures)
    ServiceProcess,
    active_count,
    amphora_dir,
    lb_create,
    provisioner_environment,
    service_processes,
)
from tests.integration.housekeeping.conftest import eventually

META = Metadata(actor="test", project_id=b.PROJECT)
LBS = 10


def running_agents(amphorae: Path) -> set[str]:
    """Amphora ids whose agent process is alive."""
    alive = set()
    for pid_file in amphorae.glob("*/agent.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), 0)
            alive.add(pid_file.parent.name)
    return alive


async def test_a_provisioner_killed_mid_create_leaves_no_lb_behind(
    pg_dsn: str,
    nats_url: str,
    db: asyncpg.Pool,
    tmp_path: Path,
    amphora_dir: Path,  # noqa: F811
    service_processes: Callable[..., ServiceProcess],  # noqa: F811
) -> None:
    replicas = []
    for _ in range(2):
        port = free_tcp_port()
        env = provisioner_environment(pg_dsn, nats_url, port, tmp_path, amphora_dir)
        replicas.append(service_processes("provisioner", env, port))
    for replica in replicas:
        await replica.wait_ready()

    store = PostgresEventStore(db)
    repo = LoadBalancerRepository(store)
    lb_ids = []
    for index in range(LBS):
        command = lb_create(index)
        await repo.execute(command.loadbalancer.id, command, META)
        lb_ids.append(command.loadbalancer.id)

    async def one_creating() -> bool:
        return any(": create" in replica.log_tail() for replica in replicas)

    # The victim is a replica that has taken create work.
    await eventually(one_creating, 30.0, "a replica creating an LB")
    victim = next(replica for replica in replicas if ": create" in replica.log_tail())
    victim.kill(signal.SIGKILL)
    active_at_kill = await active_count(db, lb_ids)
    assert active_at_kill < LBS, "the kill came after the work was done"

    async def all_active() -> bool:
        return await active_count(db, lb_ids) == LBS

    started = time.monotonic()
    await eventually(all_active, 60.0, f"{LBS} LBs ACTIVE after a provisioner's death")
    recovered = time.monotonic() - started

    owners = await db.fetch(
        "SELECT lb_id, count(*) AS n FROM amphora_view WHERE status <> 'DELETED' "
        "AND lb_id = ANY($1::text[]) GROUP BY lb_id",
        lb_ids,
    )
    assert {r["lb_id"]: r["n"] for r in owners} == dict.fromkeys(lb_ids, 1), "one amphora each"
    for lb_id in lb_ids:
        state = await repo.load(lb_id)
        assert len(state.amphora_ids) == 1

    # Whatever the dead replica booted but never recorded is reaped by the survivor.
    for _ in range(2):
        request = AmphoraReconciliationRequested(grace_seconds=0.5)
        await store.append(StreamId.housekeeping(os.urandom(8).hex()), 0, [request], META)
        await asyncio.sleep(1.0)
    owned = {
        r["id"] for r in await db.fetch("SELECT id FROM amphora_view WHERE status = 'ALLOCATED'")
    }

    async def no_orphans() -> bool:
        return running_agents(amphora_dir) == owned

    await eventually(no_orphans, 20.0, f"agents running = the {len(owned)} owned amphorae")
    assert len(owned) == LBS
    print(f"{active_at_kill}/{LBS} ACTIVE at the kill; the rest {recovered:.1f} s later")
