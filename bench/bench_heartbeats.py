"""Health service benchmark: heartbeats/s processed from simulated amphorae over loopback UDP.

Starts its own Postgres and NATS (embedded, loopback), records 500 load balancers with one
amphora each (listener, pool, two members) plus 1,500 spare amphorae through the repositories,
then runs ``python -m services.health`` as its own process. A sender process (the other core)
replays pre-encoded, validly signed v3 heartbeats of those 2,000 amphorae, paced at rising
rates for a bounded time each, then flat out. A heartbeat counts as processed when the service
accepted it (MAC, seq, known amphora) and it went through the roll-up and the batched writers;
the last-seen and stats tables are checked to hold the result afterwards.
Goal on this 2-core box: >= 10,000 heartbeats/s. Run: .venv/bin/python bench/bench_heartbeats.py

``--idle-amphorae N --seconds S`` measures the idle fleet instead (issue 20): N load balancers
with one amphora each, every amphora beating once a second as an idle agent does (the agent's
own message, zero deltas, ``seq`` its wall-clock milliseconds, beats spread over the second),
and prints the cores the health service and its Postgres used over S seconds (every thread's
run time from schedstat, as bench_fleet reads it; Postgres split into health's backends and the
rest). Each service is measured once no status is being recorded (the first run, unmeasured,
records the fresh database's first statuses) and its ``/metrics`` is read outside the CPU
window. ``--compare DIR`` runs the health service of
another checkout (e.g. ``git archive main`` unpacked) alternately with this one's, ``--rounds``
times each, against the same database and sender: old and new in one window. (Issue 20's goal, the whole idle control plane <= 0.1 core
at 1,000 amphorae, is bench_fleet's to check.)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import zlib
from contextlib import suppress
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402

from bench._harness import (  # noqa: E402
    children,
    cpu_seconds,
    lb_tree,
    postgres_roles,
    with_application_name,
)
from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres, create_database  # noqa: E402
from libs.common import heartbeat_codec as codec  # noqa: E402
from libs.common.database import create_pool  # noqa: E402
from libs.common.domain import commands as c  # noqa: E402
from libs.common.domain.model import HealthMonitor  # noqa: E402
from libs.common.events import Metadata  # noqa: E402
from libs.common.events.amphora import AmphoraBooted  # noqa: E402
from libs.common.eventstore import PostgresEventStore  # noqa: E402
from libs.common.repository import AmphoraRepository, LoadBalancerRepository  # noqa: E402
from libs.common.schema import upgrade  # noqa: E402
from libs.common.settings import PostgresSettings  # noqa: E402
from services.amphora.heartbeat import build_message  # noqa: E402

KEY = "bench-heartbeat-key"
LBS, SPARES = 500, 1500
PHASE_SECONDS = 3.0
FLAT_OUT_BUDGET = 40_000  # datagrams/s pre-encoded for the flat-out phase
RATES = (5_000, 10_000, 15_000, 20_000, 25_000, 30_000)
GOAL = 10_000
META = Metadata(actor="bench")
REPO = Path(__file__).resolve().parents[1]


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def record_fleet(
    pool: asyncpg.Pool, lb_count: int = LBS, spare_count: int = SPARES
) -> list[dict[str, Any]]:
    """LBs with one amphora each, and spares; returns the shape each amphora reports."""
    store = PostgresEventStore(pool)
    lbs, amps = LoadBalancerRepository(store), AmphoraRepository(store)
    now = datetime.datetime.now(datetime.UTC)
    fleet: list[dict[str, Any]] = []
    common = {"project_id": "bench", "created_at": now}

    async def one_lb(i: int) -> None:
        tree = lb_tree(f"127.78.{i // 250}.{i % 250 + 1}", now)
        lb, listener, pool_, members = tree.loadbalancer, tree.listener, tree.pool, tree.members
        monitor = HealthMonitor(
            id=str(uuid.uuid4()),
            pool_id=pool_.id,
            type="TCP",
            delay=1,
            timeout=1,
            max_retries=1,
            **common,
        )
        await lbs.execute(
            lb.id,
            c.CreateLoadBalancer(
                lb,
                listeners=(listener,),
                pools=(pool_,),
                members=members,
                healthmonitors=(monitor,),
            ),
            META,
        )
        amphora_id = str(uuid.uuid4())
        await amps.record(amphora_id, [_booted(amphora_id, lb.id)], META)
        await lbs.execute(lb.id, c.Activate((amphora_id,)), META)
        fleet.append(
            {
                "id": amphora_id,
                "listener": listener.id,
                "pool": pool_.id,
                "members": [m.id for m in members],
            }
        )

    async def one_spare() -> None:
        amphora_id = str(uuid.uuid4())
        await amps.record(amphora_id, [_booted(amphora_id, None)], META)
        fleet.append({"id": amphora_id})

    sem = asyncio.Semaphore(16)

    async def bounded(coro: Any) -> None:
        async with sem:
            await coro

    await asyncio.gather(*(bounded(one_lb(i)) for i in range(lb_count)))
    await asyncio.gather(*(bounded(one_spare()) for _ in range(spare_count)))
    return fleet


def _booted(amphora_id: str, lb_id: str | None) -> AmphoraBooted:
    return AmphoraBooted(
        amphora_id=amphora_id,
        driver="bench",
        compute_id="0",
        agent_url="https://127.0.0.1:1",
        loadbalancer_id=lb_id,
    )


def message(amp: dict[str, Any], seq: int) -> dict[str, Any]:
    if "listener" not in amp:
        return {"id": amp["id"], "seq": seq, "ver": 3, "listeners": {}, "pools": {}}
    stats = {"rx": 1200, "tx": 5400, "conns": seq % 7, "totconns": 3, "ereq": 0}
    return {
        "id": amp["id"],
        "seq": seq,
        "ver": 3,
        "listeners": {amp["listener"]: {"status": "OPEN", "stats": stats}},
        "pools": {
            f"{amp['pool']}:{amp['listener']}": {
                "status": "UP",
                "members": {m: "UP" for m in amp["members"]},
            }
        },
    }


def encode_fast(body: dict[str, Any], key: bytes) -> bytes:
    """The wire format with zlib level 1 (the sender's CPU is not what is measured)."""
    compressed = zlib.compress(json.dumps(body, separators=(",", ":")).encode(), 1)
    return compressed + codec.sign(compressed, key)


def send(fleet: list[dict[str, Any]], port: int, rounds: int, conn: Connection) -> None:
    """Sender process: pre-encodes ``rounds`` heartbeats per amphora (seq growing by one per
    round), says "ready", then for each (rate, seconds) it is sent, sends round-robin at that
    rate (0: as fast as the socket takes them) and answers with the count sent."""
    key = KEY.encode()
    datagrams = [encode_fast(message(a, seq), key) for seq in range(1, rounds + 1) for a in fleet]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    address = ("127.0.0.1", port)
    i = 0
    conn.send("ready")
    while (order := conn.recv()) is not None:
        rate, seconds = order
        start = time.perf_counter()
        end = start + seconds
        sent = 0
        while (now := time.perf_counter()) < end and i < len(datagrams):
            due = int((now - start) * rate) if rate else sent + 256
            while sent < due and i < len(datagrams):
                try:
                    sock.sendto(datagrams[i], address)
                except BlockingIOError:
                    break
                i += 1
                sent += 1
            if rate:
                time.sleep(0.0005)
        conn.send(sent)
    sock.close()


async def measure(
    sender: Sender, http_port: int, rate: int, seconds: float
) -> tuple[int, float, float, float]:
    """One phase: the processing rate is read off the service's own counter while the sender
    runs (0.5 s in, to the end); losses are counted after the socket has drained."""
    before = metrics(http_port)["heartbeats_accepted_total"]
    task = asyncio.create_task(sender.phase(rate, seconds))
    await asyncio.sleep(0.5)
    t0, first = time.perf_counter(), metrics(http_port)["heartbeats_accepted_total"]
    await asyncio.sleep(seconds - 0.7)
    t1, last = time.perf_counter(), metrics(http_port)["heartbeats_accepted_total"]
    sent = await task
    await asyncio.sleep(1.0)  # drain
    after = metrics(http_port)["heartbeats_accepted_total"]
    return rate, (last - first) / (t1 - t0), float(sent), after - before


def metrics(http_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name.removeprefix("fulcrum_health_")] = float(value)
    return out


async def wait_http(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"health exited with {proc.returncode}")
        try:
            metrics(port)
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError("health did not answer")


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fulcrum-bench-hb-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        nats_server = EmbeddedNats(Path(tmp) / "nats")
        proc: subprocess.Popen[bytes] | None = None
        try:
            admin = pg.start()
            url = nats_server.start()
            dsn = await create_database(admin, "bench")
            pool = await create_pool(PostgresSettings(dsn=dsn, max_pool=20))
            await upgrade(pool)
            started = time.perf_counter()
            fleet = await record_fleet(pool)
            print(f"recorded {LBS} LBs + {SPARES} spares in {time.perf_counter() - started:.1f} s")
            udp_port, http_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
            env = {
                **os.environ,
                "FULCRUM_HEALTH_POSTGRES__DSN": dsn,
                "FULCRUM_HEALTH_NATS__URL": url,
                "FULCRUM_HEALTH_HEARTBEAT_KEY": KEY,
                "FULCRUM_HEALTH_UDP_PORT": str(udp_port),
                "FULCRUM_HEALTH_PORT": str(http_port),
                # The bench measures intake; nothing should be failed over meanwhile.
                "FULCRUM_HEALTH_HEARTBEAT_TIMEOUT": "300",
                "FULCRUM_HEALTH_STALE_GRACE": "300",
            }
            log = open(Path(tmp) / "health.log", "wb")
            proc = subprocess.Popen(  # noqa: ASYNC220 (started once, before measuring)
                [sys.executable, "-m", "services.health"],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            await wait_http(http_port, proc)
            results: list[tuple[int, float, float, float]] = []

            schedule = [(rate, PHASE_SECONDS) for rate in RATES] + [(0, PHASE_SECONDS)]
            rounds = int(sum((r or FLAT_OUT_BUDGET) * t for r, t in schedule) / len(fleet)) + 2
            sender = Sender(fleet, udp_port, rounds)
            try:
                await sender.ready()
                # Warm-up: every amphora once: caches load and first statuses are recorded.
                await sender.phase(2000, len(fleet) / 2000)
                await asyncio.sleep(2.0)
                base = metrics(http_port)
                for rate, seconds in schedule:
                    results.append(await measure(sender, http_port, rate, seconds))
            finally:
                sender.close()
            await asyncio.sleep(1.0)
            final = metrics(http_port)
            heard = await pool.fetchval("SELECT count(*) FROM amphora_health")
            stats_rows = await pool.fetchval("SELECT count(*) FROM listener_stats")
            total_conns = await pool.fetchval("SELECT sum(total_connections) FROM listener_stats")
            status_events = await pool.fetchval(
                "SELECT count(*) FROM events WHERE event_type = 'OperatingStatusChanged'"
            )
            await pool.close()
        finally:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)
            nats_server.stop()
            pg.stop()

    print("Fulcrum health benchmark (2-core box; sender and health service in separate processes)")
    print(f"  amphorae: {len(fleet)} ({LBS} serving an LB with 1 listener, 1 pool, 2 members)")
    for rate, per_second, sent, accepted in results:
        offered = f"{rate:6d}/s" if rate else "flat out"
        lost = 1 - accepted / sent if sent else 0.0
        print(
            f"  offered {offered}: processed {per_second:8.0f} heartbeats/s "
            f"({sent:.0f} sent, {accepted:.0f} accepted, {lost:.1%} lost in the kernel)"
        )
    best = max(r[1] for r in results)
    lossless = max((r[1] for r in results if r[2] and r[3] / r[2] > 0.99), default=0.0)
    print(f"  best processed rate             : {best:8.0f} heartbeats/s   goal >= {GOAL}")
    print(f"  best with < 1% lost             : {lossless:8.0f} heartbeats/s")
    print(f"  ratio best / goal               : {best / GOAL:5.2f}x")
    flushes = final["flushes_total"] - base["flushes_total"]
    print(
        f"  writes: {final['last_seen_rows_total']:.0f} last-seen rows and "
        f"{final['stats_rows_total']:.0f} stats rows in {final['flushes_total']:.0f} flushes "
        f"({flushes:.0f} while measuring; one statement per table per flush)"
    )
    print(
        f"  tables: {heard} amphora_health rows, {stats_rows} listener_stats rows "
        f"(sum total_connections {total_conns}); {status_events} OperatingStatusChanged "
        f"events (one per LB at warm-up, none per heartbeat)"
    )
    dropped = {k: v for k, v in final.items() if k.startswith("heartbeats_dropped") and v}
    print(f"  dropped by the service: {dropped or 'none'}")


class Sender:
    """The sender process, driven phase by phase over a pipe."""

    def __init__(self, fleet: list[dict[str, Any]], port: int, rounds: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=send, args=(fleet, port, rounds, child))
        self._process.start()

    async def _recv(self) -> Any:
        while not self._conn.poll():
            if not self._process.is_alive():
                raise RuntimeError("sender died")
            await asyncio.sleep(0.02)
        return self._conn.recv()

    async def ready(self) -> None:
        assert await self._recv() == "ready"

    async def phase(self, rate: int, seconds: float) -> int:
        self._conn.send((rate, seconds))
        sent: int = await self._recv()
        return sent

    def close(self) -> None:
        if self._process.is_alive():
            self._conn.send(None)
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()


IDLE_WARMUP = 6.0  # seconds after a health service has settled before its CPU is read
# Polls without a recorded status for a service to count as settled: a measured one, and the
# unmeasured first run, which records every LB's first statuses.
IDLE_QUIET, PRIME_QUIET = 1, 3
SETTLE_POLL, SETTLE_LIMIT = 3.0, 300.0
IDLE_CPU = 0.0003  # the cores an idle amphora's HAProxy reports (the agent's ``cpu``)


def idle_rows(amp: dict[str, Any]) -> list[dict[str, Any]]:
    """``show stat`` of an idle amphora's HAProxy: the counters stand still beat after beat."""
    backend = f"{amp['pool']}:{amp['listener']}"
    counters = {"bin": 1200, "bout": 5400, "stot": 3, "ereq": 0, "eresp": 0, "scur": 0}
    rows: list[dict[str, Any]] = [
        {"type": 0, "pxname": amp["listener"], "svname": "FRONTEND", "status": "OPEN", **counters},
        {"type": 1, "pxname": backend, "svname": "BACKEND", "status": "UP", **counters},
    ]
    rows += [
        {"type": 2, "pxname": backend, "svname": m, "status": "UP", "weight": 1, **counters}
        for m in amp["members"]
    ]
    return rows


def idle_message(amp: dict[str, Any]) -> dict[str, Any]:
    """The agent's message for an idle amphora (its second beat on: zero deltas)."""
    rows = idle_rows(amp)
    _, baseline = build_message(amp["id"], 0, rows, {})
    message, _ = build_message(amp["id"], 0, rows, baseline)
    return message | {"cpu": IDLE_CPU}


def send_idle(fleet: list[dict[str, Any]], port: int, deadline: float, conn: Connection) -> None:
    """Sender process: every amphora beats once a second (amphora i at i/N into each second),
    signed as the agent signs, ``seq`` the wall clock in ms, until told to stop over ``conn``
    or past ``deadline`` (time.time())."""
    key = KEY.encode()
    messages = [idle_message(a) for a in fleet]
    last = [0] * len(fleet)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    address = ("127.0.0.1", port)
    start = time.monotonic()
    beats = 0  # beats due so far, over the whole fleet
    conn.send("ready")
    while time.time() < deadline and not conn.poll():
        due = int((time.monotonic() - start) * len(fleet))
        while beats < due:
            i = beats % len(fleet)
            seq = last[i] = max(last[i] + 1, time.time_ns() // 1_000_000)
            with suppress(OSError):  # no receiver between two health runs
                sock.sendto(codec.encode(messages[i] | {"seq": seq}, key), address)
            beats += 1
        time.sleep(0.002)
    sock.close()


async def cpu_snapshot(pids: dict[str, int | None], pg_dsn: str) -> dict[int, tuple[str, float]]:
    """CPU seconds of the health service, NATS, and every Postgres process by the service it
    serves (``postgres: health``) or its kind."""
    groups = {pid: name for name, pid in pids.items() if pid is not None and name != "postgres"}
    postmaster = pids["postgres"]
    if postmaster is not None:
        roles = await postgres_roles(pg_dsn)
        groups[postmaster] = "postgres: other"
        for pid in children(postmaster):
            role = roles.get(pid, "other")
            groups[pid] = "postgres: health" if role == "health" else "postgres: other"
    out = {}
    for pid, group in groups.items():
        used = cpu_seconds(pid)
        if used is not None:
            out[pid] = (group, used)
    return out


def cores(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], seconds: float
) -> dict[str, float]:
    used: dict[str, float] = {}
    for pid, (group, now) in after.items():
        used[group] = used.get(group, 0.0) + max(0.0, now - before.get(pid, (group, 0.0))[1])
    return {group: u / seconds for group, u in used.items()}


async def settle(proc: subprocess.Popen[bytes], dsn: str, quiet: int) -> None:
    """Wait until no operating status has been recorded over ``quiet`` polls in a row, one
    every ``SETTLE_POLL`` s (at most ``SETTLE_LIMIT`` s): a fresh database's first statuses
    take a minute at 1,000 LBs, which is not the idle cost. Read from the database: a scrape
    of the service at 1,000 LBs costs it ~0.25 s of CPU and, on a loaded box, stalled its
    loop long enough to fail the fleet over."""
    deadline = time.monotonic() + SETTLE_LIMIT
    recorded, still = -1, 0
    conn = await asyncpg.connect(with_application_name(dsn, "bench"))
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"health exited with {proc.returncode}")
            now = await conn.fetchval(
                "SELECT count(*) FROM events WHERE event_type = 'OperatingStatusChanged'"
            )
            recorded, still = now, 0 if now != recorded else still + 1
            if still >= quiet:
                return
            await asyncio.sleep(SETTLE_POLL)
    finally:
        await conn.close()
    print(f"  (not settled after {SETTLE_LIMIT:.0f} s: measuring anyway)", flush=True)


