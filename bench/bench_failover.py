"""Failover benchmark: the outage a client sees, sending one request every 10 ms through the VIP,
when an amphora dies. Real amphorae (netns driver: agent, HAProxy, keepalived in namespaces),
real Postgres and NATS (embedded), the provisioner and the health service in this process.

Scenarios (each round creates a fresh LB, breaks it, measures, deletes it):
- ACTIVE_STANDBY, every process of the MASTER SIGKILLed (its kernel keeps answering ARP for
  the VIP, as a crashed-but-powered machine would), and the MASTER's link cut (a dead host):
  keepalived's BACKUP takes the VIP; then a control-plane failover makes the pair whole.
- SINGLE, every process SIGKILLed, then the failover command at once: the rebuild alone.
- SINGLE, every process SIGKILLed, detection by the health service (heartbeats over UDP to the
  network's gateway address), AmphoraFailed, failover: detection plus rebuild, with fast
  heartbeats (0.2 s, 1 s timeout), with the defaults of the provisioner's heartbeat interval
  and the health service's timeout and scan period (read from their settings: Octavia's 1 s
  beats and 3 s timeout, which alone exceed the 3 s goal), and with 0.5 s beats, a 1.5 s
  timeout (still three missed beats) and a 0.25 s scan.
"Outage" is the longest time between two successful answers from the kill on. Goals:
ACTIVE_STANDBY <= 0.5 s, SINGLE <= 3 s. Needs root, iproute2, keepalived, haproxy; uses
198.18.96.0/19 only; removes every namespace, veth and address it made.
Run: sudo .venv/bin/python bench/bench_failover.py [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The lab (network, client namespace, prober) is shared with tests/integration/netns.
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from aiohttp import web  # noqa: E402

from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres, create_database  # noqa: E402
from libs.common.agent_contract import VrrpState  # noqa: E402
from libs.common.database import create_pool  # noqa: E402
from libs.common.domain import commands as c  # noqa: E402
from libs.common.domain.model import LoadBalancerState, Topology  # noqa: E402
from libs.common.events import Metadata  # noqa: E402
from libs.common.eventstore import PostgresEventStore  # noqa: E402
from libs.common.pki import DeploymentCA  # noqa: E402
from libs.common.repository import LoadBalancerRepository  # noqa: E402
from libs.common.schema import upgrade  # noqa: E402
from libs.common.settings import NatsSettings, PostgresSettings, RelaySettings  # noqa: E402
from services.health.app import UDP_ADDRESS  # noqa: E402
from services.health.app import create_app as create_health  # noqa: E402
from services.health.settings import HealthSettings  # noqa: E402
from services.provisioner.app import CONFIGURATOR, DRIVER  # noqa: E402
from services.provisioner.app import create_app as create_provisioner  # noqa: E402
from services.provisioner.drivers import AmphoraHandle  # noqa: E402
from services.provisioner.drivers.netns import NetnsAmphoraDriver  # noqa: E402
from services.provisioner.settings import ProvisionerSettings  # noqa: E402
from tests.integration.netns.lab import NetnsLab, kill_everything_in  # noqa: E402

META = Metadata(actor="bench")
KEY = "bench-failover-key"
ROUND_TIMEOUT = 90.0
GOALS = {"ACTIVE_STANDBY": 0.5, "SINGLE": 3.0}


@dataclass
class Result:
    scenario: str
    goal: float | None
    outages: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Stack:
    lab: NetnsLab
    provisioner: web.Application
    repo: LoadBalancerRepository
    state_dir: Path
    ports: list[int]

    @property
    def driver(self) -> NetnsAmphoraDriver:
        driver = self.provisioner[DRIVER]
        assert isinstance(driver, NetnsAmphoraDriver)
        return driver

    async def handles(self, lb_id: str) -> list[AmphoraHandle]:
        return [h for h in await self.driver.list() if h.lb_id == lb_id]

    async def vrrp_state(self, handle: AmphoraHandle) -> VrrpState:
        return (await self.provisioner[CONFIGURATOR].client(handle).vrrp_status()).state


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_active(stack: Stack, lb_id: str, but_not: str | None = None) -> LoadBalancerState:
    found: list[LoadBalancerState] = []

    async def active() -> bool:
        state = await stack.repo.load(lb_id)
        lb = state.loadbalancer
        if lb is not None and lb.provisioning_status.value == "ERROR":
            raise RuntimeError(f"LB went ERROR: {lb.provisioning_error}")
        found[:] = [state]
        ok = lb is not None and lb.provisioning_status.value == "ACTIVE"
        return ok and (but_not is None or but_not not in state.amphora_ids)

    await eventually(active, 60, "the LB to be ACTIVE")
    return found[0]


@contextlib.asynccontextmanager
async def serving_lb(stack: Stack, topology: Topology, index: int) -> AsyncIterator[str]:
    """An ACTIVE LB answering on its VIP (and a settled VRRP pair); deleted afterwards."""
    vip = stack.lab.vip(index % 50)
    command = stack.lab.http_lb(vip, stack.ports, topology)
    lb_id = command.loadbalancer.id
    await stack.repo.execute(lb_id, command, META)
    try:
        await wait_active(stack, lb_id)
        if topology == Topology.ACTIVE_STANDBY:

            async def settled() -> bool:
                states = [await stack.vrrp_state(h) for h in await stack.handles(lb_id)]
                return sorted(states) == [VrrpState.BACKUP, VrrpState.MASTER]

            await eventually(settled, 15, "a MASTER and a BACKUP")
        await stack.lab.wait_answers(f"http://{vip}/")
        yield lb_id
    finally:
        with contextlib.suppress(Exception):
            await stack.repo.execute(lb_id, c.DeleteLoadBalancer(cascade=True), META)

            async def deleted() -> bool:
                lb = (await stack.repo.load(lb_id)).loadbalancer
                return lb is not None and lb.provisioning_status.value == "DELETED"

            await eventually(deleted, 30, "the LB to be deleted")


def cut_link(stack: Stack, handle: AmphoraHandle) -> None:
    """The amphora's bridge port goes down: nothing in or out, as for a dead host."""
    port = f"v{handle.amphora_id.replace('-', '')[:12]}"
    bridge_ns = stack.driver.network_namespace(stack.lab.network.name)
    subprocess.run(["ip", "-n", bridge_ns, "link", "set", port, "down"], check=True)


