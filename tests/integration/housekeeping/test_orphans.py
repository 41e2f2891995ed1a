"""Orphans: housekeeping asks, the provisioner compares its driver with the store. Amphorae
nobody owns are deleted; an amphora an ACTIVE LB expects but the driver lacks is failed over."""

from __future__ import annotations

import os
import signal
import uuid
from collections import Counter
from collections.abc import Awaitable, Sequence

from libs.common.events import amphora as amp_ev
from libs.common.service import METRICS
from services.housekeeping.settings import OrphansJob
from services.provisioner.drivers import AmphoraSpec
from tests.integration.housekeeping.conftest import (
    META,
    Backend,
    Plant,
    eventually,
    free_port,
    http_lb,
    wait_failed_over,
    wait_status,
)
from tests.integration.housekeeping.test_spares import get_names


async def test_orphan_amphorae_are_reaped_and_a_lost_one_is_failed_over(
    plant: Plant, backends: list[Backend]
) -> None:
    await plant.start_provisioner()
    vip = "127.77.82.10"
    port = free_port(vip)
    command = http_lb(vip, port, backends[:2])
    lb_id = command.loadbalancer.id
    await plant.repo.execute(lb_id, command, META)
    state = await wait_status(plant.repo, lb_id, "ACTIVE")
    serving = state.amphora_ids[0]

    driver = plant.driver()
    stray = str(uuid.uuid4())  # a process nobody recorded (a half-done boot, a lost record)
    await driver.ensure(AmphoraSpec(amphora_id=stray, lb_id=None))
    gone = str(uuid.uuid4())  # recorded as deleted, yet still running
    handle = await driver.ensure(AmphoraSpec(amphora_id=gone, lb_id=None))
    booted = amp_ev.AmphoraBooted(
        amphora_id=gone,
        driver=handle.driver,
        compute_id=handle.compute_id,
        agent_url=handle.agent_url,
    )
    await plant.amphorae.record(gone, [booted, amp_ev.AmphoraDeleted(amphora_id=gone)], META)
    dead = str(uuid.uuid4())  # nobody recorded it and it died: only its state dir is left
    await driver.ensure(AmphoraSpec(amphora_id=dead, lb_id=None))
    os.kill(
        int((plant.provisioner_settings.state_dir / dead / "agent.pid").read_text()), signal.SIGKILL
    )
    await eventually(
        lambda: _is(driver.leftovers(), [dead]), what="the dead amphora to be a leftover"
    )
    running, left = await driver.list_with_leftovers()  # reconciliation's look: one walk
    assert {h.amphora_id for h in running} == {serving, stray, gone} and list(left) == [dead]
    await plant.start_housekeeping(orphans=OrphansJob(interval=0.3, grace=1.0))

    async def reaped() -> bool:
        running = {h.amphora_id for h in await driver.list()}
        return running == {serving} and not await driver.leftovers()

    await eventually(reaped, what="the three orphans deleted, the LB's amphora kept")
    assert not (plant.provisioner_settings.state_dir / dead).exists()
    assert (await plant.repo.load(lb_id)).amphora_ids == (serving,)

    # The LB's amphora vanishes (agent and HAProxy killed, nobody told): no health service
    # runs here, so only the reconciliation can notice.
    directory = plant.provisioner_settings.state_dir / serving
    for name in ("haproxy.pid", "agent.pid"):
        os.kill(int((directory / name).read_text()), signal.SIGKILL)

    await wait_failed_over(plant.repo, lb_id, serving)
    assert await get_names(f"http://{vip}:{port}/", 4) == Counter({"b0": 2, "b1": 2})
    assert (await plant.amphorae.load(serving)).status.value == "DELETED"


async def _is(leftovers: Awaitable[Sequence[str]], expected: list[str]) -> bool:
    return list(await leftovers) == expected


async def test_a_leftover_of_an_lb_being_worked_on_is_kept_until_that_work_ends(
    plant: Plant,
) -> None:
    """A build in flight is a leftover until its agent listens (a docker container is
    "created" first), and its amphora is recorded only when the build's transaction commits:
    reconciliation must not take it for an orphan while that LB's work lock is held."""
    await plant.start_provisioner()
    driver = plant.driver()
    lb_id = str(uuid.uuid4())
    building = str(uuid.uuid4())
    await driver.ensure(AmphoraSpec(amphora_id=building, lb_id=lb_id))
    os.kill(
        int((plant.provisioner_settings.state_dir / building / "agent.pid").read_text()),
        signal.SIGKILL,
    )
    await eventually(
        lambda: _is(driver.leftovers(), [building]), what="the amphora to be a leftover"
    )
    _, left = await driver.list_with_leftovers()
    assert dict(left) == {building: lb_id}, "the leftover names its LB"

    async with plant.db.acquire() as conn, conn.transaction():
        # The lifecycle handler's lock on the LB, as a build in flight holds it.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", lb_id)
        await plant.start_housekeeping(orphans=OrphansJob(interval=0.2, grace=0.5))
        await eventually(
            lambda: _reconciled(plant, 5), what="five reconciliations while the LB is locked"
        )
        assert list(await driver.leftovers()) == [building], "kept while its LB is worked on"

    await eventually(
        lambda: _is(driver.leftovers(), []), what="the leftover deleted once the lock is gone"
    )


async def _reconciled(plant: Plant, passes: int) -> bool:
    assert plant.provisioner is not None
    return plant.provisioner[METRICS].value("reconciliations_total") >= passes
