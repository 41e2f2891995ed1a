"""Data-plane benchmark: an HTTP and a TERMINATED_HTTPS listener as Fulcrum renders them vs the
same HAProxy configurations written by hand, in one run, on loopback, on the same core.

Fulcrum's side is real: the listeners go through the renderer (``render_haproxy``) with
Fulcrum's defaults (the stats socket, server-state file, connection limits; for TLS the key
manager's parsing, the provisioner's delivery plan with content-named files and crt-list, TLS
1.2/1.3, its cipher list, ALPN h2 and http/1.1). The hand-written side is what an operator would
write for the same job: one frontend (``bind ... ssl crt <pem>`` with the same versions, ciphers
and ALPN for TLS), one backend, one server. Both run as ``haproxy -W`` side by side in front of
the same member (an HAProxy answering 200 itself).

Same cores, literally: both HAProxies are pinned (``taskset``) to one CPU (``--lb-cpu``), so
both get the same thread count (HAProxy starts one thread per CPU it may run on: checked and
printed), and ``wrk`` (one thread, 32 connections) and the member to another (``--client-cpu``).
Four figures:

- HTTP and TLS new connections/s: every request on a new connection (``Connection: close``;
  for TLS, a full handshake each),
- HTTP and TLS keep-alive requests/s: connections reused.

After a warm-up (every figure once on each side), ``--rounds`` rounds of ``--seconds`` each
measure every figure on both sides back to back, the order alternating from round to round
(A-B, B-A, ...), so that a neighbour's load weighs on both alike. Each adjacent pair gives a
ratio (Fulcrum / hand-written); the figure is the median of those ratios, printed with their
25-75% range, and the HAProxy worker's CPU time per request (from /proc schedstat) as a
second, throughput-independent view. ``--control`` puts a second copy of the hand-written
configuration in Fulcrum's place: its ratios show the bench's own scatter (an A/A test).
Goal: Fulcrum >= 0.98x hand-written for each figure (the median per-pair ratio).
Bounded: about rounds x 8 x seconds + 10 s (20 x 8 x 1 s: ~3 min).
Run: .venv/bin/python bench/bench_dataplane.py [--rounds N] [--seconds S] [--control]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from libs.common.domain.model import LoadBalancerState, ProvisioningStatus  # noqa: E402
from libs.common.secretstore import MaterialError  # noqa: E402
from libs.common.tls import CaBundle, KeyPair, Revocations, load_keypair  # noqa: E402
from services.api.domain.rules import DEFAULT_ALPN_PROTOCOLS, DEFAULT_TLS_CIPHERS  # noqa: E402
from services.provisioner.certificates import plan_tls  # noqa: E402
from services.provisioner.rendering import (  # noqa: E402
    RenderContext,
    maxconn_cap_for_fd_limit,
    render_haproxy,
)
from tests import builders as b  # noqa: E402
from tests.integration.tls.pki import CertAuthority  # noqa: E402

VIP = "127.0.0.1"
ROUNDS = 20
SECONDS = 1
CONNECTIONS = 32
GOAL = 0.98
MIN_PAIRS = 4
# What the provisioner would derive from the fd limit; the same for both configurations.
MAXCONN = maxconn_cap_for_fd_limit(resource.getrlimit(resource.RLIMIT_NOFILE)[1])
TOOLS = ("haproxy", "wrk", "taskset")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((VIP, 0))
        return int(s.getsockname()[1])


class PemSource:
    """The key manager stand-in: one container ref resolving to one certificate (pure)."""

    def __init__(self, cert_pem: bytes, key_pem: bytes) -> None:
        self._pair = load_keypair(cert_pem, key_pem, what="bench")

    async def keypair(self, ref: str, project_id: str | None, what: str) -> KeyPair:
        return self._pair

    async def ca_bundle(self, ref: str, project_id: str | None, what: str) -> CaBundle:
        raise MaterialError[0]("no CA in this benchmark")

    async def crl(self, ref: str, project_id: str | None, what: str) -> Revocations:
        raise MaterialError[0]("no CRL in this benchmark")


def fulcrum_config(root: Path, ports: dict[str, int], member_port: int, source: PemSource) -> str:
    """Both listeners rendered by the renderer, the TLS files placed by the delivery plan."""
    lb = b.loadbalancer(VIP)
    pool = b.pool(lb)
    http = b.listener(lb, ports["HTTP"], "HTTP", default_pool_id=pool.id)
    https = b.listener(
        lb,
        ports["HTTPS"],
        "TERMINATED_HTTPS",
        default_pool_id=pool.id,
        default_tls_container_ref="https://km.invalid/v1/containers/x",
        tls_versions=("TLSv1.2", "TLSv1.3"),
        tls_ciphers=DEFAULT_TLS_CIPHERS,
        alpn_protocols=DEFAULT_ALPN_PROTOCOLS,
    )
    member = b.member(pool, member_port)
    active = {"provisioning_status": ProvisioningStatus.ACTIVE}
    state = LoadBalancerState(
        version=1,
        loadbalancer=lb.updated(active),
        listeners={listener.id: listener.updated(active) for listener in (http, https)},
        pools={pool.id: pool.updated(active)},
        members={member.id: member.updated(active)},
    )
    certs = root / "certs"
    certs.mkdir()
    plan = asyncio.run(plan_tls(state, source, str(certs)))
    for item in plan.files.values():
        path = certs / f"{item.name}.pem"
        path.write_bytes(item.content)
        path.chmod(0o600)
    context = RenderContext(
        stats_socket=str(root / "stats.sock"),
        state_dir=str(root),
        maxconn_cap=MAXCONN,
        listener_tls=plan.listener_tls,
        pool_tls=plan.pool_tls,
    )
    return render_haproxy(state, context)


def hand_config(root: Path, ports: dict[str, int], member_port: int, pem: bytes) -> str:
    (root / "site.pem").write_bytes(pem)
    tls = f"no-sslv3 no-tlsv10 no-tlsv11 ciphers {DEFAULT_TLS_CIPHERS} alpn {','.join(DEFAULT_ALPN_PROTOCOLS)}"
    return f"""global
    maxconn {MAXCONN}

