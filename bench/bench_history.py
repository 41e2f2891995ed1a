"""History benchmark: costs on a load balancer against the length of its streams.

Starts its own Postgres (embedded, loopback only). For each size (10, 1,000 and 100,000 events)
it creates one load balancer (listener, pool, two members) through the repository and grows a
history straight through the event store: renames and settles in the ``loadbalancer`` stream
until it holds that many events, and as many member flaps in its ``lbstatus`` stream (what a
year of a flapping member leaves behind, kept apart from the LB's own stream). It makes one
untimed write (the first load after the bulk folds it all and writes a snapshot), then times
real writes through the repository (an LB rename, then the provisioner's settle, alternately)
and, after each rename, the read of the provisioner's lifecycle handler and housekeeping's
stranded scan (``load_pending``: the state and the pending period). It prints the p50/p99 per
size, the ratio of each p50 to the 10-event one, and the goal: every ratio within 20% (<= 1.20).
For contrast, it also times writes with snapshots disabled on the smaller streams, and the
whole-stream fold those handlers used before once per size.
Run: .venv/bin/python bench/bench_history.py
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._harness import lb_tree, pct  # noqa: E402
from deploy.local.embedded import EmbeddedPostgres, create_database  # noqa: E402
from libs.common.database import create_pool  # noqa: E402
from libs.common.domain import commands as c  # noqa: E402
from libs.common.domain.decide import decide  # noqa: E402
from libs.common.domain.evolve import fold  # noqa: E402
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


async def grow_history(
    store: PostgresEventStore, repo: LoadBalancerRepository, lb_id: str, member_id: str, size: int
) -> None:
    """Renames and settles appended straight through the store until the LB's stream holds
    ``size`` events, and ``size`` member flaps in its ``lbstatus`` stream."""
    state = await repo.load(lb_id)
    now = datetime.datetime.now(datetime.UTC)
    rename = decide(c.UpdateLoadBalancer(changes={"name": "bulk"}, now=now), state)
    settle = decide(c.ApplyChanges(), fold(rename, state))
    intent = StreamId.loadbalancer(lb_id)
    version = await store.stream_version(intent)
    while version < size:
        count = min(BULK, size - version)
        payloads = [(rename + settle)[(version + i) % 2] for i in range(count)]
        await store.append(intent, version, payloads, META)
        version += count
    observed = StreamId.loadbalancer_status(lb_id)
    flip = (OperatingStatus.ERROR, OperatingStatus.ONLINE)
    version = await store.stream_version(observed)
    while version < size:
        count = min(BULK, size - version)
        flaps = [
            OperatingStatusChanged(statuses={member_id: flip[(version + i) % 2]})
            for i in range(count)
        ]
        await store.append(observed, version, flaps, META)
        version += count


async def time_writes(
    repo: LoadBalancerRepository, lb_ids: list[str], writes: int
) -> tuple[list[list[float]], list[list[float]]]:
    """Seconds per write on each LB (a rename, then the settle, alternately: one event each),
    and per pending-period read after each rename. The LBs take turns, so drifting background
    load weighs on every size alike."""
    now = datetime.datetime.now(datetime.UTC)
    latencies: list[list[float]] = [[] for _ in lb_ids]
    reads: list[list[float]] = [[] for _ in lb_ids]
    for n in range(writes):
        renaming = n % 2 == 0
        command: c.Command = (
            c.UpdateLoadBalancer(changes={"name": f"n{n}"}, now=now)
            if renaming
            else c.ApplyChanges()
        )
        for lb_id, spent, read in zip(lb_ids, latencies, reads, strict=True):
            started = time.perf_counter()
            await repo.execute(lb_id, command, META)
            spent.append(time.perf_counter() - started)
            if renaming:
                started = time.perf_counter()
                _, pending = await repo.load_pending(lb_id)
                read.append(time.perf_counter() - started)
                assert len(pending) == 1, pending
    return latencies, reads


async def whole_fold_ms(store: PostgresEventStore, lb_id: str) -> float:
    """One read of the LB's whole stream, folded: what the handlers did before ``load_pending``."""
    started = time.perf_counter()
    fold(e.payload for e in await store.read_stream(StreamId.loadbalancer(lb_id)))
    return (time.perf_counter() - started) * 1000


@dataclass(frozen=True)
class Figures:
    """One size's figures, in ms."""

    first: float
    p50: float
    p99: float
    read_p50: float
    whole_fold: float


async def measure(
    store: PostgresEventStore,
    repo: LoadBalancerRepository,
    sizes: tuple[int, ...],
    writes: int,
) -> dict[int, Figures]:
    """Per size: the figures on an LB with that much history."""
    lb_ids: list[str] = []
    firsts: list[float] = []
    folds: list[float] = []
    now = datetime.datetime.now(datetime.UTC)
    for size in sizes:
        lb_id, member_id = await new_lb(repo)
        await grow_history(store, repo, lb_id, member_id, size)
        started = time.perf_counter()
        await repo.execute(lb_id, c.UpdateLoadBalancer(changes={"name": "first"}, now=now), META)
        firsts.append((time.perf_counter() - started) * 1000)
        await repo.execute(lb_id, c.ApplyChanges(), META)
        folds.append(await whole_fold_ms(store, lb_id))
        lb_ids.append(lb_id)
    latencies, reads = await time_writes(repo, lb_ids, writes)
    return {
        size: Figures(first, pct(spent, 0.5), pct(spent, 0.99), pct(read, 0.5), whole)
        for size, first, spent, read, whole in zip(
            sizes, firsts, latencies, reads, folds, strict=True
        )
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
    base, read_base = figures[SIZES[0]].p50, figures[SIZES[0]].read_p50
    print("Fulcrum history benchmark: costs against stream length (2-core box, loopback)")
    print(
        f"  snapshot every {SNAPSHOT_EVERY} events; {WRITES} timed writes per size; each LB "
        "has as many status flaps in its lbstatus stream as events in its own"
    )
    for size, f in figures.items():
        ratio = f.p50 / base
        verdict = "ok" if ratio <= GOAL_RATIO else "MISSED"
        print(
            f"  {size:>7} events: write p50 {f.p50:6.2f} ms  p99 {f.p99:6.2f} ms  ratio "
            f"{ratio:4.2f}x (goal <= {GOAL_RATIO:.2f}x: {verdict}); first write after bulk "
            f"{f.first:8.1f} ms"
        )
    print("  provisioner lifecycle / housekeeping stranded read (load_pending) vs whole fold:")
    for size, f in figures.items():
        ratio = f.read_p50 / read_base
        verdict = "ok" if ratio <= GOAL_RATIO else "MISSED"
        print(
            f"  {size:>7} events: read p50 {f.read_p50:6.2f} ms  ratio {ratio:4.2f}x "
            f"(goal <= {GOAL_RATIO:.2f}x: {verdict}); whole-stream fold {f.whole_fold:8.1f} ms"
        )
    print("  without snapshots (for contrast):")
    for size, f in unsnapshotted.items():
        print(
            f"  {size:>7} events: write p50 {f.p50:6.2f} ms  p99 {f.p99:6.2f} ms  "
            f"ratio {f.p50 / base:4.2f}x"
        )


if __name__ == "__main__":
    asyncio.run(main())