async def active_standby_round(stack: Stack, index: int, how: str) -> tuple[float, str]:
    async with serving_lb(stack, Topology.ACTIVE_STANDBY, index) as lb_id:
        handles = await stack.handles(lb_id)
        states = {h.amphora_id: await stack.vrrp_state(h) for h in handles}
        master = next(h for h in handles if states[h.amphora_id] == VrrpState.MASTER)
        backup = next(h for h in handles if h is not master)
        vip = (await stack.repo.load(lb_id)).loadbalancer.vip_address  # type: ignore[union-attr]
        prober = stack.lab.start_prober(f"http://{vip}/", stack.state_dir.parent)
        await asyncio.sleep(0.5)
        killed_at = time.monotonic()
        if how == "kill":
            await asyncio.to_thread(kill_everything_in, master.compute_id)
        else:
            await asyncio.to_thread(cut_link, stack, master)

        async def taken_over() -> bool:
            return await stack.vrrp_state(backup) == VrrpState.MASTER

        await eventually(taken_over, 10, "the BACKUP to take over")
        takeover = time.monotonic() - killed_at
        await asyncio.sleep(1.0)
        await stack.repo.execute(lb_id, c.FailoverLoadBalancer(master.amphora_id), META)
        await wait_active(stack, lb_id, but_not=master.amphora_id)
        whole = time.monotonic() - killed_at
        await asyncio.sleep(0.5)
        seen = await prober.measure(killed_at)
        return seen.longest_gap, f"BACKUP MASTER after {takeover:.2f} s, pair whole {whole:.1f} s"


