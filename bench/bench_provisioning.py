"""Provisioning and data-plane benchmark (process driver, real agents and HAProxy, loopback).

Measures, through the real API (noauth) and provisioner, with bounded counts:
- POST LB (graph: listener, pool, member) -> ACTIVE and serving, cold (the amphora boots)
  and warm (taken from the spare pool): p50 / p95,
- full LB + listener + pool + 2 members + HM, step by step (each waits for ACTIVE),
- 50 LBs at concurrency 8 -> all ACTIVE (seen by one list request every 25 ms for all of
  them: per-LB polling every 5 ms loaded the 2 cores it measures; single-LB figures keep it),
- member add -> serving (runtime API, no reload),
- requests/s through the LB vs the same HAProxy config written by hand vs direct (wrk),
- where the milliseconds of one warm graph create go: the services export their trace spans
  (OTLP/HTTP) to a receiver in this process, and each create's trace is cut into API commit,
  relay publish, consumer pick-up, spare claim, config render, agent push, HAProxy reload,
  status event (the activation's commit) and the client seeing ACTIVE, each create sent once
  the spare pool is full again (no spare boots beside it); beside it, HAProxy's own
  start (a spare's first config) and reload (master CLI reload until the new worker runs)
  through the agent's data-plane adapter, with the global section the provisioner renders:
  the floor of a create and of any config change.
Goals (2 cores): ACTIVE+serving p50 <= 150 ms; step by step <= 500 ms; graph <= 300 ms;
50 LBs <= 3 s; member live <= 100 ms; throughput >= 0.9x hand-written.
Octavia 19 with no-op drivers on this kind of box: 536 ms, 1746 ms, 1351 ms, 18 s, 365 ms.
Run: .venv/bin/python bench/bench_provisioning.py
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)

from bench._harness import (  # noqa: E402
    BACKEND_CFG,
    SUBNET,
    Api,
    Stack,
    StatusWatch,
    Vips,
    free_port,
    graph,
    pct,
    serving,
    stack,
    wait_http,
)

COLD_SAMPLES = 4
WARM_SAMPLES = 6
STEP_SAMPLES = 3
FLEET = 50
# The fleet is watched with one list request every 25 ms (at most 25 ms late per LB): polling
# each of the 8 LBs in flight every 5 ms took as much CPU as the API's real work.
FLEET_POLL = 0.025
MEMBER_SAMPLES = 5
BREAKDOWN_SAMPLES = 5  # --samples
START_SAMPLES = 8
RELOAD_SAMPLES = 20
WRK_SECONDS = 3
WRK_ROUNDS = 5

HAND_CFG = """global
    maxconn 4000
defaults
    mode http
    retries 3
    option redispatch
    timeout client 50s
    timeout server 50s
    timeout connect 5s
frontend lb
    bind 127.0.0.1:{port}
    default_backend pool
backend pool
    balance roundrobin
    server m1 127.0.0.1:{p1} weight 1
    server m2 127.0.0.1:{p2} weight 1
