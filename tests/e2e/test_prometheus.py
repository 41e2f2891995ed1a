"""A real Prometheus (Debian's ``prometheus``) scrapes a running ``fulcrum up`` stack: every
service's ``/metrics`` is up, the families of one LB's life are there (API latency by route
template, a 501 counted as refused, LBs by status, consumer lag, listener traffic from the
heartbeats), and the shipped rules load. Plus ``promtool check rules`` and ``promtool test
rules`` over deploy/prometheus/."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Backend, Stack, free_port

pytestmark = pytest.mark.timeout(300)
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
SERVICES = ("api", "provisioner", "health", "housekeeping")
WAIT_S = 60.0


def test_the_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool missing: make sysdeps (Debian package prometheus)"
    checked = subprocess.run(
        [promtool, "check", "rules", "fulcrum-rules.yml"],
        cwd=RULES,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout
    tested = subprocess.run(
        [promtool, "test", "rules", "fulcrum-rules.test.yml"],
        cwd=RULES,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def _metrics_port(ports: dict[str, int], service: str) -> int:
    """The API's operator listener when it has one, else the service's port."""
    return ports.get(f"{service}_operator") or ports[service]


def scrape_config(ports: dict[str, int]) -> dict[str, Any]:
    """A prometheus.yml for the stack: one job ``fulcrum-<service>`` per service."""
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES / "fulcrum-rules.yml")],
        "scrape_configs": [
            {
                "job_name": f"fulcrum-{service}",
                "static_configs": [{"targets": [f"127.0.0.1:{_metrics_port(ports, service)}"]}],
            }
            for service in SERVICES
        ],
    }


@pytest.fixture
def prometheus(stack: Stack, tmp_path: Path) -> Iterator[str]:
    """Prometheus on a free loopback port scraping ``stack``; stopped by pid."""
    binary = shutil.which("prometheus")
    assert binary is not None, "prometheus missing: make sysdeps (Debian package prometheus)"
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps(scrape_config(stack.ports())))  # JSON is YAML
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 (the child's)
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class Api:
    def __init__(self, stack: Stack, session: aiohttp.ClientSession) -> None:
        self.base = stack.api_url
        self.headers = {"X-Auth-Token": stack.secret("admin.token")}
        self.session = session

    async def call(self, method: str, path: str, body: Any = None, status: int = 0) -> Any:
        url = self.base + path
        async with self.session.request(method, url, json=body, headers=self.headers) as resp:
            if status:
                assert resp.status == status, (method, path, resp.status, await resp.text())
            else:
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


async def query(session: aiohttp.ClientSession, prometheus: str, expr: str) -> list[Any]:
    async with session.get(f"{prometheus}/api/v1/query", params={"query": expr}) as resp:
        answer = await resp.json()
    assert answer["status"] == "success", answer
    result: list[Any] = answer["data"]["result"]
    return result


async def until(
    session: aiohttp.ClientSession, prometheus: str, expr: str, timeout: float = 30.0
) -> list[Any]:
    """The first non-empty result of ``expr`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await query(session, prometheus, expr)
        except aiohttp.ClientError:
            result = []  # Prometheus still starting
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"Prometheus has no {expr} after {timeout} s")
        await asyncio.sleep(0.5)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as opened:
        yield opened


async def test_prometheus_scrapes_every_service_and_sees_an_lb_and_its_traffic(
    stack: Stack, prometheus: str, session: aiohttp.ClientSession, backends: list[Backend]
) -> None:
    api = Api(stack, session)
    subnet = (await api.call("GET", "/v2.0/subnets?name=public-subnet"))["subnets"][0]["id"]
    lb = (
        await api.call(
            "POST", "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": subnet}}
        )
    )["loadbalancer"]
    await api.active(lb["id"])
    port = free_port()
    listener = (
        await api.call(
            "POST",
            "/v2/lbaas/listeners",
            {"listener": {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": port}},
        )
    )["listener"]
    await api.active(lb["id"])
    pool = (
        await api.call(
            "POST",
            "/v2/lbaas/pools",
            {
                "pool": {
                    "listener_id": listener["id"],
                    "protocol": "HTTP",
                    "lb_algorithm": "ROUND_ROBIN",
                }
            },
        )
    )["pool"]
    await api.active(lb["id"])
    await api.call(
        "POST",
        f"/v2/lbaas/pools/{pool['id']}/members",
        {"member": {"address": "127.0.0.1", "protocol_port": backends[0].port}},
    )
    lb = await api.active(lb["id"])
    for _ in range(5):
        url = f"http://{lb['vip_address']}:{port}/"
        async with session.get(url, headers={"Connection": "close"}) as resp:
            assert resp.status == 200
    # A provider refusal (501): not a server error.
    refused = {"name": "refused", "provider_name": "amphora", "flavor_data": '{"bogus": 1}'}
    await api.call("POST", "/v2/lbaas/flavorprofiles", {"flavorprofile": refused}, status=501)

    up = await until(session, prometheus, 'up{job=~"fulcrum-.*"} == 1')
    deadline = time.monotonic() + 20
    while len(up) < len(SERVICES) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        up = await query(session, prometheus, 'up{job=~"fulcrum-.*"} == 1')
    assert sorted(r["metric"]["job"] for r in up) == [f"fulcrum-{s}" for s in sorted(SERVICES)]

    posted = await until(
        session,
        prometheus,
        'fulcrum_api_http_request_duration_seconds_count{route="/v2/lbaas/loadbalancers",'
        'method="POST",status_class="2xx"}',
    )
    assert float(posted[0]["value"][1]) >= 1
    await until(
        session,
        prometheus,
        'fulcrum_api_http_request_duration_seconds_count{route="/v2/lbaas/flavorprofiles",'
        'status_class="refused"} >= 1',
    )
    assert not await query(
        session, prometheus, 'fulcrum_api_http_request_duration_seconds_count{status_class="5xx"}'
    )
    await until(
        session,
        prometheus,
        'fulcrum_housekeeping_loadbalancers{provisioning_status="ACTIVE"} >= 1',
    )
    await until(session, prometheus, "fulcrum_provisioner_event_consume_lag_seconds_count > 0")
    await until(session, prometheus, "fulcrum_provisioner_consumer_pending_messages")
    await until(session, prometheus, 'fulcrum_health_heartbeats_total{outcome="accepted"} > 0')
    traffic = await until(
        session,
        prometheus,
        f'fulcrum_health_listener_connections{{listener_id="{listener["id"]}"}} >= 5',
    )
    assert traffic[0]["metric"]["project_id"] == lb["project_id"]
    assert traffic[0]["metric"]["loadbalancer_id"] == lb["id"]
    await until(session, prometheus, 'process_resident_memory_bytes{job="fulcrum-api"}')
    await until(session, prometheus, "fulcrum:api_requests:rate5m")  # a recording rule ran

    async with session.get(f"{prometheus}/api/v1/rules") as resp:
        groups = (await resp.json())["data"]["groups"]
    assert {g["name"] for g in groups} == {"fulcrum-recording", "fulcrum-alerts"}
