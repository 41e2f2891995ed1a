"""Purge: read-model and bookkeeping rows past their retention go, events stay; and every job
runs once per interval however many replicas try."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from libs.common.domain import commands as c
from libs.common.events import amphora as amp_ev
from libs.common.service import Metrics
from services.housekeeping.handlers.runner import JobRunner
from services.housekeeping.settings import PurgeJob
from tests import builders as b
from tests.integration.housekeeping.conftest import META, Plant

RETENTION = 2.0


async def _lb(plant: Plant, vip: str, *, deleted: bool) -> str:
    lb = b.loadbalancer(vip)
    await plant.repo.execute(lb.id, c.CreateLoadBalancer(lb), META)
    await plant.repo.execute(lb.id, c.Activate(()), META)
    if deleted:
        await plant.repo.execute(lb.id, c.DeleteLoadBalancer(), META)
        await plant.repo.execute(lb.id, c.CompleteDeletion(), META)
    return lb.id


async def _amphora(plant: Plant, lb_id: str, *, deleted: bool) -> str:
    amphora_id = str(uuid.uuid4())
    events: list[amp_ev.AmphoraEvent] = [
        amp_ev.AmphoraBooted(
            amphora_id=amphora_id,
            driver="process",
            compute_id="1",
            agent_url="https://127.0.0.1:1",
            loadbalancer_id=lb_id,
        )
    ]
    if deleted:
        events.append(amp_ev.AmphoraDeleted(amphora_id=amphora_id))
    await plant.amphorae.record(amphora_id, list(events), META)
    await plant.db.execute(
        "INSERT INTO amphora_health (amphora_id, last_seen) VALUES ($1, now())", amphora_id
    )
    await plant.db.execute(
        "INSERT INTO listener_stats (listener_id, amphora_id, lb_id) VALUES ($1, $2, $3)",
        str(uuid.uuid4()),
        amphora_id,
        lb_id,
    )
    await plant.db.execute(
        "INSERT INTO member_stats (member_id, amphora_id, pool_id, lb_id) VALUES ($1, $2, 'p', $3)",
        str(uuid.uuid4()),
        amphora_id,
        lb_id,
    )
    return amphora_id


async def test_rows_past_their_retention_are_purged_and_events_stay(plant: Plant) -> None:
    # The job's loop stays off: the test runs its passes itself.
    await plant.start_housekeeping(
        purge=PurgeJob(enabled=False, loadbalancer_retention=RETENTION, amphora_retention=RETENTION)
    )
    dead_lb = await _lb(plant, "127.77.83.10", deleted=True)
    live_lb = await _lb(plant, "127.77.83.11", deleted=False)
    dead_amp = await _amphora(plant, dead_lb, deleted=True)
    live_amp = await _amphora(plant, live_lb, deleted=False)
    old = datetime.now(UTC) - timedelta(days=30)
    await plant.db.execute(
        "INSERT INTO dead_letters (consumer, subject, event_id, reason, body, recorded_at) "
        "VALUES ('c', 's', NULL, 'old', '{}', $1), ('c', 's', NULL, 'new', '{}', now())",
        old,
    )
    await plant.db.execute(
        "INSERT INTO processed_messages (consumer, event_id, processed_at) "
        "VALUES ('c', $1, $3), ('c', $2, now())",
        uuid.uuid4(),
        uuid.uuid4(),
        old,
    )
    events_before = await plant.db.fetchval("SELECT count(*) FROM events")

    first = await plant.jobs.purge.purge()  # within the retention: the views stay
    assert (first.loadbalancers, first.amphorae) == (0, 0)
    assert (first.amphora_health, first.dead_letters, first.processed_messages) == (1, 1, 1)
    await asyncio.sleep(RETENTION + 0.2)
    second = await plant.jobs.purge.purge()
    assert (second.loadbalancers, second.amphorae, second.listener_stats) == (1, 1, 1)
    assert second.member_stats == 1

    views = {r["id"] for r in await plant.db.fetch("SELECT id FROM loadbalancer_view")}
    assert views == {live_lb}
    amphorae = {r["id"] for r in await plant.db.fetch("SELECT id FROM amphora_view")}
    assert amphorae == {live_amp}
    health = {r["amphora_id"] for r in await plant.db.fetch("SELECT * FROM amphora_health")}
    assert health == {live_amp} and dead_amp not in health
    stats = {r["lb_id"] for r in await plant.db.fetch("SELECT lb_id FROM listener_stats")}
    assert stats == {live_lb}
    member_stats = {r["lb_id"] for r in await plant.db.fetch("SELECT lb_id FROM member_stats")}
    assert member_stats == {live_lb}
    reasons = [r["reason"] for r in await plant.db.fetch("SELECT reason FROM dead_letters")]
    assert reasons == ["new"]
    assert await plant.db.fetchval("SELECT count(*) FROM processed_messages") == 1
    assert await plant.db.fetchval("SELECT count(*) FROM events") == events_before
    # The history is all there: the purged LB still folds from its events.
    state = await plant.repo.load(dead_lb)
    assert state.loadbalancer is not None
    assert state.loadbalancer.provisioning_status.value == "DELETED"


async def test_a_job_runs_once_per_interval_across_replicas(plant: Plant) -> None:
    await plant.start_housekeeping()  # migrates; no job enabled
    runs: list[str] = []
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_pass() -> None:
        runs.append("slow")
        started.set()
        await release.wait()

    async def quick_pass() -> None:
        runs.append("quick")

    metrics = Metrics("test")
    replica_a = JobRunner(plant.db, "probe", 3600.0, slow_pass, metrics)
    replica_b = JobRunner(plant.db, "probe", 3600.0, quick_pass, metrics)
    a = asyncio.create_task(replica_a.tick())
    await started.wait()
    assert await replica_b.tick() is False  # A holds the job's lock
    release.set()
    assert await a is True
    assert await replica_b.tick() is False  # A ran it within the interval
    assert await replica_b.tick(force=True) is True
    assert runs == ["slow", "quick"]