"""


async def graph_create(api: Api, vips: Vips, members: list[int]) -> tuple[float, str]:
    vip = vips.next()
    port = free_port(vip)
    started = time.perf_counter()
    lb = (await api.post("/v2/lbaas/loadbalancers", graph(vip, port, members)))["loadbalancer"]
    await api.wait_active(lb["id"])
    await serving(api.s, f"http://{vip}:{port}/")
    return time.perf_counter() - started, lb["id"]


async def step_by_step(api: Api, vips: Vips, members: list[int]) -> float:
    vip = vips.next()
    port = free_port(vip)
    started = time.perf_counter()
    lb = (
        await api.post(
            "/v2/lbaas/loadbalancers",
            {"loadbalancer": {"vip_subnet_id": SUBNET, "vip_address": vip}},
        )
    )["loadbalancer"]
    await api.wait_active(lb["id"])
    listener = (
        await api.post(
            "/v2/lbaas/listeners",
            {"listener": {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": port}},
        )
    )["listener"]
    await api.wait_active(lb["id"])
    pool = (
        await api.post(
            "/v2/lbaas/pools",
            {
                "pool": {
                    "listener_id": listener["id"],
                    "protocol": "HTTP",
                    "lb_algorithm": "ROUND_ROBIN",
                }
            },
        )
    )["pool"]
    await api.wait_active(lb["id"])
    for m in members:
        await api.post(
            f"/v2/lbaas/pools/{pool['id']}/members",
            {"member": {"address": "127.0.0.1", "protocol_port": m}},
        )
        await api.wait_active(lb["id"])
    await api.post(
        "/v2/lbaas/healthmonitors",
        {
            "healthmonitor": {
                "pool_id": pool["id"],
                "type": "HTTP",
                "delay": 2,
                "timeout": 1,
                "max_retries": 2,
            }
        },
    )
    await api.wait_active(lb["id"])
    await serving(api.s, f"http://{vip}:{port}/")
    return time.perf_counter() - started


async def fleet(api: Api, vips: Vips, members: list[int]) -> float:
    sem = asyncio.Semaphore(8)
    bodies = []
    for _ in range(FLEET):
        vip = vips.next()
        bodies.append(graph(vip, free_port(vip), members))
    watch = StatusWatch(api, FLEET_POLL)

    async def one(body: dict[str, Any]) -> None:
        async with sem:
            lb = (await api.post("/v2/lbaas/loadbalancers", body))["loadbalancer"]
            await watch.wait_active(lb["id"], timeout=120)

    poller = asyncio.create_task(watch.run())
    try:
        started = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - started
    finally:
        poller.cancel()


async def member_live(api: Api, vips: Vips, p1: int, p3: int) -> list[float]:
    vip = vips.next()
    port = free_port(vip)
    lb = (await api.post("/v2/lbaas/loadbalancers", graph(vip, port, [p1])))["loadbalancer"]
    await api.wait_active(lb["id"])
    async with api.s.get(f"{api.base}/v2/lbaas/pools") as resp:
        pools = (await resp.json())["pools"]
    pool_id = next(p["id"] for p in pools if p["loadbalancers"][0]["id"] == lb["id"])
    url = f"http://{vip}:{port}/"
    times = []
    for _ in range(MEMBER_SAMPLES):
        started = time.perf_counter()
        member = (
            await api.post(
                f"/v2/lbaas/pools/{pool_id}/members",
                {"member": {"address": "127.0.0.1", "protocol_port": p3}},
            )
        )["member"]
        await serving(api.s, url, "three")
        times.append(time.perf_counter() - started)
        await api.wait_active(lb["id"])
        async with api.s.delete(f"{api.base}/v2/lbaas/pools/{pool_id}/members/{member['id']}"):
            pass
        await api.wait_active(lb["id"])
    return times


def wrk(url: str) -> float:
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{WRK_SECONDS}s", url], capture_output=True, text=True, check=True
    ).stdout
    errors = re.search(r"Socket errors: (.*)", out)
    if errors or "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors: {out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


async def throughput(
    api: Api, vips: Vips, p1: int, p2: int, tmp: Path
) -> tuple[float, float, float]:
    seconds, lb_id = await graph_create(api, vips, [p1, p2])
    async with api.s.get(f"{api.base}/v2/lbaas/loadbalancers/{lb_id}") as resp:
        lb = (await resp.json())["loadbalancer"]
    async with api.s.get(f"{api.base}/v2/lbaas/listeners") as resp:
        listener = next(
            x for x in (await resp.json())["listeners"] if x["loadbalancers"][0]["id"] == lb_id
        )
    lb_url = f"http://{lb['vip_address']}:{listener['protocol_port']}/"
    hand_port = free_port()
    cfg = tmp / "hand.cfg"
    cfg.write_text(HAND_CFG.format(port=hand_port, p1=p1, p2=p2))
    hand = subprocess.Popen(["haproxy", "-W", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL)
    # Alternate the two, WRK_ROUNDS each, and compare medians: whatever else the box does at
    # one moment then weighs on both sides alike.
    through_lb: list[float] = []
    by_hand: list[float] = []
    try:
        await asyncio.sleep(0.5)
        for _ in range(WRK_ROUNDS):
            through_lb.append(await asyncio.to_thread(wrk, lb_url))
            by_hand.append(await asyncio.to_thread(wrk, f"http://127.0.0.1:{hand_port}/"))
    finally:
        hand.terminate()
        hand.wait()
    direct = await asyncio.to_thread(wrk, f"http://127.0.0.1:{p1}/")
    return statistics.median(through_lb), statistics.median(by_hand), direct


@dataclass(frozen=True)
class Span:
    trace_id: str
    name: str
    start: int  # ns since the epoch
    end: int


class SpanSink:
    """An OTLP/HTTP trace receiver on loopback: the services export their spans here."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Serve; returns the traces endpoint for ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``."""
        app = web.Application()
        app.router.add_post("/v1/traces", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}/v1/traces"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for resource in message.resource_spans:
            for scope in resource.scope_spans:
                self.spans += [
                    Span(sp.trace_id.hex(), sp.name, sp.start_time_unix_nano, sp.end_time_unix_nano)
                    for sp in scope.spans
                ]
        return web.Response(content_type="application/x-protobuf", body=b"")

    def of(self, trace_id: str) -> list[Span]:
        return sorted((sp for sp in self.spans if sp.trace_id == trace_id), key=lambda x: x.start)


