"""Amphora-side heartbeat cost: CPU per beat of idle amphorae, agents and HAProxy apart.

Starts ``--amphorae`` real HAProxies (one listener, one pool, two members each, as the fleet's
LBs; loopback only) through the agent's data plane, then runs their heartbeat senders in this
one process at ``--interval`` for ``--seconds``, as an agent host of that many amphorae does,
sending to a loopback UDP sink. It prints the agent side's CPU (this process) and HAProxy's
(every process) per amphora-beat, and the beats sent. Compare changes A/B/A/B in one
sitting: the figures move with the box's load, printed beside them.
Run: .venv/bin/python bench/bench_beat.py [--amphorae 25] [--seconds 20] [--interval 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._harness import free_port  # noqa: E402
from libs.common.tasks import background  # noqa: E402
from services.amphora.adapters.haproxy import HaproxyDataPlane  # noqa: E402
from services.amphora.adapters.haproxy_stats import process_cpu_seconds  # noqa: E402
from services.amphora.heartbeat import (  # noqa: E402
    STAT_COLUMNS,
    HeartbeatConfig,
    HeartbeatSender,
)

KEY = b"bench-beat-key"


def config(stats_socket: Path, port: int) -> str:
    """One fleet LB's config, as the provisioner renders its global section (one thread)."""
    return f"""global
    stats socket {stats_socket} mode 600 level admin
    hard-stop-after 5s
    nbthread 1
    httpclient.ssl.verify none
defaults
    mode http
    timeout connect 5s
    timeout client 50s
    timeout server 50s
frontend listener-{port}
    bind 127.0.0.1:{port}
    default_backend pool-{port}:listener-{port}
backend pool-{port}:listener-{port}
    server member-a 127.0.0.1:9
    server member-b 127.0.0.1:9
"""


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(amphorae: int, seconds: float, interval: float) -> None:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    with tempfile.TemporaryDirectory(prefix="bench-beat-") as root:
        planes = [
            HaproxyDataPlane(
                Path("/usr/sbin/haproxy"),
                Path(root) / f"amp-{i}",
                reload_timeout=10,
                drain_timeout=1,
            )
            for i in range(amphorae)
        ]
        try:
            for plane in planes:
                await plane.prepare()
                await plane.apply(config(plane.stats_socket, free_port()))
            senders = [
                HeartbeatSender(
                    HeartbeatConfig(f"amp-{i}", KEY, (sink.getsockname(),), interval),
                    lambda plane=plane: plane.heartbeat_stat(STAT_COLUMNS),  # type: ignore[misc]
                    plane.state_dir,
                    cpu_seconds=plane.cpu_seconds,
                )
                for i, plane in enumerate(planes)
            ]
            async with AsyncExitStack() as stack:
                for i, sender in enumerate(senders):
                    await stack.enter_async_context(background(sender.run(), f"beats-{i}"))
                await asyncio.sleep(2 * interval)  # every sender past its first beat
                haproxies = [plane._pid for plane in planes]
                haproxy_before = sum(process_cpu_seconds(p) or 0.0 for p in haproxies if p)
                sent_before, agent_before = sum(s.sent for s in senders), own_cpu()
                started = time.monotonic()
                await asyncio.sleep(seconds)
                elapsed = time.monotonic() - started
                agent = own_cpu() - agent_before
                haproxy = (
                    sum(process_cpu_seconds(p) or 0.0 for p in haproxies if p) - haproxy_before
                )
                beats = sum(s.sent for s in senders) - sent_before
                unsent = sum(s.unsent for s in senders)
        finally:
            for plane in planes:
                await plane.stop()
            sink.close()
    print(
        f"{amphorae} amphorae, interval {interval:g} s, {elapsed:.1f} s: {beats} beats "
        f"({unsent} unsent); per beat: agent {agent / beats * 1e3:.3f} ms, HAProxy "
        f"{haproxy / beats * 1e3:.3f} ms; cores: agent {agent / elapsed:.3f}, HAProxy "
        f"{haproxy / elapsed:.3f}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amphorae", type=int, default=25)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    if not 1 <= args.amphorae <= 200:
        parser.error("--amphorae must be between 1 and 200")
    if args.seconds <= 0 or args.interval <= 0:
        parser.error("--seconds and --interval must be positive")
    asyncio.run(measure(args.amphorae, args.seconds, args.interval))


if __name__ == "__main__":
    main()