async def single_round(stack: Stack, index: int, command_at_once: bool) -> tuple[float, str]:
    async with serving_lb(stack, Topology.SINGLE, index) as lb_id:
        (old,) = await stack.handles(lb_id)
        vip = (await stack.repo.load(lb_id)).loadbalancer.vip_address  # type: ignore[union-attr]
        prober = stack.lab.start_prober(f"http://{vip}/", stack.state_dir.parent)
        await asyncio.sleep(0.5)
        killed_at = time.monotonic()
        await asyncio.to_thread(kill_everything_in, old.compute_id)
        if command_at_once:
            await stack.repo.execute(lb_id, c.FailoverLoadBalancer(old.amphora_id), META)
        detected: float | None = None

        async def replaced() -> bool:
            nonlocal detected
            state = await stack.repo.load(lb_id)
            lb = state.loadbalancer
            assert lb is not None
            if detected is None and lb.provisioning_status.value != "ACTIVE":
                detected = time.monotonic() - killed_at
            return lb.provisioning_status.value == "ACTIVE" and old.amphora_id not in (
                state.amphora_ids
            )

        await eventually(replaced, 60, "a replacement amphora")
        active_after = time.monotonic() - killed_at
        await stack.lab.wait_answers(f"http://{vip}/", timeout=10)
        await asyncio.sleep(0.3)
        seen = await prober.measure(killed_at)
        found = f"failover started {detected:.2f} s, " if detected is not None else ""
        return seen.longest_gap, f"{found}ACTIVE again {active_after:.2f} s"


@contextlib.asynccontextmanager
async def stack_with(
    admin_dsn: str, tmp: Path, lab: NetnsLab, ports: list[int], health: dict[str, Any] | None
) -> AsyncIterator[Stack]:
    """A fresh database and NATS, the provisioner (netns driver) and, when ``health`` is given,
    the health service listening on the lab network's gateway address, where the amphorae
    send their heartbeats. Fresh servers per stack: a stopped provisioner's unacked messages
    would otherwise wait out their ack_wait before the next one sees them."""
    name = f"bench{time.monotonic_ns()}"
    state_dir = tmp / name
    nats_server = EmbeddedNats(state_dir / "nats")
    runners: list[web.AppRunner] = []
    pool: Any = None
    try:
        nats_url = nats_server.start()
        dsn = await create_database(admin_dsn, name)
        pool = await create_pool(PostgresSettings(dsn=dsn, max_pool=10))
        await upgrade(pool)
        settings = ProvisionerSettings(
            postgres=PostgresSettings(dsn=dsn),
            nats=NatsSettings(url=nats_url, ack_wait=10.0),
            relay=RelaySettings(poll_interval=0.5),
            port=0,
            state_dir=state_dir / "amphorae",
            ca_dir=state_dir / "ca",
            driver="netns",
            netns=lab.driver_settings,
        )
        if health is not None:
            health_app = create_health(
                HealthSettings(
                    postgres=PostgresSettings(dsn=dsn),
                    nats=NatsSettings(url=nats_url),
                    relay=RelaySettings(poll_interval=0.5),
                    port=0,
                    udp_host=lab.network.gateway,
                    udp_port=0,
                    heartbeat_key=KEY,
                    heartbeat_timeout=health["timeout"],
                    health_check_interval=health["scan"],
                    stale_grace=5.0,
                    flush_interval=0.1,
                    refresh_interval=0.2,
                )
            )
            runner = web.AppRunner(health_app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            runners.append(runner)
            host, port = health_app[UDP_ADDRESS]
            settings = settings.model_copy(
                update={
                    "heartbeat_key": KEY,
                    "health_endpoints": [f"{host}:{port}"],
                    "heartbeat_interval": health["interval"],
                }
            )
        app = create_provisioner(settings)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        repo = LoadBalancerRepository(PostgresEventStore(pool))
        yield Stack(lab, app, repo, state_dir, ports)
    finally:
        for runner in reversed(runners):
            app_driver = runner.app.get(DRIVER)
            if isinstance(app_driver, NetnsAmphoraDriver):
                for handle in await app_driver.list():
                    await app_driver.delete(handle.amphora_id)
            await runner.cleanup()
        if pool is not None:
            await pool.close()
        nats_server.stop()


async def run(rounds: int, only: str | None) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="fulcrum-bench-failover-") as tmp_name:
        tmp = Path(tmp_name)
        pg = EmbeddedPostgres(tmp / "pg")
        lab = NetnsLab.create()
        try:
            admin = pg.start()
            # The lab network first: health listens on its gateway address.
            # Made by a driver of its own (kept, so no stack's driver removes it), shared by
            # every stack below.
            prep = NetnsAmphoraDriver(
                lab.driver_settings, tmp / "prep", DeploymentCA.load_or_create(tmp / "prep-ca")
            )
            await lab.attach_client(prep)
            ports = await asyncio.to_thread(lab.start_backends, ["b0", "b1"])
            print(f"lab: network {lab.network.subnet}, client {lab.client_ip}, rounds {rounds}")

            beat = _default(ProvisionerSettings, "heartbeat_interval")
            dead = _default(HealthSettings, "heartbeat_timeout")
            scan = _default(HealthSettings, "health_check_interval")
            scenarios: list[tuple[str, dict[str, Any] | None, str, Callable[..., Any]]] = [
                ("ACTIVE_STANDBY, MASTER kill -9", None, "ACTIVE_STANDBY", _as_kill),
                ("ACTIVE_STANDBY, MASTER link cut", None, "ACTIVE_STANDBY", _as_cut),
                ("SINGLE, kill -9 + failover command (rebuild only)", None, "", _single_cmd),
                (
                    "SINGLE, kill -9, health 0.2 s beats / 1 s timeout",
                    {"interval": 0.2, "timeout": 1.0, "scan": 0.2},
                    "SINGLE",
                    _single_health,
                ),
                (
                    f"SINGLE, kill -9, health defaults {beat:g} s beats / {dead:g} s timeout",
                    {"interval": beat, "timeout": dead, "scan": scan},
                    "SINGLE",
                    _single_health,
                ),
                (
                    "SINGLE, kill -9, health 0.5 s beats / 1.5 s timeout / 0.25 s scan",
                    {"interval": 0.5, "timeout": 1.5, "scan": 0.25},
                    "SINGLE",
                    _single_health,
                ),
            ]
            index = 0
            for name, health, goal_key, scenario in scenarios:
                if only and only.lower() not in name.lower():
                    continue
                result = Result(name, GOALS.get(goal_key))
                async with stack_with(admin, tmp, lab, ports, health) as stack:
                    for _ in range(rounds):
                        index += 1
                        gap, note = await asyncio.wait_for(scenario(stack, index), ROUND_TIMEOUT)
                        result.outages.append(gap)
                        result.notes.append(note)
                        print(f"  {name}: outage {gap:.3f} s ({note})", flush=True)
                results.append(result)
        finally:
            lab.cleanup()
            pg.stop()
            left = lab.leftovers()
            if left:
                print(f"WARNING: left behind: {left}")
    return results


