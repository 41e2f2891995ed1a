"""Patroni failover window: kill -9 the primary's postmaster, time until writes commit again.

Starts its own etcd and two Patroni members (deploy/local/patroni.py, synchronous standby, on
loopback), then fails over FAILOVERS times in a row; each time the old primary rejoins as the
synchronous standby before the next kill. Prints, per failover and overall, the window (kill to
the first write committed through the multi-host DSN) and the time until healed.
Run: .venv/bin/python bench/bench_patroni.py
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from deploy.local.patroni import FailoverMeasure, PatroniCluster

FAILOVERS = 3
LIMIT = 60.0


async def failovers(cluster: PatroniCluster, count: int) -> list[FailoverMeasure]:
    return [await cluster.measure_failover(LIMIT) for _ in range(count)]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-patroni-") as root:
        cluster = PatroniCluster(Path(root))
        started = time.monotonic()
        with cluster:
            print(f"patroni: etcd + 2 members ready in {time.monotonic() - started:.1f} s")
            measures = asyncio.run(failovers(cluster, FAILOVERS))
    for i, m in enumerate(measures, 1):
        print(
            f"failover {i}: {m.killed} killed, {m.promoted} promoted; writes again after "
            f"{m.window:.2f} s; healed (old primary sync standby) after {m.healed:.2f} s"
        )
    windows = [m.window for m in measures]
    print(
        f"failover window over {len(windows)}: median {statistics.median(windows):.2f} s, "
        f"max {max(windows):.2f} s"
    )


if __name__ == "__main__":
    main()
