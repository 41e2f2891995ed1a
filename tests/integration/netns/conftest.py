"""Fixtures for the netns driver: a lab per test (network, client namespace; see lab.py) and a
provisioner that runs amphorae in namespaces. Teardown removes every namespace, veth and
uplink the test made, also when it failed, and fails the test if anything is left."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from services.provisioner.app import DRIVER, create_app
from services.provisioner.drivers.netns import NetnsAmphoraDriver
from services.provisioner.settings import ProvisionerSettings
from tests.integration.netns.lab import NetnsLab
from tests.integration.provisioner.conftest import provisioner_settings


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    lab = NetnsLab.create()
    try:
        yield lab
    finally:
        lab.cleanup()
    assert not lab.leftovers(), f"left behind: {lab.leftovers()}"


def beating_settings(
    pg_dsn: str, nats_url: str, state: Path, lab: NetnsLab, key: str, health_port: int, **more: Any
) -> ProvisionerSettings:
    """Provisioner settings of the netns driver on the lab's network whose amphorae beat
    (``key``) every 0.2 s to ``health_port`` on the lab's gateway; ``more`` overrides."""
    return provisioner_settings(pg_dsn, nats_url, state).model_copy(
        update={
            "driver": "netns",
            "netns": lab.driver_settings,
            "heartbeat_key": key,
            "health_endpoints": [f"{lab.network.gateway}:{health_port}"],
            "heartbeat_interval": 0.2,
            **more,
        }
    )


@dataclass
class NetnsProvisioner:
    app: web.Application
    state_dir: Path

    @property
    def driver(self) -> NetnsAmphoraDriver:
        driver = self.app[DRIVER]
        assert isinstance(driver, NetnsAmphoraDriver)
        return driver


@pytest.fixture
def netns_spare_pool_size() -> int:
    """The spares ``netns_provisioner`` keeps (parametrize a test to change it)."""
    return 0


@pytest.fixture
async def netns_provisioner(
    pg_dsn: str, nats_url: str, tmp_path: Path, lab: NetnsLab, netns_spare_pool_size: int
) -> AsyncIterator[NetnsProvisioner]:
    """The provisioner (netns driver, the lab's network) in this process, with the client
    namespace attached; its amphorae are deleted afterwards."""
    settings = provisioner_settings(pg_dsn, nats_url, tmp_path).model_copy(
        update={
            "driver": "netns",
            "netns": lab.driver_settings,
            "spare_pool_size": netns_spare_pool_size,
            "spare_refill_interval": 0.2,
        }
    )
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    running = NetnsProvisioner(app, settings.state_dir)
    try:
        await lab.attach_client(running.driver)
        yield running
    finally:
        driver = running.driver
        for handle in await driver.list():
            await driver.delete(handle.amphora_id)
        await runner.cleanup()
        with contextlib.suppress(Exception):
            await driver.remove_network(lab.network.name)
