"""Spares are found by id (the driver's ``get``) and contacted once they boot: the push that
follows their claim in the same process starts on an open connection with the agent's info in
hand (one request: the config), while a process that did not claim the spare trusts nothing it
fetched ahead. Until claimed, a warm spare is asked again so that its connection stays open.

Real agents and HAProxy (process driver); the agent client's requests are recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.common.agent_contract import AgentInfo
from libs.common.domain import commands as c
from libs.common.domain.decide import decide
from libs.common.domain.evolve import evolve
from libs.common.domain.model import LoadBalancerState
from libs.common.pki import DeploymentCA
from services.provisioner.adapters.agent_client import AmphoraAgentClient
from services.provisioner.configurator import Configurator
from services.provisioner.configurator.agents import AgentConnections
from services.provisioner.drivers import AmphoraHandle, AmphoraSpec
from services.provisioner.drivers.process import ProcessAmphoraDriver
from tests import builders as b
from tests.integration.provisioner.conftest import free_port


@pytest.fixture
async def driver(tmp_path: Path) -> AsyncIterator[ProcessAmphoraDriver]:
    ca = DeploymentCA.load_or_create(tmp_path / "ca")
    driver = ProcessAmphoraDriver(tmp_path / "amphorae", ca)
    try:
        yield driver
    finally:
        for handle in await driver.list():
            await driver.delete(handle.amphora_id)
        await driver.close()


@pytest.fixture
async def spare(tmp_path: Path) -> AsyncIterator[tuple[DeploymentCA, AmphoraHandle]]:
    ca = DeploymentCA.load_or_create(tmp_path / "ca")
    driver = ProcessAmphoraDriver(tmp_path / "amphorae", ca)
    try:
        yield ca, await driver.ensure(AmphoraSpec(amphora_id="spare-1", lb_id=None))
    finally:
        for handle in await driver.list():
            await driver.delete(handle.amphora_id)
        await driver.close()


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every request an agent client sends, as ``METHOD path``."""
    sent: list[str] = []
    send = AmphoraAgentClient._request

    async def recorded(self: AmphoraAgentClient, method: str, path: str, **kwargs: object) -> bytes:
        sent.append(f"{method} {path}")
        return await send(self, method, path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(AmphoraAgentClient, "_request", recorded)
    return sent


async def test_the_process_driver_finds_one_amphora_by_id(
    spare: tuple[DeploymentCA, AmphoraHandle], tmp_path: Path
) -> None:
    _, handle = spare
    driver = ProcessAmphoraDriver(
        tmp_path / "amphorae", DeploymentCA.load_or_create(tmp_path / "ca")
    )
    assert await driver.get(handle.amphora_id) == handle == (await driver.list())[0]
    assert await driver.get("not-here") is None
    assert await driver.get("../amphorae/" + handle.amphora_id) is None  # ids name no paths
    assert await driver.get(".zygote") is None


def created(vip: str) -> LoadBalancerState:
    lb = b.loadbalancer(vip)
    state = LoadBalancerState()
    for event in decide(
        c.CreateLoadBalancer(lb, listeners=(b.listener(lb, free_port(vip)),)), state
    ):
        state = evolve(state, event)
    return state


async def test_a_spare_claimed_here_is_pushed_with_one_request(
    spare: tuple[DeploymentCA, AmphoraHandle], tmp_path: Path, requests: list[str]
) -> None:
    ca, handle = spare
    configurator = Configurator(ca, tmp_path / "ca")
    try:
        await configurator.warm(handle)
        assert requests == ["GET /info"]
        configurator.adopt(handle)
        requests.clear()
        await configurator.push(created("127.77.2.10"), handle)
        assert requests == ["PUT /haproxy/config?check_later=true"]
    finally:
        await configurator.close()


async def test_a_spare_claimed_elsewhere_is_contacted_afresh(
    spare: tuple[DeploymentCA, AmphoraHandle], tmp_path: Path, requests: list[str]
) -> None:
    ca, handle = spare
    booted_it, claimed_it = Configurator(ca, tmp_path / "ca"), Configurator(ca, tmp_path / "ca")
    try:
        await booted_it.warm(handle)
        claimed_it.adopt(handle)  # nothing warmed in this process: nothing to adopt
        await claimed_it.push(created("127.77.2.11"), handle)
        requests.clear()
        # The process that warmed it did not claim it: a config was pushed since, so it asks.
        await booted_it.push(created("127.77.2.12"), handle)
        assert requests == [
            "GET /info",
            "GET /haproxy/config",
            "PUT /haproxy/config?check_later=true",
        ]
    finally:
        await booted_it.close()
        await claimed_it.close()


async def test_a_warm_spare_is_asked_again_until_claimed(
    spare: tuple[DeploymentCA, AmphoraHandle], tmp_path: Path, requests: list[str]
) -> None:
    ca, handle = spare
    agents = AgentConnections(ca, tmp_path / "ca")
    keeping = asyncio.create_task(agents.keep_warm(interval=0.05))
    try:
        await agents.warm(handle)
        for _ in range(100):
            if len(requests) >= 3:
                break
            await asyncio.sleep(0.05)
        assert requests[:3] == ["GET /info"] * 3  # its connection is kept in use
        agents.adopt(handle)
        await asyncio.sleep(0.2)  # a round in flight when claimed may still finish
        asked = len(requests)
        await asyncio.sleep(0.3)
        assert len(requests) == asked  # claimed: no longer kept warm
    finally:
        keeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeping
        await agents.close()


async def test_a_spare_gone_is_no_longer_kept_warm_and_the_others_still_are(
    driver: ProcessAmphoraDriver, tmp_path: Path, requests: list[str]
) -> None:
    ca = DeploymentCA.load_or_create(tmp_path / "ca")
    gone = await driver.ensure(AmphoraSpec(amphora_id="spare-gone", lb_id=None))
    kept = await driver.ensure(AmphoraSpec(amphora_id="spare-kept", lb_id=None))
    agents = AgentConnections(ca, tmp_path / "ca")
    asked: list[str] = []
    info = AmphoraAgentClient.info

    async def who(self: AmphoraAgentClient) -> AgentInfo:
        asked.append(self.server_name or "")
        return await info(self)

    keeping = asyncio.create_task(agents.keep_warm(interval=0.05))
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(AmphoraAgentClient, "info", who)
            await agents.warm(gone)
            await agents.warm(kept)
            await driver.delete(gone.amphora_id)
            await asyncio.sleep(4.0)  # the gone one's connection retries (~3 s) run out
            asked.clear()
            await asyncio.sleep(0.3)
        assert not keeping.done()
        assert set(asked) == {kept.amphora_id}
    finally:
        keeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeping
        await agents.close()
