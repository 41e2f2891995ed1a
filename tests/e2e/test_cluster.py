"""The cluster stack (``fulcrum up --cluster --amphora-hosts 2``, ``make up-cluster``) as a
user runs it, and the loss of one replica of each replicated part while it works.

One stack for the module: 3 NATS nodes, Patroni (etcd + 2 Postgres members), 2 replicas of
each service, the HAProxy front (HTTPS only, a certificate of the deployment CA that the
clouds.yaml trusts), amphorae on 2 netns hosts. The real ``openstack`` CLI creates
an LB through the front (its members listen on the hosts' gateway) and two ACTIVE_STANDBY LBs
whose MASTER and BACKUP sit on different hosts; then one API replica, one provisioner replica
(mid-create) and the event stream's leader node (during a burst of 50 creates) are killed with
SIGKILL. ``down`` leaves no process and no network namespace behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from tests.e2e.chaos import DEFAULT_SUBNET, Tenant, kill, pids, wait_ready
from tests.e2e.conftest import VENV_BIN, Backend, Stack, cloud_cli, free_port, start_stack
from tests.e2e.conftest import stop_stack as stop_and_check

pytestmark = pytest.mark.timeout(420)

SERVICES = ("api", "provisioner", "health", "housekeeping")
PARTS = {
    "etcd",
    "pg0",
    "pg1",
    "nats-1",
    "nats-2",
    "nats-3",
    "front",
    *(f"{service}-{index}" for service in SERVICES for index in (1, 2)),
}
BURST = 50


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``fulcrum up --cluster`` on a free front port; stopped at the end, nothing may remain."""
    state = tmp_path_factory.mktemp("cluster")
    running = start_stack(
        state, "--cluster", "--amphora-hosts", "2", "--port", str(free_port()), timeout=180
    )
    running = dataclasses.replace(running, pg_dsn=(state / "postgres.dsn").read_text().strip())
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            stop_and_check(running.proc, running.state)


def trust(stack: Stack) -> ssl.SSLContext:
    """Trusts the stack's deployment CA (the front's certificate)."""
    return ssl.create_default_context(cafile=str(stack.state / "ca" / "ca.pem"))


def front_session(stack: Stack) -> aiohttp.ClientSession:
    """A client of the front (HTTPS, trusting the deployment CA)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust(stack)))


def status_json(state: Path) -> dict[str, Any]:
    out = subprocess.run(
        [str(VENV_BIN / "fulcrum"), "status", "--json", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    data: dict[str, Any] = json.loads(out.stdout)
    return data


async def amphorae_per_lb(dsn: str, lb_ids: list[str]) -> dict[str, int]:
    """Live (not DELETED) amphorae of each LB, from the read model."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT lb_id, count(*) AS n FROM amphora_view "
            "WHERE lb_id = ANY($1::text[]) AND status <> 'DELETED' GROUP BY lb_id",
            lb_ids,
        )
    finally:
        await conn.close()
    return {lb_id: 0 for lb_id in lb_ids} | {row["lb_id"]: int(row["n"]) for row in rows}


def gateway(stack: Stack) -> str:
    """The amphora hosts' gateway: the members' address, reachable from every amphora."""
    return f"198.19.{stack.ports()['vip_octet']}.1"


def stack_namespaces(stack: Stack) -> list[str]:
    octet = stack.ports()["vip_octet"]
    names = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=True
    ).stdout.split("\n")
    return [n.split()[0] for n in names if n.startswith((f"a{octet}-", f"f{octet}-"))]


@pytest.fixture
async def members(cluster: Stack) -> AsyncIterator[list[Backend]]:
    """Two HTTP servers on the hosts' gateway answering their name (the LBs' members)."""
    runners: list[web.AppRunner] = []
    out: list[Backend] = []
    try:
        for i in range(2):
            backend = Backend(f"member-{i}", free_port())

            async def answer(request: web.Request, backend: Backend = backend) -> web.Response:
                backend.hits += 1
                return web.Response(text=backend.name)

            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", answer)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, gateway(cluster), backend.port).start()
            out.append(backend)
        yield out
    finally:
        for runner in runners:
            await runner.cleanup()


def live_agents(state: Path) -> int:
    """Amphora agents of the stack still running (by the drivers' pid files)."""
    count = 0
    for pid_file in (state / "amphorae").glob("**/agent.pid"):
        with contextlib.suppress(OSError, ValueError):
            count += _running(int(pid_file.read_text()))
    return count


