"""Autoscaling benchmark: an ACTIVE_ACTIVE load balancer on the netns driver whose amphorae's
HAProxy are each capped by a CPU cgroup, with real Postgres and NATS (embedded), the
provisioner and the health service in this process (tests/integration/netns/autoscale_lab.py).

1. Requests/s by 1, 2, 3 and 4 amphorae under the same caps (the LB scaled by command, the
   autoscaler off): a bounded wrk of ``--connections`` keep-alive connections per point,
   as a ratio to N times one amphora (goal: at least 0.8).
2. Scale-out: the autoscaler on (new connections/s per amphora above ``--threshold`` for
   ``--sustain`` s), a wrk load of a new connection per request from idle: the time from the
   load's start to the decision (``LoadBalancerScaledOut``), from the decision to the new
   amphora serving (in the distributor's map), and in all (goal for threshold -> serving:
   2 s); then the time, once the load stops, until the LB is back at one amphora; the failed
   requests of the whole run (goal: 0).

Needs root, iproute2, nft, conntrack, haproxy, wrk and a CPU cgroup; uses 198.18.96.0/19 (and
198.19.254.0/24 inside the namespaces) only; removes every namespace, process and cgroup.
Run: sudo .venv/bin/python bench/bench_autoscale.py [--quota US] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._harness import print_ratios  # noqa: E402
from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres, create_database  # noqa: E402
from libs.common.database import create_pool  # noqa: E402
from libs.common.domain import commands as c  # noqa: E402
from libs.common.domain.model import AmphoraBounds  # noqa: E402
from libs.common.events import loadbalancer as lb_ev  # noqa: E402
from libs.common.eventstore import PostgresEventStore  # noqa: E402
from libs.common.schema import upgrade  # noqa: E402
from libs.common.service import DB  # noqa: E402
from libs.common.settings import PostgresSettings  # noqa: E402
from services.health.domain.autoscale import ScalingPolicy  # noqa: E402
from tests.integration.netns.autoscale_lab import AutoscaleRig, autoscale_rig  # noqa: E402
from tests.integration.netns.lab import NetnsLab  # noqa: E402
from tests.integration.provisioner.test_process_lifecycle import META, wait_status  # noqa: E402

GOAL_RATIO = 0.8
GOAL_SERVING = 2.0
MAX_AMPHORAE = 4


@asynccontextmanager
async def _rig(
    tmp: Path, admin: str, policy: ScalingPolicy, quota: int, period: int
) -> AsyncIterator[AutoscaleRig]:
    """A rig on a fresh database, NATS and lab."""
    name = f"bench{time.monotonic_ns()}"
    nats = EmbeddedNats(tmp / name / "nats")
    lab = NetnsLab.create()
    try:
        nats_url = nats.start()
        dsn = await create_database(admin, name)
        pool = await create_pool(PostgresSettings(dsn=dsn, max_pool=4))
        try:
            await upgrade(pool)
        finally:
            await pool.close()
        async with autoscale_rig(
            dsn, nats_url, tmp / name, lab, policy, quota=quota, period=period, drain_timeout=5
        ) as rig:
            yield rig
    finally:
        lab.cleanup()
        nats.stop()
        left = lab.leftovers()
        if left:
            print(f"WARNING: left behind: {left}", file=sys.stderr)


async def _scale(rig: AutoscaleRig, lb_id: str, amphorae: int) -> None:
    await rig.repo.execute(lb_id, c.ScaleLoadBalancer(amphorae, reason="bench"), META)
    await wait_status(rig.repo, lb_id, "ACTIVE", timeout=60)
    await rig.cap_amphorae(lb_id)


async def throughput(
    tmp: Path, admin: str, args: argparse.Namespace
) -> dict[int, tuple[float, int]]:
    """Requests/s and failed requests by amphora count (autoscaler off)."""
    policy = ScalingPolicy(enabled=False)
    results: dict[int, tuple[float, int]] = {}
    async with _rig(tmp, admin, policy, args.quota, args.period) as rig:
        bounds = AmphoraBounds(amphora_min=1, amphora_max=MAX_AMPHORAE)
        lb_id = await rig.create_lb(bounds)
        url = f"http://{rig.lab.vip()}/"
        for count in range(1, MAX_AMPHORAE + 1):
            if count > 1:
                await _scale(rig, lb_id, count)
            await rig.cap_amphorae(lb_id)
            await asyncio.sleep(0.5)
            load = await rig.wrk(url, args.seconds, args.connections)
            results[count] = (load.rate, load.failed)
            print(f"{count} amphora(e): {load.rate:9.0f} requests/s, {load.failed} failed")
    return results


async def scale_out(tmp: Path, admin: str, args: argparse.Namespace) -> dict[str, float]:
    """Timings of one autoscaled out-and-in cycle under a bounded load."""
    policy = ScalingPolicy(
        connection_rate_out=args.threshold,
        connection_rate_in=args.threshold / 5,
        active_connections_out=0,
        cpu_out=0,
        sustain=args.sustain,
        cooldown=2.0,
        interval=0.1,
    )
    async with _rig(tmp, admin, policy, args.quota, args.period) as rig:
        lb_id = await rig.create_lb(AmphoraBounds(amphora_min=1, amphora_max=2))
        capping = asyncio.create_task(rig.keep_capping(lb_id))
        distribution = rig.driver.distribution
        assert distribution is not None
        try:
            await asyncio.sleep(1.0)  # idle heartbeats first
            url = f"http://{rig.lab.vip()}/"
            started = time.time()
            load = asyncio.create_task(rig.wrk(url, args.seconds + 4, args.connections, close=True))
            serving_at = None
            while not load.done():
                if serving_at is None and len(distribution.serving(lb_id)) == 2:
                    serving_at = time.time()
                await asyncio.sleep(0.02)
            done = await load
            stopped = time.time()
            back_in = await rig.wait_amphorae(lb_id, 1, timeout=30)
            after = await rig.wrk(url, 1, 2)
        finally:
            capping.cancel()
        store = PostgresEventStore(rig.provisioner[DB])
        events = await store.read_stream(f"loadbalancer-{lb_id}")
        decided = next(
            e.occurred_at.timestamp()
            for e in events
            if isinstance(e.payload, lb_ev.LoadBalancerScaledOut)
        )
        if serving_at is None:
            raise RuntimeError("the second amphora never served during the load")
        return {
            "decision": decided - started,
            "serving": serving_at - decided,
            "total": serving_at - started,
            "back_in": back_in - stopped,
            "requests": float(done.requests + after.requests),
            "failed": float(done.failed + after.failed),
            "rate": done.rate,
        }


def report(
    rates: dict[int, tuple[float, int]], timing: dict[str, float], args: argparse.Namespace
) -> None:
    print(
        f"\nHAProxy capped at {args.quota / args.period:.2f} CPU each; wrk {args.connections} "
        f"connections, {args.seconds} s per point"
    )
    print_ratios(rates, GOAL_RATIO)
    print(
        f"\nscale-out (threshold {args.threshold:g} new connections/s per amphora, sustain "
        f"{args.sustain:g} s, heartbeats every 0.2 s):"
    )
    print(f"  load start -> decision   {timing['decision']:6.2f} s")
    print(f"  decision -> serving      {timing['serving']:6.2f} s")
    total = timing["total"]
    verdict = "met" if total <= GOAL_SERVING else "MISSED"
    print(f"  load start -> serving    {total:6.2f} s  (goal <= {GOAL_SERVING:g} s: {verdict})")
    print(f"  load end -> back at 1    {timing['back_in']:6.2f} s")
    failed = int(timing["failed"])
    print(
        f"  requests {int(timing['requests'])}, failed {failed} "
        f"(goal 0: {'met' if failed == 0 else 'MISSED'})"
    )


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="fulcrum-bench-autoscale-") as tmp_name:
        tmp = Path(tmp_name)
        pg = EmbeddedPostgres(tmp / "pg")
        try:
            admin = pg.start()
            rates = await throughput(tmp, admin, args)
            timing = await scale_out(tmp, admin, args)
        finally:
            pg.stop()
    report(rates, timing, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quota", type=int, default=5000, help="CPU us per period, each")
    parser.add_argument("--period", type=int, default=100000)
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run (1-30)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threshold", type=float, default=30.0, help="new connections/s")
    parser.add_argument("--sustain", type=float, default=0.5, help="seconds")
    args = parser.parse_args()
    args.seconds = max(1, min(args.seconds, 30))
    args.connections = max(MAX_AMPHORAE, min(args.connections, 256))
    if os.geteuid() != 0:
        sys.exit("bench_autoscale needs root (network namespaces, cgroups)")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
