"""Provisioning and data-plane benchmark (process driver, real agents and HAProxy, loopback).

Measures, through the real API (noauth) and provisioner, with bounded counts, issue 20's
create-path figures beside Octavia 19 with no-op drivers (the issue's side-by-side runs):
- POST bare LB (no listener) -> ACTIVE, taken from the spare pool: p50 (goal <= 50 ms;
  Octavia 433 ms),
- LB + listener + pool + 2 members + HM, step by step, each waiting for ACTIVE (a GET of
  the LB every 5 ms, as Octavia's clients poll, only faster; goal <= 180 ms; Octavia
  1744 ms); each step's POST carries a trace of its own, cut into API commit, relay publish,
  consumer pick-up, the provisioner's own work, its agent calls, HAProxy's part (start,
  reload, or the check of a stored file), the status commit and the client seeing ACTIVE,
  printed beside HAProxy's start and reload and Postgres's bare INSERT+COMMIT and round
  trip (the durable floor of the API's commit); ``--only-steps`` runs only this part,
- single-call graph create (listener, pool, member) -> ACTIVE and serving, warm (goal
  <= 100 ms; Octavia 1014 ms); the same cold (the amphora boots) without a goal,
- 30 bare LBs at concurrency 8 -> all ACTIVE, the spare pool at the deployment default
  (``fulcrum up``) and full when the burst starts (goal <= 1 s; Octavia 10.2 s), seen by
  one list request every 25 ms for all of them (per-LB polling every 5 ms loaded the 2
  cores it measures; single-LB figures keep it); the same burst with no spares (cold
  boots) without a goal; ``--only-burst`` runs only the burst with the spare pool,
- member add -> serving (runtime API, no reload; goal <= 100 ms; Octavia 360 ms),
- requests/s through the LB vs the same HAProxy config written by hand vs direct (wrk;
  goal >= 0.90x),
- where the milliseconds of one warm graph create go: the services export their trace spans
  (OTLP/HTTP) to a receiver in this process, and each create's trace is cut into API commit,
  relay publish, consumer pick-up, spare claim, config render, agent push, HAProxy start,
  status event (the activation's commit) and the client seeing ACTIVE, each create sent once
  the spare pool is full again (no spare boots beside it); beside it, HAProxy's own
  start (a spare's first config) and reload (a new process until it serves, the old retired)
  through the agent's data-plane adapter, with the global section the provisioner renders:
  the floor of a create and of any config change.
The figures are measured on a stack as ``fulcrum up`` deploys it, exporting no spans
(``--traced``: exporting them, to see what tracing costs); the breakdowns and the step-by-step
parts on a stack of their own whose services export every span.
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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

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
from deploy.local.environment import SPARE_POOL_SIZE  # noqa: E402

Sample = TypeVar("Sample")

COLD_SAMPLES = 4
WARM_SAMPLES = 6
BARE_SAMPLES = 8
STEP_SAMPLES = 3
FLEET = 30
FLEET_CONCURRENCY = 8
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


def bare(vip: str) -> dict[str, Any]:
    """A create body of a load balancer without listeners."""
    return {"loadbalancer": {"vip_subnet_id": SUBNET, "vip_address": vip}}


async def bare_create(api: Api, vips: Vips) -> float:
    """Seconds from POST of a bare LB until the client sees it ACTIVE."""
    started = time.perf_counter()
    lb = (await api.post("/v2/lbaas/loadbalancers", bare(vips.next())))["loadbalancer"]
    await api.wait_active(lb["id"])
    return time.perf_counter() - started


STEP_NAMES = ("LB", "listener", "pool", "member 1", "member 2", "health monitor", "serving")


@dataclass(frozen=True)
class StepTrace:
    """One step's POST, sent with a fresh trace: the client's clock (ns since the epoch) when
    it sent it and when it saw the LB ACTIVE again."""

    trace_id: str
    posted: int
    seen: int


@dataclass(frozen=True)
class Steps:
    """One step-by-step create: seconds per step (``STEP_NAMES``) and the trace of each step
    but the last (serving)."""

    seconds: list[float]
    traces: list[StepTrace]


async def step_by_step(api: Api, vips: Vips, members: list[int]) -> Steps:
    """Each step (``STEP_NAMES``): POST, then ``Api.wait_active`` (a GET of the LB every
    5 ms) until the LB is ACTIVE; the last: until the VIP serves."""
    vip = vips.next()
    port = free_port(vip)
    marks = [time.perf_counter()]
    traces: list[StepTrace] = []

    async def step(path: str, body: dict[str, Any], lb_id: str | None = None) -> dict[str, Any]:
        trace_id = secrets.token_hex(16)
        headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
        posted = time.time_ns()
        async with api.s.post(f"{api.base}{path}", json=body, headers=headers) as resp:
            created: dict[str, Any] = await resp.json()
            assert resp.status in (201, 202), created
        await api.wait_active(lb_id or created["loadbalancer"]["id"])
        traces.append(StepTrace(trace_id, posted, time.time_ns()))
        marks.append(time.perf_counter())
        return created

    lb_id = (await step("/v2/lbaas/loadbalancers", bare(vip)))["loadbalancer"]["id"]
    listener = {"loadbalancer_id": lb_id, "protocol": "HTTP", "protocol_port": port}
    listener_id = (await step("/v2/lbaas/listeners", {"listener": listener}, lb_id))["listener"][
        "id"
    ]
    pool = {"listener_id": listener_id, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}
    pool_id = (await step("/v2/lbaas/pools", {"pool": pool}, lb_id))["pool"]["id"]
    for m in members:
        member = {"address": "127.0.0.1", "protocol_port": m}
        await step(f"/v2/lbaas/pools/{pool_id}/members", {"member": member}, lb_id)
    monitor = {"pool_id": pool_id, "type": "HTTP", "delay": 2, "timeout": 1, "max_retries": 2}
    await step("/v2/lbaas/healthmonitors", {"healthmonitor": monitor}, lb_id)
    await serving(api.s, f"http://{vip}:{port}/")
    marks.append(time.perf_counter())
    return Steps([b - a for a, b in zip(marks, marks[1:], strict=False)], traces)


# What a process of the stack is, by its command line (the first match).
PROCESS_KINDS = (
    ("haproxy", b"haproxy"),
    ("agents", b"services.amphora"),
    ("api", b"services.api"),
    ("provisioner", b"services.provisioner"),
    ("postgres", b"postgres"),
    ("nats", b"nats"),
)


def stack_cpu_seconds(s: Stack) -> dict[str, float]:
    """CPU seconds the stack's processes have used by kind (``PROCESS_KINDS``, else "other"),
    children included: the processes started by the bench and every one whose command line
    names the stack's directory. A live process counts every thread's run time from
    ``schedstat`` (ns: ``stat``'s 10 ms ticks are sampled and miss most of a short-lived
    process, a Postgres backend opened mid-burst), a reaped child (a ``haproxy -c``) its
    parent's ``cutime``/``cstime`` ticks."""
    root = str(s.root).encode()
    seeds = {p.pid for p in s.procs}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if root in (entry / "cmdline").read_bytes():
                    seeds.add(int(entry.name))
            except OSError:
                continue
    seen: set[int] = set()
    used: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    todo = list(seeds)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            kind = next((k for k, mark in PROCESS_KINDS if mark in cmdline), "other")
            reaped = (int(fields[13]) + int(fields[14])) / tick  # cutime cstime
            own = 0
            for task in Path(f"/proc/{pid}/task").iterdir():
                own += int((task / "schedstat").read_text().split()[0])
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
        used[kind] = used.get(kind, 0.0) + own / 1e9 + reaped
    return used


