"""API benchmark: latency and throughput of the Octavia API on loopback.

Starts its own Postgres and NATS (embedded) and the API as its own process
(``python -m services.api``, access log off), then measures with bounded counts:
- POST a load balancer: p50 / p95 (150 creates, which also fill the list below),
- GET one load balancer: p50 and req/s at concurrency 1, req/s at concurrency 8
  (with ``wrk`` when installed, else an aiohttp client),
- GET the list of 150 load balancers: p50.
Goals on a 2-core box: GET p50 <= 2 ms, >= 1500 req/s at c=8, list-150 p50 <= 10 ms,
POST p50 <= 10 ms. Run: .venv/bin/python bench/bench_api.py
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres, create_database

SUBNET = "6a3b9c3e-5f2d-4c1a-9b7e-1f0d2c3b4a51"
LB_COUNT = 150
GET_COUNT = 2000
LIST_COUNT = 200
C8_SECONDS = 5
C8_REQUESTS = 8 * 1500


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def wait_ready(
    session: aiohttp.ClientSession, base: str, proc: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"API exited with {proc.returncode}")
        try:
            async with session.get(f"{base}/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("API did not start within 60 s")


async def timed(
    session: aiohttp.ClientSession, method: str, url: str, body: bytes | None = None
) -> float:
    start = time.perf_counter()
    async with session.request(
        method, url, data=body, headers={"Content-Type": "application/json"}
    ) as resp:
        await resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {url}: {resp.status}")
    return time.perf_counter() - start


async def throughput_aiohttp(url: str, concurrency: int, total: int) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        per = total // concurrency

        async def worker() -> None:
            for _ in range(per):
                async with session.get(url) as resp:
                    await resp.read()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return per * concurrency / (time.perf_counter() - start)


def throughput_wrk(url: str, concurrency: int, seconds: int) -> float | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    out = subprocess.run(
        [wrk, "-t2", f"-c{concurrency}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"wrk saw errors: {out}")
    return float(match.group(1)) if match else None


async def measure(base: str) -> dict[str, float | str]:
    lbs = f"{base}/v2.0/lbaas/loadbalancers"
    results: dict[str, float | str] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        body = b'{"loadbalancer": {"vip_subnet_id": "%s", "name": "bench"}}' % SUBNET.encode()
        for _ in range(5):  # warm-up (connections, statement caches)
            await timed(session, "GET", lbs + "?limit=1")
        post = [await timed(session, "POST", lbs, body) for _ in range(LB_COUNT)]
        results["post_p50"], results["post_p95"] = pct(post, 0.5), pct(post, 0.95)
        async with session.get(lbs + "?limit=1") as resp:
            lb_id = (await resp.json())["loadbalancers"][0]["id"]
        one = f"{lbs}/{lb_id}"
        for _ in range(50):
            await timed(session, "GET", one)
        start = time.perf_counter()
        gets = [await timed(session, "GET", one) for _ in range(GET_COUNT)]
        results["get_rps_c1"] = GET_COUNT / (time.perf_counter() - start)
        results["get_p50"], results["get_p95"] = pct(gets, 0.5), pct(gets, 0.95)
        async with session.get(lbs) as resp:
            assert len((await resp.json())["loadbalancers"]) == LB_COUNT
        lists = [await timed(session, "GET", lbs) for _ in range(LIST_COUNT)]
        results["list_p50"], results["list_p95"] = pct(lists, 0.5), pct(lists, 0.95)
    wrk = throughput_wrk(one, 8, C8_SECONDS)
    if wrk is not None:
        results["get_rps_c8"], results["c8_client"] = wrk, "wrk -t2 -c8"
    else:
        results["get_rps_c8"] = await throughput_aiohttp(one, 8, C8_REQUESTS)
        results["c8_client"] = "aiohttp, 8 workers"
    return results


def start_api(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """The API as its own process, as ``fulcrum up`` runs it."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "services.api"], env=env, stdout=log, stderr=subprocess.STDOUT
        )


def report(r: dict[str, float | str]) -> None:
    def line(label: str, value: str, goal: str = "") -> None:
        print(f"  {label:<30} : {value}{'   goal ' + goal if goal else ''}")

    print("Fulcrum API benchmark (loopback; API in its own process, access log off)")
    line(
        "POST loadbalancer p50 / p95",
        f"{r['post_p50']:6.2f} ms / {r['post_p95']:6.2f} ms",
        "p50 <= 10 ms",
    )
    line(
        "GET one LB p50 / p95 (c=1)",
        f"{r['get_p50']:6.2f} ms / {r['get_p95']:6.2f} ms",
        "p50 <= 2 ms",
    )
    line("GET one LB req/s, c=1", f"{r['get_rps_c1']:8.0f}")
    line("GET one LB req/s, c=8", f"{r['get_rps_c8']:8.0f} ({r['c8_client']})", ">= 1500")
    line(
        f"GET list of {LB_COUNT} LBs p50 / p95",
        f"{r['list_p50']:6.2f} ms / {r['list_p95']:6.2f} ms",
        "p50 <= 10 ms",
    )
    line(
        "ratios to goal (>1 is better)",
        f"POST {10 / float(r['post_p50']):.2f}x, GET {2 / float(r['get_p50']):.2f}x, "
        f"c=8 {float(r['get_rps_c8']) / 1500:.2f}x, list {10 / float(r['list_p50']):.2f}x",
    )


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fulcrum-bench-api-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        nats_server = EmbeddedNats(Path(tmp) / "nats")
        proc: subprocess.Popen[bytes] | None = None
        try:
            admin = pg.start()
            url = nats_server.start()
            dsn = await create_database(admin, "bench_api")
            port = free_port()
            env = {
                **os.environ,
                "FULCRUM_API_POSTGRES__DSN": dsn,
                "FULCRUM_API_NATS__URL": url,
                "FULCRUM_API_PORT": str(port),
                "FULCRUM_API_ACCESS_LOG": "false",
                "FULCRUM_API_AUTH_STRATEGY": "noauth",
            }
            proc = start_api(env, Path(tmp) / "api.log")
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as session:
                await wait_ready(session, base, proc)
            r = await measure(base)
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            nats_server.stop()
            pg.stop()
    report(r)


if __name__ == "__main__":
    asyncio.run(main())
