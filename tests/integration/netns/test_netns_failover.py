"""Load balancers on the netns driver, end to end: the provisioner (in this process) runs
amphorae in namespaces, HTTP goes from a client namespace on the bridge through the VIP to
backends in that namespace, and failures are real (SIGKILL of an amphora's processes).

SINGLE: the VIP sits on the amphora's eth0; a killed amphora is replaced by a control-plane
failover. ACTIVE_STANDBY: keepalived (unicast VRRPv3, 0.1 s adverts) moves the VIP from a dead
MASTER to the BACKUP within about 0.4 s, then a failover through the control plane replaces
the dead amphora and the pair is whole again; every keepalived config pushed on the way names
a unicast peer (never a lone multicast instance). LBs are created through the repository.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter

import asyncpg
import pytest

from libs.common.agent_contract import VrrpState, VrrpStatus
from libs.common.domain import commands as c
from libs.common.domain.model import Topology
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from services.provisioner.adapters.agent_client import AmphoraAgentClient
from services.provisioner.app import CONFIGURATOR
from services.provisioner.drivers import AmphoraHandle
from services.provisioner.drivers.netns import namespace_exists
from tests.integration.netns.conftest import NetnsProvisioner
from tests.integration.netns.lab import (
    PYTHON,
    TOOLS,
    NetnsLab,
    host_addresses,
    kill_everything_in,
)
from tests.integration.netns.tools import AS_OUTAGE_BOUND
from tests.integration.provisioner.test_process_lifecycle import META, wait_status

pytestmark = pytest.mark.netns


@pytest.fixture
def vrrp_pushes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every keepalived.conf the provisioner pushes to an agent during the test, in order."""
    pushes: list[str] = []
    apply_vrrp = AmphoraAgentClient.apply_vrrp

    async def recording(
        self: AmphoraAgentClient, config: str, virtual_addresses: list[str]
    ) -> VrrpStatus:
        pushes.append(config)
        return await apply_vrrp(self, config, virtual_addresses)

    monkeypatch.setattr(AmphoraAgentClient, "apply_vrrp", recording)
    return pushes


def unicast(text: str) -> tuple[str, tuple[str, ...]]:
    """A keepalived.conf's unicast source and peers ("", () when it has none)."""
    source = next((line.split()[1] for line in text.splitlines() if "unicast_src_ip" in line), "")
    if "unicast_peer {" not in text:
        return source, ()
    return source, tuple(text.split("unicast_peer {", 1)[1].split("}", 1)[0].split())


def keepalived_conf(prov: NetnsProvisioner, handle: AmphoraHandle) -> str:
    """The config the amphora's keepalived runs (the agent's state dir)."""
    return (prov.state_dir / handle.amphora_id / "keepalived.conf").read_text()


async def vrrp(prov: NetnsProvisioner, handle: AmphoraHandle) -> VrrpStatus:
    return await prov.app[CONFIGURATOR].client(handle).vrrp_status()


async def lb_handles(prov: NetnsProvisioner, lb_id: str) -> list[AmphoraHandle]:
    return [h for h in await prov.driver.list() if h.lb_id == lb_id]


async def wait_vrrp_states(
    prov: NetnsProvisioner, handles: list[AmphoraHandle], timeout: float = 10.0
) -> dict[str, VrrpState]:
    """Until the pair is one MASTER and one BACKUP (bounded); amphora id -> state."""
    deadline = time.monotonic() + timeout
    while True:
        states = {h.amphora_id: (await vrrp(prov, h)).state for h in handles}
        if sorted(states.values()) == [VrrpState.BACKUP, VrrpState.MASTER]:
            return states
        if time.monotonic() > deadline:
            raise AssertionError(f"VRRP states never settled: {states}")
        await asyncio.sleep(0.05)


