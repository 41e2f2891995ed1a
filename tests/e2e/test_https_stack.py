"""``fulcrum up --https``: the API serves HTTPS with a certificate of the deployment CA, the
clouds.yaml it writes trusts that CA (the real ``openstack`` CLI works unmodified, with a
password and with the admin token), plain HTTP gets no answer, and the operator endpoints
answer on their own plain-HTTP port, not on the API's."""

from __future__ import annotations

import asyncio
import http.client
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack, cloud_cli, free_port, start_stack, stop_stack


async def test_https_stack_with_the_real_cli(tmp_path: Path) -> None:
    state = tmp_path / "stack"
    stack = start_stack(state, "--port", str(free_port()), "--https")
    try:
        assert stack.api_url.startswith("https://127.0.0.1:")
        assert f"cacert: {state / 'ca' / 'ca.pem'}" in stack.clouds_yaml.read_text()
        admin_token_listed = asyncio.create_task(
            cloud_cli(stack, "fulcrum-admin-token")("loadbalancer", "list", "-f", "json")
        )
        async with cloud_cli(stack, "fulcrum").session() as cli:
            assert (await cli("loadbalancer", "list", "-f", "json")).json() == []
            subnets = await cli("subnet", "list", "-f", "json")
            assert [s["Name"] for s in subnets.json()] == ["public-subnet"]  # type: ignore[index]
        assert (await admin_token_listed).json() == []
        await asyncio.to_thread(_raw_http_checks, stack, state / "ca" / "ca.pem")
    finally:
        stop_stack(stack.proc, state)


def _raw_http_checks(stack: Stack, ca: Path) -> None:
    """HTTPS trusted only with the deployment CA, no plain HTTP, operator endpoints apart."""
    trusting = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(stack.api_url + "/", timeout=5, context=trusting) as reply:
        assert reply.status == 200 and reply.headers["Server"] == "fulcrum"
    with pytest.raises(urllib.error.URLError):  # the system CAs do not know this one
        urllib.request.urlopen(stack.api_url + "/", timeout=5)
    plain = stack.api_url.replace("https://", "http://", 1)
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        urllib.request.urlopen(plain + "/", timeout=5)
    operator = f"http://127.0.0.1:{stack.ports()['api_operator']}"
    for path in ("/readyz", "/metrics"):
        with urllib.request.urlopen(operator + path, timeout=5) as reply:
            assert reply.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(stack.api_url + path, timeout=5, context=trusting)
        refused.value.close()  # an HTTPError holds the answer's TLS socket open
        assert refused.value.code == 404
