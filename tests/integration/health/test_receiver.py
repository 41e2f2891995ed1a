"""The UDP receiver against real datagrams: what it drops and counts, and what reaches Postgres
(last-seen, listener and member stats). Forged heartbeats change nothing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
import zlib
from collections.abc import Callable

import aiohttp
import asyncpg

from libs.common import heartbeat_codec as codec
from libs.common.settings import HEARTBEAT_KEY_ENV
from tests.integration.health.conftest import (
    KEY,
    Sender,
    StartHealth,
    allocate,
    count_events,
    create_site,
    eventually,
    load,
)


def signed(body: bytes) -> bytes:
    return body + hmac.new(KEY.encode(), body, hashlib.sha256).hexdigest().encode()


async def test_bad_datagrams_are_dropped_counted_and_change_nothing(
    db: asyncpg.Pool, start_health: StartHealth, senders: Callable[[tuple[str, int]], Sender]
) -> None:
    site = await create_site(db)
    health = await start_health(max_datagram=2048)
    good = senders(health.udp)
    forger = Sender(health.udp, key="not-the-key")
    try:
        good.beat(site)  # seq 1001, all UP
        await eventually(
            lambda: _seq_is(db, site.amphora_id, 1001), what="the first heartbeat to be stored"
        )
        await eventually(lambda: _member_status_is(db, site, "ONLINE"), what="members ONLINE")
        events_before = await count_events(db, "OperatingStatusChanged")

        # Forged: right shape, wrong key, a member DOWN and a seq far ahead.
        for seq in range(5000, 5010):
            forger.raw(codec.encode(site.message(seq, members=("UP", "DOWN")), forger.key))
        good.raw(b"garbage that is no heartbeat")  # too short for a MAC -> bad hmac too
        good.raw(signed(b"signed, but not zlib"))
        good.raw(signed(zlib.compress(b'{"id": "x", "ver": 3}')))  # no seq
        good.raw(signed(zlib.compress(json.dumps(site.message(6000, ver=2)).encode())))
        filler = {"padding": os.urandom(3000).hex()}
        good.raw(codec.encode(site.message(6001, **filler), good.key))  # > 2048 bytes
        replayed = good.beat(site, members=("DOWN", "DOWN"))  # seq 1002: accepted
        good.raw(replayed)  # the same datagram again
        good.raw(codec.encode(site.message(1000, members=("UP", "DOWN")), good.key))  # old seq
        unknown = site.message(7000) | {"id": "00000000-0000-4000-8000-000000000000"}
        good.raw(codec.encode(unknown, good.key))

        await eventually(
            lambda: _is(health.metric("heartbeats_received_total") == 20), what="all 20 read"
        )
        assert health.metric("heartbeats_dropped_bad_hmac_total") == 11
        assert health.metric("heartbeats_dropped_garbled_total") == 3
        assert health.metric("heartbeats_dropped_oversized_total") == 1
        assert health.metric("heartbeats_dropped_replayed_total") == 2
        assert health.metric("heartbeats_unknown_amphora_total") == 1
        assert health.metric("heartbeats_accepted_total") == 2
        assert health.metric("heartbeats_failed_total") == 0

        # Only the authentic seq 1002 (both members DOWN) moved anything.
        await eventually(lambda: _member_status_is(db, site, "ERROR"), what="members ERROR")
        await eventually(lambda: _seq_is(db, site.amphora_id, 1002), what="seq 1002 stored")
        assert await count_events(db, "OperatingStatusChanged") == events_before + 1

        # The counters are on /metrics, and the service still takes good heartbeats.
        port = health.runner.addresses[0][1]
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            text = await resp.text()
        assert "fulcrum_health_heartbeats_dropped_bad_hmac_total 11.0" in text
        assert "fulcrum_health_heartbeats_dropped_replayed_total 2.0" in text
        good.beat(site)
        await eventually(lambda: _seq_is(db, site.amphora_id, 1003), what="seq 1003 stored")
    finally:
        forger.close()


async def test_the_first_heartbeat_of_an_amphora_the_service_does_not_know_yet_counts(
    db: asyncpg.Pool, start_health: StartHealth, senders: Callable[[tuple[str, int]], Sender]
) -> None:
    """An amphora booted after the directory's last reload is known from its first beat: the
    beat waits for the reload it asks for (the periodic one is far away here)."""
    health = await start_health(refresh_interval=600)
    site = await create_site(db)
    sender = senders(health.udp)
    sender.beat(site)  # seq 1001: unknown when it arrives
    await eventually(lambda: _seq_is(db, site.amphora_id, 1001), what="the first beat stored")
    assert health.metric("heartbeats_unknown_amphora_total") == 1
    assert health.metric("heartbeats_accepted_total") == 1


async def test_a_spare_allocated_since_the_last_reload_keeps_its_first_traffic(
    db: asyncpg.Pool, start_health: StartHealth, senders: Callable[[tuple[str, int]], Sender]
) -> None:
    """A spare's directory record names no LB. Once allocated, its beats carry listeners; the
    first such beat before the directory's next reload waits for the reload it asks for, so
    its traffic deltas (the agent has moved its baseline past them) are not lost."""
    site = await create_site(db, spare_first=True)
    health = await start_health(refresh_interval=600)
    sender = senders(health.udp)
    sender.beat(site, listeners={}, pools={})  # a spare beats with nothing: seq 1001
    await eventually(lambda: _seq_is(db, site.amphora_id, 1001), what="the spare's beat stored")
    await allocate(db, site)
    stats = {"rx": 10, "tx": 20, "conns": 1, "totconns": 5, "ereq": 0}
    sender.beat(site, listeners={site.listener_id: {"status": "OPEN", "stats": stats}})

    async def counted() -> bool:
        total = await db.fetchval(
            "SELECT total_connections FROM listener_stats WHERE listener_id = $1 AND lb_id = $2",
            site.listener_id,
            site.lb_id,
        )
        return bool(total == 5)

    await eventually(counted, what="the allocated amphora's first 5 connections")
    assert health.metric("heartbeats_unknown_amphora_total") == 0
    assert health.metric("heartbeats_accepted_total") == 2


async def test_stats_deltas_add_up_in_listener_stats(
    db: asyncpg.Pool, start_health: StartHealth, senders: Callable[[tuple[str, int]], Sender]
) -> None:
    first, second = await create_site(db), await create_site(db)
    health = await start_health()
    sender = senders(health.udp)
    for n in range(1, 6):
        for site, factor in ((first, 1), (second, 10)):
            stats = {
                "rx": 100 * factor,
                "tx": 250 * factor,
                "conns": n * factor,
                "totconns": 3 * factor,
                "ereq": factor,
            }
            sender.beat(site, listeners={site.listener_id: {"status": "OPEN", "stats": stats}})

    async def landed() -> bool:
        rows = await db.fetch("SELECT * FROM listener_stats WHERE total_connections >= 15")
        return len(rows) == 2

    await eventually(landed, what="stats rows")
    rows = {
        r["amphora_id"]: dict(r)
        for r in await db.fetch(
            "SELECT listener_id, amphora_id, lb_id, bytes_in, bytes_out, active_connections, "
            "total_connections, request_errors FROM listener_stats"
        )
    }
    assert rows[first.amphora_id] == {
        "listener_id": first.listener_id,
        "amphora_id": first.amphora_id,
        "lb_id": first.lb_id,
        "bytes_in": 500,
        "bytes_out": 1250,
        "active_connections": 5,
        "total_connections": 15,
        "request_errors": 5,
    }
    assert rows[second.amphora_id]["bytes_in"] == 5000
    assert rows[second.amphora_id]["active_connections"] == 50
    assert rows[second.amphora_id]["lb_id"] == second.lb_id


async def test_an_idle_listener_row_is_written_once_then_only_when_it_changes(
    db: asyncpg.Pool, start_health: StartHealth, senders: Callable[[tuple[str, int]], Sender]
) -> None:
    """Heartbeats with no traffic and the same active connections leave the stats row as it
    is (its xmin stays: no new row version); traffic moves it again."""
    site = await create_site(db)
    health = await start_health()
    sender = senders(health.udp)

    def beat(rx: int = 0) -> int:
        stats = {"rx": rx, "tx": 0, "conns": 1, "totconns": 0, "ereq": 0}
        sent = sender.beat(site, listeners={site.listener_id: {"status": "OPEN", "stats": stats}})
        return codec.decode(sent, KEY.encode()).seq

    async def row() -> asyncpg.Record | None:
        return await db.fetchrow(
            "SELECT xmin::text AS xmin, bytes_in, active_connections FROM listener_stats "
            "WHERE listener_id = $1",
            site.listener_id,
        )

    async def written() -> bool:
        return await row() is not None

    beat()
    await eventually(written, what="the listener's row")
    first = await row()
    assert first is not None and first["active_connections"] == 1
    for _ in range(3):  # each in a flush of its own (flush_interval 0.1 s)
        seq = beat()
        await eventually(
            lambda seq=seq: _seq_is(db, site.amphora_id, seq), what=f"seq {seq} stored"
        )
        await asyncio.sleep(0.15)
    assert await row() == first
    assert health.metric("stats_rows_total") == 1

    beat(rx=100)

    async def moved() -> bool:
        now = await row()
        return now is not None and now["bytes_in"] == 100

    await eventually(moved, what="the traffic's row")
    assert health.metric("stats_rows_total") == 2


async def test_member_deltas_add_up_in_member_stats_across_backends(
    db: asyncpg.Pool, start_health: StartHealth, senders: Callable[[tuple[str, int]], Sender]
) -> None:
    """A member's counters add up over beats; in one beat, the backends of its pool (one per
    listener using the pool) add up too, active connections included."""
    site = await create_site(db)
    health = await start_health()
    sender = senders(health.udp)
    m1, m2 = site.member_ids
    other_listener = "11111111-2222-4333-8444-555555555555"

    def counters(n: int) -> dict[str, int]:
        return {"rx": 10 * n, "tx": 100 * n, "conns": n, "totconns": 2 * n, "ereq": n % 2}

    for beat in range(1, 4):
        pools = {
            f"{site.pool_id}:{site.listener_id}": {
                "status": "UP",
                "members": {m1: "UP", m2: "UP"},
                "member_stats": {m1: counters(1), m2: counters(3)},
            },
            f"{site.pool_id}:{other_listener}": {
                "status": "UP",
                "members": {m1: "UP"},
                "member_stats": {m1: counters(beat)},
            },
        }
        sender.beat(site, pools=pools)

    async def landed() -> bool:
        rows = await db.fetch(
            "SELECT 1 FROM member_stats WHERE member_id = $1 AND total_connections = 18", m2
        )
        return len(rows) == 1

    await eventually(landed, what="member stats rows")
    await eventually(
        lambda: _total_connections_is(db, m1, 3 * 2 + (1 + 2 + 3) * 2), what="m1's connections"
    )
    rows = {
        r["member_id"]: dict(r)
        for r in await db.fetch(
            "SELECT member_id, amphora_id, pool_id, lb_id, bytes_in, bytes_out, "
            "active_connections, total_connections, request_errors FROM member_stats"
        )
    }
    assert rows[m1] == {
        "member_id": m1,
        "amphora_id": site.amphora_id,
        "pool_id": site.pool_id,
        "lb_id": site.lb_id,
        "bytes_in": 3 * 10 + 60,
        "bytes_out": 3 * 100 + 600,
        "active_connections": 1 + 3,
        "total_connections": 18,
        "request_errors": 3 + 2,
    }
    assert rows[m2]["bytes_out"] == 900 and rows[m2]["active_connections"] == 3
    assert health.metric("member_stats_rows_total") >= 2


async def _total_connections_is(db: asyncpg.Pool, member_id: str, total: int) -> bool:
    found = await db.fetchval(
        "SELECT total_connections FROM member_stats WHERE member_id = $1", member_id
    )
    return bool(found == total)


async def test_a_heartbeat_without_the_listeners_is_no_sign_of_life(
    db: asyncpg.Pool, start_health: StartHealth, senders: Callable[[tuple[str, int]], Sender]
) -> None:
    site = await create_site(db)
    health = await start_health()
    sender = senders(health.udp)
    sender.beat(site)
    await eventually(lambda: _seq_is(db, site.amphora_id, 1001), what="first heartbeat stored")
    seen = await db.fetchval(
        "SELECT last_seen FROM amphora_health WHERE amphora_id = $1", site.amphora_id
    )
    sender.beat(site, listeners={}, pools={})  # HAProxy gone: the agent beats with nothing
    await eventually(
        lambda: _is(health.metric("heartbeats_not_serving_total") == 1), what="not serving"
    )
    state = await load(db, site.lb_id)
    await eventually(
        lambda: _listener_status_is(db, site, "ERROR"), what="the listener to be ERROR"
    )
    assert state.loadbalancer is not None
    assert (
        await db.fetchval(
            "SELECT last_seen FROM amphora_health WHERE amphora_id = $1", site.amphora_id
        )
        == seen
    )


def test_the_service_refuses_to_start_without_a_heartbeat_key(pg_dsn: str) -> None:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FULCRUM_HEALTH_") and k != HEARTBEAT_KEY_ENV
    }
    base["FULCRUM_HEALTH_POSTGRES__DSN"] = pg_dsn
    for extra in ({}, {"FULCRUM_HEALTH_HEARTBEAT_KEY": "   "}, {HEARTBEAT_KEY_ENV: "   "}):
        done = subprocess.run(
            [sys.executable, "-m", "services.health"],
            env=base | extra,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 2, done.stderr
        assert "refusing to start" in done.stderr
        assert "HEARTBEAT_KEY" in done.stderr


async def _is(value: bool) -> bool:
    return value


async def _seq_is(db: asyncpg.Pool, amphora_id: str, seq: int) -> bool:
    stored = await db.fetchval("SELECT seq FROM amphora_health WHERE amphora_id = $1", amphora_id)
    return bool(stored == seq)


async def _member_status_is(db: asyncpg.Pool, site: object, status: str) -> bool:
    state = await load(db, site.lb_id)  # type: ignore[attr-defined]
    members = [state.members[m] for m in site.member_ids]  # type: ignore[attr-defined]
    return all(m.operating_status.value == status for m in members)


async def _listener_status_is(db: asyncpg.Pool, site: object, status: str) -> bool:
    state = await load(db, site.lb_id)  # type: ignore[attr-defined]
    listener = state.listeners[site.listener_id]  # type: ignore[attr-defined]
    return bool(listener.operating_status.value == status)
