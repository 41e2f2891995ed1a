"""The netns driver on its own: namespaces, veths, the bridge's network namespace, addresses,
idempotent ensure/delete/list, and an agent reachable from the host through the uplink."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from libs.common.agent_contract import VrrpState
from libs.common.pki import DeploymentCA
from services.provisioner.adapters.agent_client import AgentRejected
from services.provisioner.configurator import Configurator
from services.provisioner.drivers import AmphoraSpec
from services.provisioner.drivers.netns import NetnsAmphoraDriver, namespace_exists
from services.provisioner.rendering.keepalived import KeepalivedContext, render_keepalived
from tests.integration.netns.lab import NetnsLab

pytestmark = pytest.mark.netns


def _link_exists(name: str, namespace: str | None = None) -> bool:
    where = ["-n", namespace] if namespace else []
    return subprocess.run(["ip", *where, "link", "show", name], capture_output=True).returncode == 0


def _host_side(link: str) -> str:
    return subprocess.run(
        ["ip", "-br", "addr", "show", link], capture_output=True, text=True
    ).stdout


def _reaped_pid() -> int:
    """The pid of a process that ran and was reaped (no process has it now)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _addresses(namespace: str) -> str:
    return subprocess.run(
        ["ip", "-n", namespace, "-br", "addr"], capture_output=True, text=True
    ).stdout


async def test_ensure_list_delete_and_the_network_lives_as_long_as_its_amphorae(
    lab: NetnsLab, tmp_path: Path
) -> None:
    ca = DeploymentCA.load_or_create(tmp_path / "ca")
    driver = NetnsAmphoraDriver(lab.driver_settings, tmp_path / "amphorae", ca)
    configurator = Configurator(ca, tmp_path / "ca")
    first = AmphoraSpec(str(uuid.uuid4()), "lb-1", vip_address=lab.vip(), role="MASTER")
    second = AmphoraSpec(str(uuid.uuid4()), "lb-1", vip_address=lab.vip(), role="BACKUP")
    bridge_ns = driver.network_namespace(lab.network.name)
    try:
        handle = await driver.ensure(first)
        assert handle.driver == "netns" and handle.role == "MASTER"
        assert handle.compute_id == driver.namespace_for(first.amphora_id)
        assert handle.lb_network_ip == lab.host(2)  # .0/25 minus network address and gateway
        assert handle.agent_url == f"https://{lab.host(2)}:9443"
        assert await driver.ensure(first) == handle  # idempotent by amphora id
        assert namespace_exists(bridge_ns) and _link_exists(bridge_ns)  # uplink on the host
        assert f"{lab.network.gateway}/24" in _host_side(bridge_ns)
        assert f"{lab.host(2)}/24" in _addresses(handle.compute_id)

        # The provisioner's side reaches the agent through the uplink, with mutual TLS.
        info = await configurator.info(handle)
        assert info.amphora_id == first.amphora_id
        plumbing = await configurator.vip_plumbing(handle)
        assert plumbing is not None and plumbing.interface == "eth0"
        assert plumbing.state.value == "STOPPED" and plumbing.addresses == []

        other = await driver.ensure(second)
        assert other.lb_network_ip == lab.host(3)
        assert sorted(h.amphora_id for h in await driver.list()) == sorted(
            [first.amphora_id, second.amphora_id]
        )

        await driver.delete(first.amphora_id)
        assert not namespace_exists(handle.compute_id)
        assert not _link_exists(f"v{first.amphora_id.replace('-', '')[:12]}", bridge_ns)
        assert namespace_exists(bridge_ns)  # the other amphora still uses the network
        await driver.delete(first.amphora_id)  # absent: fine
        assert [h.amphora_id for h in await driver.list()] == [second.amphora_id]

        await driver.delete(second.amphora_id)
        assert await driver.list() == []
        assert not namespace_exists(bridge_ns) and not _link_exists(bridge_ns)
    finally:
        await configurator.close()
        for spec in (first, second):
            await driver.delete(spec.amphora_id)
        await driver.close()