STEPS = (
    "API commit",
    "relay publish",
    "consumer pick-up",
    "spare claim",
    "config render",
    "agent push",
    "HAProxy start",
    "status event",
    "provisioner, rest",
    "client sees ACTIVE",
)


def breakdown(spans: list[Span], posted: int, seen: int) -> dict[str, float]:
    """Milliseconds per step of one create's trace (``posted``/``seen``: the client's clock
    when it sent the POST and when it saw ACTIVE; same host, same clock). The steps cut the
    time from POST to ACTIVE into consecutive pieces: they add up to the total.

    "status event" runs from the end of the push until the provisioner's transaction, which
    holds the activation, commits (the end of its consume span): whatever of the activation's
    append overlaps the push is not on the critical path and is not counted.
    """

    def first(name: str, after: int = 0) -> Span:
        return next(sp for sp in spans if sp.name == name and sp.start >= after)

    api = next(sp for sp in spans if sp.name.startswith("POST"))
    publish = first("publish", api.start)
    consume = first("consume LoadBalancerCreated", publish.start)
    claim = first("claim spare", consume.start)
    render = first("render", consume.start)
    apply = first("apply", render.start)
    push = first("push", claim.start)
    # The agent's span of a config it loads: on a spare (no HAProxy yet) that is a start.
    load = next((sp for sp in spans if sp.name == "haproxy reload"), None)
    load_ns = load.end - load.start if load else 0
    first("activate", consume.start)  # the create's activation is in this trace
    ns = {
        "API commit": api.end - posted,
        # From the commit until the relay hands the event to NATS, then until a consumer has it.
        "relay publish": publish.start - api.end,
        "consumer pick-up": consume.start - publish.start,
        "spare claim": claim.end - claim.start,
        "config render": render.end - render.start,
        "agent push": apply.end - apply.start - load_ns,
        "HAProxy start": load_ns,
        "status event": consume.end - push.end,
        "client sees ACTIVE": seen - consume.end,
    }
    timed = sum(ns[k] for k in ("spare claim", "config render", "agent push", "HAProxy start"))
    ns["provisioner, rest"] = push.end - consume.start - timed
    return {step: value / 1e6 for step, value in ns.items()}


Traced = tuple[dict[str, float], float, list[Span], int]


async def traced_create(api: Api, sink: SpanSink, vips: Vips, members: list[int]) -> Traced:
    """One warm graph create sent with a fresh trace: its steps and its total in ms, its spans
    and the client's clock at the POST."""
    trace_id = secrets.token_hex(16)
    vip = vips.next()
    headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
    posted = time.time_ns()
    url = f"{api.base}/v2/lbaas/loadbalancers"
    async with api.s.post(url, json=graph(vip, free_port(vip), members), headers=headers) as resp:
        lb = (await resp.json())["loadbalancer"]
    await api.wait_active(lb["id"])
    seen = time.time_ns()
    deadline = time.monotonic() + 10
    while True:  # the batch span processors export within OTEL_BSP_SCHEDULE_DELAY
        await asyncio.sleep(0.2)
        spans = sink.of(trace_id)
        try:
            return breakdown(spans, posted, seen), (seen - posted) / 1e6, spans, posted
        except StopIteration:
            if time.monotonic() > deadline:
                names = [x.name for x in spans]
                raise RuntimeError(f"trace {trace_id} incomplete: {names}") from None