async def created_pair(
    prov: NetnsProvisioner, repo: LoadBalancerRepository, command: c.CreateLoadBalancer
) -> tuple[AmphoraHandle, AmphoraHandle]:
    """Create the ACTIVE_STANDBY LB of ``command``; once ACTIVE and its pair settled, the
    amphora keepalived made MASTER and the BACKUP."""
    lb_id = command.loadbalancer.id
    await repo.execute(lb_id, command, META)
    await wait_status(repo, lb_id, "ACTIVE")
    handles = await lb_handles(prov, lb_id)
    states = await wait_vrrp_states(prov, handles)
    master = next(h for h in handles if states[h.amphora_id] == VrrpState.MASTER)
    return master, next(h for h in handles if h is not master)


async def serving_pair(
    prov: NetnsProvisioner, lab: NetnsLab, db: asyncpg.Pool, vip: str
) -> tuple[AmphoraHandle, AmphoraHandle]:
    """An ACTIVE_STANDBY HTTP LB on ``vip``:80 with one backend of the client namespace,
    created and answering: its MASTER and its BACKUP (``created_pair``)."""
    ports = await asyncio.to_thread(lab.start_backends, ["b0"])
    repo = LoadBalancerRepository(PostgresEventStore(db))
    pair = await created_pair(prov, repo, lab.http_lb(vip, ports, Topology.ACTIVE_STANDBY))
    await lab.wait_answers(f"http://{vip}/")
    return pair


async def test_single_serves_through_its_vip_and_a_killed_amphora_is_replaced(
    netns_provisioner: NetnsProvisioner, lab: NetnsLab, db: asyncpg.Pool
) -> None:
    prov = netns_provisioner
    repo = LoadBalancerRepository(PostgresEventStore(db))
    ports = await asyncio.to_thread(lab.start_backends, ["b0", "b1"])
    vip = lab.vip(0)
    command = lab.http_lb(vip, ports, Topology.SINGLE)
    lb_id = command.loadbalancer.id
    await repo.execute(lb_id, command, META)
    state = await wait_status(repo, lb_id, "ACTIVE")
    (old,) = await lb_handles(prov, lb_id)
    assert list(state.amphora_ids) == [old.amphora_id]
    assert host_addresses(old.compute_id) == [vip]  # SINGLE: the VIP sits on eth0
    url = f"http://{vip}/"
    assert await asyncio.to_thread(lab.get, url, 10) == {"b0": 5, "b1": 5}

    prober = lab.start_prober(url, prov.state_dir.parent)
    await asyncio.sleep(0.3)
    killed_at = time.monotonic()
    kill_everything_in(old.compute_id)
    await repo.execute(lb_id, c.FailoverLoadBalancer(old.amphora_id, reason="test"), META)
    state = await wait_status(repo, lb_id, "ACTIVE")
    await lab.wait_answers(url)
    await asyncio.sleep(0.3)
    seen = await prober.measure(killed_at)
    print(f"SINGLE: kill -> failover command -> traffic again after {seen.recovered_after:.2f} s")
    assert seen.recovered_after is not None and seen.recovered_after < 15

    (new,) = await lb_handles(prov, lb_id)
    assert new.amphora_id != old.amphora_id and list(state.amphora_ids) == [new.amphora_id]
    assert not namespace_exists(old.compute_id)  # the dead amphora is gone, VIP and all
    assert host_addresses(new.compute_id) == [vip]
    assert await asyncio.to_thread(lab.get, url, 10) == {"b0": 5, "b1": 5}

    await repo.execute(lb_id, c.DeleteLoadBalancer(cascade=True), META)
    await wait_status(repo, lb_id, "DELETED")
    assert await prov.driver.list() == []
    assert not namespace_exists(new.compute_id)


