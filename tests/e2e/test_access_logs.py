"""Log offloading through the whole stack: ``fulcrum up`` with the provisioner's
``tenant_log_targets`` set (FULCRUM_PROVISIONER_TENANT_LOG_TARGETS) ships the amphora's
HAProxy access log to a syslog receiver on loopback, one Octavia-format line per request."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Backend, Stack, free_port, start_stack, stop_stack
from tests.integration.test_access_logs import Receiver

pytestmark = pytest.mark.timeout(300)
WAIT_S = 60.0


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        Receiver, local_addr=("127.0.0.1", 0)
    )
    try:
        yield protocol, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


@pytest.fixture
def logged_stack(
    receiver: tuple[Receiver, int],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stack]:
    monkeypatch.setenv(
        "FULCRUM_PROVISIONER_TENANT_LOG_TARGETS", json.dumps([f"127.0.0.1:{receiver[1]}"])
    )
    state = tmp_path_factory.mktemp("logged-stack")
    running = start_stack(state, "--port", str(free_port()))
    try:
        yield running
    finally:
        stop_stack(running.proc, state)


class Client:
    def __init__(self, stack: Stack, session: aiohttp.ClientSession) -> None:
        self.base = stack.api_url
        self.headers = {"X-Auth-Token": stack.secret("admin.token")}
        self.session = session

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        url = self.base + path
        async with self.session.request(method, url, json=body, headers=self.headers) as resp:
            assert resp.status < 300, (method, path, resp.status, await resp.text())
            return await resp.json()

    async def active(self, lb_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            lb = (await self.call("GET", f"/v2/lbaas/loadbalancers/{lb_id}"))["loadbalancer"]
            if lb["provisioning_status"] == "ACTIVE":
                return dict(lb)
            assert lb["provisioning_status"] != "ERROR", lb
            await asyncio.sleep(0.2)
        raise AssertionError(f"load balancer {lb_id} not ACTIVE in {WAIT_S} s")


async def test_access_log_of_a_request_reaches_the_tenant_syslog_target(
    logged_stack: Stack, receiver: tuple[Receiver, int], backends: list[Backend]
) -> None:
    messages, _ = receiver
    async with aiohttp.ClientSession() as session:
        api = Client(logged_stack, session)
        subnets = await api.call("GET", "/v2.0/subnets?name=public-subnet")
        subnet = subnets["subnets"][0]["id"]
        lb = (
            await api.call(
                "POST", "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet}}
            )
        )["loadbalancer"]
        await api.active(lb["id"])
        port = free_port()
        listener = await api.call(
            "POST",
            "/v2/lbaas/listeners",
            {
                "listener": {
                    "loadbalancer_id": lb["id"],
                    "protocol": "HTTP",
                    "protocol_port": port,
                }
            },
        )
        await api.active(lb["id"])
        body = {"listener_id": listener["listener"]["id"], "protocol": "HTTP"}
        pool = await api.call(
            "POST", "/v2/lbaas/pools", {"pool": {**body, "lb_algorithm": "ROUND_ROBIN"}}
        )
        await api.active(lb["id"])
        await api.call(
            "POST",
            f"/v2/lbaas/pools/{pool['pool']['id']}/members",
            {"member": {"address": "127.0.0.1", "protocol_port": backends[0].port}},
        )
        lb = await api.active(lb["id"])
        url = f"http://{lb['vip_address']}:{port}/logged-path"
        async with session.get(url, headers={"Connection": "close"}) as resp:
            assert resp.status == 200

    pattern = rf"^<134>.* {lb['project_id']} {lb['id']} {listener['listener']['id']} 127\.0\.0\.1 "
    pattern += r'\d+ \S+ "GET /logged-path HTTP/1.1" 200 '
    deadline = time.monotonic() + 10
    while not any(re.search(pattern, m) for m in messages.messages):
        assert time.monotonic() < deadline, messages.messages
        await asyncio.sleep(0.05)
