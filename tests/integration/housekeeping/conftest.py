"""Fixtures for housekeeping: the housekeeping service and the provisioner (process driver,
real agents and HAProxy) running in this process on a real Postgres and NATS, each startable
and stoppable at will; LBs are created through the repository, as the API does."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from libs.common.domain import commands as c
from libs.common.domain.model import LoadBalancerState
from libs.common.events import Metadata
from libs.common.eventstore import PostgresEventStore
from libs.common.pki import DeploymentCA
from libs.common.repository import AmphoraRepository, LoadBalancerRepository
from libs.common.settings import NatsSettings, PostgresSettings, RelaySettings
from services.housekeeping.app import JOBS, Jobs
from services.housekeeping.app import create_app as create_housekeeping
from services.housekeeping.settings import (
    CertificatesJob,
    HousekeepingSettings,
    OrphansJob,
    PurgeJob,
    SparesJob,
    StrandedJob,
)
from services.provisioner.app import create_app as create_provisioner
from services.provisioner.drivers.process import ProcessAmphoraDriver, Zygote
from services.provisioner.settings import ProvisionerSettings
from tests import builders as b
from tests.integration.provisioner.conftest import (  # noqa: F401 (backends is a fixture)
    Backend,
    backends,
    free_port,
    provisioner_settings,
)

META = Metadata(actor="test", project_id=b.PROJECT)


def housekeeping_settings(pg_dsn: str, nats_url: str, **jobs: Any) -> HousekeepingSettings:
    """Every job off unless given (``spares=SparesJob(...)`` and so on)."""
    off: dict[str, Any] = {
        "spares": SparesJob(enabled=False),
        "stranded": StrandedJob(enabled=False),
        "orphans": OrphansJob(enabled=False),
        "purge": PurgeJob(enabled=False),
        "certificates": CertificatesJob(enabled=False, ca_cert=None),
    }
    return HousekeepingSettings(
        postgres=PostgresSettings(dsn=pg_dsn),
        nats=NatsSettings(url=nats_url, ack_wait=10.0),
        relay=RelaySettings(poll_interval=0.5),
        port=0,
        **(off | jobs),
    )


async def serve_app(app: web.Application) -> web.AppRunner:
    """Serve ``app`` on a free loopback port until its runner is cleaned up."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


@dataclass
class Plant:
    """Postgres, NATS, and the two services under test, on this test's state directory."""

    pg_dsn: str
    nats_url: str
    state: Path
    db: asyncpg.Pool
    provisioner_settings: ProvisionerSettings
    provisioner: web.Application | None = None
    housekeeping: web.Application | None = None
    _runners: dict[str, web.AppRunner] = field(default_factory=dict)

    @property
    def repo(self) -> LoadBalancerRepository:
        return LoadBalancerRepository(PostgresEventStore(self.db))

    @property
    def amphorae(self) -> AmphoraRepository:
        return AmphoraRepository(PostgresEventStore(self.db))

    @property
    def jobs(self) -> Jobs:
        assert self.housekeeping is not None
        return self.housekeeping[JOBS]

    def driver(self) -> ProcessAmphoraDriver:
        """A driver on the provisioner's state directory: lists what really runs."""
        ca = DeploymentCA.load_or_create(self.provisioner_settings.ca_dir)
        return ProcessAmphoraDriver(self.provisioner_settings.state_dir, ca, fast_spawn=False)

    async def start_provisioner(self, **overrides: Any) -> web.Application:
        settings = self.provisioner_settings.model_copy(update=overrides)
        self.provisioner = create_provisioner(settings)
        self._runners["provisioner"] = await serve_app(self.provisioner)
        return self.provisioner

    async def stop_provisioner(self) -> None:
        """Stop the control plane only: its amphorae keep running, as after a crash."""
        runner = self._runners.pop("provisioner", None)
        if runner is not None:
            await runner.cleanup()
        self.provisioner = None

    async def start_housekeeping(self, **jobs: Any) -> web.Application:
        settings = housekeeping_settings(self.pg_dsn, self.nats_url, **jobs)
        self.housekeeping = create_housekeeping(settings)
        self._runners["housekeeping"] = await serve_app(self.housekeeping)
        return self.housekeeping

    async def stop(self) -> None:
        for name in list(self._runners):
            await self._runners.pop(name).cleanup()


