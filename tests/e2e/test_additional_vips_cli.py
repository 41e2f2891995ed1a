"""``openstack loadbalancer create --additional-vip subnet-id=...``, the real CLI, against
``fulcrum up``: an API replica (noauth) whose public network has a second subnet serves the
CLI, the stack's provisioner runs the LB, and HTTP flows through both VIPs to the members."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from libs.common.settings import default_subnets
from tests.e2e.conftest import Backend, Cli, Stack, free_port

pytestmark = pytest.mark.timeout(600)


def subnets(octet: int) -> list[dict[str, Any]]:
    """The stack's public network as two subnets: ``public-subnet`` on the lower half of its
    127.<octet>.0.0/16 and ``public-subnet-b`` on the upper half."""
    (base,) = default_subnets()
    lower = base.model_copy(
        update={
            "cidr": f"127.{octet}.0.0/17",
            "allocation_start": f"127.{octet}.0.10",
            "allocation_end": f"127.{octet}.127.250",
        }
    )
    upper = base.model_copy(
        update={
            "id": "c0ffee00-1b2c-4d3e-8f40-5a6b7c8d9e0f",
            "name": "public-subnet-b",
            "cidr": f"127.{octet}.128.0/17",
            "allocation_start": f"127.{octet}.200.10",
            "allocation_end": f"127.{octet}.200.250",
        }
    )
    return [lower.model_dump(), upper.model_dump()]


@pytest.fixture
def replica(stack: Stack) -> Iterator[str]:
    """A noauth API replica on the stack whose public network has two subnets."""
    port = free_port()
    env = {
        **os.environ,
        "FULCRUM_API_POSTGRES__DSN": stack.pg_dsn,
        **stack.nats_environment("api"),
        "FULCRUM_API_PORT": str(port),
        "FULCRUM_API_AUTH_STRATEGY": "noauth",
        "FULCRUM_API_RELAY__ENABLED": "false",
        "FULCRUM_API_NETWORK__SUBNETS": json.dumps(subnets(stack.ports()["vip_octet"])),
    }
    proc = subprocess.Popen([sys.executable, "-m", "services.api"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


async def fetch(url: str) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Connection": "close"}) as resp:
            assert resp.status == 200
            return await resp.text()


async def test_create_with_additional_vips_serves_on_each(
    stack: Stack, replica: str, backends: list[Backend]
) -> None:
    cli = Cli({"OS_AUTH_TYPE": "none", "OS_ENDPOINT": replica, "PYTHONWARNINGS": "ignore"})
    octet = stack.ports()["vip_octet"]
    wanted = f"127.{octet}.200.77"
    async with cli.session() as session:
        created = await session(
            "loadbalancer", "create", "--name", "multi-vip", "--vip-subnet", "public-subnet",
            "--additional-vip", f"subnet-id=public-subnet-b,ip-address={wanted}", "-f", "json",
        )  # fmt: skip
        vip = created.json()["vip_address"]  # type: ignore[index]
        assert vip.startswith(f"127.{octet}.")
        await session.wait_for_status("loadbalancer", "show", "multi-vip")
        shown = (await session("loadbalancer", "show", "multi-vip", "-f", "json")).json()
        assert isinstance(shown, dict)
        assert shown["provisioning_status"] == "ACTIVE" and shown["vip_address"] == vip
        extra = shown["additional_vips"]
        extra = json.loads(extra) if isinstance(extra, str) else extra
        assert extra == [
            {"subnet_id": "c0ffee00-1b2c-4d3e-8f40-5a6b7c8d9e0f", "ip_address": wanted}
        ]

        await session.apply(
            "multi-vip",
            "loadbalancer", "listener", "create", "--name", "mv-listener", "--protocol", "HTTP",
            "--protocol-port", "80", "multi-vip",
        )  # fmt: skip
        await session.apply(
            "multi-vip",
            "loadbalancer", "pool", "create", "--name", "mv-pool", "--lb-algorithm",
            "ROUND_ROBIN", "--listener", "mv-listener", "--protocol", "HTTP",
        )  # fmt: skip
        for backend in backends:
            await session.apply(
                "multi-vip",
                "loadbalancer", "member", "create", "--address", "127.0.0.1", "--protocol-port",
                str(backend.port), "mv-pool",
            )  # fmt: skip
        for address in (vip, wanted):
            bodies = [await fetch(f"http://{address}/") for _ in range(4)]
            assert sorted(bodies) == ["backend-0", "backend-0", "backend-1", "backend-1"], address
        await session("loadbalancer", "delete", "--cascade", "multi-vip")
        await session.wait_for_status("loadbalancer", "list", "--name", "multi-vip", status="")
