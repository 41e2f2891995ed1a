"""Builds the provisioner gives up: the LB goes ERROR at once, whatever the error, and every
amphora started for it is stopped, released and recorded ERROR (``AmphoraErrored``); a
failover's replacement is undone the same way; a teardown the driver cannot do leaves the
amphora ERROR too.

What a build records (boot, activation) is written in the consumer's transaction while the push
runs: nobody sees it before the push succeeded, and a push that fails leaves none of it.

The lifecycle handler runs here directly (as the consumer and the start-up reconciliation run
it) against a real database, real agents and HAProxy where an amphora is started.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
import pytest

from libs.common.domain import commands as c
from libs.common.domain.amphora import AmphoraStatus
from libs.common.domain.model import LoadBalancerState
from libs.common.events import Metadata
from libs.common.events import amphora as amp_ev
from libs.common.eventstore import PostgresEventStore
from libs.common.pki import DeploymentCA
from libs.common.repository import AmphoraRepository, LoadBalancerRepository
from libs.common.streams import StreamId
from services.provisioner.configurator import Configurator
from services.provisioner.drivers import AmphoraDriver, AmphoraHandle, AmphoraSpec, Leftovers
from services.provisioner.drivers.process import ProcessAmphoraDriver
from services.provisioner.handlers.compensation import Compensation
from services.provisioner.handlers.lifecycle import LifecycleHandler
from tests import builders as b
from tests.integration.provisioner.conftest import free_port

META = Metadata(actor="test", project_id=b.PROJECT)


class DiskFullDriver:
    """A driver whose host cannot start amphorae: ``ensure`` raises a plain OSError."""

    name = "process"

    def __init__(self) -> None:
        self.deleted: list[str] = []

    async def prepare(self) -> None: ...

    async def close(self) -> None: ...

    async def ensure(self, spec: AmphoraSpec) -> AmphoraHandle:
        raise OSError(28, "No space left on device")

    async def delete(self, amphora_id: str) -> None:
        self.deleted.append(amphora_id)

    async def list(self) -> list[AmphoraHandle]:
        return []

    async def get(self, amphora_id: str) -> AmphoraHandle | None:
        return None

    async def leftovers(self) -> Sequence[str]:
        return []

    async def list_with_leftovers(self) -> tuple[Sequence[AmphoraHandle], Leftovers]:
        return await self.list(), {}

    async def reachable_hosts(self) -> None:
        return None


@pytest.fixture
async def configurator(tmp_path: Path) -> AsyncIterator[Configurator]:
    configurator = Configurator(DeploymentCA.load_or_create(tmp_path / "ca"), tmp_path / "ca")
    try:
        yield configurator
    finally:
        await configurator.close()


@pytest.fixture
async def process_driver(
    tmp_path: Path, configurator: Configurator
) -> AsyncIterator[ProcessAmphoraDriver]:
    driver = ProcessAmphoraDriver(
        tmp_path / "amphorae", DeploymentCA.load_or_create(tmp_path / "ca")
    )
    try:
        yield driver
    finally:
        for handle in await driver.list():
            await driver.delete(handle.amphora_id)
        await driver.close()


def lifecycle_for(
    db: asyncpg.Pool,
    driver: AmphoraDriver,
    configurator: Configurator,
    push: object = None,
) -> LifecycleHandler:
    store = PostgresEventStore(db)
    compensation = Compensation(driver, AmphoraRepository(store), configurator.forget)
    push_config = push if push is not None else configurator.push
    return LifecycleHandler(store, driver, push_config, compensation)  # type: ignore[arg-type]


async def reconcile(db: asyncpg.Pool, lifecycle: LifecycleHandler, lb_id: str) -> None:
    async with db.acquire() as conn, conn.transaction():
        await lifecycle.reconcile(lb_id, conn, META)


async def create_lb(db: asyncpg.Pool, vip: str) -> str:
    lb = b.loadbalancer(vip)
    listener = b.listener(lb, free_port(vip))
    await LoadBalancerRepository(PostgresEventStore(db)).execute(
        lb.id, c.CreateLoadBalancer(lb, listeners=(listener,)), META
    )
    return lb.id


async def test_a_driver_error_outside_fulcrums_errors_fails_the_create_at_once(
    db: asyncpg.Pool, configurator: Configurator
) -> None:
    driver = DiskFullDriver()
    lb_id = await create_lb(db, "127.77.0.30")
    # One pass: no retry, no dead letter; the LB is ERROR when it returns.
    await asyncio.wait_for(reconcile(db, lifecycle_for(db, driver, configurator), lb_id), 10)
    state = await LoadBalancerRepository(PostgresEventStore(db)).load(lb_id)
    assert state.loadbalancer is not None
    assert state.loadbalancer.provisioning_status.value == "ERROR"
    assert "create failed" in state.loadbalancer.provisioning_error
    assert "No space left on device" in state.loadbalancer.provisioning_error
    assert len(driver.deleted) == 1  # what its boot may have left is removed


async def test_a_given_up_build_leaves_its_amphora_stopped_and_in_error(
    db: asyncpg.Pool, configurator: Configurator, process_driver: ProcessAmphoraDriver
) -> None:
    vip = "127.77.0.31"
    lb_id = await create_lb(db, vip)
    booted: list[str] = []

    async def agent_gone(
        state: LoadBalancerState, handle: AmphoraHandle, pair: Sequence[AmphoraHandle]
    ) -> None:
        booted.append(handle.amphora_id)
        raise ConnectionResetError("agent went away")

    lifecycle = lifecycle_for(db, process_driver, configurator, agent_gone)
    await reconcile(db, lifecycle, lb_id)

    state = await LoadBalancerRepository(PostgresEventStore(db)).load(lb_id)
    assert state.loadbalancer is not None
    assert state.loadbalancer.provisioning_status.value == "ERROR"
    assert "agent went away" in state.loadbalancer.provisioning_error
    assert len(booted) == 1
    amphora = await AmphoraRepository(PostgresEventStore(db)).load(booted[0])
    assert amphora.status == AmphoraStatus.ERROR
    assert "build given up: agent went away" in amphora.failure_reason
    events = await PostgresEventStore(db).read_stream(StreamId.amphora(booted[0]))
    assert [type(e.payload) for e in events] == [amp_ev.AmphoraBooted, amp_ev.AmphoraErrored]
    assert await process_driver.list() == []
    assert await process_driver.leftovers() == []


async def test_a_failed_failover_undoes_its_replacement_and_keeps_the_old_amphora(
    db: asyncpg.Pool, configurator: Configurator, process_driver: ProcessAmphoraDriver
) -> None:
    lbs = LoadBalancerRepository(PostgresEventStore(db))
    lb_id = await create_lb(db, "127.77.0.32")
    await reconcile(db, lifecycle_for(db, process_driver, configurator), lb_id)
    created = await lbs.load(lb_id)
    assert created.loadbalancer is not None
    assert created.loadbalancer.provisioning_status.value == "ACTIVE"
    (original,) = created.amphora_ids

    async def only_the_original(
        state: LoadBalancerState, handle: AmphoraHandle, pair: Sequence[AmphoraHandle]
    ) -> None:
        if handle.amphora_id != original:
            raise ConnectionResetError("replacement agent went away")
        await configurator.push(state, handle, pair)

    await lbs.execute(lb_id, c.FailoverLoadBalancer(original, reason="test"), META)
    await reconcile(db, lifecycle_for(db, process_driver, configurator, only_the_original), lb_id)

    state = await lbs.load(lb_id)
    assert state.loadbalancer is not None
    assert state.loadbalancer.provisioning_status.value == "ERROR"
    assert "failover failed" in state.loadbalancer.provisioning_error
    assert state.amphora_ids == (original,)
    assert [h.amphora_id for h in await process_driver.list()] == [original]
    amphorae = AmphoraRepository(PostgresEventStore(db))
    replacement = await db.fetchval("SELECT id FROM amphora_view WHERE id <> $1", original)
    assert replacement is not None
    assert (await amphorae.load(replacement)).status == AmphoraStatus.ERROR
    assert (await amphorae.load(original)).status == AmphoraStatus.ALLOCATED


async def activated_events(db: asyncpg.Pool, lb_id: str) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM events WHERE stream_id = $1 AND event_type = 'LoadBalancerActivated'",
        str(StreamId.loadbalancer(lb_id)),
    )
    return count


async def wait_view_row_written(db: asyncpg.Pool, lb_id: str) -> None:
    """Wait (up to 10 s) until an open transaction has written the LB's view row: another
    connection then cannot lock it."""
    for _ in range(200):
        async with db.acquire() as conn, conn.transaction():
            try:
                await conn.execute(
                    "SELECT 1 FROM loadbalancer_view WHERE id = $1 FOR UPDATE NOWAIT", lb_id
                )
            except asyncpg.LockNotAvailableError:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing wrote the view row of {lb_id}")


async def test_the_activation_is_recorded_during_the_push_and_seen_only_after_it(
    db: asyncpg.Pool, configurator: Configurator, process_driver: ProcessAmphoraDriver
) -> None:
    lb_id = await create_lb(db, "127.77.0.33")
    seen_during_push: list[tuple[int, str]] = []

    async def slow_push(
        state: LoadBalancerState, handle: AmphoraHandle, pair: Sequence[AmphoraHandle]
    ) -> None:
        await wait_view_row_written(db, lb_id)  # the activation's projection, uncommitted
        body = await db.fetchval("SELECT body FROM loadbalancer_view WHERE id = $1", lb_id)
        seen = (await activated_events(db, lb_id), json.loads(body)["provisioning_status"])
        seen_during_push.append(seen)
        await configurator.push(state, handle, pair)

    await reconcile(db, lifecycle_for(db, process_driver, configurator, slow_push), lb_id)
    # The activation was appended while the push ran; nobody saw it, nor an ACTIVE load
    # balancer, before the push was done.
    assert seen_during_push == [(0, "PENDING_CREATE")]
    assert await activated_events(db, lb_id) == 1
    state = await LoadBalancerRepository(PostgresEventStore(db)).load(lb_id)
    assert state.loadbalancer is not None
    assert state.loadbalancer.provisioning_status.value == "ACTIVE"
    (amphora_id,) = state.amphora_ids
    events = await PostgresEventStore(db).read_stream(StreamId.amphora(amphora_id))
    assert [type(e.payload) for e in events] == [amp_ev.AmphoraBooted]


async def test_a_push_failing_after_the_activation_was_recorded_leaves_none_of_it(
    db: asyncpg.Pool, configurator: Configurator, process_driver: ProcessAmphoraDriver
) -> None:
    lb_id = await create_lb(db, "127.77.0.34")
    booted: list[str] = []

    async def fails_late(
        state: LoadBalancerState, handle: AmphoraHandle, pair: Sequence[AmphoraHandle]
    ) -> None:
        booted.append(handle.amphora_id)
        await wait_view_row_written(db, lb_id)
        raise ConnectionResetError("agent went away late")

    await reconcile(db, lifecycle_for(db, process_driver, configurator, fails_late), lb_id)

    state = await LoadBalancerRepository(PostgresEventStore(db)).load(lb_id)
    assert state.loadbalancer is not None
    assert state.loadbalancer.provisioning_status.value == "ERROR"
    assert "agent went away late" in state.loadbalancer.provisioning_error
    assert await activated_events(db, lb_id) == 0
    assert not await db.fetchval(
        "SELECT count(*) FROM outbox WHERE subject LIKE '%.LoadBalancerActivated'"
    )
    (amphora_id,) = booted
    events = await PostgresEventStore(db).read_stream(StreamId.amphora(amphora_id))
    assert [type(e.payload) for e in events] == [amp_ev.AmphoraBooted, amp_ev.AmphoraErrored]
    assert await process_driver.list() == []


class UndeletableDriver:
    """A driver that starts nothing (``ensure`` hands out a handle) and cannot delete:
    ``delete`` raises a plain PermissionError."""

    name = "process"

    def __init__(self) -> None:
        self.running: dict[str, AmphoraHandle] = {}

    async def prepare(self) -> None: ...

    async def close(self) -> None: ...

    async def ensure(self, spec: AmphoraSpec) -> AmphoraHandle:
        handle = AmphoraHandle(spec.amphora_id, spec.lb_id, self.name, "0", "https://x:1", "")
        self.running[spec.amphora_id] = handle
        return handle

    async def delete(self, amphora_id: str) -> None:
        raise PermissionError(1, "Operation not permitted")

    async def list(self) -> list[AmphoraHandle]:
        return list(self.running.values())

    async def get(self, amphora_id: str) -> AmphoraHandle | None:
        return self.running.get(amphora_id)

    async def leftovers(self) -> Sequence[str]:
        return []

    async def list_with_leftovers(self) -> tuple[Sequence[AmphoraHandle], Leftovers]:
        return await self.list(), {}

    async def reachable_hosts(self) -> None:
        return None


async def test_a_given_up_teardown_leaves_the_amphora_in_error(
    db: asyncpg.Pool, configurator: Configurator
) -> None:
    driver = UndeletableDriver()

    async def nothing_to_push(
        state: LoadBalancerState, handle: AmphoraHandle, pair: Sequence[AmphoraHandle]
    ) -> None:
        return None

    lifecycle = lifecycle_for(db, driver, configurator, nothing_to_push)
    lbs = LoadBalancerRepository(PostgresEventStore(db))
    lb_id = await create_lb(db, "127.77.0.33")
    await reconcile(db, lifecycle, lb_id)
    (amphora_id,) = (await lbs.load(lb_id)).amphora_ids

    await lbs.execute(lb_id, c.DeleteLoadBalancer(cascade=True), META)
    await reconcile(db, lifecycle, lb_id)

    state = await lbs.load(lb_id)
    assert state.loadbalancer is not None
    assert state.loadbalancer.provisioning_status.value == "ERROR"
    assert "delete failed" in state.loadbalancer.provisioning_error
    amphora = await AmphoraRepository(PostgresEventStore(db)).load(amphora_id)
    assert amphora.status == AmphoraStatus.ERROR
    assert amphora.failure_reason.startswith("teardown failed: ")