async def test_active_standby_backup_takes_the_vip_then_failover_makes_the_pair_whole(
    netns_provisioner: NetnsProvisioner, lab: NetnsLab, db: asyncpg.Pool, vrrp_pushes: list[str]
) -> None:
    prov = netns_provisioner
    repo = LoadBalancerRepository(PostgresEventStore(db))
    ports = await asyncio.to_thread(lab.start_backends, ["b0", "b1"])
    vip = lab.vip(1)
    command = lab.http_lb(vip, ports, Topology.ACTIVE_STANDBY)
    lb_id = command.loadbalancer.id
    await repo.execute(lb_id, command, META)
    await wait_status(repo, lb_id, "ACTIVE")
    handles = await lb_handles(prov, lb_id)
    assert sorted(h.role for h in handles) == ["BACKUP", "MASTER"]
    states = await wait_vrrp_states(prov, handles)
    by_role = {h.role: h for h in handles}
    master, backup = by_role["MASTER"], by_role["BACKUP"]
    assert states[master.amphora_id] == VrrpState.MASTER  # priority 100 wins the election
    assert host_addresses(master.compute_id) == [vip]
    assert host_addresses(backup.compute_id) == []
    url = f"http://{vip}/"
    await lab.wait_answers(url)
    assert await asyncio.to_thread(lab.get, url, 10) == {"b0": 5, "b1": 5}

    # The MASTER dies (every process SIGKILLed): keepalived on the BACKUP takes the VIP.
    prober = lab.start_prober(url, prov.state_dir.parent)
    await asyncio.sleep(0.5)
    killed_at = time.monotonic()
    kill_everything_in(master.compute_id)
    deadline = time.monotonic() + 5
    while (await vrrp(prov, backup)).state != VrrpState.MASTER:
        assert time.monotonic() < deadline, "the BACKUP never became MASTER"
        await asyncio.sleep(0.02)
    taken_over = time.monotonic() - killed_at
    await asyncio.sleep(1.0)
    # Until the replacement runs, the survivor keeps advertising by unicast to its dead peer.
    assert unicast(keepalived_conf(prov, backup)) == (backup.lb_network_ip, (master.lb_network_ip,))

    # The control plane replaces the dead amphora; the survivor keeps the VIP (nopreempt).
    await repo.execute(lb_id, c.FailoverLoadBalancer(master.amphora_id, reason="test"), META)
    state = await wait_status(repo, lb_id, "ACTIVE")
    await asyncio.sleep(1.0)
    seen = await prober.measure(killed_at)
    print(
        f"ACTIVE_STANDBY: BACKUP is MASTER {taken_over:.2f} s after the kill; longest client "
        f"gap {seen.longest_gap:.3f} s ({seen.failures} failed, {seen.successes} answered)"
    )
    assert seen.longest_gap <= AS_OUTAGE_BOUND

    handles = await lb_handles(prov, lb_id)
    assert len(handles) == 2 and master.amphora_id not in {h.amphora_id for h in handles}
    assert sorted(state.amphora_ids) == sorted(h.amphora_id for h in handles)
    assert sorted(h.role for h in handles) == ["BACKUP", "MASTER"]
    states = await wait_vrrp_states(prov, handles)
    assert states[backup.amphora_id] == VrrpState.MASTER
    assert not namespace_exists(master.compute_id)
    replacement = next(h for h in handles if h.amphora_id != backup.amphora_id)
    assert host_addresses(backup.compute_id) == [vip]
    assert host_addresses(replacement.compute_id) == []
    # No config pushed on the way lacked a unicast peer: the pair at creation, then the
    # survivor and its replacement naming each other (never a lone multicast instance).
    assert {unicast(text) for text in vrrp_pushes} == {
        (master.lb_network_ip, (backup.lb_network_ip,)),
        (backup.lb_network_ip, (master.lb_network_ip,)),
        (backup.lb_network_ip, (replacement.lb_network_ip,)),
        (replacement.lb_network_ip, (backup.lb_network_ip,)),
    }
    assert unicast(keepalived_conf(prov, backup)) == (
        backup.lb_network_ip,
        (replacement.lb_network_ip,),
    )
    seen_after = Counter(await asyncio.to_thread(lab.get, url, 10))
    assert seen_after == Counter({"b0": 5, "b1": 5})

    # The pair is whole: the survivor's death now moves the VIP to the replacement.
    prober = lab.start_prober(url, prov.state_dir.parent)
    await asyncio.sleep(0.3)
    killed_at = time.monotonic()
    kill_everything_in(backup.compute_id)
    await asyncio.sleep(1.5)
    seen = await prober.measure(killed_at)
    assert (await vrrp(prov, replacement)).state == VrrpState.MASTER
    assert seen.longest_gap <= AS_OUTAGE_BOUND, seen


