"""Resilience benchmark: what users see while parts of ``fulcrum up`` die, and what fsync costs.

Part 1, per victim (api, provisioner, health, housekeeping, all four at once, postgres, nats):
a fresh ``fulcrum up --port 0`` in its own temp state dir, 10 LBs serving (one-call graph
creates, members are aiohttp servers on 127.0.0.1), a VIP prober (every VIP, new connection
per request, every 50 ms) and an API prober (GET /v2/lbaas/loadbalancers with the admin
token every 20 ms). The victim is SIGKILLed ``REPEATS`` times (by the pids supervisord
reports); each round measures
- ready again: seconds from the kill until ``fulcrum status`` is ready with new pids (at
  least supervisord's ``startsecs`` of 1 s: a part counts as running only after it),
- VIP requests failed during the round (from before the kill until ``SETTLE`` s after ready),
- API unavailable: from the first failed API probe (refused, timed out or 5xx) after the kill
  to the first success after it (0 when none failed),
and prints min / median / max of each, then a table.
Goals: 0 VIP requests failed; API unavailable <= 2 s for a service, <= 5 s for Postgres.

Part 2, the cost of fsync: LB creates/s through the API (in this process, noauth) against an
embedded Postgres with the durable defaults (fsync and synchronous_commit on) and one with
``UNSAFE_FAST_SETTINGS``, each with its own NATS; POST /v2/lbaas/loadbalancers at
concurrency 8, ``CREATES`` per kind in alternating chunks (so background load weighs on both
alike); creates/s, p50 latency and the ratio durable / unsafe. The provisioner does not run:
the API's commit path is what fsync slows. For reference it also prints one raw fsync of this
disk and one one-row commit on each server (p50, concurrency 1).

Bounded: every loop has a count and a time limit; traffic goes only to 127.0.0.0/8.
Everything started is stopped, also on failure. Takes about 2.5 minutes on 2 cores.
Run: .venv/bin/python bench/bench_resilience.py [--repeats N] [--creates N] [--victims a,b]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from bench._harness import SUBNET, free_port, pct, serving  # noqa: E402
from deploy.local.embedded import (  # noqa: E402
    UNSAFE_FAST_SETTINGS,
    EmbeddedNats,
    EmbeddedPostgres,
    create_database,
)
from libs.common.settings import NatsSettings, PostgresSettings  # noqa: E402
from tests.e2e.chaos import (  # noqa: E402
    SERVICES,
    BackgroundProbe,
    Tenant,
    VipProber,
    kill,
    wait_ready,
)
from tests.e2e.conftest import VENV_BIN, Stack, start_stack, stop_stack  # noqa: E402

VICTIMS: dict[str, tuple[str, ...]] = {
    **{name: (name,) for name in SERVICES},
    "all four": SERVICES,
    "postgres": ("postgres",),
    "nats": ("nats",),
}
REPEATS = 3
SERVING_LBS = 10
BASELINE = 0.5  # seconds of traffic before each kill
SETTLE = 1.0  # seconds of traffic after ready again, still part of the round
READY_TIMEOUT = 60.0
API_PROBE_INTERVAL = 0.02
API_PROBE_TIMEOUT = 2.0
API_GOAL = {"postgres": 5.0}  # seconds; every other victim: API_GOAL_SERVICE
API_GOAL_SERVICE = 2.0
CREATES = 300
CHUNKS = 3
CONCURRENCY = 8
WARMUP = 16
COMMITS = 300
FSYNCS = 200


@dataclass
class ApiProber(BackgroundProbe):
    """GETs the LB list every ``interval`` s, one at a time; records (sent, done, ok) per
    probe, ok meaning an answer below 500. Bounded by ``max_seconds`` and ``max_probes``."""

    url: str
    token: str
    interval: float = API_PROBE_INTERVAL
    max_seconds: float = 300.0
    max_probes: int = 20_000
    probes: list[tuple[float, float, bool]] = field(default_factory=list)
    trust: ssl.SSLContext | bool = True  # an HTTPS API's CA (True: the system's)

    async def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        timeout = aiohttp.ClientTimeout(total=API_PROBE_TIMEOUT)
        headers = {"X-Auth-Token": self.token}
        connector = aiohttp.TCPConnector(ssl=self.trust)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=headers
        ) as session:
            while time.monotonic() < deadline and len(self.probes) < self.max_probes:
                sent = time.monotonic()
                try:
                    async with session.get(f"{self.url}/v2/lbaas/loadbalancers") as resp:
                        await resp.read()
                        ok = resp.status < 500
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                self.probes.append((sent, time.monotonic(), ok))
                await asyncio.sleep(self.interval)

    def since(self, start: float) -> list[tuple[float, float, bool]]:
        """Probes answered at or after ``start`` (one in flight at ``start`` included)."""
        return [p for p in self.probes if p[1] >= start]

    def unavailable(self, start: float) -> tuple[float | None, int]:
        """Seconds from the first failed probe after ``start`` to the first success after it
        (0.0 when none failed, None when none succeeded since), and how many probes failed."""
        probes = self.since(start)
        failed = [p for p in probes if not p[2]]
        if not failed:
            return 0.0, 0
        first = max(failed[0][0], start)
        back = next((p[0] for p in probes if p[2] and p[0] > failed[0][0]), None)
        return (None if back is None else back - first), len(failed)

    async def wait_success(self, start: float, timeout: float) -> None:
        """Until a probe sent after ``start`` succeeded (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p[2] and p[0] >= start for p in self.probes):
                return
            await asyncio.sleep(0.05)


