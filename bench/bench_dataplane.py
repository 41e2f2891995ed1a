"""Data-plane benchmark: an HTTP and a TERMINATED_HTTPS listener as Fulcrum renders them vs the
same HAProxy configurations written by hand, in one run, on loopback, on the same cores.

Fulcrum's side is real: the listeners go through the renderer (``render_haproxy``) with
Fulcrum's defaults (the stats socket, server-state file, connection limits; for TLS the key
manager's parsing, the provisioner's delivery plan with content-named files and crt-list, TLS
1.2/1.3, its cipher list, ALPN h2 and http/1.1). The hand-written side is what an operator would
write for the same job: one frontend (``bind ... ssl crt <pem>`` with the same versions, ciphers
and ALPN for TLS), one backend, one server. All run as ``haproxy -W`` side by side in front of
the same member (an HAProxy answering 200 itself) and are measured in turn with ``wrk`` (2
threads, 32 connections):

- new connections/s: every request on a new connection (``Connection: close``; for TLS, a new
  handshake each),
- keep-alive requests/s: connections reused.

Runs alternate A-B-B-A (a busy neighbour then weighs on both alike) and the medians are
compared. Goal: Fulcrum >= 0.98x hand-written for each figure. Bounded: ROUNDS x 2 protocols x
2 modes x 2 configs x SECONDS, about 140 s. Run: .venv/bin/python bench/bench_dataplane.py
"""

from __future__ import annotations

import asyncio
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
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
ROUNDS = 8
SECONDS = 2
THREADS = 2
CONNECTIONS = 32
GOAL = 0.98
# What the provisioner would derive from the fd limit; the same for both configurations.
MAXCONN = maxconn_cap_for_fd_limit(resource.getrlimit(resource.RLIMIT_NOFILE)[1])


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


def start_haproxy(config: Path, probe: str, port: int) -> subprocess.Popen[bytes]:
    check = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, check=False)
    if check.returncode != 0:
        raise SystemExit(
            f"{probe}: haproxy -c failed:\n{check.stdout.decode()}{check.stderr.decode()}"
        )
    proc = subprocess.Popen(
        ["haproxy", "-W", "-db", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection((VIP, port), timeout=0.5):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"{probe}: haproxy did not start") from None
            time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wrk(url: str, *, close: bool, seconds: int = SECONDS) -> float:
    """Requests/s that wrk measured (non-2xx answers make the run fail)."""
    args = ["wrk", "-t", str(THREADS), "-c", str(CONNECTIONS), "-d", f"{seconds}s", url]
    if close:
        args[1:1] = ["-H", "Connection: close"]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=SECONDS + 30)
    errors = re.search(r"Socket errors: (.*)", out.stdout)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
    if non2xx:
        raise SystemExit(f"wrk saw errors: {out.stdout}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    if rate is None:
        raise SystemExit(f"wrk output not understood: {out.stdout}")
    if errors and "connect 0, read 0, write 0, timeout 0" not in errors.group(1):
        print(f"    (wrk socket errors: {errors.group(1)})")
    return float(rate.group(1))


def url(protocol: str, port: int) -> str:
    return f"{'https' if protocol == 'HTTPS' else 'http'}://{VIP}:{port}/"


MODES = (("new connections/s", True), ("keep-alive req/s", False))


def main() -> int:
    if shutil.which("wrk") is None or shutil.which("haproxy") is None:
        print("bench_dataplane needs wrk and haproxy on PATH", file=sys.stderr)
        return 1
    ca = CertAuthority("Bench CA")
    site = ca.issue("bench.test", dns=["bench.test"], ips=[VIP])
    pem = site.cert_pem + site.key_pem
    with tempfile.TemporaryDirectory(prefix="fulcrum-bench-dataplane-") as tmp:
        root = Path(tmp)
        member_port = free_port()
        ports = {name: {"HTTP": free_port(), "HTTPS": free_port()} for name in ("fulcrum", "hand")}
        (root / "member.cfg").write_text(member_config(member_port))
        (root / "fulcrum").mkdir()
        (root / "hand").mkdir()
        source = PemSource(site.cert_pem, site.key_pem)
        (root / "fulcrum.cfg").write_text(
            fulcrum_config(root / "fulcrum", ports["fulcrum"], member_port, source)
        )
        (root / "hand.cfg").write_text(hand_config(root / "hand", ports["hand"], member_port, pem))
        procs = [start_haproxy(root / "member.cfg", "member", member_port)]
        results: dict[tuple[str, str, str], list[float]] = {}
        try:
            # Both run side by side (an idle HAProxy costs nothing); runs alternate in A-B-B-A
            # order so that a neighbour's load drifts onto both alike.
            for name in ("fulcrum", "hand"):
                procs.append(start_haproxy(root / f"{name}.cfg", name, ports[name]["HTTP"]))
                for protocol in ("HTTP", "HTTPS"):
                    wrk(url(protocol, ports[name][protocol]), close=False, seconds=1)  # warm-up
            for round_index in range(ROUNDS):
                order = ("fulcrum", "hand") if round_index % 2 == 0 else ("hand", "fulcrum")
                for protocol in ("HTTP", "HTTPS"):
                    for mode, close in MODES:
                        for name in order:
                            rate = wrk(url(protocol, ports[name][protocol]), close=close)
                            results.setdefault((name, protocol, mode), []).append(rate)
                            print(
                                f"round {round_index + 1} {name:8} {protocol:5} {mode:17} "
                                f"{rate:10.0f}"
                            )
        finally:
            for proc in procs:
                stop(proc)
    print(f"\nHTTP and TERMINATED_HTTPS listeners ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC),")
    print(f"wrk -t{THREADS} -c{CONNECTIONS} -d{SECONDS}s, medians of {ROUNDS} rounds:")
    worst = float("inf")
    for protocol in ("HTTP", "HTTPS"):
        for mode, _ in MODES:
            ours = statistics.median(results[("fulcrum", protocol, mode)])
            theirs = statistics.median(results[("hand", protocol, mode)])
            ratio = ours / theirs
            worst = min(worst, ratio)
            print(
                f"  {protocol:5} {mode:17} fulcrum {ours:9.0f}  hand-written {theirs:9.0f}  "
                f"ratio {ratio:.2f}x"
            )
    verdict = "meets" if worst >= GOAL else "misses"
    print(f"worst ratio {worst:.2f}x: {verdict} the goal of >= {GOAL}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
