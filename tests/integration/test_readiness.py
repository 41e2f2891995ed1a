"""``/readyz`` of real services and of a real amphora agent: ready with every check ok, not
ready (503, the failing check named and explained) while a dependency is down or hangs, ready
again once it is back; ``/healthz`` stays 200 throughout.

The provisioner runs on the test's own NATS (stopped and started again), housekeeping on a
private Postgres (stopped and started again, same port) and a NATS that is frozen with
SIGSTOP; the agent is a real process with a real HAProxy, probed over mutual TLS.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres
from libs.common.events import Metadata
from libs.common.events.amphora import AmphoraDeleted
from libs.common.eventstore import PostgresEventStore
from libs.common.service import DB
from libs.common.settings import RelaySettings
from services.api.app import create_app as create_api
from services.health.app import create_app as create_health
from services.housekeeping.app import create_app as create_housekeeping
from services.provisioner.app import create_app as create_provisioner
from tests.integration.api.conftest import api_settings
from tests.integration.health.conftest import health_settings
from tests.integration.housekeeping.conftest import housekeeping_settings
from tests.integration.provisioner.conftest import provisioner_settings
from tests.integration.test_amphora_agent import (
    Agent,
    Backends,
    LoadBalancer,
    Pki,
    agent_client,
    free_port,
    launch_agent,
    make_pki,
    shut_down,
)

META = Metadata(actor="test")
# /readyz must answer within about one check timeout (1 s) even when a dependency hangs.
ANSWER_BOUND = 1.6


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def private_postgres() -> Iterator[EmbeddedPostgres]:
    """A Postgres of this test alone (started), which it may stop and start again."""
    # Not under pytest's basetemp: its retention would keep a 40 MB data dir per run.
    state_dir = Path(tempfile.mkdtemp(prefix="fulcrum-test-readiness-pg-"))
    server = EmbeddedPostgres(state_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on a free loopback port; returns the runner and the base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def get(
    http: aiohttp.ClientSession, url: str, tls: ssl.SSLContext | None = None
) -> tuple[int, dict[str, Any]]:
    async with http.get(url, ssl=tls if tls is not None else True) as response:
        return response.status, await response.json()


async def until_status(
    http: aiohttp.ClientSession,
    url: str,
    status: int,
    timeout: float = 20.0,
    tls: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """Poll ``url`` until it answers ``status``; returns that body."""
    deadline = time.monotonic() + timeout
    while True:
        code, body = await get(http, url, tls)
        if code == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} still answers {code} after {timeout} s: {body}")
        await asyncio.sleep(0.1)


async def timed_get(
    http: aiohttp.ClientSession, url: str, tls: ssl.SSLContext | None = None
) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    code, body = await get(http, url, tls)
    return code, body, time.monotonic() - started


def assert_ready(body: dict[str, Any], service: str, checks: set[str]) -> None:
    assert body["status"] == "ready" and body["service"] == service, body
    assert set(body["checks"]) == checks, body
    assert all(check["ok"] and check["detail"] for check in body["checks"].values()), body


# -- control-plane services --------------------------------------------------------------------


async def test_api_and_health_are_ready_with_their_checks(
    pg_dsn: str, nats_url: str, http: aiohttp.ClientSession
) -> None:
    apps = {
        "api": create_api(api_settings(pg_dsn, nats_url)),
        "health": create_health(health_settings(pg_dsn, nats_url)),
    }
    runners: list[web.AppRunner] = []
    try:
        for name, app in apps.items():
            runner, base = await serve(app)
            runners.append(runner)
            ready = await until_status(http, f"{base}/readyz", 200)
            assert_ready(ready, name, {"postgres", "nats", "outbox"})
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_provisioner_is_not_ready_while_nats_is_down(
    pg_dsn: str, nats_factory: EmbeddedNats, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = provisioner_settings(pg_dsn, nats_factory.start(), tmp_path).model_copy(
        update={"relay": RelaySettings(poll_interval=0.5, stuck_after=1.0)}
    )
    app = create_provisioner(settings)
    runner, base = await serve(app)
    try:
        ready = await until_status(http, f"{base}/readyz", 200)
        assert_ready(ready, "provisioner", {"postgres", "nats", "consumers", "outbox"})
        assert "provisioner-lb-lifecycle" in ready["checks"]["consumers"]["detail"]
        assert ready["checks"]["outbox"]["detail"] == "empty"

        nats_factory.stop()
        down = await until_status(http, f"{base}/readyz", 503)
        assert down["status"] == "not ready"
        assert down["checks"]["nats"] == {
            "ok": False,
            "detail": "not connected to NATS (reconnecting)",
        }
        assert down["checks"]["postgres"]["ok"] is True
        assert await get(http, f"{base}/healthz") == (
            200,
            {"status": "ok", "service": "provisioner"},
        )

        # An event appended now cannot leave the outbox: past stuck_after it is reported stuck.
        store = PostgresEventStore(app[DB])
        await store.append("amphora-readiness", 0, [AmphoraDeleted(amphora_id="r")], META)
        deadline = time.monotonic() + 10
        while (outbox := (await get(http, f"{base}/readyz"))[1]["checks"]["outbox"])["ok"]:
            assert time.monotonic() < deadline, outbox
            await asyncio.sleep(0.1)
        assert outbox["detail"].startswith("stuck: 1 row waiting"), outbox

        nats_factory.start()
        back = await until_status(http, f"{base}/readyz", 200)
        assert_ready(back, "provisioner", {"postgres", "nats", "consumers", "outbox"})
        assert back["checks"]["outbox"]["detail"] == "empty"  # the relay delivered the event
    finally:
        await runner.cleanup()


async def test_housekeeping_is_not_ready_while_postgres_is_down_or_nats_hangs(
    private_postgres: EmbeddedPostgres, nats_factory: EmbeddedNats, http: aiohttp.ClientSession
) -> None:
    settings = housekeeping_settings(private_postgres.dsn, nats_factory.start())
    runner, base = await serve(create_housekeeping(settings))
    try:
        assert_ready(
            await until_status(http, f"{base}/readyz", 200),
            "housekeeping",
            {"postgres", "nats", "outbox"},
        )

        # A NATS that accepts nothing and answers nothing: the check times out, /readyz not.
        nats_pid = nats_factory.pid
        assert nats_pid is not None
        os.kill(nats_pid, signal.SIGSTOP)
        try:
            code, frozen, took = await timed_get(http, f"{base}/readyz")
        finally:
            os.kill(nats_pid, signal.SIGCONT)
        assert code == 503 and took < ANSWER_BOUND, (took, frozen)
        assert frozen["checks"]["nats"] == {"ok": False, "detail": "no answer within 1 s"}
        assert frozen["checks"]["postgres"]["ok"] is True
        await until_status(http, f"{base}/readyz", 200)

        await asyncio.to_thread(private_postgres.stop)
        down = await until_status(http, f"{base}/readyz", 503)
        assert down["checks"]["postgres"]["ok"] is False
        assert down["checks"]["postgres"]["detail"], down  # the driver's reason
        assert down["checks"]["nats"]["ok"] is True
        assert (await get(http, f"{base}/healthz"))[0] == 200

        await asyncio.to_thread(private_postgres.start)  # same port: the pool reconnects
        assert_ready(
            await until_status(http, f"{base}/readyz", 200),
            "housekeeping",
            {"postgres", "nats", "outbox"},
        )
    finally:
        await runner.cleanup()


# -- the amphora agent -------------------------------------------------------------------------


def client_tls(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.check_hostname = False
    context.load_cert_chain(pki.path("client.pem"), pki.path("client.key"))
    return context


@pytest.fixture
def agent_pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


async def test_agent_is_ready_while_haproxy_answers_or_before_any_config(
    agent_pki: Pki, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    tls = client_tls(agent_pki)
    state = tmp_path / "amphora"
    agents: list[Agent] = [launch_agent(agent_pki, state)]
    try:
        url = f"{agents[-1].url}/readyz"
        fresh = await until_status(http, url, 200, tls=tls)
        assert fresh == {
            "status": "ready",
            "service": "amphora",
            "checks": {
                "haproxy": {
                    "ok": True,
                    "detail": "no configuration pushed yet; ready to accept one",
                }
            },
        }

        async with agent_client(agent_pki, agents[-1]) as client:
            info = await client.info()
            backends = Backends({name: free_port() for name in ("s1", "s2")})
            balancer = LoadBalancer(info.stats_socket, backends)
            await client.apply_config(balancer.config())
        serving = await until_status(http, url, 200, tls=tls)
        haproxy_pid = agents[-1].haproxy_pid()
        assert serving["checks"]["haproxy"]["detail"].startswith(
            f"haproxy pid {haproxy_pid} answers on its stats socket"
        ), serving

        # A HAProxy that hangs: /readyz still answers in time, and says so.
        assert haproxy_pid is not None
        os.kill(haproxy_pid, signal.SIGSTOP)
        try:
            code, frozen, took = await timed_get(http, url, tls)
        finally:
            os.kill(haproxy_pid, signal.SIGCONT)
        assert code == 503 and took < ANSWER_BOUND, (took, frozen)
        assert frozen["checks"]["haproxy"]["ok"] is False
        assert frozen["checks"]["haproxy"]["detail"].startswith(
            "HaproxyUnavailable: no haproxy answers on"
        ), frozen
        await until_status(http, url, 200, tls=tls)

        # The agent restarted: its config is installed but nothing serves it until re-pushed.
        shut_down(agents[-1])
        agents.append(launch_agent(agent_pki, state))
        url = f"{agents[-1].url}/readyz"
        stale = await until_status(http, url, 503, tls=tls)
        assert stale["checks"]["haproxy"]["detail"].startswith(
            "haproxy is not running although a configuration is installed"
        ), stale
        assert (await get(http, f"{agents[-1].url}/healthz", tls))[0] == 200
        async with agent_client(agent_pki, agents[-1]) as client:
            await client.apply_config(balancer.config())
            assert (await until_status(http, url, 200, tls=tls))["checks"]["haproxy"]["ok"]
            await client.stop_haproxy()
        gone = await until_status(http, url, 200, tls=tls)
        assert gone["checks"]["haproxy"]["detail"].startswith("no configuration pushed yet")
    finally:
        for agent in agents:
            shut_down(agent)
