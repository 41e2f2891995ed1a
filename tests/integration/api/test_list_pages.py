"""List pages at any fleet size: the default order is read from an index, page after page.

Rows go straight into ``loadbalancer_view`` (the projector's table); several share one
``created_at`` so the ``id`` tie-break is exercised, and one is DELETED (never listed).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg

from services.api.adapters.views import PostgresViews, page_sql
from services.api.domain.kinds import KINDS
from services.api.domain.queries import ListQuery

LB = KINDS["loadbalancer"]
START = datetime(2026, 1, 1, tzinfo=UTC)


async def _fill(db: asyncpg.Pool, count: int) -> list[str]:
    """``count`` live LBs (three per second of ``created_at``) plus a DELETED one; the live
    ids in (created_at, id) order."""
    rows = []
    for n in range(count + 1):
        lb_id = f"lb-{(n * 7919) % 1000:04d}"
        status = "DELETED" if n == count // 2 else "ACTIVE"
        body = {"id": lb_id, "provisioning_status": status}
        rows.append((lb_id, "p", 1, START + timedelta(seconds=n // 3), json.dumps(body), status))
    await db.executemany(
        "INSERT INTO loadbalancer_view (id, lb_id, parent_id, project_id, version, created_at, "
        "body) VALUES ($1, $1, $1, $2, $3, $4, $5::jsonb)",
        [row[:5] for row in rows],
    )
    live = [row for row in rows if row[5] != "DELETED"]
    return [row[0] for row in sorted(live, key=lambda row: (row[3], row[0]))]


async def test_pages_forward_and_back_follow_the_order(db: asyncpg.Pool) -> None:
    ordered = await _fill(db, 25)
    views = PostgresViews(db)
    seen: list[str] = []
    marker = None
    while True:
        page = await views.list_page(ListQuery(kind=LB, limit=10, marker=marker))
        seen += page.ids
        if len(page.ids) < 10:
            break
        marker = page.ids[-1]
    assert seen == ordered
    back = await views.list_page(
        ListQuery(kind=LB, limit=10, marker=ordered[15], page_reverse=True)
    )
    assert back.ids == ordered[5:15]
    newest = await views.list_page(
        ListQuery(kind=LB, limit=4, marker=ordered[-5], sort=(("created_at", True), ("id", True)))
    )
    assert newest.ids == list(reversed(ordered[:-5]))[:4]


async def test_default_order_pages_read_the_index(db: asyncpg.Pool) -> None:
    ordered = await _fill(db, 25)
    marker = await db.fetchrow(
        "SELECT created_at, body, id FROM loadbalancer_view WHERE id = $1", ordered[10]
    )
    async with db.acquire() as conn:
        # With scans and sorts priced out, only a plan the index fits avoids them.
        await conn.execute("SET enable_seqscan = off; SET enable_sort = off")
        try:
            for query, row in (
                (ListQuery(kind=LB, limit=10), None),
                (ListQuery(kind=LB, limit=10, marker=ordered[10]), marker),
                (ListQuery(kind=LB, limit=10, marker=ordered[10], page_reverse=True), marker),
            ):
                sql, params = page_sql(query, row)
                plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *params))
                assert "loadbalancer_view_live_order_idx" in plan, plan
                assert "Sort" not in plan, plan
                if row is not None:
                    assert "Index Cond" in plan, plan
        finally:
            await conn.execute("RESET enable_seqscan; RESET enable_sort")
