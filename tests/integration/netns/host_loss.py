"""Two netns amphora hosts and the loss of one, measured: the stack (health and provisioner in
this process, hosts h1 and h2 on the lab network's switch), three LBs (two ACTIVE_STANDBY, one
SINGLE) polled from the root namespace every 20 ms, the cut of a host's uplink, and the figures
the issue sets goals for: the longest outage of each ACTIVE_STANDBY LB, the time until the
SINGLE LB answers again, and the time until every amphora of the lost host is rebuilt on the
other. Used by test_hosts.py (which holds a run to bounds above the goals) and
bench/bench_host_loss.py (which reports them, with the goals, over several runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from aiohttp import web

from libs.common.agent_contract import VrrpState
from libs.common.domain.model import Topology
from libs.common.eventstore import PostgresEventStore
from libs.common.pki import DeploymentCA
from libs.common.repository import LoadBalancerRepository
from libs.common.settings import NatsSettings, PostgresSettings, RelaySettings
from services.health.app import UDP_ADDRESS
from services.health.app import create_app as create_health
from services.health.settings import HealthSettings
from services.provisioner.app import CONFIGURATOR, DRIVER
from services.provisioner.app import create_app as create_provisioner
from services.provisioner.drivers import AmphoraHandle
from services.provisioner.drivers.hosts import HostsDriver
from services.provisioner.drivers.netns import NetnsAmphoraDriver
from services.provisioner.settings import AmphoraHostSettings
from tests.integration.netns.lab import PYTHON, REPO, TOOLS, NetnsLab, Prober
from tests.integration.netns.tools import Outage, http_get
from tests.integration.provisioner.conftest import provisioner_settings
from tests.integration.provisioner.test_process_lifecycle import META, wait_status

KEY = "test-hosts-heartbeat-key"
HOSTS = ("h1", "h2")
AS_OUTAGE_GOAL = 0.5  # issue 15: an ACTIVE_STANDBY LB keeps serving
SINGLE_BACK_GOAL = 3.0  # issue 15: a SINGLE one is back within 3 s
# What test_hosts.py holds a SINGLE LB to: rebuilt, not left down (the goal is a figure of
# bench/bench_host_loss.py: a timed assertion at the goal fails on a busy 2-core box).
SINGLE_BACK_BOUND = 10.0


@dataclass
class TwoHosts:
    lab: NetnsLab
    app: web.Application
    repo: LoadBalancerRepository
    db: asyncpg.Pool
    state_dir: Path
    ports: list[int]

    @property
    def driver(self) -> HostsDriver:
        driver = self.app[DRIVER]
        assert isinstance(driver, HostsDriver)
        return driver

    def host(self, name: str) -> NetnsAmphoraDriver:
        driver = self.driver.hosts[name]
        assert isinstance(driver, NetnsAmphoraDriver)
        return driver

    async def handles(self, lb_id: str) -> list[AmphoraHandle]:
        return [h for h in await self.driver.list() if h.lb_id == lb_id]

    async def vrrp_state(self, handle: AmphoraHandle) -> VrrpState:
        return (await self.app[CONFIGURATOR].client(handle).vrrp_status()).state

    def cut(self, host: str) -> None:
        """The host's uplink goes down at the switch: nothing in or out, as for a dead host."""
        switch = self.host(host).network_namespace(self.lab.network.name)
        subprocess.run(["ip", "-n", switch, "link", "set", f"h-{host}", "down"], check=True)

    def root_prober(self, url: str, name: str) -> Prober:
        """A client in the root namespace: one request every 20 ms (killed at cleanup)."""
        stop, out = self.state_dir / f"{name}.stop", self.state_dir / f"{name}.json"
        proc = subprocess.Popen(
            [
                PYTHON, "-m", TOOLS, "probe", "--url", url, "--interval", "0.02",
                "--stop-file", str(stop), "--out", str(out), "--max-seconds", "60",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,
        )  # fmt: skip
        self.lab.processes.append(proc)
        return Prober(proc, stop, out)

    async def create(self, topology: Topology, index: int) -> tuple[str, str]:
        """An ACTIVE LB answering on its VIP from the root namespace; (lb id, VIP)."""
        vip = self.lab.vip(index)
        command = self.lab.http_lb(vip, self.ports, topology)
        lb_id = command.loadbalancer.id
        await self.repo.execute(lb_id, command, META)
        await wait_status(self.repo, lb_id, "ACTIVE")
        if topology == Topology.ACTIVE_STANDBY:
            await self.wait_pair(lb_id)
        await answers_from_root(vip)
        return lb_id, vip

    async def wait_pair(self, lb_id: str, timeout: float = 15.0) -> dict[str, VrrpState]:
        deadline = time.monotonic() + timeout
        while True:
            states = {h.amphora_id: await self.vrrp_state(h) for h in await self.handles(lb_id)}
            if sorted(states.values()) == [VrrpState.BACKUP, VrrpState.MASTER]:
                return states
            assert time.monotonic() < deadline, f"VRRP never settled: {states}"
            await asyncio.sleep(0.05)

    async def amphora_rows(self, lb_id: str) -> dict[str, tuple[str, str]]:
        """The store's amphorae of the LB not DELETED: id -> (status, host shown by the API)."""
        rows = await self.db.fetch(
            "SELECT id, status, body->>'cached_zone' AS host FROM amphora_view "
            "WHERE lb_id = $1 AND status <> 'DELETED'",
            lb_id,
        )
        return {r["id"]: (r["status"], r["host"]) for r in rows}


async def answers_from_root(vip: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not (await asyncio.to_thread(http_get, vip, 80, 0.5))[0]:
        assert time.monotonic() < deadline, f"{vip} does not answer from the root namespace"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def two_hosts(
    pg_dsn: str,
    nats_url: str,
    tmp_path: Path,
    lab: NetnsLab,
    db: asyncpg.Pool,
    threshold: int,
    heartbeat_timeout: float = 1.0,
) -> AsyncIterator[TwoHosts]:
    """The lab network as the switch (client namespace and backends on it), health listening
    on its gateway (0.2 s beats, ``heartbeat_timeout``, ``threshold``), the provisioner on two
    hosts."""
    ca = DeploymentCA.load_or_create(tmp_path / "prep-ca")
    prep = NetnsAmphoraDriver(lab.driver_settings, tmp_path / "prep", ca)
    await lab.attach_client(prep)
    ports = await asyncio.to_thread(lab.start_backends, ["b0", "b1"])
    health = create_health(
        HealthSettings(
            postgres=PostgresSettings(dsn=pg_dsn),
            nats=NatsSettings(url=nats_url),
            relay=RelaySettings(poll_interval=0.2),
            port=0,
            udp_host=lab.network.gateway,
            udp_port=0,
            heartbeat_key=KEY,
            heartbeat_timeout=heartbeat_timeout,
            health_check_interval=0.2,
            failover_threshold=threshold,
            stale_grace=5.0,
            flush_interval=0.1,
            refresh_interval=0.2,
        )
    )
    runners: list[web.AppRunner] = []
    app: web.Application | None = None
    try:
        runner = web.AppRunner(health)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        udp_host, udp_port = health[UDP_ADDRESS]
        settings = provisioner_settings(pg_dsn, nats_url, tmp_path).model_copy(
            update={
                "driver": "netns",
                "netns": lab.driver_settings,
                "hosts": [AmphoraHostSettings(name=name) for name in HOSTS],
                "heartbeat_key": KEY,
                "health_endpoints": [f"{udp_host}:{udp_port}"],
                "heartbeat_interval": 0.2,
            }
        )
        app = create_provisioner(settings)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        repo = LoadBalancerRepository(PostgresEventStore(db))
        yield TwoHosts(lab, app, repo, db, tmp_path, ports)
    finally:
        driver = app.get(DRIVER) if app is not None else None
        if isinstance(driver, HostsDriver):  # every host's, a lost one's too
            for host in driver.hosts.values():
                for handle in await host.list():
                    await driver.delete(handle.amphora_id)
        for runner in reversed(runners):
            await runner.cleanup()
        await prep.close()


def hosts_of(handles: list[AmphoraHandle]) -> dict[str, str]:
    return {h.role: h.host for h in handles}


@dataclass
class Scene:
    """Three serving LBs: two ACTIVE_STANDBY pairs and a SINGLE, with their VIPs."""

    pair_a: str
    vip_a: str
    pair_b: str
    vip_b: str
    single: str
    vip_s: str

    @property
    def lbs(self) -> tuple[str, str, str]:
        return (self.pair_a, self.pair_b, self.single)


async def create_scene(stack: TwoHosts, first_index: int = 0) -> Scene:
    """Two ACTIVE_STANDBY LBs then a SINGLE one (VIP indexes from ``first_index``), serving."""
    pair_a, vip_a = await stack.create(Topology.ACTIVE_STANDBY, first_index)
    pair_b, vip_b = await stack.create(Topology.ACTIVE_STANDBY, first_index + 1)
    single, vip_s = await stack.create(Topology.SINGLE, first_index + 2)
    return Scene(pair_a, vip_a, pair_b, vip_b, single, vip_s)


@dataclass
class HostLoss:
    """What the loss of ``lost`` did: each VIP's outage seen by its 20 ms client, and the
    seconds from the cut until every amphora of the lost host was replaced (LBs ACTIVE)."""

    lost: str
    survivor: str
    rebuilt_after: float
    seen: dict[str, Outage]
    scene: Scene

    @property
    def pair_gap(self) -> float:
        """The longest outage of either ACTIVE_STANDBY LB."""
        return max(self.seen[self.scene.vip_a].longest_gap, self.seen[self.scene.vip_b].longest_gap)

    @property
    def single_back(self) -> float | None:
        return self.seen[self.scene.vip_s].recovered_after

    def summary(self) -> str:
        s = self.scene
        back = "never" if self.single_back is None else f"{self.single_back:.3f} s"
        return (
            f"host {self.lost} lost: every amphora rebuilt on {self.survivor} after "
            f"{self.rebuilt_after:.2f} s; "
            f"ACTIVE_STANDBY longest gaps {self.seen[s.vip_a].longest_gap:.3f} s and "
            f"{self.seen[s.vip_b].longest_gap:.3f} s; SINGLE back after {back} "
            f"(gap {self.seen[s.vip_s].longest_gap:.3f} s)"
        )


async def lose_the_single_host(
    stack: TwoHosts, scene: Scene, rebuild_timeout: float = 30
) -> HostLoss:
    """Cut the uplink of the SINGLE LB's host while every VIP is polled; return once every
    amphora of that host is replaced, every LB is ACTIVE and the SINGLE VIP answers again."""
    (single_amphora,) = await stack.handles(scene.single)
    lost = single_amphora.host
    survivor = next(name for name in HOSTS if name != lost)
    on_lost = {
        h.amphora_id for lb_id in scene.lbs for h in await stack.handles(lb_id) if h.host == lost
    }
    probers = {
        vip: stack.root_prober(f"http://{vip}/", f"probe-{i}")
        for i, vip in enumerate((scene.vip_a, scene.vip_b, scene.vip_s))
    }
    await asyncio.sleep(0.5)
    cut_at = time.monotonic()
    await asyncio.to_thread(stack.cut, lost)

    # Every amphora of the lost host is rebuilt on the survivor (health: silence ->
    # AmphoraFailed -> failover).
    deadline = time.monotonic() + rebuild_timeout
    while True:
        states = [await stack.repo.load(lb_id) for lb_id in scene.lbs]
        ids = {a for state in states for a in state.amphora_ids}
        active = all(s.loadbalancer.provisioning_status.value == "ACTIVE" for s in states)  # type: ignore[union-attr]
        if active and not ids & on_lost:
            break
        assert time.monotonic() < deadline, f"not rebuilt: {ids & on_lost}"
        await asyncio.sleep(0.05)
    rebuilt_after = time.monotonic() - cut_at
    await answers_from_root(scene.vip_s, timeout=5)
    await asyncio.sleep(0.3)
    seen = {vip: await prober.measure(cut_at) for vip, prober in probers.items()}
    return HostLoss(lost, survivor, rebuilt_after, seen, scene)
