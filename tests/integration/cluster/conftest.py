"""Fixtures of the cluster tests: a Patroni-managed Postgres (etcd + 2 members) and a NATS
of the test's own, both real processes on 127.0.0.1, stopped also when the test fails; and the
helpers their tests share (bounded waits, advisory lock holders)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from deploy.local.embedded import EmbeddedNats
from deploy.local.patroni import PatroniCluster

PATRONI_START_TIMEOUT = 60.0
WAIT_TIMEOUT = 30.0


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = WAIT_TIMEOUT
) -> None:
    """Poll ``check`` (sync or async) every 0.05 s until true; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


async def advisory_lock_holders(db: str | asyncpg.Pool, key: int) -> list[int]:
    """Backend pids holding the session advisory lock ``key`` on the server of ``db`` (a DSN,
    e.g. a multi-host one reaching the primary, or a pool)."""
    sql = (
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND ((classid::bigint << 32) | objid::bigint) = $1"
    )
    if not isinstance(db, str):
        return [row["pid"] for row in await db.fetch(sql, key)]
    conn = await asyncpg.connect(db)
    try:
        return [row["pid"] for row in await conn.fetch(sql, key)]
    finally:
        await conn.close()


@pytest.fixture
def patroni_cluster(tmp_path: Path) -> Iterator[PatroniCluster]:
    """etcd and two Patroni members, ready: a primary, a streaming synchronous standby and the
    ``fulcrum`` database (connect with ``cluster.dsn``). Started from the test's main thread,
    so the children's parent-death signal fires only when the test process dies."""
    cluster = PatroniCluster(tmp_path / "patroni")
    cluster.start(timeout=PATRONI_START_TIMEOUT)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A ``nats-server -js`` of the test's own."""
    with EmbeddedNats(tmp_path / "nats") as server:
        yield server