def cpu_per_lb(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Seconds of CPU per LB of a burst of FLEET, by kind, between two readings."""
    return {k: (v - before.get(k, 0.0)) / FLEET for k, v in after.items()}


async def fleet(api: Api, vips: Vips, s: Stack) -> tuple[float, dict[str, float]]:
    """Seconds until FLEET bare LBs, created FLEET_CONCURRENCY at a time, are all ACTIVE, and
    the stack's CPU seconds per LB meanwhile."""
    sem = asyncio.Semaphore(FLEET_CONCURRENCY)
    bodies = [bare(vips.next()) for _ in range(FLEET)]
    watch = StatusWatch(api, FLEET_POLL)

    async def one(body: dict[str, Any]) -> None:
        async with sem:
            lb = (await api.post("/v2/lbaas/loadbalancers", body))["loadbalancer"]
            await watch.wait_active(lb["id"], timeout=120)

    poller = asyncio.create_task(watch.run())
    try:
        cpu = stack_cpu_seconds(s)
        started = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        seconds = time.perf_counter() - started
        return seconds, cpu_per_lb(cpu, stack_cpu_seconds(s))
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


STEP_PARTS = (
    "API commit",
    "relay publish",
    "consumer pick-up",
    "provisioner",
    "agent calls",
    "HAProxy (agent)",
    "status commit",
    "client sees ACTIVE",
)


# The API's commit of a child cut by its spans: POST sent until the LB's load starts
# (routing, body, the parent's lookup), the load (state and quota limits), the checks
# until the append starts, the append (its transaction committed), then the answer's body.
API_PARTS = ("until the load", "load", "checks", "append", "answer")


def step_breakdown(sink: SpanSink, step: StepTrace) -> dict[str, float]:
    """Milliseconds per part (``STEP_PARTS``) of one step's trace; they add up to the step.

    "API commit": POST sent until the API's span ends (the answer). Then the relay's publish
    and the consume span that did the step's work: the provisioning is level-triggered, so
    that may be the consume of an earlier event of the LB that arrives just before (the
    previous step's status event), in that event's trace: the consume span around the first
    ``provision`` span after the publish. Inside it "agent calls" is the time the
    provisioner's calls to the agent are in flight (those sent together count once) less the
    agent's HAProxy spans ("HAProxy (agent)": a start, reload, or the check of a file stored
    for the next reload), "provisioner" the rest until the last
    call's end, "status commit" from there until the consume span ends (its transaction,
    with the activation, committed), and "client sees ACTIVE" until the client's GET saw it.
    A child's step also has the API's commit cut into ``API_PARTS`` (the API's "load" and
    "append" spans), beside.
    """
    own = sink.of(step.trace_id)

    def first(spans: list[Span], prefix: str, after: int) -> Span:
        return next(sp for sp in spans if sp.name.startswith(prefix) and sp.start >= after)

    api = first(own, "POST", 0)
    publish = first(own, "publish", api.start)
    work = first(sorted(sink.spans, key=lambda sp: sp.start), "provision ", publish.start)
    spans = sink.of(work.trace_id)
    consume = next(
        sp
        for sp in spans
        if sp.name.startswith("consume ") and sp.start <= work.start and work.end <= sp.end
    )
    inside = [sp for sp in spans if consume.start <= sp.start and sp.end <= consume.end]
    calls = [sp for sp in inside if sp.name.startswith("agent call")]
    haproxy = covered([sp for sp in inside if sp.name.startswith("haproxy ")])
    called = covered(calls)
    last_call = max((sp.end for sp in calls), default=consume.start)
    ns = {
        "API commit": api.end - step.posted,
        "relay publish": publish.start - api.end,
        "consumer pick-up": consume.start - publish.start,
        "provisioner": last_call - consume.start - called,
        "agent calls": called - haproxy,
        "HAProxy (agent)": haproxy,
        "status commit": consume.end - last_call,
        "client sees ACTIVE": step.seen - consume.end,
    }
    load = next((sp for sp in own if sp.name == "load" and api.start <= sp.start), None)
    append = next((sp for sp in own if sp.name == "append" and api.start <= sp.start), None)
    if load is not None and append is not None:
        ns |= {
            "until the load": load.start - step.posted,
            "load": load.end - load.start,
            "checks": append.start - load.end,
            "append": append.end - append.start,
            "answer": api.end - append.end,
        }
    return {part: value / 1e6 for part, value in ns.items()}


def covered(spans: list[Span]) -> int:
    """Nanoseconds during which at least one of ``spans`` runs (calls in flight together
    count once)."""
    total, reach = 0, 0
    for sp in sorted(spans, key=lambda x: x.start):
        start = max(sp.start, reach)
        if sp.end > start:
            total += sp.end - start
            reach = sp.end
    return total


async def steps_breakdown(sink: SpanSink, each: list[Steps]) -> list[list[dict[str, float]]]:
    """The breakdown of every traced step of ``each`` once its spans arrived (10 s at most)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return [[step_breakdown(sink, t) for t in one.traces] for one in each]
        except StopIteration:
            if time.monotonic() > deadline:
                raise RuntimeError("a step's trace is incomplete") from None
            await asyncio.sleep(0.2)


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
        f"global\n    stats socket {plane.stats_socket} mode 600 level admin expose-fd listeners\n"
        "    httpclient.ssl.verify none\n    hard-stop-after 30s\n"
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
    """The provisioner, its refill loop keeping ``spares`` at its default pace (a round a
    second): a sample sent once the pool is full has the loop asleep beside it, where a
    faster loop would boot the claimed spare's replacement during the create it measures."""
    return s.service(
        "provisioner",
        {
            "PORT": str(free_port()),
            "STATE_DIR": str(s.root / "amphorae"),
            "CA_DIR": str(s.root / "ca"),
            "SPARE_POOL_SIZE": str(spares),
        },
    )


COMMIT_SAMPLES = 50


async def commit_floor(s: Stack) -> tuple[float, float]:
    """Seconds (p50) of a bare INSERT + COMMIT into a logged table (a commit's WAL flush: the
    durable floor of any write) and of a round trip (``SELECT 1``), on the stack's Postgres."""
    import asyncpg

    conn = await asyncpg.connect(s.pg_dsn)
    try:
        await conn.execute("CREATE TABLE bench_commit_floor (id bigserial PRIMARY KEY, v text)")
        commits: list[float] = []
        trips: list[float] = []
        for _ in range(COMMIT_SAMPLES):
            started = time.perf_counter()
            async with conn.transaction():
                await conn.execute("INSERT INTO bench_commit_floor (v) VALUES ('x')")
            commits.append(time.perf_counter() - started)
            started = time.perf_counter()
            await conn.fetchval("SELECT 1")
            trips.append(time.perf_counter() - started)
        await conn.execute("DROP TABLE bench_commit_floor")
        return statistics.median(commits), statistics.median(trips)
    finally:
        await conn.close()


async def wait_spares(s: Stack, count: int) -> None:
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


@dataclass(frozen=True)
class Figures:
    """The create-path figures, each a list of seconds (or one figure), and the throughputs."""

    cold: list[float]
    cold_fleet: float
    cold_cpu: dict[str, float]  # stack CPU seconds per LB of the cold burst, by kind
    spares: int  # the spare pool of the warm figures
    bare: list[float]
    warm: list[float]
    steps: list[float]
    each_step: list[Steps]  # each sample's seconds per step (STEP_NAMES) and traces
    fleet: float
    fleet_cpu: dict[str, float]
    live: list[float]
    through_lb: float
    by_hand: float
    direct: float
    load: float  # the load average (1 min) once measured


def stop_provisioner(s: Stack, provisioner: subprocess.Popen[bytes]) -> None:
    provisioner.terminate()
    try:
        provisioner.wait(timeout=30)
    except subprocess.TimeoutExpired:
        print((s.root / "provisioner.log").read_text()[-3000:])
        raise
    s.procs.remove(provisioner)


async def figures(
    api: Api, s: Stack, vips: Vips, ports: tuple[int, int, int], tmp: Path, spares: int
) -> Figures:
    """Every figure but the breakdown: cold ones with no spare pool, then the rest with the
    deployment's default pool (``fulcrum up``), full before each warm sample and the burst."""
    p1, p2, p3 = ports
    cold_prov = start_provisioner(s, 0)
    await asyncio.sleep(1.5)
    cold = [(await graph_create(api, vips, [p1]))[0] for _ in range(COLD_SAMPLES)]
    cold_fleet, cold_cpu = await fleet(api, vips, s)
    stop_provisioner(s, cold_prov)
    start_provisioner(s, spares)  # it stays for the breakdown

    async def warm_sample(measure: Callable[[], Awaitable[Sample]]) -> Sample:
        await wait_spares(s, spares)
        return await measure()

    bare_seconds = [await warm_sample(lambda: bare_create(api, vips)) for _ in range(BARE_SAMPLES)]
    warm = [
        await warm_sample(lambda: first(graph_create(api, vips, [p1]))) for _ in range(WARM_SAMPLES)
    ]
    each_step = [
        await warm_sample(lambda: step_by_step(api, vips, [p1, p2])) for _ in range(STEP_SAMPLES)
    ]
    steps = [sum(one.seconds) for one in each_step]
    await wait_spares(s, spares)
    fleet_seconds, fleet_cpu = await fleet(api, vips, s)
    await wait_spares(s, spares)
    live = await member_live(api, vips, p1, p3)
    through_lb, by_hand, direct = await throughput(api, vips, p1, p2, tmp)
    return Figures(
        cold,
        cold_fleet,
        cold_cpu,
        spares,
        bare_seconds,
        warm,
        steps,
        each_step,
        fleet_seconds,
        fleet_cpu,
        live,
        through_lb,
        by_hand,
        direct,
        os.getloadavg()[0],
    )


async def first(create: Awaitable[tuple[float, str]]) -> float:
    return (await create)[0]


async def only_burst(api: Api, s: Stack, vips: Vips, spares: int, traced: bool) -> None:
    """The burst alone (``fleet``), the spare pool full when it starts: its seconds and the
    stack's CPU per LB, printed (``traced``: the services exported their spans)."""
    start_provisioner(s, spares)
    await wait_spares(s, spares)
    load = os.getloadavg()[0]
    seconds, cpu = await fleet(api, vips, s)
    kinds = ", ".join(f"{k} {v * 1000:.0f}" for k, v in sorted(cpu.items(), key=lambda x: -x[1]))
    print(
        f"  {FLEET} bare LBs at c={FLEET_CONCURRENCY} -> all ACTIVE (spare pool {spares}, full): "
        f"{seconds:.2f} s (goal <= 1 s); the stack's CPU per LB {sum(cpu.values()) * 1000:.0f} ms "
        f"({kinds}); load average {load:.1f} before, {os.getloadavg()[0]:.1f} after; "
        f"{_SPANS[traced]}"
    )


# Whether the services of the figures exported their spans (``--traced``).
_SPANS: Final = {
    False: "spans not exported, as `fulcrum up` deploys (--traced: exported)",
    True: "spans exported (--traced), a cost `fulcrum up` does not have",
}


@asynccontextmanager
async def bench_stack(
    session: aiohttp.ClientSession, environment: dict[str, str]
) -> AsyncIterator[tuple[Api, Stack]]:
    """Postgres, NATS and the API (noauth) serving; every service started on the stack gets
    ``environment`` (the span export of the traced phase, or nothing)."""
    from deploy.local.embedded import create_database

    with stack("fulcrum-bench-prov-") as s:
        s.environment = environment
        s.pg_dsn = await create_database(s.pg_dsn, "bench")
        api_port = free_port()
        s.service("api", {"PORT": str(api_port), "AUTH_STRATEGY": "noauth", "ACCESS_LOG": "false"})
        base = f"http://127.0.0.1:{api_port}"
        wait_http(f"{base}/healthz")
        yield Api(session, base), s


async def main(
    only_breakdown: bool,
    only_steps: bool,
    only_burst_: bool,
    timeline: bool,
    samples: int,
    spares: int,
    traced_figures: bool,
) -> None:
    """The figures on a stack as ``fulcrum up`` deploys it, exporting no spans (unless
    ``traced_figures``), then the breakdowns on a stack of their own whose services export
    every span to ``sink``."""
    sink = SpanSink()
    tracing = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": await sink.start(),
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    figures_wanted = not (only_breakdown or only_steps)
    measured: Figures | None = None
    each_step: list[Steps] = []
    steps_cpu: dict[str, float] = {}  # the stack's CPU seconds during them, by kind
    traced: list[Traced] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        p1, p2, p3 = free_port(), free_port(), free_port()
        (tmp / "backends.cfg").write_text(BACKEND_CFG.format(p1=p1, p2=p2, p3=p3))
        backends = subprocess.Popen(["haproxy", "-db", "-f", str(tmp / "backends.cfg")])
        vips = Vips()  # one for both stacks: no VIP is used twice
        try:
            async with aiohttp.ClientSession() as session:
                if only_burst_ or figures_wanted:
                    figures_env = tracing if traced_figures else {}
                    async with bench_stack(session, figures_env) as (api, s):
                        if only_burst_:
                            await only_burst(api, s, vips, spares, traced_figures)
                            return
                        measured = await figures(api, s, vips, (p1, p2, p3), tmp, spares)
                async with bench_stack(session, tracing) as (api, s):
                    start_provisioner(s, spares)
                    for _ in range(0 if only_breakdown else samples):
                        await wait_spares(s, spares)
                        before = stack_cpu_seconds(s)
                        each_step.append(await step_by_step(api, vips, [p1, p2]))
                        for kind, used in stack_cpu_seconds(s).items():
                            steps_cpu[kind] = steps_cpu.get(kind, 0.0) + used - before.get(kind, 0)
                    for _ in range(0 if only_steps else samples):
                        # A full pool: no spare boots beside the create that is measured.
                        await wait_spares(s, spares)
                        traced.append(await traced_create(api, sink, vips, [p1]))
                    parts = await steps_breakdown(sink, each_step)
                    database = await commit_floor(s)
                floor = await haproxy_floor(tmp, free_port())
        finally:
            backends.terminate()
            backends.wait()
            await sink.stop()
    print("Fulcrum provisioning benchmark (process driver, 2-core box, loopback)")
    if measured is not None:
        print_figures(measured, traced_figures)
    print("  the breakdowns below: a stack of their own whose services export every span (OTLP)")
    if traced:
        print_breakdown(traced, floor)
    if each_step:
        print_steps(each_step, parts, floor, database, steps_cpu)
    if timeline and traced:
        print_timeline(traced)
    if timeline and each_step:
        print_step_timeline(sink, each_step)


def print_figures(f: Figures, traced: bool) -> None:
    """Issue 20's four create-path figures with their goals and Octavia's beside, then the
    other figures (``traced``: the services exported their spans)."""
    rows = [
        ("POST bare LB -> ACTIVE (spare)", pct(f.bare, 0.5), "ms", 50, 433),
        ("step by step: LB, listener, pool, 2 members, HM", pct(f.steps, 0.5), "ms", 180, 1744),
        ("graph create -> ACTIVE+serving (spare)", pct(f.warm, 0.5), "ms", 100, 1014),
        (f"{FLEET} bare LBs at c={FLEET_CONCURRENCY} -> all ACTIVE", f.fleet, "s", 1, 10.2),
        ("member add -> serving", pct(f.live, 0.5), "ms", 100, 360),
    ]
    print(
        f"  load average {f.load:.1f} on {os.cpu_count()} cores; spare pool {f.spares} "
        f"(the deployment's: {SPARE_POOL_SIZE}), full before each warm sample and the burst; "
        f"{_SPANS[traced]}"
    )
    print(f"  {'figure (p50)':<50} {'Fulcrum':>9} {'goal':>7} {'Octavia':>8} {'ratio':>6}")
    for name, value, unit, goal, octavia in rows:
        verdict = "met" if value <= goal else "MISSED"
        print(
            f"  {name:<50} {value:6.{2 if unit == 's' else 0}f} {unit:<2} <= {goal:<4} "
            f"{octavia:6} {unit:<2} {octavia / value:4.1f}x  {verdict}"
        )
    print(
        f"  without a goal: graph create cold boot p50 {pct(f.cold, 0.5):.0f} ms "
        f"p95 {pct(f.cold, 0.95):.0f} ms; the graph create with a spare p95 "
        f"{pct(f.warm, 0.95):.0f} ms; POST bare LB p95 {pct(f.bare, 0.95):.0f} ms; "
        f"{FLEET} bare LBs with no spares (cold boots) {f.cold_fleet:.2f} s"
    )
    for name, cpu in (("with the spare pool", f.fleet_cpu), ("with cold boots", f.cold_cpu)):
        kinds = ", ".join(
            f"{k} {v * 1000:.0f}" for k, v in sorted(cpu.items(), key=lambda x: -x[1])
        )
        print(
            f"  the stack's CPU per bare LB of the burst {name}: "
            f"{sum(cpu.values()) * 1000:.0f} ms ({kinds}; Octavia no-op: 470 ms per create)"
        )
    per_step = ", ".join(
        f"{name} {statistics.median(one.seconds[i] for one in f.each_step) * 1000:.0f}"
        for i, name in enumerate(STEP_NAMES)
    )
    print(f"  step by step, p50 of each step (ms): {per_step}")
    print(
        f"  requests/s: through LB {f.through_lb:8.0f}  hand-written {f.by_hand:8.0f}  "
        f"direct {f.direct:8.0f}"
    )
    ratio = f.through_lb / f.by_hand
    print(
        f"  ratio LB / hand-written: {ratio:5.2f}x   goal >= 0.90x  "
        f"{'met' if ratio >= 0.9 else 'MISSED'}"
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


def print_steps(
    each: list[Steps],
    parts: list[list[dict[str, float]]],
    floor: tuple[list[float], list[float]],
    database: tuple[float, float],
    cpu: dict[str, float],
) -> None:
    """The step-by-step create: p50 of each step and of each part of it (``step_breakdown``),
    then how much of it is HAProxy's own work: the listener's step starts HAProxy, the pool's
    and the monitor's reload it (the LB's and the members' run none); the API's commit
    beside Postgres's own (``commit_floor``); and the stack's CPU per create (``cpu``: seconds
    by kind over all of them, the spare pool's refill boots included when they overlap)."""
    print(
        f"  step by step, p50 of {len(each)} (ms; the client GETs the LB every 5 ms), "
        f"load average {os.getloadavg()[0]:.1f}:"
    )
    print(f"    {'step':<16} {'total':>6} " + " ".join(f"{p[:14]:>14}" for p in STEP_PARTS))
    for i, name in enumerate(STEP_NAMES):
        total = statistics.median(one.seconds[i] for one in each) * 1000
        cells = ""
        if i < len(STEP_NAMES) - 1:
            cells = " ".join(
                f"{statistics.median(one[i][p] for one in parts):14.1f}" for p in STEP_PARTS
            )
        print(f"    {name:<16} {total:6.1f} {cells}")
    start, reload = pct(floor[0], 0.5), pct(floor[1], 0.5)
    haproxy = start + 2 * reload
    total = pct([sum(one.seconds) for one in each], 0.5)
    print(
        f"  step by step p50 {total:.0f} ms: HAProxy's floor (a start {start:.0f} and two reloads "
        f"of {reload:.0f}) "
        f"{haproxy:.0f} ms, the rest {total - haproxy:.0f} ms "
        f"({(total - haproxy) / (len(STEP_NAMES) - 1):.0f} ms per step); goal <= 180"
    )
    if all("load" in part for one in parts for part in one[1:]):
        print(
            f"    the API's commit of a child, p50 (ms): {'':<4}"
            + " ".join(f"{p:>14}" for p in API_PARTS)
        )
        for i, name in enumerate(STEP_NAMES[1:-1], start=1):
            cells = " ".join(
                f"{statistics.median(one[i][p] for one in parts):14.1f}" for p in API_PARTS
            )
            print(f"    {name:<16} {'':<22} {cells}")
    api = statistics.median(part["API commit"] for one in parts for part in one[1:])
    commit, trip = database
    print(
        f"  the API's commit of a child (POST to answer) p50 {api:.1f} ms; on the same Postgres "
        f"a bare INSERT+COMMIT takes {commit * 1000:.2f} ms and a round trip "
        f"{trip * 1000:.2f} ms"
    )
    per_create = {k: v / len(each) for k, v in sorted(cpu.items(), key=lambda x: -x[1])}
    kinds = ", ".join(f"{k} {v * 1000:.1f}" for k, v in per_create.items())
    print(
        f"  the stack's CPU per step-by-step create (schedstat): "
        f"{sum(per_create.values()) * 1000:.0f} ms ({kinds})"
    )


def print_timeline(traced: list[Traced]) -> None:
    """Every span of the median traced create: start and length in ms after the POST."""
    _, total, spans, posted = sorted(traced, key=lambda t: t[1])[len(traced) // 2]
    print(f"  spans of the median traced create ({total:.1f} ms), ms after the POST:")
    print_spans(spans, posted)


def print_step_timeline(sink: SpanSink, each: list[Steps]) -> None:
    """Every span of each step of the median step-by-step create, in ms after its POST."""
    median = sorted(each, key=lambda one: sum(one.seconds))[len(each) // 2]
    for name, step in zip(STEP_NAMES, median.traces, strict=False):
        seen = (step.seen - step.posted) / 1e6
        print(f"  spans of the step {name} of the median step-by-step create ({seen:.1f} ms):")
        print_spans(sink.of(step.trace_id), step.posted)


def print_spans(spans: list[Span], posted: int) -> None:
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
        "--only-steps",
        action="store_true",
        help="only step-by-step creates (--samples of them), each step's breakdown and the floor",
    )
    parser.add_argument(
        "--only-burst",
        action="store_true",
        help=f"only the burst of {FLEET} bare LBs at c={FLEET_CONCURRENCY}, the spare pool full",
    )
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="also print every span of the median traced create and of each step of the "
        "median step-by-step create",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=BREAKDOWN_SAMPLES,
        help="traced creates and traced step-by-step creates in the breakdowns "
        f"(default {BREAKDOWN_SAMPLES})",
    )
    parser.add_argument(
        "--traced",
        action="store_true",
        help="the figures' services export their spans too, as the breakdowns' do (by default "
        "they do not, as `fulcrum up` deploys them)",
    )
    parser.add_argument(
        "--spares",
        type=int,
        default=SPARE_POOL_SIZE,
        help=f"the spare pool of the warm figures (default {SPARE_POOL_SIZE}: the deployment's)",
    )
    args = parser.parse_args()
    if args.spares < 1:
        parser.error("--spares must be at least 1")
    if sum((args.only_breakdown, args.only_steps, args.only_burst)) > 1:
        parser.error("--only-breakdown, --only-steps and --only-burst exclude each other")
    if args.samples < 1:
        parser.error("--samples must be at least 1")
    asyncio.run(
        main(
            args.only_breakdown,
            args.only_steps,
            args.only_burst,
            args.timeline,
            args.samples,
            args.spares,
            args.traced,
        )
    )
