"""The client's address behind the cluster's HAProxy front (``render_front``, ``option
forwardfor``) with the API trusting the front's address: two clients through the front are
throttled apart, a direct client's forged ``X-Forwarded-For`` is counted under its own address,
and the access log writes the client's address."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from deploy.local.cluster import HAPROXY, front_certificate, render_front, unavailable_response
from deploy.local.ports import free_tcp_port
from libs.common.pki import CA_CERT_FILE
from services.api.app import create_app
from services.api.auth.identity import bootstrap_config, save
from services.api.auth.throttle import address_scope
from services.api.auth.tokens import new_token_key
from services.api.http.client_address import ClientAccessLogger
from tests.integration.api.conftest import api_settings
from tests.integration.api.test_token_security import _password

TOKENS = "/v3/auth/tokens"


@dataclass(frozen=True)
class Urls:
    front: str  # HTTPS, the deployment CA's certificate
    direct: str  # the API replica's own plain-HTTP port
    trust: ssl.SSLContext  # trusts the deployment CA


ACCESS_LOG = "fulcrum.test.access"


async def _login(
    url: str, source: str, user: str, password: str, trust: ssl.SSLContext, **headers: str
) -> int:
    """The status of one password login to ``url`` from the loopback address ``source``."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0), ssl=trust)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(url + TOKENS, json=_password(user, password), headers=headers) as reply,
    ):
        return reply.status


async def _wait_ready(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"{url} not ready within {timeout} s")


@pytest.fixture
async def behind_front(pg_dsn: str, nats_url: str, tmp_path: Path) -> AsyncIterator[Urls]:
    """One API replica trusting 127.0.0.1, the address the front connects from, behind the
    front on HTTPS."""
    identity = tmp_path / "identity.yaml"
    save(identity, bootstrap_config("admin-pw"))
    settings = api_settings(
        pg_dsn,
        nats_url,
        auth_strategy="keystone",
        token_keys=new_token_key(),
        identity_file=identity,
        login_failures_per_user=100,
        login_failures_per_address=3,
        login_failure_window=120,
        trusted_proxies=["127.0.0.1/32"],
    )
    runner = web.AppRunner(
        create_app(settings),
        access_log=logging.getLogger(ACCESS_LOG),
        access_log_class=ClientAccessLogger,
    )
    await runner.setup()
    haproxy: asyncio.subprocess.Process | None = None
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        api_port = runner.addresses[0][1]
        front, monitor = free_tcp_port(), free_tcp_port()
        unavailable = tmp_path / "front-503.http"
        unavailable.write_text(unavailable_response())
        config = tmp_path / "front.cfg"
        # The replica's operator endpoints are on its API port (no operator_port).
        certificate = front_certificate(tmp_path)
        config.write_text(
            render_front(front, monitor, [api_port], [api_port], unavailable, certificate)
        )
        haproxy = await asyncio.create_subprocess_exec(
            HAPROXY, "-db", "-f", str(config), stdout=asyncio.subprocess.DEVNULL
        )
        await _wait_ready(f"http://127.0.0.1:{monitor}/readyz")
        trust = ssl.create_default_context(cafile=str(tmp_path / "ca" / CA_CERT_FILE))
        yield Urls(f"https://127.0.0.1:{front}", f"http://127.0.0.1:{api_port}", trust)
    finally:
        if haproxy is not None and haproxy.returncode is None:
            haproxy.terminate()
            try:
                await asyncio.wait_for(haproxy.wait(), 10)
            except TimeoutError:
                haproxy.kill()
                await haproxy.wait()
        await runner.cleanup()


async def _failures_of(pg_dsn: str, address: str) -> int:
    conn = await asyncpg.connect(pg_dsn)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM login_failures WHERE scope = $1", address_scope(address)
        )
        return count
    finally:
        await conn.close()


async def test_clients_behind_the_front_are_throttled_apart_and_forged_headers_do_not_count(
    behind_front: Urls, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    front, direct, trust = behind_front.front, behind_front.direct, behind_front.trust
    caplog.set_level(logging.INFO, logger=ACCESS_LOG)
    for _ in range(3):  # 127.0.0.2 spends its address's failures through the front
        assert await _login(front, "127.0.0.2", "nobody", "guess", trust) == 401
    assert await _login(front, "127.0.0.2", "admin", "admin-pw", trust) == 429
    # 127.0.0.3 through the same front is not held back by 127.0.0.2's failures.
    assert await _login(front, "127.0.0.3", "admin", "admin-pw", trust) == 201
    assert await _failures_of(pg_dsn, "127.0.0.2") == 3
    assert await _failures_of(pg_dsn, "127.0.0.1") == 0  # nothing counted under the front

    # A direct client naming 127.0.0.3 in X-Forwarded-For is counted under its own address.
    forged = {"X-Forwarded-For": "127.0.0.3"}
    for _ in range(3):
        assert await _login(direct, "127.0.0.4", "nobody", "guess", trust, **forged) == 401
    assert await _failures_of(pg_dsn, "127.0.0.4") == 3
    assert await _failures_of(pg_dsn, "127.0.0.3") == 0
    assert await _login(direct, "127.0.0.4", "admin", "admin-pw", trust, **forged) == 429
    # Through the front, a client's own X-Forwarded-For is not believed either.
    assert await _login(front, "127.0.0.5", "nobody", "guess", trust, **forged) == 401
    assert await _failures_of(pg_dsn, "127.0.0.5") == 1
    assert await _login(front, "127.0.0.3", "admin", "admin-pw", trust) == 201

    lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOG]
    assert any(line.startswith("127.0.0.2 ") and " 429 " in line for line in lines), lines
    assert any(line.startswith("127.0.0.4 ") for line in lines), lines
    assert not any(line.startswith("127.0.0.1 ") and TOKENS in line for line in lines), lines
