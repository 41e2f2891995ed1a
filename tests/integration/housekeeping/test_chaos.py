"""Crash safety: the provisioner is killed with SIGKILL at random points while load balancers are
created and updated, and restarted. In the end every LB is ACTIVE (and serves) or ERROR with a
reason, none is PENDING_*, and what the driver runs is exactly what the store owns: no amphora
is leaked, none is lost, none serves two LBs. Housekeeping (spares, stranded work, orphans)
runs in this process; the provisioner runs as a subprocess with the process driver."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from libs.common.domain import commands as c
from libs.common.domain.model import LoadBalancerState
from libs.common.errors import DomainError
from services.housekeeping.settings import OrphansJob, SparesJob, StrandedJob
from tests import builders as b
from tests.integration.housekeeping.conftest import (
    META,
    Backend,
    Plant,
    amphora_rows,
    count_events,
    eventually,
    free_port,
    http_lb,
)

log = logging.getLogger(__name__)

OPERATIONS = 30
KILLS = 4
SETTLE_TIMEOUT = 60.0


class Provisioner:
    """The provisioner as a child process of the test, killed and restarted at will."""

    def __init__(self, plant: Plant, log_path: Path) -> None:
        settings = plant.provisioner_settings
        self._env = {
            **os.environ,
            "FULCRUM_PROVISIONER_POSTGRES__DSN": plant.pg_dsn,
            "FULCRUM_PROVISIONER_NATS__URL": plant.nats_url,
            "FULCRUM_PROVISIONER_NATS__ACK_WAIT": "5",
            "FULCRUM_PROVISIONER_STATE_DIR": str(settings.state_dir),
            "FULCRUM_PROVISIONER_CA_DIR": str(settings.ca_dir),
        }
        self._log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.port = 0
        self.started_at = 0.0

    def start(self) -> None:
        self.port = free_port()
        self.started_at = time.monotonic()
        with open(self._log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.provisioner"],
                env={**self._env, "FULCRUM_PROVISIONER_PORT": str(self.port)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def ready(self, timeout: float = 30.0) -> float:
        """Wait until it serves /healthz (its start-up reconciliation done); returns seconds."""
        url = f"http://127.0.0.1:{self.port}/healthz"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
            while time.monotonic() - self.started_at < timeout:
                try:
                    async with session.get(url) as resp:
                        if resp.status == 200:
                            return time.monotonic() - self.started_at
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"the provisioner did not start within {timeout} s")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def killer(provisioner: Provisioner, rng: random.Random) -> None:
    # Half the kills land while it starts (its start-up reconciliation), half in its work.
    for _ in range(KILLS):
        if rng.random() < 0.5:
            await asyncio.sleep(rng.uniform(0.5, 2.0))
        else:
            took = await provisioner.ready()
            log.warning("provisioner ready after %.1f s", took)
            await asyncio.sleep(rng.uniform(0.1, 2.5))
        provisioner.kill()
        await asyncio.sleep(rng.uniform(0.3, 1.5))
        provisioner.start()


async def operations(plant: Plant, backends: list[Backend], rng: random.Random) -> list[str]:
    """Creates and updates, in a random mix; returns the LB ids."""
    lbs: list[str] = []
    for i in range(OPERATIONS):
        await asyncio.sleep(rng.uniform(0.1, 0.5))
        active = []
        for lb_id in lbs:
            lb = (await plant.repo.load(lb_id)).loadbalancer
            if lb is not None and lb.provisioning_status.value == "ACTIVE":
                active.append(lb_id)
        if active and rng.random() < 0.4:
            lb_id = rng.choice(active)
            state = await plant.repo.load(lb_id)
            pool = next(iter(state.pools.values()))
            command: c.Command
            if rng.random() < 0.5:
                port = rng.choice(backends).port
                command = c.CreateChild(b.member(pool, port, address=f"127.0.0.{2 + i}"))
            else:
                command = c.UpdateLoadBalancer({"name": f"update-{i}"}, datetime.now(UTC))
            try:
                await plant.repo.execute(lb_id, command, META)
            except DomainError as exc:  # went PENDING_* in between: a 409 a client would see
                log.info("update of %s refused: %s", lb_id, exc)
            continue
        vip = f"127.77.85.{10 + i}"
        create = http_lb(vip, free_port(vip), backends[:2])
        await plant.repo.execute(create.loadbalancer.id, create, META)
        lbs.append(create.loadbalancer.id)
    return lbs


def _status(state: LoadBalancerState) -> str:
    return state.loadbalancer.provisioning_status.value if state.loadbalancer else ""


@pytest.mark.timeout(180)
async def test_provisioner_killed_at_random_leaves_nothing_pending_leaked_or_duplicated(
    plant: Plant, backends: list[Backend], tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    log.warning("chaos seed %d", seed)
    rng = random.Random(seed)
    await plant.start_housekeeping(
        spares=SparesJob(interval=0.5, pool_size=2, boot_timeout=10.0),
        stranded=StrandedJob(interval=0.5, after=6.0, redrives=2),
        orphans=OrphansJob(interval=1.0, grace=2.0),
    )
    provisioner = Provisioner(plant, tmp_path / "provisioner.log")
    provisioner.start()
    try:
        lb_ids, _ = await asyncio.gather(operations(plant, backends, rng), killer(provisioner, rng))
        assert provisioner.kills == KILLS

        async def settled() -> bool:
            for lb_id in lb_ids:
                lb = (await plant.repo.load(lb_id)).loadbalancer
                if lb is None or lb.provisioning_status.value.startswith("PENDING_"):
                    return False
            return True

        started = time.monotonic()
        await eventually(settled, timeout=SETTLE_TIMEOUT, what="no LB left PENDING_*")
        log.warning("settled %.1f s after the last restart", time.monotonic() - started)

        states = {lb_id: await plant.repo.load(lb_id) for lb_id in lb_ids}
        active = {i: s for i, s in states.items() if _status(s) == "ACTIVE"}
        redrives = await count_events(plant.db, "LoadBalancerRedriveRequested")
        log.warning(
            "%d LBs: %d ACTIVE, %d ERROR; %d re-drives",
            len(states),
            len(active),
            len(states) - len(active),
            redrives,
        )
        for state in states.values():
            lb = state.loadbalancer
            assert lb is not None
            assert lb.provisioning_status.value in ("ACTIVE", "ERROR")
            if lb.provisioning_status.value == "ERROR":
                assert lb.provisioning_error, f"LB {lb.id} is ERROR without a reason"
        # That the success path ran too. How many fail depends on how many creates are in
        # flight at each kill, which grows with the box's load (14 of 30 made it in a full
        # `make test` on a loaded box), so this asks for a third, not for most.
        assert len(active) >= len(lb_ids) // 3, "a third should make it despite the kills"

        # No amphora serves two LBs, and each ACTIVE LB has exactly one (SINGLE).
        owners: dict[str, str] = {}
        for lb_id, state in states.items():
            if lb_id in active:
                assert len(state.amphora_ids) == 1
            for amphora_id in state.amphora_ids:
                assert amphora_id not in owners, f"{amphora_id} serves two LBs"
                owners[amphora_id] = lb_id

        driver = plant.driver()

        async def driver_matches_store() -> bool:
            running = {h.amphora_id for h in await driver.list()}
            live = await amphora_rows(plant.db, "READY", "ALLOCATED")
            transient = await amphora_rows(plant.db, "BOOTING", "PENDING_DELETE")
            expected = {a for lb_id in active for a in states[lb_id].amphora_ids}
            return running == set(live) and not transient and expected <= running

        await eventually(driver_matches_store, timeout=30, what="driver list == store")
        allocated = await amphora_rows(plant.db, "ALLOCATED")
        for amphora_id, lb_id in allocated.items():
            current = await plant.repo.load(lb_id or "")
            assert amphora_id in current.amphora_ids, f"{amphora_id} allocated to no LB"

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            for state in active.values():
                lb = state.loadbalancer
                assert lb is not None
                listener = next(iter(state.listeners.values()))
                url = f"http://{lb.vip_address}:{listener.protocol_port}/"
                async with session.get(url) as resp:
                    assert resp.status == 200
    finally:
        provisioner.stop()
