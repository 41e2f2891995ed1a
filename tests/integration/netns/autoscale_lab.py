"""An autoscaling rig, shared by tests/integration/netns/test_autoscale.py and
bench/bench_autoscale.py: the provisioner (netns driver, the lab's network) and the health
service in this process, the amphorae beating to the health service on the lab's gateway, every
amphora's HAProxy capped by a CPU cgroup of its own, and bounded ``wrk`` loads from the client
namespace.

Everything the rig starts goes at its end (amphorae, network, cgroups, apps); the lab's
``cleanup`` kills the client's processes and namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from libs.common.domain.model import AmphoraBounds, Topology
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from libs.common.service import DB
from services.health.app import UDP_ADDRESS
from services.health.app import create_app as create_health
from services.health.domain.autoscale import ScalingPolicy
from services.provisioner.app import DRIVER
from services.provisioner.app import create_app as create_provisioner
from services.provisioner.drivers.netns import NetnsAmphoraDriver
from tests.integration.health.conftest import KEY, health_settings
from tests.integration.netns.cgroups import CpuCap, cap_haproxy, cpu_cgroup, remove_cgroup
from tests.integration.netns.conftest import beating_settings
from tests.integration.netns.lab import REPO, NetnsLab
from tests.integration.provisioner.test_process_lifecycle import META, wait_status

_SOCKET_ERRORS: Final = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)


@dataclass(frozen=True)
class Load:
    """What one wrk run saw."""

    requests: int
    rate: float
    failed: int
    output: str


def parse_wrk(output: str) -> Load:
    """Requests, requests/s and failed requests (non-2xx/3xx and socket errors) of wrk."""
    done = re.search(r"(\d+) requests in", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if done is None or rate is None:
        raise AssertionError(f"wrk printed no result:\n{output}")
    failed = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", output))
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if errors is not None:
        failed += sum(int(n) for n in errors.groups())
    return Load(int(done.group(1)), float(rate.group(1)), failed, output)


@dataclass
class AutoscaleRig:
    lab: NetnsLab
    provisioner: web.Application
    health: web.Application
    driver: NetnsAmphoraDriver
    repo: LoadBalancerRepository
    quota: int
    period: int
    caps: dict[str, CpuCap] = field(default_factory=dict)

    async def cap_amphorae(self, lb_id: str) -> int:
        """Every HAProxy of the LB's amphorae in its amphora's cgroup (made on first sight);
        how many HAProxy processes are capped."""
        capped = 0
        mine = set((await self.repo.load(lb_id)).amphora_ids)
        for handle in await self.driver.list():
            if handle.amphora_id not in mine and handle.lb_id != lb_id:
                continue  # neither the LB's (a spare taken counts once activated) nor booted for it
            cap = self.caps.get(handle.compute_id)
            if cap is None:
                name = f"fulcrum-test-{self.lab.tag}-{len(self.caps)}"
                cap = await asyncio.to_thread(cpu_cgroup, name, self.quota, self.period)
                self.caps[handle.compute_id] = cap
            capped += await asyncio.to_thread(cap_haproxy, handle.compute_id, cap)
        return capped

    async def keep_capping(self, lb_id: str) -> None:
        """``cap_amphorae`` every 0.1 s until cancelled (new amphorae, reloaded HAProxies)."""
        while True:
            await self.cap_amphorae(lb_id)
            await asyncio.sleep(0.1)

    async def create_lb(
        self, bounds: AmphoraBounds, vip_index: int = 0, backends: list[int] | None = None
    ) -> str:
        """An ACTIVE ACTIVE_ACTIVE HTTP LB on ``lab.vip(vip_index)``:80 whose members are the
        client namespace's ``backends``; its id."""
        ports = backends
        if ports is None:
            ports = await asyncio.to_thread(self.lab.start_backends, ["b0"])
        vip = self.lab.vip(vip_index)
        command = self.lab.http_lb(vip, ports, Topology.ACTIVE_ACTIVE, amphora_bounds=bounds)
        lb = command.loadbalancer
        await self.repo.execute(lb.id, command, META)
        await wait_status(self.repo, lb.id, "ACTIVE", timeout=60)
        return lb.id

    async def wait_amphorae(self, lb_id: str, count: int, timeout: float = 20.0) -> float:
        """Until the LB is ACTIVE with ``count`` amphorae (bounded); the time.time() then."""
        deadline = time.monotonic() + timeout
        while True:
            state = await self.repo.load(lb_id)
            lb = state.loadbalancer
            assert lb is not None
            if lb.provisioning_status == "ACTIVE" and len(state.amphora_ids) == count:
                return time.time()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"LB {lb.provisioning_status} with {len(state.amphora_ids)} amphorae, "
                    f"wanted ACTIVE with {count}"
                )
            await asyncio.sleep(0.05)

    async def wrk(self, url: str, seconds: int, connections: int, *, close: bool = False) -> Load:
        """One bounded wrk run from the client namespace (``close``: a new connection per
        request)."""
        header = ["-H", "Connection: close"] if close else []
        argv = [
            "ip", "netns", "exec", self.lab.client_ns, "wrk", "-t1", f"-c{connections}",
            f"-d{seconds}s", "--timeout", "3s", *header, url,
        ]  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=REPO
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), seconds + 30)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        return parse_wrk(out.decode())


async def _serve(app: web.Application) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


@asynccontextmanager
async def autoscale_rig(
    pg_dsn: str,
    nats_url: str,
    state: Path,
    lab: NetnsLab,
    policy: ScalingPolicy,
    *,
    quota: int,
    period: int = 100_000,
    drain_timeout: float = 5.0,
) -> AsyncIterator[AutoscaleRig]:
    """The rig (module doc); amphorae, network, cgroups and apps removed afterwards."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = beating_settings(
        pg_dsn, nats_url, state, lab, KEY, port, drain_timeout=drain_timeout
    )
    provisioner = create_provisioner(settings)
    runners: list[web.AppRunner] = [await _serve(provisioner)]
    rig: AutoscaleRig | None = None
    try:
        driver = provisioner[DRIVER]
        assert isinstance(driver, NetnsAmphoraDriver)
        await lab.attach_client(driver)
        overrides: dict[str, Any] = {
            "udp_host": lab.network.gateway,
            "udp_port": port,
            "heartbeat_timeout": 3.0,
            "health_check_interval": 0.25,
            "autoscale": policy,
        }
        health = create_health(health_settings(pg_dsn, nats_url, **overrides))
        runners.append(await _serve(health))
        assert health[UDP_ADDRESS][1] == port
        repo = LoadBalancerRepository(PostgresEventStore(provisioner[DB]))
        rig = AutoscaleRig(lab, provisioner, health, driver, repo, quota, period)
        yield rig
    finally:
        if rig is not None:
            for handle in await rig.driver.list():
                await rig.driver.delete(handle.amphora_id)
        for runner in reversed(runners):
            await runner.cleanup()
        lab.cleanup()
        if rig is not None:
            for cap in rig.caps.values():
                remove_cgroup(cap)
            with contextlib.suppress(Exception):
                await rig.driver.remove_network(lab.network.name)
