"""The real ``openstack`` CLI and openstacksdk, unmodified, against ``fulcrum up``.

Keystone password auth (the clouds.yaml ``make up`` writes), the operator's admin token, and
``auth_type none`` against a no-auth API replica; then openstacksdk. Traffic really flows
through the VIP to the members.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Backend, Cli, Stack, cloud_cli, free_port

pytestmark = pytest.mark.timeout(600)


async def fetch(url: str) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Connection": "close"}) as resp:
            assert resp.status == 200
            return await resp.text()


def row(out: str) -> dict[str, str]:
    """``-f shell`` output (key="value" lines) as a dict."""
    pairs = (line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {k: v.strip('"') for k, v in pairs}


async def test_seed_article_flow_with_keystone(stack: Stack, backends: list[Backend]) -> None:
    cli = cloud_cli(stack, "fulcrum")
    async with cli.session() as session:
        lb = row(
            (
                await session(
                    "loadbalancer",
                    "create",
                    "--name",
                    "my-lb",
                    "--vip-subnet",
                    "public-subnet",
                    "-f",
                    "shell",
                )
            ).out
        )
        assert lb["provisioning_status"] == "PENDING_CREATE" and lb["name"] == "my-lb"
        vip = lb["vip_address"]
        assert vip.startswith(f"127.{stack.ports()['vip_octet']}.")
        await session.wait_for_status("loadbalancer", "show", "my-lb")
        # `--wait` itself: the listener comes back ACTIVE.
        listener = row(
            (
                await session(
                    "loadbalancer",
                    "listener",
                    "create",
                    "--name",
                    "my-listener",
                    "--protocol",
                    "HTTP",
                    "--protocol-port",
                    "80",
                    "my-lb",
                    "--wait",
                    "-f",
                    "shell",
                )
            ).out
        )
        assert listener["protocol_port"] == "80" and listener["provisioning_status"] == "ACTIVE"
        # UDP and SCTP pass the API's validation, then the provider refuses them (501): `make
        # up` runs the process driver (no namespace of its own) and this kernel has no SCTP.
        # Separate runs at once, for their exit status, while the LB is ACTIVE.
        refusals = await asyncio.gather(
            *(
                cli(
                    "loadbalancer",
                    "listener",
                    "create",
                    "--protocol",
                    protocol,
                    "--protocol-port",
                    "53",
                    "my-lb",
                    check=False,
                )
                for protocol in ("UDP", "SCTP")
            )
        )
        for refused, reason in zip(
            refusals,
            (
                "the configured amphora driver cannot serve UDP",
                "SCTP is not supported by this kernel",
            ),
            strict=True,
        ):
            assert refused.code != 0 and reason in refused.err, refused.err
            assert "(HTTP 501)" in refused.err, refused.err
        pool = row(
            (
                await session(
                    "loadbalancer",
                    "pool",
                    "create",
                    "--name",
                    "my-pool",
                    "--lb-algorithm",
                    "ROUND_ROBIN",
                    "--listener",
                    "my-listener",
                    "--protocol",
                    "HTTP",
                    "-f",
                    "shell",
                )
            ).out
        )
        assert pool["lb_algorithm"] == "ROUND_ROBIN"
        await session.wait_for_status("loadbalancer", "show", "my-lb")
        for backend in backends:
            await session(
                "loadbalancer", "member", "create", "--subnet-id", "public-subnet",
                "--address", "127.0.0.1", "--protocol-port", str(backend.port),
                "--name", backend.name, "my-pool",
            )  # fmt: skip
            await session.wait_for_status("loadbalancer", "member", "show", "my-pool", backend.name)
        hm = row(
            (
                await session(
                    "loadbalancer",
                    "healthmonitor",
                    "create",
                    "--delay",
                    "5",
                    "--timeout",
                    "3",
                    "--max-retries",
                    "3",
                    "--type",
                    "HTTP",
                    "my-pool",
                    "-f",
                    "shell",
                )
            ).out
        )
        assert hm["type"] == "HTTP"
        await session.wait_for_status("loadbalancer", "healthmonitor", "show", hm["id"])

        seen = [await fetch(f"http://{vip}/") for _ in range(6)]
        assert sorted(set(seen)) == ["backend-0", "backend-1"] and seen.count("backend-0") == 3

        listed = (await session("loadbalancer", "list", "-f", "json")).json()
        assert [x["name"] for x in listed] == ["my-lb"]  # type: ignore[union-attr,index]
        shown = row((await session("loadbalancer", "show", "my-lb", "-f", "shell")).out)
        assert shown["provisioning_status"] == "ACTIVE" and shown["vip_address"] == vip
        status = (await session("loadbalancer", "status", "show", "my-lb")).json()
        tree: Any = status["loadbalancer"]  # type: ignore[index]
        assert tree["listeners"][0]["pools"][0]["health_monitor"]["type"] == "HTTP"
        assert len(tree["listeners"][0]["pools"][0]["members"]) == 2
        stats = row((await session("loadbalancer", "stats", "show", "my-lb", "-f", "shell")).out)
        assert set(stats) >= {"bytes_in", "bytes_out", "total_connections"}
        for kind in ("listener", "pool", "healthmonitor"):
            assert (await session("loadbalancer", kind, "list", "-f", "json")).json()
        members = (await session("loadbalancer", "member", "list", "my-pool", "-f", "json")).json()
        assert isinstance(members, list) and len(members) == 2
        assert {m["provisioning_status"] for m in members} == {"ACTIVE"}

        await session("loadbalancer", "failover", "my-lb", "--wait")
        assert await fetch(f"http://{vip}/") in ("backend-0", "backend-1")
        amphorae = (await session("loadbalancer", "amphora", "list", "-f", "json")).json()
        assert any(a.get("loadbalancer_id") == lb["id"] for a in amphorae)  # type: ignore[union-attr]
        quota = row(
            (await session("loadbalancer", "quota", "show", lb["project_id"], "-f", "shell")).out
        )
        assert "load_balancer" in quota or "loadbalancer" in quota
        await session("loadbalancer", "delete", "--cascade", "--wait", "my-lb")
        assert (await session("loadbalancer", "list", "-f", "json")).json() == []
    # A separate run, for its exit status.
    missing = await cli("loadbalancer", "show", lb["id"], check=False)
    assert missing.code != 0 and ("404" in missing.err or "Unable to locate" in missing.err)


async def test_admin_token_mode(stack: Stack, backends: list[Backend]) -> None:
    cli = Cli(
        {
            "OS_AUTH_TYPE": "admin_token",
            "OS_TOKEN": stack.secret("admin.token"),
            "OS_ENDPOINT": stack.api_url,
            "PYTHONWARNINGS": "ignore",
        }
    )
    bad = Cli({**cli.env, "OS_TOKEN": "not-the-token"})
    # A separate run, for its exit status; it starts while the session works.
    refusal = asyncio.create_task(bad("loadbalancer", "list", check=False))
    async with cli.session() as session:
        await session("loadbalancer", "create", "--name", "tok-lb", "--vip-subnet", "public-subnet")
        await session.wait_for_status("loadbalancer", "show", "tok-lb")
        lb = row((await session("loadbalancer", "show", "tok-lb", "-f", "shell")).out)
        assert lb["provisioning_status"] == "ACTIVE"
        await session.apply(
            "tok-lb",
            "loadbalancer", "listener", "create", "--name", "tok-l", "--protocol", "HTTP",
            "--protocol-port", "8080", "tok-lb",
        )  # fmt: skip
        await session.apply(
            "tok-lb",
            "loadbalancer", "pool", "create", "--name", "tok-p", "--lb-algorithm",
            "ROUND_ROBIN", "--listener", "tok-l", "--protocol", "HTTP",
        )  # fmt: skip
        await session.apply(
            "tok-lb",
            "loadbalancer", "member", "create", "--subnet-id", "public-subnet", "--address",
            "127.0.0.1", "--protocol-port", str(backends[0].port), "tok-p",
        )  # fmt: skip
        assert await fetch(f"http://{lb['vip_address']}:8080/") == "backend-0"
        await session("loadbalancer", "delete", "--cascade", "tok-lb")
        await session.wait_for_status("loadbalancer", "list", "--name", "tok-lb", status="")
    refused = await refusal
    assert refused.code != 0 and "401" in refused.err


@pytest.fixture
def noauth_api(stack: Stack) -> Any:
    """A second API replica, in noauth mode, on the same stack (for ``auth_type none``)."""
    port = free_port()
    env = {
        **os.environ,
        "FULCRUM_API_POSTGRES__DSN": stack.pg_dsn,
        **stack.nats_environment("api"),
        "FULCRUM_API_PORT": str(port),
        "FULCRUM_API_AUTH_STRATEGY": "noauth",
        "FULCRUM_API_RELAY__ENABLED": "false",
    }
    proc = subprocess.Popen([sys.executable, "-m", "services.api"], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            import urllib.request

            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


async def test_auth_type_none_with_endpoint(noauth_api: str) -> None:
    cli = Cli({"OS_AUTH_TYPE": "none", "OS_ENDPOINT": noauth_api, "PYTHONWARNINGS": "ignore"})
    async with cli.session() as session:
        await session.apply(
            "none-lb",
            "loadbalancer",
            "create",
            "--name",
            "none-lb",
            "--vip-subnet",
            "public-subnet",
        )
        listed = (await session("loadbalancer", "list", "-f", "json")).json()
        assert [(x["name"], x["provisioning_status"]) for x in listed] == [  # type: ignore[union-attr,index]
            ("none-lb", "ACTIVE")
        ]
        await session("loadbalancer", "delete", "none-lb")
        await session.wait_for_status("loadbalancer", "list", "--name", "none-lb", status="")


async def test_wrong_password_and_forged_token_get_keystone_401(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": "admin",
                            "domain": {"name": "Default"},
                            "password": "wrong",
                        }
                    },
                },
                "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}},
            }
        }
        async with session.post(f"{stack.api_url}/v3/auth/tokens", json=body) as resp:
            assert resp.status == 401
            error = (await resp.json())["error"]
            assert error["code"] == 401 and error["title"] == "Unauthorized"
        body["auth"]["identity"]["password"]["user"]["password"] = stack.secret("admin.password")  # type: ignore[index]
        async with session.post(f"{stack.api_url}/v3/auth/tokens", json=body) as resp:
            assert resp.status == 201
            token = resp.headers["X-Subject-Token"]
            catalog = (await resp.json())["token"]["catalog"]
            assert {c["type"] for c in catalog} >= {"load-balancer", "network", "identity"}
        headers = {"X-Auth-Token": token[:-3] + ("xyz" if not token.endswith("xyz") else "abc")}
        async with session.get(f"{stack.api_url}/v2.0/lbaas/loadbalancers", headers=headers) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == 401
    log = (stack.state / "api.log").read_text()
    assert stack.secret("admin.password") not in log and token not in log


def sdk_flow(stack: Stack, backend_port: int) -> tuple[str, str]:
    import openstack

    conn = openstack.connect(cloud="fulcrum", load_yaml_config=True)
    subnet = conn.network.find_subnet("public-subnet")
    lb = conn.load_balancer.create_load_balancer(name="sdk-lb", vip_subnet_id=subnet.id)
    conn.load_balancer.wait_for_load_balancer(lb.id, interval=1, wait=120)
    listener = conn.load_balancer.create_listener(
        name="sdk-l", protocol="HTTP", protocol_port=8081, load_balancer_id=lb.id
    )
    conn.load_balancer.wait_for_load_balancer(lb.id, interval=1, wait=120)
    pool = conn.load_balancer.create_pool(
        name="sdk-p", protocol="HTTP", lb_algorithm="ROUND_ROBIN", listener_id=listener.id
    )
    conn.load_balancer.wait_for_load_balancer(lb.id, interval=1, wait=120)
    conn.load_balancer.create_member(
        pool, address="127.0.0.1", protocol_port=backend_port, subnet_id=subnet.id
    )
    conn.load_balancer.wait_for_load_balancer(lb.id, interval=1, wait=120)
    stats = conn.load_balancer.get_load_balancer_statistics(lb.id)
    assert stats.bytes_in is not None
    found = conn.load_balancer.find_load_balancer("sdk-lb")
    return lb.id, found.vip_address


def sdk_teardown(lb_id: str) -> None:
    import openstack

    conn = openstack.connect(cloud="fulcrum", load_yaml_config=True)
    conn.load_balancer.failover_load_balancer(lb_id)
    conn.load_balancer.wait_for_load_balancer(lb_id, interval=1, wait=120)
    conn.load_balancer.delete_load_balancer(lb_id, cascade=True)
    lb = conn.load_balancer.get_load_balancer(lb_id)
    conn.load_balancer.wait_for_delete(lb, interval=1, wait=120)


# openstacksdk warns about its own deprecated options (InfluxDB, statsd) at connect time.
@pytest.mark.filterwarnings("ignore::Warning:openstack.*")
async def test_openstacksdk_flow(stack: Stack, backends: list[Backend]) -> None:
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(stack.clouds_yaml)
    try:
        lb_id, vip = await asyncio.to_thread(sdk_flow, stack, backends[1].port)
        assert await fetch(f"http://{vip}:8081/") == "backend-1"
        await asyncio.to_thread(sdk_teardown, lb_id)
    finally:
        del os.environ["OS_CLIENT_CONFIG_FILE"]
