"""The configurator's keepalived side: an ACTIVE_STANDBY amphora advertises by unicast to the
other amphora of its pair, and a push without that peer is refused before the amphora is
contacted (keepalived must never fall back to multicast)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.common.agent_contract import VrrpState, VrrpStatus
from libs.common.domain.model import LoadBalancerState, Topology
from libs.common.pki import DeploymentCA
from services.provisioner.configurator import Configurator, LoneAmphora, vrrp_peers
from services.provisioner.drivers import AmphoraHandle
from tests.unit.test_rendering import StateBuilder

VIP = "198.18.32.200"
PLUMBING = VrrpStatus(
    interface="eth0",
    running=False,
    state=VrrpState.STOPPED,
    config_sha256=None,
    check_script="/var/lib/fulcrum/amphora/vrrp-check.sh",
    notify_script="/var/lib/fulcrum/amphora/vrrp-notify.sh",
    notify_fifo="/var/lib/fulcrum/amphora/vrrp-notify.fifo",
    addresses=[],
)


def amphora(number: int, role: str) -> AmphoraHandle:
    """An amphora whose agent nobody serves (port 9 on loopback): contacting it fails."""
    return AmphoraHandle(
        amphora_id=f"0000000{number}-0000-0000-0000-000000000000",
        lb_id="lb",
        driver="netns",
        compute_id=f"amp{number}",
        agent_url="https://127.0.0.1:9",
        lb_network_ip=f"198.18.32.{number}",
        role=role,
    )


def state(topology: Topology) -> LoadBalancerState:
    builder = StateBuilder(vip=VIP, topology=topology)
    builder.member(builder.pool("HTTP", listener=builder.listener("HTTP", 80)), "198.18.1.5", 80)
    return builder.build()


@pytest.fixture
async def configurator(tmp_path: Path) -> AsyncIterator[Configurator]:
    configurator = Configurator(DeploymentCA.load_or_create(tmp_path / "ca"), tmp_path)
    try:
        yield configurator
    finally:
        await configurator.close()


MASTER, BACKUP, REPLACEMENT = amphora(2, "MASTER"), amphora(3, "BACKUP"), amphora(4, "MASTER")


def test_each_amphora_advertises_to_the_others_of_its_pair() -> None:
    assert vrrp_peers(MASTER, [MASTER, BACKUP]) == ("198.18.32.3",)
    assert vrrp_peers(BACKUP, [MASTER, BACKUP]) == ("198.18.32.2",)
    assert vrrp_peers(BACKUP, [BACKUP, REPLACEMENT]) == ("198.18.32.4",)
    assert vrrp_peers(BACKUP, [BACKUP]) == ()


async def test_the_survivor_names_the_replacement_as_its_unicast_peer(
    configurator: Configurator,
) -> None:
    text = configurator.render_vrrp(
        state(Topology.ACTIVE_STANDBY), BACKUP, [BACKUP, REPLACEMENT], PLUMBING
    )
    assert "unicast_src_ip 198.18.32.3\n" in text
    assert "unicast_peer {\n        198.18.32.4\n    }" in text
    assert "priority 90" in text and "nopreempt" in text


async def test_a_lone_amphora_of_a_pair_is_refused(configurator: Configurator) -> None:
    with pytest.raises(LoneAmphora):
        configurator.render_vrrp(state(Topology.ACTIVE_STANDBY), BACKUP, [BACKUP], PLUMBING)
    # push refuses before contacting the agent (nobody answers there: another error if it had).
    with pytest.raises(LoneAmphora, match="without its peer"):
        await configurator.push(state(Topology.ACTIVE_STANDBY), BACKUP, [BACKUP])
    with pytest.raises(LoneAmphora):
        await configurator.push(state(Topology.ACTIVE_STANDBY), BACKUP, ())