@dataclass
class Round:
    ready: float | None  # None: not ready within READY_TIMEOUT
    vip_failed: int
    api_unavailable: float | None
    api_failed_probes: int


@dataclass
class VictimResult:
    name: str
    rounds: list[Round] = field(default_factory=list)
    vip_sent: int = 0
    notes: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def member_servers(count: int) -> AsyncIterator[list[int]]:
    """``count`` HTTP servers on 127.0.0.1 answering 200 (the LBs' members); their ports."""
    runners: list[web.AppRunner] = []
    ports: list[int] = []

    async def answer(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    try:
        for _ in range(count):
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", answer)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runners.append(runner)
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            ports.append(port)
        yield ports
    finally:
        for runner in runners:
            await runner.cleanup()


def diagnostics(state: Path) -> str:
    """``fulcrum status`` and the tail of every log in the state dir."""
    status = subprocess.run(
        [str(VENV_BIN / "fulcrum"), "status", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    parts = [f"$ fulcrum status --state-dir {state}\n{status.stdout}{status.stderr}"]
    for log in sorted(state.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()[-25:]
        parts.append(f"--- tail of {log.name}\n" + "\n".join(lines))
    return "\n".join(parts)


async def run_victim(name: str, victims: tuple[str, ...], repeats: int) -> VictimResult:
    result = VictimResult(name)
    with tempfile.TemporaryDirectory(prefix="fulcrum-bench-resil-") as tmp:
        state = Path(tmp)
        try:  # start_stack stops what it started when it fails
            stack: Stack = await asyncio.to_thread(start_stack, state, "--port", "0")
        except AssertionError as exc:
            result.notes.append(f"fulcrum up failed: {exc}")
            return result
        try:
            async with member_servers(2) as members, aiohttp.ClientSession() as session:
                await measure_victim(stack, session, members, victims, repeats, result)
        except Exception as exc:  # reported with the stack's own view, then the next victim
            result.notes.append(f"aborted: {exc!r}\n{diagnostics(state)}")
        finally:
            try:
                await asyncio.to_thread(stop_stack, stack.proc, state)
            except AssertionError as exc:
                result.notes.append(f"stop_stack: {exc}")
    return result


async def measure_victim(
    stack: Stack,
    session: aiohttp.ClientSession,
    members: list[int],
    victims: tuple[str, ...],
    repeats: int,
    result: VictimResult,
) -> None:
    token = stack.secret("admin.token")
    tenant = Tenant(session, stack.api_url, token)
    lb_ids = await asyncio.gather(
        *(tenant.create_lb(f"serving-{i}", members[i % len(members)]) for i in range(SERVING_LBS))
    )
    vip = VipProber(interval=0.05, max_seconds=300)
    for lb_id in lb_ids:
        lb = await tenant.wait_active(lb_id)
        url = f"http://{lb['vip_address']}/"
        await serving(session, url)
        vip.vips[lb_id] = url
    api = ApiProber(stack.api_url, token)
    vip.start()
    api.start()
    try:
        await asyncio.sleep(BASELINE)
        if vip.failures or api.unavailable(0.0)[1]:
            result.notes.append(
                f"failures before any kill: {len(vip.failures)} VIP, "
                f"{api.unavailable(0.0)[1]} API probes"
            )
        for _ in range(repeats):
            round_start = time.monotonic()
            await asyncio.sleep(BASELINE)
            killed_at = time.monotonic()
            killed = kill(stack.state, victims)
            if set(killed) != set(victims):
                raise RuntimeError(f"killed {killed}, wanted {victims}")
            try:
                await wait_ready(stack.state, timeout=READY_TIMEOUT, after=killed)
            except AssertionError as exc:
                result.rounds.append(Round(None, 0, None, 0))
                result.notes.append(f"not ready: {exc}\n{diagnostics(stack.state)}")
                return
            ready = time.monotonic() - killed_at
            await api.wait_success(killed_at + ready, timeout=10)
            await asyncio.sleep(SETTLE)
            unavailable, failed_probes = api.unavailable(killed_at)
            failed = vip.failures_since(round_start, lb_ids)
            if failed:
                result.notes.append(f"VIP failures: {failed[:3]}")
            result.rounds.append(Round(ready, len(failed), unavailable, failed_probes))
    finally:
        await vip.stop()
        await api.stop()
        result.vip_sent = vip.sent


def spread(values: Sequence[float | None], unit: str = " s") -> str:
    """``p50 X (min .. max)``; a None (never happened) reads as ``never``."""
    if not values:
        return "n/a"
    if any(v is None for v in values):
        return "never (" + ", ".join("never" if v is None else f"{v:.2f}" for v in values) + ")"
    known = [float(v) for v in values if v is not None]
    return f"p50 {statistics.median(known):.2f}{unit} ({min(known):.2f} .. {max(known):.2f})"


def api_goal(name: str) -> float:
    return API_GOAL.get(name, API_GOAL_SERVICE)


def report_victim(r: VictimResult) -> None:
    ready = [x.ready for x in r.rounds]
    unavailable = [x.api_unavailable for x in r.rounds]
    vip_failed = [x.vip_failed for x in r.rounds]
    probes = [x.api_failed_probes for x in r.rounds]
    print(
        f"victim {r.name}: ready again {spread(ready)}, "
        f"VIP requests failed {sum(vip_failed)} (per round {vip_failed}; goal 0), "
        f"API unavailable {spread(unavailable)} (goal {api_goal(r.name):.0f} s; "
        f"failed probes per round {probes}); rounds {len(r.rounds)}, "
        f"{r.vip_sent} VIP requests",
        flush=True,
    )
    for note in r.notes:
        print("  NOTE " + note.replace("\n", "\n       "), flush=True)


def report_table(results: list[VictimResult]) -> None:
    head = (
        f"{'victim':<13}{'rounds':>6}  {'ready p50':>9} {'min':>6} {'max':>6}  "
        f"{'VIP failed':>10}  {'API down p50':>12} {'min':>6} {'max':>6}  {'goal':>5}  met"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        ready = [x.ready for x in r.rounds if x.ready is not None]
        down = [x.api_unavailable for x in r.rounds if x.api_unavailable is not None]
        complete = bool(r.rounds) and len(ready) == len(down) == len(r.rounds)
        vip_failed = sum(x.vip_failed for x in r.rounds)
        goal = api_goal(r.name)
        met = complete and vip_failed == 0 and max(down) <= goal

        def cols(values: list[float]) -> str:
            if not values:
                return f"{'-':>9} {'-':>6} {'-':>6}"
            return f"{statistics.median(values):>9.2f} {min(values):>6.2f} {max(values):>6.2f}"

        print(
            f"{r.name:<13}{len(r.rounds):>6}  {cols(ready)}  {vip_failed:>10}  "
            f"{cols(down):>26}  {goal:>4.0f}s  {'yes' if met else 'NO'}"
        )


# Part 2 -------------------------------------------------------------------------------------


@dataclass
class CreateSeries:
    label: str
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    fsync: str = "?"
    commit_ms: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


@contextlib.asynccontextmanager
async def api_on(
    root: Path, settings: Mapping[str, str] | None
) -> AsyncIterator[tuple[str, str, float]]:
    """An embedded Postgres (``settings``), a NATS and the API app in this process, noauth;
    yields the API's base URL, the server's fsync settings as it reports them, and the p50 in ms
    of ``COMMITS`` one-row INSERT commits at concurrency 1 (what one commit costs there)."""
    from services.api.app import create_app
    from services.api.settings import ApiSettings

    pg = EmbeddedPostgres(root / "pg", settings=settings)
    nats_server = EmbeddedNats(root / "nats")
    runner: web.AppRunner | None = None
    try:
        admin = await asyncio.to_thread(pg.start)
        nats_url = await asyncio.to_thread(nats_server.start)
        dsn = await create_database(admin, "bench_fsync")
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            fsync = f"fsync={await conn.fetchval('SHOW fsync')}, synchronous_commit=" + str(
                await conn.fetchval("SHOW synchronous_commit")
            )
            await conn.execute("CREATE TABLE bench_commit (n int)")
            commits = []
            for n in range(COMMITS):
                started = time.perf_counter()
                await conn.execute("INSERT INTO bench_commit VALUES ($1)", n)
                commits.append(time.perf_counter() - started)
            await conn.execute("DROP TABLE bench_commit")
        finally:
            await conn.close()
        app = create_app(
            ApiSettings(
                postgres=PostgresSettings(dsn=dsn),
                nats=NatsSettings(url=nats_url),
                auth_strategy="noauth",
                access_log=False,
            )
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}", fsync, pct(commits, 0.5)
    finally:
        if runner is not None:
            await runner.cleanup()
        await asyncio.to_thread(nats_server.stop)
        await asyncio.to_thread(pg.stop)


async def creates(session: aiohttp.ClientSession, base: str, count: int) -> list[float]:
    """``count`` POSTs of an LB at concurrency ``CONCURRENCY``; each one's latency."""
    url = f"{base}/v2/lbaas/loadbalancers"
    body = {"loadbalancer": {"vip_subnet_id": SUBNET, "name": "bench"}}
    latencies: list[float] = []
    todo = iter(range(count))

    async def worker() -> None:
        for _ in todo:
            started = time.perf_counter()
            async with session.post(url, json=body) as resp:
                await resp.read()
                if resp.status >= 300:
                    raise RuntimeError(f"POST {url}: {resp.status} {await resp.text()}")
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return latencies


def fsync_ms(directory: Path) -> float:
    """p50 in ms of ``FSYNCS`` rounds of write 8 KiB + fsync to a file in ``directory``."""
    path = directory / "fsync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    times = []
    try:
        for _ in range(FSYNCS):
            started = time.perf_counter()
            os.write(fd, b"x" * 8192)
            os.fsync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()
    return pct(times, 0.5)


async def fsync_cost(total: int) -> tuple[CreateSeries, CreateSeries, float]:
    """Both kinds of server side by side; returns their series and one raw fsync's p50 (ms)."""
    durable = CreateSeries("fsync on")
    unsafe = CreateSeries("fsync off")
    with tempfile.TemporaryDirectory(prefix="fulcrum-bench-fsync-") as tmp:
        raw_fsync = await asyncio.to_thread(fsync_ms, Path(tmp))
        async with contextlib.AsyncExitStack() as stack:
            on_url, durable.fsync, durable.commit_ms = await stack.enter_async_context(
                api_on(Path(tmp) / "durable", None)
            )
            off_url, unsafe.fsync, unsafe.commit_ms = await stack.enter_async_context(
                api_on(Path(tmp) / "unsafe", UNSAFE_FAST_SETTINGS)
            )
            connector = aiohttp.TCPConnector(limit=CONCURRENCY * 2)
            session = await stack.enter_async_context(
                aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))
            )
            for url in (on_url, off_url):
                await creates(session, url, WARMUP)
            per_chunk = max(1, total // CHUNKS)
            for _ in range(CHUNKS):
                for series, url in ((durable, on_url), (unsafe, off_url)):
                    started = time.perf_counter()
                    series.latencies += await creates(session, url, per_chunk)
                    series.elapsed += time.perf_counter() - started
    return durable, unsafe, raw_fsync


async def main(victims: list[str], repeats: int, total_creates: int) -> int:
    started = time.monotonic()
    print(
        f"Fulcrum resilience benchmark ({repeats} kill(s) per victim, {SERVING_LBS} LBs "
        f"serving, VIP probe every 50 ms, API probe every {API_PROBE_INTERVAL * 1000:.0f} ms)",
        flush=True,
    )
    results = []
    for name in victims:
        result = await run_victim(name, VICTIMS[name], repeats)
        report_victim(result)
        results.append(result)
    if results:
        print()
        report_table(results)
        print(f"(part 1 took {time.monotonic() - started:.0f} s)", flush=True)
    if total_creates:
        print()
        durable, unsafe, raw_fsync = await fsync_cost(total_creates)
        print(f"  this disk: write 8 KiB + fsync p50 {raw_fsync:.2f} ms")
        for s in (durable, unsafe):
            print(
                f"  {s.label:<9} ({s.fsync}): one-row commit p50 {s.commit_ms:.2f} ms; "
                f"{len(s.latencies)} creates at c={CONCURRENCY}, "
                f"{s.rate:.0f} creates/s, p50 {pct(s.latencies, 0.5):.1f} ms, "
                f"p95 {pct(s.latencies, 0.95):.1f} ms"
            )
        print(
            f"fsync on: {durable.rate:.0f} creates/s, off: {unsafe.rate:.0f} creates/s, "
            f"ratio {durable.rate / unsafe.rate:.2f} "
            f"(p50 {pct(durable.latencies, 0.5):.1f} ms vs {pct(unsafe.latencies, 0.5):.1f} ms)"
        )
    print(f"(total {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--creates", type=int, default=CREATES, help="per kind; 0 skips part 2")
    parser.add_argument(
        "--victims", default=",".join(VICTIMS), help=f"comma-separated of {', '.join(VICTIMS)}"
    )
    args = parser.parse_args()
    chosen = [v.strip() for v in args.victims.split(",") if v.strip()]
    unknown = set(chosen) - set(VICTIMS)
    if unknown:
        parser.error(f"unknown victims {sorted(unknown)}")
    raise SystemExit(asyncio.run(main(chosen, args.repeats, args.creates)))
