"""Fixtures for provisioner tests: real HTTP backends on loopback and a running provisioner."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from libs.common.settings import NatsSettings, PostgresSettings, RelaySettings
from services.provisioner.app import DRIVER, create_app
from services.provisioner.drivers import AmphoraDriver
from services.provisioner.settings import ProvisionerSettings


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Backend:
    name: str
    port: int
    hits: int = 0


@pytest.fixture
async def backends() -> AsyncIterator[list[Backend]]:
    """Three HTTP servers on 127.0.0.1 answering their own name."""
    runners: list[web.AppRunner] = []
    out: list[Backend] = []
    for i in range(3):
        backend = Backend(f"b{i}", free_port())

        async def answer(request: web.Request, backend: Backend = backend) -> web.Response:
            backend.hits += 1
            return web.Response(text=backend.name)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", backend.port).start()
        runners.append(runner)
        out.append(backend)
    try:
        yield out
    finally:
        for runner in runners:
            await runner.cleanup()


def provisioner_settings(pg_dsn: str, nats_url: str, state: Path) -> ProvisionerSettings:
    return ProvisionerSettings(
        postgres=PostgresSettings(dsn=pg_dsn),
        nats=NatsSettings(url=nats_url, ack_wait=10.0),
        relay=RelaySettings(poll_interval=0.5),
        port=0,
        state_dir=state / "amphorae",
        ca_dir=state / "ca",
    )


@dataclass
class RunningProvisioner:
    app: web.Application
    settings: ProvisionerSettings

    @property
    def driver(self) -> AmphoraDriver:
        return self.app[DRIVER]


@pytest.fixture
def spare_pool_size() -> int:
    """Override in a test module (or parametrize) to run the provisioner with spares."""
    return 0


@pytest.fixture
async def provisioner(
    pg_dsn: str, nats_url: str, tmp_path: Path, spare_pool_size: int
) -> AsyncIterator[RunningProvisioner]:
    """The provisioner app running in this process; its amphorae are deleted afterwards, and
    what its start-up started is stopped also when the start-up fails (its driver's zygote)."""
    settings = provisioner_settings(pg_dsn, nats_url, tmp_path)
    settings = settings.model_copy(update={"spare_pool_size": spare_pool_size})
    app = create_app(settings)
    runner = web.AppRunner(app)
    try:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield RunningProvisioner(app, settings)
    finally:
        if DRIVER in app:
            driver = app[DRIVER]
            for handle in await driver.list():
                await driver.delete(handle.amphora_id)
        await runner.cleanup()
        await asyncio.sleep(0)