defaults
    mode http
    timeout connect 5s
    timeout client 50s
    timeout server 50s

frontend http
    bind {VIP}:{ports["HTTP"]}
    default_backend app

frontend https
    bind {VIP}:{ports["HTTPS"]} ssl crt {root / "site.pem"} {tls}
    default_backend app

backend app
    server app 127.0.0.1:{member_port}
"""


def member_config(port: int) -> str:
    return f"""defaults
    mode http
    timeout connect 5s
    timeout client 50s
    timeout server 50s

frontend member
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string ok
"""


def pinned(cpu: int, argv: list[str]) -> list[str]:
    """``argv`` run on CPU ``cpu`` alone."""
    return ["taskset", "-c", str(cpu), *argv]


def start_haproxy(config: Path, probe: str, port: int, cpu: int) -> subprocess.Popen[bytes]:
    check = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, check=False)
    if check.returncode != 0:
        raise SystemExit(
            f"{probe}: haproxy -c failed:\n{check.stdout.decode()}{check.stderr.decode()}"
        )
    # One process, no master: as the agent runs HAProxy (services/amphora/adapters/haproxy.py).
    proc = subprocess.Popen(
        pinned(cpu, ["haproxy", "-db", "-f", str(config)]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection((VIP, port), timeout=0.5):
                return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"{probe}: haproxy did not start")
        time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def cpu_ns(pids: list[int]) -> int:
    """CPU time of every thread of ``pids`` so far, in ns (schedstat's first field)."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    return total


@dataclass(frozen=True)
class Side:
    """One HAProxy under test: its name, its ports by protocol and its worker pids."""

    name: str
    ports: dict[str, int]
    workers: list[int]


@dataclass(frozen=True)
class Sample:
    """One wrk run: requests/s, requests, and the HAProxy workers' CPU time per request in µs
    (0 when no request was answered)."""

    rate: float
    requests: int
    cpu_us: float


def wrk_args(url: str, *, close: bool, seconds: int, cpu: int) -> list[str]:
    """wrk, one thread on ``cpu``, against ``url``; ``close``: a new connection per request."""
    args = ["wrk", "-t", "1", "-c", str(CONNECTIONS), "-d", f"{seconds}s", url]
    if close:
        args[1:1] = ["-H", "Connection: close"]
    return pinned(cpu, args)


def wrk_result(out: str) -> tuple[float, int]:
    """Requests/s and requests of a wrk run's output; non-2xx answers make the run fail."""
    errors = re.search(r"Socket errors: (.*)", out)
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise SystemExit(f"wrk saw errors: {out}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    requests = re.search(r"(\d+) requests in", out)
    if rate is None or requests is None:
        raise SystemExit(f"wrk output not understood: {out}")
    if errors and "connect 0, read 0, write 0, timeout 0" not in errors.group(1):
        print(f"    (wrk socket errors: {errors.group(1)})")
    return float(rate.group(1)), int(requests.group(1))


def measure(sides: list[Side], protocol: str, close: bool, seconds: int, cpu: int) -> list[Sample]:
    """One wrk run against each of ``sides``, all at the same time."""
    scheme = "https" if protocol == "HTTPS" else "http"
    before = [cpu_ns(side.workers) for side in sides]
    runs = [
        subprocess.Popen(
            wrk_args(
                f"{scheme}://{VIP}:{side.ports[protocol]}/", close=close, seconds=seconds, cpu=cpu
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for side in sides
    ]
    outputs = [run.communicate(timeout=seconds + 30) for run in runs]
    samples = []
    for side, start, run, (out, err) in zip(sides, before, runs, outputs, strict=True):
        if run.returncode != 0:
            raise SystemExit(f"wrk failed against {side.name}: {out}{err}")
        rate, requests = wrk_result(out)
        used = cpu_ns(side.workers) - start
        samples.append(Sample(rate, requests, used / 1000 / requests if requests else 0.0))
    return samples


FIGURES = (
    ("HTTP", "new connections/s", True),
    ("HTTP", "keep-alive req/s", False),
    ("HTTPS", "TLS handshakes/s", True),
    ("HTTPS", "TLS keep-alive req/s", False),
)


@dataclass(frozen=True)
class Spread:
    """Per-pair ratios: their median and 25-75% range."""

    ratios: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    def __str__(self) -> str:
        q1, _, q3 = statistics.quantiles(self.ratios, n=4)
        return f"{self.median:.3f}x ({q1:.3f}-{q3:.3f})"


@dataclass(frozen=True)
class Figure:
    """One figure from pairs measured back to back or at once: ``ours[i]`` with
    ``theirs[i]``. A pair in which either side answered no request (a neighbour took the CPU
    for the whole run) gives no ratio: ``dropped`` counts those."""

    ours: list[Sample]
    theirs: list[Sample]

    @property
    def pairs(self) -> list[tuple[Sample, Sample]]:
        return [
            (a, b) for a, b in zip(self.ours, self.theirs, strict=True) if a.requests and b.requests
        ]

    @property
    def dropped(self) -> int:
        return len(self.ours) - len(self.pairs)

    @property
    def rates(self) -> tuple[float, float]:
        """Median requests/s of each side."""
        return statistics.median(s.rate for s in self.ours), statistics.median(
            s.rate for s in self.theirs
        )

    @property
    def rate_ratio(self) -> Spread:
        """Ours / theirs requests/s: >= GOAL is the goal."""
        return Spread([a.rate / b.rate for a, b in self.pairs])

    @property
    def cost_ratio(self) -> Spread:
        """Theirs / ours worker CPU per request: comparable with ``rate_ratio`` (> 1: ours
        costs less), and independent of how much of the CPU a neighbour left."""
        return Spread([b.cpu_us / a.cpu_us for a, b in self.pairs])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, default sys.argv); exits 2 with the reason on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"default {ROUNDS}")
    parser.add_argument("--seconds", type=int, default=SECONDS, help="per wrk run, default 1")
    parser.add_argument("--lb-cpu", type=int, default=0, help="CPU of both HAProxies (0)")
    parser.add_argument("--client-cpu", type=int, default=1, help="CPU of wrk and member (1)")
    parser.add_argument(
        "--control",
        action="store_true",
        help="a second hand-written HAProxy in Fulcrum's place (the bench's own scatter)",
    )
    parser.add_argument(
        "--alternating",
        action="store_true",
        help="the two runs of a pair one after the other (order alternating), not at once",
    )
    args = parser.parse_args(argv)
    if not 4 <= args.rounds <= 200:
        parser.error("--rounds must be between 4 and 200")
    if not 1 <= args.seconds <= 10:
        parser.error("--seconds must be between 1 and 10")
    allowed = sorted(os.sched_getaffinity(0))
    for name in ("lb_cpu", "client_cpu"):
        if getattr(args, name) not in allowed:
            parser.error(f"--{name.replace('_', '-')} must be one of the CPUs allowed {allowed}")
    if args.lb_cpu == args.client_cpu:
        parser.error("--lb-cpu and --client-cpu must differ")
    return args


def main() -> int:
    args = parse_args()
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        print(f"bench_dataplane needs {', '.join(missing)} on PATH", file=sys.stderr)
        return 1
    ca = CertAuthority("Bench CA")
    site = ca.issue("bench.test", dns=["bench.test"], ips=[VIP])
    pem = site.cert_pem + site.key_pem
    ours_name = "hand-2" if args.control else "fulcrum"
    names = (ours_name, "hand")
    load_before = os.getloadavg()
    samples: dict[tuple[str, int], list[Sample]] = {}
    with tempfile.TemporaryDirectory(prefix="fulcrum-bench-dataplane-") as tmp:
        root = Path(tmp)
        member_port = free_port()
        ports = {name: {"HTTP": free_port(), "HTTPS": free_port()} for name in names}
        (root / "member.cfg").write_text(member_config(member_port))
        for name in names:
            (root / name).mkdir()
            if name == "fulcrum":
                source = PemSource(site.cert_pem, site.key_pem)
                text = fulcrum_config(root / name, ports[name], member_port, source)
            else:
                text = hand_config(root / name, ports[name], member_port, pem)
            (root / f"{name}.cfg").write_text(text)
        procs = [start_haproxy(root / "member.cfg", "member", member_port, args.client_cpu)]
        try:
            sides: dict[str, Side] = {}
            for name in names:
                proc = start_haproxy(root / f"{name}.cfg", name, ports[name]["HTTP"], args.lb_cpu)
                procs.append(proc)
                sides[name] = Side(name, ports[name], [proc.pid])  # taskset exec'd haproxy
            for side in sides.values():
                for worker in side.workers:
                    affinity = sorted(os.sched_getaffinity(worker))
                    if affinity != [args.lb_cpu]:
                        raise SystemExit(f"{side.name} worker {worker} runs on CPUs {affinity}")
            counts = {name: sum(threads(w) for w in side.workers) for name, side in sides.items()}
            if len(set(counts.values())) != 1:
                raise SystemExit(f"HAProxy thread counts differ: {counts}")
            print(
                f"both HAProxies on CPU {args.lb_cpu} ({counts['hand']} thread(s) each), wrk "
                f"(1 thread, {CONNECTIONS} connections) and the member on CPU {args.client_cpu}; "
                f"load average {load_before[0]:.2f}"
            )
            for side in sides.values():  # warm-up
                for protocol, _, close in FIGURES:
                    measure([side], protocol, close, 1, args.client_cpu)
            for round_index in range(args.rounds):
                order = names if round_index % 2 == 0 else names[::-1]
                line = [f"round {round_index + 1:3}"]
                for index, (protocol, _, close) in enumerate(FIGURES):
                    pair = [sides[name] for name in order]
                    if not args.alternating:
                        measured = measure(pair, protocol, close, args.seconds, args.client_cpu)
                    else:
                        measured = [
                            measure([side], protocol, close, args.seconds, args.client_cpu)[0]
                            for side in pair
                        ]
                    for name, sample in zip(order, measured, strict=True):
                        samples.setdefault((name, index), []).append(sample)
                    ours, theirs = samples[(ours_name, index)][-1], samples[("hand", index)][-1]
                    line.append(f"{ours.rate:7.0f}/{theirs.rate:<7.0f}")
                print("  ".join(line), flush=True)
        finally:
            for proc in procs:
                stop(proc)
    load_after = os.getloadavg()
    report(args, ours_name, samples, load_before[0], load_after[0])
    return 0


def report(
    args: argparse.Namespace,
    ours_name: str,
    samples: dict[tuple[str, int], list[Sample]],
    load_before: float,
    load_after: float,
) -> None:
    how = "back to back, order alternating" if args.alternating else "at the same time"
    print(
        f"\nHTTP and TERMINATED_HTTPS listeners, {ours_name} vs hand-written "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC; load average {load_before:.2f} -> "
        f"{load_after:.2f}): {args.rounds} pairs of {args.seconds} s runs {how}, wrk -t1 "
        f"-c{CONNECTIONS}; per-pair ratios as median (25-75%):"
    )
    print(
        f"  {'figure':22} {ours_name:>8} {'hand':>8}  {'requests/s ratio':24} "
        f"{'CPU/request, hand/ours':24} goal: both >= {GOAL}x"
    )
    for index, (protocol, mode, _) in enumerate(FIGURES):
        result = Figure(samples[(ours_name, index)], samples[("hand", index)])
        ours, theirs = result.rates
        label = mode if protocol == "HTTPS" else f"HTTP {mode}"
        if len(result.pairs) < MIN_PAIRS:
            print(
                f"  {label:22} {ours:8.0f} {theirs:8.0f}  fewer than {MIN_PAIRS} pairs with answers"
            )
            continue
        met = min(result.rate_ratio.median, result.cost_ratio.median) >= GOAL
        verdict = "met" if met else "MISSED"
        dropped = f" ({result.dropped} pairs without answers left out)" if result.dropped else ""
        print(
            f"  {label:22} {ours:8.0f} {theirs:8.0f}  {result.rate_ratio!s:24} "
            f"{result.cost_ratio!s:24} {verdict}{dropped}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
