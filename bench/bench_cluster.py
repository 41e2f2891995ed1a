"""Cluster benchmark: what replicas buy on this machine, what R3 costs, how long failovers take.

Part 1, on one ``fulcrum up --cluster --amphora-hosts 2 --port 0`` in a temp state dir (3 NATS
nodes, Patroni, 2 replicas of each service, the HAProxy front, amphorae on 2 netns hosts):
- API requests/s through the front (GET /v2/lbaas/loadbalancers with the admin token,
  concurrency ``API_CONCURRENCY``, ``API_SECONDS`` s) with 2 api replicas, then with api-2
  stopped (supervisord) and out of the front's rotation; ratio 2/1;
- LB creates/s (one-call graph creates through the front, ``CREATES`` LBs at concurrency 8,
  from the first POST until every LB is ACTIVE) with 2 provisioner replicas, then with
  provisioner-2 stopped; ratio 2/1;
- the Patroni failover window: kill -9 the primary's postmaster (``PatroniCluster.
  measure_failover``): seconds until a write commits again on the multi-host DSN and until
  the old primary is a synchronous standby again, and the API's unavailability meanwhile
  (first failed probe to first success; a GET every 20 ms through the front).
Part 2, on a 3-node ``NatsCluster`` of its own: events/s (JetStream publishes acknowledged,
concurrency ``PUBLISH_CONCURRENCY``) and append-to-consumer latency (publish to delivery on a
durable pull consumer, p50/p99) on the event stream at R1, then scaled to R3; ratio R3/R1;
as the provisioner's NATS user, within its permissions (``deploy/local/nats_auth.py``).

Part 3, bench/bench_host_loss.py (the measurement of tests/integration/netns/test_hosts.py,
``--host-loss-runs`` runs on a stack of its own each): one of two netns amphora hosts lost;
the longest ACTIVE_STANDBY outage, the time until a SINGLE LB serves again and the time until
every amphora of the lost host is rebuilt on the other, median and max next to the goals.

Bounded: every loop has a count and a time limit; traffic goes only to 127.0.0.0/8.
Everything started is stopped, also on failure. About 4 minutes on 2 cores.
Run: sudo .venv/bin/python bench/bench_cluster.py [--creates N] [--events N] [--host-loss-runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in __import__("sys").path:
    __import__("sys").path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import nats  # noqa: E402
import nats.errors  # noqa: E402
import nats.js.errors  # noqa: E402
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy  # noqa: E402

from bench._harness import pct  # noqa: E402
from bench.bench_host_loss import RUNS as HOST_LOSS_RUNS  # noqa: E402
from bench.bench_host_loss import host_loss_figures  # noqa: E402
from bench.bench_host_loss import report as report_host_loss  # noqa: E402
from bench.bench_resilience import ApiProber, member_servers  # noqa: E402
from deploy.local.cluster import running_patroni  # noqa: E402
from deploy.local.nats_cluster import NatsCluster  # noqa: E402
from deploy.local.state import StackPaths  # noqa: E402
from deploy.local.supervision import SupervisorClient  # noqa: E402
from libs.common import subjects  # noqa: E402
from libs.common.bus import connect_options, ensure_stream  # noqa: E402
from libs.common.settings import NatsSettings  # noqa: E402
from tests.e2e.chaos import Tenant, wait_ready  # noqa: E402
from tests.e2e.conftest import Stack, start_stack, stop_stack  # noqa: E402

API_CONCURRENCY = 16
API_SECONDS = 5.0
API_MAX_REQUESTS = 200_000
CREATES = 16
PUBLISH_CONCURRENCY = 32
EVENTS = 2000
FRONT_SETTLE = 2.0  # the front takes a stopped replica out after 2 failed checks 0.5 s apart


async def api_rate(session: aiohttp.ClientSession, stack: Stack) -> float:
    """GET requests/s through the front over ``API_SECONDS`` (every answer must be 200)."""
    url = f"{stack.api_url}/v2/lbaas/loadbalancers"
    headers = {"X-Auth-Token": stack.secret("admin.token")}
    done = 0
    deadline = time.monotonic() + API_SECONDS

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline and done < API_MAX_REQUESTS:
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"GET {url}: {resp.status}")
            done += 1

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(API_CONCURRENCY)))
    return done / (time.monotonic() - start)


async def create_rate(tenant: Tenant, prefix: str, count: int, member: int) -> float:
    """LBs/s from the first POST until all ``count`` are ACTIVE."""
    gate = asyncio.Semaphore(8)

    async def one(index: int) -> None:
        async with gate:
            lb_id = await tenant.create_lb(f"{prefix}-{index}", member, timeout=120)
        await tenant.wait_active(lb_id, timeout=180)

    start = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(count)))
    return count / (time.monotonic() - start)


async def stack_figures(creates: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="fulcrum-bench-cluster-") as tmp:
        state = Path(tmp)
        stack = await asyncio.to_thread(
            start_stack, state, "--cluster", "--amphora-hosts", "2", "--port", "0", timeout=180
        )
        client = SupervisorClient(StackPaths(state).supervisor_socket, timeout=60)
        try:
            trust = ssl.create_default_context(cafile=str(state / "ca" / "ca.pem"))
            connector = aiohttp.TCPConnector(limit=API_CONCURRENCY, ssl=trust)
            async with (
                member_servers(1) as members,
                aiohttp.ClientSession(connector=connector) as session,
            ):
                tenant = Tenant(session, stack.api_url, stack.secret("admin.token"))
                figures["api_rps_2"] = await api_rate(session, stack)
                await asyncio.to_thread(client.stop, "api-2")
                await asyncio.sleep(FRONT_SETTLE)
                figures["api_rps_1"] = await api_rate(session, stack)
                await asyncio.to_thread(client.start, "api-2")
                await wait_ready(state, timeout=60)
                figures["creates_2"] = await create_rate(tenant, "two", creates, members[0])
                await asyncio.to_thread(client.stop, "provisioner-2")
                figures["creates_1"] = await create_rate(tenant, "one", creates, members[0])
                await asyncio.to_thread(client.start, "provisioner-2")
                await wait_ready(state, timeout=60)
                prober = ApiProber(
                    stack.api_url, stack.secret("admin.token"), max_seconds=120, trust=trust
                )
                prober.start()
                try:
                    await asyncio.sleep(1.0)
                    killed_at = time.monotonic()
                    failover = await running_patroni(StackPaths(state)).measure_failover(60.0)
                    await prober.wait_success(time.monotonic(), timeout=30)
                finally:
                    await prober.stop()
                unavailable, failed = prober.unavailable(killed_at)
                figures["pg_window"] = failover.window
                figures["pg_healed"] = failover.healed
                figures["pg_api_unavailable"] = -1.0 if unavailable is None else unavailable
                figures["pg_api_failed_probes"] = failed
        finally:
            await asyncio.to_thread(stop_stack, stack.proc, state)
    return figures


async def stream_figures(
    settings: NatsSettings, replicas: int, count: int
) -> tuple[float, float, float]:
    """(events/s acknowledged, p50 ms, p99 ms publish-to-delivery) on the event stream at
    ``replicas``, as the provisioner's NATS user does it: relay-style publishes with
    ``Nats-Msg-Id``, a durable pull consumer of its own taking only this run's events."""
    settings = settings.model_copy(update={"replicas": replicas})
    nc = await nats.connect(**connect_options(settings), connect_timeout=5)
    try:
        js = nc.jetstream(timeout=10)
        await ensure_stream(js, settings)
        category = f"bench{replicas}"
        durable = f"provisioner-bench-r{replicas}"
        config = ConsumerConfig(
            durable_name=durable,
            filter_subjects=[subjects.category_events(category)],
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.NEW,
        )
        for attempt in range(40):  # a stream just created or scaled places consumers late
            try:
                await js.add_consumer(subjects.STREAM_NAME, config)
                break
            except nats.js.errors.ServiceUnavailableError:
                if attempt == 39:
                    raise
                await asyncio.sleep(0.5)
        sub = await js.pull_subscribe_bind(durable=durable, stream=subjects.STREAM_NAME)
        sent: dict[str, float] = {}
        latencies: list[float] = []

        async def consume() -> None:
            deadline = time.monotonic() + 120
            while len(latencies) < count and time.monotonic() < deadline:
                try:
                    msgs = await sub.fetch(256, timeout=1.0)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                for msg in msgs:
                    latencies.append(time.monotonic() - sent[msg.subject])
                    await msg.ack()

        consumer = asyncio.create_task(consume())
        gate = asyncio.Semaphore(PUBLISH_CONCURRENCY)

        async def publish(index: int) -> None:
            key = f"{subjects.PREFIX}.{category}.e{index}.BenchEvent"
            async with gate:
                sent[key] = time.monotonic()
                await js.publish(key, b"x" * 400, headers={"Nats-Msg-Id": key})

        start = time.monotonic()
        await asyncio.gather(*(publish(i) for i in range(count)))
        rate = count / (time.monotonic() - start)
        await asyncio.wait_for(consumer, 130)
        return rate, pct(latencies, 0.5), pct(latencies, 0.99)
    finally:
        await nc.close()


