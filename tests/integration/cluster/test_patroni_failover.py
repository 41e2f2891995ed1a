"""Killing the Patroni primary under writes: the synchronous standby is promoted, the API (a real
``python -m services.api`` process on the multi-host DSN) answers 503 with ``Retry-After`` for
the failover window only, no write it acknowledged is lost, and the outbox relay takes its lock
again on the new primary and publishes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import nats
import pytest
from aiohttp import web

from deploy.local.embedded import EmbeddedNats
from deploy.local.patroni import PatroniCluster
from deploy.local.ports import LOOPBACK, free_tcp_port
from libs.common._postgres_outage import connect_or_unavailable
from libs.common.database import create_pool, database_unavailable
from libs.common.errors import InfrastructureError
from libs.common.outbox import RELAY_LOCK_KEY
from libs.common.settings import PostgresSettings
from libs.common.subjects import ALL_EVENTS
from services.api.http.errors import DATABASE_UNAVAILABLE, RETRY_AFTER_SECONDS
from services.health.adapters.postgres import SCANNER_LOCK_KEY
from services.health.app import SCANNER
from services.health.app import create_app as create_health
from tests.integration.api.conftest import SUBNET
from tests.integration.cluster.conftest import advisory_lock_holders, eventually
from tests.integration.health.conftest import health_settings

REPO = Path(__file__).resolve().parents[3]
API_START_TIMEOUT = 30.0
PROMOTION_TIMEOUT = 30.0
# Generous: the measured window is a few seconds (Patroni's loop_wait is 1 s).
FAILOVER_WINDOW_BOUND = 30.0
ACKS_AFTER_RECOVERY = 20
RELAY_TIMEOUT = 20.0
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10)
OCTAVIA_503 = {"faultcode": "Server", "faultstring": DATABASE_UNAVAILABLE, "debuginfo": None}


@dataclass
class ApiProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def api_process(
    patroni_cluster: PatroniCluster, cluster_nats: EmbeddedNats, tmp_path: Path
) -> Iterator[ApiProcess]:
    """``python -m services.api`` (noauth) on the cluster's multi-host DSN; SIGTERM, then
    SIGKILL, by pid at the end."""
    port = free_tcp_port()
    prefix = "FULCRUM_API_"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FULCRUM_", "PG"))}
    env |= {
        f"{prefix}POSTGRES__DSN": patroni_cluster.dsn,
        f"{prefix}NATS__URL": cluster_nats.url,
        f"{prefix}PORT": str(port),
        f"{prefix}AUTH_STRATEGY": "noauth",
        f"{prefix}IDENTITY_FILE": str(tmp_path / "identity.yaml"),
        f"{prefix}RELAY__POLL_INTERVAL": "0.5",
        f"{prefix}ACCESS_LOG": "false",
    }
    log = tmp_path / "api.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.api"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield ApiProcess(f"http://{LOOPBACK}:{port}", process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
        yield session


async def wait_serving(api: ApiProcess, http: aiohttp.ClientSession) -> None:
    deadline = time.monotonic() + API_START_TIMEOUT
    while True:
        assert api.process.poll() is None, api.log.read_text()[-3000:]
        try:
            async with http.get(f"{api.url}/v2/lbaas/loadbalancers") as reply:
                if reply.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline, api.log.read_text()[-3000:]
        await asyncio.sleep(0.2)


@dataclass
class Writes:
    """What the writer saw: acknowledged ids with their times, 503 times, anything else."""

    acked: list[tuple[float, str]] = field(default_factory=list)
    unavailable: list[float] = field(default_factory=list)
    unexpected: list[tuple[int, str]] = field(default_factory=list)

    def acked_after(self, moment: float) -> int:
        return sum(1 for t, _ in self.acked if t > moment)


async def create_lb(
    api: ApiProcess, http: aiohttp.ClientSession
) -> tuple[int, dict[str, str], object]:
    body = {"loadbalancer": {"vip_subnet_id": SUBNET}}
    async with http.post(f"{api.url}/v2/lbaas/loadbalancers", json=body) as reply:
        return reply.status, dict(reply.headers), await reply.json(content_type=None)


async def write_until_stopped(
    api: ApiProcess, http: aiohttp.ClientSession, writes: Writes, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        try:
            status, headers, body = await create_lb(api, http)
        except (aiohttp.ClientError, TimeoutError) as exc:
            writes.unexpected.append((0, repr(exc)))
            continue
        now = time.monotonic()
        if status in (201, 202):
            assert isinstance(body, dict)
            writes.acked.append((now, body["loadbalancer"]["id"]))
        elif status == 503 and body == OCTAVIA_503:
            assert headers.get("Retry-After") == str(RETRY_AFTER_SECONDS), headers
            writes.unavailable.append(now)
        else:
            writes.unexpected.append((status, str(body)))
        await asyncio.sleep(0.01)


def promoted_other_than(cluster: PatroniCluster, killed: str) -> bool:
    primary = cluster.primary()
    return primary is not None and primary.name != killed


async def assert_standbys_alone_are_an_outage(cluster: PatroniCluster) -> None:
    """A multi-host DSN whose hosts are all standbys (as during a failover): the pool's connect
    fails as Postgres being unreachable (503 in the API), not as an unexpected error."""
    standby = next(m for m in cluster.members() if not m.is_primary)
    only_standby = cluster.member_dsn(standby.name, "postgres") + "?target_session_attrs=read-write"

    with pytest.raises(asyncpg.ClientCannotConnectError) as refused:
        await connect_or_unavailable(only_standby)
    assert database_unavailable(refused.value)
    with pytest.raises(InfrastructureError):
        await create_pool(PostgresSettings(dsn=only_standby))


async def test_killing_the_primary_loses_no_acknowledged_write(
    patroni_cluster: PatroniCluster,
    cluster_nats: EmbeddedNats,
    api_process: ApiProcess,
    http: aiohttp.ClientSession,
) -> None:
    cluster = patroni_cluster
    await wait_serving(api_process, http)
    published: list[str] = []
    nc = await nats.connect(cluster_nats.url)
    try:

        async def on_event(msg: nats.aio.msg.Msg) -> None:
            published.append(msg.subject)

        await nc.subscribe(ALL_EVENTS, cb=on_event)
        writes, stop = Writes(), asyncio.Event()
        writer = asyncio.create_task(write_until_stopped(api_process, http, writes, stop))
        try:
            while len(writes.acked) < ACKS_AFTER_RECOVERY:
                assert not writer.done(), writer
                await asyncio.sleep(0.05)
            before = cluster.primary()
            assert before is not None
            killed = await asyncio.to_thread(cluster.kill_primary_postgres)
            killed_at = time.monotonic()

            deadline = killed_at + PROMOTION_TIMEOUT
            while (promoted := await asyncio.to_thread(cluster.primary)) is None or (
                promoted.name == killed
            ):
                assert time.monotonic() < deadline, cluster.log_tails()
                await asyncio.sleep(0.1)
            while writes.acked_after(max([killed_at, *writes.unavailable])) < ACKS_AFTER_RECOVERY:
                assert time.monotonic() < deadline + FAILOVER_WINDOW_BOUND, (
                    writes.unexpected[-5:],
                    api_process.log.read_text()[-3000:],
                )
                assert not writer.done(), writer
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await writer

        assert writes.unexpected == []
        first_ack_after = min(
            t for t, _ in writes.acked if t > max([killed_at, *writes.unavailable])
        )
        window = first_ack_after - killed_at
        unavailable_for = (
            max(writes.unavailable) - min(writes.unavailable) if writes.unavailable else 0.0
        )
        print(
            f"\npatroni failover: {killed} killed, {promoted.name} promoted; writes acknowledged "
            f"again {window:.2f} s after the kill; {len(writes.unavailable)} answers 503 over "
            f"{unavailable_for:.2f} s; {len(writes.acked)} writes acknowledged"
        )
        assert promoted.name != killed and promoted.role == "leader"
        assert window < FAILOVER_WINDOW_BOUND
        assert all(t < killed_at + FAILOVER_WINDOW_BOUND for t in writes.unavailable)

        # No acknowledged write is lost: each is readable through the API.
        for _, lb_id in writes.acked:
            async with http.get(f"{api_process.url}/v2/lbaas/loadbalancers/{lb_id}") as reply:
                assert reply.status == 200, (lb_id, await reply.text())

        # The relay holds its lock on the new primary and publishes what is appended now.
        status, _, body = await create_lb(api_process, http)
        assert status == 201 and isinstance(body, dict), (status, body)
        last = body["loadbalancer"]["id"]
        deadline = time.monotonic() + RELAY_TIMEOUT
        while not any(last in subject for subject in published):
            assert time.monotonic() < deadline, api_process.log.read_text()[-3000:]
            await asyncio.sleep(0.1)
        assert len(await advisory_lock_holders(cluster.dsn, RELAY_LOCK_KEY)) == 1
    finally:
        await nc.close()


async def test_health_singletons_take_their_locks_again_on_the_new_primary(
    patroni_cluster: PatroniCluster, cluster_nats: EmbeddedNats
) -> None:
    """The stale scan and the relay of a health replica (sessions holding advisory locks on
    the old primary) notice the failover, reconnect to the new primary and lock again. (And,
    on the same cluster, standbys alone are an outage to a pool.)"""
    cluster = patroni_cluster
    await assert_standbys_alone_are_an_outage(cluster)
    app = create_health(health_settings(cluster.dsn, cluster_nats.url))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, LOOPBACK, 0).start()
        scanner = app[SCANNER]

        async def both_locked() -> bool:
            try:
                held = [
                    len(await advisory_lock_holders(cluster.dsn, k))
                    for k in (SCANNER_LOCK_KEY, RELAY_LOCK_KEY)
                ]
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return False
            return scanner.active and held == [1, 1]

        await eventually(both_locked, "the scanner and the relay to lock")
        killed = await asyncio.to_thread(cluster.kill_primary_postgres)
        await eventually(
            lambda: asyncio.to_thread(promoted_other_than, cluster, killed), "promotion"
        )
        await eventually(both_locked, "the scanner and the relay to lock on the new primary")
    finally:
        await runner.cleanup()