async def test_a_prepared_network_stays_and_a_vip_outside_every_subnet_is_refused(
    lab: NetnsLab, tmp_path: Path
) -> None:
    ca = DeploymentCA.load_or_create(tmp_path / "ca")
    driver = NetnsAmphoraDriver(lab.driver_settings, tmp_path / "amphorae", ca)
    bridge_ns = driver.network_namespace(lab.network.name)
    await driver.prepare_network(lab.network.name)
    await driver.prepare_network(lab.network.name)  # idempotent
    spec = AmphoraSpec(str(uuid.uuid4()), "lb-2", vip_address=lab.vip())
    try:
        await driver.ensure(spec)
        await driver.delete(spec.amphora_id)
        assert namespace_exists(bridge_ns)  # prepared: kept after its last amphora
        try:
            await driver.ensure(AmphoraSpec(str(uuid.uuid4()), "lb-3", vip_address="198.19.9.9"))
        except Exception as exc:  # noqa: BLE001 (asserting the message below)
            assert "none of the netns subnets" in str(exc)
        else:
            raise AssertionError("a VIP outside the networks was accepted")
    finally:
        await driver.delete(spec.amphora_id)
        await driver.remove_network(lab.network.name)
        await driver.close()
    assert not namespace_exists(bridge_ns) and not _link_exists(bridge_ns)


async def test_the_agent_plugs_vips_and_runs_keepalived_inside_its_namespace(
    lab: NetnsLab, tmp_path: Path
) -> None:
    """The VIP/VRRP endpoints on a real amphora: plug and unplug a VIP, refuse a config
    keepalived rejects (its output in the error), run one (HAProxy's pid file names a dead
    master: the check fails, so FAULT), refuse plugging while keepalived owns the VIPs, stop it
    and leave no VIP behind."""
    ca = DeploymentCA.load_or_create(tmp_path / "ca")
    driver = NetnsAmphoraDriver(lab.driver_settings, tmp_path / "amphorae", ca)
    configurator = Configurator(ca, tmp_path / "ca")
    spec = AmphoraSpec(str(uuid.uuid4()), "lb-4", vip_address=lab.vip(), role="MASTER")
    vip = lab.vip()
    try:
        handle = await driver.ensure(spec)
        client = configurator.client(handle)
        status = await client.plug_vip(vip)
        assert status.addresses == [vip] and not status.running
        assert f"{vip}/32" in _addresses(handle.compute_id)
        await client.plug_vip(vip)  # idempotent
        await client.unplug_vip(vip)
        assert (await client.vrrp_status()).addresses == []

        with pytest.raises(AgentRejected) as rejected:
            await client.apply_vrrp("vrrp_instance broken {\n  priority banana\n", [vip])
        assert rejected.value.status == 400

        await client.plug_vip(vip)  # left behind, as by a SIGKILLed keepalived
        plumbing = await client.vrrp_status()
        assert plumbing.check_script and plumbing.notify_script and plumbing.notify_fifo
        # A master that died: its pid file stays (without one, no HAProxy is meant to run and
        # the check passes).
        dead = _reaped_pid()
        Path(plumbing.check_script).with_name("haproxy.pid").write_text(f"{dead}\n")
        text = render_keepalived(
            KeepalivedContext(
                lb_id="lb-4",
                amphora_id=spec.amphora_id,
                role="MASTER",
                interface="eth0",
                unicast_src_ip=handle.lb_network_ip,
                unicast_peers=(lab.host(100),),  # nobody there: this one alone decides
                virtual_addresses=(vip,),
                check_script=plumbing.check_script,
                notify_script=plumbing.notify_script,
                notify_fifo=plumbing.notify_fifo,
            )
        )
        status = await client.apply_vrrp(text, [vip])
        assert status.running and status.state != VrrpState.INIT
        # The stale VIP was removed before keepalived started; in FAULT it holds none.
        deadline = time.monotonic() + 5
        while (status := await client.vrrp_status()).state != VrrpState.FAULT:
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.05)
        assert status.addresses == []
        assert (await client.apply_vrrp(text, [vip])).config_sha256 == status.config_sha256
        with pytest.raises(AgentRejected) as refused:
            await client.plug_vip(vip)
        assert refused.value.status == 409

        await client.stop_vrrp()
        status = await client.vrrp_status()
        assert not status.running and status.state == VrrpState.STOPPED
        assert status.addresses == [] and status.config_sha256 is None
        await client.stop_vrrp()  # idempotent
    finally:
        await configurator.close()
        await driver.delete(spec.amphora_id)
        await driver.close()