async def nats_figures(events: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="fulcrum-bench-nats-") as tmp:
        cluster = NatsCluster(Path(tmp), size=3)
        with cluster.run():
            for replicas in (1, 3):
                rate, p50, p99 = await stream_figures(
                    cluster.settings_for("provisioner"), replicas, events
                )
                figures[f"events_r{replicas}"] = rate
                figures[f"p50_r{replicas}"] = p50
                figures[f"p99_r{replicas}"] = p99
    return figures


def report(f: dict[str, float], creates: int, events: int) -> None:
    print("\nFulcrum cluster stack (3 NATS nodes, Patroni 2 members, 2 replicas per service, "
          "2 netns amphora hosts)")  # fmt: skip
    print(f"  API requests/s through the front, concurrency {API_CONCURRENCY}:")
    print(f"    2 api replicas: {f['api_rps_2']:8.1f}   1 api replica: {f['api_rps_1']:8.1f}   "
          f"ratio 2/1: {f['api_rps_2'] / f['api_rps_1']:.2f}")  # fmt: skip
    print(f"  LB creates/s until ACTIVE ({creates} LBs, concurrency 8):")
    print(f"    2 provisioners: {f['creates_2']:8.2f}   1 provisioner: {f['creates_1']:8.2f}   "
          f"ratio 2/1: {f['creates_2'] / f['creates_1']:.2f}")  # fmt: skip
    print("  Patroni failover (kill -9 of the primary's postmaster):")
    unavailable = (
        "never back" if f["pg_api_unavailable"] < 0 else f"{f['pg_api_unavailable']:.2f} s"
    )
    print(f"    writes commit again after {f['pg_window']:.2f} s; old primary sync standby again "
          f"after {f['pg_healed']:.1f} s; API unavailable {unavailable} "
          f"({int(f['pg_api_failed_probes'])} failed probes)")  # fmt: skip
    print(f"  JetStream on 3 nodes ({events} events of 400 B, concurrency {PUBLISH_CONCURRENCY}):")
    for r in (1, 3):
        print(f"    R{r}: {f[f'events_r{r}']:8.0f} events/s   append-to-consumer p50 "
              f"{f[f'p50_r{r}']:.1f} ms, p99 {f[f'p99_r{r}']:.1f} ms")  # fmt: skip
    print(f"    ratio R3/R1: events/s {f['events_r3'] / f['events_r1']:.2f}, "
          f"p50 latency {f['p50_r3'] / f['p50_r1']:.2f}")  # fmt: skip


async def main(creates: int, events: int, host_loss_runs: int) -> int:
    figures = await nats_figures(events)
    figures |= await stack_figures(creates)
    host_loss = await host_loss_figures(host_loss_runs)
    report(figures, creates, events)
    report_host_loss(host_loss)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--creates", type=int, default=CREATES)
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--host-loss-runs", type=int, default=HOST_LOSS_RUNS)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.creates, args.events, args.host_loss_runs)))
