"""The operator listener: with ``operator_port`` set, ``/healthz``, ``/readyz`` and
``/metrics`` answer only there and the tenant API only on its own port (404 in the API's
error shape elsewhere), each without a version banner."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from deploy.local.ports import free_tcp_port
from services.api.__main__ import start_sites
from services.api.app import create_app
from tests.integration.api.conftest import api_settings


async def test_operator_endpoints_only_on_the_operator_port(pg_dsn: str, nats_url: str) -> None:
    settings = api_settings(pg_dsn, nats_url)
    settings = settings.model_copy(
        update={"port": free_tcp_port(), "operator_port": free_tcp_port()}
    )
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    try:
        await start_sites(runner, settings)
        tenant = f"http://127.0.0.1:{settings.port}"
        operator = f"http://127.0.0.1:{settings.operator_port}"
        async with aiohttp.ClientSession() as session:
            for path in ("/healthz", "/readyz", "/metrics"):
                async with session.get(operator + path) as reply:
                    assert reply.status in (200, 503), (path, reply.status)
                    assert "aiohttp" not in reply.headers.get("Server", "")
                async with session.get(tenant + path) as reply:
                    assert reply.status == 404, (path, reply.status)
                    assert (await reply.json())["code"] == 404
            async with session.get(operator + "/metrics") as reply:
                assert "fulcrum_api" in await reply.text()
            for path in ("/", "/v2/lbaas/loadbalancers"):
                async with session.get(tenant + path) as reply:
                    assert reply.status == 200, (path, reply.status)
                    assert "aiohttp" not in reply.headers.get("Server", "")
                async with session.get(operator + path) as reply:
                    assert reply.status == 404, (path, reply.status)
    finally:
        await runner.cleanup()