async def test_active_standby_pair_ignores_vrrp_adverts_from_outside_it(
    netns_provisioner: NetnsProvisioner, lab: NetnsLab, db: asyncpg.Pool
) -> None:
    """A host of the VIP network (a tenant's server: here the client namespace) sends both
    amphorae VRRP adverts for their router id at a priority above the MASTER's, as a router
    taking the VIP over would. keepalived takes adverts from its unicast peer only: the MASTER
    keeps the VIP, the BACKUP stays BACKUP, and the VIP keeps answering throughout (without
    that check the MASTER steps down and the pair holds the VIP nowhere while they come)."""
    prov = netns_provisioner
    vip = lab.vip(3)
    master, backup = await serving_pair(prov, lab, db, vip)
    url = f"http://{vip}/"
    vrid = next(
        line.split()[1]
        for line in keepalived_conf(prov, master).splitlines()
        if line.strip().startswith("virtual_router_id")
    )

    prober = lab.start_prober(url, prov.state_dir.parent)
    await asyncio.sleep(0.3)
    started = time.monotonic()
    forger = lab.spawn(
        PYTHON, "-m", TOOLS, "advertise", "--source", lab.client_ip,
        "--to", master.lb_network_ip, "--to", backup.lb_network_ip,
        "--vrid", vrid, "--priority", "254", "--address", vip,
        "--interval", "0.1", "--count", "25",
    )  # fmt: skip
    seen_states: set[tuple[VrrpState, VrrpState]] = set()
    while forger.poll() is None:
        assert time.monotonic() - started < 15, "the forger did not finish"
        seen_states.add(((await vrrp(prov, master)).state, (await vrrp(prov, backup)).state))
        await asyncio.sleep(0.05)
    output = forger.stdout.read().decode() if forger.stdout else ""
    assert forger.returncode == 0, output
    await asyncio.sleep(0.5)
    seen = await prober.measure(started)
    assert seen_states == {(VrrpState.MASTER, VrrpState.BACKUP)}, seen_states
    assert host_addresses(master.compute_id) == [vip]
    # A VIP held nowhere would leave the client unanswered for the whole forging (2.5 s); a
    # request timing out on a loaded box (0.1 s) is not that.
    assert seen.successes > 0 and seen.longest_gap <= AS_OUTAGE_BOUND, seen


async def test_active_standby_master_whose_haproxy_dies_hands_over_the_vip(
    netns_provisioner: NetnsProvisioner, lab: NetnsLab, db: asyncpg.Pool
) -> None:
    """keepalived's check script sees HAProxy gone: the MASTER goes FAULT and drops the VIP."""
    prov = netns_provisioner
    vip = lab.vip(2)
    master, backup = await serving_pair(prov, lab, db, vip)
    url = f"http://{vip}/"

    haproxy_pid = int((prov.state_dir / master.amphora_id / "haproxy.pid").read_text())
    killed_at = time.monotonic()
    os.kill(haproxy_pid, signal.SIGKILL)
    deadline = time.monotonic() + 6
    while (await vrrp(prov, backup)).state != VrrpState.MASTER:
        assert time.monotonic() < deadline, "the BACKUP never took over"
        await asyncio.sleep(0.05)
    print(f"HAProxy killed on the MASTER: BACKUP is MASTER {time.monotonic() - killed_at:.2f} s on")
    assert (await vrrp(prov, master)).state == VrrpState.FAULT
    assert host_addresses(master.compute_id) == []
    assert host_addresses(backup.compute_id) == [vip]
    await lab.wait_answers(url, timeout=5)