async def haproxy_floor(tmp: Path, port: int) -> tuple[list[float], list[float]]:
    """Seconds per start and per reload of HAProxy through the agent's data-plane adapter,
    its global section as the provisioner renders it (no CA store for the unused HTTP
    client)."""
    from services.amphora.adapters.haproxy import HaproxyDataPlane

    state = tmp / "reload-floor"
    state.mkdir()
    binary = Path(shutil.which("haproxy") or "/usr/sbin/haproxy")
    plane = HaproxyDataPlane(binary, state, reload_timeout=10, drain_timeout=1)
    await plane.prepare()
    config = (
        f"global\n    stats socket {plane.stats_socket} mode 600 level admin\n"
        "    httpclient.ssl.verify none\n"
        "defaults\n    mode http\n    timeout client 5s\n    timeout server 5s\n"
        f"    timeout connect 1s\nfrontend f\n    bind 127.0.0.1:{port}\n"
        "    http-request return status 200 content-type text/plain string ok\n"
        "# generation {n}\n"
    )
    starts: list[float] = []
    reloads: list[float] = []
    try:
        for _ in range(START_SAMPLES):
            started = time.perf_counter()
            await plane.apply(config.format(n=0))
            starts.append(time.perf_counter() - started)
            await plane.discard()
        await plane.apply(config.format(n=0))
        for n in range(1, RELOAD_SAMPLES + 1):
            started = time.perf_counter()
            await plane.apply(config.format(n=n))
            reloads.append(time.perf_counter() - started)
    finally:
        await plane.stop()
    return starts, reloads


def start_provisioner(s: Stack, spares: int) -> subprocess.Popen[bytes]:
    return s.service(
        "provisioner",
        {
            "PORT": str(free_port()),
            "STATE_DIR": str(s.root / "amphorae"),
            "CA_DIR": str(s.root / "ca"),
            "SPARE_POOL_SIZE": str(spares),
            "SPARE_REFILL_INTERVAL": "0.2",
        },
    )


