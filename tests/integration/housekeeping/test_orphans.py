"""Orphans: housekeeping asks, the provisioner compares its driver with the store. Amphorae
nobody owns are deleted; an amphora an ACTIVE LB expects but the driver lacks is failed over."""

from __future__ import annotations

import os
import signal
import uuid
from collections import Counter
from collections.abc import Awaitable, Sequence

from libs.common.events import amphora as amp_ev
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
