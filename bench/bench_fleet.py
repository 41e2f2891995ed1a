"""Fleet benchmark: many load balancers on one machine (process driver by default).

Starts a ``fulcrum up``-style stack in a temp dir (embedded Postgres and NATS; api with noauth,
provisioner with the process driver, health, housekeeping; amphorae heartbeat to health at the
default interval) and, through the real API, creates ``--count`` load balancers (default 1,000),
each a single-call create of a listener, a pool and two members, at concurrency 16, watching
them with one list of the LBs still PENDING_CREATE every 100 ms (and a show of each LB that
left it). It measures:
- creation time of the whole fleet, all ACTIVE, the rate by tenth of the fleet, and the CPU
  each process group used meanwhile (each service; Postgres by the service each backend
  serves; NATS; the amphorae's agents and HAProxies; every thread's run time in ns from
  schedstat, not stat's sampled ticks), and that CPU in ms per LB created within each tenth
  of the fleet (a snapshot as each tenth is ACTIVE: which kind's cost grows with the fleet),
- memory per amphora: proportional set size (``/proc/<pid>/smaps_rollup``) of its agent plus
  its HAProxy process (and its children: none but external checks); with ``--per-process K`` (agent hosts of K amphorae,
  FULCRUM_PROVISIONER_AMPHORAE_PER_AGENT_PROCESS) the agent part is its share of its host,
- idle control-plane CPU (the four services, Postgres and NATS) over ``--idle`` seconds with
  the first 10 LBs and with the whole fleet, projected to 1,000 amphorae along the line
  through both, with the same breakdown,
- API show and first-page latencies (p50) with 10 load balancers and with the whole fleet,
  interleaved with ``GET /`` (no database) as the control for how busy the API's process was,
  with ``GET /`` of a witness (bench/_witness.py: an aiohttp server in its own process doing
  nothing else) for how the box's round trips changed, and the whole unpaginated list (O(n)
  by nature: a figure, not a goal).
Goals (issue 20, 2 cores): 1,000 LBs created in <= 60 s; <= 12 MB per amphora; idle control
plane <= 0.1 core at 1,000; show and first page unchanged at size (<= 1.2x).
Every amphora costs ~22 MB (~8 MB in agent hosts): a count that does not fit in half of the available memory is
lowered to one that does (and says so).
``--driver netns`` (root) or ``docker`` (the private engine of ``.state/docker``) runs the same
fleet, at most 100 LBs, on that driver instead, its VIPs in 198.18.0.0/15
(bench/_fleet_drivers.py); for docker the memory figure is the PSS of the container's
processes, its memory cgroup's usage and its containerd shim printed beside.
Run: .venv/bin/python bench/bench_fleet.py [--count N] [--idle SECONDS] [--per-process K]
     [--driver D]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

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
    children,
    cpu_seconds,
    free_port,
    graph,
    pct,
    postgres_roles,
    stack,
    wait_http,
)
from deploy.local.embedded import create_database  # noqa: E402
from libs.common.settings import HEARTBEAT_KEY_ENV  # noqa: E402

CONCURRENCY = 16
SMALL = 10
POLL = 0.1
WARM_UP = 30
LATENCY_ROUNDS = 300
LIST_EVERY = 5
SETTLE = 5.0
GOAL_SECONDS_PER_1000 = 60.0
GOAL_PSS_MB = 12.0
GOAL_IDLE_CORES = 0.1
GOAL_LATENCY_RATIO = 1.2
SERVICES = ("api", "provisioner", "health", "housekeeping")
AGENTS = "amphorae: agents"
HAPROXIES = "amphorae: haproxy"
T = TypeVar("T")
# What one LB costs the box with the process driver (amphora, its share of the control plane).
MB_PER_LB = 25
MB_PER_HOSTED_LB = 10


@dataclass(frozen=True)
class Latencies:
    """API p50s in ms: one LB shown, the whole list, the first page of ten, the API's version
    document (``GET /``: no database), the control for how busy the API's process was, and
    the witness's ``GET /`` (no Fulcrum process), for how the box's round trips changed."""

    show: float
    list_all: float
    list_page: float
    control: float
    witness: float


@dataclass(frozen=True)
class Memory:
    """Mean proportional set size per amphora, MB (``agent``: of its agent process, or its
    share of the agent host's)."""

    amphorae: int
    agent: float
    haproxy: float
    agent_processes: int

    @property
    def total(self) -> float:
        return self.agent + self.haproxy


async def create_fleet(
    api: Api,
    vips: Vips,
    members: list[int],
    count: int,
    on_tenth: Callable[[], Awaitable[None]] | None = None,
) -> tuple[list[str], list[float], int]:
    """``count`` single-call creates at ``CONCURRENCY``; returns once every one is ACTIVE, with
    the ids, when each was seen ACTIVE (seconds since the start, in order) and the status
    requests the watch made. ``on_tenth`` is awaited (in order, one at a time) each time
    another tenth of ``count`` is ACTIVE."""
    sem = asyncio.Semaphore(CONCURRENCY)
    watch = StatusWatch(api, POLL)
    ids: list[str] = []
    done: list[float] = []
    started = time.perf_counter()
    tenth = max(1, count // 10)
    marks: list[asyncio.Task[None]] = []
    marking = asyncio.Lock()

    async def mark() -> None:
        assert on_tenth is not None
        async with marking:
            await on_tenth()

    async def one() -> None:
        vip = vips.next()
        async with sem:
            body = graph(vip, listener_port(vip), members)
            lb = (await api.post("/v2/lbaas/loadbalancers", body))["loadbalancer"]
            ids.append(lb["id"])
            await watch.wait_active(lb["id"], timeout=300)
            done.append(time.perf_counter() - started)
            if on_tenth is not None and len(done) % tenth == 0 and len(done) // tenth <= 10:
                marks.append(asyncio.create_task(mark()))

    poller = asyncio.create_task(watch.run())
    try:
        await asyncio.gather(*(one() for _ in range(count)))
        await asyncio.gather(*marks)
    finally:
        poller.cancel()
    return ids, done, watch.requests


async def latencies(api: Api, lb_ids: list[str], witness: str) -> Latencies:
    """p50s of show, first page, whole list, the API's ``GET /`` and ``witness`` (a URL),
    after ``WARM_UP`` rounds, interleaved (one of each kind per round, the whole list every
    ``LIST_EVERY``-th round) so that the box's load falls on every kind alike."""

    async def timed(url: str) -> float:
        started = time.perf_counter()
        async with api.s.get(url) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        return time.perf_counter() - started

    base = f"{api.base}/v2/lbaas/loadbalancers"
    show: list[float] = []
    page: list[float] = []
    whole: list[float] = []
    control: list[float] = []
    witnessed: list[float] = []
    for n in range(WARM_UP + LATENCY_ROUNDS):
        samples = (
            await timed(f"{base}/{lb_ids[n % len(lb_ids)]}"),
            await timed(f"{base}?limit=10"),
            await timed(f"{api.base}/"),
            await timed(base) if n % LIST_EVERY == 0 else None,
            await timed(witness),
        )
        if n < WARM_UP:
            continue
        show.append(samples[0])
        page.append(samples[1])
        control.append(samples[2])
        witnessed.append(samples[4])
        if samples[3] is not None:
            whole.append(samples[3])
    return Latencies(
        pct(show, 0.5), pct(whole, 0.5), pct(page, 0.5), pct(control, 0.5), pct(witnessed, 0.5)
    )


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


def amphora_memory(state_dir: Path) -> Memory:
    """Mean PSS of each amphora's agent (an agent host's counted once, shared by its
    amphorae) and HAProxy (its process and any children)."""
    agents: set[int] = set()
    haproxies: list[int] = []
    for directory in sorted(p for p in state_dir.iterdir() if not p.name.startswith(".")):
        try:
            agent = int((directory / "agent.pid").read_text())
            haproxy = int((directory / "haproxy.pid").read_text())
        except (OSError, ValueError):
            continue
        agents.add(agent)
        haproxies.append(pss_kb(haproxy) + sum(pss_kb(c) for c in children(haproxy)))
    count = len(haproxies)
    if not count:
        raise RuntimeError(f"no running amphora under {state_dir}")
    agent_kb = sum(pss_kb(pid) for pid in agents)
    return Memory(count, agent_kb / count / 1024, sum(haproxies) / count / 1024, len(agents))


# pid -> (group, CPU seconds so far)
Snapshot = dict[int, tuple[str, float]]


async def snapshot(s: Stack) -> Snapshot:
    """CPU ticks of every process of the stack and its fleet, by group: each service, Postgres
    by the service each backend serves, NATS, the amphorae's agents and their HAProxies."""
    groups: dict[int, str] = dict(s.names)
    postmaster, nats = s.server_pids()
    if postmaster is not None:
        roles = await postgres_roles(s.pg_dsn)
        groups[postmaster] = "postgres: postmaster"
        for pid in children(postmaster):
            groups[pid] = f"postgres: {roles.get(pid, 'other')}"
    if nats is not None:
        groups[nats] = "nats"
    for directory in (s.root / "amphorae").glob("*"):
        for name, group in (("agent.pid", AGENTS), ("haproxy.pid", HAPROXIES)):
            try:
                pid = int((directory / name).read_text())
            except (OSError, ValueError):
                continue
            groups.setdefault(pid, group)
            if group == HAPROXIES:
                for worker in children(pid):
                    groups.setdefault(worker, group)
    out: Snapshot = {}
    for pid, group in groups.items():
        used = cpu_seconds(pid)
        if used is not None:
            out[pid] = (group, used)
    return out


def cores_by_group(before: Snapshot, after: Snapshot, seconds: float) -> dict[str, float]:
    """Cores each group used between two snapshots (a process born in between counts all
    its time; one gone in between is lost: Postgres backends of short sessions)."""
    used: dict[str, float] = {}
    for pid, (group, now) in after.items():
        then = before.get(pid, (group, 0.0))[1]
        used[group] = used.get(group, 0.0) + max(0.0, now - then)
    return {group: u / seconds for group, u in sorted(used.items())}


@dataclass(frozen=True)
class CpuUse:
    """Cores by process group over a window; the control plane is every group but the
    amphorae's."""

    seconds: float
    cores: dict[str, float]

    @property
    def services(self) -> float:
        return sum(v for k, v in self.cores.items() if k in SERVICES)

    @property
    def control_plane(self) -> float:
        return sum(v for k, v in self.cores.items() if k not in (AGENTS, HAPROXIES))


async def measure_cpu(s: Stack, work: Awaitable[T]) -> tuple[T, CpuUse]:
    """``work``'s result and the cores every group used while it ran."""
    before, started = await snapshot(s), time.monotonic()
    result = await work
    after = await snapshot(s)
    elapsed = time.monotonic() - started
    return result, CpuUse(elapsed, cores_by_group(before, after, elapsed))


def start_services(
    s: Stack, api_port: int, per_process: int, driver_env: dict[str, dict[str, str]]
) -> None:
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
            "AMPHORAE_PER_AGENT_PROCESS": str(per_process),
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


@dataclass(frozen=True)
class Creation:
    """The fleet's creation: seconds in all, when each LB was seen ACTIVE (seconds of creating:
    the rest's counted from the first ``SMALL``'s end), the watch's status requests and the
    CPU used while the rest was created."""

    seconds: float
    done: list[float]
    status_requests: int
    cpu: CpuUse
    by_tenth: dict[str, list[float]]


def ms_per_lb_by_tenth(snapshots: list[Snapshot], per_tenth: int) -> dict[str, list[float]]:
    """CPU ms per LB created, by group, within each tenth: between consecutive snapshots
    (taken as each tenth of ``per_tenth`` LBs was ACTIVE)."""
    out: dict[str, list[float]] = {}
    for n, (before, after) in enumerate(zip(snapshots, snapshots[1:], strict=False)):
        for group, cores in cores_by_group(before, after, 1.0).items():
            out.setdefault(group, [0.0] * (len(snapshots) - 1))[n] = cores * 1000 / per_tenth
    return out


async def run(count: int, idle: float, per_process: int, driver_name: str) -> None:
    async with fleet_driver(driver_name) as driver:
        await run_on(driver, count, idle, per_process)


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
    return Memory(
        containers.containers, containers.agent, containers.haproxy, containers.containers
    )


async def run_on(driver: FleetDriver, count: int, idle: float, per_process: int) -> None:
    os.environ.setdefault(HEARTBEAT_KEY_ENV, "bench-fleet-heartbeat-key")
    with stack("fulcrum-bench-fleet-") as s:
        s.pg_dsn = await create_database(s.pg_dsn, "bench")
        api_port = free_port()
        start_services(s, api_port, per_process, driver.env)
        p1, p2, p3 = free_port(), free_port(), free_port()
        (s.root / "backends.cfg").write_text(BACKEND_CFG.format(p1=p1, p2=p2, p3=p3))
        backends = subprocess.Popen(["haproxy", "-db", "-f", str(s.root / "backends.cfg")])
        witness_port = free_port()
        witness_server = subprocess.Popen(
            [sys.executable, "-m", "bench._witness", str(witness_port)], cwd=REPO
        )
        witness = f"http://127.0.0.1:{witness_port}/"
        base = f"http://127.0.0.1:{api_port}"
        try:
            wait_http(f"{base}/healthz")
            wait_http(witness)
            async with aiohttp.ClientSession() as session:
                api = Api(session, base)
                vips = driver.vips
                started = time.perf_counter()
                first, done, asked = await create_fleet(api, vips, [p1, p2], min(SMALL, count))
                seconds = time.perf_counter() - started
                await asyncio.sleep(SETTLE)
                small = await latencies(api, first, witness)
                _, idle_small = await measure_cpu(s, asyncio.sleep(idle))
                tenths: list[Snapshot] = [await snapshot(s)]

                async def on_tenth() -> None:
                    tenths.append(await snapshot(s))

                (rest, more, asked_more), cpu = await measure_cpu(
                    s, create_fleet(api, vips, [p1, p2], count - len(first), on_tenth)
                )
                seconds += cpu.seconds
                after_first = max(done, default=0.0)
                creation = Creation(
                    seconds,
                    done + [after_first + t for t in more],
                    asked + asked_more,
                    cpu,
                    ms_per_lb_by_tenth(tenths, max(1, len(rest) // 10)),
                )
                await asyncio.sleep(SETTLE)  # the last amphorae settle into heartbeating
                memory = fleet_memory(driver, s.root / "amphorae")
                _, idle_use = await measure_cpu(s, asyncio.sleep(idle))
                large = await latencies(api, first + rest, witness)
                with paused(s, await snapshot(s)):
                    alone = await latencies(api, first + rest, witness)
        finally:
            for server in (backends, witness_server):
                server.terminate()
                server.wait()
    idles = Idle(min(SMALL, count), idle_small, idle_use)
    report(driver.name, count, per_process, creation, memory, idles, small, Sized(large, alone))


@contextmanager
def paused(s: Stack, processes: Snapshot) -> Iterator[None]:
    """Every process but the API, Postgres and NATS stopped (SIGSTOP) meanwhile: the fleet's
    amphorae and the other services, so that the API's latencies at size differ from those
    at 10 LBs by the tables' size only, not by the CPU the fleet takes from this box. Health
    would fail the silent amphorae over once resumed: only the bench's last measurement runs
    paused."""
    kept = {pid for pid, name in s.names.items() if name == "api"}
    stopped = [
        pid
        for pid, (group, _) in processes.items()
        if pid not in kept and (group in SERVICES or group in (AGENTS, HAPROXIES))
    ]
    for pid in stopped:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in stopped:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@dataclass(frozen=True)
class Sized:
    """The latencies at size with the fleet running, and with it paused (``paused``)."""

    running: Latencies
    alone: Latencies


@dataclass(frozen=True)
class Idle:
    """The idle control plane with ``small`` LBs and with the whole fleet, in one run."""

    small: int
    at_small: CpuUse
    at_size: CpuUse

    def at(self, count: int, size: int) -> float:
        """Cores projected for ``count`` amphorae: the line through the two measurements
        (the fleet's ``size`` amphorae and the first ``small``)."""
        if size <= self.small:
            return self.at_size.control_plane * count / max(size, 1)
        slope = (self.at_size.control_plane - self.at_small.control_plane) / (size - self.small)
        return self.at_small.control_plane + slope * (count - self.small)


def report(
    driver: str,
    count: int,
    per_process: int,
    creation: Creation,
    memory: Memory,
    idles: Idle,
    small: Latencies,
    sized: Sized,
) -> None:
    goal_seconds = GOAL_SECONDS_PER_1000 * count / 1000
    seconds = creation.seconds

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    agents = "an agent process each" if per_process == 1 else f"agent hosts of {per_process}"
    print(f"Fulcrum fleet benchmark ({driver} driver, amphorae in {agents}, 2-core box; {load()})")
    print(
        f"  {count} LBs (listener, pool, 2 members) at concurrency {CONCURRENCY}, all ACTIVE: "
        f"{seconds:6.1f} s ({count / seconds:5.1f} LBs/s)   goal <= {goal_seconds:.0f} s "
        f"(60 s per 1,000): {verdict(seconds <= goal_seconds)}"
    )
    print(f"    LBs/s by tenth of the fleet: {rates_by_tenth(creation.done)}")
    print(
        f"    status polls and shows while creating: {creation.status_requests}; CPU while "
        f"creating the last {count - SMALL}, cores:"
    )
    print(f"      {breakdown(creation.cpu)}")
    print("    CPU ms per LB by tenth of the last ones created, by process group:")
    for group, values in sorted(creation.by_tenth.items(), key=lambda kv: -sum(kv[1])):
        if sum(values) >= 0.1 * len(values):
            print(f"      {group:<28} {' '.join(f'{v:5.1f}' for v in values)}")
    print(
        f"  memory per amphora (PSS, mean of {memory.amphorae}): {memory.total:5.1f} MB "
        f"(agent {memory.agent:4.1f} in {memory.agent_processes} processes, HAProxy "
        f"{memory.haproxy:4.1f})   goal <= {GOAL_PSS_MB:.0f} MB: {verdict(memory.total <= GOAL_PSS_MB)}"
    )
    idle = idles.at_size
    # The fleet's amphorae and the spares (two) heartbeat; the small stage had its LBs' and
    # the spares'.
    size = memory.amphorae
    projected = idles.at(1000, size)
    print(
        f"  idle control plane over {idle.seconds:.0f} s while {size} amphorae heartbeat: "
        f"services {idle.services:5.3f} cores, with Postgres and NATS "
        f"{idle.control_plane:5.3f} (with {idles.small} LBs: "
        f"{idles.at_small.control_plane:5.3f}); projected to 1,000 amphorae along the line "
        f"through both: {projected:5.3f}   goal <= {GOAL_IDLE_CORES} at 1,000: "
        f"{verdict(projected <= GOAL_IDLE_CORES)}"
    )
    print(f"    by process at {size}, cores: {breakdown(idle)}")
    print(f"    by process at {idles.small}, cores: {breakdown(idles.at_small)}")
    for large, how in (
        (sized.running, "the fleet running"),
        (sized.alone, "the fleet and the other services paused"),
    ):
        box = large.witness / small.witness
        print(
            f"  API p50s, ms, at {SMALL} LBs -> at {count} with {how}; the controls: the API's "
            f"GET / (no database) {small.control:.2f} -> {large.control:.2f} "
            f"({large.control / small.control:4.2f}x), the witness's GET / (a process doing "
            f"nothing else: the box's round trips) {small.witness:.2f} -> {large.witness:.2f} "
            f"({box:4.2f}x):"
        )
        for name, at_small, at_size in (
            ("show one LB", small.show, large.show),
            ("list, first page of 10", small.list_page, large.list_page),
        ):
            ratio = at_size / at_small
            print(
                f"    {name:<24} {at_small:6.2f} -> {at_size:6.2f}: {ratio:5.2f}x, over the "
                f"witness's {ratio / box:5.2f}x   goal <= {GOAL_LATENCY_RATIO:.1f}x: "
                f"{verdict(ratio <= GOAL_LATENCY_RATIO)}"
            )
        print(
            f"    {'list, all (one page)':<24} {small.list_all:6.2f} -> {large.list_all:6.2f}: "
            "O(n) by nature (every LB's body is read and sent): a figure, no goal"
        )
    print("  (a list without limit is capped at pagination_max_limit, 1,000, as Octavia caps it)")
    print(
        f"  (latencies: p50 of {LATENCY_ROUNDS} shows and first pages and "
        f"{LATENCY_ROUNDS // LIST_EVERY} whole lists, interleaved, after {WARM_UP} warm-up "
        f"rounds)"
    )


def rates_by_tenth(done: list[float]) -> str:
    """LBs/s within each tenth of the completions (in the order they were seen ACTIVE); a
    tenth of fewer than 10 LBs is below what a poll every ``POLL`` s can time."""
    ordered = sorted(done)
    tenth = len(ordered) // 10
    if tenth < 10:
        return "(fewer than 100 LBs: not timed)"
    rates: list[str] = []
    previous = 0.0
    for start in range(0, len(ordered) - tenth + 1, tenth):
        chunk = ordered[start : start + tenth]
        end = chunk[-1]
        rates.append(f"{len(chunk) / max(end - previous, 1e-6):.1f}")
        previous = end
    return " ".join(rates)


def breakdown(cpu: CpuUse) -> str:
    """``group cores`` for every group that used at least a millicore, largest first."""
    shown = sorted(((v, k) for k, v in cpu.cores.items() if v >= 0.001), reverse=True)
    return ", ".join(f"{k} {v:.3f}" for v, k in shown)


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def affordable(count: int, per_process: int) -> int:
    """``count``, or fewer: as many amphorae as fit in half of MemAvailable at ``MB_PER_LB``
    each, ``MB_PER_HOSTED_LB`` in agent hosts (the box is shared; 1,000 amphorae with an agent
    process each take ~22 GB)."""
    mb_per_lb = MB_PER_LB if per_process == 1 else MB_PER_HOSTED_LB
    meminfo = Path("/proc/meminfo").read_text()
    available_kb = next(
        int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemAvailable:")
    )
    fits = int(available_kb / 1024 / 2 / mb_per_lb)
    if fits < count:
        print(
            f"--count {count} needs ~{count * mb_per_lb / 1024:.1f} GB; half of MemAvailable "
            f"({available_kb / 1024**2:.1f} GB) fits {fits}: running {fits}"
        )
    return max(1, min(count, fits))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, default sys.argv); exits 2 with the reason on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=1000, help="load balancers (default 1000)")
    parser.add_argument("--idle", type=float, default=30.0, help="idle CPU window, seconds")
    parser.add_argument(
        "--per-process",
        type=int,
        default=1,
        help="amphora agents per process (FULCRUM_PROVISIONER_AMPHORAE_PER_AGENT_PROCESS; "
        "default 1: an agent process each; process driver only)",
    )
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
    if not 1 <= args.per_process <= 1000:
        parser.error("--per-process must be between 1 and 1000")
    if args.driver != "process" and args.per_process != 1:
        parser.error("--per-process applies to the process driver only")
    return args


def main() -> None:
    args = parse_args()
    count = affordable(args.count, args.per_process)
    asyncio.run(run(count, args.idle, args.per_process, args.driver))


if __name__ == "__main__":
    main()