def _default(settings: type[Any], name: str) -> float:
    value = settings.model_fields[name].default
    assert isinstance(value, float), f"{settings.__name__}.{name} has no float default"
    return value


async def _as_kill(stack: Stack, index: int) -> tuple[float, str]:
    return await active_standby_round(stack, index, "kill")


async def _as_cut(stack: Stack, index: int) -> tuple[float, str]:
    return await active_standby_round(stack, index, "cut")


async def _single_cmd(stack: Stack, index: int) -> tuple[float, str]:
    return await single_round(stack, index, command_at_once=True)


async def _single_health(stack: Stack, index: int) -> tuple[float, str]:
    return await single_round(stack, index, command_at_once=False)


def report(results: list[Result]) -> None:
    print()
    width = max(len(r.scenario) for r in results)
    print(f"{'scenario':{width}} {'min':>7} {'median':>7} {'max':>7}  goal")
    for r in results:
        lo, mid, hi = min(r.outages), statistics.median(r.outages), max(r.outages)
        if r.goal is None:
            verdict = "(no goal)"
        else:
            verdict = f"<= {r.goal:.1f} s: {'met' if hi <= r.goal else 'MISSED'} (max)"
        print(f"{r.scenario:{width}} {lo:6.3f}s {mid:6.3f}s {hi:6.3f}s  {verdict}")
    print("Octavia's defaults for comparison: ~3 s (VRRPv2, 1 s adverts) for ACTIVE_STANDBY;")
    print(">= 60 s detection plus a VM rebuild for SINGLE.")


def _dump_tasks() -> None:
    """SIGUSR1: print every asyncio task's stack (to see what a slow round waits for)."""
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


async def _with_diagnostics(rounds: int, only: str | None) -> list[Result]:
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump_tasks)
    return await run(rounds, only)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", help="run the scenarios whose name contains this")
    parser.add_argument("--verbose", action="store_true", help="log the services' INFO lines")
    args = parser.parse_args()
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if os.geteuid() != 0:
        sys.exit("bench_failover needs root (network namespaces)")
    report(asyncio.run(_with_diagnostics(max(1, min(args.rounds, 10)), args.only)))


if __name__ == "__main__":
    main()
