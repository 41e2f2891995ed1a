"""Fleet benchmark: many load balancers on one machine (process driver by default).

Starts a ``fulcrum up``-style stack in a temp dir (embedded Postgres and NATS; api with noauth,
provisioner with the process driver, health, housekeeping; amphorae heartbeat to health at the
default interval) and, through the real API, creates ``--count`` load balancers (default 1,000),
each a single-call create of a listener, a pool and two members, at concurrency 16, watching
them with one list request every 100 ms. It measures:
- creation time of the whole fleet, all ACTIVE,
- memory per amphora: proportional set size (``/proc/<pid>/smaps_rollup``) of its agent plus
  its HAProxy master and workers,
- idle control-plane CPU while the fleet heartbeats: the four services, and with Postgres and
  NATS, over ``--idle`` seconds,
- API show and list latencies (p50) with 10 load balancers and with the whole fleet.
Goals (issue 20, 2 cores): 1,000 LBs created in <= 60 s; <= 12 MB per amphora; idle control
plane <= 0.1 core; show and list latencies unchanged at size (printed as the ratio).
Every amphora costs ~22 MB: a count that does not fit in half of the available memory is
lowered to one that does (and says so).
``--driver netns`` (root) or ``docker`` (the private engine of ``.state/docker``) runs the same
fleet, at most 100 LBs, on that driver instead, its VIPs in 198.18.0.0/15
(bench/_fleet_drivers.py); for docker the memory figure is the PSS of the container's
processes, its memory cgroup's usage and its containerd shim printed beside.
Run: .venv/bin/python bench/bench_fleet.py [--count N] [--idle SECONDS] [--driver D]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402

from bench._fleet_drivers import (  # noqa: E402
    DRIVERS,
    MAX_NETWORK_FLEET,
    FleetDriver,
    docker_memory,
    fleet_driver,
    listener_port,
)
from bench._harness import (  # noqa: E402
    BACKEND_CFG,
    Api,
    Stack,
    StatusWatch,
    Vips,
    free_port,
    graph,
    pct,
    stack,
    wait_http,
)
from deploy.local.embedded import create_database  # noqa: E402
from libs.common.settings import HEARTBEAT_KEY_ENV  # noqa: E402

CONCURRENCY = 16
SMALL = 10
POLL = 0.1
SHOW_SAMPLES = 50
LIST_SAMPLES = 20
GOAL_SECONDS_PER_1000 = 60.0
GOAL_PSS_MB = 12.0
GOAL_IDLE_CORES = 0.1
GOAL_LATENCY_RATIO = 1.2
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# What one LB costs the box with the process driver (amphora, its share of the control plane).
MB_PER_LB = 25


@dataclass(frozen=True)
class Latencies:
    """API p50s in ms: one LB shown, the whole list, the first page of ten."""

    show: float
    list_all: float
    list_page: float


@dataclass(frozen=True)
class Memory:
    """Mean proportional set size per amphora, MB."""

    amphorae: int
    agent: float
    haproxy: float

    @property
    def total(self) -> float:
        return self.agent + self.haproxy


async def create_fleet(api: Api, vips: Vips, members: list[int], count: int) -> list[str]:
    """``count`` single-call creates at ``CONCURRENCY``; returns once every one is ACTIVE."""
    sem = asyncio.Semaphore(CONCURRENCY)
    watch = StatusWatch(api, POLL)
    ids: list[str] = []

    async def one() -> None:
        vip = vips.next()
        async with sem:
            body = graph(vip, listener_port(vip), members)
            lb = (await api.post("/v2/lbaas/loadbalancers", body))["loadbalancer"]
            ids.append(lb["id"])
            await watch.wait_active(lb["id"], timeout=300)

    poller = asyncio.create_task(watch.run())
    try:
        await asyncio.gather(*(one() for _ in range(count)))
    finally:
        poller.cancel()
    return ids


async def latencies(api: Api, lb_ids: list[str]) -> Latencies:
    async def timed(url: str) -> float:
        started = time.perf_counter()
        async with api.s.get(url) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        return time.perf_counter() - started

    base = f"{api.base}/v2/lbaas/loadbalancers"
    show = [await timed(f"{base}/{lb_ids[n % len(lb_ids)]}") for n in range(SHOW_SAMPLES)]
    whole = [await timed(base) for _ in range(LIST_SAMPLES)]
    page = [await timed(f"{base}?limit=10") for _ in range(LIST_SAMPLES)]
    return Latencies(pct(show, 0.5), pct(whole, 0.5), pct(page, 0.5))


def pss_kb(pid: int) -> int:
    """The process's proportional set size in kB (0 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def amphora_memory(state_dir: Path) -> Memory:
    """Mean PSS of each amphora's agent and HAProxy (master and its workers)."""
    agents: list[int] = []
    haproxies: list[int] = []
    for directory in sorted(p for p in state_dir.iterdir() if not p.name.startswith(".")):
        try:
            agent = int((directory / "agent.pid").read_text())
            master = int((directory / "haproxy.pid").read_text())
        except (OSError, ValueError):
            continue
        agents.append(pss_kb(agent))
        haproxies.append(pss_kb(master) + sum(pss_kb(w) for w in children(master)))
    count = len(agents)
    if not count:
        raise RuntimeError(f"no running amphora under {state_dir}")
    return Memory(count, sum(agents) / count / 1024, sum(haproxies) / count / 1024)


