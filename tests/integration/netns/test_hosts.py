"""Amphorae on two netns hosts, and the loss of one: placement, anti-affinity, failover through
the health path, the breaker.

Each host has its own bridge joined by its uplink to the lab network's switch (the client
namespace with the backends hangs on the switch too); the provisioner (hosts driver) and the
health service run in this process, heartbeats go over UDP to the switch's gateway address,
and a client in the root namespace polls each VIP every 20 ms. Losing a host is setting its
uplink down at the switch: its amphorae fall silent, the health service fails them over, and
the provisioner rebuilds them on the other host (soft anti-affinity: an ACTIVE_STANDBY pair
then shares the survivor). Past the breaker's threshold nothing is failed over, and the
provisioner's driver reconciliation does not take the lost host's amphorae for missing.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from libs.common.domain import commands as c
from libs.common.domain.model import Topology
from libs.common.events import Metadata
from services.provisioner.app import PROVISIONER
from tests.integration.netns.host_loss import (
    HOSTS,
    SINGLE_BACK_BOUND,
    answers_from_root,
    create_scene,
    hosts_of,
    lose_the_single_host,
    two_hosts,
)
from tests.integration.netns.lab import NetnsLab
from tests.integration.netns.tools import AS_OUTAGE_BOUND
from tests.integration.provisioner.test_process_lifecycle import META, wait_status

pytestmark = pytest.mark.netns


async def test_pairs_span_both_hosts_and_a_lost_host_is_rebuilt_on_the_other(
    pg_dsn: str, nats_url: str, tmp_path: Path, lab: NetnsLab, db: asyncpg.Pool
) -> None:
    async with two_hosts(pg_dsn, nats_url, tmp_path, lab, db, threshold=5) as stack:
        scene = await create_scene(stack)
        pair_a, vip_a, pair_b, vip_b = scene.pair_a, scene.vip_a, scene.pair_b, scene.vip_b
        single, vip_s = scene.single, scene.vip_s

        # Anti-affinity: MASTER and BACKUP of each pair on different hosts; the store (and
        # the API's cached_zone) says where each amphora runs.
        placed: dict[str, str] = {}
        for lb_id in (pair_a, pair_b, single):
            handles = await stack.handles(lb_id)
            rows = await stack.amphora_rows(lb_id)
            assert {h.amphora_id: ("ALLOCATED", h.host) for h in handles} == rows
            placed.update({h.amphora_id: h.host for h in handles})
        for lb_id in (pair_a, pair_b):
            roles = hosts_of(await stack.handles(lb_id))
            assert roles.keys() == {"MASTER", "BACKUP"} and roles["MASTER"] != roles["BACKUP"]
        loads = {name: list(placed.values()).count(name) for name in HOSTS}
        assert sorted(loads.values()) == [2, 3], loads  # least loaded first: 5 amphorae, 3 + 2

        loss = await lose_the_single_host(stack, scene)
        lost, survivor, seen = loss.lost, loss.survivor, loss.seen
        print(loss.summary())
        for lb_id in (pair_a, pair_b, single):
            handles = await stack.handles(lb_id)
            assert {h.host for h in handles} == {survivor}
            assert len(handles) == (1 if lb_id == single else 2)
            assert {a: host for a, (_, host) in (await stack.amphora_rows(lb_id)).items()} == {
                h.amphora_id: survivor for h in handles
            }
        # The lost host's amphorae are gone from it too (its namespaces deleted).
        assert await stack.host(lost).list() == []
        # The survivors kept serving: each pair's BACKUP (or untouched MASTER) took the VIP.
        assert seen[vip_a].longest_gap <= AS_OUTAGE_BOUND, seen[vip_a]
        assert seen[vip_b].longest_gap <= AS_OUTAGE_BOUND, seen[vip_b]
        back = seen[vip_s].recovered_after
        assert back is not None and back <= SINGLE_BACK_BOUND, seen[vip_s]
        # Soft anti-affinity: with one live host left, each pair is whole on it (degraded).
        for lb_id in (pair_a, pair_b):
            await stack.wait_pair(lb_id)
        await answers_from_root(vip_a, timeout=5)
        await answers_from_root(vip_b, timeout=5)

        for lb_id in (pair_a, pair_b, single):
            await stack.repo.execute(lb_id, c.DeleteLoadBalancer(cascade=True), META)
        for lb_id in (pair_a, pair_b, single):
            await wait_status(stack.repo, lb_id, "DELETED")


async def test_past_the_breaker_threshold_a_lost_host_is_not_failed_over(
    pg_dsn: str, nats_url: str, tmp_path: Path, lab: NetnsLab, db: asyncpg.Pool
) -> None:
    # A 3 s timeout: a beat late by more than a second on a busy box must not fail one
    # amphora over on its own before the host is cut (nothing here is timed).
    async with two_hosts(
        pg_dsn, nats_url, tmp_path, lab, db, threshold=2, heartbeat_timeout=3.0
    ) as stack:
        pair, vip = await stack.create(Topology.ACTIVE_STANDBY, 3)
        single, _ = await stack.create(Topology.SINGLE, 4)
        (single_amphora,) = await stack.handles(single)
        lost = single_amphora.host
        master = next(h for h in await stack.handles(pair) if h.role == "MASTER")
        assert master.host == lost  # least loaded first: the MASTER's host took the SINGLE
        before = {lb_id: (await stack.repo.load(lb_id)).amphora_ids for lb_id in (pair, single)}

        # Both heartbeat before the cut (a busy box may take a moment for a new amphora's
        # first beat; one never heard from is judged on its own, not as silent with the other).
        wanted = {master.amphora_id, single_amphora.amphora_id}
        deadline = time.monotonic() + 15
        while True:
            heard = await stack.db.fetch(
                "SELECT amphora_id FROM amphora_health WHERE last_seen IS NOT NULL"
            )
            if wanted <= {r["amphora_id"] for r in heard}:
                break
            assert time.monotonic() < deadline, f"no heartbeat from {wanted}: {heard}"
            await asyncio.sleep(0.1)
        await asyncio.to_thread(stack.cut, lost)
        # Two amphorae silent at once >= threshold 2: the breaker holds both (amphora_health).
        deadline = time.monotonic() + 15
        while True:
            held = await stack.db.fetch(
                "SELECT amphora_id FROM amphora_health WHERE failover_stopped"
            )
            if {r["amphora_id"] for r in held} == wanted:
                break
            assert time.monotonic() < deadline, f"breaker did not hold: {held}"
            await asyncio.sleep(0.1)
        # The driver reconciliation cannot see the lost host: its amphorae are not "missing".
        maintenance = stack.app[PROVISIONER].maintenance
        async with stack.db.acquire() as conn:
            await maintenance.reconcile_driver(0.0, conn, Metadata(actor="test"))
        await asyncio.sleep(1.5)  # held for a while longer: still nothing failed over
        for lb_id, amphora_ids in before.items():
            state = await stack.repo.load(lb_id)
            assert state.amphora_ids == amphora_ids
            assert {s for s, _ in (await stack.amphora_rows(lb_id)).values()} == {"ALLOCATED"}
            assert state.loadbalancer.provisioning_status.value == "ACTIVE"  # type: ignore[union-attr]
        # The pair's BACKUP on the other host serves on its own (keepalived, no control plane).
        await answers_from_root(vip, timeout=5)
