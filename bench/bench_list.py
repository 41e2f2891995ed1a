"""List benchmark: API list and show latencies with 10 and with 1,000 load balancers.

Starts Postgres and NATS (embedded) and the API alone (noauth, access log off; no provisioner,
so the load balancers stay PENDING_CREATE, which the lists do not care about), creates
load balancers through the API as single-call creates (a listener, a pool, two members) at
concurrency 4, and measures p50s at 10 and at ``--count`` (default 1,000) load balancers:
- GET one load balancer,
- GET the first page of 10 (``?limit=10``),
- GET a page of 10 after a marker in the middle of the fleet,
- GET the first page of 10 with ``fields=id,provisioning_status``,
- GET the whole list, up to the page limit of 1,000 (grows with the fleet by nature; printed for reference),
- and, without HTTP (less exposed to a busy machine), ``PostgresViews.list_page`` for the first
  page of 10 and a page after a marker, with the plan Postgres picks for the first page.
Goal (issue 20): a page's and a show's p50 at size within 1.2x of the same at 10 LBs.
Run: .venv/bin/python bench/bench_list.py [--count N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402

from bench._harness import Api, Vips, free_port, graph, pct, stack, wait_http  # noqa: E402
from deploy.local.embedded import create_database  # noqa: E402
from services.api.adapters.views import PostgresViews  # noqa: E402
from services.api.domain.kinds import KINDS  # noqa: E402
from services.api.domain.queries import ListQuery  # noqa: E402

SMALL = 10
CONCURRENCY = 4
SAMPLES = 200
SETTLE = 3.0  # seconds for the API's outbox relay to publish what the creates recorded
GOAL_RATIO = 1.2
Figures = dict[str, float]
ORDERED_SQL = "SELECT id FROM loadbalancer_view ORDER BY created_at, id"


async def create(api: Api, vips: Vips, count: int) -> list[str]:
    """``count`` single-call creates at ``CONCURRENCY``; their ids in creation order."""
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one() -> str:
        async with sem:
            body = graph(vips.next(), 80, [8000, 8001])
            lb = (await api.post("/v2/lbaas/loadbalancers", body))["loadbalancer"]
            return str(lb["id"])

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def measure(api: Api, lb_ids: list[str], dsn: str) -> Figures:
    """p50 in ms of each request of the module docstring."""

    async def p50(url: str) -> float:
        for _ in range(10):  # warm-up: connections, statement caches
            async with api.s.get(url) as resp:
                await resp.read()
        samples = []
        for _ in range(SAMPLES):
            started = time.perf_counter()
            async with api.s.get(url) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            samples.append(time.perf_counter() - started)
        return pct(samples, 0.5)

    base = f"{api.base}/v2/lbaas/loadbalancers"
    conn = await asyncpg.connect(dsn)
    try:
        ordered = [r["id"] for r in await conn.fetch(ORDERED_SQL)]
    finally:
        await conn.close()
    assert len(ordered) == len(lb_ids), (len(ordered), len(lb_ids))
    middle = ordered[len(ordered) // 2]
    return {
        "show": await p50(f"{base}/{lb_ids[len(lb_ids) // 2]}"),
        "first page of 10": await p50(f"{base}?limit=10"),
        "page of 10 after a marker": await p50(f"{base}?limit=10&marker={middle}"),
        "page of 10, two fields": await p50(f"{base}?limit=10&fields=id,provisioning_status"),
        "whole list": await p50(base),
        **await adapter(dsn, middle),
    }


async def adapter(dsn: str, marker: str) -> Figures:
    """p50 in ms of ``list_page`` called directly; prints the first page's plan (top node)."""
    first = ListQuery(kind=KINDS["loadbalancer"], limit=10)
    after = ListQuery(kind=KINDS["loadbalancer"], limit=10, marker=marker)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        views = PostgresViews(pool)
        figures: Figures = {}
        for name, query in (("adapter: first page", first), ("adapter: after marker", after)):
            for _ in range(10):
                await views.list_page(query)
            samples = []
            for _ in range(SAMPLES):
                started = time.perf_counter()
                await views.list_page(query)
                samples.append(time.perf_counter() - started)
            figures[name] = pct(samples, 0.5)
        plan = await pool.fetch(
            "EXPLAIN SELECT id, body FROM loadbalancer_view "
            "WHERE body->>'provisioning_status' <> 'DELETED' ORDER BY created_at, id LIMIT 10"
        )
        print("  plan of the first page:", " / ".join(r[0].split("  (")[0].strip() for r in plan))
        return figures
    finally:
        await pool.close()


async def run(count: int) -> tuple[Figures, Figures]:
    with stack("fulcrum-bench-list-") as s:
        s.pg_dsn = await create_database(s.pg_dsn, "bench")
        port = free_port()
        s.service("api", {"PORT": str(port), "AUTH_STRATEGY": "noauth", "ACCESS_LOG": "false"})
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as session:
            api, vips = Api(session, base), Vips()
            first = await create(api, vips, SMALL)
            await asyncio.sleep(SETTLE)
            small = await measure(api, first, s.pg_dsn)
            rest = await create(api, vips, count - SMALL)
            await asyncio.sleep(SETTLE)
            large = await measure(api, first + rest, s.pg_dsn)
    return small, large


def report(count: int, small: Figures, large: Figures) -> None:
    print(f"Fulcrum list benchmark (API alone, loopback; p50 over {SAMPLES} requests)")
    print(f"  {'request':<28} {SMALL:>6} LBs {count:>6} LBs   ratio   goal")
    for name, at_small in small.items():
        ratio = large[name] / at_small
        goal = "" if name == "whole list" else f"<= {GOAL_RATIO}x"
        print(f"  {name:<28} {at_small:7.2f} ms {large[name]:7.2f} ms  {ratio:5.2f}x   {goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    small, large = asyncio.run(run(max(args.count, SMALL + 1)))
    report(max(args.count, SMALL + 1), small, large)


if __name__ == "__main__":
    main()