def cpu_ticks(pids: list[int]) -> int:
    """utime + stime of ``pids`` (processes gone count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def with_children(pid: int) -> list[int]:
    """``pid`` and its children (Postgres: the postmaster and its backends)."""
    return [pid, *children(pid)]


async def idle_cpu(s: Stack, seconds: float) -> tuple[float, float]:
    """Cores used over ``seconds`` by the services, and by them plus Postgres and NATS."""
    services = [p.pid for p in s.procs]
    servers = [pid for pid in s.server_pids() if pid is not None]
    infra_start = [p for pid in servers for p in with_children(pid)]
    before_services, before_infra = cpu_ticks(services), cpu_ticks(infra_start)
    started = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    infra_end = [p for pid in servers for p in with_children(pid)]
    services_cores = (cpu_ticks(services) - before_services) / CLOCK_TICKS / elapsed
    # Postgres backends come and go: count those alive at either end, once each.
    infra_pids = sorted(set(infra_start) | set(infra_end))
    infra_cores = (cpu_ticks(infra_pids) - before_infra) / CLOCK_TICKS / elapsed
    return services_cores, services_cores + max(infra_cores, 0.0)


def start_services(s: Stack, api_port: int, driver_env: dict[str, dict[str, str]]) -> None:
    """The four services; ``driver_env``: the driver's settings per service (api,
    provisioner, health), over these."""
    udp = free_port()
    api = {"PORT": str(api_port), "AUTH_STRATEGY": "noauth", "ACCESS_LOG": "false"}
    s.service("api", api | driver_env.get("api", {}))
    s.service(
        "provisioner",
        {
            "PORT": str(free_port()),
            "STATE_DIR": str(s.root / "amphorae"),
            "CA_DIR": str(s.root / "ca"),
            "HEALTH_ENDPOINTS": json.dumps([f"127.0.0.1:{udp}"]),
        }
        | driver_env.get("provisioner", {}),
    )
    health = {"PORT": str(free_port()), "UDP_PORT": str(udp)}
    s.service("health", health | driver_env.get("health", {}))
    s.service(
        "housekeeping",
        {
            "PORT": str(free_port()),
            "SPARES__POOL_SIZE": "2",
            "CERTIFICATES__CA_CERT": str(s.root / "ca" / "ca.pem"),
        },
    )


async def run(count: int, idle: float, driver_name: str) -> None:
    async with fleet_driver(driver_name) as driver:
        await run_on(driver, count, idle)


def fleet_memory(driver: FleetDriver, state_dir: Path) -> Memory:
    """Memory per amphora: its processes' PSS (for docker, its container's; the container's
    cgroup and its shim printed beside, outside the figure)."""
    if driver.docker_host is None:
        return amphora_memory(state_dir)
    containers = docker_memory(driver.docker_host, pss_kb)
    print(
        f"  docker, per amphora container (mean of {containers.containers}): processes' PSS "
        f"{containers.agent + containers.haproxy:.1f} MB (the figure below), memory cgroup "
        f"usage {containers.cgroup:.1f} MB, containerd shim PSS {containers.shim:.1f} MB"
    )
    return Memory(containers.containers, containers.agent, containers.haproxy)


async def run_on(driver: FleetDriver, count: int, idle: float) -> None:
    os.environ.setdefault(HEARTBEAT_KEY_ENV, "bench-fleet-heartbeat-key")
    with stack("fulcrum-bench-fleet-") as s:
        s.pg_dsn = await create_database(s.pg_dsn, "bench")
        api_port = free_port()
        start_services(s, api_port, driver.env)
        p1, p2, p3 = free_port(), free_port(), free_port()
        (s.root / "backends.cfg").write_text(BACKEND_CFG.format(p1=p1, p2=p2, p3=p3))
        backends = subprocess.Popen(["haproxy", "-db", "-f", str(s.root / "backends.cfg")])
        base = f"http://127.0.0.1:{api_port}"
        wait_http(f"{base}/healthz")
        try:
            async with aiohttp.ClientSession() as session:
                api = Api(session, base)
                vips = driver.vips
                started = time.perf_counter()
                first = await create_fleet(api, vips, [p1, p2], min(SMALL, count))
                seconds = time.perf_counter() - started
                small = await latencies(api, first)
                started = time.perf_counter()
                rest = await create_fleet(api, vips, [p1, p2], count - len(first))
                seconds += time.perf_counter() - started
                await asyncio.sleep(5)  # the last amphorae settle into heartbeating
                memory = fleet_memory(driver, s.root / "amphorae")
                services_cores, with_servers = await idle_cpu(s, idle)
                large = await latencies(api, first + rest)
        finally:
            backends.terminate()
            backends.wait()
    print(f"Driver: {driver.name}")
    report(count, seconds, memory, services_cores, with_servers, idle, small, large)


def report(
    count: int,
    seconds: float,
    memory: Memory,
    services_cores: float,
    with_servers: float,
    idle: float,
    small: Latencies,
    large: Latencies,
) -> None:
    goal_seconds = GOAL_SECONDS_PER_1000 * count / 1000

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    print("Fulcrum fleet benchmark (2-core box)")
    print(
        f"  {count} LBs (listener, pool, 2 members) at concurrency {CONCURRENCY}, all ACTIVE: "
        f"{seconds:6.1f} s ({count / seconds:5.1f} LBs/s)   goal <= {goal_seconds:.0f} s "
        f"(60 s per 1,000): {verdict(seconds <= goal_seconds)}"
    )
    print(
        f"  memory per amphora (PSS, mean of {memory.amphorae}): {memory.total:5.1f} MB "
        f"(agent {memory.agent:4.1f}, HAProxy {memory.haproxy:4.1f})   goal <= {GOAL_PSS_MB:.0f}"
        f" MB: {verdict(memory.total <= GOAL_PSS_MB)}"
    )
    print(
        f"  idle control plane over {idle:.0f} s while {memory.amphorae} amphorae heartbeat: "
        f"services {services_cores:5.3f} cores, with Postgres and NATS {with_servers:5.3f}   "
        f"goal <= {GOAL_IDLE_CORES}: {verdict(with_servers <= GOAL_IDLE_CORES)}"
    )
    for name, at_small, at_size in (
        ("show one LB", small.show, large.show),
        ("list, first page of 10", small.list_page, large.list_page),
        ("list, all", small.list_all, large.list_all),
    ):
        ratio = at_size / at_small
        print(
            f"  {name:<24} p50 at {SMALL} LBs {at_small:6.2f} ms, at {count} {at_size:7.2f} ms: "
            f"{ratio:5.2f}x   goal <= {GOAL_LATENCY_RATIO:.1f}x: "
            f"{verdict(ratio <= GOAL_LATENCY_RATIO)}"
        )


def affordable(count: int) -> int:
    """``count``, or fewer: as many amphorae as fit in half of MemAvailable at ``MB_PER_LB``
    each (the box is shared; 1,000 amphorae take ~22 GB)."""
    meminfo = Path("/proc/meminfo").read_text()
    available_kb = next(
        int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemAvailable:")
    )
    fits = int(available_kb / 1024 / 2 / MB_PER_LB)
    if fits < count:
        print(
            f"--count {count} needs ~{count * MB_PER_LB / 1024:.1f} GB; half of MemAvailable "
            f"({available_kb / 1024**2:.1f} GB) fits {fits}: running {fits}"
        )
    return max(1, min(count, fits))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, default sys.argv); exits 2 with the reason on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=1000, help="load balancers (default 1000)")
    parser.add_argument("--idle", type=float, default=30.0, help="idle CPU window, seconds")
    parser.add_argument(
        "--driver", choices=DRIVERS, default="process", help="amphora driver (default process)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 1000:
        parser.error("--count must be between 1 and 1000")
    if args.driver != "process" and args.count > MAX_NETWORK_FLEET:
        parser.error(f"--count must be at most {MAX_NETWORK_FLEET} with --driver {args.driver}")
    if not 5 <= args.idle <= 300:
        parser.error("--idle must be between 5 and 300 seconds")
    return args


def main() -> None:
    args = parse_args()
    asyncio.run(run(affordable(args.count), args.idle, args.driver))


if __name__ == "__main__":
    main()
