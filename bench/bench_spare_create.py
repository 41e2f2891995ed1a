"""Spare-pool benchmark: create a load balancer until it is ACTIVE and serving its VIP, with a
warm spare pool (housekeeping keeps it full, a create claims a booted amphora) and without
one (every create boots its amphora), p50 of each and their ratio. Goal: warm p50 <= 50 ms.

Measured two ways: the repository-level create (what the API's use case appends), and, when
the API service is present, POST /v2.0/lbaas/loadbalancers (a single-call graph: listener,
pool, member) polled through GET until ACTIVE. "Serving" is the first HTTP 200 through the VIP.
Real Postgres and NATS (embedded), the provisioner (process driver: real agents and HAProxy on
loopback), housekeeping and the API in this process. Before each warm round the pool is full
again, so refills never overlap a measurement.
Run: .venv/bin/python bench/bench_spare_create.py [--rounds N] [--cold N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
from aiohttp import web  # noqa: E402

from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres, create_database  # noqa: E402
from libs.common.database import create_pool  # noqa: E402
from libs.common.domain import commands as c  # noqa: E402
from libs.common.domain.model import Listener, LoadBalancer, Member, Pool  # noqa: E402
from libs.common.events import Metadata  # noqa: E402
from libs.common.eventstore import PostgresEventStore  # noqa: E402
from libs.common.repository import LoadBalancerRepository  # noqa: E402
from libs.common.settings import NatsSettings, PostgresSettings, RelaySettings  # noqa: E402
from services.housekeeping.app import JOBS  # noqa: E402
from services.housekeeping.app import create_app as create_housekeeping  # noqa: E402
from services.housekeeping.settings import (  # noqa: E402
    CertificatesJob,
    HousekeepingSettings,
    OrphansJob,
    PurgeJob,
    SparesJob,
    StrandedJob,
)
from services.provisioner.app import DRIVER  # noqa: E402
from services.provisioner.app import create_app as create_provisioner  # noqa: E402
from services.provisioner.settings import ProvisionerSettings  # noqa: E402

PROJECT = "5f2a9c1e3b4d4e6f8a7b9c0d1e2f3a4b"
SUBNET = "6a3b9c3e-5f2d-4c1a-9b7e-1f0d2c3b4a51"  # the embedded default: 127.77.0.0/16
NETWORK = "0c9a4e2b-8d7f-4f6e-a1b2-3c4d5e6f7a81"
META = Metadata(actor="bench", project_id=PROJECT)
GOAL_MS = 50.0
POOL = 2
ROUND_TIMEOUT = 30.0


@dataclass
class Series:
    name: str
    active_ms: list[float] = field(default_factory=list)
    serving_ms: list[float] = field(default_factory=list)
    # Where the time went, from the store's clocks: create -> provisioner handler start
    # (outbox relay, JetStream, consumer), handler start -> Activate (claim, config push).
    bus_ms: list[float] = field(default_factory=list)
    handler_ms: list[float] = field(default_factory=list)
    post_ms: list[float] = field(default_factory=list)  # the API's answer (201)

    def p50(self) -> float:
        return statistics.median(self.serving_ms) if self.serving_ms else float("nan")

    def line(self) -> str:
        if not self.serving_ms:
            return f"{self.name:<34} (not measured)"
        act, srv = sorted(self.active_ms), sorted(self.serving_ms)
        return (
            f"{self.name:<34} n={len(srv):>3}  ACTIVE p50 {statistics.median(act):7.1f} ms   "
            f"serving p50 {statistics.median(srv):7.1f} ms  p90 {srv[int(0.9 * (len(srv) - 1))]:7.1f}"
            f"  max {srv[-1]:7.1f}"
        )

    def breakdown(self) -> str:
        if self.post_ms:
            return (
                f"{'':<34} of which: POST answered 201 in {statistics.median(self.post_ms):6.1f} ms"
            )
        if not self.bus_ms:
            return ""
        return (
            f"{'':<34} of which: create -> provisioner {statistics.median(self.bus_ms):6.1f} ms,"
            f" provisioner -> Activate {statistics.median(self.handler_ms):6.1f} ms (p50)"
        )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def running(app: web.Application, port: int = 0) -> AsyncIterator[web.AppRunner]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield runner
    finally:
        await runner.cleanup()


async def backend() -> tuple[web.AppRunner, int]:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", answer)
    port = free_port()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def graph(vip: str, port: int, backend_port: int) -> c.CreateLoadBalancer:
    now = datetime.now(UTC)
    common: dict[str, Any] = {"project_id": PROJECT, "created_at": now}
    lb = LoadBalancer(
        id=str(uuid.uuid4()),
        vip_address=vip,
        vip_port_id=str(uuid.uuid4()),
        vip_subnet_id=SUBNET,
        vip_network_id=NETWORK,
        **common,
    )
    pool = Pool(
        id=str(uuid.uuid4()),
        loadbalancer_id=lb.id,
        protocol="HTTP",
        lb_algorithm="ROUND_ROBIN",
        **common,
    )
    listener = Listener(
        id=str(uuid.uuid4()),
        loadbalancer_id=lb.id,
        protocol="HTTP",
        protocol_port=port,
        default_pool_id=pool.id,
        **common,
    )
    member = Member(
        id=str(uuid.uuid4()),
        pool_id=pool.id,
        address="127.0.0.1",
        protocol_port=backend_port,
        **common,
    )
    return c.CreateLoadBalancer(lb, listeners=(listener,), pools=(pool,), members=(member,))


async def until(check: Callable[[], Awaitable[bool]], what: str, pause: float = 0.001) -> None:
    deadline = time.monotonic() + ROUND_TIMEOUT
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(pause)


async def serving(session: aiohttp.ClientSession, url: str) -> None:
    async def ok() -> bool:
        try:
            async with session.get(url, headers={"Connection": "close"}) as resp:
                await resp.read()
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    await until(ok, f"{url} to serve")


class Bench:
    def __init__(self, db: asyncpg.Pool, housekeeping: web.Application, backend_port: int) -> None:
        self.db = db
        self.repo = LoadBalancerRepository(PostgresEventStore(db))
        self.housekeeping = housekeeping
        self.backend_port = backend_port
        self.next_vip = 10

    def vip(self) -> str:
        self.next_vip += 1
        return f"127.77.90.{self.next_vip}"

    async def ready_spares(self) -> int:
        count: int = await self.db.fetchval(
            "SELECT count(*) FROM amphora_view WHERE status = 'READY' AND lb_id IS NULL"
        )
        return count

    async def set_pool(self, size: int) -> None:
        """Resize the pool (as an operator would) and wait until it holds exactly ``size``."""
        jobs = self.housekeeping[JOBS]
        jobs.spares._settings.pool_size = size

        async def full() -> bool:
            await jobs.runners["spares"].tick(force=True)
            booting: int = await self.db.fetchval(
                "SELECT count(*) FROM amphora_view WHERE lb_id IS NULL "
                "AND status IN ('BOOTING', 'PENDING_DELETE')"
            )
            return await self.ready_spares() == size and booting == 0

        await until(full, f"a pool of {size}", pause=0.1)

    async def status(self, lb_id: str) -> str | None:
        value: str | None = await self.db.fetchval(
            "SELECT body->>'provisioning_status' FROM loadbalancer_view WHERE id = $1", lb_id
        )
        return value

    async def repository_round(self, session: aiohttp.ClientSession, series: Series) -> None:
        vip = self.vip()
        port = free_port(vip)
        command = graph(vip, port, self.backend_port)
        lb_id = command.loadbalancer.id
        started = time.perf_counter()
        await self.repo.execute(lb_id, command, META)

        async def active() -> bool:
            status = await self.status(lb_id)
            if status == "ERROR":
                raise RuntimeError(f"LB {lb_id} went ERROR")
            return status == "ACTIVE"

        await until(active, "ACTIVE", pause=0.002)
        series.active_ms.append((time.perf_counter() - started) * 1000)
        await serving(session, f"http://{vip}:{port}/")
        series.serving_ms.append((time.perf_counter() - started) * 1000)
        await self.breakdown(lb_id, series)

    async def breakdown(self, lb_id: str, series: Series) -> None:
        """Split one create by the store's timestamps (processed_at is the handler's start)."""
        row = await self.db.fetchrow(
            "SELECT extract(epoch FROM p.processed_at - c.recorded_at) * 1000 AS bus, "
            "extract(epoch FROM a.occurred_at - p.processed_at) * 1000 AS handler "
            "FROM events c JOIN processed_messages p ON p.event_id = c.event_id "
            "AND p.consumer = 'provisioner-lb-lifecycle' "
            "JOIN events a ON a.stream_id = c.stream_id AND a.event_type = 'LoadBalancerActivated' "
            "WHERE c.stream_id = $1 AND c.event_type = 'LoadBalancerCreated'",
            f"loadbalancer-{lb_id}",
        )
        if row is not None:
            series.bus_ms.append(row["bus"])
            series.handler_ms.append(row["handler"])

    async def api_round(self, session: aiohttp.ClientSession, api: str, series: Series) -> None:
        vip = self.vip()
        port = free_port(vip)
        body = {
            "loadbalancer": {
                "name": "bench",
                "vip_subnet_id": SUBNET,
                "vip_address": vip,
                "listeners": [
                    {
                        "name": "bench-listener",
                        "protocol": "HTTP",
                        "protocol_port": port,
                        "default_pool": {
                            "name": "bench-pool",
                            "protocol": "HTTP",
                            "lb_algorithm": "ROUND_ROBIN",
                            "members": [
                                {"address": "127.0.0.1", "protocol_port": self.backend_port}
                            ],
                        },
                    }
                ],
            }
        }
        headers = {"X-Auth-Token": "notused"}
        started = time.perf_counter()
        async with session.post(
            f"{api}/v2.0/lbaas/loadbalancers", json=body, headers=headers
        ) as resp:
            created = await resp.json()
            if resp.status != 201:
                raise RuntimeError(f"POST answered {resp.status}: {created}")
        lb_id = created["loadbalancer"]["id"]
        series.post_ms.append((time.perf_counter() - started) * 1000)

        async def active() -> bool:
            async with session.get(
                f"{api}/v2.0/lbaas/loadbalancers/{lb_id}", headers=headers
            ) as resp:
                status = (await resp.json())["loadbalancer"]["provisioning_status"]
            if status == "ERROR":
                raise RuntimeError(f"LB {lb_id} went ERROR")
            return bool(status == "ACTIVE")

        await until(active, "ACTIVE through the API", pause=0.005)
        series.active_ms.append((time.perf_counter() - started) * 1000)
        await serving(session, f"http://{vip}:{port}/")
        series.serving_ms.append((time.perf_counter() - started) * 1000)


def haproxy_check_ms() -> float:
    """The agent validates every config with `haproxy -c` before it starts HAProxy: a floor."""
    config = (
        "defaults\n  mode http\n  timeout connect 1s\n  timeout client 1s\n"
        "  timeout server 1s\nfrontend f\n  bind 127.0.0.1:0\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".cfg") as handle:
        handle.write(config)
        handle.flush()
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            subprocess.run(
                [shutil.which("haproxy") or "/usr/sbin/haproxy", "-c", "-q", "-f", handle.name],
                check=False,
                capture_output=True,
            )
            runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


async def main(rounds: int, cold_rounds: int) -> int:
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="fulcrum-bench-spares-"))
    pg = EmbeddedPostgres(work / "pg")
    nats_server = EmbeddedNats(work / "nats")
    series: list[Series] = []
    try:
        dsn = await create_database(pg.start(), f"b_{uuid.uuid4().hex}")
        nats_url = nats_server.start()
        provisioner_settings = ProvisionerSettings(
            postgres=PostgresSettings(dsn=dsn),
            nats=NatsSettings(url=nats_url),
            relay=RelaySettings(poll_interval=0.5),
            port=0,
            state_dir=work / "amphorae",
            ca_dir=work / "ca",
        )
        housekeeping_settings = HousekeepingSettings(
            postgres=PostgresSettings(dsn=dsn),
            nats=NatsSettings(url=nats_url),
            port=0,
            spares=SparesJob(interval=0.2, pool_size=0),
            stranded=StrandedJob(enabled=False),
            orphans=OrphansJob(enabled=False),
            purge=PurgeJob(enabled=False),
            certificates=CertificatesJob(enabled=False, ca_cert=None),
        )
        provisioner = create_provisioner(provisioner_settings)
        housekeeping = create_housekeeping(housekeeping_settings)
        backend_runner, backend_port = await backend()
        api_app: web.Application | None = None
        if importlib.util.find_spec("services.api.app") is not None:
            from services.api.app import create_app as create_api
            from services.api.settings import ApiSettings

            api_app = create_api(
                ApiSettings(
                    postgres=PostgresSettings(dsn=dsn),
                    nats=NatsSettings(url=nats_url),
                    auth_strategy="noauth",
                    access_log=False,
                )
            )
        api_port = free_port()
        db = await create_pool(PostgresSettings(dsn=dsn))
        try:
            async with contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(running(provisioner))
                await stack.enter_async_context(running(housekeeping))
                api = None
                if api_app is not None:
                    await stack.enter_async_context(running(api_app, api_port))
                    api = f"http://127.0.0.1:{api_port}"
                session = await stack.enter_async_context(
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
                )
                bench = Bench(db, housekeeping, backend_port)
                cold = Series("repository, no spare (boots)")
                warm = Series(f"repository, warm pool of {POOL}")
                warm_api = Series(f"POST /v2.0/lbaas/loadbalancers, pool {POOL}")
                series = [cold, warm, warm_api]
                await bench.set_pool(0)
                for _ in range(cold_rounds):
                    await bench.repository_round(session, cold)
                for _ in range(rounds):
                    await bench.set_pool(POOL)
                    await bench.repository_round(session, warm)
                if api is not None:
                    for _ in range(rounds):
                        await bench.set_pool(POOL)
                        await bench.api_round(session, api, warm_api)
                await bench.set_pool(0)
        finally:
            await db.close()
            await backend_runner.cleanup()
            driver = provisioner.get(DRIVER)
            if driver is not None:
                for handle in await driver.list():
                    await driver.delete(handle.amphora_id)
    finally:
        nats_server.stop()
        pg.stop()
    print("LB create -> ACTIVE and serving (process driver, this machine):")
    for one in series:
        print("  " + one.line())
        if one.breakdown():
            print("  " + one.breakdown())
    print(f"  reference: one `haproxy -c` on this machine takes {haproxy_check_ms():.1f} ms")
    cold_p50 = series[0].p50() if series else float("nan")
    warm_p50 = series[1].p50() if len(series) > 1 else float("nan")
    print(f"  warm/cold p50 ratio: {warm_p50 / cold_p50:.2f} (cold = boots an amphora)")
    verdict = "met" if warm_p50 <= GOAL_MS else "NOT met"
    print(f"  goal: warm p50 <= {GOAL_MS:.0f} ms: {verdict} ({warm_p50:.1f} ms)")
    if len(series) > 2 and series[2].serving_ms:
        api_p50 = series[2].p50()
        verdict = "met" if api_p50 <= GOAL_MS else "NOT met"
        print(f"  through the API: p50 {api_p50:.1f} ms ({verdict})")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--cold", type=int, default=5)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.rounds, args.cold)))
