"""History benchmark: write latency on a load balancer against the length of its stream.

Starts its own Postgres (embedded, loopback only). For each size (10, 1,000 and 100,000 events)
it creates one load balancer (listener, pool, two members) through the repository, appends
operating-status flaps of a member straight through the event store until the stream holds
that many events (what a year of a flapping member leaves behind), makes one untimed write
(the first load after the bulk folds it all and writes a snapshot), then times real writes
through the repository (an LB rename, then the provisioner's settle, alternately). It prints
the p50/p99 per size, the ratio of each p50 to the 10-event one, and the goal: every ratio
within 20% (<= 1.20). For contrast, it also times writes with snapshots disabled on the
smaller streams. Run: .venv/bin/python bench/bench_history.py
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._harness import lb_tree  # noqa: E402
from deploy.local.embedded import EmbeddedPostgres, create_database  # noqa: E402
from libs.common.database import create_pool  # noqa: E402
from libs.common.domain import commands as c  # noqa: E402
from libs.common.domain.model import OperatingStatus  # noqa: E402
from libs.common.events import Metadata  # noqa: E402
from libs.common.events.loadbalancer_status import OperatingStatusChanged  # noqa: E402
from libs.common.eventstore import PostgresEventStore  # noqa: E402
from libs.common.repository import SNAPSHOT_EVERY, LoadBalancerRepository  # noqa: E402
from libs.common.schema import upgrade  # noqa: E402
from libs.common.settings import PostgresSettings  # noqa: E402
from libs.common.streams import StreamId  # noqa: E402

SIZES = (10, 1_000, 100_000)
UNSNAPSHOTTED_SIZES = (10, 1_000)
WRITES = 200
UNSNAPSHOTTED_WRITES = 20
BULK = 2_000  # events per direct append while building history
GOAL_RATIO = 1.20
META = Metadata(actor="bench")
VIP_HOSTS = itertools.count(1)


async def new_lb(repo: LoadBalancerRepository) -> tuple[str, str]:
    """An ACTIVE LB with a listener, a pool and two members; returns (lb id, a member id)."""
    tree = lb_tree(f"127.78.0.{next(VIP_HOSTS)}", datetime.datetime.now(datetime.UTC))
    lb, listener, pool, members = tree.loadbalancer, tree.listener, tree.pool, tree.members
    create = c.CreateLoadBalancer(lb, listeners=(listener,), pools=(pool,), members=members)
    await repo.execute(lb.id, create, META)
    await repo.execute(lb.id, c.Activate(amphora_ids=("amp-bench",)), META)
    return lb.id, members[0].id


async def grow_history(store: PostgresEventStore, lb_id: str, member_id: str, size: int) -> None:
    """Member flaps appended straight through the store until the stream holds ``size``."""
    stream_id = StreamId.loadbalancer(lb_id)
    version = await store.stream_version(stream_id)
    flip = (OperatingStatus.ERROR, OperatingStatus.ONLINE)
    while version < size:
        count = min(BULK, size - version)
        payloads = [
            OperatingStatusChanged(statuses={member_id: flip[(version + i) % 2]})
            for i in range(count)
        ]
        await store.append(stream_id, version, payloads, META)
        version += count


async def time_writes(
    repo: LoadBalancerRepository, lb_ids: list[str], writes: int
) -> list[list[float]]:
    """Seconds per write on each LB: a rename, then the settle, alternately (one event each).
    The LBs take turns, so drifting background load weighs on every size alike."""
    now = datetime.datetime.now(datetime.UTC)
    latencies: list[list[float]] = [[] for _ in lb_ids]
    for n in range(writes):
        command: c.Command = (
            c.UpdateLoadBalancer(changes={"name": f"n{n}"}, now=now)
            if n % 2 == 0
            else c.ApplyChanges()
        )
        for lb_id, spent in zip(lb_ids, latencies, strict=True):
            started = time.perf_counter()
            await repo.execute(lb_id, command, META)
            spent.append(time.perf_counter() - started)
    return latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    store: PostgresEventStore, repo: LoadBalancerRepository, sizes: tuple[int, ...], writes: int
) -> dict[int, tuple[float, float, float]]:
    """Per size: (first write after the bulk, p50, p99) in ms on an LB with that history."""
    lb_ids: list[str] = []
    firsts: list[float] = []
    now = datetime.datetime.now(datetime.UTC)
    for size in sizes:
        lb_id, member_id = await new_lb(repo)
        await grow_history(store, lb_id, member_id, size)
        started = time.perf_counter()
        await repo.execute(lb_id, c.UpdateLoadBalancer(changes={"name": "first"}, now=now), META)
        firsts.append((time.perf_counter() - started) * 1000)
        await repo.execute(lb_id, c.ApplyChanges(), META)
        lb_ids.append(lb_id)
    latencies = await time_writes(repo, lb_ids, writes)
    return {
        size: (first, pct(spent, 0.5) * 1000, pct(spent, 0.99) * 1000)
        for size, first, spent in zip(sizes, firsts, latencies, strict=True)
    }


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fulcrum-bench-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        try:
            admin = pg.start()
            dsn = await create_database(admin, "bench")
            pool = await create_pool(PostgresSettings(dsn=dsn, max_pool=4))
            await upgrade(pool)
            store = PostgresEventStore(pool)
            repo = LoadBalancerRepository(store)
            await measure(store, repo, (10,), 50)  # warm-up
            figures = await measure(store, repo, SIZES, WRITES)
            plain = LoadBalancerRepository(store, snapshot_every=10**9)
            unsnapshotted = await measure(store, plain, UNSNAPSHOTTED_SIZES, UNSNAPSHOTTED_WRITES)
            await pool.close()
        finally:
            pg.stop()
    base = figures[SIZES[0]][1]
    print("Fulcrum history benchmark: write latency against stream length (2-core box, loopback)")
    print(f"  snapshot every {SNAPSHOT_EVERY} events; {WRITES} timed writes per size")
    for size, (first, p50, p99) in figures.items():
        ratio = p50 / base
        verdict = "ok" if ratio <= GOAL_RATIO else "MISSED"
        print(
            f"  {size:>7} events: p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  ratio {ratio:4.2f}x"
            f"  (goal <= {GOAL_RATIO:.2f}x: {verdict}); first write after bulk {first:8.1f} ms"
        )
    print("  without snapshots (for contrast):")
    for size, (_, p50, p99) in unsnapshotted.items():
        print(f"  {size:>7} events: p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  ratio {p50 / base:4.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
