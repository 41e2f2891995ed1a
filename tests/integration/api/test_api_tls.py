"""The API's HTTPS listener (``FULCRUM_API_TLS_CERT_FILE``/``_KEY_FILE``): a client trusting
the deployment CA gets answers; one that does not, or that speaks plain HTTP, gets none;
half a configuration refuses to start."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from libs.common.errors import ConfigurationError
from libs.common.pki import DeploymentCA
from services.api.__main__ import server_tls
from services.api.app import create_app
from tests.integration.api.conftest import api_settings


async def test_https_listener_with_the_operators_certificate(
    pg_dsn: str, nats_url: str, tmp_path: Path
) -> None:
    ca = DeploymentCA.load_or_create(tmp_path / "ca")
    cert, key = ca.issue_server_cert("api", ["127.0.0.1", "localhost"])
    (tmp_path / "api.pem").write_bytes(cert)
    (tmp_path / "api.key").write_bytes(key)
    settings = api_settings(
        pg_dsn,
        nats_url,
        tls_cert_file=str(tmp_path / "api.pem"),
        tls_key_file=str(tmp_path / "api.key"),
    )
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls(settings)).start()
        port = runner.addresses[0][1]
        trusting = ssl.create_default_context(cafile=str(ca.cert_path))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://127.0.0.1:{port}/", ssl=trusting) as reply:
                assert reply.status == 200
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with session.get(f"https://127.0.0.1:{port}/"):
                    pass
            with pytest.raises(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/") as plain:
                    await plain.read()
    finally:
        await runner.cleanup()


def test_certificate_and_key_go_together(pg_dsn: str, nats_url: str) -> None:
    assert server_tls(api_settings(pg_dsn, nats_url)) is None
    with pytest.raises(ConfigurationError, match="go together"):
        server_tls(api_settings(pg_dsn, nats_url, tls_cert_file="/nonexistent.pem"))