def kill_amphorae(state_dir: Path) -> None:
    """SIGKILL every agent and HAProxy a test's provisioners started (by their pid files),
    and every agent zygote serving this state directory (a SIGKILLed provisioner leaves its
    zygote behind; the zygote and the agents it forked carry its socket in their command line).
    """
    pids: set[int] = set()
    for pid_file in [*state_dir.glob("*/agent.pid"), *state_dir.glob("*/haproxy.pid")]:
        with contextlib.suppress(OSError, ValueError):
            pids.add(int(pid_file.read_text()))
    socket = Zygote(state_dir.resolve()).socket_path.encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if (
                b"services.amphora.zygote" in cmdline.read_bytes()
                and socket in cmdline.read_bytes()
            ):
                pids.add(int(cmdline.parent.name))
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
async def plant(
    pg_dsn: str, nats_url: str, tmp_path: Path, db: asyncpg.Pool
) -> AsyncIterator[Plant]:
    settings = provisioner_settings(pg_dsn, nats_url, tmp_path)
    plant = Plant(pg_dsn, nats_url, tmp_path, db, settings)
    try:
        yield plant
    finally:
        await plant.stop()
        driver = plant.driver()
        for handle in await driver.list():
            await driver.delete(handle.amphora_id)
        kill_amphorae(settings.state_dir)


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_failed_over(
    repo: LoadBalancerRepository, lb_id: str, old: str, timeout: float = 30.0
) -> LoadBalancerState:
    """The LB's state once it is ACTIVE again on amphorae other than ``old``."""

    async def replaced() -> bool:
        state = await repo.load(lb_id)
        lb = state.loadbalancer
        return (
            lb is not None
            and lb.provisioning_status.value == "ACTIVE"
            and state.amphora_ids not in ((), (old,))
        )

    await eventually(replaced, timeout, f"LB {lb_id} to fail over from amphora {old}")
    return await repo.load(lb_id)


async def wait_status(
    repo: LoadBalancerRepository, lb_id: str, wanted: str, timeout: float = 30.0
) -> LoadBalancerState:
    deadline = time.monotonic() + timeout
    while True:
        state = await repo.load(lb_id)
        lb = state.loadbalancer
        if lb is not None and lb.provisioning_status.value == wanted:
            return state
        if time.monotonic() > deadline:
            status = lb.provisioning_status.value if lb else None
            reason = lb.provisioning_error if lb else ""
            raise AssertionError(f"LB {lb_id} is {status} ({reason}), wanted {wanted}")
        await asyncio.sleep(0.05)


def http_lb(vip: str, port: int, servers: list[Backend]) -> c.CreateLoadBalancer:
    lb = b.loadbalancer(vip)
    pool = b.pool(lb)
    listener = b.listener(lb, port, default_pool_id=pool.id)
    members = tuple(b.member(pool, s.port) for s in servers)
    return c.CreateLoadBalancer(lb, listeners=(listener,), pools=(pool,), members=members)


async def amphora_rows(db: asyncpg.Pool, *statuses: str) -> dict[str, str | None]:
    """Amphora id -> LB id of the amphorae in ``statuses``."""
    rows = await db.fetch(
        "SELECT id, lb_id FROM amphora_view WHERE status = ANY($1::text[])", list(statuses)
    )
    return {r["id"]: r["lb_id"] for r in rows}


async def count_events(db: asyncpg.Pool, event_type: str, stream_id: str | None = None) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM events WHERE event_type = $1 AND ($2::text IS NULL "
        "OR stream_id = $2)",
        event_type,
        stream_id,
    )
    return count