async def idle_run(
    label: str,
    checkout: Path,
    env: dict[str, str],
    pids: dict[str, int | None],
    dsn: str,
    http_port: int,
    seconds: float,
    log_dir: Path,
    quiet: int = IDLE_QUIET,
) -> dict[str, float]:
    """One health service of ``checkout`` on the idle fleet: its cores by group over
    ``seconds``, with what it counted meanwhile. Its ``/metrics`` is read before the warm-up
    and after the CPU window, not in it (a scrape at 1,000 LBs costs the service ~0.25 s of
    CPU); the warm-up also lets a new process load its cache of LBs."""
    log = open(log_dir / f"health-{label}.log", "ab")
    proc = subprocess.Popen(  # noqa: ASYNC220 (started between measurements)
        [sys.executable, "-m", "services.health"],
        env={**env, "PYTHONPATH": str(checkout)},
        cwd=checkout,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        await wait_http(http_port, proc)
        await settle(proc, dsn, quiet)
        counted, c0 = metrics(http_port), time.monotonic()
        await asyncio.sleep(IDLE_WARMUP)
        pids = {**pids, "health": proc.pid}
        first, t0 = await cpu_snapshot(pids, dsn), time.monotonic()
        await asyncio.sleep(seconds)
        last, elapsed = await cpu_snapshot(pids, dsn), time.monotonic() - t0
        after, counted_for = metrics(http_port), time.monotonic() - c0
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    use = cores(first, last, elapsed)
    for name in ("heartbeats_accepted_total", "last_seen_rows_total", "amphorae_failed_total"):
        use[name] = (after.get(name, 0.0) - counted.get(name, 0.0)) / counted_for
    return use


async def idle(count: int, seconds: float, compare: Path | None, rounds: int) -> None:
    subjects = [("this", REPO)] + ([("compare", compare)] if compare is not None else [])
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in subjects}
    total = (seconds + IDLE_WARMUP + 30) * len(subjects) * rounds + 2 * SETTLE_LIMIT
    with tempfile.TemporaryDirectory(prefix="fulcrum-bench-idle-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        nats_server = EmbeddedNats(Path(tmp) / "nats")
        sender: multiprocessing.process.BaseProcess | None = None
        parent: Connection | None = None
        try:
            admin = pg.start()
            url = nats_server.start()
            dsn = await create_database(admin, "bench")
            pool = await create_pool(
                PostgresSettings(dsn=with_application_name(dsn, "bench"), max_pool=20)
            )
            await upgrade(pool)
            started = time.perf_counter()
            fleet = await record_fleet(pool, count, 0)
            await pool.close()
            print(f"recorded {count} LBs in {time.perf_counter() - started:.1f} s")
            udp_port, http_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
            env = {
                **os.environ,
                "FULCRUM_HEALTH_POSTGRES__DSN": with_application_name(dsn, "health"),
                "FULCRUM_HEALTH_NATS__URL": url,
                "FULCRUM_HEALTH_HEARTBEAT_KEY": KEY,
                "FULCRUM_HEALTH_UDP_PORT": str(udp_port),
                "FULCRUM_HEALTH_PORT": str(http_port),
            }
            context = multiprocessing.get_context("spawn")
            parent, child = context.Pipe()
            sender = context.Process(
                target=send_idle, args=(fleet, udp_port, time.time() + total, child)
            )
            sender.start()
            assert parent.recv() == "ready"
            pids = {"postgres": pg.pid, "nats": nats_server.pid}
            # Unmeasured: the first run records every LB's first statuses and stats rows.
            await idle_run("prime", REPO, env, pids, dsn, http_port, 5.0, Path(tmp), PRIME_QUIET)
            for _ in range(rounds):
                for label, checkout in subjects:
                    use = await idle_run(
                        label, checkout, env, pids, dsn, http_port, seconds, Path(tmp)
                    )
                    runs[label].append(use)
                    print(f"  {label:8s} {describe(use)}   ({load()})", flush=True)
        finally:
            if parent is not None:
                parent.send(None)
            if sender is not None:
                sender.join(timeout=10)
                if sender.is_alive():
                    sender.kill()
            nats_server.stop()
            pg.stop()
    print(f"Idle fleet: {count} amphorae at 1 beat/s, {seconds:.0f} s per run, {rounds} round(s)")
    totals = {}
    for label, checkout in subjects:
        mean = {k: sum(r.get(k, 0.0) for r in runs[label]) / rounds for k in runs[label][0]}
        print(f"  {label} ({checkout}), mean: {describe(mean)}")
        totals[label] = mean.get("health", 0.0) + mean.get("postgres: health", 0.0)
    if "compare" in totals and totals["compare"]:
        print(
            f"  ratio this / compare (health + its Postgres): {totals['this'] / totals['compare']:.2f}"
        )


def describe(use: dict[str, float]) -> str:
    health, pg_health = use.get("health", 0.0), use.get("postgres: health", 0.0)
    return (
        f"health {health:.4f} + its Postgres {pg_health:.4f} = {health + pg_health:.4f} cores "
        f"(other Postgres {use.get('postgres: other', 0.0):.4f}, nats {use.get('nats', 0.0):.4f}; "
        f"{use['heartbeats_accepted_total']:.0f} beats/s accepted, "
        f"{use['last_seen_rows_total']:.0f} last-seen rows/s, "
        f"{use['amphorae_failed_total']:.2f} failovers/s)"
    )


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-amphorae", type=int, default=0, help="idle mode: fleet size")
    parser.add_argument("--seconds", type=float, default=30.0, help="idle mode: CPU window")
    parser.add_argument("--compare", type=Path, help="idle mode: another checkout's health")
    parser.add_argument("--rounds", type=int, default=1, help="idle mode: runs of each")
    args = parser.parse_args()
    if args.idle_amphorae and not 1 <= args.idle_amphorae <= 5000:
        parser.error("--idle-amphorae must be between 1 and 5000")
    if not 5 <= args.seconds <= 300 or not 1 <= args.rounds <= 10:
        parser.error("--seconds must be in 5..300 and --rounds in 1..10")
    if args.compare is not None and not (args.compare / "services" / "health").is_dir():
        parser.error(f"--compare {args.compare}: no services/health there")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.idle_amphorae:
        asyncio.run(
            idle(arguments.idle_amphorae, arguments.seconds, arguments.compare, arguments.rounds)
        )
    else:
        asyncio.run(main())