async def create_all(tenant: Tenant, names: list[str], port: int, parallel: int) -> list[str]:
    gate = asyncio.Semaphore(parallel)

    async def one(name: str) -> str:
        async with gate:
            return await tenant.create_lb(name, port, timeout=120)

    return list(await asyncio.gather(*(one(name) for name in names)))


def test_status_lists_every_part_ready(cluster: Stack) -> None:
    status = status_json(cluster.state)
    assert status["ready"] and status["kind"] == "cluster", status
    assert {part["name"] for part in status["parts"]} == PARTS
    assert all(part["ready"] and part["pid"] for part in status["parts"]), status["parts"]
    # The API replicas' operator endpoints (their probes above) are not served through the front.
    for path in ("/healthz", "/readyz", "/metrics"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{cluster.api_url}{path}", timeout=10, context=trust(cluster))
        refused.value.close()
        assert refused.value.code == 404, path


def test_the_front_serves_https_only_with_a_certificate_of_the_deployment_ca(
    cluster: Stack,
) -> None:
    assert cluster.api_url.startswith("https://127.0.0.1:")
    assert f"cacert: {cluster.state / 'ca' / 'ca.pem'}" in cluster.clouds_yaml.read_text()
    with urllib.request.urlopen(cluster.api_url + "/", timeout=10, context=trust(cluster)) as ok:
        assert ok.status == 200
    with pytest.raises(urllib.error.URLError):  # the system CAs do not know this one
        urllib.request.urlopen(cluster.api_url + "/", timeout=10)
    plain = cluster.api_url.replace("https://", "http://", 1)
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        urllib.request.urlopen(plain + "/", timeout=10)


async def test_openstack_cli_through_the_front(cluster: Stack, members: list[Backend]) -> None:
    async with cloud_cli(cluster, "fulcrum").session() as cli:
        created = await cli(
            "loadbalancer", "create", "--name", "cli-lb", "--vip-subnet", "public-subnet",
            "-f", "json",
        )  # fmt: skip
        lb = json.loads(created.out)
        await cli.wait_for_status("loadbalancer", "show", "cli-lb")
        await cli.apply(
            "cli-lb",
            "loadbalancer", "listener", "create", "--name", "cli-listener", "--protocol", "HTTP",
            "--protocol-port", "80", "cli-lb",
        )  # fmt: skip
        await cli.apply(
            "cli-lb",
            "loadbalancer", "pool", "create", "--name", "cli-pool", "--protocol", "HTTP",
            "--lb-algorithm", "ROUND_ROBIN", "--listener", "cli-listener",
        )  # fmt: skip
        for backend in members:
            await cli.apply(
                "cli-lb",
                "loadbalancer", "member", "create", "--address", gateway(cluster),
                "--protocol-port", str(backend.port), "cli-pool",
            )  # fmt: skip
    answers = set()
    async with aiohttp.ClientSession() as session:
        for _ in range(6):
            async with session.get(
                f"http://{lb['vip_address']}/", headers={"Connection": "close"}
            ) as r:
                assert r.status == 200
                answers.add(await r.text())
    assert answers == {backend.name for backend in members}


async def test_active_standby_pairs_span_both_hosts(cluster: Stack) -> None:
    async with front_session(cluster) as session:
        tenant = Tenant(session, cluster.api_url, cluster.secret("admin.token"))
        status, profile = await tenant.call(
            "POST",
            "/v2/lbaas/flavorprofiles",
            {
                "flavorprofile": {
                    "name": "ha",
                    "provider_name": "amphora",
                    "flavor_data": '{"loadbalancer_topology": "ACTIVE_STANDBY"}',
                }
            },
        )
        assert status == 201, profile
        profile_id = profile["flavorprofile"]["id"]
        body = {"flavor": {"name": "ha", "flavor_profile_id": profile_id}}
        status, flavor = await tenant.call("POST", "/v2/lbaas/flavors", body)
        assert status == 201, flavor
        ids = []
        for name in ("pair-a", "pair-b"):
            lb = {
                "name": name,
                "vip_subnet_id": DEFAULT_SUBNET,
                "flavor_id": flavor["flavor"]["id"],
            }
            status, created = await tenant.call(
                "POST", "/v2/lbaas/loadbalancers", {"loadbalancer": lb}
            )
            assert status == 201, created
            ids.append(created["loadbalancer"]["id"])
        for lb_id in ids:
            await tenant.wait_active(lb_id, timeout=120)
            status, listed = await tenant.call(
                "GET", f"/v2/octavia/amphorae?loadbalancer_id={lb_id}"
            )
            assert status == 200, listed
            hosts = {}
            for amphora in listed["amphorae"]:
                status, shown = await tenant.call("GET", f"/v2/octavia/amphorae/{amphora['id']}")
                hosts[shown["amphora"]["role"]] = shown["amphora"]["cached_zone"]
            assert set(hosts) == {"MASTER", "BACKUP"} and set(hosts.values()) == {"h1", "h2"}, hosts


async def test_a_killed_api_replica_is_invisible_through_the_front(cluster: Stack) -> None:
    headers = {"X-Auth-Token": cluster.secret("admin.token")}
    url = f"{cluster.api_url}/v2/lbaas/loadbalancers"
    failures: list[str] = []
    sent = 0
    async with front_session(cluster) as session:
        deadline = time.monotonic() + 6.0
        killed: dict[str, int] = {}
        while time.monotonic() < deadline and sent < 5000:
            if not killed and time.monotonic() > deadline - 4.5:
                killed = kill(cluster.state, ["api-1"])
            try:
                async with session.get(url, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        failures.append(f"HTTP {resp.status}")
            except aiohttp.ClientError as exc:
                failures.append(repr(exc))
            sent += 1
    assert killed, "api-1 was not running"
    assert sent > 50 and not failures, (sent, failures[:5])
    await wait_ready(cluster.state, timeout=60, after=killed)


async def test_a_provisioner_replica_killed_mid_create(
    cluster: Stack, backends: list[Backend]
) -> None:
    async with front_session(cluster) as session:
        tenant = Tenant(session, cluster.api_url, cluster.secret("admin.token"))
        names = [f"prov-kill-{i}" for i in range(4)]
        ids = await create_all(tenant, names, backends[0].port, parallel=4)
        killed = kill(cluster.state, ["provisioner-1"])
        assert killed, "provisioner-1 was not running"
        for lb_id in ids:
            await tenant.wait_active(lb_id, timeout=120)
    assert set((await amphorae_per_lb(cluster.pg_dsn, ids)).values()) == {1}
    await wait_ready(cluster.state, timeout=60, after=killed)


def stream_leader(state: Path) -> str:
    """The NATS node leading the event stream's raft group."""
    ports = json.loads((state / "nats" / "ports.json").read_text())
    monitor = ports["nats-1"]["monitor"]
    url = f"http://127.0.0.1:{monitor}/jsz?streams=true"
    with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 (loopback)
        data = json.loads(answer.read())
    for account in data.get("account_details", []):
        for stream in account.get("stream_detail", []):
            if stream["name"] == "FULCRUM_EVENTS":
                return str(stream["cluster"]["leader"])
    raise AssertionError(f"no FULCRUM_EVENTS stream in {data}")


async def test_the_stream_leader_killed_during_a_burst_of_creates(
    cluster: Stack, backends: list[Backend]
) -> None:
    leader = stream_leader(cluster.state)
    async with front_session(cluster) as session:
        tenant = Tenant(session, cluster.api_url, cluster.secret("admin.token"))
        names = [f"burst-{i}" for i in range(BURST)]
        creating = asyncio.create_task(create_all(tenant, names, backends[0].port, parallel=8))
        await asyncio.sleep(1.0)
        killed = kill(cluster.state, [leader])
        assert killed, f"{leader} was not running"
        ids = await creating
        for lb_id in ids:
            await tenant.wait_active(lb_id, timeout=180)
    assert len(set(ids)) == BURST
    assert set((await amphorae_per_lb(cluster.pg_dsn, ids)).values()) == {1}
    await wait_ready(cluster.state, timeout=60, after=killed)  # the node rejoined
    assert stream_leader(cluster.state)


def test_down_leaves_nothing_running(cluster: Stack) -> None:
    assert live_agents(cluster.state) > 0 and stack_namespaces(cluster)
    pids_before = pids(cluster.state)
    cluster.proc.send_signal(signal.SIGTERM)
    cluster.proc.wait(timeout=120)
    stop_and_check(cluster.proc, cluster.state)  # `fulcrum down`, then nothing may remain
    assert live_agents(cluster.state) == 0
    assert stack_namespaces(cluster) == []
    assert not any(_running(pid) for pid in pids_before.values())


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