async def wait_spares(api: Api, s: Stack, count: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(s.pg_dsn)
    try:
        deadline = time.monotonic() + 120
        while await conn.fetchval("SELECT count(*) FROM amphora_view WHERE status='READY'") < count:
            if time.monotonic() > deadline:
                raise RuntimeError("spare pool never filled")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def main(only_breakdown: bool, timeline: bool, samples: int) -> None:
    sink = SpanSink()
    os.environ |= {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": await sink.start(),
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    with stack("fulcrum-bench-prov-") as s, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        from deploy.local.embedded import create_database

        s.pg_dsn = await create_database(s.pg_dsn, "bench")
        api_port = free_port()
        s.service("api", {"PORT": str(api_port), "AUTH_STRATEGY": "noauth", "ACCESS_LOG": "false"})
        p1, p2, p3 = free_port(), free_port(), free_port()
        (tmp / "backends.cfg").write_text(BACKEND_CFG.format(p1=p1, p2=p2, p3=p3))
        backends = subprocess.Popen(["haproxy", "-db", "-f", str(tmp / "backends.cfg")])
        base = f"http://127.0.0.1:{api_port}"
        wait_http(f"{base}/healthz")
        vips = Vips()
        try:
            async with aiohttp.ClientSession() as session:
                api = Api(session, base)
                if not only_breakdown:
                    cold_prov = start_provisioner(s, 0)
                    await asyncio.sleep(1.5)
                    cold = [(await graph_create(api, vips, [p1]))[0] for _ in range(COLD_SAMPLES)]
                    fleet_seconds = await fleet(api, vips, [p1])
                    cold_prov.terminate()
                    try:
                        cold_prov.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        print((s.root / "provisioner.log").read_text()[-3000:])
                        raise
                    s.procs.remove(cold_prov)
                pool_size = max(WARM_SAMPLES, samples) + 2
                start_provisioner(s, pool_size)
                if not only_breakdown:
                    await wait_spares(api, s, WARM_SAMPLES + 2)
                    warm = [(await graph_create(api, vips, [p1]))[0] for _ in range(WARM_SAMPLES)]
                    await wait_spares(api, s, STEP_SAMPLES)
                    steps = [await step_by_step(api, vips, [p1, p2]) for _ in range(STEP_SAMPLES)]
                    live = await member_live(api, vips, p1, p3)
                    through_lb, by_hand, direct = await throughput(api, vips, p1, p2, tmp)
                traced: list[Traced] = []
                for _ in range(samples):
                    # A full pool: no spare boots beside the create that is measured.
                    await wait_spares(api, s, pool_size)
                    traced.append(await traced_create(api, sink, vips, [p1]))
                floor = await haproxy_floor(tmp, free_port())
        finally:
            backends.terminate()
            backends.wait()
            await sink.stop()
    print("Fulcrum provisioning benchmark (process driver, 2-core box, loopback)")
    if not only_breakdown:
        print_figures(cold, warm, steps, fleet_seconds, live, through_lb, by_hand, direct)
    print_breakdown(traced, floor)
    if timeline:
        print_timeline(traced)


def print_figures(
    cold: list[float],
    warm: list[float],
    steps: list[float],
    fleet_seconds: float,
    live: list[float],
    through_lb: float,
    by_hand: float,
    direct: float,
) -> None:
    print(
        f"  graph create -> ACTIVE+serving, cold boot  p50 {pct(cold, 0.5):7.0f} ms  p95 {pct(cold, 0.95):7.0f} ms"
    )
    print(
        f"  graph create -> ACTIVE+serving, warm spare p50 {pct(warm, 0.5):7.0f} ms  p95 {pct(warm, 0.95):7.0f} ms   goal <= 150 (graph <= 300)"
    )
    print(
        f"  step by step (LB, listener, pool, 2 members, HM) p50 {pct(steps, 0.5):7.0f} ms   goal <= 500"
    )
    print(
        f"  {FLEET} LBs at concurrency 8 -> all ACTIVE (cold): {fleet_seconds:6.1f} s   goal <= 3 s"
    )
    print(
        f"  member add -> serving                       p50 {pct(live, 0.5):7.0f} ms   goal <= 100"
    )
    print(
        f"  requests/s: through LB {through_lb:8.0f}  hand-written {by_hand:8.0f}  direct {direct:8.0f}"
    )
    print(f"  ratio LB / hand-written: {through_lb / by_hand:5.2f}x   goal >= 0.90x")
    print(
        f"  ratio vs Octavia (536 ms, 1746 ms, 1351 ms, 18 s, 365 ms): "
        f"{536 / pct(warm, 0.5):.1f}x, {1746 / pct(steps, 0.5):.1f}x, {1351 / pct(warm, 0.5):.1f}x, "
        f"{18 / fleet_seconds:.1f}x, {365 / pct(live, 0.5):.1f}x"
    )


def print_breakdown(traced: list[Traced], floor: tuple[list[float], list[float]]) -> None:
    totals = [total for _, total, _, _ in traced]
    print(f"  load average while measured: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"  one warm graph create (POST -> client sees ACTIVE), p50 of {len(traced)} traced: "
        f"{statistics.median(totals):6.1f} ms   goal <= 100 (issue 20)"
    )
    for step in STEPS:
        print(f"    {step:<20} p50 {statistics.median(t[step] for t, _, _, _ in traced):6.1f} ms")
    starts, reloads = floor
    start = pct(starts, 0.5)
    print(
        f"  HAProxy through the agent's adapter (the floor): start p50 {start:5.1f} ms "
        f"p95 {pct(starts, 0.95):5.1f} ms, reload p50 {pct(reloads, 0.5):5.1f} ms "
        f"p95 {pct(reloads, 0.95):5.1f} ms; the create is {statistics.median(totals) / start:4.1f}x "
        "the start (a spare's first config is a start)"
    )


def print_timeline(traced: list[Traced]) -> None:
    """Every span of the median traced create: start and length in ms after the POST."""
    _, total, spans, posted = sorted(traced, key=lambda t: t[1])[len(traced) // 2]
    print(f"  spans of the median traced create ({total:.1f} ms), ms after the POST:")
    for span in spans:
        start, length = (span.start - posted) / 1e6, (span.end - span.start) / 1e6
        print(f"    {start:7.1f} +{length:6.1f}  {span.name}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Fulcrum provisioning benchmark")
    parser.add_argument(
        "--only-breakdown",
        action="store_true",
        help="only the traced per-step breakdown of warm creates and HAProxy's reload floor",
    )
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="also print every span of the median traced create",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=BREAKDOWN_SAMPLES,
        help=f"traced creates in the breakdown (default {BREAKDOWN_SAMPLES})",
    )
    args = parser.parse_args()
    asyncio.run(main(args.only_breakdown, args.timeline, max(1, args.samples)))
